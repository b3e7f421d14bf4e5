"""Worker preload: ``dask worker --preload lepton_dask.cost.preload SCHEDULER``.

Declares the worker's instance type, pricing class and pool to the
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


def dask_setup(worker) -> None:
    """Called by ``dask worker`` before the worker registers."""
    from lepton_dask.cost.monitor import Declaration

    decl = declaration_from_env()
    if decl is not None:
        worker.startup_information["lepton"] = Declaration(**decl)
