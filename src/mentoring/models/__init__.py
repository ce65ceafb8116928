"""Networks: the defect segmenter (and, later, the domain head)."""

from mentoring.models.segmenter import Segmenter

__all__ = ["Segmenter"]
