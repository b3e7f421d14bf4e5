"""The same trace on a real LocalPoolCluster, to check the simulator.

Tasks are ``time.sleep(duration)`` submitted at the trace's times; the cluster
injects the pools' startup delay; the CostMonitor bills workers from their
launch request with the minimum billing period. The simulator then runs the
same trace, pools and policy, and the costs are compared.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from lepton_dask.cost.monitor import CostMonitor
from lepton_dask.scaling.adaptive import CostAwareAdaptive
from lepton_dask.scaling.pools import LocalPoolCluster
from lepton_dask.sim.baselines import StockAdaptivePolicy
from lepton_dask.sim.simulator import Simulator
from lepton_dask.sim.trace import Trace


def _sleep(seconds: float, *deps: Any) -> float:
    time.sleep(seconds)
    return seconds


def _settle(
    futures: dict,
    t0: float,
    monitor: CostMonitor,
    settle: float,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Wait for every result, then (results released) for the scaler to
    release the workers, up to ``settle`` seconds; cost and times."""
    from distributed import wait

    # a run that cannot finish (no worker can run some task) ends, and says so
    wait(list(futures.values()), timeout=timeout)
    done = time.time() - t0
    futures.clear()
    end = time.time() + settle
    while time.time() < end and monitor.lives:
        time.sleep(0.2)
    snap = monitor.snapshot()
    return {
        "cost_usd": snap["spend_usd"],
        "makespan_s": done,
        "workers_left": snap["workers"],
    }


# -- every trace, time-scaled -------------------------------------------------------
REAL_SECONDS = 75.0  # about how long each real run takes
MIN_TASK_S = 0.05  # shortest typical sleep task worth timing for real
MIN_SHORT_TASK_S = 0.02  # the shortest 10% of tasks sleep at least this long
#: the fixed lag of a LocalPoolCluster worker's start past its injected
#: startup (in-process workers started outside SpecCluster's lock: 0.1-0.15 s
#: measured, see bench_scaling's arrival_lag_p90_s); the scaled startup is at
#: least ``LAG_TIMES`` this, so that the lag stands for little trace time
START_LAG_S = 0.15
LAG_TIMES = 10.0
#: the most ``compute`` calls a second a time-scaled run submits: the
#: scheduler shares one event loop with every in-process worker. At 332 a
#: second (the stream's spike at x0.038, on 2 cores) workers delivered 71-85%
#: of their threads on sleep tasks and 5% of the deadlines were missed
MAX_SUBMITS_PER_S = 50.0
#: the decision tick and the monitor's flush, unscaled (the simulator's
#: interval), and the floor of their scaled values
TICK_S = 1.0
MIN_TICK_S = 0.05
UNKNOWN_S = 0.5  # distributed.scheduler.unknown-task-duration, unscaled


def real_interval(factor: float) -> float:
    """The decision tick (and monitor flush) of a run time-scaled by
    ``factor``: the simulator's one second, scaled, at least 50 ms, so that
    the loop's fixed latencies stand for as much trace time as they do
    unscaled.

    >>> real_interval(0.02), real_interval(0.5)
    (0.05, 0.5)
    """
    return max(MIN_TICK_S, min(TICK_S, TICK_S * factor))


def window(trace: Trace, start: float, length: float) -> Trace:
    """The bursts of ``trace`` arriving in ``[start, start + length)``, shifted
    to start at 0 (independent tasks only)."""
    if trace.deps is not None:
        raise ValueError("window() keeps independent tasks only")
    arrival = {b["burst"]: b["arrival"] for b in trace.bursts()}
    keep = np.array([start <= arrival[int(b)] < start + length for b in trace.burst])
    bursts = sorted({int(b) for b in trace.burst[keep]})
    names = trace.prefixes()
    return Trace(
        f"{trace.name}[{start:g}+{length:g}s]",
        trace.submit[keep] - start,
        trace.duration[keep],
        trace.kind[keep],
        trace.burst[keep],
        {b: trace.deadline[b] for b in bursts if b in trace.deadline},
        None,
        trace.description,
        trace.latency,
        [names[i] for i in np.flatnonzero(keep)],
    )


