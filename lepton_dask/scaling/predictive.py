"""Predictive scaling for load that recurs: pre-warm ahead of the next batch.

An online policy cannot launch before work arrives, so it pays a cold start
(the billed startup and the extra workers a deadline then needs) whenever
the workload comes back after its workers were released. Where the load
recurs, the next arrival can be forecast
(:class:`~lepton_dask.scaling.forecast.ArrivalForecast`), and workers launched
one startup delay ahead of it (the scheduling buffer of EC2 predictive
scaling).

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
  needs after it); where the forecast has no pattern, or its window is too
  wide to pay, the SLO policy's break-even keep-alive stands;
- every pre-warm goes into the decision's reason and detail ("forecast: ~120 s
  of work at t=9120 s (in 75 s), seen in 4 of the last 4 cycles"), and each
  change of the forecast's pattern into the decision log
  (``forecast_pattern``); hits and misses are counted, and a forecast that
  keeps missing (:data:`MISSES_TO_STOP` of the last five) switches itself off
  and says so (decision log and a logged warning). Scoring goes on while it
  is off; five hits in a row switch it back on;
- ``forecast_only=True`` logs what it would have done beside the SLO policy's
  decision, which it returns unchanged;
- history from the ledger
  (:func:`~lepton_dask.cost.recording.history_from_recordings`,
  :meth:`PredictivePolicy.from_ledger`) lets a restarted scheduler, or a new
  cluster for the same workload, start with what earlier runs showed;
- a clock that goes back (a ``now`` before the last decision's, or an arrival
  before the last one) is warned about
  (:class:`~lepton_dask.scaling.forecast.ClockJumpWarning`) and the pending
  forecast dropped or the history re-based, never silently mixed.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import deque
from typing import Any

from lepton_dask.scaling.forecast import (
    SAME_TIME,
    ArrivalForecast,
    ClockJumpWarning,
    Forecast,
)
from lepton_dask.scaling.slo import SLOPolicy
from lepton_dask.scaling.state import ClusterView, Decision, releasable

logger = logging.getLogger("lepton_dask.scaling")

MISSES_TO_STOP = 3  # misses among the last five forecasts that switch it off
SCORED = 5  # forecasts the switch looks back on


def _clock(t: float) -> str:
    if t > 1e9:  # a wall clock (epoch seconds)
        return time.strftime("%H:%M:%S UTC", time.gmtime(t))
    return f"t={t:.0f} s"


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
        (:func:`~lepton_dask.cost.recording.history_from_recordings`).
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
        from lepton_dask.cost.recording import history_from_recordings, recordings
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
