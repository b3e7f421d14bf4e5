"""Run recordings: the shape and timing of each run's work, kept in the ledger.

A :class:`RunRecorder` is fed by the CostMonitor (new tasks through its
:class:`~lepton_dask.cost.observer.BatchTracker`, finished tasks through
``transition``) and writes one document per run to ``lepton.cost_runs`` in the
feature store's database, next to the spend ledger. What it keeps is
graph-aware and bounded, and holds no data values:

* **groups**: one per kind of task in the graph: its prefix, whether it needs
  a GPU, the groups it depends on and how many dependency edges each, tasks
  added and done, bytes produced, tasks per pool, and a duration
  distribution (count, sum, min, max and a log-histogram of quarter-octave
  bins, with quantiles read from it). Pairs are kept as parallel arrays
  (``deps``/``edges``, ``pools``/``pool_tasks``, ``bins``/``counts``):
  FerretDB stores no nested arrays. Dask's own task groups carry tokens
  that change between runs; a recorded group is identified by its prefix,
  and the recorded groups it depends on, so the same job recorded
  twice has the same groups, and a stream of ``submit`` calls is one group.
* **batches**: one per ``compute``/``submit`` call: arrival (seconds after the
  run's first batch), tasks per group and the ``lepton_deadline`` annotation.
  Past :attr:`RunRecorder.max_batches` neighbours are merged in pairs.
* **workload**: the key runs of the same job share: the ``lepton_workload``
  annotation (:func:`workload`), else ``lepton.workload``, else a hash of the
  sorted task prefixes.

A run whose scheduler closes with tasks not done is recorded as ``partial``.
The size depends on the number of groups and batches, not on the number of
tasks (see the README for the figure per million tasks).

Read back (:func:`recordings`), they give the scheduler its duration priors
(:mod:`lepton_dask.cost.priors`) and the predictive policy its arrival history
(:func:`history_from_recordings`).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from typing import Any

import dask

RUNS = "lepton.cost_runs"
FORMAT = 1
BINS_PER_OCTAVE = 4
_LOWEST_BIN = -120  # 2**-30 s: shorter durations share this bin


def workload(name: str) -> contextlib.AbstractContextManager[None]:
    """Tasks submitted inside belong to workload ``name``: their runs share
    a key in the recordings (``lepton-dask plan --workload``, replay).

    Annotates the tasks of each ``compute``/``submit``/``persist`` made
    inside with ``lepton_workload`` (annotations reach the scheduler's
    CostMonitor with the graph).

    >>> with workload("nightly-etl"):
    ...     dask.get_annotations()["lepton_workload"]
    'nightly-etl'
    >>> with workload(""):
    ...     pass
    Traceback (most recent call last):
    ...
    ValueError: a workload name must be a non-empty string, got ''
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a workload name must be a non-empty string, got {name!r}")
    return dask.annotate(lepton_workload=name.strip())


def duration_bin(seconds: float) -> int:
    """The log-histogram bin of a duration (quarter octaves).

    >>> duration_bin(1.0), duration_bin(2.0), duration_bin(0.0)
    (0, 4, -120)
    """
    if seconds <= 0:
        return _LOWEST_BIN
    return max(_LOWEST_BIN, math.floor(math.log2(seconds) * BINS_PER_OCTAVE))


def bin_edges(b: int) -> tuple[float, float]:
    """Lower and upper duration of bin ``b``.

    >>> bin_edges(4)
    (2.0, 2.378414230005442)
    """
    return 2.0 ** (b / BINS_PER_OCTAVE), 2.0 ** ((b + 1) / BINS_PER_OCTAVE)


