"""Plan a recurring job from its history: which pools and which SLO settings
meet a deadline (or a budget) cheapest, by simulating its recorded run.

:func:`plan` replays a trace (:mod:`lepton_dask.experiments.replay`) on each
candidate pool mix (on-demand, spot, both; a GPU pool added when the job has
GPU work) under the :class:`~lepton_dask.scaling.slo.SLOPolicy` the user's
terms give, and under the balanced weight sweep for the Pareto front of cost
against time. With a deadline it recommends the cheapest run whose simulated
batches all meet it (within the budget, if one is given too); with a budget
alone, the fastest run within it (the SLO policy's or a balanced weight's,
whichever the simulation found). ``lepton-dask plan`` prints it
(:func:`format_plan`), with the one line that applies it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from lepton_dask.experiments.report import pareto
from lepton_dask.experiments.scenarios import cloud_pools
from lepton_dask.scaling.policies import BalancedPolicy
from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import PoolSpec
from lepton_dask.sim.simulator import Simulator
from lepton_dask.sim.trace import KIND_CODES, Trace

WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


def pool_mixes(
    trace: Trace, startup: float = 60.0, max_workers: int = 50
) -> dict[str, list[PoolSpec]]:
    """Candidate pool mixes for ``trace`` (cloud-like: 60 s startup, AWS
    prices from the catalog).

    >>> import numpy as np
    >>> t = Trace("t", np.zeros(2), np.ones(2), np.zeros(2, np.int8), np.zeros(2, int))
    >>> sorted(pool_mixes(t))
    ['on-demand', 'on-demand + spot', 'spot']
    """
    p = cloud_pools(startup, max_workers)
    od, spot = p["cpu"], p["cpu-spot"]
    mixes = {"on-demand": [od], "spot": [spot], "on-demand + spot": [od, spot]}
    if (trace.kind == KIND_CODES["gpu"]).any():
        mixes = {name: [*pools, p["gpu"]] for name, pools in mixes.items()}
    return mixes


def _run(
    trace: Trace, pools: list[PoolSpec], policy: Any, mix: str, sim: dict[str, Any]
) -> dict:
    r = Simulator(trace, pools, policy, record_timeline=True, **sim).run()
    peak: dict[str, int] = {}
    for _, workers, _ in r.timeline:
        for p, n in workers.items():
            peak[p] = max(peak.get(p, 0), n)
    lat = [v for v in r.burst_latency_s.values() if math.isfinite(v)]
    return {
        "mix": mix,
        "policy": r.policy,
        "cost_usd": r.cost_usd,
        "makespan_s": r.makespan_s,
        "mean_burst_s": sum(lat) / len(lat) if lat else math.inf,
        "deadline_met": r.deadline_met,
        "complete": r.tasks_done == len(trace),
        "peak_workers": peak,
    }


def plan(
    trace: Trace,
    *,
    deadline: float | None = None,
    budget: float | None = None,
    weights: tuple[float, ...] = WEIGHTS,
    mixes: dict[str, list[PoolSpec]] | None = None,
    minimum_billing: float = 60.0,
    interval: float = 1.0,
    hold_results: bool = False,
) -> dict[str, Any]:
    """Simulate ``trace`` on each pool mix and recommend one.

    Parameters
    ----------
    trace : Trace
        The job (e.g. ``replay.trace_from_workload("nightly-etl")``).
    deadline : float, optional
        Each batch done within this many seconds of its submission.
    budget : float, optional
        Total USD for the run.
    mixes : dict, optional
        Pool mixes to choose from, by name (default :func:`pool_mixes`: cloud
        pools); e.g. ``{"local": cluster_pools}`` to plan for your own.
    minimum_billing, interval, hold_results
        The simulator's billing minimum, decision interval and whether the
        client holds results (as :class:`~lepton_dask.sim.simulator.Simulator`).

    Returns
    -------
    dict
        ``recommended`` (mix, pools, policy arguments, predicted USD and
        seconds, whether the terms are met), ``candidates`` (the SLO run on
        each mix), ``front`` (the Pareto front of every run) and ``apply``
        (the code or config that applies the recommendation).

    >>> import numpy as np
    >>> t = Trace("t", np.zeros(40), np.full(40, 30.0), np.zeros(40, np.int8),
    ...           np.zeros(40, int))
    >>> p = plan(t, deadline=600, weights=(1.0,))
    >>> p["recommended"]["meets"], p["recommended"]["makespan_s"] <= 600
    (True, True)
    """
    if deadline is None and budget is None:
        raise ValueError("plan needs a deadline or a budget (or both)")
    if deadline is not None:
        trace = replace(
            trace,
            deadline=dict.fromkeys(range(int(trace.burst.max()) + 1), float(deadline)),
        )
    terms = {"deadline": deadline, "total_usd": budget}
    terms = {k: float(v) for k, v in terms.items() if v is not None}
    mixes = pool_mixes(trace) if mixes is None else dict(mixes)
    sim = {
        "minimum_billing": minimum_billing,
        "interval": interval,
        "hold_results": hold_results,
    }

    def meets(row: dict[str, Any]) -> bool:
        return (
            row["complete"]
            and (deadline is None or row["deadline_met"] >= 1 - 1e-9)
            and (budget is None or row["cost_usd"] <= budget * (1 + 1e-9))
        )

    candidates, every = [], []
    for mix, pools in mixes.items():
        row = _run(trace, pools, SLOPolicy(**terms), mix, sim)
        row["apply"] = ("SLOPolicy", terms)
        candidates.append(row)
        every.append(row)
        for w in weights:
            b = _run(trace, pools, BalancedPolicy(w), mix, sim)
            b["apply"] = ("BalancedPolicy", {"weight": float(w)})
            b["policy"] = f"balanced w={w:g}"
            every.append(b)
    for row in every:
        row["meets"] = meets(row)
    meeting = [c for c in every if c["meets"]]
    if meeting:  # deadline: the cheapest on time; budget alone: the fastest within
        best = min(
            meeting,
            key=lambda c: (
                (c["cost_usd"], c["makespan_s"])
                if deadline is not None
                else (c["makespan_s"], c["cost_usd"])
            ),
        )
    else:  # nothing meets the terms: the SLO run closest to them
        best = min(
            candidates,
            key=lambda c: (not c["complete"], -c["deadline_met"], c["cost_usd"]),
        )
    rec = {**best, "pools": mixes[best["mix"]], "terms": terms}
    rec["policy_code"] = "{}({})".format(
        best["apply"][0], ", ".join(f"{k}={v:g}" for k, v in best["apply"][1].items())
    )
    return {
        "trace": trace.name,
        "recommended": rec,
        "candidates": candidates,
        "front": pareto(every),
        "apply": apply_text(rec),
    }


def apply_text(rec: dict[str, Any]) -> str:
    """The one line (one pool) or config block (several) that applies a
    recommendation."""
    policy = rec["policy_code"]
    pools = rec["pools"]
    if len(pools) == 1:
        p = pools[0]
        n = max(1, rec["peak_workers"].get(p.name, 1))
        return (
            f"cluster.adapt(Adaptive=CostAwareAdaptive, policy={policy}, "
            f'minimum=0, maximum={n}, instance_type="{p.instance_type}", '
            f'pricing="{p.pricing}")'
        )
    kind, kw = rec["apply"]
    lines = ["lepton:", "  scaling:"]
    if kind == "BalancedPolicy":
        lines += ["    policy: balanced", f"    weight: {kw['weight']:g}"]
    else:
        lines.append("    policy: slo")
        lines += [
            f"    {k.replace('total_usd', 'budget-usd')}: {v:g}" for k, v in kw.items()
        ]
    lines.append("    pools:")
    for p in pools:
        n = max(1, rec["peak_workers"].get(p.name, 1))
        lines.append(
            f'    - {{name: {p.name}, match: "{p.name}-", instance-type: {p.instance_type}, '
            f"pricing: {p.pricing}, kind: {p.kind}, max-workers: {n}}}"
        )
    lines.append(f"# then: cluster.adapt(Adaptive=CostAwareAdaptive, policy={policy})")
    return "\n".join(lines)


def format_plan(p: dict[str, Any]) -> str:
    """The plan as text for the command line."""
    r = p["recommended"]
    terms = ", ".join(f"{k}={v:g}" for k, v in r["terms"].items())
    where = ", ".join(f"{q.name}: {q.instance_type} {q.pricing}" for q in r["pools"])
    out = [
        f"plan for {p['trace']} ({terms})",
        f"recommended: {r['mix']} pools ({where}), {r['policy_code']}",
        f"predicted: ${r['cost_usd']:.4f}, {r['makespan_s']:.0f} s to finish, "
        f"{r['deadline_met']:.0%} of batches on time"
        + ("" if r["meets"] else "  (NOT within the terms on any mix)"),
        "",
        "| pool mix | policy | $ | finish s | mean batch s | on time |",
        "|---|---|---|---|---|---|",
    ]
    for c in p["candidates"]:
        out.append(
            f"| {c['mix']} | {c['policy']} | {c['cost_usd']:.4f} | {c['makespan_s']:.0f} | "
            f"{c['mean_burst_s']:.0f} | {c['deadline_met']:.0%} |"
        )
    out += [
        "",
        "Pareto front (cost vs mean batch time, every simulated run):",
        "| pool mix | policy | $ | mean batch s |",
        "|---|---|---|---|",
    ]
    for c in p["front"]:
        out.append(
            f"| {c['mix']} | {c['policy']} | {c['cost_usd']:.4f} | {c['mean_burst_s']:.0f} |"
        )
    out += ["", "apply it:", p["apply"]]
    return "\n".join(out)


__all__ = ["apply_text", "format_plan", "plan", "pool_mixes"]
