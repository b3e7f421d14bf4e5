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

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lepton_dask.scaling.policies import BalancedPolicy, StockAdaptivePolicy
from lepton_dask.scaling.slo import SLOPolicy
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
    #: the client holds every result until the end (as a script holding its
    #: futures does; the real runs of ``experiments.real`` do)
    hold_results: bool = False


def slo_policy(trace: Trace) -> Callable[[], SLOPolicy] | None:
    """The SLO policy a user of ``trace`` would state: its latency (streams)
    or its tightest deadline (batches carry their own deadlines too); None
    for a trace that states neither. The same rule for every trace."""
    if trace.latency is not None:
        return lambda: SLOPolicy(latency=trace.latency)
    if trace.deadline:
        d = min(trace.deadline.values())
        return lambda: SLOPolicy(deadline=d)
    return None


def cloud_pools(startup: float = 60.0, max_workers: int = 50) -> dict[str, PoolSpec]:
    """Cloud-like pools priced from the catalog: ``cpu`` (m6i.large on-demand),
    ``cpu-spot`` (m6i.large spot, 0.5 preemptions an hour) and ``gpu``
    (g5.xlarge, half as long again to start)."""

    def cpu(name: str, pricing: str, preempt: float) -> PoolSpec:
        return PoolSpec.from_catalog(
            name,
            "m6i.large",
            pricing,
            threads=2,
            startup_s=startup,
            max_workers=max_workers,
            preemptions_per_hour=preempt,
        )

    gpu = PoolSpec.from_catalog(
        "gpu",
        "g5.xlarge",
        "on-demand",
        threads=1,
        kind="gpu",
        startup_s=1.5 * startup,
        max_workers=8,
    )
    return {
        "cpu": cpu("cpu", "on-demand", 0.0),
        "cpu-spot": cpu("cpu-spot", "spot", 0.5),
        "gpu": gpu,
    }


def from_run(run_id: str, store: Any = None) -> Scenario:
    """Recorded run ``run_id`` as a :class:`Scenario` on the cloud-like pools,
    ready for :func:`run_sweep` (:func:`lepton_dask.experiments.replay.from_run`
    rebuilds its trace from the ledger)."""
    from lepton_dask.experiments import replay

    return replay.scenario(replay.from_run(run_id, store))


