"""Preload for ``dask scheduler`` and ``dask worker``:
``--preload lepton_dask.cost.preload``.

The scheduler gets the CostMonitor (ledger, ``/metrics``, Cost page).

A worker declares its instance type, pricing class and pool to the
CostMonitor from the environment variables ``LEPTON_INSTANCE_TYPE``,
``LEPTON_PRICING`` (default on-demand) and ``LEPTON_POOL`` (default: the
instance type), e.g. in a Kubernetes worker-group spec.
"""

from __future__ import annotations

import os


def declaration_from_env(environ=os.environ) -> dict | None:
    """The declaration the environment asks for, or None.

    >>> declaration_from_env({"LEPTON_INSTANCE_TYPE": "g5.xlarge", "LEPTON_PRICING": "spot"})
    {'instance_type': 'g5.xlarge', 'pricing': 'spot', 'pool': 'g5.xlarge'}
    >>> declaration_from_env({}) is None
    True
    """
    itype = environ.get("LEPTON_INSTANCE_TYPE")
    if not itype:
        return None
    pricing = environ.get("LEPTON_PRICING") or "on-demand"
    return {
        "instance_type": itype,
        "pricing": pricing,
        "pool": environ.get("LEPTON_POOL") or itype,
    }


def dask_setup(server) -> None:
    """Called by ``dask worker`` (before the worker registers) or ``dask
    scheduler`` (before it starts).

    On a scheduler it adds the :class:`CostMonitor` (ledger in the store that
    ``LEPTON_MONGO_URI`` / ``lepton.store.uri`` names, budgets from
    ``lepton.cost.*``), which also serves the dashboard's Cost page and the
    ``lepton_*`` metrics. On a worker it declares instance type, pricing and
    pool from the environment.
    """
    from distributed import Scheduler

    if isinstance(server, Scheduler):
        from lepton_dask.cost.monitor import CostMonitor

        if not any(isinstance(p, CostMonitor) for p in server.plugins.values()):
            server.add_plugin(CostMonitor())
        return
    from lepton_dask.cost.pricing import Declaration

    decl = declaration_from_env()
    if decl is not None:
        server.startup_information["lepton"] = Declaration(**decl)
