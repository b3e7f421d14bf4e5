"""Adaptive-scaling experiments: traces x policies, simulated and real."""

from lepton_dask.experiments.harness import (
    analyse,
    from_run,
    run_experiments,
    run_sweep,
    scenarios,
)

__all__ = ["analyse", "from_run", "run_experiments", "run_sweep", "scenarios"]
