from kfp import dsl

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def champion(params: dict) -> str:
    """The registry's champion version, or "" when there is none yet (a first run)."""
    from mentoring.orchestration import adapter
    from mentoring.registry import Registry

    found = Registry.from_params(adapter.params_from(params)).champion()
    return str(found.version) if found is not None else ""
