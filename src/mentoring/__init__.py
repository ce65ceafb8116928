"""mentoring: keep a deployed defect-segmentation model accurate while a production line drifts.

Stages (see ``mentoring.stages``): generate or ingest a line, train the baseline, evaluate it per
domain; later: mine, mentor, train with the masked loss, evaluate, register.
"""

__version__ = "0.1.0"
