"""Workload traces: task streams (or graphs) with durations and resource needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KIND_CODES = {"cpu": 0, "gpu": 1}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}


@dataclass
class Trace:
    """Tasks submitted over time.

    Attributes
    ----------
    submit, duration : float arrays
        Submission time and duration in reference thread-seconds.
    kind : int8 array
        0 for CPU work, 1 for GPU work.
    burst : int array
        Which burst a task belongs to (for latencies and deadlines).
    deadline : dict
        Burst -> seconds after the burst's first submission by which it should
        be finished (missing: no deadline).
    deps : list of lists, optional
        Predecessors of each task (a task graph); None for independent tasks.
    """

    name: str
    submit: np.ndarray
    duration: np.ndarray
    kind: np.ndarray
    burst: np.ndarray
    deadline: dict[int, float] = field(default_factory=dict)
    deps: list[list[int]] | None = None
    description: str = ""

    def __post_init__(self):
        n = len(self.submit)
        for name in ("duration", "kind", "burst"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"trace {self.name!r}: {name} has {len(getattr(self, name))} entries, submit has {n}"
                )
        if n and (np.any(self.duration < 0) or not np.all(np.isfinite(self.duration))):
            raise ValueError(f"trace {self.name!r}: durations must be finite and >= 0")
        if self.deps is not None and len(self.deps) != n:
            raise ValueError(
                f"trace {self.name!r}: deps has {len(self.deps)} entries, expected {n}"
            )

    def __len__(self) -> int:
        return len(self.submit)

    @property
    def work(self) -> dict[str, float]:
        """Total work per kind, in reference thread-seconds."""
        return {
            name: float(self.duration[self.kind == code].sum())
            for name, code in KIND_CODES.items()
        }

    def bursts(self) -> list[dict[str, Any]]:
        """Per burst: arrival, work per kind, task count and deadline."""
        out = []
        for b in np.unique(self.burst):
            m = self.burst == b
            out.append({
                "burst": int(b),
                "arrival": float(self.submit[m].min()),
                "work": {k: float(self.duration[m & (self.kind == c)].sum()) for k, c in KIND_CODES.items()},
                "tasks": int(m.sum()),
                "longest": float(self.duration[m].max()),
                "deadline": self.deadline.get(int(b)),
            })  # fmt: skip
        return out

    def scaled(self, time_factor: float = 1.0, work_factor: float = 1.0) -> Trace:
        """The same shape with times and/or durations scaled (for small real runs)."""
        return Trace(
            self.name,
            self.submit * time_factor,
            self.duration * work_factor,
            self.kind.copy(),
            self.burst.copy(),
            {b: d * time_factor for b, d in self.deadline.items()},
            self.deps,
            self.description,
        )

    def to_json(self) -> str:
        return json.dumps({
            "name": self.name, "submit": self.submit.tolist(), "duration": self.duration.tolist(),
            "kind": self.kind.tolist(), "burst": self.burst.tolist(),
            "deadline": {str(k): v for k, v in self.deadline.items()}, "deps": self.deps,
            "description": self.description,
        })  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Trace:
        d = json.loads(text)
        return cls(
            d["name"], np.array(d["submit"], float), np.array(d["duration"], float),
            np.array(d["kind"], np.int8), np.array(d["burst"], int),
            {int(k): v for k, v in d["deadline"].items()}, d.get("deps"), d.get("description", ""),
        )  # fmt: skip


def _concat(name, description, parts, deadline, deps=None) -> Trace:
    submit = np.concatenate([p[0] for p in parts])
    duration = np.concatenate([p[1] for p in parts])
    kind = np.concatenate(
        [np.full(len(p[0]), KIND_CODES[p[2]], np.int8) for p in parts]
    )
    burst = np.concatenate([np.full(len(p[0]), p[3], int) for p in parts])
    return Trace(name, submit, duration, kind, burst, deadline, deps, description)


def burst_then_reduce(
    n_map: int = 600,
    map_s: float = 2.0,
    reduce_s: float = 120.0,
    deadline: float = 300.0,
    seed: int = 0,
) -> Trace:
    """(1) A burst of short map tasks, then a reduction ending in one long task."""
    rng = np.random.default_rng(seed)
    maps = rng.gamma(4.0, map_s / 4.0, n_map)
    deps = [[] for _ in range(n_map)] + [list(range(n_map))]
    return _concat(
        "burst-reduce",
        "a burst of short map tasks, then one long reduction task",
        [
            (np.zeros(n_map), maps, "cpu", 0),
            (np.zeros(1), np.array([reduce_s]), "cpu", 0),
        ],
        {0: deadline},
        deps,
    )


def sawtooth(
    gaps: tuple[float, ...] = (10, 30, 45, 60, 90, 120, 200, 300, 600, 20, 40, 15),
    tasks_per_burst: int = 120,
    task_s: float = 1.0,
    deadline: float = 90.0,
    seed: int = 1,
) -> Trace:
    """(2) Interactive sawtooth: bursts separated by idle gaps from 10 s to 10 min,
    straddling startup delay and the minimum billing period."""
    rng = np.random.default_rng(seed)
    parts, t = [], 0.0
    for b in range(len(gaps) + 1):
        dur = rng.gamma(4.0, task_s / 4.0, tasks_per_burst)
        parts.append((np.full(tasks_per_burst, t), dur, "cpu", b))
        # the next burst starts `gap` after this one would finish on ~10 threads
        t += dur.sum() / 10.0 + (gaps[b] if b < len(gaps) else 0)
    return _concat(
        "sawtooth",
        "bursts separated by idle gaps from 10 s to 10 min",
        parts,
        dict.fromkeys(range(len(gaps) + 1), deadline),
    )


def etl_stage(
    n_tasks: int = 400,
    task_s: float = 6.0,
    arrival_s: float = 240.0,
    deadline: float = 600.0,
    seed: int = 2,
) -> Trace:
    """(3) A memory-heavy ETL stage: long tasks arriving over four minutes (one
    task per worker thread at a time: the pools give such workers one thread)."""
    rng = np.random.default_rng(seed)
    submit = np.sort(rng.uniform(0, arrival_s, n_tasks))
    dur = rng.lognormal(np.log(task_s), 0.4, n_tasks)
    return _concat(
        "etl",
        "memory-heavy ETL: long tasks streaming in over four minutes",
        [(submit, dur, "cpu", 0)],
        {0: deadline},
    )


def cpu_gpu_pipeline(
    n: int = 300,
    cpu_s: float = 1.5,
    gpu_s: float = 4.0,
    post_s: float = 1.0,
    deadline: float = 400.0,
    seed: int = 3,
) -> Trace:
    """(4) A CPU -> GPU -> CPU pipeline with a deadline: decode on CPUs, model on
    GPUs, write back on CPUs; each GPU task needs its CPU task, and so on."""
    rng = np.random.default_rng(seed)
    decode = rng.gamma(4.0, cpu_s / 4.0, n)
    model = rng.gamma(4.0, gpu_s / 4.0, n)
    write = rng.gamma(4.0, post_s / 4.0, n)
    deps = (
        [[] for _ in range(n)] + [[i] for i in range(n)] + [[n + i] for i in range(n)]
    )
    return _concat(
        "cpu-gpu-cpu",
        "decode on CPU workers, model on GPU workers, write on CPU workers; deadline",
        [
            (np.zeros(n), decode, "cpu", 0),
            (np.zeros(n), model, "gpu", 0),
            (np.zeros(n), write, "cpu", 0),
        ],
        {0: deadline},
        deps,
    )


TRACES = {
    "burst-reduce": burst_then_reduce,
    "sawtooth": sawtooth,
    "etl": etl_stage,
    "cpu-gpu-cpu": cpu_gpu_pipeline,
}


def from_task_stream(
    records: list[dict[str, Any]], name: str = "recorded", gap: float = 5.0
) -> Trace:
    """A trace from a real run's task stream (``Client.get_task_stream()``
    records): submit at each task's first compute start, duration its compute
    time; tasks more than ``gap`` seconds apart start a new burst.

    >>> recs = [{"startstops": [{"action": "compute", "start": 10.0, "stop": 11.5}]},
    ...         {"startstops": [{"action": "compute", "start": 30.0, "stop": 30.5}]}]
    >>> t = from_task_stream(recs)
    >>> t.submit.tolist(), t.duration.tolist(), t.burst.tolist()
    ([0.0, 20.0], [1.5, 0.5], [0, 1])
    """
    rows = []
    for r in records:
        comp = [s for s in r.get("startstops", ()) if s.get("action") == "compute"]
        if comp:
            rows.append(
                (
                    min(s["start"] for s in comp),
                    sum(s["stop"] - s["start"] for s in comp),
                )
            )
    rows.sort()
    if not rows:
        raise ValueError("the task stream has no compute records")
    t0 = rows[0][0]
    submit = np.array([r[0] - t0 for r in rows])
    burst = np.concatenate([[0], np.cumsum(np.diff(submit) > gap)]).astype(int)
    return Trace(
        name,
        submit,
        np.array([r[1] for r in rows]),
        np.zeros(len(rows), np.int8),
        burst,
        description="recorded from a task stream",
    )
