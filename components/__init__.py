"""Kubeflow Pipelines components: one ``@dsl.component`` per file, each a thin adapter over
``mentoring.stages.<name>.run`` (installed as ``mentoring.components``).

Every component runs in the project's image (``kfp.image``, set per task at compile time), with
``install_kfp_package=False`` (the image ships kfp: GPU nodes are often offline) and its heavy
imports inside the body, so that ``pipelines/`` compile without torch. No file of this package
holds logic: parsing params, laying out artifacts and calling the stage, nothing else.
"""

from mentoring.config import KfpParams

#: the default image of every component (``kfp.image``'s default); pipelines set ``kfp.image`` /
#: ``kfp.gpu_image`` from params.yaml per task
IMAGE = KfpParams().image
