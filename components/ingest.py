from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from mentoring.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(
    params: dict,
    line: Output[Dataset],
    metrics: Output[Metrics],
    store_dir: str = "",
    kfp_run_id: str = "",
    dataset_repo: str = "",
    dataset_rev: str = "",
) -> None:
    """The ``line`` stage: generate the synthetic line, ingest a folder, or read a DVC-versioned
    dataset (``dataset_repo`` at commit ``dataset_rev``).

    With ``store_dir`` (a Pipeline Run Workspace or PVC path) the images stay there and ``line``
    carries the manifest and the store path; without, ``line`` holds the images too.
    """
    import shutil

    from mentoring.orchestration import adapter
    from mentoring.stages import line as stage

    sets = {}
    if dataset_repo:
        sets = {
            "line.source": "dvc",
            "line.dvc.repo": dataset_repo,
            "line.dvc.rev": adapter.check_commit(dataset_rev),
        }
    params_ = adapter.params_from(params, sets)
    root = adapter.store_root(store_dir, kfp_run_id, line.path)
    results = adapter.scratch("line")
    m = stage.run(params_, root, results)
    manifest = adapter.manifest_of(root)
    if store_dir:  # the artifact carries the manifest; the images stay in the store
        (adapter.Path(line.path) / "manifests").mkdir(parents=True, exist_ok=True)
        shutil.copy2(manifest, adapter.Path(line.path) / adapter.MANIFEST)
    meta = adapter.file_metadata(manifest, store=str(root) if store_dir else "")
    line.metadata.update(
        {"manifest_sha256": meta["sha256"], "store": meta["store"], "n_images": m["n_images"]}
    )
    if "data_version" in m:
        line.metadata["data_version"] = m["data_version"]
    adapter.log_metrics(metrics, {k: v for k, v in m.items() if k != "quarantined"})
