"""What the server answers from an index, asked through its own ``explain``.

FerretDB v1's SQLite backend pushes an ``{"_id": <string>}`` filter down to
SQLite but as ``_ferretdb_sjson->'$._id'``, while its ``_id`` index is on
``_ferretdb_sjson->"_id"``; SQLite matches expression indexes syntactically,
so every query scans the whole table (``explain`` shows ``SCAN <table>``).
Range filters are not pushed down at all. MongoDB answers both from the
``_id`` index (``IDHACK``/``EXPRESS_IXSCAN``/``IXSCAN``). Rather than test for
a product name, the store asks ``explain`` and adapts its layout.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pymongo.database
import pymongo.errors

logger = logging.getLogger(__name__)

_SQL_SCAN = re.compile(r"\bSCAN\b")
_cache: dict[tuple[str, str, str], bool] = {}
_lock = threading.Lock()


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _strings(v)


def plan_uses_index(explain: dict[str, Any]) -> bool:
    """Whether an ``explain`` answer shows an index-backed plan.

    >>> plan_uses_index({"queryPlanner": {"winningPlan": {"stage": "IDHACK"}}})
    True
    >>> plan_uses_index({"queryPlanner": {"winningPlan": {"stage": "COLLSCAN"}}})
    False
    >>> plan_uses_index({"queryPlanner": {"Plan": ["id=2 detail=SCAN t_1"]}})
    False
    >>> plan_uses_index({"queryPlanner": {"Plan": ["SEARCH t USING INDEX i (<expr>=?)"]}})
    True
    """
    planner = explain.get("queryPlanner", explain)
    for s in _strings(planner):
        if s == "COLLSCAN":
            return False
        if _SQL_SCAN.search(s) and "USING" not in s:
            return False
    return True


def indexed(
    db: pymongo.database.Database, collection: str, kind: str, key: str
) -> bool:
    """Whether ``collection`` answers an ``_id`` lookup (``kind="eq"``) or an
    ``_id`` range (``kind="range"``) from an index. Cached per server/collection.

    ``key`` distinguishes servers (the URI) in the cache; it is never logged.
    """
    cache_key = (key, f"{db.name}.{collection}", kind)
    with _lock:
        if cache_key in _cache:
            return _cache[cache_key]
    filt: dict[str, Any] = (
        {"_id": "lepton-probe"}
        if kind == "eq"
        else {"_id": {"$gte": "lepton-probe-a", "$lt": "lepton-probe-b"}}
    )
    try:
        info = db.command("explain", {"find": collection, "filter": filt})
        result = plan_uses_index(info)
    except pymongo.errors.OperationFailure as e:
        # A server without explain: assume MongoDB semantics (indexes on _id).
        logger.debug("explain failed on %s (%s); assuming an _id index", collection, e)
        result = True
    with _lock:
        _cache[cache_key] = result
    return result
