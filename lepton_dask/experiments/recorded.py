"""Traces from recorded runs: what the CostMonitor recorded of a job
(:mod:`lepton_dask.cost.recording`), rebuilt as a graph-aware :class:`Trace`
to simulate again (the scenarios room of the experiments)."""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

import numpy as np

from lepton_dask.cost.recording import bin_edges, recording, recordings
from lepton_dask.sim.trace import KIND_CODES, Trace

__all__ = [
    "PartialRecordingWarning",
    "RecordingNotFoundError",
    "trace_from_recording",
    "trace_from_run",
    "trace_from_workload",
]


class RecordingNotFoundError(LookupError):
    """No recording of the run or workload asked for (the message names those
    that exist)."""


class PartialRecordingWarning(UserWarning):
    """The recording replayed is of a run that did not finish its work."""


def _spec(store: Any):
    from lepton_dask.store import StoreSpec

    if store is None or isinstance(store, str):
        return StoreSpec.from_config(store)
    if isinstance(store, StoreSpec):
        return store
    spec = getattr(store, "spec", None)  # a Ledger
    if isinstance(spec, StoreSpec):
        return spec
    raise TypeError(
        f"store must be a StoreSpec, a Ledger, a URI or None, got {type(store)!r}"
    )


def _known(docs: list[dict[str, Any]], what: str) -> str:
    if not docs:
        return "nothing is recorded in this store yet"
    if what == "run":
        names = [d["_id"] for d in docs][-20:]
    else:
        names = sorted({d.get("workload", "?") for d in docs})[:20]
    return f"recorded {what}s: {', '.join(names)}"


def trace_from_run(run_id: str, store: Any = None, *, seed: int = 0) -> Trace:
    """The trace of recorded run ``run_id``.

    Parameters
    ----------
    run_id : str
        A run id (``lepton-dask cost runs``, ``CostMonitor.run_id``).
    store : StoreSpec, Ledger, str or None
        Where the recordings are (a URI; None: the configured store).
    seed : int
        Seed of the duration draws (the same seed, the same trace).

    Raises
    ------
    RecordingNotFoundError
        No recording of ``run_id`` (the message lists the recorded runs).

    Examples
    --------
    >>> trace_from_run("no-such-run", store)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    lepton_dask.experiments.recorded.RecordingNotFoundError: no recording of run 'no-such-run'; ...
    """
    spec = _spec(store)
    doc = recording(spec, run_id)
    if doc is None:
        raise RecordingNotFoundError(
            f"no recording of run {run_id!r}; {_known(recordings(spec), 'run')}"
        )
    return trace_from_recording(doc, seed=seed)


def trace_from_workload(name: str, store: Any = None, *, seed: int = 0) -> Trace:
    """The trace of the latest complete recorded run of workload ``name``
    (the latest partial one, with a warning, when none is complete).

    Raises
    ------
    RecordingNotFoundError
        No run of ``name`` is recorded (the message lists the workloads).
    """
    spec = _spec(store)
    docs = recordings(spec, name)
    if not docs:
        raise RecordingNotFoundError(
            f"no recorded run of workload {name!r}; {_known(recordings(spec), 'workload')}"
        )
    complete = [d for d in docs if d.get("complete")]
    return trace_from_recording((complete or docs)[-1], seed=seed)


