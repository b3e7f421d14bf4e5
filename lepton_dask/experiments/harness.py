"""Adaptive-scaling experiments: traces x policies, in the simulator.

For every trace: stock Adaptive swept over ``target_duration``, ours swept
over the ``balanced`` weight (the Pareto front), and the SLO policy built
from nothing but the trace's stated deadlines or latency
(:func:`slo_policy`) are simulated on the same pools. Costs are compared with
the exact yardstick (:mod:`lepton_dask.sim.oracle`: the clairvoyant and the
online-feasible optimum), and the results written as CSV, Pareto plots (cost
vs. burst completion time), a workers-and-$/hour plot, and a markdown table.

The time axis is the mean burst completion time (the makespan of each burst,
averaged); for single-burst traces it is the makespan.
"""

from __future__ import annotations

from typing import Any

from lepton_dask.experiments.report import (
    analyse,
    markdown_table,
    pareto,
    pareto_figure,
    plot_pareto,
    plot_timeline,
    timeline_figure,
    write_csv,
    write_report,
)
from lepton_dask.experiments.scenarios import (
    Scenario,
    cloud_pools,
    scenario_from_run,
    scenarios,
    slo_policy,
)
from lepton_dask.experiments.sweep import (
    ADAPTIVE_SWEEP,
    BALANCED_SWEEP,
    DEFAULT_ADAPTIVE,
    mean_latency,
    policies_for,
    run_sweep,
    simulate,
    sweep_scenarios,
    yardstick,
)

__all__ = [
    "ADAPTIVE_SWEEP",
    "BALANCED_SWEEP",
    "DEFAULT_ADAPTIVE",
    "Scenario",
    "analyse",
    "cloud_pools",
    "markdown_table",
    "mean_latency",
    "pareto",
    "pareto_figure",
    "plot_pareto",
    "plot_timeline",
    "policies_for",
    "run_experiments",
    "run_sweep",
    "scenario_from_run",
    "scenarios",
    "simulate",
    "slo_policy",
    "sweep_scenarios",
    "timeline_figure",
    "write_csv",
    "write_report",
    "yardstick",
]


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
