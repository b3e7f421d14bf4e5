"""The simulator's bookkeeping per submission batch: the ready queue's order
(first-in first-out, or earliest deadline first when batches' deadlines
differ), each task's bottom level, and each batch's unfinished work for the
scaler state's ``batches``."""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import Any

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


def bottom_levels(
    duration: list[float], dependents: list[list[int]], deps: list[list[int]] | None
) -> list[float]:
    """Each task's duration plus the longest chain of its dependents: the time
    from its start to the end of everything that waits on it."""
    if deps is None:
        return list(duration)
    n = len(duration)
    indeg = [len(dependents[i]) for i in range(n)]
    level = list(duration)
    stack = [i for i in range(n) if indeg[i] == 0]
    while stack:  # reverse topological order: sinks first
        i = stack.pop()
        for j in deps[i]:
            level[j] = max(level[j], duration[j] + level[i])
            indeg[j] -= 1
            if indeg[j] == 0:
                stack.append(j)
    return level


class Batches:
    """Unfinished work per submission batch (a trace's burst), for the
    ``batches`` entry of the scaler state: work left per kind (running tasks
    count what is left of them), work done, tasks left, and the longest task
    and chain of tasks still to finish (lazy max-heaps)."""

    def __init__(self, trace: Trace, level: list[float]):
        self.trace = trace
        self.kind = trace.kind.tolist()
        self.batch = trace.burst.tolist()
        self.duration = trace.duration.tolist()
        self.level = level
        self.deadline = {int(b): float(d) for b, d in trace.deadline.items()}
        self.active: dict[int, dict[str, Any]] = {}
        self.finished: dict[int, tuple[float, list[float]]] = {}
        self.done = [False] * len(level)
        self.started: dict[int, float] = {}

    def _get(self, b: int, now: float) -> dict[str, Any]:
        rec = self.active.get(b)
        if rec is None:
            # a batch finished earlier may get more tasks: it keeps its arrival
            arrival, done = self.finished.pop(b, (now, [0.0, 0.0]))
            rec = self.active[b] = {
                "arrival": arrival,
                "unstarted": [0.0, 0.0],
                "end_sum": [0.0, 0.0],
                "running": [0, 0],
                "done": done,
                "tasks": 0,
                "levels": [],
                "longest": [],
            }
        return rec

    def submit(self, i: int, now: float) -> None:
        rec = self._get(self.batch[i], now)
        rec["unstarted"][self.kind[i]] += self.duration[i]
        rec["tasks"] += 1
        heapq.heappush(rec["levels"], (-self.level[i], i))
        heapq.heappush(rec["longest"], (-self.duration[i], i))

    def start(self, i: int, now: float, end_t: float) -> None:
        rec = self.active[self.batch[i]]
        k = self.kind[i]
        rec["unstarted"][k] -= self.duration[i]
        rec["end_sum"][k] += end_t
        rec["running"][k] += 1
        self.started[i] = now

    def lose(self, i: int, end_t: float) -> None:
        """A run of ``i`` lost to a preemption: its work is unstarted again."""
        rec = self.active[self.batch[i]]
        k = self.kind[i]
        rec["end_sum"][k] -= end_t
        rec["running"][k] -= 1
        rec["unstarted"][k] += self.duration[i]
        self.started.pop(i, None)

    def finish(self, i: int, end_t: float) -> None:
        b = self.batch[i]
        rec = self.active[b]
        k = self.kind[i]
        rec["end_sum"][k] -= end_t
        rec["running"][k] -= 1
        rec["done"][k] += self.duration[i]
        rec["tasks"] -= 1
        self.done[i] = True
        self.started.pop(i, None)
        if rec["tasks"] == 0:
            # finished for now (more of the batch may still be submitted)
            del self.active[b]
            self.finished[b] = (rec["arrival"], rec["done"])

    def _top(self, heap: list, now: float) -> float:
        while heap and self.done[heap[0][1]]:
            heapq.heappop(heap)
        if not heap:
            return 0.0
        value, i = -heap[0][0], heap[0][1]
        if i in self.started:  # running: part of it is done
            value -= now - self.started[i]
        return max(value, 0.0)

    def state(self, now: float) -> list[dict[str, Any]]:
        out = []
        for b, rec in self.active.items():
            work = [
                max(0.0, rec["unstarted"][k])
                + max(0.0, rec["end_sum"][k] - rec["running"][k] * now)
                for k in (0, 1)
            ]
            longest = self._top(rec["longest"], now)
            out.append(
                {
                    "id": str(b),
                    "arrival": rec["arrival"],
                    "work": {"cpu": work[0], "gpu": work[1]},
                    "done": {"cpu": rec["done"][0], "gpu": rec["done"][1]},
                    "tasks": rec["tasks"],
                    "longest": longest,
                    "critical": max(longest, self._top(rec["levels"], now)),
                    "deadline_s": self.deadline.get(b),
                }
            )
        return out
