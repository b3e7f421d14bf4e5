"""Ending child processes: SIGTERM, then SIGKILL for what outlives a grace."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

__all__ = ["end_processes"]


def end_processes(procs: Iterable[Any], timeout: float = 5.0) -> None:
    """Terminate every ``psutil.Process`` of ``procs``, wait up to
    ``timeout`` seconds for all of them together, then kill the ones left.
    A process already gone is skipped."""
    import psutil

    procs = list(procs)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
