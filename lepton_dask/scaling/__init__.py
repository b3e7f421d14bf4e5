"""Cost-aware adaptive scaling: pure policies and the loop that applies them."""

from lepton_dask.scaling.adaptive import CostAwareAdaptive
from lepton_dask.scaling.model import ErnestModel
from lepton_dask.scaling.policies import (
    BalancedPolicy,
    BudgetPolicy,
    DeadlinePolicy,
    StockAdaptivePolicy,
    make_policy,
    policy_from_config,
)
from lepton_dask.scaling.pools import LocalPoolCluster
from lepton_dask.scaling.predictive import PredictivePolicy
from lepton_dask.scaling.slo import SLOPolicy, deadline
from lepton_dask.scaling.state import ClusterView, Decision, PoolSpec, WorkerView

__all__ = [
    "BalancedPolicy",
    "BudgetPolicy",
    "ClusterView",
    "CostAwareAdaptive",
    "DeadlinePolicy",
    "Decision",
    "ErnestModel",
    "LocalPoolCluster",
    "PoolSpec",
    "PredictivePolicy",
    "SLOPolicy",
    "StockAdaptivePolicy",
    "WorkerView",
    "deadline",
    "make_policy",
    "policy_from_config",
]
