"""Every stage module runs as a program with the options of its CLI command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.test_baseline_cli import CLI

STAGES = {
    "line": ["line", "run"],
    "train_baseline": ["train"],
    "evaluate": ["evaluate"],
    "mine": ["mine"],
    "mentor": ["mentor", "run"],
    "train": ["train"],
    "validate": ["validate"],
    "report": ["report"],
    "register": ["register"],
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_module_is_its_cli_command(stage: str) -> None:
    module = subprocess.run(
        [sys.executable, "-m", f"mentoring.stages.{stage}", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    command = subprocess.run(
        [CLI, *STAGES[stage], "--help"], capture_output=True, text=True, timeout=120
    )
    assert module.returncode == command.returncode == 0, module.stderr
    # same options, same help: one adapter over the same stage function
    assert "--params" in module.stdout
    assert module.stdout.split("Options")[1] == command.stdout.split("Options")[1]
