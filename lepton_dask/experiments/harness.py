"""Adaptive-scaling experiments: traces x policies, in the simulator.

For every trace: stock Adaptive swept over ``target_duration`` and ours
(``balanced`` swept over its weight, plus ``deadline``) are simulated on the
same pools, costs are compared with the offline-optimal oracle, and the
results written as CSV, Pareto plots (cost vs. burst completion time), a
workers-and-$/hour plot, and a markdown table.

The time axis is the mean burst completion time (the makespan of each burst,
averaged); for single-burst traces it is the makespan.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lepton_dask.scaling.policies import (
    BalancedPolicy,
    DeadlinePolicy,
    StockAdaptivePolicy,
)
from lepton_dask.scaling.state import PoolSpec
from lepton_dask.sim.oracle import oracle_cost
from lepton_dask.sim.simulator import SimResult, Simulator
from lepton_dask.sim.trace import TRACES, Trace

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


@dataclass
class Scenario:
    """A trace and the pools it runs on."""

    name: str
    trace: Trace
    pools: list[PoolSpec]
    minimum_billing: float = 60.0
    adaptive_pools: list[str] = field(default_factory=list)

    @property
    def deadline_kind(self) -> dict[str, float]:
        """How our deadline policy is parameterised for this trace."""
        if len(self.trace.deadline) > 1:
            return {"within": min(self.trace.deadline.values())}
        return (
            {"deadline": min(self.trace.deadline.values())}
            if self.trace.deadline
            else {}
        )


def _pool(
    name: str,
    itype: str,
    pricing: str,
    *,
    threads: int,
    kind: str = "cpu",
    startup: float,
    max_workers: int,
    preempt: float = 0.0,
) -> PoolSpec:
    return PoolSpec.from_catalog(name, itype, pricing, threads=threads, kind=kind, startup_s=startup,
                                 max_workers=max_workers, preemptions_per_hour=preempt)  # fmt: skip


def scenarios(
    startup: float = 60.0, minimum_billing: float = 60.0, max_workers: int = 50
) -> dict[str, Scenario]:
    """The four traces on cloud-like pools: 60 s CPU startup (90 s GPU), a
    60 s minimum billing period, AWS prices from the catalog."""
    cpu = _pool(
        "cpu",
        "m6i.large",
        "on-demand",
        threads=2,
        startup=startup,
        max_workers=max_workers,
    )
    spot = _pool(
        "cpu-spot",
        "m6i.large",
        "spot",
        threads=2,
        startup=startup,
        max_workers=max_workers,
        preempt=0.5,
    )
    gpu = _pool(
        "gpu",
        "g5.xlarge",
        "on-demand",
        threads=1,
        kind="gpu",
        startup=1.5 * startup,
        max_workers=8,
    )
    out = {}
    for name, make in TRACES.items():
        trace = make()
        pools = [cpu, spot, gpu] if name == "cpu-gpu-cpu" else [cpu]
        out[name] = Scenario(name, trace, pools, minimum_billing)
    return out


def policies_for(
    scenario: Scenario, adaptive=ADAPTIVE_SWEEP, balanced=BALANCED_SWEEP
) -> list[tuple[str, str, float, Callable]]:
    """``(family, label, knob, factory)`` for every run of the sweep."""
    runs = [("adaptive", f"adaptive td={td:g}s", float(td), lambda td=td: StockAdaptivePolicy(float(td)))
            for td in adaptive]  # fmt: skip
    runs += [
        ("ours", f"balanced w={w:g}", float(w), lambda w=w: BalancedPolicy(float(w)))
        for w in balanced
    ]
    dk = scenario.deadline_kind
    if dk:
        for frac in (0.6, 0.8, 0.95):
            kw = {k: v * frac for k, v in dk.items()}
            runs.append(
                (
                    "ours",
                    f"deadline {frac:.2f}x",
                    frac,
                    lambda kw=kw: DeadlinePolicy(**kw),
                )
            )
    return runs


def simulate(
    scenario: Scenario,
    factory: Callable,
    *,
    record_timeline: bool = False,
    seed: int = 0,
) -> SimResult:
    """One simulated run of ``scenario`` under a fresh policy."""
    return Simulator(scenario.trace, scenario.pools, factory(), minimum_billing=scenario.minimum_billing,
                     record_timeline=record_timeline, seed=seed).run()  # fmt: skip


def mean_latency(r: SimResult) -> float:
    vals = [v for v in r.burst_latency_s.values() if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.inf


def run_sweep(
    scenario: Scenario, progress: Callable[[str], None] | None = None, **kw
) -> list[dict[str, Any]]:
    """Simulate every policy of the sweep on ``scenario``; rows for the CSV."""
    oracle = oracle_cost(scenario.trace, scenario.pools, scenario.minimum_billing)
    rows = []
    for family, label, knob, factory in policies_for(scenario, **kw):
        r = simulate(scenario, factory)
        rows.append({
            "trace": scenario.name, "family": family, "policy": label, "knob": knob,
            "cost_usd": r.cost_usd, "makespan_s": r.makespan_s, "mean_burst_s": mean_latency(r),
            "deadline_met": r.deadline_met, "preemptions": r.preemptions, "lost_work_s": r.lost_work_s,
            "oracle_usd": oracle["oracle"], "lower_bound_usd": oracle["lower_bound"],
            "cost_vs_oracle": r.cost_usd / oracle["oracle"] if oracle["oracle"] else math.nan,
        })  # fmt: skip
        if progress:
            progress(label)
    return rows


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points not dominated in (cost, mean burst time), cheapest first."""
    pts = sorted(rows, key=lambda r: (r["cost_usd"], r["mean_burst_s"]))
    front, best_t = [], math.inf
    for r in pts:
        if r["mean_burst_s"] < best_t - 1e-9:
            front.append(r)
            best_t = r["mean_burst_s"]
    return front


