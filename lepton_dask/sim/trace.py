"""Workload traces: task streams (or graphs) with durations and resource needs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KIND_CODES = {"cpu": 0, "gpu": 1}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
#: default prefix words per depth in a graph (see :meth:`Trace.prefixes`)
STAGES = ("map", "reduce", "combine", "finish")


def _valid_prefix(p: str) -> bool:
    from dask.utils import key_split

    return isinstance(p, str) and bool(p) and key_split(f"{p}-0") == p


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
    latency : float, optional
        For streams: the service level as the user states it, each batch
        done within this many seconds of its arrival (every burst's deadline).
    deps : list of lists, optional
        Predecessors of each task (a task graph); None for independent tasks.
    prefix : list of str, optional
        Each task's key prefix (what Dask's ``key_split`` makes of its key,
        the name the scheduler keeps duration estimates under). Default: one
        prefix per kind and stage of the graph (:meth:`prefixes`).
    """

    name: str
    submit: np.ndarray
    duration: np.ndarray
    kind: np.ndarray
    burst: np.ndarray
    deadline: dict[int, float] = field(default_factory=dict)
    deps: list[list[int]] | None = None
    description: str = ""
    latency: float | None = None
    prefix: list[str] | None = None

    def __post_init__(self):
        n = len(self.submit)
        for name in ("duration", "kind", "burst"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"trace {self.name!r}: {name} has {len(getattr(self, name))} entries, submit has {n}"
                )
        self._check_values()
        if self.deps is not None and len(self.deps) != n:
            raise ValueError(
                f"trace {self.name!r}: deps has {len(self.deps)} entries, expected {n}"
            )
        if self.prefix is not None:
            if len(self.prefix) != n:
                raise ValueError(
                    f"trace {self.name!r}: prefix has {len(self.prefix)} entries, "
                    f"expected {n}"
                )
            bad = next((p for p in self.prefix if not _valid_prefix(p)), None)
            if bad is not None:
                raise ValueError(
                    f"trace {self.name!r}: prefix {bad!r} is not a Dask key prefix "
                    "(words of letters joined by '-', as key_split makes them)"
                )

    def _check_values(self) -> None:
        """Refuse what cannot be run: a negative or non-finite submission time
        or duration, a deadline or latency that is not a positive number of
        seconds (one before its own submission); the error names the batch,
        the task and the field."""
        for field_name, arr in (("submit", self.submit), ("duration", self.duration)):
            arr = np.asarray(arr, dtype=float)
            bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
            if len(bad):
                i = int(bad[0])
                raise ValueError(
                    f"trace {self.name!r}: batch {int(self.burst[i])}, task {i}: "
                    f"{field_name} must be a finite number >= 0 seconds, got "
                    f"{float(arr[i])!r} ({len(bad)} such task(s))"
                )
        for b, d in self.deadline.items():
            if not (
                isinstance(d, (int, float, np.number)) and math.isfinite(d) and d > 0
            ):
                raise ValueError(
                    f"trace {self.name!r}: batch {b}: deadline must be a positive "
                    f"number of seconds after its submission, got {d!r} (a deadline "
                    "at or before the batch's submission cannot be met)"
                )
        if self.latency is not None and not (
            math.isfinite(self.latency) and self.latency > 0
        ):
            raise ValueError(
                f"trace {self.name!r}: latency must be a positive number of "
                f"seconds, got {self.latency!r}"
            )

    def depths(self) -> list[int]:
        """Each task's depth in the graph (0 without dependencies)."""
        n = len(self)
        depth = [0] * n
        if self.deps is not None:
            for i in sorted(range(n), key=lambda i: self.submit[i]):
                depth[i] = 1 + max((depth[j] for j in self.deps[i]), default=-1)
        return depth

    def prefixes(self) -> list[str]:
        """Each task's key prefix: :attr:`prefix` when given, else
        ``"<kind>-<stage>"`` by kind and depth in the graph (``cpu-map``,
        ``gpu-reduce``, ...), the same for every burst, as one function
        submitted again is one prefix to the scheduler.

        >>> sawtooth(gaps=(30,)).prefixes()[:2]
        ['cpu-map', 'cpu-map']
        """
        if self.prefix is not None:
            return list(self.prefix)
        kinds = self.kind.tolist()
        return [
            f"{KIND_NAMES[k]}-{STAGES[min(d, len(STAGES) - 1)]}"
            for k, d in zip(kinds, self.depths(), strict=True)
        ]

    def __len__(self) -> int:
        return len(self.submit)

    def blind_bursts(self, startup_s: float, priors: Iterable[str] = ()) -> set[int]:
        """Bursts with a deadline that no policy can size on a measured
        duration. A stage's capacity must be bought one startup before its
        tasks must start: the burst's deadline less the longest chain from
        them to the burst's end. What sizes it is the duration of its own
        prefix and of every prefix after it on that chain (they decide how
        much time it has). The burst is blind when one of those prefixes
        (without a prior in ``priors``) has no task that could have finished
        by then, even with unlimited workers bought at t = 0 (there after
        ``startup_s``): every worker that can help it is bought on the
        scheduler's guess alone, and traces whose durations differ by any
        factor look the same to every policy until then. A map stage before a
        long reduce is blind so: the reduce is learnt only after the maps'
        capacity had to be bought.

        >>> sorted(sawtooth(gaps=(10, 200)).blind_bursts(60.0))
        [0, 1]
        >>> sorted(burst_then_reduce().blind_bursts(60.0))
        [0]
        """
        prefixes = self.prefixes()
        known = set(priors)
        n = len(self)
        finish = [0.0] * n
        learnt: dict[str, float] = {}
        order = sorted(range(n), key=lambda i: self.submit[i])
        # dependencies first, in the order :meth:`depths` walks the graph
        for i in order:
            start = max(float(self.submit[i]), startup_s)
            for j in self.deps[i] if self.deps else ():
                start = max(start, finish[j])
            finish[i] = start + float(self.duration[i])
            p = prefixes[i]
            learnt[p] = min(learnt.get(p, math.inf), finish[i])
        # from each task to its burst's end: the longest chain, and the
        # prefixes on the chains after it (dependents last first)
        tail = [float(d) for d in self.duration]
        after: list[set[str]] = [{p} for p in prefixes]
        if self.deps:
            depth = self.depths()
            for i in sorted(range(n), key=lambda i: -depth[i]):
                for j in self.deps[i]:
                    tail[j] = max(tail[j], float(self.duration[j]) + tail[i])
                    after[j] |= after[i]
        arrival: dict[int, float] = {}
        for i, b in enumerate(self.burst.tolist()):
            arrival[b] = min(arrival.get(b, math.inf), float(self.submit[i]))
        blind = set()
        for i, b in enumerate(self.burst.tolist()):
            d = self.deadline.get(b)
            if d is None or b in blind:
                continue
            buy_by = arrival[b] + d - tail[i] - startup_s
            if any(learnt[p] > buy_by for p in after[i] - known):
                blind.add(b)
        return blind

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
            out.append(
                {
                    "burst": int(b),
                    "arrival": float(self.submit[m].min()),
                    "work": {
                        k: float(self.duration[m & (self.kind == c)].sum())
                        for k, c in KIND_CODES.items()
                    },
                    "tasks": int(m.sum()),
                    "longest": float(self.duration[m].max()),
                    "deadline": self.deadline.get(int(b)),
                }
            )
        return out

    def select(
        self,
        bursts: Iterable[int],
        shift: float = 0.0,
        deadline: dict[int, float] | None = None,
        name: str | None = None,
    ) -> Trace:
        """The tasks of ``bursts`` only, submitted ``shift`` seconds earlier,
        with ``deadline`` (default: their own). Dependencies on tasks left out
        are dropped: the caller cuts where those are done before the rest is
        submitted."""
        keep = np.isin(self.burst, np.fromiter(bursts, int))
        idx = np.flatnonzero(keep)
        deps = None
        if self.deps is not None:
            new = {int(i): k for k, i in enumerate(idx)}
            deps = [[new[j] for j in self.deps[i] if j in new] for i in idx]
        chosen = {int(b) for b in self.burst[keep]}
        given = self.deadline if deadline is None else deadline
        names = self.prefixes()
        return Trace(
            name or self.name,
            self.submit[keep] - shift,
            self.duration[keep],
            self.kind[keep],
            self.burst[keep],
            {b: d for b, d in given.items() if b in chosen},
            deps,
            self.description,
            self.latency,
            [names[i] for i in idx],
        )

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
            None if self.latency is None else self.latency * time_factor,
            self.prefix,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "submit": self.submit.tolist(),
                "duration": self.duration.tolist(),
                "kind": self.kind.tolist(),
                "burst": self.burst.tolist(),
                "deadline": {str(k): v for k, v in self.deadline.items()},
                "deps": self.deps,
                "description": self.description,
                "latency": self.latency,
                "prefix": self.prefix,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Trace:
        d = json.loads(text)
        return cls(
            d["name"],
            np.array(d["submit"], float),
            np.array(d["duration"], float),
            np.array(d["kind"], np.int8),
            np.array(d["burst"], int),
            {int(k): v for k, v in d["deadline"].items()},
            d.get("deps"),
            d.get("description", ""),
            d.get("latency"),
            d.get("prefix"),
        )


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


