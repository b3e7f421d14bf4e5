"""The EDF sizing (lepton_dask.scaling.edf) on its own: capacity over time,
feasibility by Graham's bound, and the fewest new workers that make every
deadline."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lepton_dask.scaling.edf import Capacity, Due, Sizing, feasible
from lepton_dask.scaling.state import PoolSpec


def _due(due, work, critical=0.0, tasks=math.inf, batch="b"):
    return Due(due, work, critical, tasks, batch)


def test_capacity_delivers_thread_seconds_by_steps():
    cap = Capacity([(0.0, 2.0), (10.0, 2.0)])
    assert cap.delivered(10.0) == 20.0
    assert cap.delivered(20.0) == 60.0
    assert cap.time_for(60.0) == 20.0
    assert Capacity([]).time_for(1.0) == math.inf
    capped = Capacity([(0.0, 8.0)], cap=2.0)  # two tasks: two threads work
    assert capped.delivered(5.0) == 10.0


@pytest.mark.parametrize("threads", [1, 2, 4, 8])
@pytest.mark.parametrize("work, critical", [(100.0, 0.0), (100.0, 10.0), (40.0, 30.0)])
def test_feasible_is_grahams_bound(threads, work, critical):
    """m threads from now finish W seconds of work whose longest chain is L
    by T = (W - L) / m + L: a due at T is feasible, one just before is not."""
    cap = Capacity([(0.0, float(threads))])
    t = max((work - critical) / threads + critical, work / threads)
    assert feasible(cap, [_due(t + 1e-6, work, critical)]) == (True, None)
    assert feasible(cap, [_due(t * 0.99, work, critical, batch="x")]) == (False, "x")


def test_feasible_checks_every_prefix_in_edf_order():
    cap = Capacity([(0.0, 1.0)])
    early, late = _due(10.0, 20.0, batch="early"), _due(100.0, 5.0, batch="late")
    assert feasible(cap, [early, late]) == (False, "early")
    assert feasible(cap, [_due(30.0, 20.0), late]) == (True, None)


def _sizing(warm, startup, slots, dues):
    pool = PoolSpec("cpu", threads=1, startup_s=startup, max_workers=slots)
    return Sizing(warm, [], [pool] * slots, dues)


def test_fewest_new_fastest_and_finish():
    # 600 s of work (a 1 s chain) due in 120 s, new workers after a 60 s
    # startup: (600 - 1) / m + 1 <= 60 needs m = 11
    sz = _sizing([], 60.0, 50, [_due(120.0, 600.0, 1.0, tasks=600)])
    n = sz.fewest_new()
    assert n == 11 and sz.feasible(n)[0] and not sz.feasible(n - 1)[0]
    assert sz.fastest() == 50  # threads until the tasks that can run are covered
    assert sz.finish(n) == pytest.approx(60.0 + 600.0 / 11 + 1.0)


def test_least_late_buys_no_worker_that_arrives_too_late_to_help():
    # 100 s of work due in 5 s; one warm thread; new workers start in 200 s,
    # after the warm thread has done the work: none is worth buying
    sz = _sizing([1.0], 200.0, 10, [_due(5.0, 100.0, tasks=100)])
    assert not sz.feasible(len(sz.slots))[0]
    n_fast = sz.fastest()
    assert n_fast == 10
    assert sz.least_late(n_fast) == 0


def test_least_late_is_as_fast_as_the_fastest_within_the_slack():
    sz = _sizing([], 10.0, 20, [_due(5.0, 400.0, tasks=400)])
    n_fast = sz.fastest()
    n = sz.least_late(n_fast)
    assert 0 < n <= n_fast
    assert sz.finish(n) <= sz.finish(n_fast) * 1.01


def test_least_late_buys_no_worker_for_a_sliver_of_the_deadline():
    # one warm thread finishes 10.5 s of work at 10.5 s, due in 1 s of a 10 s
    # deadline; a new thread arriving at 10 s would end it at 10.25 s: 0.25 s
    # sooner, a fortieth of the deadline. 1% of the finish (0.1 s) would buy it
    late = Due(1.0, 10.5, 0.0, 100, "b", span=10.0)
    sz = _sizing([1.0], 10.0, 4, [late])
    n_fast = sz.fastest()
    assert sz.finish(1) < sz.finish(0) * 0.99
    assert sz.least_late(n_fast) == 0
    assert sz.least_late(n_fast, span_share=0.0) > 0


dues_st = st.lists(
    st.tuples(
        st.floats(1.0, 2000.0),  # due
        st.floats(0.1, 2000.0),  # work
        st.floats(0.0, 50.0),  # critical
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(
    dues=dues_st,
    warm=st.lists(st.sampled_from([1.0, 2.0, 4.0]), max_size=4),
    startup=st.floats(0.0, 120.0),
    slots=st.integers(0, 40),
)
def test_feasibility_is_monotone_and_fewest_new_is_the_least(
    dues, warm, startup, slots
):
    """More new workers never make a due infeasible, so the binary search of
    fewest_new finds the least count that makes every due feasible."""
    ds = sorted(
        (_due(d, w, min(c, w), batch=str(i)) for i, (d, w, c) in enumerate(dues)),
        key=lambda d: d.due,
    )
    sz = _sizing(warm, startup, slots, ds)
    ok = [sz.feasible(n)[0] for n in range(slots + 1)]
    assert all(b or not a for a, b in itertools.pairwise(ok))  # monotone
    if ok[-1]:
        n = sz.fewest_new()
        assert ok[n] and (n == 0 or not ok[n - 1])
    else:
        n_fast = sz.fastest()
        assert 0 <= sz.least_late(n_fast) <= n_fast
