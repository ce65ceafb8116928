"""Experiments that run the stages end to end outside the pipeline (Table 1 over seeds)."""
