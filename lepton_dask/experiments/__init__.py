"""Adaptive-scaling experiments: traces x policies, simulated and real.

Three rooms, one-way: scenarios (:mod:`~lepton_dask.experiments.scenarios`,
traces from recordings in :mod:`~lepton_dask.experiments.recorded`), the sweep
(:mod:`~lepton_dask.experiments.sweep`) and the report
(:mod:`~lepton_dask.experiments.report`); ``harness`` (the built-in
experiment, start to finish), ``replay``, ``plan`` and ``real`` use them.
"""

from lepton_dask.experiments.harness import run_experiments
from lepton_dask.experiments.report import analyse
from lepton_dask.experiments.scenarios import scenario_from_run, scenarios
from lepton_dask.experiments.sweep import run_sweep

__all__ = ["analyse", "run_experiments", "run_sweep", "scenario_from_run", "scenarios"]