class Distribution:
    """Count, sum, min, max and a log-histogram of durations.

    >>> d = Distribution()
    >>> for s in (1.0, 1.0, 2.0, 4.0):
    ...     d.add(s)
    >>> d.count, d.mean, d.min, d.max, d.quantile(0.5)
    (4, 2.0, 1.0, 4.0, 1.0)
    """

    __slots__ = ("count", "hist", "max", "min", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0
        self.hist: dict[int, int] = {}

    def add(self, seconds: float) -> None:
        seconds = max(float(seconds), 0.0)
        self.count += 1
        self.sum += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)
        b = duration_bin(seconds)
        self.hist[b] = self.hist.get(b, 0) + 1

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, to the histogram's resolution (a bin's lower
        edge, clamped to [min, max])."""
        if not self.count:
            return 0.0
        target, seen = q * self.count, 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= target:
                return min(max(bin_edges(b)[0], self.min), self.max)
        return self.max

    def to_doc(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.sum,
            "min": self.min if self.count else 0.0,
            "max": self.max,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
            "bins": sorted(self.hist),
            "counts": [self.hist[b] for b in sorted(self.hist)],
        }


class _Group:
    __slots__ = ("deps", "done", "dur", "edges", "erred", "gpu", "id", "nbytes")
    __slots__ += ("pools", "prefix", "tasks")

    def __init__(self, gid: str, prefix: str, gpu: bool, deps: list[int]):
        self.id, self.prefix, self.gpu, self.deps = gid, prefix, gpu, deps
        self.edges: dict[int, int] = {}
        self.tasks = self.done = self.erred = self.nbytes = 0
        self.pools: dict[str, int] = {}
        self.dur = Distribution()


class RunRecorder:
    """What one run did, per task group and per submission batch.

    Parameters
    ----------
    run_id : str
        The run (the CostMonitor's run id).
    workload : str, optional
        The workload key; default ``lepton.workload``, else the
        ``lepton_workload`` annotation of the first batch carrying one, else
        derived from the task prefixes.
    max_batches, max_groups : int
        Bounds: batches past ``max_batches`` are merged in pairs; tasks of
        groups past ``max_groups`` are counted under their prefix.

    Examples
    --------
    >>> r = RunRecorder("r1", workload="nightly")
    >>> r.to_doc(now=0.0)["workload"], r.to_doc(now=0.0)["partial"]
    ('nightly', False)
    """

    def __init__(
        self,
        run_id: str,
        workload: str | None = None,
        *,
        max_batches: int = 4096,
        max_groups: int = 1024,
    ):
        self.run_id = run_id
        configured = workload or dask.config.get("lepton.workload")
        self.workload = configured
        self.workload_source = "config" if configured else None
        self.max_batches = max_batches
        self.max_groups = max_groups
        self.groups: list[_Group] = []
        self._by_id: dict[str, int] = {}
        self._memo: dict[str, int] = {}  # Dask task group name -> group index
        self.batches: list[dict[str, Any]] = []
        self.merged = 1  # submission batches per recorded batch
        self.started: float | None = None
        self.ended: float | None = None
        self.closed_with: int | None = None

    # -- fed by the monitor -------------------------------------------------------
    def group_index(self, tg: Any) -> int:
        """The recorded group of a Dask ``TaskGroup`` (the scheduler's)."""
        idx = self._memo.get(tg.name)
        if idx is not None:
            return idx
        self._memo[tg.name] = -1  # in progress: a cycle between groups ends here
        deps = sorted(
            {
                d
                for dtg in getattr(tg, "dependencies", ())
                if dtg is not tg and (d := self.group_index(dtg)) >= 0
            }
        )
        idx = self._group(tg.prefix.name, deps)
        if len(self._memo) > 100_000:
            self._memo.clear()
        self._memo[tg.name] = idx
        return idx

    def _group(self, prefix: str, deps: list[int]) -> int:
        sig = f"{prefix}|" + ",".join(self.groups[d].id for d in deps)
        gid = f"{prefix}#{hashlib.sha1(sig.encode()).hexdigest()[:8]}"
        if gid not in self._by_id and len(self.groups) >= self.max_groups:
            gid, deps = f"{prefix}#overflow", []
        idx = self._by_id.get(gid)
        if idx is None:
            idx = self._by_id[gid] = len(self.groups)
            self.groups.append(_Group(gid, prefix, False, deps))
        return idx

    def add_batch(
        self,
        tasks: list[Any],
        now: float,
        deadline_s: float | None,
        annotations: dict[str, dict[Any, Any]],
    ) -> None:
        """A batch of new tasks (Dask ``TaskState`` objects) arrived at ``now``."""
        if self.started is None:
            self.started = now
        names = annotations.get("lepton_workload") or {}
        if names and self.workload_source != "config":
            name = str(next(iter(names.values())))
            if self.workload_source is None:
                self.workload, self.workload_source = name, "annotation"
        counts: dict[int, int] = {}
        for ts in tasks:
            gi = self.group_index(ts.group)
            g = self.groups[gi]
            g.tasks += 1
            if not g.gpu and "GPU" in (ts.resource_restrictions or {}):
                g.gpu = True
            counts[gi] = counts.get(gi, 0) + 1
            for dts in ts.dependencies:
                di = self.group_index(dts.group)
                if di >= 0 and di != gi and di in g.deps:
                    g.edges[di] = g.edges.get(di, 0) + 1
        self.batches.append(
            {
                "arrival": now - self.started,
                "deadline_s": deadline_s,
                "groups": sorted(counts),
                "tasks": [counts[gi] for gi in sorted(counts)],
            }
        )
        if len(self.batches) > self.max_batches:
            self._merge()

    def _merge(self) -> None:
        out = []
        for i in range(0, len(self.batches), 2):
            pair = self.batches[i : i + 2]
            counts: dict[int, int] = {}
            for b in pair:
                for gi, n in zip(b["groups"], b["tasks"], strict=True):
                    counts[gi] = counts.get(gi, 0) + n
            dl = [b["deadline_s"] for b in pair if b["deadline_s"] is not None]
            out.append(
                {
                    "arrival": pair[0]["arrival"],
                    "deadline_s": min(dl) if dl else None,
                    "groups": sorted(counts),
                    "tasks": [counts[gi] for gi in sorted(counts)],
                }
            )
        self.batches = out
        self.merged *= 2

    def finished(
        self,
        ts: Any,
        seconds: float,
        nbytes: int | None,
        pool: str,
        erred: bool = False,
    ) -> None:
        """Task ``ts`` finished (``memory``, or ``erred``) on a worker of ``pool``."""
        g = self.groups[self.group_index(ts.group)]
        if erred:
            g.erred += 1
            return
        g.done += 1
        g.dur.add(seconds)
        if nbytes:
            g.nbytes += int(nbytes)
        g.pools[pool] = g.pools.get(pool, 0) + 1

    def transition(
        self,
        scheduler: Any,
        key: Any,
        start: str,
        finish: str,
        kw: dict[str, Any],
        worker_pool: dict[str, str],
    ) -> None:
        """A scheduler plugin's ``transition`` to ``memory`` or ``erred``."""
        ts = scheduler.tasks.get(key) if scheduler is not None else None
        if ts is None or (finish == "memory" and start != "processing"):
            return
        secs = sum(
            ss["stop"] - ss["start"]
            for ss in kw.get("startstops") or ()
            if ss.get("action") == "compute"
        )
        pool = worker_pool.get(kw.get("worker"), "default")
        self.finished(ts, secs, kw.get("nbytes"), pool, finish == "erred")

    def close(self, now: float) -> None:
        """The scheduler is closing: anything not done makes the run partial."""
        self.ended = now
        self.closed_with = self.unfinished

    # -- what it knows --------------------------------------------------------------
    @property
    def unfinished(self) -> int:
        return sum(max(g.tasks - g.done - g.erred, 0) for g in self.groups)

    def workload_key(self) -> tuple[str, str]:
        """The workload key and where it came from."""
        if self.workload:
            return self.workload, self.workload_source or "config"
        prefixes = ",".join(sorted({g.prefix for g in self.groups}))
        digest = hashlib.sha1(prefixes.encode()).hexdigest()[:12]
        return f"auto-{digest}", "derived"

    def to_doc(self, now: float | None = None) -> dict[str, Any]:
        """The recording as a ledger document (no data values, no credentials:
        prefixes, counts, seconds, bytes and pool names only)."""
        now = time.time() if now is None else now
        name, source = self.workload_key()
        partial = self.ended is not None and bool(self.closed_with)
        return {
            "_id": self.run_id,
            "run": self.run_id,
            "format": FORMAT,
            "workload": name,
            "workload_source": source,
            "started": self.started,
            "updated": now,
            "ended": self.ended,
            "complete": self.ended is not None and not partial,
            "partial": partial,
            "partial_reason": (
                f"the scheduler closed with {self.closed_with} tasks not done"
                if partial
                else None
            ),
            "tasks": sum(g.tasks for g in self.groups),
            "unfinished": self.unfinished,
            "batches_merged": self.merged,
            "groups": [
                {
                    "id": g.id,
                    "prefix": g.prefix,
                    "gpu": g.gpu,
                    "deps": list(g.deps),
                    "edges": [g.edges.get(d, 0) for d in g.deps],
                    "tasks": g.tasks,
                    "done": g.done,
                    "erred": g.erred,
                    "nbytes": g.nbytes,
                    "pools": sorted(g.pools),
                    "pool_tasks": [g.pools[p] for p in sorted(g.pools)],
                    "duration": g.dur.to_doc(),
                }
                for g in self.groups
            ],
            "batches": list(self.batches),
        }


# -- the runs collection ---------------------------------------------------------------
def _coll(spec: Any):
    return spec.db()[RUNS]


def write_recording(spec: Any, doc: dict[str, Any]) -> None:
    """Upsert one run's recording (``spec``: a :class:`~lepton_dask.store.StoreSpec`)."""
    spec.retry(
        lambda: _coll(spec).replace_one({"_id": doc["_id"]}, doc, upsert=True),
        "writing a run recording",
    )


def recordings(spec: Any, workload: str | None = None) -> list[dict[str, Any]]:
    """Recordings, oldest first: all, or those of one workload."""
    query = {} if workload is None else {"workload": workload}
    docs = spec.retry(
        lambda: list(_coll(spec).find(query)), "reading the run recordings"
    )
    return sorted(docs, key=lambda d: (d.get("started") or 0.0, d["_id"]))


def recording(spec: Any, run_id: str) -> dict[str, Any] | None:
    """One run's recording, or None."""
    return spec.retry(
        lambda: _coll(spec).find_one({"_id": run_id}), "reading a run recording"
    )


def history_from_recordings(docs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The arrival history a forecast learns from: ``(arrival, CPU work)`` of
    every recorded batch of the recordings ``docs`` (oldest first), on the
    recording clock (the run's start plus the batch's arrival; work: its
    tasks times their group's recorded mean duration; GPU groups count none).

    >>> history_from_recordings([{"started": 100.0,
    ...     "groups": [{"duration": {"count": 4, "sum": 2.0}}],
    ...     "batches": [{"arrival": 0.0, "groups": [0], "tasks": [10]},
    ...                 {"arrival": 60.0, "groups": [0], "tasks": [4]}]}])
    [(100.0, 5.0), (160.0, 2.0)]
    """
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