def scale_for_real(
    scenario, seconds: float = REAL_SECONDS, factor: float | None = None
):
    """``(scenario, factor)``: ``scenario`` with times, durations, startup and
    minimum billing multiplied by ``factor`` (and a window of a long trace),
    so that it runs for about ``seconds``. The factor is never so small that
    the cluster's fixed latencies stand for much trace time: the scaled
    startup is at least ``LAG_TIMES`` the start lag (``START_LAG_S``), the
    typical task sleeps ``MIN_TASK_S`` and the shortest 10% at least
    ``MIN_SHORT_TASK_S``, and no second of the run submits more than
    ``MAX_SUBMITS_PER_S`` times. ``factor`` forces one (a slow check of the
    method). Run it under :func:`scaled_world` so that the scheduler's guess
    for an unseen task is scaled too."""
    from dataclasses import replace

    from lepton_dask.experiments.scenarios import Scenario

    tr = scenario.trace
    span = float(tr.submit.max()) + max(tr.deadline.values(), default=0.0)
    f = min(1.0, seconds / span)
    f = max(f, MIN_TASK_S / float(np.median(tr.duration)))
    # fixed latencies must stand for little trace time: the scaled startup
    # at least LAG_TIMES the start lag, the shortest tasks timeable
    startup = min((p.startup_s for p in scenario.pools), default=0.0)
    if startup > 0:
        f = max(f, LAG_TIMES * START_LAG_S / startup)
    f = min(1.0, max(f, MIN_SHORT_TASK_S / float(np.quantile(tr.duration, 0.1))))
    f = min(1.0, max(f, _submit_bound(tr, f)))
    if factor is not None:
        f = float(factor)
    if f * span > 1.5 * seconds and tr.deps is None:
        # a long trace: its busiest stretch, as long as fits
        length = seconds / f
        arrivals = np.array([b["arrival"] for b in tr.bursts()])
        work = np.array([sum(b["work"].values()) for b in tr.bursts()])
        starts = np.arange(
            0.0, max(float(tr.submit.max()) - length, 0.0) + 1, length / 4
        )
        best = max(
            starts, key=lambda s: work[(arrivals >= s) & (arrivals < s + length)].sum()
        )
        tr = window(tr, float(best), length)
    scaled = tr.scaled(f, f)
    pools = [replace(p, startup_s=p.startup_s * f) for p in scenario.pools]
    sc = Scenario(
        scenario.name, scaled, pools, scenario.minimum_billing * f, hold_results=True
    )
    return sc, f


def _submit_bound(tr: Trace, f: float) -> float:
    """The least factor from ``f`` up at which no second of the scaled run
    submits more than ``MAX_SUBMITS_PER_S`` groups of tasks."""
    # one time per (submission time, burst), as _groups submits them, sorted
    at = np.unique(np.stack([tr.submit, tr.burst]), axis=1)[0]
    for _ in range(8):  # the peak shrinks as the factor grows: a few rounds
        per_s = np.searchsorted(at, at + 1.0 / f) - np.arange(len(at))
        peak = int(per_s.max())
        if peak <= MAX_SUBMITS_PER_S:
            break
        f = min(1.0, f * peak / MAX_SUBMITS_PER_S)
    return f


@contextlib.contextmanager
def scaled_world(factor: float):
    """``distributed.scheduler.unknown-task-duration`` times ``factor`` (for
    the real scheduler and the simulator alike), so that a run time-scaled by
    ``factor`` guesses about unseen tasks as the unscaled world would."""
    import dask

    with dask.config.set(
        {"distributed.scheduler.unknown-task-duration": f"{UNKNOWN_S * factor}s"}
    ):
        yield


def _groups(trace: Trace) -> list[tuple[float, int, list[int]]]:
    """Tasks submitted together: ``(time, burst, tasks)``, one group per
    submission time and burst (a job's stages in one graph, as a user's one
    ``compute`` call brings them, and as the simulator counts a batch), each
    task after its dependencies."""
    depth = trace.depths()
    by: dict[tuple[float, int], list[tuple[int, int]]] = {}
    for i in np.argsort(trace.submit, kind="stable"):
        key = (float(trace.submit[i]), int(trace.burst[i]))
        by.setdefault(key, []).append((depth[i], int(i)))
    return [(t, b, [i for _, i in sorted(ids)]) for (t, b), ids in sorted(by.items())]


