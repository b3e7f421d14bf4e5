"""The simulator's start semantics: workers in parallel (LocalPoolCluster,
dask-jobqueue), serially under SpecCluster's lock held through a boot, and
a measured launch-to-arrival lag."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_dask.scaling.state import Decision, PoolSpec
from lepton_dask.sim import Simulator, Trace


class _Steps:
    """Asks for 2 workers at t = 0 and 2 more at t = 5 (a scaler buying in
    steps), whatever it sees: the start semantics under test, not a policy."""

    def decide(self, view):
        n = 2 if view.now < 5 else 4
        return Decision({"cpu": n}, f"{n} workers")


def _run(**kw):
    tr = Trace(
        "one",
        np.zeros(4),
        np.full(4, 100.0),
        np.zeros(4, dtype=np.int8),
        np.zeros(4, dtype=np.int64),
    )
    pool = PoolSpec("cpu", threads=1, startup_s=20.0, max_workers=4)
    return Simulator(
        tr, [pool], _Steps(), minimum_billing=0.0, interval=1.0, **kw
    ).run()


def test_workers_start_in_parallel_by_default():
    r = _run()
    # the four tasks start at 20 s (first two) and 25 s (the next two)
    assert r.makespan_s == pytest.approx(125.0)


def test_serial_starts_hold_a_request_until_the_starting_workers_arrive():
    r = _run(serial_starts=True)
    # the request at 5 s starts its 20 s only when the first two arrive at 20
    assert r.makespan_s == pytest.approx(140.0)


def test_a_measured_start_lag_delays_every_arrival():
    r = _run(start_lag=[3.0])
    assert r.makespan_s == pytest.approx(128.0)
