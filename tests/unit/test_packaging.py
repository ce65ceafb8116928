"""pyproject.toml lists its packages by hand (components/ and pipelines/ install as
``mentoring.components`` and ``mentoring.pipelines``): every package folder must be listed."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_is_installed() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config["package-dir"]
    found = set()
    for package, folder in dirs.items():
        root = REPO / folder
        for init in root.rglob("*.py"):
            rel = init.parent.relative_to(root)
            if "__pycache__" not in rel.parts:
                found.add(".".join([package, *rel.parts]))
    assert found == set(config["packages"]), (
        f"pyproject.toml [tool.setuptools] packages: add {sorted(found - set(config['packages']))}"
        f", remove {sorted(set(config['packages']) - found)}"
    )
