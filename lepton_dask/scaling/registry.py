"""How a policy is picked: the :class:`Policy` contract, and the one table of
the names a user can type (``lepton.scaling.policy``, the CLI, the deploy
files) with the terms each name reads from ``lepton.scaling``.

In Python, pass a policy object (anything with ``decide(view) -> Decision``);
by name, :func:`policy_from_config` builds the one :data:`POLICIES` describes.
The default is the SLO policy (``slo``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from lepton_dask.config import parse_duration
from lepton_dask.scaling.policies import BalancedPolicy, BudgetPolicy
from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import ClusterView, Decision

__all__ = [
    "DEFAULT",
    "DEFAULT_DEADLINE_S",
    "POLICIES",
    "Policy",
    "PolicyEntry",
    "policy_from_config",
]


@runtime_checkable
class Policy(Protocol):
    """A scaling policy: a pure object, state in, decision out (no I/O, no
    clock of its own), driven alike by CostAwareAdaptive, the scheduler
    plugin, the Kubernetes scaler and the simulator. A policy may also carry
    a ``label`` (read with ``getattr``) that names it in logs and results.

    >>> isinstance(SLOPolicy(deadline=60), Policy)
    True
    """

    def decide(self, view: ClusterView) -> Decision: ...


@dataclass(frozen=True)
class PolicyEntry:
    """One name of :data:`POLICIES`: how to build it, from which
    ``lepton.scaling`` keys (``terms``: key -> keyword argument), which of
    them must be set, and the keyword arguments used when none is set."""

    factory: Callable[..., Policy]
    terms: dict[str, str]
    description: str
    required: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)


def _predictive(**kwargs: Any) -> Policy:
    """The SLO policy's terms, pre-warmed for load that recurs; seeded from
    the ledger's runs of ``lepton.workload`` when it is set."""
    import dask.config

    from lepton_dask.scaling.predictive import PredictivePolicy

    workload = dask.config.get("lepton.workload")
    if workload:  # a restarted scheduler starts with the job's history
        return PredictivePolicy.from_ledger(SLOPolicy(**kwargs), str(workload))
    return PredictivePolicy(SLOPolicy(**kwargs))


#: seconds: each batch's deadline under the SLO policy when no term is set
DEFAULT_DEADLINE_S = 600.0
#: the SLO policy's terms (``lepton.scaling`` key -> keyword argument)
_SLO_TERMS = {
    "deadline": "deadline",
    "latency": "latency",
    "budget-usd-per-hour": "usd_per_hour",
    "budget-usd": "total_usd",
}
_DURATIONS = ("deadline", "latency")

#: every policy name a user can type, and its terms
POLICIES: dict[str, PolicyEntry] = {
    "slo": PolicyEntry(
        SLOPolicy,
        _SLO_TERMS,
        "each batch by its deadline (or a stream's latency) at the least cost, "
        "within an optional budget",
        defaults={"deadline": DEFAULT_DEADLINE_S},
    ),
    "predictive": PolicyEntry(
        _predictive,
        _SLO_TERMS,
        "the slo terms, pre-warmed ahead of load that recurs (seeded from the "
        "ledger's runs of lepton.workload)",
        defaults={"deadline": DEFAULT_DEADLINE_S},
    ),
    "balanced": PolicyEntry(
        BalancedPolicy,
        {"weight": "weight"},
        "least cost + weight (USD per hour of waiting) x delay",
    ),
    "budget": PolicyEntry(
        BudgetPolicy,
        {"budget-usd-per-hour": "usd_per_hour", "budget-usd": "total_usd"},
        "the fastest scale-up within a spend-rate cap (and a total cap)",
        required=("budget-usd-per-hour",),
    ),
}
#: the policy of ``lepton.scaling.policy``'s default
DEFAULT = "slo"


def policy_from_config(cfg: dict | None = None) -> Policy:
    """The policy ``lepton.scaling`` describes (the one factory every scaler
    uses: CostAwareAdaptive, the scheduler plugin, the Kubernetes scaler, the
    CLI). The SLO policy with none of its terms set gives each batch
    :data:`DEFAULT_DEADLINE_S` seconds.

    >>> policy_from_config().label
    'slo deadline 600s'
    >>> policy_from_config({"policy": "slo", "latency": "90s"}).label
    'slo latency 90s'
    >>> type(policy_from_config({"policy": "predictive", "deadline": 600})).__name__
    'PredictivePolicy'
    >>> policy_from_config({"policy": "fastest"})
    Traceback (most recent call last):
    ...
    ValueError: lepton.scaling.policy must be one of balanced, budget, predictive, slo, got 'fastest'
    """
    import dask.config

    cfg = dict(dask.config.get("lepton.scaling") if cfg is None else cfg)
    name = cfg.get("policy", DEFAULT)
    if name not in POLICIES:
        raise ValueError(
            f"lepton.scaling.policy must be one of {', '.join(sorted(POLICIES))}, "
            f"got {name!r}"
        )
    entry = POLICIES[name]
    kwargs = {
        arg: parse_duration(cfg[k], f"lepton.scaling.{k}")
        if k in _DURATIONS
        else float(cfg[k])
        for k, arg in entry.terms.items()
        if cfg.get(k) is not None
    }
    for k in entry.required:
        if cfg.get(k) is None:
            raise ValueError(
                f"lepton.scaling.policy is {name!r} but lepton.scaling.{k} is not set"
            )
    return entry.factory(**(kwargs or entry.defaults))
