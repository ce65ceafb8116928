"""The paper's Table 1 on the synthetic line, over several seeds.

For each seed (``base.seed``; the line itself is fixed by ``line.seed``): train the baseline, mine
the new pool with it, let the simulated operator answer, train every strategy of
``train.strategies`` (plus any extra rows, :mod:`mentoring.experiments.rows`) and evaluate
everything per domain, at defect and cell level. The report (:mod:`mentoring.reporting`)
aggregates mean and standard deviation per variant and level.
"""

from __future__ import annotations

from mentoring.experiments.rows import run_seed, seed_dir

__all__ = ["run_seed", "seed_dir"]
