"""Adaptive-scaling experiments: traces x policies, simulated and real."""

from lepton_dask.experiments.harness import (
    analyse,
    run_experiments,
    run_sweep,
    scenarios,
)

__all__ = ["analyse", "run_experiments", "run_sweep", "scenarios"]
