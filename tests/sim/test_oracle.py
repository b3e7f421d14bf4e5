"""The exact yardstick (sim/oracle.py): a lower bound on every feasible plan.

Checked on small generated traces against busy time, a hand-built feasible
plan, simulated runs of the built-in policies, and clairvoyant <= online.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_dask.scaling import BalancedPolicy, PoolSpec
from lepton_dask.sim import Simulator, Trace
from lepton_dask.sim.baselines import StockAdaptivePolicy
from lepton_dask.sim.oracle import (
    busy_time_bound,
    choose_dt,
    exact_oracle,
    oracle_cost,
)
from lepton_dask.sim.trace import burst_then_reduce

PRICE = 0.36  # USD per hour: 1e-4 USD per worker-second
TL = 8.0  # solver seconds per call (the dual bound is valid when it stops early)
FAST = settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def _ws(usd: float) -> float:
    return usd * 3600.0 / PRICE


@st.composite
def cases(draw):
    """(trace, pool, minimum, dt): 1-3 bursts, all of a burst's tasks submitted
    at its arrival, a deadline per burst loose enough for one-life plans."""
    threads = draw(st.integers(1, 2))
    startup = float(draw(st.sampled_from([0, 5, 15])))
    minimum = float(draw(st.sampled_from([0, 20, 45])))
    pool = PoolSpec("cpu", threads=threads, startup_s=startup, usd_per_hour=PRICE,
                    max_workers=50)  # fmt: skip
    nb = draw(st.integers(1, 3))
    arrivals = sorted(draw(st.lists(st.integers(0, 150), min_size=nb, max_size=nb)))
    sub, dur, burst, deadline = [], [], [], {}
    for b, a in enumerate(arrivals):
        n = draw(st.integers(1, 6))
        d = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
        sub += [float(a)] * n
        dur += [float(x) for x in d]
        burst += [b] * n
        deadline[b] = float(startup + max(d) + draw(st.integers(5, 60)))
    tr = Trace("h", np.array(sub), np.array(dur), np.zeros(len(sub), np.int8),
               np.array(burst), deadline)  # fmt: skip
    dt = float(draw(st.sampled_from([1, 2, 5])))
    return tr, pool, minimum, dt


def _list_schedule(durs: list[float], threads: int) -> list[float]:
    """Finish time of each thread, longest task first onto the first free."""
    heap = [0.0] * threads
    for d in sorted(durs, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + d)
    return heap


def _one_life_plan(tr: Trace, pool: PoolSpec, minimum: float) -> float | None:
    """A real feasible plan: per burst, ``n`` workers launched at its arrival,
    tasks list-scheduled on their threads, each worker released when its
    last task ends; the cheapest ``n`` that meets the deadline."""
    total = 0.0
    for b in np.unique(tr.burst):
        m = tr.burst == b
        durs = tr.duration[m].tolist()
        best = None
        for n in range(1, len(durs) + 1):
            fin = _list_schedule(durs, n * pool.threads)
            per_worker = [
                max(fin[w * pool.threads : (w + 1) * pool.threads]) for w in range(n)
            ]
            if pool.startup_s + max(per_worker) > tr.deadline[int(b)] + 1e-9:
                continue
            cost = sum(max(pool.startup_s + f, minimum) for f in per_worker if f > 0)
            best = cost if best is None else min(best, cost)
        if best is None:
            return None
        total += best
    return total * PRICE / 3600.0


@FAST
@given(cases())
def test_bounds_sandwich_busy_time_and_a_feasible_plan(case):
    tr, pool, minimum, dt = case
    plan = _one_life_plan(tr, pool, minimum)
    assert plan is not None  # deadlines leave room for one worker per task
    clair = exact_oracle(tr, [pool], minimum, dt=dt, time_limit=TL)
    ofo = exact_oracle(tr, [pool], minimum, dt=dt, time_limit=TL, online=True)
    busy = busy_time_bound(tr, [pool])["usd"]
    assert clair.usd >= busy - 1e-12 and clair.busy_usd == pytest.approx(busy)
    assert clair.usd <= plan * (1 + 1e-6) + 1e-12
    assert ofo.usd <= plan * (1 + 1e-6) + 1e-12  # the plan launches on arrival
    # the solver's dual bound is below any plan it found (in the grid model,
    # which may pay less than busy time: each life is charged a slot less)
    assert clair.dual_bound_usd <= ofo.plan_usd * (1 + 1e-6) + 1e-12
    assert clair.dual_bound_usd <= clair.plan_usd * (1 + 1e-6) + 1e-12
    if clair.status == ofo.status == "optimal":
        assert clair.usd <= ofo.usd * (1 + 1e-3)
    assert clair.deadlines_relaxed == {} and clair.dt == dt


@FAST
@given(cases(), st.sampled_from(["adaptive", "balanced"]))
def test_no_simulated_policy_pays_less(case, which):
    """A simulated run meets the deadlines it achieved, so the oracle for
    those deadlines (each burst's achieved latency) is at most its cost."""
    tr, pool, minimum, dt = case
    policy = StockAdaptivePolicy(5.0) if which == "adaptive" else BalancedPolicy(1.0)
    r = Simulator(tr, [pool], policy, minimum_billing=minimum).run()
    assert r.tasks_done == len(tr)
    met = Trace(tr.name, tr.submit, tr.duration, tr.kind, tr.burst,
                {b: lat + 1e-6 for b, lat in r.burst_latency_s.items()})  # fmt: skip
    clair = exact_oracle(met, [pool], minimum, dt=dt, time_limit=TL)
    assert clair.deadlines_relaxed == {}
    assert clair.usd <= r.cost_usd * (1 + 1e-6) + 1e-12
    # both policies launch only while work is outstanding
    ofo = exact_oracle(met, [pool], minimum, dt=dt, time_limit=TL, online=True)
    assert ofo.usd <= r.cost_usd * (1 + 1e-6) + 1e-12


def test_concurrent_bursts_each_need_their_own_worker():
    """Two bursts arriving together, each needing a whole two-thread worker:
    the old level-merging oracle served both with one worker (60 worker-s)."""
    pool = PoolSpec("cpu", threads=2, startup_s=10, usd_per_hour=PRICE)
    tr = Trace("two", np.zeros(4), np.full(4, 50.0), np.zeros(4, np.int8),
               np.array([0, 0, 1, 1]), {0: 70.0, 1: 70.0})  # fmt: skip
    r = exact_oracle(tr, [pool], 0.0, dt=1.0, time_limit=20)
    # true optimum: two workers for 10 + 50 s = 120 worker-s; the grid's
    # rounding (each life charged one slot less) allows 118
    assert r.status == "optimal" and r.peak_workers["cpu"] == 2
    assert 118 - 1e-6 <= _ws(r.usd) <= 120 + 1e-6
    assert _ws(r.plan_usd) == pytest.approx(r.worker_s)


def test_a_reduction_after_the_maps_is_paid_for():
    """The long reduce is one task: it cannot be spread over workers, so the
    graph costs more than the same work as a fluid."""
    pool = PoolSpec("cpu", threads=2, startup_s=20, usd_per_hour=PRICE)
    tr = burst_then_reduce(n_map=60, reduce_s=60.0, deadline=150.0)
    g = exact_oracle(tr, [pool], 30.0, dt=2.0, time_limit=20)
    fluid = Trace(tr.name, tr.submit, np.full(len(tr), tr.duration.sum() / len(tr)),
                  tr.kind, tr.burst, tr.deadline)  # fmt: skip
    f = exact_oracle(fluid, [pool], 30.0, dt=2.0, time_limit=20)
    assert g.critical_path_s[0] >= 60.0
    # a worker lives through startup, a map and the whole reduce
    assert _ws(g.usd) >= 20 + 60 + tr.duration[:-1].min()
    assert g.usd > f.usd * 1.05


def test_deadline_below_the_critical_path_is_raised_and_reported():
    pool = PoolSpec("cpu", threads=1, startup_s=10, usd_per_hour=PRICE)
    tr = Trace("tight", np.zeros(2), np.array([5.0, 30.0]), np.zeros(2, np.int8),
               np.zeros(2, int), {0: 20.0}, [[], [0]])  # fmt: skip
    r = exact_oracle(tr, [pool], 0.0, dt=1.0, time_limit=10)
    assert r.deadlines_relaxed[0] == pytest.approx(45.0)  # startup + 5 + 30
    assert r.critical_path_s[0] == pytest.approx(35.0)
    assert (
        _ws(r.usd) >= 45 - 1 - 1e-6
    )  # one life through the chain (one slot of rounding)


def test_online_pays_startup_that_clairvoyance_hides():
    """A burst at t=100 with a 30 s deadline and 25 s startup: clairvoyant
    pre-launches; online-feasible must launch on arrival and use more workers."""
    pool = PoolSpec("cpu", threads=1, startup_s=25, usd_per_hour=PRICE)
    tr = Trace("late", np.full(4, 100.0), np.full(4, 10.0), np.zeros(4, np.int8),
               np.zeros(4, int), {0: 40.0})  # fmt: skip
    c = exact_oracle(tr, [pool], 0.0, dt=1.0, time_limit=10)
    o = exact_oracle(tr, [pool], 0.0, dt=1.0, time_limit=10, online=True)
    assert c.status == o.status == "optimal"
    assert c.usd < o.usd
    assert min(t for t, _ in o.launches["cpu"]) >= 99.0  # not before arrival (grid)
    assert min(t for t, _ in c.launches["cpu"]) < 99.0


def test_gpu_work_needs_a_gpu_pool_and_mixed_pools_solve():
    cpu = PoolSpec("cpu", threads=2, startup_s=10, usd_per_hour=PRICE)
    gpu = PoolSpec("gpu", kind="gpu", threads=1, startup_s=20, usd_per_hour=3.6)
    tr = Trace("mix", np.zeros(4), np.array([5.0, 5.0, 8.0, 8.0]),
               np.array([0, 0, 1, 1], np.int8), np.zeros(4, int), {0: 60.0},
               [[], [], [0], [1]])  # fmt: skip
    with pytest.raises(ValueError, match="gpu work but no gpu pool"):
        exact_oracle(tr, [cpu], 10.0)
    r = exact_oracle(tr, [cpu, gpu], 10.0, dt=1.0, time_limit=10)
    assert r.worker_s_by_pool["gpu"] > 0 and r.worker_s_by_pool["cpu"] > 0
    assert r.usd >= r.busy_usd


def test_oracle_cost_keeps_the_harness_keys_and_dt_coarsens_with_length():
    pool = PoolSpec("cpu", threads=2, startup_s=10, usd_per_hour=PRICE)
    tr = Trace("s", np.zeros(3), np.full(3, 5.0), np.zeros(3, np.int8), np.zeros(3, int),
               {0: 40.0})  # fmt: skip
    o = oracle_cost(tr, [pool], 20.0, time_limit=10, online=True)
    assert 0 < o["lower_bound"] <= o["oracle"] <= o["online"]
    assert o["results"]["clairvoyant"].variant == "clairvoyant"
    assert choose_dt(tr, [pool], 20.0) == 1.0
    n = 400
    long = Trace("long", np.arange(n) * 300.0, np.full(n, 5.0), np.zeros(n, np.int8),
                 np.arange(n), dict.fromkeys(range(n), 60.0))  # fmt: skip
    assert choose_dt(long, [pool], 20.0) > 1.0
    nodl = Trace(
        "nodl", np.zeros(2), np.full(2, 5.0), np.zeros(2, np.int8), np.zeros(2, int)
    )
    r = exact_oracle(nodl, [pool], 20.0, dt=1.0, time_limit=10)
    assert r.deadlines[0] >= 10.0 and math.isfinite(r.usd)
