"""The report (the third room of the experiments): the sweep's rows and
summary as a CSV, a markdown table, Pareto plots (cost vs burst completion
time) and workers-and-$/hour plots."""

from __future__ import annotations

import csv
import math
import os
from typing import Any

from lepton_dask.experiments.sweep import DEFAULT_ADAPTIVE
from lepton_dask.sim.simulator import SimResult

__all__ = [
    "analyse",
    "markdown_table",
    "pareto",
    "pareto_figure",
    "plot_pareto",
    "plot_timeline",
    "timeline_figure",
    "write_csv",
    "write_report",
]


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


def matplotlib_figure() -> type:
    """matplotlib's ``Figure`` class, or an ImportError that says how to get it
    (matplotlib comes with the ``plots`` extra, not with every install).

    >>> matplotlib_figure().__name__
    'Figure'
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "plotting needs matplotlib: pip install 'lepton-dask[plots]'"
        ) from e
    return Figure


def pareto_figure(rows: list[dict[str, Any]], title: str):
    """Cost against mean burst time for each sweep, with its Pareto front and
    the oracle's cost: a matplotlib ``Figure`` (shown as is in a notebook).

    Made without pyplot, so it neither changes nor needs the backend.
    """
    Figure = matplotlib_figure()

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
    Figure = matplotlib_figure()

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


def write_report(
    out_dir: str, result: dict[str, Any], titles: dict[str, str] | None = None
) -> str:
    """Write a sweep's ``runs.csv``, ``pareto-<name>.png``,
    ``timeline-<name>.png`` and ``summary.md`` into ``out_dir``; returns the
    markdown table. ``titles``: a plot title per scenario name."""
    os.makedirs(out_dir, exist_ok=True)
    titles = titles or {}
    for name, timeline in result["timelines"].items():
        slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
        rows = [r for r in result["rows"] if r["trace"] == name]
        title = titles.get(name, name)
        plot_pareto(rows, os.path.join(out_dir, f"pareto-{slug}.png"), title)
        plot_timeline(
            timeline,
            os.path.join(out_dir, f"timeline-{slug}.png"),
            f"{name}: workers and spend rate",
        )
    write_csv(result["rows"], os.path.join(out_dir, "runs.csv"))
    table = markdown_table(result["summary"])
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(table + "\n")
    return table