def stream(
    minutes: float = 60.0,
    rate: float = 2.0,
    task_s: float = 2.0,
    spikes: tuple[tuple[float, float, float], ...] = (
        (900, 60, 5.0),
        (2100, 120, 3.0),
        (3000, 45, 6.0),
    ),
    latency: float = 120.0,
    seed: int = 4,
) -> Trace:
    """(5) A stream: Poisson arrivals of single tasks (each its own batch, as
    ``client.submit`` calls) at ``rate`` per second, plus spikes
    ``(start s, length s, rate multiplier)``; each done within ``latency``."""
    rng = np.random.default_rng(seed)
    end = minutes * 60.0
    times, t = [], 0.0
    while t < end:
        mult = next((m for s0, ln, m in spikes if s0 <= t < s0 + ln), 1.0)
        t += rng.exponential(1.0 / (rate * mult))
        if t < end:
            times.append(t)
    submit = np.array(times)
    n = len(submit)
    return Trace(
        "stream",
        submit,
        rng.gamma(2.0, task_s / 2.0, n),
        np.zeros(n, np.int8),
        np.arange(n),
        dict.fromkeys(range(n), latency),
        description="Poisson stream of single tasks with spikes; latency per task",
        latency=latency,
    )


def multi_tenant(seed: int = 5) -> Trace:
    """(6) Two users interleaved, each with its own deadline: an analyst's
    interactive bursts (90 s) and a pipeline's batch stages (15 min)."""
    rng = np.random.default_rng(seed)
    parts, deadline, b = [], {}, 0
    t = 0.0
    for _ in range(10):  # interactive: 80 tasks of ~1 s, idle gaps 20 s - 5 min
        parts.append((np.full(80, t), rng.gamma(4.0, 0.25, 80), "cpu", b))
        deadline[b] = 90.0
        b += 1
        t += 8.0 + rng.uniform(20, 300)
    for start in (60.0, 700.0, 1400.0):  # pipeline: 200 tasks of ~8 s
        parts.append(
            (np.full(200, start), rng.lognormal(np.log(8.0), 0.3, 200), "cpu", b)
        )
        deadline[b] = 900.0
        b += 1
    tr = _concat(
        "multi-tenant",
        "an analyst's interactive bursts (90 s) interleaved with a pipeline's stages (15 min)",
        parts,
        deadline,
    )
    # two users run two functions: the scheduler keeps a duration per prefix
    tr.prefix = ["analyst" if tr.deadline[b] < 900 else "pipeline" for b in tr.burst]
    return tr


