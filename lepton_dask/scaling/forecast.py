"""The arrival forecast: when the next batch of a recurring load should come,
and how much work it brings, learnt from the arrivals seen so far.

:class:`ArrivalForecast` learns, per workload, the batches' arrival times
and sizes (CPU thread-seconds), and forecasts the next batch in two ways:

- **seasonal**: the period of the inter-arrival sequence, in batches (a
  nightly job, a team's daily sessions, an analyst's sawtooth repeated): the
  shortest lag ``L`` for which each gap best matches the one ``L`` batches
  before, over at least two cycles (or, within :data:`ONE_CYCLE_ERROR`, over
  :data:`MIN_PAIRS` gaps of the second cycle: a load that repeats exactly is
  known before its second cycle ends). The next gap is read from the same
  position of the past cycles (up to :data:`MAX_CYCLES`), its window their
  spread widened by the match error; the next batch's work likewise.
- **recent**: the last two gaps agree (within :data:`RECENT_ERROR`): a regular
  pattern from its third arrival on, and a new one within three arrivals of
  a change of period (it wins over a longer history that disagrees with it);
- **idle-gap histogram** (the hybrid keep-alive of Azure Functions, "Serverless
  in the Wild", ATC'20), when no period is found: the gaps between arrivals;
  the 5th percentile is the head of the pre-warm window, the 99th its
  keep-alive tail. It is used once :data:`MIN_HISTOGRAM` gaps are known.

Nothing here knows a trace or its name: the same rules for every workload.
A clock that goes back (an arrival before the last one) is warned about
(:class:`ClockJumpWarning`) and the history re-based, never silently mixed.
:class:`~lepton_dask.scaling.predictive.PredictivePolicy` acts on the forecast.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass

import numpy as np

MAX_CYCLES = 14  # cycles of history a forecast reads (EC2 reads 14 days)
MAX_ERROR = 0.25  # mean relative error of the inter-arrival match
ONE_CYCLE_ERROR = 0.1  # the same, when the match covers less than two cycles
MIN_PAIRS = 8  # gap pairs a period is checked on, at least
MAX_LAG = 256  # longest period searched, in batches
MIN_HISTOGRAM = 8  # gaps before the idle-gap histogram is used
SAME_TIME = 1e-3  # arrivals this close (seconds) are one arrival
RECENT_GAPS = 2  # gaps that agree make a pattern of the last three arrivals
RECENT_ERROR = 0.1  # how closely they must agree (a regular pattern)


class ClockJumpWarning(UserWarning):
    """The clock went back: the forecast's history is re-based."""


@dataclass
class Forecast:
    """The next batch: it should arrive in ``[earliest, latest]`` (absolute
    times) with about ``work`` CPU thread-seconds. ``source`` is ``"period"``
    (a cycle of ``period`` batches; ``agree`` of the last ``cycles`` agree)
    or ``"histogram"`` (``cycles`` gaps seen)."""

    earliest: float
    latest: float
    work: float
    period: int
    cycles: int
    agree: int
    source: str = "period"


