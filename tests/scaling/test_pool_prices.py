"""A PoolSpec misprices nothing: given an instance type and no price, it takes
the catalog's; an unknown type without a price is an error naming the nearest
types; the same for ``lepton.scaling.pools`` and the deploy files."""

from __future__ import annotations

import dask
import pytest

from lepton_dask.cost.catalog import PRICING_CLASSES, load_catalog
from lepton_dask.scaling.managers import pool_from_config
from lepton_dask.scaling.state import PoolSpec

CATALOG = load_catalog()


@pytest.mark.parametrize("pricing", PRICING_CLASSES)
@pytest.mark.parametrize("itype", sorted(CATALOG))
def test_every_catalog_entry_is_priced_from_the_catalog(itype, pricing):
    price = CATALOG[itype].usd_per_hour(pricing)
    kind = "gpu" if CATALOG[itype].gpus else "cpu"
    assert PoolSpec("p", instance_type=itype, pricing=pricing).usd_per_hour == price
    assert PoolSpec("p", itype, pricing, kind=kind) == PoolSpec.from_catalog(
        "p", itype, pricing, kind=kind
    )
    spec, _ = pool_from_config({"instance-type": itype, "pricing": pricing})
    assert spec.usd_per_hour == price


def test_the_issue_example():
    assert PoolSpec("gpu", instance_type="g5.xlarge", kind="gpu").usd_per_hour == 1.006


def test_local_keeps_its_price():
    assert PoolSpec("cpu").usd_per_hour == 0.096
    assert PoolSpec("cpu", threads=2, max_workers=4).instance_type == "local"


def test_an_explicit_price_wins():
    assert (
        PoolSpec("gpu", instance_type="g5.xlarge", usd_per_hour=0.5).usd_per_hour == 0.5
    )
    assert (
        PoolSpec("mine", instance_type="my-box", usd_per_hour=0.2).usd_per_hour == 0.2
    )
    spec, _ = pool_from_config({"instance-type": "my-box", "usd-per-hour": 0.2})
    assert spec.usd_per_hour == 0.2


def test_unknown_type_names_the_nearest():
    with pytest.raises(ValueError, match=r"did you mean 'g5\.xlarge'"):
        PoolSpec("gpu", instance_type="g5.xlarj")
    with pytest.raises(ValueError, match=r"did you mean 'm6i\.large'"):
        pool_from_config({"instance-type": "m6i.larg"})


def test_local_is_priced_when_a_custom_catalog_leaves_it_out(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "instance-types:\n  box:\n    vcpus: 2\n    memory-gib: 4\n"
        "    on-demand-usd-per-hour: 0.5\n    spot-usd-per-hour: 0.2\n"
        "    source: mine\n    date: '2026-01'\n"
    )
    with dask.config.set({"lepton.cost.catalog": str(path)}):
        assert PoolSpec("a", instance_type="box").usd_per_hour == 0.5
        assert PoolSpec("cpu").usd_per_hour == 0.096
        with pytest.raises(ValueError, match="did you mean 'box'"):
            PoolSpec("a", instance_type="bax")


def test_deploy_pools_name_the_nearest_type():
    from lepton_dask.deploy.spec import parse_pool

    with pytest.raises(ValueError, match=r"did you mean 'm6i\.large'"):
        parse_pool("cpu=m6i.larg:spot")
