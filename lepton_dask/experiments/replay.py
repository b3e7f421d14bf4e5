"""Replay a recorded run: its trace (:mod:`lepton_dask.experiments.recorded`)
swept like the built-in scenarios, with the same outputs.

A thin user of the three rooms of the experiments: scenarios, the sweep and
the report.
"""

from __future__ import annotations

from typing import Any

from lepton_dask.experiments.recorded import (
    PartialRecordingWarning,
    RecordingNotFoundError,
    trace_from_recording,
    trace_from_run,
    trace_from_workload,
)
from lepton_dask.experiments.report import analyse, write_report
from lepton_dask.experiments.scenarios import replay_pools, scenario_for_trace
from lepton_dask.experiments.sweep import sweep_scenarios
from lepton_dask.sim.trace import Trace

__all__ = [
    "PartialRecordingWarning",
    "RecordingNotFoundError",
    "replay_pools",
    "scenario_for_trace",
    "sweep",
    "trace_from_recording",
    "trace_from_run",
    "trace_from_workload",
]


def sweep(
    out_dir: str,
    trace: Trace,
    *,
    online: bool = True,
    time_limit: float = 30.0,
    **kw: Any,
) -> dict[str, Any]:
    """The sweep on a replayed trace, with the same outputs as
    :func:`~lepton_dask.experiments.harness.run_experiments` (``runs.csv``,
    ``pareto-*.png``, ``timeline-*.png``, ``summary.md``)."""
    result = sweep_scenarios(
        {trace.name: scenario_for_trace(trace)},
        online=online,
        time_limit=time_limit,
        summarize=analyse,
        **kw,
    )
    table = write_report(out_dir, result)
    return {"rows": result["rows"], "summary": result["summary"], "table": table}
