from kfp import dsl
from kfp.dsl import Model, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fetch_model(params: dict, model: Output[Model], ref: str = "champion") -> None:
    """A registry model (alias or version of ``tracking.registered_model``) as a model file:
    the deployed model that mining, transfer learning and OMNIA-like start from."""
    from pathlib import Path

    from mentoring.orchestration import adapter
    from mentoring.registry import export_model

    params_ = adapter.params_from(params)
    name = params_.tracking.registered_model
    uri = f"models:/{name}@{ref}" if not ref.isdigit() else f"models:/{name}/{ref}"
    info = export_model(params_, uri, Path(model.path))
    model.metadata.update(adapter.file_metadata(Path(model.path), name="deployed", **info))