def analyse(rows: list[dict[str, Any]], tol: float = 0.01) -> dict[str, Any]:
    """Compare the families of one trace's sweep.

    ``ours_vs_oracle`` / ``adaptive_vs_oracle``: cheapest run of each family at
    the deadline attainment both reach (their common best), over the oracle.
    ``saving_vs_adaptive``: 1 - cost of our cheapest run finishing bursts no
    later than Dask's default Adaptive (target_duration=5 s) / that run's cost.
    ``dominates``: every Adaptive point has one of ours no dearer and no slower
    (within ``tol``).
    """
    ours = [r for r in rows if r["family"] == "ours"]
    ada = [r for r in rows if r["family"] == "adaptive"]
    oracle = rows[0]["oracle_usd"]
    level = min(
        max(r["deadline_met"] for r in ours), max(r["deadline_met"] for r in ada)
    )
    best_ours = min(
        (r for r in ours if r["deadline_met"] >= level - 1e-9),
        key=lambda r: r["cost_usd"],
    )
    best_ada = min(
        (r for r in ada if r["deadline_met"] >= level - 1e-9),
        key=lambda r: r["cost_usd"],
    )
    default = next(r for r in ada if abs(r["knob"] - DEFAULT_ADAPTIVE) < 1e-9)
    faster = [
        r for r in ours if r["mean_burst_s"] <= default["mean_burst_s"] * (1 + tol)
    ]
    saving = (
        (1 - min(r["cost_usd"] for r in faster) / default["cost_usd"])
        if faster
        else None
    )
    dominated = all(
        any(o["cost_usd"] <= a["cost_usd"] * (1 + tol) and o["mean_burst_s"] <= a["mean_burst_s"] * (1 + tol)
            for o in ours)
        for a in ada
    )  # fmt: skip
    return {
        "deadline_level": level,
        "ours_vs_oracle": best_ours["cost_usd"] / oracle,
        "adaptive_vs_oracle": best_ada["cost_usd"] / oracle,
        "ours_best": best_ours["policy"],
        "adaptive_best": best_ada["policy"],
        "saving_vs_adaptive": saving,
        "dominates": dominated,
        "oracle_usd": oracle,
        "lower_bound_usd": rows[0]["lower_bound_usd"],
    }


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def markdown_table(
    summary: dict[str, dict[str, Any]], real: dict[str, dict[str, Any]] | None = None
) -> str:
    """One row per trace: oracle ratios, saving, dominance (and sim vs real)."""
    head = "| trace | oracle $ | ours / oracle | Adaptive / oracle | saving vs Adaptive(5 s) | dominates | our best | Adaptive best |"
    lines = [head, "|" + "---|" * 8]
    for name, s in summary.items():
        saving = (
            "n/a"
            if s["saving_vs_adaptive"] is None
            else f"{s['saving_vs_adaptive']:.0%}"
        )
        lines.append(
            f"| {name} | {s['oracle_usd']:.4f} | {s['ours_vs_oracle']:.2f} | {s['adaptive_vs_oracle']:.2f} | "
            f"{saving} | {'yes' if s['dominates'] else 'no'} | {s['ours_best']} | {s['adaptive_best']} |"
        )
    if real:
        lines += ["", "| real run | policy | real $ | simulated $ | error | real time s | simulated time s |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in real.items():
            for pol, v in r.items():
                lines.append(f"| {name} | {pol} | {v['real_usd']:.5f} | {v['sim_usd']:.5f} | {v['error']:.1%} | "
                             f"{v['real_s']:.1f} | {v['sim_s']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def pareto_figure(rows: list[dict[str, Any]], title: str):
    """Cost against mean burst time for each sweep, with its Pareto front and
    the oracle's cost: a matplotlib ``Figure`` (shown as is in a notebook).

    Made without pyplot, so it neither changes nor needs the backend.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for family, marker, color in (
        ("adaptive", "o", "tab:gray"),
        ("ours", "s", "tab:blue"),
    ):
        pts = [r for r in rows if r["family"] == family]
        ax.scatter([r["mean_burst_s"] for r in pts], [r["cost_usd"] for r in pts], marker=marker,
                   color=color, alpha=0.6, label="Dask Adaptive (target_duration sweep)" if family == "adaptive"
                   else "lepton cost-aware (knob sweep)")  # fmt: skip
        front = pareto(pts)
        ax.plot(
            [r["mean_burst_s"] for r in front],
            [r["cost_usd"] for r in front],
            color=color,
            lw=1.5,
        )
    ax.axhline(
        rows[0]["oracle_usd"],
        color="tab:green",
        ls="--",
        lw=1,
        label="offline-optimal oracle",
    )
    ax.set_xlabel("mean burst completion time (s)")
    ax.set_ylabel("cost (USD)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def timeline_figure(runs: dict[str, SimResult], title: str):
    """Workers and spend rate over time of simulated runs (``record_timeline=True``):
    a matplotlib ``Figure``, made without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 5.0))
    a1, a2 = fig.subplots(2, 1, sharex=True)
    for label, r in runs.items():
        t = [x[0] for x in r.timeline]
        a1.step(t, [sum(x[1].values()) for x in r.timeline], where="post", label=label)
        a2.step(t, [x[2] for x in r.timeline], where="post", label=label)
    a1.set_ylabel("workers")
    a2.set_ylabel("$/hour")
    a2.set_xlabel("time (s)")
    a1.set_title(title)
    a1.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_pareto(rows: list[dict[str, Any]], path: str, title: str) -> None:
    """:func:`pareto_figure` written to ``path`` (PNG)."""
    pareto_figure(rows, title).savefig(path, dpi=110)


