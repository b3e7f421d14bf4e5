"""The built-in experiment, start to finish: every scenario under every policy
in the simulator, written out as CSV, plots and a table.

For every trace: stock Adaptive swept over ``target_duration``, ours swept
over the ``balanced`` weight (the Pareto front), and the SLO policy built
from nothing but the trace's stated deadlines or latency
(:func:`~lepton_dask.experiments.scenarios.slo_policy`) are simulated on the
same pools. Costs are compared with the exact yardstick
(:mod:`lepton_dask.sim.oracle`: the clairvoyant and the online-feasible
optimum), and the results written as CSV, Pareto plots (cost vs. burst
completion time), a workers-and-$/hour plot, and a markdown table.

The time axis is the mean burst completion time (the makespan of each burst,
averaged); for single-burst traces it is the makespan.
"""

from __future__ import annotations

from typing import Any

from lepton_dask.experiments.report import analyse, write_report
from lepton_dask.experiments.scenarios import scenarios
from lepton_dask.experiments.sweep import policies_for, sweep_scenarios

__all__ = ["run_experiments"]


def run_experiments(
    out_dir: str,
    traces: list[str] | None = None,
    *,
    progress: bool = True,
    online: bool = True,
    time_limit: float = 30.0,
) -> dict[str, Any]:
    """Run the simulated sweeps of the built-in scenarios and write CSV,
    plots and a markdown table (``online``, ``time_limit``: the yardstick's
    variants and seconds per solve): scenarios, then the sweep, then the
    report."""
    from lepton_dask._progress import bar

    scen = scenarios()
    names = traces or list(scen)
    for n in names:
        if n not in scen:
            raise ValueError(f"unknown trace {n!r}; use {', '.join(scen)}")
    chosen = {n: scen[n] for n in names}
    total = sum(len(policies_for(s)) for s in chosen.values())
    ticker = iter(
        bar(range(total), total=total, desc="simulating", unit="run", enabled=progress)
    )
    result = sweep_scenarios(
        chosen,
        online=online,
        time_limit=time_limit,
        progress=lambda _label: next(ticker, None),
        summarize=analyse,
    )
    for _ in ticker:
        pass
    titles = {n: f"{n}: cost vs time" for n in chosen}
    table = write_report(out_dir, result, titles)
    return {"rows": result["rows"], "summary": result["summary"], "table": table}
