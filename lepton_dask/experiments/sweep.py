"""The sweep (the second room of the experiments): every policy of the
sweep on a scenario in the simulator, with the exact yardstick beside it;
:func:`sweep_scenarios` is what every entry point calls."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from lepton_dask.experiments.scenarios import Scenario, slo_policy
from lepton_dask.scaling.policies import BalancedPolicy
from lepton_dask.sim.baselines import StockAdaptivePolicy
from lepton_dask.sim.oracle import oracle_cost
from lepton_dask.sim.simulator import SimResult, Simulator

__all__ = [
    "ADAPTIVE_SWEEP",
    "BALANCED_SWEEP",
    "DEFAULT_ADAPTIVE",
    "mean_latency",
    "policies_for",
    "run_sweep",
    "simulate",
    "sweep_scenarios",
    "yardstick",
]


ADAPTIVE_SWEEP = (1, 2, 5, 10, 20, 30, 60, 120, 180)


BALANCED_SWEEP = (
    0.0,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.7,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    20.0,
    50.0,
    100.0,
)


DEFAULT_ADAPTIVE = 5.0  # distributed.adaptive.target-duration


def policies_for(
    scenario: Scenario, adaptive=ADAPTIVE_SWEEP, balanced=BALANCED_SWEEP
) -> list[tuple[str, str, float, Callable]]:
    """``(family, label, knob, factory)`` for every run of the sweep: family
    ``adaptive`` (Dask's), ``ours`` (the balanced sweep) and ``slo`` (the SLO
    policy from the trace's stated terms, one run)."""
    runs = [
        (
            "adaptive",
            f"adaptive td={td:g}s",
            float(td),
            lambda td=td: StockAdaptivePolicy(float(td)),
        )
        for td in adaptive
    ]
    runs += [
        ("ours", f"balanced w={w:g}", float(w), lambda w=w: BalancedPolicy(float(w)))
        for w in balanced
    ]
    slo = slo_policy(scenario.trace)
    if slo is not None:
        runs.append(("slo", slo().label, math.nan, slo))
    return runs


def simulate(
    scenario: Scenario,
    factory: Callable,
    *,
    record_timeline: bool = False,
    seed: int = 0,
) -> SimResult:
    """One simulated run of ``scenario`` under a fresh policy."""
    return Simulator(
        scenario.trace,
        scenario.pools,
        factory(),
        minimum_billing=scenario.minimum_billing,
        record_timeline=record_timeline,
        seed=seed,
        hold_results=scenario.hold_results,
    ).run()


def mean_latency(r: SimResult) -> float:
    vals = [v for v in r.burst_latency_s.values() if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.inf


def yardstick(
    scenario: Scenario, *, online: bool = True, time_limit: float = 30.0
) -> dict[str, Any]:
    """The exact oracle of ``scenario``: clairvoyant and (with ``online``)
    online-feasible lower bounds in USD, the busy-time bound, and the solver
    seconds."""
    import time

    t0 = time.perf_counter()
    o = oracle_cost(
        scenario.trace,
        scenario.pools,
        scenario.minimum_billing,
        online=online,
        time_limit=time_limit,
    )
    return {
        "oracle_usd": o["oracle"],
        "ofo_usd": o.get("online", o["oracle"]),
        "lower_bound_usd": o["lower_bound"],
        "oracle_seconds": time.perf_counter() - t0,
        "oracle_gap": max(r.gap for r in o["results"].values()),
    }


def run_sweep(
    scenario: Scenario,
    progress: Callable[[str], None] | None = None,
    *,
    online: bool = True,
    time_limit: float = 30.0,
    **kw,
) -> list[dict[str, Any]]:
    """Simulate every policy of the sweep on ``scenario``; rows for the CSV."""
    ys = yardstick(scenario, online=online, time_limit=time_limit)
    rows = []
    for family, label, knob, factory in policies_for(scenario, **kw):
        r = simulate(scenario, factory)
        rows.append(
            {
                "trace": scenario.name,
                "family": family,
                "policy": label,
                "knob": knob,
                "cost_usd": r.cost_usd,
                "makespan_s": r.makespan_s,
                "mean_burst_s": mean_latency(r),
                "deadline_met": r.deadline_met,
                "preemptions": r.preemptions,
                "lost_work_s": r.lost_work_s,
                **ys,
                "cost_vs_oracle": r.cost_usd / ys["oracle_usd"]
                if ys["oracle_usd"]
                else math.nan,
            }
        )
        if progress:
            progress(label)
    return rows


def sweep_scenarios(
    scenarios: dict[str, Scenario],
    *,
    online: bool = True,
    time_limit: float = 30.0,
    progress: Callable[[str], None] | None = None,
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]],
    **kw: Any,
) -> dict[str, Any]:
    """Sweep every scenario: its rows, its summary (``summarize(rows)``) and,
    for the timeline plot, the best of ours and stock Adaptive at its default
    simulated with their timelines. Every entry point (the built-in traces,
    a replayed recording) calls this."""
    rows, summary, timelines = [], {}, {}
    for name, sc in scenarios.items():
        mine = run_sweep(sc, progress, online=online, time_limit=time_limit, **kw)
        rows += mine
        summary[name] = s = summarize(mine)
        runs = policies_for(sc, **kw)
        best = next(f for _, lab, _, f in runs if lab == s["ours_best"])
        dflt = next(
            f for fam, _, k, f in runs if fam == "adaptive" and k == DEFAULT_ADAPTIVE
        )
        timelines[name] = {
            f"ours: {s['ours_best']}": simulate(sc, best, record_timeline=True),
            "Dask Adaptive td=5s": simulate(sc, dflt, record_timeline=True),
        }
    return {"rows": rows, "summary": summary, "timelines": timelines}
