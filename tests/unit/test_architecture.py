"""The one rule of the architecture: a stage module imports library modules only.

DVC stages, CLI commands and Kubeflow components are adapters over ``mentoring.stages.<name>.run``;
plumbing two stages share lives below them (``training/``, ``data/``, ``evaluation.py``...), so a
stage never serves as another stage's library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mentoring

SRC = Path(mentoring.__file__).parent
STAGES = sorted(p for p in (SRC / "stages").glob("*.py") if p.name != "__init__.py")
#: layers that only adapters (the CLI, experiments) may import
UPPER = (
    "mentoring.stages",
    "mentoring.cli",
    "mentoring.experiments",
    "mentoring.components",
    "mentoring.pipelines",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("stage", STAGES, ids=lambda p: p.stem)
def test_stage_imports_no_other_stage(stage: Path) -> None:
    own = f"mentoring.stages.{stage.stem}"
    bad = sorted(
        n
        for n in _imports(stage)
        if n.startswith(UPPER) and n != own and not n.startswith("mentoring.cli")  # main() = CLI
    )
    assert not bad, f"{stage}: imports {bad}; move the shared code into the library"


def test_library_imports_no_adapter() -> None:
    library = [
        p
        for p in SRC.rglob("*.py")
        if not p.is_relative_to(SRC / "stages")
        and not p.is_relative_to(SRC / "experiments")
        and not (p.parent == SRC and p.name.startswith("cli"))  # cli*.py: the command line
    ]
    assert library
    for path in library:
        bad = sorted(n for n in _imports(path) if n.startswith(UPPER))
        assert not bad, f"{path}: imports {bad} (a library module must not import an adapter)"