def _draw(dist: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    if not dist.get("bins") or n == 0:
        return np.full(n, float(dist.get("sum", 0.0)) / max(dist.get("count", 1), 1))
    bins = np.array(dist["bins"], float)
    p = np.array(dist["counts"], float)
    pick = rng.choice(len(bins), size=n, p=p / p.sum())
    lo = np.array([bin_edges(int(b))[0] for b in bins])[pick]
    hi = np.array([bin_edges(int(b))[1] for b in bins])[pick]
    out = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    return np.clip(out, dist["min"], dist["max"])


def _topo(order: list[int], groups: list[dict[str, Any]]) -> list[int]:
    present = set(order)
    done: list[int] = []
    seen: set[int] = set()

    def visit(g: int, path: set[int]) -> None:
        if g in seen or g in path:
            return
        path.add(g)
        for d in groups[g].get("deps", ()):
            if d in present:
                visit(d, path)
        path.discard(g)
        seen.add(g)
        done.append(g)

    for g in order:
        visit(g, set())
    return done


def trace_from_recording(doc: dict[str, Any], *, seed: int = 0) -> Trace:
    """A :class:`Trace` from a recording document (see :func:`trace_from_run`)."""
    run = doc["_id"]
    if doc.get("partial") or not doc.get("complete"):
        why = doc.get("partial_reason") or "its scheduler has not closed (or died)"
        warnings.warn(
            f"run {run!r} is a partial recording ({why}); replaying the tasks it "
            "recorded, unfinished ones with their group's durations",
            PartialRecordingWarning,
            stacklevel=3,
        )
    groups = doc["groups"]
    if not doc.get("batches"):
        raise ValueError(f"run {run!r} recorded no batches: nothing to replay")
    known = [g["duration"] for g in groups if g["duration"]["count"]]
    fallback_mean = (
        sum(d["sum"] for d in known) / sum(d["count"] for d in known) if known else 1.0
    )
    digest = int(hashlib.sha1(f"{run}/{seed}".encode()).hexdigest()[:8], 16)
    rngs = [np.random.default_rng([digest, gi]) for gi in range(len(groups))]
    submit: list[np.ndarray] = []
    duration: list[np.ndarray] = []
    kind: list[np.ndarray] = []
    burst: list[np.ndarray] = []
    deps: list[list[int]] = []
    index_of: list[list[np.ndarray]] = [[] for _ in groups]  # per group, per batch
    last: dict[int, np.ndarray] = {}
    deadline: dict[int, float] = {}
    n_total = 0
    any_deps = False
    for b, batch in enumerate(doc["batches"]):
        counts = dict(zip(batch["groups"], batch["tasks"], strict=True))
        if batch.get("deadline_s") is not None:
            deadline[b] = float(batch["deadline_s"])
        here: dict[int, np.ndarray] = {}
        for gi in _topo(sorted(counts), groups):
            n, g = int(counts[gi]), groups[gi]
            idx = np.arange(n_total, n_total + n)
            n_total += n
            dist = g["duration"]
            if not dist["count"]:
                dist = {"sum": fallback_mean, "count": 1}
            duration.append(_draw(dist, n, rngs[gi]))
            submit.append(np.full(n, float(batch["arrival"])))
            kind.append(np.full(n, KIND_CODES["gpu" if g["gpu"] else "cpu"], np.int8))
            burst.append(np.full(n, b, int))
            edges = dict(zip(g.get("deps", ()), g.get("edges", ()), strict=True))
            task_deps: list[list[int]] = [[] for _ in range(n)]
            for d in g.get("deps", ()):
                src = here.get(d)
                if src is None:
                    src = last.get(d)
                if src is None or not len(src):
                    continue
                m = len(src)
                k = min(m, max(1, round(edges.get(d, g["tasks"]) / max(g["tasks"], 1))))
                for i in range(n):
                    base = (i * m) // n
                    task_deps[i].extend(int(src[(base + j) % m]) for j in range(k))
                any_deps = True
            deps.extend(task_deps)
            here[gi] = idx
            index_of[gi].append(idx)
        last.update(here)
    dur = _recorded_means(
        np.concatenate(duration) if duration else np.zeros(0), groups, index_of
    )
    return Trace(
        f"run:{run}",
        np.concatenate(submit) if submit else np.zeros(0),
        dur,
        np.concatenate(kind) if kind else np.zeros(0, np.int8),
        np.concatenate(burst) if burst else np.zeros(0, int),
        deadline,
        deps if any_deps else None,
        f"replay of run {run} (workload {doc.get('workload')})",
    )


def _recorded_means(dur: np.ndarray, groups: list, index_of: list) -> np.ndarray:
    """Each group's drawn durations scaled to its recorded mean, then kept
    inside its recorded [min, max] (a few rounds of both)."""
    for gi, g in enumerate(groups):
        d = g["duration"]
        if d["count"] and index_of[gi]:
            idx = np.concatenate(index_of[gi])
            for _ in range(4):
                drawn = dur[idx].mean()
                if drawn > 0:
                    dur[idx] = np.clip(
                        dur[idx] * (d["sum"] / d["count"]) / drawn, d["min"], d["max"]
                    )
    return dur
