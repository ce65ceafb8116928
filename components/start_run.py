from kfp import dsl

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def start_run(
    params: dict, kfp_run_id: str, pipeline: str, git_commit: str = "", data: str = ""
) -> None:
    """Open this Kubeflow run's MLflow parent run (RUNNING), tagged with the KFP run id, the
    pipeline, ``git_commit``, ``params_sha256`` and the data version; every task's run nests
    under it."""
    from mentoring.orchestration import adapter
    from mentoring.tracking import open_pipeline_run

    adapter.enter_run(kfp_run_id, git_commit)
    open_pipeline_run(
        adapter.params_from(params),
        kfp_run_id,
        {"kfp_run_id": kfp_run_id, "kfp_pipeline": pipeline, "data_version": data or "params"},
    )
