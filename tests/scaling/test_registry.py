"""One way to pick a policy: every name a user can type is in the registry
(lepton_dask.scaling.registry), the default is the SLO policy, and no other
table of policy names exists in the package."""

from __future__ import annotations

import ast
from pathlib import Path

import dask
import pytest
import yaml

import lepton_dask
from lepton_dask import config
from lepton_dask.scaling import CostAwareAdaptive, Policy, SLOPolicy
from lepton_dask.scaling.registry import (
    DEFAULT,
    DEFAULT_DEADLINE_S,
    POLICIES,
    policy_from_config,
)

PACKAGE = Path(lepton_dask.__file__).parent


def _defaults() -> dict:
    with open(config.DEFAULTS_PATH) as f:
        return yaml.safe_load(f)["lepton"]["scaling"]


def test_the_default_is_the_slo_policy_with_a_deadline():
    assert DEFAULT == "slo" == _defaults()["policy"]
    policy = policy_from_config()
    assert isinstance(policy, SLOPolicy) and policy.deadline == DEFAULT_DEADLINE_S
    # a stated term replaces the default deadline, never joins it
    latency = policy_from_config({"policy": "slo", "latency": 30})
    assert latency.stream and latency.deadline == 30.0
    budget = policy_from_config({"policy": "slo", "budget-usd-per-hour": 2.0})
    assert budget.deadline is None and budget.usd_per_hour == 2.0


def test_cost_aware_adaptive_without_a_policy_runs_the_default():
    from lepton_dask.scaling.pools import LocalPoolCluster
    from lepton_dask.scaling.state import PoolSpec

    with (
        dask.config.set({"lepton.cost.ledger": False}),
        LocalPoolCluster([PoolSpec("cpu")], processes=False) as cluster,
    ):
        adaptive = CostAwareAdaptive(cluster)
        assert isinstance(adaptive.policy, SLOPolicy)
        adaptive.stop()


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_name_builds_a_policy_from_its_terms(name):
    entry = POLICIES[name]
    scaling = _defaults()
    assert set(entry.terms) <= set(scaling), "every term is a lepton.scaling key"
    cfg = {"policy": name, "weight": 1.0, "deadline": "10m", "budget-usd-per-hour": 2}
    policy = policy_from_config(cfg)
    assert isinstance(policy, Policy) and entry.description


def test_the_schema_and_the_command_line_offer_the_registrys_names():
    with open(config.SCHEMA_PATH) as f:
        schema = yaml.safe_load(f)
    scaling = schema["properties"]["lepton"]["properties"]["scaling"]["properties"]
    assert set(scaling["policy"]["enum"]) == set(POLICIES)
    from lepton_dask.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    option = next(
        a for a in sub.choices["deploy"]._actions if a.dest == "scaler_policy"
    )
    assert list(option.choices) == list(POLICIES)


def test_names_that_are_gone_are_refused_with_the_names_there_are():
    for name in ("deadline", "busy-period-deadline", "adaptive", "fastest"):
        with pytest.raises(ValueError, match="must be one of balanced, budget"):
            policy_from_config({"policy": name})


def _name_tables(path: Path) -> list[int]:
    """Lines of ``path`` with a literal list, tuple, set or dict (keys) that
    holds two or more policy names."""
    names = set(POLICIES)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            elts = node.elts
        elif isinstance(node, ast.Dict):
            elts = [k for k in node.keys if k is not None]
        else:
            continue
        found = {e.value for e in elts if isinstance(e, ast.Constant)} & names
        if len(found) >= 2:
            out.append(node.lineno)
    return out


def test_no_other_table_of_policy_names():
    tables = {
        str(p.relative_to(PACKAGE)): lines
        for p in sorted(PACKAGE.rglob("*.py"))
        if (lines := _name_tables(p))
    }
    assert list(tables) == ["scaling/registry.py"], tables
