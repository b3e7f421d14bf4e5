"""The simulator's bookkeeping per submission batch: the ready queue's order
(first-in first-out, or earliest deadline first when batches' deadlines
differ) and each batch's unfinished work for the scaler state's ``batches``."""

from __future__ import annotations

import heapq
import math
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from lepton_dask.sim._estimates import DurationEstimates
from lepton_dask.sim.trace import Trace


class _EDFQueue:
    """Ready tasks in deadline order (the priority ``lepton_dask.deadline``
    gives a batch's tasks in Dask), first-in first-out within a deadline."""

    def __init__(self, due_of):
        self.due_of = due_of
        self.heap: list[tuple[float, int, int]] = []
        self.seq = 0

    def append(self, i: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (self.due_of(i), self.seq, i))

    def appendleft(self, i: int) -> None:  # a run lost to a preemption goes first
        self.seq += 1
        heapq.heappush(self.heap, (self.due_of(i), -self.seq, i))

    def popleft(self) -> int:
        return heapq.heappop(self.heap)[2]

    def __len__(self) -> int:
        return len(self.heap)


def ready_queue(trace: Trace, arrival: dict[int, float]):
    """First-in first-out (Dask's order) when it is also earliest deadline
    first: every batch has the same relative deadline, or none has one.
    Otherwise by each batch's due time, as tasks submitted under
    ``lepton_dask.deadline`` are prioritised."""
    rel = {float(d) for d in trace.deadline.values()}
    if len(rel) <= 1 and (not trace.deadline or len(trace.deadline) == len(arrival)):
        return deque()
    due = {b: a + trace.deadline.get(b, math.inf) for b, a in arrival.items()}
    burst = trace.burst.tolist()
    return _EDFQueue(lambda i: due[burst[i]])


class Batches:
    """Unfinished work per submission batch (a trace's burst), for the
    ``batches`` entry of the scaler state, priced exactly as the real
    scheduler's ``BatchTracker`` prices it: unfinished tasks per prefix times
    the scheduler's estimate of the prefix (:class:`DurationEstimates`), the
    longest such estimate, their sum as the chain, and the part on a guess
    (prefixes with no finished task and no prior) with its floor."""

    def __init__(self, trace: Trace, prefix: list[int], knowledge: DurationEstimates):
        self.kind = trace.kind.tolist()
        self.batch = trace.burst.tolist()
        self.duration = trace.duration.tolist()
        self.prefix = prefix
        self.know = knowledge
        self.deadline = {int(b): float(d) for b, d in trace.deadline.items()}
        self.active: dict[int, dict[str, Any]] = {}
        self.finished: dict[int, tuple[float, list[float]]] = {}

    def submit(self, i: int, now: float) -> None:
        b = self.batch[i]
        rec = self.active.get(b)
        if rec is None:
            # a batch finished earlier may get more tasks: it keeps its arrival
            arrival, done = self.finished.pop(b, (now, [0.0, 0.0]))
            rec = self.active[b] = {
                "arrival": arrival,
                "left": defaultdict(int),
                "done": done,
                "tasks": 0,
            }
        rec["left"][(self.prefix[i], self.kind[i])] += 1
        rec["tasks"] += 1

    def finish(self, i: int) -> None:
        b = self.batch[i]
        rec = self.active[b]
        slot = (self.prefix[i], self.kind[i])
        rec["left"][slot] -= 1
        if rec["left"][slot] <= 0:
            del rec["left"][slot]
        rec["done"][self.kind[i]] += self.duration[i]
        rec["tasks"] -= 1
        if rec["tasks"] == 0:
            # finished for now (more of the batch may still be submitted)
            del self.active[b]
            self.finished[b] = (rec["arrival"], rec["done"])

    def state(
        self, est: list[float], blocked: Callable[[int], bool] | None = None
    ) -> list[dict[str, Any]]:
        """The unfinished batches, ``est``: the scheduler's estimate of each
        prefix now (``scheduler_work``); ``work`` is priced with the
        observer's (:meth:`DurationEstimates.policy_estimate`)."""
        out = []
        know = self.know
        mine = [know.policy_estimate(p) for p in range(len(est))]
        for b, rec in self.active.items():
            work, unmeasured, floor = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
            prior, sched, held = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]
            err = [0.0, 0.0]
            stages = 0
            longest = chain = 0.0
            for (p, k), n in rec["left"].items():
                work[k] += n * mine[p]
                err[k] += n * know.stderr(p)
                sched[k] += n * est[p]
                if not know.policy_measured(p):
                    unmeasured[k] += n * mine[p]
                    floor[k] += n * know.ran(p)
                    if blocked is not None and know.ran(p) <= 0 and blocked(p):
                        held[k] += n * mine[p]
                        stages += 1
                elif know.prior(p):
                    prior[k] += n * mine[p]
                longest = max(longest, mine[p])
                chain += mine[p]
            out.append(
                {
                    "id": str(b),
                    "arrival": rec["arrival"],
                    "work": {"cpu": work[0], "gpu": work[1]},
                    "scheduler_work": {"cpu": sched[0], "gpu": sched[1]},
                    "done": {"cpu": rec["done"][0], "gpu": rec["done"][1]},
                    "tasks": rec["tasks"],
                    "longest": longest,
                    "critical": chain,
                    "deadline_s": self.deadline.get(b),
                    "unmeasured": {"cpu": unmeasured[0], "gpu": unmeasured[1]},
                    "unmeasured_floor": {"cpu": floor[0], "gpu": floor[1]},
                    "prior": {"cpu": prior[0], "gpu": prior[1]},
                    "blocked": {"cpu": held[0], "gpu": held[1]},
                    "blocked_stages": stages,
                    "stderr": {"cpu": err[0], "gpu": err[1]},
                }
            )
        return out