def _adapt(cluster: Any, scenario, policy: Any, interval: float) -> None:
    """``policy``: a factory of our policies (CostAwareAdaptive), or a
    number: Dask's own Adaptive with that target_duration (wait_count 3)."""
    if callable(policy):
        cluster.adapt(Adaptive=CostAwareAdaptive, policy=policy(), interval=interval)
    else:
        cluster.adapt(
            minimum=0,
            maximum=sum(p.max_workers for p in scenario.pools),
            target_duration=float(policy),
            interval=interval,
            wait_count=3,
        )


def run_trace_real(
    scenario, policy: Any, *, interval: float = 0.5, settle: float = 30.0
) -> dict[str, Any]:
    """Run a (scaled) scenario on a LocalPoolCluster (in-process workers,
    ``time.sleep`` tasks keyed ``<prefix>-<i>``) under ``policy``: a factory
    of one of our policies, or a number, stock Adaptive's target_duration.
    Each group of tasks submitted together is one ``compute`` call under
    :func:`lepton_dask.deadline` when its burst has a deadline; every result
    is held until the end. Returns the cost (the CostMonitor's), makespan,
    the share of deadlines met and the worker launches."""
    from distributed import Client

    trace = scenario.trace
    monitor = CostMonitor(
        ledger=False,
        minimum_billing=scenario.minimum_billing,
        flush_interval=max(MIN_TICK_S, interval),
    )
    with (
        LocalPoolCluster(
            scenario.pools,
            processes=False,
            minimum={p.name: 0 for p in scenario.pools},
            scheduler_options={"plugins": [monitor]},
        ) as cluster,
        Client(cluster) as client,
    ):
        _adapt(cluster, scenario, policy, interval)
        futures, finished, t0 = submit_trace(client, trace)
        span = float(trace.submit.max()) + max(trace.deadline.values(), default=60.0)
        out = _settle(futures, t0, monitor, settle, timeout=10 * span + 120)
        launches = len(cluster.launch_times())
        arrival_lags = cluster.arrival_lags()
        adaptive = getattr(cluster, "_adaptive", None)
        churn = getattr(adaptive, "churn", None)
        reasons = [
            e["reason"] for _, e in getattr(adaptive, "log", ()) if "reason" in e
        ]
    out["deadline_met"] = deadlines_met(trace, finished, t0)
    out["bursts"] = burst_slack(trace, finished, t0)
    out["arrival_lags"] = arrival_lags
    out["launches"] = launches
    out["churn"] = None if churn is None else churn.churn
    out["reasons"] = reasons
    out["timeline"] = [
        (
            e["time"] - t0,
            sum(v["workers"] for v in e["pools"].values()),
            e["spend_rate_usd_per_hour"],
            e["spend_usd"],
        )
        for e in monitor.timeline
        if e["time"] >= t0
    ]
    return out


def submit_trace(client: Any, trace: Trace) -> tuple[dict, dict, float]:
    """Submit ``trace`` through ``client`` at its times (``time.sleep`` tasks
    keyed ``<prefix>-<i>``, GPU tasks annotated with a ``GPU`` resource (and
    CPU tasks with a ``CPU`` one when there are GPU tasks); each
    group submitted together is one ``compute`` call, under
    :func:`lepton_dask.deadline` when its burst has one: the time
    left of the burst's deadline, counted from its first submission as the
    trace and the simulator count it). Returns
    the futures and the finish times (both by task index, the latter filled
    as tasks finish) and the start time."""
    import dask

    from lepton_dask.scaling.slo import deadline as slo_deadline

    names = trace.prefixes()
    futures: dict[int, Any] = {}
    finished: dict[int, float] = {}
    first: dict[int, float] = {}
    t0 = time.time()
    # each kind on its own workers, as the simulator runs it: unrestricted,
    # Dask sends a CPU stage after a GPU one to the GPU workers holding its
    # inputs (287 of 600 CPU tasks in a real run of cpu-gpu-cpu), and holds
    # the GPU threads from the GPU work
    mixed = bool((trace.kind == 1).any())
    need = {0: {"CPU": 1} if mixed else None, 1: {"GPU": 1}}
    for at, b, ids in _groups(trace):  # in time order
        first.setdefault(b, at)
        delay = at - (time.time() - t0)
        if delay > 0:
            time.sleep(delay)
        made: dict[int, Any] = {}  # this group's tasks, by index
        for i in ids:  # dependencies first
            deps = [
                made[j] if j in made else futures[j]
                for j in (trace.deps[i] if trace.deps else [])
            ]
            res = need[int(trace.kind[i])]
            with dask.annotate(resources=res) if res else contextlib.nullcontext():
                made[i] = dask.delayed(_sleep, pure=False)(
                    float(trace.duration[i]), *deps, dask_key_name=f"{names[i]}-{i}"
                )
        d = trace.deadline.get(b)
        if d:  # a burst submitted over time is due from its first submission
            d = max(d - (at - first[b]), 1e-3)
        with slo_deadline(d) if d else contextlib.nullcontext():
            got = client.compute([made[i] for i in ids])
        for i, fut in zip(ids, got, strict=True):
            fut.add_done_callback(lambda _, i=i: finished.__setitem__(i, time.time()))
        futures.update(zip(ids, got, strict=True))
    return futures, finished, t0


