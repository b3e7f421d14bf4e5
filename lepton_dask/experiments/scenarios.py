"""Scenarios: a trace and the pools it runs on (the first room of the
experiments): the built-in traces on cloud-like pools, a recorded run's
trace, and the service level a user of a trace would state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lepton_dask.experiments.recorded import trace_from_run
from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import PoolSpec
from lepton_dask.sim.trace import KIND_CODES, TRACES, Trace

__all__ = [
    "Scenario",
    "cloud_pools",
    "replay_pools",
    "scenario_for_trace",
    "scenario_from_run",
    "scenarios",
    "slo_policy",
]


@dataclass
class Scenario:
    """A trace and the pools it runs on."""

    name: str
    trace: Trace
    pools: list[PoolSpec]
    minimum_billing: float = 60.0
    adaptive_pools: list[str] = field(default_factory=list)
    #: the client holds every result until the end (as a script holding its
    #: futures does; the real runs of ``experiments.real`` do)
    hold_results: bool = False


def slo_policy(trace: Trace) -> Callable[[], SLOPolicy] | None:
    """The SLO policy a user of ``trace`` would state: its latency (streams)
    or its tightest deadline (batches carry their own deadlines too); None
    for a trace that states neither. The same rule for every trace."""
    if trace.latency is not None:
        return lambda: SLOPolicy(latency=trace.latency)
    if trace.deadline:
        d = min(trace.deadline.values())
        return lambda: SLOPolicy(deadline=d)
    return None


def cloud_pools(startup: float = 60.0, max_workers: int = 50) -> dict[str, PoolSpec]:
    """Cloud-like pools priced from the catalog: ``cpu`` (m6i.large on-demand),
    ``cpu-spot`` (m6i.large spot, 0.5 preemptions an hour) and ``gpu``
    (g5.xlarge, half as long again to start)."""

    def cpu(name: str, pricing: str, preempt: float) -> PoolSpec:
        return PoolSpec.from_catalog(
            name,
            "m6i.large",
            pricing,
            threads=2,
            startup_s=startup,
            max_workers=max_workers,
            preemptions_per_hour=preempt,
        )

    gpu = PoolSpec.from_catalog(
        "gpu",
        "g5.xlarge",
        "on-demand",
        threads=1,
        kind="gpu",
        startup_s=1.5 * startup,
        max_workers=8,
    )
    return {
        "cpu": cpu("cpu", "on-demand", 0.0),
        "cpu-spot": cpu("cpu-spot", "spot", 0.5),
        "gpu": gpu,
    }


def scenarios(
    startup: float = 60.0, minimum_billing: float = 60.0, max_workers: int = 50
) -> dict[str, Scenario]:
    """The four traces on cloud-like pools: 60 s CPU startup (90 s GPU), a
    60 s minimum billing period, AWS prices from the catalog."""
    p = cloud_pools(startup, max_workers)
    out = {}
    for name, make in TRACES.items():
        trace = make()
        pools = list(p.values()) if name == "cpu-gpu-cpu" else [p["cpu"]]
        out[name] = Scenario(name, trace, pools, minimum_billing)
    return out


def replay_pools(trace: Trace, startup: float = 60.0, max_workers: int = 50):
    """The harness's cloud-like pools for a replayed trace: on-demand
    m6i.large, plus spot m6i.large and g5.xlarge when it has GPU work."""
    p = cloud_pools(startup, max_workers)
    if not (trace.kind == KIND_CODES["gpu"]).any():
        return [p["cpu"]]
    return [p["cpu"], p["cpu-spot"], p["gpu"]]


def scenario_for_trace(trace: Trace, minimum_billing: float = 60.0) -> Scenario:
    """A :class:`Scenario` for a trace of your own (a recorded one, say), on
    :func:`replay_pools`."""
    return Scenario(trace.name, trace, replay_pools(trace), minimum_billing)


def scenario_from_run(run_id: str, store: Any = None) -> Scenario:
    """Recorded run ``run_id`` as a :class:`Scenario` on the cloud-like pools,
    ready for :func:`~lepton_dask.experiments.sweep.run_sweep`
    (:func:`~lepton_dask.experiments.recorded.trace_from_run` rebuilds its
    trace from the ledger)."""
    return scenario_for_trace(trace_from_run(run_id, store))