def sawtooth_recurring(repeats: int = 5, jitter: float = 0.1, seed: int = 6) -> Trace:
    """(7) The sawtooth's day repeated ``repeats`` times, gaps and burst sizes
    jittered by +/- ``jitter`` (for learning from history)."""
    rng = np.random.default_rng(seed)
    base = (10, 30, 45, 60, 90, 120, 200, 300, 600, 20, 40, 15)
    parts, t, b, deadline = [], 0.0, 0, {}
    for _ in range(repeats):
        gaps = [g * rng.uniform(1 - jitter, 1 + jitter) for g in base] + [900.0]
        for g in gaps:
            n = max(1, round(120 * rng.uniform(1 - jitter, 1 + jitter)))
            dur = rng.gamma(4.0, 0.25, n)
            parts.append((np.full(n, t), dur, "cpu", b))
            deadline[b] = 90.0
            b += 1
            t += dur.sum() / 10.0 + g
    return _concat(
        "sawtooth-5x",
        "the sawtooth repeated five times with +/-10% jitter in gaps and sizes",
        parts,
        deadline,
    )


def diurnal_days(
    days: int = 3, every_s: float = 300.0, peak_tasks: int = 60, seed: int = 7
) -> Trace:
    """(8) A team's daily rhythm over ``days`` days: a batch every ``every_s``
    seconds whose size follows a half-sine over working hours (8:00-20:00) and
    a trickle at night; each batch done within 10 minutes."""
    rng = np.random.default_rng(seed)
    parts, deadline, b = [], {}, 0
    for t in np.arange(0.0, days * 86400.0, every_s):
        hour = (t % 86400.0) / 3600.0
        level = math.sin(math.pi * (hour - 8) / 12) if 8 <= hour < 20 else 0.0
        n = rng.poisson(peak_tasks * max(level, 0.03))
        if n == 0:
            continue
        parts.append((np.full(n, t), rng.gamma(2.0, 1.5, n), "cpu", b))
        deadline[b] = 600.0
        b += 1
    return _concat(
        "diurnal-3d",
        "a batch every 5 minutes, sized by a half-sine over working hours, for three days",
        parts,
        deadline,
    )


