"""The active ``distributed.Client``, shared by the store and the ops."""

from __future__ import annotations

from typing import Any


def current_client() -> Any:
    """The active ``distributed.Client``, or None (then dask's local scheduler).

    >>> current_client() is None  # no client started in this process
    True
    """
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None
