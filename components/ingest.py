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
    source_key: str = "",
) -> None:
    """The ``line`` stage: generate the synthetic line, ingest a folder, or read a DVC-versioned
    dataset (``dataset_repo``, or params' ``line.dvc``, at commit ``dataset_rev``).

    ``dataset_rev`` and ``source_key`` come from ``line_version``, which read the source when
    the run ran: they are in this task's cache key, so a cached ingest is one whose source has
    not changed since (``source_key`` is recorded in the artifact's metadata).

    With ``store_dir`` (a Pipeline Run Workspace or PVC path) the images stay there and ``line``
    carries the manifest and the store path; without, ``line`` holds the images too.
    """
    import shutil

    from mentoring.orchestration import adapter
    from mentoring.stages import line as stage

    sets: dict[str, str] = {}
    if dataset_repo:
        sets = {"line.source": "dvc", "line.dvc.repo": dataset_repo}
    if dataset_repo or dataset_rev:  # the sha line_version resolved (never a moving branch)
        sets["line.dvc.rev"] = adapter.check_commit(dataset_rev)
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
        {
            "manifest_sha256": meta["sha256"],
            "store": meta["store"],
            "n_images": m["n_images"],
            "source_key": source_key,
        }
    )
    if "data_version" in m:
        line.metadata["data_version"] = m["data_version"]
    adapter.log_metrics(metrics, {k: v for k, v in m.items() if k != "quarantined"})