def parallel_start(startup_s: float = 2.0) -> list[tuple[float, float]]:
    """Workers asked for while others start, on a LocalPoolCluster: 2 asked
    at t = 0 (``scale``, as stock Adaptive asks) and 2 at t = 0.5 (new pool
    specs, as CostAwareAdaptive asks), ``startup_s`` each. Returns ``(asked,
    arrived)`` per worker, in seconds from t = 0: with starts in parallel,
    each arrives one startup (and the start lag) after it was asked for."""
    import asyncio

    from lepton_dask._distributed import correct_state
    from lepton_dask.scaling.state import PoolSpec

    async def go() -> list[tuple[float, float]]:
        async with LocalPoolCluster(
            [PoolSpec("cpu", startup_s=startup_s, max_workers=8)],
            processes=False,
            asynchronous=True,
        ) as c:
            t0 = time.time()
            c.scale(2)
            first = set(c.worker_spec)
            await asyncio.sleep(0.5)
            for _ in range(2):
                c.worker_spec.update(c.new_pool_spec("cpu"))
            correct_state(c)
            seen: dict[str, float] = {}
            while len(seen) < 4 and time.time() - t0 < 10 * startup_s + 10:
                for w in c.scheduler.workers.values():
                    seen.setdefault(str(w.name), time.time() - t0)
                await asyncio.sleep(0.005)
            c.scale(0)  # booting ones close as they come up
        return [(0.0 if n in first else 0.5, at) for n, at in sorted(seen.items())]

    return asyncio.run(asyncio.wait_for(go(), 10 * startup_s + 30))


def cold_bursts(trace: Trace) -> set[int]:
    """The bursts that are the first of one of their task prefixes (a user's
    first burst of a kind of work: nothing of it has been measured)."""
    names = trace.prefixes()
    seen: set[str] = set()
    cold = set()
    for b in sorted(trace.bursts(), key=lambda b: b["arrival"]):
        ids = np.flatnonzero(trace.burst == b["burst"])
        mine = {names[i] for i in ids}
        if mine - seen:
            cold.add(int(b["burst"]))
        seen |= mine
    return cold


def burst_slack(
    trace: Trace, finished: dict[int, float], t0: float
) -> list[dict[str, Any]]:
    """Per burst with a deadline: its slack ``(deadline - latency) /
    deadline`` (negative: late), whether it was met, and whether it was cold
    (:func:`cold_bursts`)."""
    cold = cold_bursts(trace)
    out = []
    for b in trace.bursts():
        if b["deadline"] is None:
            continue
        ids = np.flatnonzero(trace.burst == b["burst"])
        last = max((finished.get(int(i), np.inf) for i in ids), default=np.inf)
        latency = last - t0 - b["arrival"]
        out.append(
            {
                "burst": int(b["burst"]),
                "slack": (b["deadline"] - latency) / b["deadline"],
                "met": bool(latency <= b["deadline"] * 1.0001),
                "cold": int(b["burst"]) in cold,
            }
        )
    return out


def deadlines_met(trace: Trace, finished: dict[int, float], t0: float) -> float:
    """The share of bursts with a deadline whose last task finished in time."""
    met = [b["met"] for b in burst_slack(trace, finished, t0)]
    return sum(met) / len(met) if met else 1.0


