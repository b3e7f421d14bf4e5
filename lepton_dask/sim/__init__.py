"""Discrete-event cluster simulator, traces and the offline-optimal oracle."""

from lepton_dask.sim.simulator import SimResult, Simulator
from lepton_dask.sim.trace import TRACES, Trace, from_task_stream

__all__ = ["TRACES", "SimResult", "Simulator", "Trace", "from_task_stream"]
