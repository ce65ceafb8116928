"""Library side of the Kubeflow adapter: what component bodies share (params, artifacts, paths).

Component functions (``components/``) are serialized into the compiled pipeline and run in the
project's image; they import this module inside their body. Nothing here imports a stage.
"""