def best_adaptive(scenario, interval: float, sweep=None) -> float:
    """The stock Adaptive target_duration (of the harness's sweep, scaled to
    the scenario) that the simulator finds cheapest among those meeting the
    most deadlines."""
    from lepton_dask.experiments.sweep import ADAPTIVE_SWEEP

    f = scenario.minimum_billing / 60.0  # the scenarios bill 60 s unscaled
    runs = []
    for td in sweep or ADAPTIVE_SWEEP:
        r = _simulate(scenario, StockAdaptivePolicy(td * f), interval)
        runs.append((-round(r.deadline_met, 3), r.cost_usd, td * f))
    return min(runs)[2]


def _simulate(scenario, policy: Any, interval: float, start_lag=None):
    return Simulator(
        scenario.trace,
        scenario.pools,
        policy,
        minimum_billing=scenario.minimum_billing,
        interval=interval,
        hold_results=True,
        record_timeline=False,
        start_lag=start_lag,
    ).run()


def compare_traces(
    names: list[str] | None = None,
    *,
    seconds: float = REAL_SECONDS,
    repeats: int | dict[str, int] = 1,
    progress: Any = None,
) -> dict[str, dict[str, Any]]:
    """Every scenario (or ``names``), time-scaled, on a real LocalPoolCluster
    under three policies, each beside the simulator on the same scaled
    scenario: the SLO policy from the trace's stated terms (``slo``), stock
    Adaptive at its defaults scaled with the trace (``adaptive_default``:
    target_duration 5 s, interval 1 s, wait_count 3) and the best stock
    Adaptive of the simulated sweep (``adaptive_best``). ``repeats`` runs
    (per trace, when a dict) alternate the policies; medians are reported,
    every run is kept under ``runs``."""
    from lepton_dask.experiments.scenarios import scenarios, slo_policy

    out = {}
    for name, sc in scenarios().items():
        if names and name not in names:
            continue
        factory = slo_policy(sc.trace)
        if factory is None:
            continue
        small, f = scale_for_real(sc, seconds)
        interval = real_interval(f)
        n = repeats.get(name, 1) if isinstance(repeats, dict) else int(repeats)
        with scaled_world(f):
            policies: dict[str, Any] = {"slo": factory}
            if len({p.kind for p in small.pools}) == 1:
                # stock Adaptive knows one kind of worker: on a cluster of
                # CPU and GPU pools its GPU tasks would never get a worker
                policies["adaptive_default"] = 5.0 * f
                policies["adaptive_best"] = best_adaptive(small, interval)
            out[name] = _compare_one(small, policies, interval, n, progress)
        out[name]["factor"] = f
        out[name]["unknown_task_duration_s"] = UNKNOWN_S * f
    return out


def _compare_one(scenario, policies, interval, repeats, progress) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in policies}
    for _ in range(repeats):
        for label, policy in policies.items():  # alternating
            t = time.time()
            real = run_trace_real(scenario, policy, interval=interval, settle=20.0)
            real["seconds"] = time.time() - t
            runs[label].append(real)
            if progress:
                progress(f"{scenario.name} {label}: ${real['cost_usd']:.5f}")
    res: dict[str, Any] = {"runs": runs}
    for label, policy in policies.items():
        sim_policy = policy() if callable(policy) else StockAdaptivePolicy(policy)
        # the simulator beside the real runs starts workers as they did: in
        # parallel, with the launch-to-arrival lags they measured
        lags = [x for r in runs[label] for x in r.get("arrival_lags", ())]
        sim = _simulate(scenario, sim_policy, interval, start_lag=lags)
        real_usd = float(np.median([r["cost_usd"] for r in runs[label]]))
        res[label] = {
            "real_usd": real_usd,
            "sim_usd": sim.cost_usd,
            "real_deadlines_met": float(
                np.median([r["deadline_met"] for r in runs[label]])
            ),
            "sim_deadlines_met": sim.deadline_met,
            "sim_real_error": abs(sim.cost_usd - real_usd) / real_usd
            if real_usd
            else float("nan"),
            "real_s": float(np.median([r["makespan_s"] for r in runs[label]])),
            "sim_s": sim.makespan_s + float(scenario.trace.submit.min()),
            "real_launches": float(np.median([r["launches"] for r in runs[label]])),
            "real_churn": None
            if runs[label][0]["churn"] is None
            else float(np.median([r["churn"] for r in runs[label]])),
            "sim_launches": sim.launches,
            "sim_churn": sim.churn,
            "knob": None if callable(policy) else policy,
        }
    return res


