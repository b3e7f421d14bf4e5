"""Billing math: pure functions over worker lifetimes (property-tested).

Model: per-second billing with a minimum billing period. A worker is billed
from its launch request when the cluster manager reports one, else from its
arrival at the scheduler, to its departure (or death). While it runs, spend
accrues second by second; when it stops before the minimum, the rest of the
minimum is charged at that moment. So spend is never negative, monotonic in
time, and additive over workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Lifetime:
    """One worker's billed life.

    Times are seconds on the scheduler's clock (never the worker's: a skewed
    worker clock cannot change its bill).
    """

    worker: str
    pool: str
    instance_type: str
    pricing: str
    usd_per_hour: float
    nthreads: int
    start: float
    end: float | None = None

    def billed_seconds(self, now: float, minimum: float) -> float:
        """Seconds billed so far (see :func:`billed_seconds`)."""
        return billed_seconds(self.start, self.end, now, minimum)

    def spend(self, now: float, minimum: float) -> float:
        """USD billed so far."""
        return self.billed_seconds(now, minimum) * self.usd_per_hour / 3600.0


def billed_seconds(
    start: float, end: float | None, now: float, minimum: float
) -> float:
    """Seconds billed at time ``now`` for a life from ``start`` to ``end``.

    A running life (``end is None``) accrues ``now - start``; a finished one is
    billed ``max(end - start, minimum)``. Times before ``start`` bill nothing.

    >>> billed_seconds(0, None, 20, 60), billed_seconds(0, 20, 100, 60)
    (20, 60)
    >>> billed_seconds(0, 90, 100, 60)
    90
    """
    if end is None:
        return max(0.0, now - start) if now > start else 0
    if now < end:  # asked about a moment before it ended
        return max(0.0, now - start) if now > start else 0
    return max(end - start, minimum) if end >= start else minimum


def total_spend(lives: Iterable[Lifetime], now: float, minimum: float) -> float:
    """USD billed at ``now`` over several lives.

    >>> ls = [Lifetime("a", "p", "t", "on-demand", 3.6, 1, 0.0, 10.0),
    ...       Lifetime("b", "p", "t", "on-demand", 3.6, 1, 0.0)]
    >>> round(total_spend(ls, 100.0, 60.0), 6)
    0.16
    """
    return sum(life.spend(now, minimum) for life in lives)


def spend_rate_usd_per_hour(lives: Iterable[Lifetime]) -> float:
    """Current spend rate: the sum of the prices of running workers.

    >>> spend_rate_usd_per_hour([Lifetime("a", "p", "t", "spot", 0.5, 1, 0.0)])
    0.5
    """
    return sum(life.usd_per_hour for life in lives if life.end is None)


def paid_thread_seconds(lives: Iterable[Lifetime], now: float, minimum: float) -> float:
    """Thread-seconds paid for: billed seconds times threads, summed."""
    return sum(life.billed_seconds(now, minimum) * life.nthreads for life in lives)
