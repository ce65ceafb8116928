"""Kubeflow pipelines of mentoring (installed as ``mentoring.pipelines``).

- :mod:`.retraining` (weekly or on demand): ingest -> validate -> deployed model (the registry's
  champion, or a baseline trained first when there is none) -> mine -> import feedback -> every
  strategy trained and evaluated in parallel -> report -> register and promote through the gate.
- :mod:`.mining` (daily): ingest the new images -> validate -> mine with the champion -> publish
  the mining tasks for the operators.

Both are built from ``params.yaml`` at compile time (:mod:`.platform` applies its ``kfp``
section: images, GPU nodes, resources, secrets, retries, the image store) and their compiled YAML
is committed under ``pipelines/compiled/``. :mod:`.submit` compiles, runs, schedules and runs
them locally; ``mentoring kfp ...`` is its command line.
"""
