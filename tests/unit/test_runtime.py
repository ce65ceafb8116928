"""Torch set-up of every stage (src/mentoring/runtime.py)."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import json, sys, torch
from mentoring.config import BaseParams
from mentoring.runtime import setup_torch
setup_torch(BaseParams(num_threads=1, compile=sys.argv[1] == "1"))
print(json.dumps({"deterministic": torch.are_deterministic_algorithms_enabled(),
                  "threads": torch.get_num_threads(),
                  "dynamo": "torch._dynamo" in sys.modules}))
"""


def _setup(compile_flag: bool) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK, "1" if compile_flag else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_stages_are_deterministic_without_loading_the_compiler() -> None:
    assert _setup(False) == {"deterministic": True, "threads": 1, "dynamo": False}


def test_a_compiled_run_tells_the_compiler_too() -> None:
    r = _setup(True)  # torch.use_deterministic_algorithms sets inductor's flag as well
    assert r["deterministic"] is True and r["dynamo"] is True