def nightly_etl(
    nights: int = 5, anomalous: int = 3, jitter_s: float = 300.0, seed: int = 8
) -> Trace:
    """(9) A nightly ETL over ``nights`` nights: at about 02:00 (+/-
    ``jitter_s``) an extract of 400 tasks, a transform of 200 tasks 15 minutes
    later and a load of 40 tasks 10 minutes after that, each stage done within
    5 minutes. Night ``anomalous`` (counted from 0; None: none) is different:
    it starts three hours late with three times the data (a backfill)."""
    rng = np.random.default_rng(seed)
    stages = ((0.0, 400, 1.5), (900.0, 200, 2.0), (1500.0, 40, 3.0))
    parts, deadline, b = [], {}, 0
    for night in range(nights):
        late, scale = (3 * 3600.0, 3) if night == anomalous else (0.0, 1)
        start = night * 86400.0 + 2 * 3600.0 + late + rng.uniform(-jitter_s, jitter_s)
        for offset, tasks, mean_s in stages:
            n = tasks * scale
            parts.append(
                (np.full(n, start + offset), rng.gamma(4.0, mean_s / 4, n), "cpu", b)
            )
            deadline[b] = 300.0
            b += 1
    return _concat(
        "nightly-etl",
        "a nightly extract-transform-load at about 02:00, one night late and 3x larger",
        parts,
        deadline,
    )


TRACES = {
    "burst-reduce": burst_then_reduce,
    "sawtooth": sawtooth,
    "etl": etl_stage,
    "cpu-gpu-cpu": cpu_gpu_pipeline,
    "stream": stream,
    "multi-tenant": multi_tenant,
    "sawtooth-5x": sawtooth_recurring,
    "diurnal-3d": diurnal_days,
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
