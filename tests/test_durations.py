"""Every duration a user types takes seconds or a Dask duration string
(``"90s"``, ``"10m"``): the policy constructors, the configuration and the
command line, all through :func:`lepton_dask.config.parse_duration`."""

from __future__ import annotations

import dask
import pytest

import lepton_dask
from lepton_dask.cli import build_parser
from lepton_dask.config import get_timedelta, parse_duration, validate
from lepton_dask.scaling import PredictivePolicy, SLOPolicy, policy_from_config


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("10m", 600.0),
     ("1.5 hours", 5400.0), ("250ms", 0.25)],
)  # fmt: skip
def test_parse_duration(value, seconds):
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("value", ["soon", "-5s", True, None, [1], float("nan")])
def test_parse_duration_names_the_setting(value):
    with pytest.raises(ValueError, match="my-term must be a duration"):
        parse_duration(value, "my-term")


def test_policy_constructors():
    assert SLOPolicy(deadline="10m").deadline == 600.0
    assert SLOPolicy("90s").deadline == 90.0
    stream = SLOPolicy(latency="2m")
    assert stream.deadline == 120.0 and stream.stream
    assert SLOPolicy(deadline=60).deadline == 60
    assert policy_from_config({"policy": "slo", "deadline": "5m"}).deadline == 300.0
    assert PredictivePolicy(SLOPolicy(deadline="1m")).deadline == 60.0
    with pytest.raises(ValueError, match="deadline must be a duration"):
        SLOPolicy(deadline="ten minutes-ish")


def test_the_deadline_context_manager():
    with lepton_dask.deadline("10m"):
        assert dask.get_annotations()["lepton_deadline"] == 600.0
    with lepton_dask.deadline(90):
        assert dask.get_annotations()["lepton_deadline"] == 90.0
    with pytest.raises(ValueError, match="deadline must be a duration"):
        with lepton_dask.deadline("whenever"):
            pass


def test_config_terms():
    cfg = {
        "lepton": {
            "scaling": {"policy": "slo", "deadline": "10m", "interval": "2s"},
            "cost": {"flush-interval": "1m", "minimum-billing": 60},
            "store": {"timeout": "3s"},
        }
    }
    assert validate(cfg) == []
    with dask.config.set(cfg):
        assert policy_from_config().deadline == 600.0
        assert get_timedelta("lepton.cost.flush-interval") == 60.0
        assert get_timedelta("lepton.cost.minimum-billing") == 60.0
        assert get_timedelta("lepton.store.timeout") == 3.0
    assert policy_from_config({"policy": "slo", "latency": "90s"}).deadline == 90.0
    with pytest.raises(ValueError, match=r"lepton\.scaling\.deadline must be a dur"):
        validate({"lepton": {"scaling": {"deadline": "soonish"}}})


def test_config_pool_startup():
    from lepton_dask.scaling.managers import pool_from_config

    spec, _ = pool_from_config({"name": "cpu", "startup": "2m"})
    assert spec.startup_s == 120.0


@pytest.mark.parametrize(
    ("argv", "dest"),
    [
        (["store", "gc", "--grace", "10m"], "grace"),
        (["plan", "--workload", "w", "--deadline", "10m"], "deadline"),
        (["demo", "--scaling-seconds", "10m"], "scaling_seconds"),
        (["experiment", "--oracle-seconds", "10m"], "oracle_seconds"),
        (["k8s-scaler", "--scheduler", "s", "--groups", "g", "--interval", "10m"],
         "interval"),
        (["deploy", "helm", "check", "--scaler-deadline", "10m"], "scaler_deadline"),
    ],
)  # fmt: skip
def test_command_line(argv, dest):
    assert getattr(build_parser().parse_args(argv), dest) == 600.0
