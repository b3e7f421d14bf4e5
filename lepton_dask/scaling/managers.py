"""The pools of a Dask cluster manager, as :class:`CostAwareAdaptive` sees them.

Any :class:`distributed.deploy.SpecCluster` (``LocalCluster``, dask-jobqueue's
``SLURMCluster`` and friends, dask-cloudprovider's ``EC2Cluster``, classic
``KubeCluster``) keeps a ``worker_spec``: worker name -> ``{"cls", "options"}``.
:class:`ManagedPools` reads pools off it and changes it:

* **one pool** (the default): every worker of the cluster. The pool grows
  through the manager's own ``scale(n)`` (its naming, its job templates), and
  its price, startup delay, threads and pricing class come from, in this
  order, an explicit ``pool=PoolSpec(...)``, ``lepton.scaling.pools`` (one
  entry), or the price catalog by ``instance_type`` (default
  ``lepton.cost.default-instance-type``);
* **several pools**: ``pools={prefix: PoolSpec}`` (or a list of PoolSpecs, each
  pool's name its prefix) maps a worker-spec key, or a prefix of it, to a
  pool; a pool grows by adding specs of its template (``templates={pool:
  spec}``, else the spec of a worker already in that pool, else the manager's
  ``new_pool_spec(pool)`` as :class:`~lepton_dask.scaling.pools.LocalPoolCluster`
  has one).

Workers shrink by name through SpecCluster's own retirement (the scaler picks
them). When the scaler asks for a worker it records the time; when the worker
arrives the difference is a startup sample. A policy sees each pool's
launch-to-arrival p90 over its recent samples, seeded with the configured
startup delay when there is one: a manager whose workers arrive later than
promised (a slow image pull, a queue, a start lock) is believed as it is.
Managers that know their launch times (``launch_times()``) are believed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Hashable, Mapping
from typing import Any

import dask.config

from lepton_dask._distributed import correct_state
from lepton_dask.scaling.state import PoolSpec

logger = logging.getLogger(__name__)

#: ``max_workers`` of a pool built here when ``adapt(maximum=...)`` is infinite
UNBOUNDED_WORKERS = 1024
#: startup samples kept per pool (the learned delay is their p90)
STARTUP_SAMPLES = 16
#: the quantile of recent launch-to-arrival times a policy plans with
STARTUP_QUANTILE = 0.9


def startup_quantile(samples: list[float]) -> float:
    """The :data:`STARTUP_QUANTILE` of launch-to-arrival ``samples``: the
    startup a policy plans with.

    >>> startup_quantile([2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 9.0])
    2.8
    """
    seen = sorted(samples)
    return seen[max(0, math.ceil(STARTUP_QUANTILE * len(seen)) - 1)]


_CONFIG_KEYS = {
    "name",
    "match",
    "instance-type",
    "pricing",
    "usd-per-hour",
    "threads",
    "kind",
    "speed",
    "startup",
    "min-workers",
    "max-workers",
    "preemptions-per-hour",
}


def check_manager(cluster: Any) -> None:
    """TypeError unless ``cluster`` is a SpecCluster, saying what is needed.

    >>> check_manager(object())
    Traceback (most recent call last):
    ...
    TypeError: CostAwareAdaptive needs a distributed.deploy.SpecCluster: scale(n) to add workers, a worker_spec naming each worker, and retirement by name (scale_down); object is not one (it has none of scale, worker_spec, scale_down). Use a SpecCluster-based manager (distributed.LocalCluster, dask-jobqueue, dask-cloudprovider, classic dask-kubernetes KubeCluster, lepton_dask.scaling.LocalPoolCluster), or stock distributed.Adaptive for this cluster.
    """
    from distributed import SpecCluster

    if isinstance(cluster, SpecCluster):
        return
    missing = [
        n for n in ("scale", "worker_spec", "scale_down") if not hasattr(cluster, n)
    ]
    has = f"it has none of {', '.join(missing)}" if missing else "not a subclass"
    raise TypeError(
        "CostAwareAdaptive needs a distributed.deploy.SpecCluster: scale(n) to add "
        "workers, a worker_spec naming each worker, and retirement by name "
        f"(scale_down); {type(cluster).__name__} is not one ({has}). Use a "
        "SpecCluster-based manager (distributed.LocalCluster, dask-jobqueue, "
        "dask-cloudprovider, classic dask-kubernetes KubeCluster, "
        "lepton_dask.scaling.LocalPoolCluster), or stock distributed.Adaptive for "
        "this cluster."
    )


def pool_from_config(
    entry: Mapping[str, Any], *, threads: int | None = None, catalog: Any = None
) -> tuple[PoolSpec, str | None]:
    """A ``lepton.scaling.pools`` entry as ``(PoolSpec, match)``.

    >>> spec, match = pool_from_config({"name": "spot", "instance-type": "m6i.large",
    ...                                 "pricing": "spot", "startup": "90s", "match": "spot-"})
    >>> spec.usd_per_hour, spec.startup_s, match
    (0.0384, 90.0, 'spot-')
    """
    from dask.utils import parse_timedelta

    from lepton_dask.cost.catalog import load_catalog

    unknown = set(entry) - _CONFIG_KEYS
    if unknown:
        raise ValueError(
            f"lepton.scaling.pools entry {dict(entry)!r}: unknown keys "
            f"{sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}"
        )
    itype = entry.get("instance-type") or dask.config.get(
        "lepton.cost.default-instance-type"
    )
    pricing = entry.get("pricing") or dask.config.get("lepton.cost.default-pricing")
    kw: dict[str, Any] = {}
    for key, field in (
        ("kind", "kind"),
        ("speed", "speed"),
        ("min-workers", "min_workers"),
        ("max-workers", "max_workers"),
        ("preemptions-per-hour", "preemptions_per_hour"),
    ):
        if entry.get(key) is not None:
            kw[field] = entry[key]
    if entry.get("startup") is not None:
        kw["startup_s"] = float(parse_timedelta(entry["startup"], default="seconds"))
    name = str(entry.get("name") or "default")
    if entry.get("usd-per-hour") is not None:  # a priced type need not be listed
        cat = catalog or load_catalog(dask.config.get("lepton.cost.catalog"))
        known = cat[itype].vcpus if itype in cat else 1
        spec = PoolSpec(
            name,
            itype,
            pricing,
            float(entry["usd-per-hour"]),
            threads=int(entry.get("threads") or threads or known),
            **kw,
        )
    else:
        spec = _from_catalog(
            name, itype, pricing, entry.get("threads") or threads, catalog, **kw
        )
    return spec, entry.get("match")


def _from_catalog(
    name: str,
    itype: str,
    pricing: str,
    threads: int | None,
    catalog: Any = None,
    **kw: Any,
) -> PoolSpec:
    from lepton_dask.cost.catalog import load_catalog

    cat = catalog or load_catalog(dask.config.get("lepton.cost.catalog"))
    try:
        t = cat[itype]
    except ValueError as e:  # CatalogError: names the nearest and the known types
        raise ValueError(
            f"pool {name!r}: {e}; or give its price (usd-per-hour)"
        ) from None
    return PoolSpec(
        name,
        itype,
        pricing,
        t.usd_per_hour(pricing),
        threads=int(threads or t.vcpus),
        **kw,
    )


def _template_threads(spec: Mapping[str, Any] | None) -> int | None:
    """Threads of one worker of a worker spec (Worker/Nanny or a jobqueue job)."""
    if not spec:
        return None
    opts = spec.get("options") or {}
    for key in ("nthreads", "ncores", "threads", "cores"):
        if isinstance(opts.get(key), int) and opts[key] > 0:
            per_job = opts.get("processes") or 1
            return max(1, opts[key] // per_job)
    return None


@dataclasses.dataclass
class _Pool:
    spec: PoolSpec
    prefix: str | None  # worker-spec keys starting with it; None: every worker
    template: dict[str, Any] | None  # None: the manager's scale(n) / new_pool_spec
    startup_configured: bool


class ManagedPools:
    """The pools of one SpecCluster: which worker is in which, how each grows,
    when each worker was asked for and how long workers take to arrive.

    Parameters
    ----------
    cluster : SpecCluster
    pool : PoolSpec, optional
        The whole cluster as this one pool.
    pools : dict of str to PoolSpec, or list of PoolSpec, optional
        Several pools, by worker-spec key or name prefix (a list: each pool's
        name is its prefix).
    templates : dict of str to worker spec, optional
        What to add to grow each pool (``{"cls": Worker, "options": {...}}``).
    instance_type, pricing : str, optional
        The catalog entry pricing the one pool (default
        ``lepton.cost.default-instance-type`` / ``default-pricing``).
    minimum, maximum : int
        Total workers, as ``adapt(minimum=, maximum=)``.

    Examples
    --------
    >>> from distributed import LocalCluster
    >>> with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
    ...                   dashboard_address=None) as c:
    ...     m = ManagedPools(c, instance_type="m6i.large", maximum=4)
    ...     sorted(m.counts().items()), m.pools["default"].threads
    ([('default', 1)], 2)
    """

    def __init__(
        self,
        cluster: Any,
        *,
        pool: PoolSpec | None = None,
        pools: Mapping[str, PoolSpec] | list[PoolSpec] | None = None,
        templates: Mapping[str, dict[str, Any]] | None = None,
        instance_type: str | None = None,
        pricing: str | None = None,
        minimum: int = 0,
        maximum: float = math.inf,
    ):
        check_manager(cluster)
        if not (isinstance(maximum, int) or math.isinf(maximum)) or maximum < 0:
            raise ValueError(
                f"maximum must be a non-negative int or inf, got {maximum!r}"
            )
        if not isinstance(minimum, int) or minimum < 0:
            raise ValueError(f"minimum must be a non-negative int, got {minimum!r}")
        if minimum > maximum:
            raise ValueError(f"minimum ({minimum}) > maximum ({maximum})")
        self.cluster = cluster
        self.minimum = minimum
        self.maximum = maximum
        self._asked: dict[str, float] = {}
        self._seen: set[str] = set()
        self._samples: dict[str, deque[float]] = {}
        self._used_names: set[str] = {str(k) for k in cluster.worker_spec}
        self._pools = self._resolve(
            pool, pools, templates or {}, instance_type, pricing
        )
        for p in self._pools.values():
            self._samples[p.spec.name] = deque(maxlen=STARTUP_SAMPLES)
            if p.spec.min_workers > min(p.spec.max_workers, maximum):
                raise ValueError(
                    f"pool {p.spec.name!r}: min_workers {p.spec.min_workers} > "
                    f"maximum {maximum}"
                )

    # -- which pools -------------------------------------------------------------------
    def _resolve(self, pool, pools, templates, instance_type, pricing):
        c = self.cluster
        new_spec = getattr(c, "new_spec", None)
        if pools is not None:
            if isinstance(pools, Mapping):
                mapping = dict(pools)
            else:
                mapping = {p.name: p for p in pools}
            return self._multi(mapping, templates)
        if pool is not None:
            return self._one(pool, startup_configured=pool.startup_s > 0)
        if hasattr(c, "new_pool_spec") and isinstance(getattr(c, "pools", None), dict):
            # a manager with named pools of its own (LocalPoolCluster)
            return self._multi({f"{n}-": p for n, p in c.pools.items()}, templates)
        entries = dask.config.get("lepton.scaling.pools") or []
        threads = _template_threads(new_spec)
        if len(entries) == 1 and not entries[0].get("match"):
            spec, _ = pool_from_config(entries[0], threads=threads)
            return self._one(spec, startup_configured=spec.startup_s > 0)
        if entries:
            mapping = {}
            for e in entries:
                spec, match = pool_from_config(e, threads=threads)
                if not match:
                    raise ValueError(
                        f"lepton.scaling.pools has {len(entries)} entries: each needs "
                        f"'match' (a worker name prefix); {spec.name!r} has none"
                    )
                mapping[match] = spec
            return self._multi(mapping, templates)
        itype = instance_type or dask.config.get("lepton.cost.default-instance-type")
        pricing = pricing or dask.config.get("lepton.cost.default-pricing")
        spec = _from_catalog("default", itype, pricing, threads)
        return self._one(spec, startup_configured=False, built_here=True)

    def _one(self, spec, *, startup_configured, built_here=False):
        hi = self.maximum if math.isfinite(self.maximum) else UNBOUNDED_WORKERS
        spec = dataclasses.replace(
            spec,
            min_workers=max(spec.min_workers, self.minimum),
            max_workers=int(hi) if built_here else int(min(spec.max_workers, hi)),
        )
        if not getattr(self.cluster, "new_spec", None):
            raise ValueError(
                f"{type(self.cluster).__name__} has no worker template (its "
                "new_spec is empty), so scale(n) cannot add workers: pass "
                "pools={prefix: PoolSpec} with templates={pool: spec}"
            )
        return {spec.name: _Pool(spec, None, None, startup_configured)}

    def _multi(self, mapping, templates):
        c = self.cluster
        if not mapping:
            raise ValueError("pools is empty: give at least one pool")
        names = [p.name for p in mapping.values()]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique, got {names}")
        unknown = set(templates) - set(names)
        if unknown:
            raise ValueError(
                f"templates for unknown pools {sorted(unknown)}; pools: {names}"
            )
        keys = [str(k) for k in c.worker_spec]
        out = {}
        for prefix, spec in mapping.items():
            matched = [
                k for k in c.worker_spec if self._match(str(k), mapping) == prefix
            ]
            template = templates.get(spec.name)
            own = spec.name in (getattr(c, "pools", None) or {})
            if template is None and not (own and hasattr(c, "new_pool_spec")):
                if not matched:
                    raise ValueError(
                        f"pool {spec.name!r} (prefix {prefix!r}) matches no worker of "
                        f"{type(c).__name__} (worker_spec keys: "
                        f"{', '.join(keys) or 'none'}) and has no template: pass "
                        f"templates={{{spec.name!r}: spec}}"
                    )
                template = _as_template(c.worker_spec[matched[0]])
            spec = dataclasses.replace(
                spec, max_workers=int(min(spec.max_workers, self.maximum))
            )
            out[spec.name] = _Pool(spec, prefix, template, spec.startup_s > 0)
        return out

    @staticmethod
    def _match(key: str, prefixes) -> str | None:
        best = None
        for prefix in prefixes:
            if (key == prefix or key.startswith(prefix)) and (
                best is None or len(prefix) > len(best)
            ):
                best = prefix
        return best

    # -- what the cluster has ------------------------------------------------------------
    def pool_of(self, key: Any) -> str | None:
        """The pool of a worker-spec key (None: a worker of no pool)."""
        if len(self._pools) == 1 and next(iter(self._pools.values())).prefix is None:
            return next(iter(self._pools))
        prefix = self._match(str(key), {p.prefix: p for p in self._pools.values()})
        for name, p in self._pools.items():
            if p.prefix == prefix and prefix is not None:
                return name
        return None

    def requested(self) -> dict[str, tuple[str, Hashable]]:
        """Worker name -> (pool, the name SpecCluster knows it by), for every
        worker the cluster has asked for (arrived or not), in a pool."""
        out = {}
        for key, spec in list(self.cluster.worker_spec.items()):
            pool = self.pool_of(key)
            if pool is None:
                continue
            if "group" in spec:
                for suffix in spec["group"]:
                    out[str(key) + suffix] = (pool, str(key) + suffix)
            else:
                out[str(key)] = (pool, key)
        return out

    def counts(self) -> dict[str, int]:
        """Workers per pool, asked for or running."""
        counts = dict.fromkeys(self._pools, 0)
        for pool, _ in self.requested().values():
            counts[pool] += 1
        return counts

    @property
    def pools(self) -> dict[str, PoolSpec]:
        """The pools as a policy should see them: each pool's startup delay is
        its launch-to-arrival p90 (:meth:`learned_startup`)."""
        out = {}
        learned = self.learned_startup()
        for name, p in self._pools.items():
            spec = p.spec
            if name in learned and learned[name] != spec.startup_s:
                spec = dataclasses.replace(spec, startup_s=learned[name])
            out[name] = spec
        return out

    def cheapest_first(self) -> list[str]:
        return sorted(
            self._pools, key=lambda n: self._pools[n].spec.usd_per_work_second
        )

    # -- launches and arrivals -----------------------------------------------------------
    def launch_times(self) -> dict[str, float]:
        """When each worker was asked for: the manager's record where it keeps
        one (``launch_times()``), else the scaler's."""
        known = getattr(self.cluster, "launch_times", None)
        out = dict(self._asked)
        if callable(known):
            out.update({str(k): v for k, v in known().items()})
        return out

    def observe(self, now: float, arrived: set[str]) -> None:
        """Workers seen on the scheduler at ``now``: a startup sample for each
        first arrival of a worker the scaler asked for."""
        launched = self.launch_times()
        plan = self.requested()
        for name in arrived - self._seen:
            self._seen.add(name)
            if name in self._asked and name in plan:
                sample = max(0.0, now - launched.get(name, self._asked[name]))
                self._samples[plan[name][0]].append(sample)
                logger.debug("%s arrived %.2f s after it was asked for", name, sample)

    def learned_startup(self) -> dict[str, float]:
        """Launch-to-arrival p90 per pool over its recent arrivals, the
        configured startup delay counting as one of them (a pool with none
        configured and no arrival yet is absent)."""
        out = {}
        for name, p in self._pools.items():
            seen = list(self._samples.get(name, ()))
            if p.startup_configured:
                seen.append(p.spec.startup_s)
            if seen:
                out[name] = startup_quantile(seen)
        return out

    # -- changing the cluster ------------------------------------------------------------
    async def grow_all(self, wanted: Mapping[str, int]) -> dict[str, list[str]]:
        """Add ``wanted[pool]`` workers to each pool in one request to the
        manager (one ``scale`` or one ``_correct_state``, never one per pool
        with an ``await`` between): returns the new names per pool."""
        from inspect import isawaitable

        wanted = {p: int(n) for p, n in wanted.items() if n > 0}
        if not wanted:
            return {}
        c = self.cluster
        before = set(self.requested())
        specs = False
        for pool, n in wanted.items():
            p = self._pools[pool]
            if p.template is None and p.prefix is None:
                # the manager's own scale (jobs, naming): the one-pool case
                f = c.scale(len(before) + n)
                if isawaitable(f):
                    await f
                continue
            specs = True
            for _ in range(n):
                if p.template is None:
                    c.worker_spec.update(c.new_pool_spec(pool))
                else:
                    name = self._next_name(p.prefix)
                    c.worker_spec[name] = {
                        **p.template,
                        "options": dict(p.template.get("options") or {}),
                    }
        if specs:
            correct_state(c)  # starts them in the background, as scale() does
        plan = self.requested()
        now = time.time()
        out: dict[str, list[str]] = {}
        for name in sorted(set(plan) - before):
            self._asked[name] = now
            out.setdefault(plan[name][0], []).append(name)
        return out

    def _next_name(self, prefix: str) -> str:
        base = prefix if prefix[-1:] in "-_." else prefix + "-"
        i = 0
        while f"{base}{i}" in self._used_names or f"{base}{i}" in map(
            str, self.cluster.worker_spec
        ):
            i += 1
        self._used_names.add(f"{base}{i}")
        return f"{base}{i}"


def _as_template(spec: dict[str, Any]) -> dict[str, Any]:
    """A worker spec without its worker's own name (SpecCluster names each
    worker by its key)."""
    opts = {k: v for k, v in (spec.get("options") or {}).items() if k != "name"}
    return {**spec, "options": opts}
