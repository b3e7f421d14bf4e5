"""The yardstick on long traces (sim/bounds.py): cut at idle stretches, a
lower bound from the windows' exact programs, an upper bound from simulated
runs that meet every deadline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lepton_dask.scaling import BalancedPolicy, PoolSpec, SLOPolicy
from lepton_dask.sim import Simulator, Trace
from lepton_dask.sim.bounds import PlanPolicy, bounds, idle_cut_s, split
from lepton_dask.sim.oracle import exact_oracle

PRICE = 0.36
FAST = settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def _trace(arrivals, sizes, deadline=40.0, name="t", deps=None) -> Trace:
    sub, dur, burst = [], [], []
    for b, (a, n) in enumerate(zip(arrivals, sizes, strict=True)):
        sub += [float(a)] * n
        dur += [4.0 + (i % 3) for i in range(n)]
        burst += [b] * n
    return Trace(
        name,
        np.array(sub),
        np.array(dur),
        np.zeros(len(sub), np.int8),
        np.array(burst),
        dict.fromkeys(range(len(arrivals)), deadline),
        deps,
    )


def test_the_cut_is_minimum_plus_the_larger_of_startup_and_minimum():
    pools = [PoolSpec("a", startup_s=30), PoolSpec("b", startup_s=90)]
    assert idle_cut_s(pools, 60.0) == 150.0
    assert idle_cut_s([PoolSpec("a", startup_s=10)], 60.0) == 120.0


def test_split_cuts_only_where_every_plan_may_be_idle():
    pool = PoolSpec("cpu", threads=1, startup_s=10, usd_per_hour=PRICE)
    # deadlines end at 40, 240, 300: idle 160 s (cut), then 20 s (no cut)
    tr = _trace([0, 200, 260], [3, 3, 3])
    wins = split(tr, [pool], 30.0)  # the cut: 30 + max(10, 30) = 60 s
    assert [sorted(set(w.burst.tolist())) for w in wins] == [[0], [1, 2]]
    second = wins[1]
    shift = 200.0 - second.submit.min()
    assert shift % 60.0 == 0  # whole minutes: the grids of both fall alike
    assert second.submit.min() >= pool.startup_s  # room to launch before it
    assert second.deadline == {1: 40.0, 2: 40.0}


def test_select_keeps_the_graph_of_what_it_keeps():
    deps = [[], [0], [], [2], [2, 3]]
    tr = Trace("g", np.array([0.0, 0, 100, 100, 100]), np.ones(5),
               np.zeros(5, np.int8), np.array([0, 0, 1, 1, 1]), {0: 9.0, 1: 9.0},
               deps)  # fmt: skip
    w = tr.select([1], shift=60.0)
    assert w.deps == [[], [0], [0, 1]] and w.submit.tolist() == [40.0] * 3
    assert w.deadline == {1: 9.0}


@st.composite
def gapped(draw):
    """2-3 small bursts, some gaps above the cut and some below."""
    startup = float(draw(st.sampled_from([0, 10])))
    minimum = float(draw(st.sampled_from([10, 20])))
    pool = PoolSpec("cpu", threads=draw(st.integers(1, 2)), startup_s=startup,
                    usd_per_hour=PRICE)  # fmt: skip
    nb = draw(st.integers(2, 3))
    gaps = draw(st.lists(st.sampled_from([60, 120, 240]), min_size=nb - 1,
                         max_size=nb - 1))  # fmt: skip
    arrivals = [60 + sum(gaps[:i]) for i in range(nb)]
    sizes = draw(st.lists(st.integers(1, 4), min_size=nb, max_size=nb))
    return _trace(arrivals, sizes, deadline=startup + 30.0), pool, minimum


@FAST
@given(gapped())
def test_the_windows_sum_to_the_whole_traces_program(case):
    """On small traces the windows' programs add up to the program of the
    whole trace, on the same grid."""
    tr, pool, minimum = case
    whole = exact_oracle(tr, [pool], minimum, dt=2.0, time_limit=30)
    parts = [exact_oracle(w, [pool], minimum, dt=2.0, time_limit=30)
             for w in split(tr, [pool], minimum)]  # fmt: skip
    assert whole.status == "optimal" and all(p.status == "optimal" for p in parts)
    assert sum(p.usd for p in parts) == pytest.approx(whole.usd, rel=1e-6, abs=1e-12)


def test_both_bounds_bracket_every_simulated_policy():
    pool = PoolSpec("cpu", threads=2, startup_s=10, usd_per_hour=PRICE)
    tr = _trace([0, 30, 400, 430, 900], [6, 3, 8, 2, 5], deadline=40.0)
    b = bounds(tr, [pool], 30.0, dt=1.0)
    clair, online = b["clairvoyant"], b["online"]
    assert clair.windows == 3 and clair.exact
    assert clair.lower <= clair.upper < float("inf")
    assert clair.lower <= online.lower <= online.upper
    assert 0 <= clair.certified_gap < 1
    ran = 0
    for policy in (SLOPolicy(deadline=40.0), BalancedPolicy(1.0), BalancedPolicy(100)):
        r = Simulator(tr, [pool], policy, minimum_billing=30.0).run()
        if r.deadline_met >= 1.0:
            ran += 1
            assert clair.lower <= r.cost_usd * (1 + 1e-9)
            assert online.lower <= r.cost_usd * (1 + 1e-9)  # these launch on work
    assert ran  # at least one policy met every deadline


def test_the_upper_bound_is_a_run_that_meets_every_deadline():
    """A window's plan, followed in the simulator, meets every deadline and
    costs what the upper bound says."""
    pool = PoolSpec("cpu", threads=2, startup_s=10, usd_per_hour=PRICE)
    tr = _trace([60], [8], deadline=40.0)
    (w,) = split(tr, [pool], 30.0)
    plan = exact_oracle(w, [pool], 30.0, dt=1.0)
    b = bounds(tr, [pool], 30.0, dt=1.0)["clairvoyant"]
    costs = []
    for a in (1, 2):
        for e in (0, 1):
            r = Simulator(w, [pool], PlanPolicy(plan.billed, 1.0, advance=a, extra=e),
                          minimum_billing=30.0).run()  # fmt: skip
            if r.deadline_met >= 1.0:
                costs.append(r.cost_usd)
    assert costs and b.upper <= min(costs) + 1e-12
    assert b.upper_by and sum(b.upper_by.values()) == 1


def test_plan_policy_online_grows_only_while_work_is_outstanding():
    pool = PoolSpec("cpu", threads=1, startup_s=10, usd_per_hour=PRICE)
    tr = _trace([100], [4], deadline=60.0)
    billed = {"cpu": [0] * 80 + [3] * 100}  # the plan pre-warms from 80 s
    r = Simulator(tr, [pool], PlanPolicy(billed, 1.0, online=True),
                  minimum_billing=10.0).run()  # fmt: skip
    assert min(start for _, start, _, _ in r.lifetimes) >= 100.0
    r = Simulator(tr, [pool], PlanPolicy(billed, 1.0), minimum_billing=10.0).run()
    assert min(start for _, start, _, _ in r.lifetimes) < 100.0