class ArrivalForecast:
    """Arrival times and sizes of batches, their period in batches, and the
    histogram of the gaps between them.

    >>> f = ArrivalForecast()
    >>> t = 0.0
    >>> for k in range(12):              # gaps 100, 300, 100, 300, ...
    ...     f.observe(t, 50.0 if k % 2 else 20.0)
    ...     t += 100.0 if k % 2 == 0 else 300.0
    >>> nxt = f.next()
    >>> last = f.arrivals[-1]
    >>> nxt.period, round(nxt.earliest - last), round(nxt.latest - last), round(nxt.work)
    (2, 299, 301, 20)
    >>> ArrivalForecast().status()
    'not enough history: 0 batches (a period needs two cycles)'
    """

    def __init__(self, max_history: int = 2048):
        self.arrivals: list[float] = []
        self.works: list[float] = []
        self.max_history = max_history
        self.runs: int | None = None  # runs the history came from, when known
        self._cache: tuple[int, float] | None = None
        self._period: tuple[int, float] | None = None

    def observe(self, arrival: float, work: float) -> None:
        """A batch of ``work`` CPU thread-seconds arrived at ``arrival``."""
        arrival, work = float(arrival), max(0.0, float(work))
        if self.arrivals:
            last = self.arrivals[-1]
            if abs(arrival - last) < SAME_TIME:  # concurrent batches: one arrival
                self.works[-1] += work
                self._cache = None
                return
            if arrival < last:
                self._rebase(last - arrival, f"a batch arrived at {arrival:.3f}")
        self.arrivals.append(arrival)
        self.works.append(work)
        if len(self.arrivals) > self.max_history:
            del self.arrivals[0], self.works[0]
        self._cache = None

    def _rebase(self, back: float, what: str) -> None:
        """The clock went back by ``back`` s: shift the history so that the
        gap over the jump is the median gap (its true length is unknown)."""
        gaps = self._gaps()
        typical = statistics.median(gaps) if gaps else 0.0
        shift = back + typical
        self.arrivals = [a - shift for a in self.arrivals]
        self._cache = None
        warnings.warn(
            f"clock jump: {what}, {back:.1f} s before the last arrival; the "
            f"forecast's history is re-based (the gap over the jump is taken "
            f"as the median gap, {typical:.0f} s)",
            ClockJumpWarning,
            stacklevel=3,
        )

    def _gaps(self) -> list[float]:
        a = self.arrivals
        return [a[i] - a[i - 1] for i in range(1, len(a))]

    def period(self) -> tuple[int, float] | None:
        """``(lag, error)`` of the shortest well-matching period in batches,
        or None. Cached until the next arrival."""
        key = (len(self.arrivals), self.arrivals[-1] if self.arrivals else 0.0)
        if self._cache == key:
            return self._period
        self._cache, self._period = key, None
        g = np.asarray(self._gaps())
        n = len(g)
        found = []
        for lag in range(1, min(MAX_LAG, n - MIN_PAIRS) + 1):
            pairs = min(n - lag, max(4 * lag, MIN_PAIRS))
            x, y = g[n - pairs :], g[n - pairs - lag : n - lag]
            err = float(np.mean(np.abs(x - y) / np.maximum(np.maximum(x, y), 1e-9)))
            # two cycles may match loosely; a part of the second only closely
            if err <= (MAX_ERROR if pairs >= lag else ONE_CYCLE_ERROR):
                found.append((lag, err))
        if found:
            # multiples of the period match about as well: take the shortest
            # lag within noise of the best one
            best = min(e for _, e in found)
            self._period = next((lag, e) for lag, e in found if e <= 1.2 * best + 0.01)
        return self._period

    def histogram(self) -> tuple[float, float, float] | None:
        """``(p5, p50, p99)`` of the recent gaps between arrivals, or None
        with fewer than :data:`MIN_HISTOGRAM` of them."""
        gaps = self._gaps()[-256:]
        if len(gaps) < MIN_HISTOGRAM:
            return None
        p5, p50, p99 = np.percentile(gaps, [5, 50, 99])
        return float(p5), float(p50), float(p99)

    def status(self) -> str:
        """What the forecast knows, in words."""
        n = len(self.arrivals)
        found = self.period()
        if found is not None:
            lag, err = found
            return f"period of {lag} batches (match error {err:.0%}) in {n} batches"
        runs = f" from {self.runs} run(s)" if self.runs is not None else ""
        if n - 1 < 2 * MIN_PAIRS or (self.runs is not None and self.runs < 2):
            return f"not enough history: {n} batches{runs} (a period needs two cycles)"
        return f"no recurring pattern in {n} batches{runs}"

    def pattern(self) -> str:
        """The pattern the next forecast rests on, in words."""
        nxt = self.next()
        if nxt is None:
            return "none"
        if nxt.source == "recent":
            gap = 0.5 * (nxt.earliest + nxt.latest) - self.arrivals[-1]
            return f"every ~{gap:.0f} s (the last {RECENT_GAPS + 1} arrivals)"
        if nxt.source == "period":
            return f"a period of {nxt.period} batches"
        return "the idle-gap histogram"

    def recent(self) -> tuple[float, float] | None:
        """``(gap, spread)`` when the last :data:`RECENT_GAPS` gaps agree
        (within :data:`RECENT_ERROR` of each other): a regular pattern seen
        in its first arrivals, or a new one after a change."""
        gaps = self._gaps()[-RECENT_GAPS:]
        if len(gaps) < RECENT_GAPS or max(gaps) <= 0:
            return None
        spread = max(gaps) - min(gaps)
        if spread / max(gaps) > RECENT_ERROR:
            return None
        return statistics.fmean(gaps), spread

    def next(self) -> Forecast | None:
        """The next batch, or None when there is no pattern (yet). A regular
        pattern of the last few arrivals wins over a longer history that
        disagrees with it (the load changed)."""
        if not self.arrivals:
            return None
        last = self.arrivals[-1]
        found = self.period()
        fresh = self.recent()
        if fresh is not None:
            nxt = self._from_period(last, found) if found is not None else None
            mid = None if nxt is None else 0.5 * (nxt.earliest + nxt.latest) - last
            if mid is None or abs(mid - fresh[0]) > MAX_ERROR * fresh[0]:
                return self._from_recent(last, *fresh)
            works = self.works[-RECENT_GAPS:]
            w = statistics.fmean(works)
            if (max(works) - min(works)) <= RECENT_ERROR * max(works) and abs(
                nxt.work - w
            ) > RECENT_ERROR * max(w, nxt.work):
                nxt.work = w  # same timing, a new size: the recent one
            return nxt
        if found is None:
            return self._from_histogram(last)
        return self._from_period(last, found)

    def _from_recent(self, last: float, gap: float, spread: float) -> Forecast:
        tol = RECENT_ERROR * gap + spread + 1.0
        return Forecast(
            last + max(0.0, gap - tol),
            last + gap + tol,
            statistics.fmean(self.works[-RECENT_GAPS:]),
            1,
            RECENT_GAPS,
            RECENT_GAPS,
            "recent",
        )

    def _from_period(self, last: float, found: tuple[int, float]) -> Forecast | None:
        lag, err = found
        gaps = self._gaps()
        n = len(gaps)
        # the gaps and works at the same position of every earlier cycle
        idx = list(range(n - lag, -1, -lag))[:MAX_CYCLES]
        same = [gaps[i] for i in idx]
        works = [self.works[i + 1] for i in idx]
        if not same:
            return None
        mean = statistics.fmean(same)
        tol = err * mean + 1.0
        agree = sum(abs(s - mean) <= tol + 0.5 * (max(same) - min(same)) for s in same)
        return Forecast(
            last + max(0.0, min(same) - tol),
            last + max(same) + tol,
            statistics.fmean(works),
            lag,
            len(same),
            agree,
        )

    def _from_histogram(self, last: float) -> Forecast | None:
        h = self.histogram()
        if h is None:
            return None
        p5, _, p99 = h
        works = self.works[-MIN_HISTOGRAM:]
        n = len(self.arrivals) - 1
        return Forecast(
            last + p5,
            last + p99,
            statistics.median(works),
            0,
            min(n, 256),
            min(n, 256),
            "histogram",
        )
