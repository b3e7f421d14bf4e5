"""Garbage collection of stored array versions: functions of a :class:`StoreSpec`.

A version's blocks are removed when nobody can or should read them any more:
failed writes, writes that never finished (their writer died), versions
superseded beyond ``lepton.store.retain-versions`` once their grace is over,
and block collections with no manifest at all. Version numbers are never
reused, so the newest manifest of a collected array stays behind as a small
``collected`` record until a newer version exists.
"""

from __future__ import annotations

import datetime
import itertools
import logging

import dask.config

from lepton_dask.config import get_timedelta
from lepton_dask.store._spec import StoreSpec
from lepton_dask.store.layout import (
    VERSIONS,
    blocks_collection,
    parse_blocks_collection,
    validate_name,
    version_id,
)

logger = logging.getLogger(__name__)

_GC_FIELDS = ("name", "version", "state", "tombstone", "created", "completed")


def now() -> datetime.datetime:
    """UTC now, naive, truncated to what MongoDB stores (milliseconds), so a
    time written into a manifest is the time read back."""
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000, tzinfo=None)


def remove_version(spec: StoreSpec, name: str, version: int) -> None:
    """Drop the block collections of one version and retire its manifest."""
    db = spec.db()
    prefix = blocks_collection(name, version, None)
    for coll in spec.retry(db.list_collection_names, "listing collections"):
        if coll == prefix or coll.startswith(prefix + ":"):
            spec.retry(lambda c=coll: db.drop_collection(c), f"dropping {coll}")
    # Version numbers are never reused (a zombie writer of a collected version
    # must not write into a later one): the newest manifest stays, as a
    # small "collected" record, until a newer version exists.
    vid = version_id(name, version)
    versions = db[VERSIONS]

    def forget() -> None:
        newer = versions.find_one(
            {"name": name, "version": {"$gt": version}}, {"_id": 1}
        )
        if newer is not None:
            versions.delete_one({"_id": vid})
        else:
            versions.update_one(
                {"_id": vid},
                {
                    "$set": {"state": "collected", "collected": now()},
                    "$unset": {"chunks": "", "attrs": ""},
                },
            )

    spec.retry(forget, f"removing version {version} of {name!r}")


def collect(
    spec: StoreSpec,
    name: str | None = None,
    *,
    grace: float | None = None,
    stale_after: float | None = None,
) -> dict[str, list]:
    """Remove what :func:`collectable` names, and orphaned block collections,
    of array ``name`` (default: all); see :meth:`FeatureStore.gc`.

    Returns ``{"versions": [(name, version), ...], "collections": [...]}``.
    """
    grace = get_timedelta("lepton.store.gc-grace") if grace is None else grace
    stale_after = (
        get_timedelta("lepton.store.stale-write-after")
        if stale_after is None
        else stale_after
    )
    retain = int(dask.config.get("lepton.store.retain-versions"))
    t = now()
    db = spec.db()
    query = {} if name is None else {"name": validate_name(name)}
    docs = spec.retry(
        lambda: list(db[VERSIONS].find(query, dict.fromkeys(_GC_FIELDS, 1))),
        "listing versions",
    )
    by_name: dict[str, list[dict]] = {}
    for d in docs:
        by_name.setdefault(d["name"], []).append(d)
    removed: dict[str, list] = {"versions": [], "collections": []}
    for n, vs in by_name.items():
        for d in collectable(vs, t, grace, stale_after, retain):
            remove_version(spec, n, d["version"])
            if d["state"] != "collected":
                removed["versions"].append((n, d["version"]))
    known = {
        (d["name"], d["version"]) for d in docs if d["state"] != "collected"
    } - set(removed["versions"])
    orphans: dict[str, tuple[str, int]] = {}
    for coll in spec.retry(db.list_collection_names, "listing collections"):
        parsed = parse_blocks_collection(coll)
        if parsed is None or (name is not None and parsed[0] != name):
            continue
        if parsed not in known:
            orphans[coll] = parsed
    if orphans:
        # A writer allocates its manifest before it creates a collection, so
        # a collection that looked orphaned may belong to a version allocated
        # after the listing above: ask again, now that the collection exists.
        ids = sorted({version_id(n, v) for n, v in orphans.values()})
        live = {
            (d["name"], d["version"])
            for d in spec.retry(
                lambda: list(
                    db[VERSIONS].find(
                        {"_id": {"$in": ids}, "state": {"$ne": "collected"}},
                        {"name": 1, "version": 1},
                    )
                ),
                "checking orphaned collections",
            )
        }
        for coll, parsed in orphans.items():
            if parsed in live:
                continue
            spec.retry(lambda c=coll: db.drop_collection(c), f"dropping {coll}")
            removed["collections"].append(coll)
    if removed["versions"] or removed["collections"]:
        logger.info("gc removed %s", removed)
    return removed


def _age(t_now: datetime.datetime, t: datetime.datetime | None) -> float:
    if t is None:
        return float("inf")
    return (t_now - t.replace(tzinfo=None)).total_seconds()


def collectable(
    versions: list[dict],
    t_now: datetime.datetime,
    grace: float,
    stale_after: float,
    retain: int,
) -> list[dict]:
    """Which version documents of one array :func:`collect` removes.

    >>> t = datetime.datetime(2026, 1, 1)
    >>> vs = [{"version": 1, "state": "complete", "completed": t},
    ...       {"version": 2, "state": "complete", "completed": t},
    ...       {"version": 3, "state": "failed"},
    ...       {"version": 4, "state": "writing", "created": t}]
    >>> later = t + datetime.timedelta(hours=2)
    >>> [d["version"] for d in collectable(vs, later, 60, 3600, 0)]
    [1, 3, 4]
    """
    complete = sorted(
        (d for d in versions if d["state"] == "complete"),
        key=lambda d: d["version"],
        reverse=True,
    )
    out = []
    # Versions a reader may still resolve: the head and `retain` before it.
    keep = {d["version"] for d in complete[: 1 + retain] if not d.get("tombstone")}
    if complete and complete[0].get("tombstone"):
        keep = set()  # deleted: older versions go once their grace is over
    superseded_at: dict[int, datetime.datetime | None] = {}
    for newer, older in itertools.pairwise(complete):
        superseded_at[older["version"]] = newer.get("completed")
    newest = max((d["version"] for d in versions), default=None)
    for d in versions:
        v = d["version"]
        if d["state"] == "collected":
            if v != newest:  # its record is no longer needed to block reuse
                out.append(d)
        elif d["state"] == "failed":
            out.append(d)
        elif d["state"] == "writing":
            if _age(t_now, d.get("created")) > stale_after:
                out.append(d)
        elif d.get("tombstone"):
            continue  # tombstones are tiny and keep version numbers increasing
        elif v not in keep and _age(t_now, superseded_at.get(v)) > grace:
            out.append(d)
    return sorted(out, key=lambda d: d["version"])
