"""Predictive scaling for load that recurs: pre-warm ahead of the next batch.

An online policy cannot launch before work arrives, so it pays a cold start
(the billed startup and the extra workers a deadline then needs) whenever
the workload comes back after its workers were released. Where the load
recurs, the next arrival can be forecast, and workers launched one startup
delay ahead of it (the scheduling buffer of EC2 predictive scaling).

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
  each change of pattern goes into the decision log (``forecast_pattern``);
- **idle-gap histogram** (the hybrid keep-alive of Azure Functions, "Serverless
  in the Wild", ATC'20), when no period is found: the gaps between arrivals;
  the 5th percentile is the head of the pre-warm window, the 99th its
  keep-alive tail. It is used once :data:`MIN_HISTOGRAM` gaps are known and
  the window is narrow enough to pay (below); otherwise the SLO policy's
  break-even keep-alive stands.

Nothing here knows a trace or its name: the same rules for every workload.

:class:`PredictivePolicy` wraps an :class:`~lepton_dask.scaling.slo.SLOPolicy`:

- it adds capacity on the forecast (pre-warm, or keeping warm workers for a
  batch due soon, through a gap forecast short), and releases on it: when
  even a keep-alive that started now would end before the pre-warm for the
  next batch, the idle paid-out workers go at once instead of paying rent
  until the SLO policy's rent-or-buy threshold (the hybrid keep-alive's two
  ends); otherwise releases stay the SLO policy's;
- it pre-warms only when that is expected to pay: the rent of ``n`` workers
  from now to the latest forecast arrival, plus the run, must cost less than
  the cold start (the billed startup and the extra workers the deadline
  needs after it);
- every pre-warm goes into the decision's reason and detail ("forecast: ~120 s
  of work at t=9120 s (in 75 s), seen in 4 of the last 4 cycles"); hits and
  misses are counted, and a forecast that keeps missing
  (:data:`MISSES_TO_STOP` of the last five) switches itself off and says so
  (decision log and a logged warning). Scoring goes on while it is off; five
  hits in a row switch it back on;
- ``forecast_only=True`` logs what it would have done beside the SLO policy's
  decision, which it returns unchanged;
- history from the ledger (:func:`history_from_recordings`,
  :meth:`PredictivePolicy.from_ledger`) lets a restarted scheduler, or a new
  cluster for the same workload, start with what earlier runs showed;
- a clock that goes back (an arrival before the last one, a ``now`` before
  the last decision's) is warned about (:class:`ClockJumpWarning`) and the
  history re-based, never silently mixed.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import ClusterView, Decision, releasable

logger = logging.getLogger("lepton_dask.scaling")

MAX_CYCLES = 14  # cycles of history a forecast reads (EC2 reads 14 days)
MAX_ERROR = 0.25  # mean relative error of the inter-arrival match
ONE_CYCLE_ERROR = 0.1  # the same, when the match covers less than two cycles
MIN_PAIRS = 8  # gap pairs a period is checked on, at least
MAX_LAG = 256  # longest period searched, in batches
MIN_HISTOGRAM = 8  # gaps before the idle-gap histogram is used
MISSES_TO_STOP = 3  # misses among the last five forecasts that switch it off
SCORED = 5  # forecasts the switch looks back on
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


def _clock(t: float) -> str:
    if t > 1e9:  # a wall clock (epoch seconds)
        return time.strftime("%H:%M:%S UTC", time.gmtime(t))
    return f"t={t:.0f} s"


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


def history_from_recordings(docs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(arrival, CPU work)`` of every recorded batch of ``docs`` (run
    recordings of :mod:`lepton_dask.cost.recording`, oldest first), on the
    recording clock (the run's start plus the batch's arrival; work: its
    tasks times their group's recorded mean duration)."""
    out = []
    for doc in docs:
        start = doc.get("started")
        if start is None:
            continue
        groups = doc.get("groups") or []
        mean = {}
        for i, g in enumerate(groups):
            d = g.get("duration") or {}
            c = d.get("count") or 0
            mean[i] = (d.get("sum", 0.0) / c if c else 0.0) if not g.get("gpu") else 0.0
        for b in doc.get("batches") or []:
            work = sum(
                n * mean.get(gi, 0.0)
                for gi, n in zip(b.get("groups", []), b.get("tasks", []), strict=False)
            )
            out.append((float(start) + float(b.get("arrival", 0.0)), work))
    return sorted(out)


