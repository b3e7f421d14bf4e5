"""Cost-aware adaptive scaling: pure policies and the loop that applies them.

The public names are imported on first use, so that the policy names
(:mod:`lepton_dask.scaling.registry`) load without the cluster code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lepton_dask.scaling.adaptive import CostAwareAdaptive
    from lepton_dask.scaling.model import ErnestModel
    from lepton_dask.scaling.policies import BalancedPolicy, BudgetPolicy
    from lepton_dask.scaling.pools import LocalPoolCluster
    from lepton_dask.scaling.predictive import PredictivePolicy
    from lepton_dask.scaling.registry import Policy, policy_from_config
    from lepton_dask.scaling.slo import SLOPolicy, deadline
    from lepton_dask.scaling.state import ClusterView, Decision, PoolSpec, WorkerView

#: where each public name lives
_FROM = {
    "BalancedPolicy": "lepton_dask.scaling.policies",
    "BudgetPolicy": "lepton_dask.scaling.policies",
    "ClusterView": "lepton_dask.scaling.state",
    "CostAwareAdaptive": "lepton_dask.scaling.adaptive",
    "Decision": "lepton_dask.scaling.state",
    "ErnestModel": "lepton_dask.scaling.model",
    "LocalPoolCluster": "lepton_dask.scaling.pools",
    "Policy": "lepton_dask.scaling.registry",
    "PoolSpec": "lepton_dask.scaling.state",
    "PredictivePolicy": "lepton_dask.scaling.predictive",
    "SLOPolicy": "lepton_dask.scaling.slo",
    "WorkerView": "lepton_dask.scaling.state",
    "deadline": "lepton_dask.scaling.slo",
    "policy_from_config": "lepton_dask.scaling.registry",
}
__all__ = [
    "BalancedPolicy",
    "BudgetPolicy",
    "ClusterView",
    "CostAwareAdaptive",
    "Decision",
    "ErnestModel",
    "LocalPoolCluster",
    "Policy",
    "PoolSpec",
    "PredictivePolicy",
    "SLOPolicy",
    "WorkerView",
    "deadline",
    "policy_from_config",
]


def __getattr__(name: str) -> Any:
    if name in _FROM:
        value = getattr(importlib.import_module(_FROM[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
