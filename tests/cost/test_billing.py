"""Billing math and the price catalog (pure, property-tested)."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from lepton_dask.cost import (
    CatalogError,
    Lifetime,
    billed_seconds,
    load_catalog,
    total_spend,
)
from lepton_dask.cost.billing import paid_thread_seconds, spend_rate_usd_per_hour
from lepton_dask.cost.catalog import parse_catalog

times = st.floats(0, 1e6, allow_nan=False)
prices = st.floats(0, 100, allow_nan=False)
minimums = st.floats(0, 3600, allow_nan=False)


@st.composite
def lifetimes(draw):
    start = draw(times)
    end = draw(st.one_of(st.none(), st.floats(start, start + 1e5)))
    return Lifetime(
        worker=draw(st.text(min_size=1, max_size=5)),
        pool="p",
        instance_type="t",
        pricing="on-demand",
        usd_per_hour=draw(prices),
        nthreads=draw(st.integers(1, 64)),
        start=start,
        end=end,
    )


@given(lifetimes(), times, minimums)
def test_spend_is_never_negative(life, now, minimum):
    assert life.spend(now, minimum) >= 0


@given(lifetimes(), times, st.floats(0, 1e5), minimums)
def test_spend_is_monotonic_in_time(life, now, dt, minimum):
    assert life.spend(now + dt, minimum) >= life.spend(now, minimum) - 1e-12


@given(
    st.lists(lifetimes(), max_size=8),
    st.lists(lifetimes(), max_size=8),
    times,
    minimums,
)
def test_spend_is_additive(a, b, now, minimum):
    assert math.isclose(
        total_spend(a + b, now, minimum),
        total_spend(a, now, minimum) + total_spend(b, now, minimum),
        rel_tol=1e-9,
        abs_tol=1e-9,
    )


@given(times, st.floats(0, 1e5), minimums, prices)
def test_finished_life_bills_at_least_the_minimum_and_exactly_its_length_beyond(
    start, length, minimum, price
):
    life = Lifetime("w", "p", "t", "spot", price, 1, start, start + length)
    secs = life.billed_seconds(start + length + 1, minimum)
    # end - start is exact only to the rounding of start + length (an ulp)
    ulp = 2 * math.ulp(abs(start) + length)
    assert secs == pytest.approx(max(length, minimum), abs=ulp)


def test_running_life_accrues_per_second():
    life = Lifetime("w", "p", "t", "on-demand", 3.6, 2, start=100.0)
    assert life.spend(100.0, 60) == 0
    assert life.spend(110.0, 60) == pytest.approx(0.01)  # 10 s at $3.60/h
    assert paid_thread_seconds([life], 110.0, 60) == pytest.approx(20.0)
    assert spend_rate_usd_per_hour([life]) == 3.6


def test_clock_skew_bills_nothing_before_start():
    assert billed_seconds(100.0, None, 50.0, 60) == 0
    # an end before its start (skew) is billed the minimum, never negative
    assert billed_seconds(100.0, 90.0, 200.0, 60) == 60


def test_shipped_catalog_is_valid_and_sourced():
    cat = load_catalog()
    assert {"m6i.large", "g5.xlarge", "p4d.24xlarge", "local"} <= set(cat)
    for t in cat.values():
        assert (
            t.on_demand_usd_per_hour > 0
            and 0 < t.spot_usd_per_hour <= t.on_demand_usd_per_hour
        )
        assert t.source and t.date
    assert cat["g5.xlarge"].gpus == 1 and cat["p4d.24xlarge"].gpus == 8


def test_unknown_instance_type_lists_known_ones():
    with pytest.raises(
        CatalogError, match=r"unknown instance type 'x9.huge'.*known types: .*m6i.large"
    ):
        load_catalog()["x9.huge"]


def _entry(**kw):
    base = {
        "vcpus": 2,
        "memory-gib": 4,
        "on-demand-usd-per-hour": 1.0,
        "spot-usd-per-hour": 0.5,
        "source": "s",
        "date": "2025",
    }
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    "entry, message",
    [
        (_entry(**{"on-demand-usd-per-hour": -1}), "must be >= 0"),
        (_entry(**{"spot-usd-per-hour": float("nan")}), "must be >= 0"),
        (_entry(**{"on-demand-usd-per-hour": None}), "has no 'on-demand-usd-per-hour'"),
        (_entry(**{"spot-usd-per-hour": "cheap"}), "must be a number"),
        (_entry(vcpus=0), "vcpus must be a positive int"),
        (_entry(source=None), "has no 'source'"),
    ],
)
def test_bad_catalog_entries_name_file_and_entry(tmp_path, entry, message):
    path = tmp_path / "cat.yaml"
    path.write_text(yaml.safe_dump({"instance-types": {"box.1": entry}}))
    with pytest.raises(CatalogError) as e:
        load_catalog(str(path))
    assert (
        str(path) in str(e.value)
        and "'box.1'" in str(e.value)
        and message in str(e.value)
    )


def test_malformed_catalog_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("instance-types: [1, 2")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(str(bad))
    with pytest.raises(CatalogError, match="cannot read price catalog"):
        load_catalog(str(tmp_path / "missing.yaml"))
    with pytest.raises(CatalogError, match="expected a mapping"):
        parse_catalog(["x"], "list.yaml")
    with pytest.raises(CatalogError, match="only USD"):
        parse_catalog({"currency": "EUR", "instance-types": {}}, "eur.yaml")