class PredictivePolicy:
    """An :class:`SLOPolicy` that pre-warms ahead of forecast batches; see the
    module docstring.

    Parameters
    ----------
    base : SLOPolicy
        Decides everything but the pre-warm.
    forecast_only : bool
        Log what the forecast would do; change no decision.
    history : list of (arrival, work), optional
        Batches of earlier runs of the same workload, on the policy's clock
        (:func:`history_from_recordings`).
    runs : int, optional
        How many runs ``history`` came from (for the forecast's status).
    """

    def __init__(
        self,
        base: SLOPolicy,
        *,
        forecast_only: bool = False,
        history: list[tuple[float, float]] | None = None,
        runs: int | None = None,
    ):
        if not isinstance(base, SLOPolicy):
            raise TypeError(f"base must be an SLOPolicy, got {type(base).__name__}")
        self.base = base
        self.deadline = base.deadline
        self.forecast_only = forecast_only
        self.forecast = ArrivalForecast()
        for arrival, work in history or ():
            self.forecast.observe(arrival, work)
        self.forecast.runs = runs
        self.label = ("forecast-only " if forecast_only else "predictive ") + base.label
        self._seen: set[str] = set()
        self._pending: Forecast | None = None
        self._for: float | None = None  # the arrival the pending forecast follows
        self._last_now: float | None = None
        self.hits = 0
        self.misses = 0
        #: (arrival or None when nothing came, hit) of each scored forecast
        self.scored: deque[tuple[float | None, bool]] = deque(maxlen=4096)
        self._recent: list[bool] = []
        self.off = False
        #: the pattern the forecast rests on (changes go in the decision log)
        self.pattern = "none"
        self._patterned = -1

    @classmethod
    def from_ledger(
        cls, base: SLOPolicy, workload: str, store: Any = None, **kwargs: Any
    ) -> PredictivePolicy:
        """A policy seeded with the recorded runs of ``workload`` (``store``: a
        StoreSpec, a Ledger, a URI, or None for the configured store)."""
        from lepton_dask.cost.recording import recordings
        from lepton_dask.store import StoreSpec

        spec = getattr(store, "spec", store)
        if spec is None or isinstance(spec, str):
            spec = StoreSpec.from_config(spec)
        if not isinstance(spec, StoreSpec):
            raise TypeError(
                "store must be a StoreSpec, a Ledger, a URI or None, got "
                f"{type(store).__name__}"
            )
        docs = recordings(spec, workload)
        if not docs:
            known = sorted({d.get("workload", "?") for d in recordings(spec)})[:20]
            warnings.warn(
                f"no recorded run of workload {workload!r}: the forecast starts "
                f"without history (recorded workloads: {', '.join(known) or 'none'})",
                UserWarning,
                stacklevel=2,
            )
        return cls(
            base, history=history_from_recordings(docs), runs=len(docs), **kwargs
        )

    # -- learning and scoring -------------------------------------------------------
    def _learn(self, view: ClusterView) -> None:
        if self._last_now is not None and view.now < self._last_now - SAME_TIME:
            warnings.warn(
                f"clock jump: now is {self._last_now - view.now:.1f} s before the "
                "last decision's; the pending forecast is dropped",
                ClockJumpWarning,
                stacklevel=3,
            )
            self._pending, self._for = None, None
        self._last_now = view.now
        for b in sorted(view.batches, key=lambda b: b.arrival):
            if b.id in self._seen:
                continue
            self._seen.add(b.id)
            p = self._pending
            if p is not None and b.arrival >= (self._for or -math.inf) + SAME_TIME:
                self._score(p.earliest <= b.arrival <= p.latest, b.arrival)
                self._pending = None
            before = len(self.forecast.arrivals)
            self.forecast.observe(
                b.arrival, b.work.get("cpu", 0.0) + b.done.get("cpu", 0.0)
            )
            if len(self.forecast.arrivals) < before:  # re-based
                self._pending, self._for = None, None
        if len(self._seen) > 4096:
            self._seen = {b.id for b in view.batches}
        p = self._pending
        if p is not None and view.now > p.latest:
            self._score(False, None)  # nothing came in the window
            self._pending = None

    def _score(self, hit: bool, arrival: float | None) -> None:
        self.hits += hit
        self.misses += not hit
        self.scored.append((arrival, hit))
        self._recent = [*self._recent, hit][-SCORED:]
        if not self.off and self._recent.count(False) >= MISSES_TO_STOP:
            self.off = True
            logger.warning(
                "predictive scaling switched off: the forecast missed %d of the "
                "last %d batches (%s)",
                self._recent.count(False),
                len(self._recent),
                self.forecast.status(),
            )
        elif self.off and len(self._recent) == SCORED and all(self._recent):
            self.off = False
            logger.warning(
                "predictive scaling back on: the last %d forecasts hit", SCORED
            )

    # -- deciding -------------------------------------------------------------------
    def decide(self, view: ClusterView) -> Decision:
        self._learn(view)
        d = self.base.decide(view)
        d.detail.update(
            forecast_hits=self.hits,
            forecast_misses=self.misses,
            forecast_workers=0,
            prewarmed_workers=0,
        )
        if len(self.forecast.arrivals) != self._patterned:
            self._patterned = len(self.forecast.arrivals)
            pattern = self.forecast.pattern()
            if pattern != self.pattern:
                d.detail["forecast_pattern"] = (
                    f"{self.pattern} -> {pattern} at {_clock(view.now)}"
                )
                logger.info("forecast pattern: %s", d.detail["forecast_pattern"])
                self.pattern = pattern
        if any(b.remaining > 0 for b in view.batches):
            return d  # work outstanding: the SLO policy sizes for it
        nxt = self.forecast.next()
        if nxt is None:
            d.detail["forecast"] = (
                f"{self.forecast.status()}: break-even keep-alive (the SLO policy's)"
            )
            return d
        after = self.forecast.arrivals[-1]
        if self._for != after:  # one forecast (and one score) per next batch
            self._for = after
            self._pending = nxt
        if self.off:
            d.detail["forecast"] = (
                f"off: it missed {self._recent.count(False)} of the last "
                f"{len(self._recent)} forecasts (scored on; back on after "
                f"{SCORED} hits in a row)"
            )
            return d
        plan = self._prewarm(view, nxt)
        if plan is None:
            return self._release_early(view, nxt, d)
        pool, n, why = plan
        d.detail["forecast_workers"] = n
        if self.forecast_only:
            d.detail["forecast"] = "would " + why
            return d
        d.detail["forecast"] = why
        have = d.targets.get(pool, 0)
        if n > have:
            d.targets[pool] = n
            d.detail["prewarmed_workers"] = n - have
            d.reason = f"{d.reason}; {why}" if d.reason != "steady" else why
        return d

    def _release_early(self, view: ClusterView, nxt: Forecast, d: Decision) -> Decision:
        """The forecast drives the release too: when even a keep-alive that
        started now would end before the pre-warm for the next batch, keeping
        the idle workers only pays rent; release the paid-out ones now."""
        keep = (d.detail.get("keep_alive_s") or {}).get("cpu")
        pools = [p for p in view.pools.values() if p.kind == "cpu"]
        if keep is None or not pools:
            return d
        startup = min(p.startup_s for p in pools)
        if nxt.earliest - startup <= view.now + keep:
            return d  # the forecast batch comes within the keep-alive: keep
        targets, gone = {}, 0
        for p in pools:
            free = len(releasable(view, p.name))
            have = d.targets.get(p.name, view.count(p.name))
            targets[p.name] = max(p.min_workers, min(have, view.count(p.name) - free))
            gone += have - targets[p.name]
        if not gone:
            return d
        core = (
            f"next batch in {nxt.earliest - view.now:.0f}-"
            f"{nxt.latest - view.now:.0f} s, after the keep-alive ({keep:.0f} s) "
            "would end"
        )
        why = f"forecast: {core}: release {gone} now"
        if self.forecast_only:
            d.detail["forecast"] = f"would release {gone} now: {core}"
            return d
        d.targets.update(targets)
        d.detail["forecast"] = why
        d.reason = why
        return d

    def _prewarm(self, view: ClusterView, nxt: Forecast) -> tuple[str, int, str] | None:
        """``(pool, workers, reason)`` to have warm for the forecast batch now,
        or None when it is not time yet or it would not pay."""
        pools = [p for p in view.pools.values() if p.kind == "cpu"]
        if not pools or nxt.work <= 0:
            return None
        p = min(pools, key=lambda q: q.usd_per_hour / (q.threads * q.speed))
        launch_at = nxt.earliest - p.startup_s  # one startup ahead
        if view.now < launch_at or view.now > nxt.latest:
            return None
        deadline = self.base._typical("deadline") or self.base.deadline
        crit = self.base._typical("critical") or 0.0
        thr = p.threads * p.speed
        if deadline is None or deadline <= crit:
            return None
        n = min(p.max_workers, max(1, math.ceil(nxt.work / (thr * (deadline - crit)))))
        # worker-seconds: warm = rent from now to the latest arrival plus the
        # run (at least the paid minimum for a worker launched now); cold = the
        # workers the deadline needs after a startup, each paid its minimum
        have = sum(1 for w in view.workers if w.pool == p.name)
        run = nxt.work / (n * thr)
        wait = nxt.latest - view.now
        warm = sum(
            wait + run if i < have else max(wait + run, view.minimum_billing)
            for i in range(n)
        )
        cold_span = deadline - crit - p.startup_s
        if cold_span > 0:
            n_cold = max(1, math.ceil(nxt.work / (thr * cold_span)))
            cold = n_cold * max(
                p.startup_s + nxt.work / (n_cold * thr), view.minimum_billing
            )
            # a miss pays the rent and the cold start still: pre-warm only when
            # it pays at the forecast's hit rate so far (Laplace's rule)
            rate = (self.hits + 1) / (self.hits + self.misses + 2)
            if warm >= rate * cold:
                return None
        if nxt.source == "period":
            seen = f"seen in {nxt.agree} of the last {nxt.cycles} cycles"
        elif nxt.source == "recent":
            seen = f"the last {nxt.cycles} gaps agree"
        else:
            seen = f"5th-99th percentile of {nxt.cycles} idle gaps"
        at = 0.5 * (nxt.earliest + nxt.latest)
        why = (
            f"forecast: ~{nxt.work:.0f} s of work at {_clock(at)} (in "
            f"{max(0.0, nxt.earliest - view.now):.0f}-{nxt.latest - view.now:.0f} s), "
            f"{seen}; pre-warm {n} {p.name}"
        )
        return p.name, n, why

    def detail(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "off": self.off,
            "status": self.forecast.status(),
        }
