"""Traces refuse bad input, each with a message naming the batch and field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lepton_dask.experiments.recorded import trace_from_recording
from lepton_dask.sim.trace import Trace


def _trace(**kw):
    args = dict(
        name="t",
        submit=np.array([0.0, 5.0]),
        duration=np.ones(2),
        kind=np.zeros(2, np.int8),
        burst=np.array([0, 1]),
        deadline={0: 10.0, 1: 10.0},
    )
    args.update(kw)
    return Trace(**args)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"submit": np.array([-29.9, 5.0])},
            r"batch 0, task 0: submit must be .* -29\.9",
        ),
        (
            {"submit": np.array([0.0, math.inf])},
            r"batch 1, task 1: submit must be .* inf",
        ),
        ({"submit": np.array([math.nan, 5.0])}, r"batch 0, task 0: submit .* nan"),
        (
            {"duration": np.array([1.0, -2.0])},
            r"batch 1, task 1: duration must be .* -2\.0",
        ),
        ({"duration": np.array([math.nan, 1.0])}, r"batch 0, task 0: duration .* nan"),
        ({"deadline": {0: 10.0, 1: -3.0}}, r"batch 1: deadline must be a positive"),
        ({"deadline": {0: 0.0}}, r"batch 0: deadline .* at or before the batch"),
        ({"latency": -1.0}, r"latency must be a positive number of seconds, got -1\.0"),
    ],
)
def test_bad_traces_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        _trace(**kw)


def test_a_good_trace_is_accepted():
    assert len(_trace()) == 2


def test_a_recording_with_a_bad_batch_is_refused():
    doc = {
        "_id": "r1",
        "complete": True,
        "workload": "w",
        "groups": [
            {
                "id": 0,
                "prefix": "load",
                "gpu": False,
                "deps": [],
                "edges": [],
                "tasks": 2,
                "duration": {
                    "count": 2,
                    "sum": 2.0,
                    "min": 1.0,
                    "max": 1.0,
                    "bins": [],
                    "counts": [],
                },
            }
        ],
        "batches": [{"arrival": -29.9, "groups": [0], "tasks": [2]}],
    }
    with pytest.raises(ValueError, match=r"batch 0, task 0: submit .* -29\.9"):
        trace_from_recording(doc)
