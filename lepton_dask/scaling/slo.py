"""One policy driven by the user's service level: deadlines per batch.

A user states what they need, in their own terms, and nothing else:

``deadline``
    Seconds within which each submission batch (a ``compute``/``submit``
    call, a burst) must be finished, counted from the batch's arrival. A batch
    may carry its own (``BatchView.deadline_s``), which wins.
``latency``
    The same promise for streams (each small batch done within ``latency``
    seconds of its arrival); it also tells the policy to provision for the
    arrivals it expects over the next startup delay.
``usd_per_hour`` / ``total_usd``
    A budget: a spend-rate cap and a total cap. With a deadline it bounds the
    capacity bought for it; alone, the policy goes as fast as the budget and
    the work's parallelism allow, never faster than the work can use.

How it decides, per kind of work (``cpu``/``gpu``), every tick:

1. **Earliest deadline first.** The outstanding batches, sorted by due time,
   must each be feasible: the capacity delivered by its due time, less the
   batch's longest remaining chain of tasks (Graham's list-scheduling bound,
   so that task granularity and dependencies cannot break the promise), must
   cover the work due by then. Warm workers count from now, starting workers
   from their arrival, new workers after the pool's startup delay.
2. **The fewest new workers** (cheapest pool first, by price per unit of
   work) that make every batch feasible; if none does, the fastest the
   pools and the work's parallelism allow, with ``infeasible`` set.
3. **Spot versus on-demand** by Uniform Progress (Wu et al., "Can't Be Late",
   NSDI'24): while every deadline batch is ahead of the straight line from
   its arrival to its deadline, new capacity may come from spot pools; when
   one falls behind, new capacity comes from on-demand pools only.
4. **Release** idle workers whose paid minimum is used up and which the
   batches do not need. When no work is outstanding, the workers that would
   serve the next batch warm are kept as a rent-or-buy choice
   (:class:`~lepton_dask.scaling.keepalive.KeepAlive`: kept idle until the
   rent paid equals what a cold start would cost more than a warm one for a
   batch like the recent ones). Until the workload has come back once after
   an idle period there is no evidence it recurs, and nothing is kept past
   its paid minimum.

The EDF arithmetic of steps 1-2 is :mod:`lepton_dask.scaling.edf`.

Bad input is refused at construction (a deadline or latency that is not a
positive finite number, a budget that is not positive, an unknown
keep-alive rule). A deadline that cannot be met is reported as
``infeasible`` in the decision (logged and exported) while the policy runs at
the fastest the work can use; it neither stalls nor grows past the work's
parallelism.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any

import dask

from lepton_dask.config import parse_duration
from lepton_dask.scaling.edf import Due, Sizing
from lepton_dask.scaling.keepalive import KeepAlive
from lepton_dask.scaling.state import (
    EPS_WORK,
    BatchView,
    ClusterView,
    Decision,
    PoolSpec,
    WorkerView,
    releasable,
)

KINDS = ("cpu", "gpu")
FORECAST_STEPS = 8
_PRIORITY_BASE = 1e10  # deadline priorities stay above Dask's default of 0


@contextlib.contextmanager
def deadline(seconds: float | str) -> Iterator[None]:
    """Tasks submitted inside must be done within ``seconds`` of submission
    (a number, or a Dask duration string such as ``"90s"`` or ``"10m"``).

    Annotates the tasks of each ``compute``/``submit``/``persist`` made inside
    with ``lepton_deadline`` (the CostMonitor gives their batch that deadline,
    which :class:`SLOPolicy` sizes for) and with a Dask ``priority`` that
    runs earlier deadlines first (earliest deadline first, the order the
    policy assumes). Annotate at submission, around the ``compute`` call.

    >>> with deadline(90):
    ...     dask.get_annotations()["lepton_deadline"]
    90.0
    >>> with deadline(0):
    ...     pass
    Traceback (most recent call last):
    ...
    ValueError: deadline must be a positive number of seconds, got 0
    """
    if isinstance(seconds, str):  # a Dask duration string: "90s", "10m"
        seconds = parse_duration(seconds, "deadline")
    if not (
        isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0
    ):
        raise ValueError(
            f"deadline must be a positive number of seconds, got {seconds!r}"
        )
    due = time.time() + float(seconds)
    with dask.annotate(lepton_deadline=float(seconds), priority=_PRIORITY_BASE - due):
        yield


#: a guessed duration is hedged up to this factor (``SLOPolicy(hedge=...)``)
HEDGE = 4.0


def arrives_in(w: WorkerView, pool: PoolSpec, now: float) -> float:
    """Seconds until a starting worker is expected: its pool's startup delay
    (the launch-to-arrival p90 the scaler has seen) after its launch. A
    worker past that is late, not arriving now: it is expected in as long
    again as it is overdue, and at least a tenth of the startup delay.

    >>> p = PoolSpec("cpu", startup_s=60)
    >>> arrives_in(WorkerView("a", "cpu", 0.0, False, arrived=False), p, 20.0)
    40.0
    >>> arrives_in(WorkerView("a", "cpu", 0.0, False, arrived=False), p, 70.0)
    10.0
    """
    left = w.billed_since + pool.startup_s - now
    if left >= 0:
        return left
    return max(-left, 0.1 * pool.startup_s)


class SLOPolicy:
    """Meet each batch's deadline (or a stream's latency) at the least cost;
    see the module docstring for how.

    Parameters
    ----------
    deadline : float or str, optional
        Seconds from a batch's arrival to its deadline (batches without their
        own ``deadline_s``); a number or a Dask duration string (``"10m"``).
    latency : float or str, optional
        The same for streams; also provisions for the expected arrivals.
    usd_per_hour, total_usd : float, optional
        Spend-rate cap and total cap (USD).
    keep_alive : {"break-even", "randomized", "none"}
        The rent-or-buy rule for idle workers (``"none"``: release every idle
        worker once its paid minimum is used up).
    seed : int
        Seeds the randomized keep-alive threshold.
    margin : float
        The fraction of each deadline held in reserve: capacity is sized to
        finish by ``(1 - margin) * deadline`` after arrival, so that task-time
        noise and dispatch delays on a real cluster do not turn a plan that
        finishes on the dot into a miss (default 10%: on real workers the
        plans sized with 5% overshot by up to 5.7% of the deadline,
        ``bench_scaling --real``).
    hedge : float
        Work sized on a guess (Dask's ``unknown-task-duration``, or twice the
        longest running time) when there is no time to measure it first is
        sized as if its tasks took up to ``hedge`` times the guess, so that
        the deadline holds for them too (default 4; ``1`` sizes on the guess
        exactly). Once a task of the prefix finishes, the measured duration
        replaces the guess and the extra workers are released as any idle
        worker is.

    >>> from lepton_dask.scaling.state import BatchView, ClusterView, PoolSpec
    >>> pool = PoolSpec("cpu", threads=2, max_workers=50, startup_s=60)
    >>> view = ClusterView(now=0.0, pools={"cpu": pool}, workers=[],
    ...     backlog={"cpu": 600.0}, tasks_ready={"cpu": 600},
    ...     batches=[BatchView("0", 0.0, {"cpu": 600.0}, tasks=600, longest=1.0,
    ...                        critical=1.0)])
    >>> SLOPolicy(deadline=120).decide(view).targets   # 600 s of work in 48 s
    {'cpu': 7}
    """

    def __init__(
        self,
        deadline: float | str | None = None,
        *,
        latency: float | str | None = None,
        usd_per_hour: float | None = None,
        total_usd: float | None = None,
        keep_alive: str = "break-even",
        seed: int = 0,
        margin: float = 0.1,
        hedge: float = HEDGE,
    ):
        if isinstance(deadline, str):  # Dask duration strings: "90s", "10m"
            deadline = parse_duration(deadline, "deadline")
        if isinstance(latency, str):
            latency = parse_duration(latency, "latency")
        for name, v in (("deadline", deadline), ("latency", latency)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(
                    f"{name} must be a positive number of seconds, got {v!r}"
                )
        for name, v in (("usd_per_hour", usd_per_hour), ("total_usd", total_usd)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive amount, got {v!r}")
        if (
            deadline is None
            and latency is None
            and usd_per_hour is None
            and total_usd is None
        ):
            raise ValueError(
                "state a service level: deadline= (seconds per batch), latency= "
                "(streams), usd_per_hour= or total_usd= (a budget)"
            )
        if deadline is not None and latency is not None:
            raise ValueError("give deadline= (jobs) or latency= (streams), not both")
        if not (isinstance(margin, (int, float)) and 0.0 <= margin < 0.5):
            raise ValueError(f"margin must be a fraction in [0, 0.5), got {margin!r}")
        if not (isinstance(hedge, (int, float)) and 1.0 <= hedge <= 100.0):
            raise ValueError(f"hedge must be a factor in [1, 100], got {hedge!r}")
        self.margin = float(margin)
        self.hedge = float(hedge)
        self.deadline = deadline if deadline is not None else latency
        self.stream = latency is not None
        self.usd_per_hour = usd_per_hour
        self.total_usd = total_usd
        self.keep_alive = keep_alive
        self._keep = KeepAlive(keep_alive, seed)
        self._seen: OrderedDict[str, dict[str, float]] = OrderedDict()
        #: per kind, (time, workers needed) of recent ticks with work
        self._needed: dict[str, deque[tuple[float, int]]] = {}
        #: per (batch, kind): when its stages before a held-back stage must end
        self._stage_ends: dict[tuple[str, str], float] = {}
        self.label = self._label()

    def _label(self) -> str:
        parts = []
        if self.deadline is not None:
            parts.append(
                f"{'latency' if self.stream else 'deadline'} {self.deadline:g}s"
            )
        if self.usd_per_hour is not None:
            parts.append(f"${self.usd_per_hour:g}/h")
        if self.total_usd is not None:
            parts.append(f"${self.total_usd:g} total")
        return "slo " + ", ".join(parts) if parts else "slo (no deadline)"

    # -- what the batches need ------------------------------------------------------
    def _deadline_of(self, b: BatchView) -> float | None:
        return b.deadline_s if b.deadline_s is not None else self.deadline

    def _remember(self, view: ClusterView) -> None:
        """Sizes of recent batches (to price a cold start for the next one)."""
        for b in view.batches:
            rec = self._seen.get(b.id)
            total = {
                k: b.work.get(k, 0.0) + b.done.get(k, 0.0)
                for k in set(b.work) | set(b.done)
            }
            if rec is None:
                rec = self._seen[b.id] = {"arrival": b.arrival}
            for k, v in total.items():
                rec[k] = max(rec.get(k, 0.0), v)
            rec["critical"] = max(rec.get("critical", 0.0), b.critical)
            d = self._deadline_of(b)
            if d is not None:
                rec["deadline"] = d
        while len(self._seen) > 32:
            self._seen.popitem(last=False)

    def _batch_dues(
        self,
        view: ClusterView,
        b: BatchView,
        kind: str,
        learn_s: float,
        at_mean: bool = False,
    ) -> list[Due]:
        """One batch's dues for ``kind``: its work (on a guess, hedged when
        there are not ``learn_s`` seconds to learn the duration first; on the
        upper bound of means of few tasks unless ``at_mean``), due by its
        deadline less the reserve; stages that cannot start yet, of unknown
        duration, due last, the stages before them earlier."""
        w = b.work.get(kind, 0.0)
        if at_mean:
            w = max(w - b.stderr.get(kind, 0.0), 0.0)
        d = self._deadline_of(b)
        reserve = d * self.margin if d is not None else 0.0
        span = d if d is not None else 0.0
        due = (b.arrival + d - reserve - view.now) if d is not None else math.inf
        guess = b.unmeasured.get(kind, 0.0)
        held = min(b.blocked.get(kind, 0.0), guess)
        crit = b.critical
        probe = False
        if guess > EPS_WORK:
            if due > learn_s:
                # time to learn the duration first: size on what is
                # certain (the longest time its tasks have run)
                floor = b.unmeasured_floor.get(kind, 0.0)
                w = max(w - guess + floor, 0.0)
                held = 0.0
                probe = floor <= 0.0
                self._basis.add("probe")
            else:
                # no time to learn: hedge the guess (tasks up to
                # ``hedge`` times as long still meet the deadline)
                w += (self.hedge - 1.0) * guess
                held *= self.hedge
                crit *= self.hedge
                self._basis.add("guess")
        elif b.prior.get(kind, 0.0) > EPS_WORK:
            self._basis.add("prior")
        else:
            self._basis.add("measured")
        tasks = max(b.tasks, 1)
        stages = b.blocked_stages + self._later.get(b.id, 0)
        if stages and w - held > EPS_WORK and due > 0:
            # stages that cannot start yet, of unknown duration (in this batch,
            # or later batches of the same job): each gets an equal share of
            # the time left, the stages before them the rest (their capacity
            # must be bought before a later stage shows how long it takes).
            # Once the stages before are sized on measured durations, that
            # point is kept, so that it does not slide as time passes.
            share = stages / (stages + 1.0)
            early = due * (1.0 - share)
            if not probe:
                key = (b.id, kind)
                at = self._stage_ends.setdefault(key, view.now + early)
                if at > view.now:
                    early = at - view.now
            self._held[b.id] = early
            return [
                Due(early, w - held, crit, tasks, b.id, probe, reserve, span),
                Due(due, held, crit, tasks, b.id, probe, reserve, span),
            ]
        return [Due(due, w, crit, tasks, b.id, probe, reserve, span)]

    def _dues(
        self,
        view: ClusterView,
        kind: str,
        pools: list[PoolSpec],
        at_mean: bool = False,
    ) -> list[Due]:
        horizon_default = self.deadline
        dues, covered = [], 0.0
        t_thread, startup = self._learning_times(view, kind, pools)
        for b in view.batches:
            w = b.work.get(kind, 0.0)
            if w <= EPS_WORK:
                continue
            covered += b.scheduler_work.get(kind, w)
            dues += self._batch_dues(view, b, kind, t_thread + startup, at_mean)
        # work the state did not attribute to a batch: due as the oldest batch
        total = view.backlog.get(kind, 0.0) + view.pending.get(kind, 0.0)
        rest = total - covered
        if rest > max(EPS_WORK, 1e-6 * total):
            start = view.busy_since if view.busy_since is not None else view.now
            reserve = (horizon_default or 0.0) * self.margin
            due = (
                start + horizon_default - reserve - view.now
                if horizon_default is not None
                else math.inf
            )
            tail = view.pending_tail if view.pending.get(kind, 0.0) > EPS_WORK else 0.0
            dues.append(
                Due(
                    due,
                    rest,
                    tail,
                    view.tasks_ready.get(kind, 1) or 1,
                    "unattributed",
                    reserve=reserve,
                    span=horizon_default or 0.0,
                )
            )
        rate = view.arrival_rate.get(kind, 0.0)
        if self.stream and rate > EPS_WORK and self.deadline is not None:
            # arrivals expected before a worker launched now could help
            startup = max((p.startup_s for p in pools), default=0.0)
            horizon = startup + self.deadline
            step = horizon / FORECAST_STEPS
            crit = self._typical("critical") or 0.0
            for j in range(1, FORECAST_STEPS + 1):
                dues.append(
                    Due(
                        j * step + self.deadline,
                        rate * step,
                        crit,
                        math.inf,
                        "forecast",
                        span=self.deadline,
                    )
                )
        dues.sort(key=lambda d: d.due)
        return dues

    @staticmethod
    def _learning_times(
        view: ClusterView, kind: str, pools: list[PoolSpec]
    ) -> tuple[float, float]:
        """(seconds until a thread of ``kind`` can start a task: 0 with a
        worker there, else the next arrival or a new worker's startup; the
        quickest startup of a new worker)."""
        startup = min((p.startup_s for p in pools), default=0.0)
        t = math.inf
        for w in view.workers:
            p = view.pools.get(w.pool)
            if p is None or p.kind != kind:
                continue
            t = min(t, 0.0 if w.arrived else arrives_in(w, p, view.now))
        return min(t, startup), startup

    def _recurring(self, view: ClusterView) -> bool:
        """Whether a batch has come after another: an idle gap, or batches
        that arrived more than a decision apart (a reduce submitted with
        its maps is one arrival)."""
        if view.idle_gaps:
            return True
        at = [r["arrival"] for r in self._seen.values()]
        return bool(at) and max(at) - min(at) > view.tick_s

    def _typical(self, key: str) -> float | None:
        vals = [r[key] for r in list(self._seen.values())[-8:] if key in r]
        return statistics.median(vals) if vals else None

    # -- capacity -------------------------------------------------------------------
    @staticmethod
    def _pools(view: ClusterView, kind: str, spot: bool) -> list[PoolSpec]:
        """Pools new capacity may come from, cheapest work first."""
        pools = [p for p in view.pools.values() if p.kind == kind]
        if not spot:
            on_demand = [p for p in pools if p.pricing != "spot"]
            pools = on_demand or pools
        return sorted(pools, key=lambda p: p.usd_per_hour / (p.threads * p.speed))

    @staticmethod
    def _existing(view: ClusterView, kind: str) -> tuple[list, list]:
        """(arrived workers, [(seconds to arrival, threads)] of starting ones)."""
        arrived, starting = [], []
        for w in view.workers:
            p = view.pools.get(w.pool)
            if p is None or p.kind != kind:
                continue
            if w.arrived:
                arrived.append((w, p.threads * p.speed))
            else:
                starting.append((arrives_in(w, p, view.now), p.threads * p.speed))
        return arrived, starting

    def _ahead(self, view: ClusterView, kind: str) -> bool:
        """Uniform Progress: every deadline batch at or ahead of the straight
        line to its deadline (all done) from its arrival plus the quickest
        startup (nothing can be done before a worker is there)."""
        startup = min(
            (p.startup_s for p in view.pools.values() if p.kind == kind), default=0.0
        )
        for b in view.batches:
            d = self._deadline_of(b)
            left = b.work.get(kind, 0.0)
            if d is None or left <= EPS_WORK:
                continue
            total = left + b.done.get(kind, 0.0)
            span = max(d - startup, 1e-9)
            line = (view.now - b.arrival - startup) / span
            if b.done.get(kind, 0.0) / total < line - 1e-9:
                return False
        return True

    def _stages_after(self, view: ClusterView) -> dict[str, int]:
        """Per batch, the later stages of the same job submitted as batches of
        their own (a reduce submitted by a ``compute`` call of its own, on
        the maps' futures): batches arrived no earlier, due at the same time
        (within 1%), whose work all waits on other tasks and has no measured
        duration."""
        ends, wholes = [], []
        for b in view.batches:
            d = self._deadline_of(b)
            if d is None:
                continue
            whole = b.blocked_stages and all(
                b.blocked.get(k, 0.0) >= w - EPS_WORK for k, w in b.work.items()
            )
            (wholes if whole else ends).append((b, b.arrival + d, d))
        out: dict[str, int] = {}
        if not wholes:  # O(batches) when nothing waits (a stream's many)
            return out
        for b, due, d in ends:
            n = sum(
                1
                for x, x_due, _ in wholes
                if x.arrival >= b.arrival and abs(x_due - due) <= 0.01 * d
            )
            if n:
                out[b.id] = n
        return out

    def decide(self, view: ClusterView) -> Decision:
        self._remember(view)
        self._basis: set[str] = set()
        #: batches behind (the capacity there and arriving, late workers
        #: counted late, cannot finish them in time: what was bought for them)
        #: and batches with stages held back (when the stages before must end)
        self._late: dict[str, str] = {}
        self._held: dict[str, float] = {}
        self._later = self._stages_after(view)
        live = {b.id for b in view.batches}
        for key in [k for k in self._stage_ends if k[0] not in live]:
            del self._stage_ends[key]
        targets: dict[str, int] = {}
        reasons: list[str] = []
        infeasible = False
        finish, cost, time_left = 0.0, 0.0, math.inf
        keep_alive: dict[str, float] = {}
        for kind in KINDS:
            if not any(p.kind == kind for p in view.pools.values()):
                continue
            out = self._decide_kind(view, kind, targets)
            reasons.append(out["reason"])
            infeasible |= out["infeasible"]
            finish = max(finish, out["finish"])
            cost += out["cost"]
            time_left = min(time_left, out["time_left"])
            if "keep_alive_s" in out:
                keep_alive[kind] = out["keep_alive_s"]
        for p in view.pools.values():
            targets[p.name] = min(
                max(targets.get(p.name, view.count(p.name)), p.min_workers),
                p.max_workers,
            )
        detail: dict[str, Any] = {"batches": len(view.batches)}
        # what the work was sized on: the least certain basis used
        for basis in ("guess", "probe", "prior", "few", "measured"):
            if basis in self._basis:
                detail["sized_on"] = basis
                if basis == "few":
                    reasons.append("sized on means of few tasks, high")
                elif basis != "measured":
                    reasons.append(f"sized on a {basis}")
                break
        if math.isfinite(time_left):
            detail["time_left_s"] = time_left
        if self._late:
            detail["behind"] = dict(self._late)
        if self._held:
            detail["held_stages"] = {b: round(t, 3) for b, t in self._held.items()}
        if keep_alive:
            detail["keep_alive_s"] = keep_alive
        return Decision(
            targets,
            "; ".join(r for r in reasons if r) or "steady",
            finish,
            cost,
            infeasible,
            detail,
        )

    def _decide_kind(self, view: ClusterView, kind: str, targets: dict) -> dict:
        """One kind of work: the deadlines (and a stream's latency, as its
        forecast dues), then the budget, then what to release or keep."""
        arrived, starting = self._existing(view, kind)
        spot_ok = self._ahead(view, kind)
        pools = self._pools(view, kind, spot_ok)
        dues = self._dues(view, kind, pools)
        out: dict[str, Any] = {
            "infeasible": False,
            "finish": 0.0,
            "cost": 0.0,
            "time_left": min((d.deadline for d in dues), default=math.inf),
        }
        if not dues:
            out["reason"] = self._idle(view, kind, targets, out)
            return out
        slots = [
            p for p in pools for _ in range(max(0, p.max_workers - view.count(p.name)))
        ]
        # the workers deliver what they have measurably delivered
        eff = view.efficiency.get(kind, 1.0)
        warm = [c * eff for _, c in arrived]
        starting = [(t, c * eff) for t, c in starting]
        dues = self._means_if_time(view, kind, pools, warm, starting, slots, dues)
        sz = Sizing(warm, starting, slots, dues, eff)
        n_new, late = self._deadlines(sz, out)
        if n_new == 0 and not arrived and not starting and slots:
            if any(d.probe for d in dues):
                n_new = 1  # a probe: one worker to learn how long the tasks take
        n_new, capped = self._budget(sz, view, n_new)
        rate_now = view.spend_rate()
        new_rate = sum(p.usd_per_hour for p in slots[:n_new])
        out["finish"] = t_done = sz.finish(n_new)
        out["cost"] = (
            rate_now * t_done + new_rate * max(t_done, view.minimum_billing)
        ) / 3600.0
        if n_new:
            self._recently_needed(
                view, kind, pools, len(arrived) + len(starting) + n_new
            )
            added = {p.name: sum(1 for s in slots[:n_new] if s is p) for p in pools}
            if out.get("behind") is not None:
                # the capacity there and arriving cannot finish it in time:
                # caught up at this tick, over every pool at once
                self._late[str(out.pop("behind"))] = ", ".join(
                    f"+{k} {p}" for p, k in added.items() if k
                )
            for name, k in added.items():
                if k:
                    targets[name] = view.count(name) + k
            reason = self._grow_reason(kind, added, dues, late, spot_ok, out)
            return {
                **out,
                "reason": reason + (" (capped by the budget)" if capped else ""),
            }
        if out["infeasible"]:
            # late whatever is bought (a long chain): the warm workers its
            # tasks can use stay, idle ones beyond them go as on time
            why = f"deadline infeasible for {kind} batch {late}: no capacity can help"
            usable = sz.useful_warm()
            keep = self._kept(view, kind, pools, usable, usable)
            rel = self._release(view, kind, targets, keep, "no capacity can help")
            return {**out, "reason": "; ".join(r for r in (why, rel) if r)}
        # enough capacity: the arrived workers the batches do not need go,
        # unless they were needed within one startup (a relaunch would cost
        # that startup: rent-or-buy on the way down, and no churn)
        keep = self._kept(view, kind, pools, sz.fewest_kept(), sz.useful_warm())
        why = "not needed by the batches"
        reason = self._release(view, kind, targets, keep, why)
        return {**out, "reason": reason or f"{len(dues)} {kind} batch(es) on time"}

    def _means_if_time(self, view, kind, pools, warm, starting, slots, dues):
        """The dues to size on: work whose durations rest on few finished
        tasks is priced at the upper bound of their mean (``dues``), unless
        the bound could still be met when the capacity beyond what the means
        need is bought only once more tasks have finished (a task's time
        from now): then at the means, and what more tasks show sizes the rest."""
        unsure = [b for b in view.batches if b.stderr.get(kind, 0.0) > EPS_WORK]
        if not unsure:
            return dues
        at_mean = self._dues(view, kind, pools, at_mean=True)
        eff = view.efficiency.get(kind, 1.0)
        n_mean, _ = self._deadlines(Sizing(warm, starting, slots, at_mean, eff), {})
        # more tasks finish within a task's time, but the next chance to buy
        # is a decision away (a gateway asks every few seconds)
        wait = max(max(b.longest for b in unsure), view.tick_s)
        if Sizing(warm, starting, slots, dues, eff).feasible_after(n_mean, wait):
            return at_mean
        self._basis.add("few")
        return dues

    def _kept(self, view, kind, pools, now_needed: int, usable: int) -> int:
        """The warm workers to keep: the most needed within one startup, so
        that a need that comes back does not relaunch them. But those beyond
        the ``usable`` ones (what the outstanding tasks can use) are idle
        ones waiting for a next batch, and when none has ever come after
        another they go, as when the kind is idle (a map's workers, once
        only its reduce is left)."""
        held = self._recently_needed(view, kind, pools, now_needed)
        usable = max(now_needed, usable)
        if held <= usable or self._recurring(view):
            return held
        return usable

    def _recently_needed(
        self, view: ClusterView, kind: str, pools: list[PoolSpec], now_needed: int
    ) -> int:
        """Note ``now_needed``; the most needed within one startup delay."""
        window = min((p.startup_s for p in pools), default=0.0)
        hist = self._needed.setdefault(kind, deque())
        hist.append((view.now, now_needed))
        while hist and hist[0][0] < view.now - window:
            hist.popleft()
        return max(n for _, n in hist)

    @staticmethod
    def _deadlines(sz: Sizing, out: dict) -> tuple[int, str | None]:
        """New workers for the deadlines: the fewest that make every batch
        feasible (EDF, Graham's bound); with no deadline (a budget alone) or
        none feasible, as fast as the work can use (``infeasible`` set)."""
        if math.isinf(sz.dues[-1].due):
            return sz.fastest(), None  # capped by the budget next
        ok, behind = sz.feasible(0)
        if ok:
            return 0, None
        out["behind"] = behind
        if sz.feasible(len(sz.slots))[0]:
            return sz.fewest_new(), None
        n_fast = sz.fastest()
        out["infeasible"] = True
        return sz.least_late(n_fast), sz.feasible(n_fast)[1]

    def _budget(self, sz: Sizing, view: ClusterView, n_new: int) -> tuple[int, bool]:
        """The most of ``n_new`` that the spend-rate and total caps allow."""
        capped = False
        while n_new > 0 and not self._affordable(sz, view, n_new):
            n_new -= 1
            capped = True
        return n_new, capped

    def _affordable(self, sz: Sizing, view: ClusterView, n_new: int) -> bool:
        add = sum(p.usd_per_hour for p in sz.slots[:n_new])
        rate = self.usd_per_hour
        if rate is not None and view.spend_rate() + add > rate + 1e-12:
            return False
        if self.total_usd is None:
            return True
        t = sz.capacity(n_new).time_for(sz.work)
        # spend_usd already bills each live worker its minimum; running on for
        # t seconds adds what exceeds it, new workers add theirs
        m = view.minimum_billing
        more = sum(
            view.pools[w.pool].usd_per_hour
            * (
                max(view.now + t - w.billed_since, m)
                - max(view.now - w.billed_since, m)
            )
            for w in view.workers
            if w.pool in view.pools
        )
        extra = sum(p.usd_per_hour * max(t, m) for p in sz.slots[:n_new])
        if view.spend_usd + (more + extra) / 3600.0 > self.total_usd:
            return n_new == 0
        return True

    @staticmethod
    def _grow_reason(kind, added, dues, late, spot_ok, out) -> str:
        names = ", ".join(f"+{k} {p}" for p, k in added.items() if k)
        if out["infeasible"]:
            return (
                f"deadline infeasible for {kind} batch {late}: fastest useful "
                f"capacity ({names})"
            )
        return (
            f"{names}: {len(dues)} {kind} batch(es) by EDF, next due in "
            f"{dues[0].deadline:.0f} s"
            + ("" if spot_ok else " (behind uniform progress: on-demand)")
        )

    # -- idle -----------------------------------------------------------------------
    def _release(self, view, kind, targets, keep: int, why: str) -> str:
        """Release releasable workers of ``kind`` beyond ``keep`` (dearest
        pools first)."""
        pools = sorted(
            (p for p in view.pools.values() if p.kind == kind),
            key=lambda p: -p.usd_per_hour / (p.threads * p.speed),
        )
        total = sum(view.count(p.name) for p in pools)
        extra = max(0, total - keep)
        out = []
        for p in pools:
            free = releasable(view, p.name)
            if any(w.holds_data for w in view.in_pool(p.name)):
                free = [w for w in free if not w.holds_data] or free[:-1]
            go = max(0, min(len(free), extra, view.count(p.name) - p.min_workers))
            targets[p.name] = view.count(p.name) - go
            extra -= go
            if go:
                out.append(f"release {go} idle paid-out {p.name} ({why})")
        return "; ".join(out)

    def _idle(self, view: ClusterView, kind: str, targets: dict, out: dict) -> str:
        """No outstanding work: keep the workers a warm next batch would use,
        for as long as the rent-or-buy rule says."""
        arrived, _ = self._existing(view, kind)
        if not arrived:
            return ""
        if self.keep_alive == "none":
            return self._release(view, kind, targets, 0, "idle; keep-alive off")
        if not self._recurring(view):
            return self._release(view, kind, targets, 0, "idle; no recurrence seen")
        pools = self._pools(view, kind, True)
        work = self._typical(kind)
        d = self._typical("deadline") or self.deadline
        crit = self._typical("critical") or 0.0
        if not work or d is None:
            return self._release(view, kind, targets, 0, "idle; nothing to size for")
        n_keep, keep_s = self._keep.threshold(
            view, pools[0], work, d, crit, len(arrived)
        )
        out["keep_alive_s"] = keep_s
        idle_since = view.idle_since if view.idle_since is not None else view.now
        # rent is paid once the workers' paid minimum is used up
        paid_until = min(w.paid_until(view.minimum_billing) for w, _ in arrived)
        rent_from = max(idle_since, min(paid_until, view.now))
        if view.now - rent_from < keep_s:
            return self._release(
                view,
                kind,
                targets,
                n_keep,
                f"keep {n_keep} warm {keep_s:.0f} s (rent < buy)",
            )
        return self._release(
            view,
            kind,
            targets,
            0,
            f"idle {view.now - rent_from:.0f} s >= keep-alive {keep_s:.0f} s",
        )
