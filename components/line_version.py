from typing import NamedTuple

from kfp import dsl

from mentoring.components import IMAGE


# kfp reads the outputs of a functional NamedTuple, which mypy does not take as a type
@dsl.component(base_image=IMAGE, install_kfp_package=False)
def line_version(params: dict, dataset_repo: str = "", dataset_rev: str = "") -> NamedTuple(  # type: ignore[valid-type]
    "Version", [("key", str), ("rev", str)]
):
    """What the line's source holds now (never cached): ``key`` changes exactly when what ingest
    would read changes, ``rev`` is the commit sha a DVC revision (a branch, a tag) resolves to
    when the run runs. Ingest takes both as inputs, so its cache key sees the source."""
    from typing import NamedTuple

    from mentoring.line.source import source_version
    from mentoring.orchestration import adapter

    sets = {}
    if dataset_repo:
        sets = {"line.source": "dvc", "line.dvc.repo": dataset_repo, "line.dvc.rev": dataset_rev}
    found = source_version(adapter.params_from(params, sets))
    print(f"line source {found.source}: {found.key}")

    class Version(NamedTuple):
        key: str
        rev: str

    return Version(found.key, found.rev)
