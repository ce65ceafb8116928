from kfp import dsl

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def finish_run(params: dict, kfp_run_id: str, status: dsl.PipelineTaskFinalStatus) -> None:
    """Exit handler: mark the MLflow parent run FINISHED, or FAILED when any task failed."""
    from mentoring.orchestration import adapter
    from mentoring.tracking import close_pipeline_run

    state = "FINISHED" if status.state == "SUCCEEDED" else "FAILED"
    close_pipeline_run(adapter.params_from(params), kfp_run_id, state)