def plot_timeline(runs: dict[str, SimResult], path: str, title: str) -> None:
    """:func:`timeline_figure` written to ``path`` (PNG)."""
    timeline_figure(runs, title).savefig(path, dpi=110)


def run_experiments(
    out_dir: str, traces: list[str] | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Run the simulated sweeps and write CSV, plots and a markdown table."""
    from lepton_dask._progress import bar

    os.makedirs(out_dir, exist_ok=True)
    scen = scenarios()
    names = traces or list(scen)
    for n in names:
        if n not in scen:
            raise ValueError(f"unknown trace {n!r}; use {', '.join(scen)}")
    total = sum(len(policies_for(scen[n])) for n in names)
    all_rows, summary = [], {}
    ticker = iter(
        bar(range(total), total=total, desc="simulating", unit="run", enabled=progress)
    )

    def tick(_label: str) -> None:
        next(ticker, None)

    for n in names:
        rows = run_sweep(scen[n], progress=tick)
        all_rows += rows
        summary[n] = analyse(rows)
        plot_pareto(
            rows, os.path.join(out_dir, f"pareto-{n}.png"), f"{n}: cost vs time"
        )
        best = next(
            f
            for fam, lab, _, f in policies_for(scen[n])
            if lab == summary[n]["ours_best"]
        )
        dflt = next(
            f
            for fam, lab, k, f in policies_for(scen[n])
            if fam == "adaptive" and k == DEFAULT_ADAPTIVE
        )
        plot_timeline(
            {f"ours: {summary[n]['ours_best']}": simulate(scen[n], best, record_timeline=True),
             "Dask Adaptive td=5s": simulate(scen[n], dflt, record_timeline=True)},
            os.path.join(out_dir, f"timeline-{n}.png"), f"{n}: workers and spend rate",
        )  # fmt: skip
    for _ in ticker:
        pass
    write_csv(all_rows, os.path.join(out_dir, "runs.csv"))
    table = markdown_table(summary)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(table + "\n")
    return {"rows": all_rows, "summary": summary, "table": table}