def real_table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table of :func:`compare_traces`: per trace and policy, the
    real and the simulated cost and deadlines met, and how far apart."""
    rows = [
        "| trace | policy | real $ | simulated $ | apart | real deadlines | simulated deadlines |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for pol in ("slo", "adaptive_default", "adaptive_best"):
            if pol not in r:
                continue
            v = r[pol]
            rows.append(
                f"| {name} | {pol} | {v['real_usd']:.5f} | {v['sim_usd']:.5f} | "
                f"{v['sim_real_error']:.0%} | {v['real_deadlines_met']:.0%} | "
                f"{v['sim_deadlines_met']:.0%} |"
            )
    return "\n".join(rows)


def side_by_side(
    seconds: float = 30.0, png: str | None = None, trace: str = "sawtooth"
) -> dict[str, dict[str, Any]]:
    """The scaling claim, shown on real workers (``make demo`` ends with it):
    one bursty trace, time-scaled to about ``seconds``, on a real
    LocalPoolCluster under stock Adaptive at its defaults (scaled with the
    trace) and under the SLO policy stated from the trace's deadlines. Returns
    each run's cost, deadlines met and timeline; writes ``png`` (workers and
    $/hour over time) when given."""
    from lepton_dask.experiments.scenarios import scenarios, slo_policy

    small, f = scale_for_real(scenarios()[trace], seconds)
    interval = real_interval(f)
    runs = {}
    with scaled_world(f):
        for label, policy in (
            ("stock Adaptive", 5.0 * f),
            ("SLO policy", slo_policy(small.trace)),
        ):
            runs[label] = run_trace_real(small, policy, interval=interval, settle=10.0)
    if png:
        _plot(
            runs,
            png,
            f"{trace}, time-scaled x{f:.3g}, real LocalPoolCluster",
            small.trace,
            f,
        )
    return runs


def _plot(
    runs: dict[str, dict[str, Any]], path: str, title: str, trace: Trace, factor: float
) -> None:
    """Workers over time, and cumulative dollars, per policy; each burst's
    arrival and deadline, marked met or missed per policy. Draws on its own
    ``Figure`` (no pyplot: a notebook's backend is left as it is)."""
    from lepton_dask.experiments.report import matplotlib_figure

    fig = matplotlib_figure()(figsize=(9, 6))
    top, middle, bottom = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 3, 1.4]}
    )
    for i, (label, r) in enumerate(runs.items()):
        t = [x[0] for x in r["timeline"]]
        name = f"{label}: ${r['cost_usd']:.5f}, deadlines met {r['deadline_met']:.0%}"
        line = top.step(t, [x[1] for x in r["timeline"]], where="post", label=name)
        color = line[0].get_color()
        # billed so far (each worker from its launch, its minimum included)
        middle.plot(t, [x[3] for x in r["timeline"]], color=color, label=label)
        for b in r.get("bursts", []):
            arrival = _arrival(trace, b["burst"])
            y = i + 1
            bottom.plot(
                [arrival, arrival + trace.deadline[b["burst"]]], [y, y], color=color
            )
            bottom.plot(
                arrival + trace.deadline[b["burst"]],
                y,
                marker="o" if b["met"] else "x",
                color="tab:green" if b["met"] else "tab:red",
                markersize=7,
            )
    top.set_ylabel("workers")
    middle.set_ylabel("dollars so far")
    bottom.set_yticks(range(1, len(runs) + 1), list(runs), fontsize=7)
    bottom.set_ylim(0.3, len(runs) + 0.7)
    bottom.set_xlabel(
        f"seconds of the real run (1 s here stands for {1 / factor:.0f} s of the "
        "trace)\nbursts: arrival to deadline; o met, x missed"
    )
    top.set_title(title)
    top.legend(loc="upper right", fontsize=8)
    middle.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _arrival(trace: Trace, burst: int) -> float:
    return float(trace.submit[trace.burst == burst].min())
