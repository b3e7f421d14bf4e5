"""An online Ernest-style throughput model: time against worker count.

Ernest (Venkataraman et al., NSDI 2016) models a job's time on ``n`` machines
as ``a + b * work / n + c * log(n) + d * n`` (fixed cost, parallel work,
tree-like communication, per-machine overhead) with non-negative
coefficients fitted by least squares. Here each observation is a busy period
(work done, mean threads, seconds taken), refitted as periods end; the
policies use the ratio of the ideal time (``work / threads``) to the modelled
one as a throughput factor (1: perfectly parallel; 0.5: twice as slow).
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
