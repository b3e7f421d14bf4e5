"""Capacity over time and the feasibility of deadlines, for the SLO policy."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Capacity", "Due", "feasible"]


@dataclass
class Due:
    """Work that must be done by ``due`` (seconds from now), whose longest
    chain of tasks is ``critical`` seconds."""

    due: float
    work: float
    critical: float
    tasks: float
    batch: str
    #: its duration is unknown and nothing of it runs yet: a thread must be
    #: there to learn it before the batch is sized
    probe: bool = False


class Capacity:
    """Threads over time (from now): ``(start, threads)`` steps."""

    def __init__(self, steps: list[tuple[float, float]], cap: float = math.inf):
        self.steps = sorted((max(0.0, a), c) for a, c in steps if c > 0)
        self.cap = cap

    def delivered(self, t: float) -> float:
        """Thread-seconds delivered in ``[0, t]`` (threads capped at ``cap``:
        no more threads can work than there are tasks)."""
        if t <= 0:
            return 0.0
        total, rate, last = 0.0, 0.0, 0.0
        for at, c in self.steps:
            if at >= t:
                break
            total += min(rate, self.cap) * (at - last)
            rate, last = rate + c, at
        return total + min(rate, self.cap) * (t - last)

    def time_for(self, work: float) -> float:
        """Seconds until ``work`` thread-seconds are delivered."""
        if work <= 0:
            return 0.0
        done, rate, last = 0.0, 0.0, 0.0
        for at, c in self.steps:
            r = min(rate, self.cap)
            if r > 0 and done + r * (at - last) >= work:
                return last + (work - done) / r
            done += r * (at - last)
            rate, last = rate + c, at
        r = min(rate, self.cap)
        return last + (work - done) / r if r > 0 else math.inf


def feasible(cap: Capacity, dues: list[Due]) -> tuple[bool, str | None]:
    """Every prefix of the EDF order finishes by its due time, by Graham's
    list-scheduling bound ``T <= (W - L) / m + L`` (``W`` the work, ``L`` the
    longest chain of tasks, ``m`` the threads): the work off the chain must be
    delivered by the due time less the chain."""
    cum, crit = 0.0, 0.0
    for d in dues:
        cum += d.work
        crit = max(crit, min(d.critical, d.work))
        if cap.delivered(d.due - crit) < cum - crit - 1e-9 or (
            cap.delivered(d.due) < cum - 1e-9  # the chain itself needs a thread
        ):
            return False, d.batch
    return True, None
