"""Runtime set-up of every stage (src/mentoring/runtime.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHECK = """
import json, sys, torch, pyarrow
from mentoring.config import BaseParams
from mentoring.runtime import setup_torch
before = pyarrow.default_memory_pool().backend_name
setup_torch(BaseParams(num_threads=1, compile=sys.argv[1] == "1"))
print(json.dumps({"deterministic": torch.are_deterministic_algorithms_enabled(),
                  "threads": torch.get_num_threads(),
                  "dynamo": "torch._dynamo" in sys.modules,
                  "arrow_pool": [before, pyarrow.default_memory_pool().backend_name]}))
"""


def _setup(compile_flag: bool) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHECK, "1" if compile_flag else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        # arrow's own default, whatever this shell chose
        env={k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_stages_are_deterministic_without_loading_the_compiler() -> None:
    r = _setup(False)
    assert {k: r[k] for k in ("deterministic", "threads", "dynamo")} == {
        "deterministic": True,
        "threads": 1,
        "dynamo": False,
    }


def test_stages_put_arrow_on_the_system_allocator() -> None:
    # pandas' strings live in arrow: its default allocator (mimalloc in the wheels) kept freed
    # pages resident, a floor growing with the manifest's rows (src/mentoring/runtime.py)
    before, after = _setup(False)["arrow_pool"]  # type: ignore[misc]
    assert after == "system" and before != "system"


def test_a_compiled_run_tells_the_compiler_too() -> None:
    r = _setup(True)  # torch.use_deterministic_algorithms sets inductor's flag as well
    assert r["deterministic"] is True and r["dynamo"] is True