def scenarios(
    startup: float = 60.0, minimum_billing: float = 60.0, max_workers: int = 50
) -> dict[str, Scenario]:
    """The four traces on cloud-like pools: 60 s CPU startup (90 s GPU), a
    60 s minimum billing period, AWS prices from the catalog."""
    p = cloud_pools(startup, max_workers)
    out = {}
    for name, make in TRACES.items():
        trace = make()
        pools = list(p.values()) if name == "cpu-gpu-cpu" else [p["cpu"]]
        out[name] = Scenario(name, trace, pools, minimum_billing)
    return out


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

    ``ours_vs_ofo`` / ``ours_vs_clairvoyant``: the SLO policy's cost over the
    online-feasible / clairvoyant optimum (``deadlines_met``: the share of
    deadlines it met). ``adaptive_best_vs_ofo``: the cheapest stock Adaptive
    meeting at least as many deadlines, over the online-feasible optimum;
    ``gap_captured``: (Adaptive best - ours) / (Adaptive best - OFO).
    ``saving_vs_default``: 1 - cost of our cheapest run (SLO or balanced)
    finishing bursts no later than Dask's default Adaptive (target_duration
    5 s) / that run's cost. ``dominates``: every Adaptive point has one of
    ours no dearer and no slower (within ``tol``).
    """
    ours = [r for r in rows if r["family"] in ("ours", "slo")]
    ada = [r for r in rows if r["family"] == "adaptive"]
    slo = next((r for r in rows if r["family"] == "slo"), None)
    first = rows[0]
    ofo, clair = first["ofo_usd"], first["oracle_usd"]
    level = slo["deadline_met"] if slo else max(r["deadline_met"] for r in ours)
    meeting = [r for r in ada if r["deadline_met"] >= level - 1e-9]
    best_ada = min(
        meeting or ada,
        key=lambda r: (-r["deadline_met"] if not meeting else 0, r["cost_usd"]),
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
        any(
            o["cost_usd"] <= a["cost_usd"] * (1 + tol)
            and o["mean_burst_s"] <= a["mean_burst_s"] * (1 + tol)
            for o in ours
        )
        for a in ada
    )
    ours_usd = slo["cost_usd"] if slo else min(r["cost_usd"] for r in ours)
    span = best_ada["cost_usd"] - ofo
    return {
        "ours_vs_ofo": ours_usd / ofo,
        "ours_vs_clairvoyant": ours_usd / clair,
        "deadlines_met": level,
        "adaptive_best_vs_ofo": best_ada["cost_usd"] / ofo,
        "adaptive_best": best_ada["policy"],
        "gap_captured": (best_ada["cost_usd"] - ours_usd) / span if span > 0 else None,
        "saving_vs_default": saving,
        "default_vs_ofo": default["cost_usd"] / ofo,
        "dominates": dominated,
        "ours_policy": slo["policy"] if slo else None,
        "ours_usd": ours_usd,
        "ofo_usd": ofo,
        "oracle_usd": clair,
        "lower_bound_usd": first["lower_bound_usd"],
        "oracle_seconds": first["oracle_seconds"],
        "oracle_gap": first["oracle_gap"],
        # the names of the first round, kept for the notebooks and the CLI
        "ours_vs_oracle": ours_usd / clair,
        "adaptive_vs_oracle": best_ada["cost_usd"] / clair,
        "saving_vs_adaptive": saving,
        "ours_best": slo["policy"]
        if slo
        else min(ours, key=lambda r: r["cost_usd"])["policy"],
    }


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def markdown_table(
    summary: dict[str, dict[str, Any]], real: dict[str, dict[str, Any]] | None = None
) -> str:
    """One row per trace: the SLO policy and the best Adaptive against the
    online-feasible optimum, the gap captured, the saving against Dask's
    default, dominance (and sim vs real)."""

    def pct(v):
        return "n/a" if v is None else f"{v:.0%}"

    head = (
        "| trace | OFO $ | ours / OFO | ours / clairvoyant | deadlines met | best Adaptive / OFO "
        "| gap captured | saving vs Adaptive(5 s) | dominates | best Adaptive |"
    )
    lines = [head, "|" + "---|" * 10]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['ofo_usd']:.4f} | {s['ours_vs_ofo']:.3f} | {s['ours_vs_clairvoyant']:.3f} | "
            f"{s['deadlines_met']:.3f} | {s['adaptive_best_vs_ofo']:.3f} | {pct(s['gap_captured'])} | "
            f"{pct(s['saving_vs_default'])} | {'yes' if s['dominates'] else 'no'} | {s['adaptive_best']} |"
        )
    if real:
        lines += [
            "",
            "| real run | policy | real $ | simulated $ | error | real time s | simulated time s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in real.items():
            for pol, v in r.items():
                lines.append(
                    f"| {name} | {pol} | {v['real_usd']:.5f} | {v['sim_usd']:.5f} | {v['error']:.1%} | "
                    f"{v['real_s']:.1f} | {v['sim_s']:.1f} |"
                )
    return "\n".join(lines)


def pareto_figure(rows: list[dict[str, Any]], title: str):
    """Cost against mean burst time for each sweep, with its Pareto front and
    the oracle's cost: a matplotlib ``Figure`` (shown as is in a notebook).

    Made without pyplot, so it neither changes nor needs the backend.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    labels = {
        "adaptive": "Dask Adaptive (target_duration sweep)",
        "ours": "lepton balanced (weight sweep)",
        "slo": "lepton SLO (stated deadline, no tuning)",
    }
    for family, marker, color in (
        ("adaptive", "o", "tab:gray"),
        ("ours", "s", "tab:blue"),
        ("slo", "*", "tab:red"),
    ):
        pts = [r for r in rows if r["family"] == family]
        if not pts:
            continue
        ax.scatter(
            [r["mean_burst_s"] for r in pts],
            [r["cost_usd"] for r in pts],
            marker=marker,
            color=color,
            alpha=0.8,
            s=120 if family == "slo" else 30,
            label=labels[family],
        )
        if family == "slo":
            continue
        front = pareto(pts)
        ax.plot(
            [r["mean_burst_s"] for r in front],
            [r["cost_usd"] for r in front],
            color=color,
            lw=1.5,
        )
    ax.axhline(
        rows[0]["ofo_usd"],
        color="tab:green",
        ls="--",
        lw=1,
        label="online-feasible optimum (exact)",
    )
    ax.axhline(
        rows[0]["oracle_usd"],
        color="tab:olive",
        ls=":",
        lw=1,
        label="clairvoyant optimum (exact)",
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
    out_dir: str,
    traces: list[str] | None = None,
    *,
    progress: bool = True,
    online: bool = True,
    time_limit: float = 30.0,
) -> dict[str, Any]:
    """Run the simulated sweeps and write CSV, plots and a markdown table
    (``online``, ``time_limit``: the yardstick's variants and seconds per
    solve)."""
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
        rows = run_sweep(scen[n], progress=tick, online=online, time_limit=time_limit)
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
            {
                f"ours: {summary[n]['ours_best']}": simulate(
                    scen[n], best, record_timeline=True
                ),
                "Dask Adaptive td=5s": simulate(scen[n], dflt, record_timeline=True),
            },
            os.path.join(out_dir, f"timeline-{n}.png"),
            f"{n}: workers and spend rate",
        )
    for _ in ticker:
        pass
    write_csv(all_rows, os.path.join(out_dir, "runs.csv"))
    table = markdown_table(summary)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(table + "\n")
    return {"rows": all_rows, "summary": summary, "table": table}
