"""Earliest-deadline-first sizing: how many workers make every deadline.

The SLO policy's arithmetic, with no policy in it: :class:`Capacity` is the
threads a kind of work has over time, :func:`feasible` checks a list of
:class:`Due` work in EDF order against it by Graham's list-scheduling bound,
and :class:`Sizing` finds the fewest new workers (cheapest first) that make
every due feasible, or the least late when none does.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, replace

__all__ = ["Capacity", "Due", "Sizing", "feasible"]

#: when every due is late whatever is bought, a new worker must finish one
#: at least this share of its stated deadline sooner to be worth its launch
#: (scale free: the same at a trace's own time and in a time-scaled run)
LATE_SPAN_SHARE = 0.05


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
    #: seconds of the deadline held in reserve (``due`` is that much early)
    reserve: float = 0.0
    #: seconds from the work's arrival to its deadline as the user stated it
    span: float = 0.0

    @property
    def deadline(self) -> float:
        """Seconds from now to the deadline as the user stated it."""
        return self.due + self.reserve


class Capacity:
    """Threads over time (from now): ``(start, threads)`` steps."""

    def __init__(self, steps: list[tuple[float, float]], cap: float = math.inf):
        self.steps = sorted((max(0.0, a), c) for a, c in steps if c > 0)
        self.cap = cap
        # breakpoints: at each step's start, the thread-seconds delivered so
        # far and the rate (capped) from there on
        self._at, self._done, self._rate = [0.0], [0.0], [0.0]
        rate = 0.0
        for at, c in self.steps:
            last, r = self._at[-1], min(rate, cap)
            done = self._done[-1] + r * (at - last)
            rate += c
            if at == last:
                self._rate[-1] = min(rate, cap)
            else:
                self._at.append(at)
                self._done.append(done)
                self._rate.append(min(rate, cap))

    def delivered(self, t: float) -> float:
        """Thread-seconds delivered in ``[0, t]`` (threads capped at ``cap``:
        no more threads can work than there are tasks)."""
        if t <= 0:
            return 0.0
        i = bisect.bisect_left(self._at, t) - 1
        return self._done[i] + self._rate[i] * (t - self._at[i])

    def time_for(self, work: float) -> float:
        """Seconds until ``work`` thread-seconds are delivered."""
        if work <= 0:
            return 0.0
        i = bisect.bisect_left(self._done, work) - 1
        while i + 1 < len(self._at) and self._done[i + 1] < work:
            i += 1
        r = self._rate[i]
        return self._at[i] + (work - self._done[i]) / r if r > 0 else math.inf


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


class Sizing:
    """The capacity one kind of work can have: warm workers (threads, biggest
    first), starting ones (``(seconds to arrival, threads)``), and new ones
    from ``slots`` (one entry per worker a pool can still add, cheapest
    first, each delivering ``efficiency`` of its threads), for the
    outstanding ``dues``."""

    def __init__(
        self,
        warm: list[float],
        starting: list,
        slots: list,
        dues: list[Due],
        efficiency: float = 1.0,
    ):
        self.warm = sorted(warm, reverse=True)
        self.starting = starting
        self.slots = slots
        #: the share of a new worker's threads that turns into work
        self.efficiency = efficiency
        self.dues = dues
        self.tasks = sum(d.tasks for d in dues)
        self.work = sum(d.work for d in dues)

    def capacity(self, n_new: int, keep: int | None = None) -> Capacity:
        """With ``n_new`` new workers (and only ``keep`` of the warm ones)."""
        warm = self.warm if keep is None else self.warm[:keep]
        steps = [(0.0, c) for c in warm] + list(self.starting)
        e = self.efficiency
        steps += [(p.startup_s, p.threads * p.speed * e) for p in self.slots[:n_new]]
        return Capacity(steps, cap=self.tasks)

    def feasible(self, n_new: int, keep: int | None = None) -> tuple[bool, str | None]:
        return feasible(self.capacity(n_new, keep), self.dues)

    def feasible_after(self, n_now: int, delay: float) -> bool:
        """Whether every due can still be met with ``n_now`` new workers
        bought now and the rest of the slots only ``delay`` seconds later."""
        e = self.efficiency
        later = [
            (p.startup_s + delay, p.threads * p.speed * e) for p in self.slots[n_now:]
        ]
        cap = Capacity(self.capacity(n_now).steps + later, cap=self.tasks)
        return feasible(cap, self.dues)[0]

    def _fewest(self, ok, hi: int) -> int:
        """The least n in [0, hi] with ``ok(n)`` (``ok`` monotone)."""
        lo = 0
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def fewest_new(self) -> int:
        """The fewest new workers that make every due feasible."""
        return self._fewest(lambda n: self.feasible(n)[0], len(self.slots))

    def fewest_kept(self) -> int:
        """The fewest warm workers (no new ones) that keep every due feasible."""
        return self._fewest(lambda n: self.feasible(0, keep=n)[0], len(self.warm))

    def useful_warm(self) -> int:
        """The warm workers (biggest first) whose threads cover the tasks:
        what the fastest finish can use of them."""
        threads, n = 0.0, 0
        for c in self.warm:
            if threads >= self.tasks:
                break
            threads += c
            n += 1
        return n

    def fastest(self) -> int:
        """New workers until the threads cover the tasks that can run."""
        threads = sum(self.warm) + sum(c for _, c in self.starting)
        n = 0
        while n < len(self.slots) and threads < self.tasks:
            threads += self.slots[n].threads * self.slots[n].speed
            n += 1
        return n

    def least_late(
        self,
        n_fast: int,
        slack: float = 0.01,
        span_share: float = LATE_SPAN_SHARE,
    ) -> int:
        """When no capacity meets every due: the fewest new workers (at most
        ``n_fast``) that finish each due within ``slack`` (a fraction) of
        when the fastest capacity would, or within ``span_share`` of its
        stated deadline, whichever is more. A worker that arrives after the
        work it could help is done is not bought, nor one that would finish
        a late due only a sliver of its deadline sooner: its launch costs a
        startup and churn, for lateness no one can tell apart."""
        cap = self.capacity(n_fast)
        cum, crit, relaxed = 0.0, 0.0, []
        for d in self.dues:
            cum += d.work
            crit = max(crit, min(d.critical, d.work))
            t = max(cap.time_for(cum - crit) + crit, cap.time_for(cum))
            if math.isfinite(t):
                t += max(slack * t, span_share * d.span)
            relaxed.append(replace(d, due=max(d.due, t)))
        return self._fewest(lambda n: feasible(self.capacity(n), relaxed)[0], n_fast)

    def finish(self, n_new: int) -> float:
        """Seconds to finish every due with ``n_new`` new workers, the longest
        chain last."""
        return self.capacity(n_new).time_for(self.work) + max(
            d.critical for d in self.dues
        )
