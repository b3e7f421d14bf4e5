"""An online Ernest-style throughput model: time against worker count.

Ernest (Venkataraman et al., NSDI 2016) models a job's time on ``n`` machines
as ``a + b * work / n + c * log(n) + d * n`` (fixed cost, parallel work,
tree-like communication, per-machine overhead) with non-negative
coefficients fitted by least squares. Here each observation is a busy period
(work done, mean threads, seconds taken), refitted as periods end; the
policies use the ratio of the ideal time (``work / threads``) to the modelled
one as a throughput factor (1: perfectly parallel; 0.5: twice as slow).
:class:`Efficiency` measures the same loss tick by tick, per kind of worker,
for the SLO policy's sizing.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class ErnestModel:
    """Fit ``time = a + b*work/n + c*log(n) + d*n`` online.

    >>> m = ErnestModel()
    >>> for n in (1, 2, 4, 8, 16):          # 100 s of work, 2 s fixed cost
    ...     m.observe(100.0, n, 2.0 + 100.0 / n)
    >>> round(m.predict(100.0, 10), 2)
    12.0
    >>> round(m.throughput_factor(100.0, 10), 2)   # ideal 10 s vs 12 s
    0.83
    """

    def __init__(self, maxlen: int = 64, min_points: int = 4):
        self.obs: deque[tuple[float, float, float]] = deque(maxlen=maxlen)
        self.min_points = min_points
        self.coef: np.ndarray | None = None

    @staticmethod
    def _features(work: float, n: float) -> list[float]:
        n = max(n, 1e-9)
        return [1.0, work / n, math.log(n) if n > 1 else 0.0, n]

    def observe(self, work: float, threads: float, seconds: float) -> None:
        """Record a busy period and refit."""
        if work <= 0 or threads <= 0 or seconds <= 0 or not math.isfinite(seconds):
            return
        self.obs.append((float(work), float(threads), float(seconds)))
        if len(self.obs) >= self.min_points:
            self._fit()

    def _fit(self) -> None:
        from scipy.optimize import nnls

        A = np.array([self._features(w, n) for w, n, _ in self.obs])
        y = np.array([t for _, _, t in self.obs])
        scale = np.maximum(np.abs(A).max(axis=0), 1e-12)  # condition the columns
        x, _ = nnls(A / scale, y)
        self.coef = x / scale

    def predict(self, work: float, threads: float) -> float:
        """Modelled seconds for ``work`` on ``threads`` (ideal until fitted)."""
        if self.coef is None:
            return work / max(threads, 1e-9)
        return float(np.dot(self.coef, self._features(work, threads)))

    def throughput_factor(self, work: float, threads: float) -> float:
        """Ideal time / modelled time, clipped to [0.1, 1] (1 until fitted)."""
        if self.coef is None or work <= 0 or threads <= 0:
            return 1.0
        modelled = self.predict(work, threads)
        if modelled <= 0:
            return 1.0
        return min(1.0, max(0.1, (work / threads) / modelled))


class BusyPeriods:
    """Turns the loop's (or simulator's) ticks into Ernest observations:
    a busy period starts when work appears and ends when it is all done; its
    work is the work completed meanwhile, its threads the mean working threads."""

    def __init__(self, model: ErnestModel):
        self.model = model
        self._start: tuple[float, float] | None = None
        self._thread_time = 0.0
        self._last: float | None = None

    def tick(self, now: float, busy: bool, threads: float, completed: float) -> None:
        if self._last is not None and self._start is not None:
            self._thread_time += threads * (now - self._last)
        self._last = now
        if busy and self._start is None:
            self._start = (now, completed)
            self._thread_time = 0.0
        elif not busy and self._start is not None:
            t0, c0 = self._start
            dt = now - t0
            if dt > 0 and self._thread_time > 0:
                self.model.observe(completed - c0, self._thread_time / dt, dt)
            self._start = None


class Efficiency:
    """The share of their nominal threads that a kind's arrived workers turn
    into finished work, measured while every thread has a task: the gaps
    between tasks (dispatch, a loaded scheduler or machine) that a plan on
    task durations alone does not see. Work counts when a task finishes, so
    a sample is lumpy by about a task per thread: per kind, it is measured
    over the latest ``4 * need`` thread-seconds of such ticks, where
    ``need`` is ``min_thread_s`` or 20 tasks per thread, whichever is more;
    1 until ``need`` of them, and never below ``floor``.

    >>> e = Efficiency(min_thread_s=4.0)
    >>> for t in range(6):   # 2 threads busy, 1.6 s of work done per second
    ...     e.observe(float(t), {"cpu": 1.6 * t}, {"cpu": 2.0}, {"cpu": 10},
    ...               {"cpu": 0.1})
    >>> round(e.factor("cpu"), 3), e.factor("gpu")
    (0.8, 1.0)
    """

    def __init__(self, min_thread_s: float = 10.0, floor: float = 0.5):
        self.min_thread_s = float(min_thread_s)
        self.floor = float(floor)
        self._last: dict[str, tuple[float, float, float, bool]] = {}
        self._samples: dict[str, deque[tuple[float, float]]] = {}
        self._sums: dict[str, list[float]] = {}
        self._need: dict[str, float] = {}

    def observe(
        self,
        now: float,
        completed: dict[str, float],
        threads: dict[str, float],
        tasks: dict[str, float],
        task_s: dict[str, float],
    ) -> None:
        """A tick: work completed so far, arrived threads, tasks ready or
        running, and a typical task's seconds, per kind."""
        for k, done in completed.items():
            n = threads.get(k, 0.0)
            busy = n > 0 and tasks.get(k, 0.0) >= n
            prev = self._last.get(k)
            self._last[k] = (now, done, n, busy)
            if not (prev and prev[3] and busy and prev[2] == n and now > prev[0]):
                continue
            need = max(self.min_thread_s, 20.0 * n * task_s.get(k, 0.0))
            self._need[k] = need
            sample = (max(0.0, done - prev[1]), n * (now - prev[0]))
            q = self._samples.setdefault(k, deque())
            sums = self._sums.setdefault(k, [0.0, 0.0])
            q.append(sample)
            sums[0] += sample[0]
            sums[1] += sample[1]
            while q and sums[1] - q[0][1] >= 4 * need:
                d, t = q.popleft()
                sums[0] -= d
                sums[1] -= t

    def factor(self, kind: str) -> float:
        sums = self._sums.get(kind)
        if sums is None or sums[1] < self._need.get(kind, self.min_thread_s):
            return 1.0
        return min(1.0, max(self.floor, sums[0] / sums[1]))
