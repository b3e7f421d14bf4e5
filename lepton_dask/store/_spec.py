"""What a task needs to reach the store, and the retry loop around it."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import dask.config
import pymongo.collection
import pymongo.database
import pymongo.errors

from lepton_dask.config import get_timedelta
from lepton_dask.store._uri import (
    AUTH_CODES,
    CONNECTION_ERRORS,
    auth_failed,
    get_client,
    redact_uri,
    unavailable,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


#: WriteConflict, Interrupted, InterruptedAtShutdown, InterruptedDueToReplStateChange,
#: NotWritablePrimary, ShutdownInProgress, PrimarySteppedDown, ...
_TRANSIENT_CODES = {112, 11600, 11601, 11602, 10107, 91, 189, 13435, 13436}


def transient(exc: pymongo.errors.OperationFailure) -> bool:
    """A server error worth retrying: MongoDB's retryable labels and codes, and
    under FerretDB/SQLite "database is locked" (concurrent writers) and a
    table that another connection created a moment before (two first writes to
    one collection after a restart race to create it; the retry finds it).

    >>> transient(pymongo.errors.OperationFailure("database is locked (5) (SQLITE_BUSY)", 1))
    True
    >>> transient(pymongo.errors.OperationFailure(
    ...     'table "lepton.blocks.w:2:5_d530d86b" already exists (1)', 1))
    True
    >>> transient(pymongo.errors.OperationFailure("disk I/O error (778)", 1))
    False
    """
    if exc.code in _TRANSIENT_CODES or exc.has_error_label("RetryableWriteError"):
        return True
    # a bulk write: retry when what failed is transient (parts already written,
    # code 11000, are replaced by insert_idempotent on the retry)
    errors = (getattr(exc, "details", None) or {}).get("writeErrors") or []
    messages = [str(e.get("errmsg", "")) for e in errors if e.get("code") != 11000]
    return all(_transient_message(m) for m in messages or [str(exc)])


def _transient_message(msg: str) -> bool:
    return "SQLITE_BUSY" in msg or msg.endswith("already exists (1)")


@dataclass(frozen=True)
class StoreSpec:
    """Connection settings shipped inside tasks (small, picklable).

    Its ``repr`` redacts the URI, so a task that fails on a worker never shows a
    password in a traceback or on the dashboard.

    >>> StoreSpec("mongodb://u:pw@h/", "lepton", 5.0)
    StoreSpec(uri='mongodb://u:***@h/', database='lepton', timeout=5.0)
    """

    uri: str
    database: str
    timeout: float

    @classmethod
    def from_config(
        cls, uri: str | None = None, database: str | None = None
    ) -> StoreSpec:
        """The store the configuration names: the URI from
        :func:`~lepton_dask.store.resolve_uri` (``uri``, ``LEPTON_MONGO_URI``,
        ``lepton.store.uri``, else a running or new embedded server), ``database``
        or ``lepton.store.database``, and ``lepton.store.timeout``.

        >>> StoreSpec.from_config("mongodb://db.example/", "features")
        StoreSpec(uri='mongodb://db.example/', database='features', timeout=10.0)
        """
        from lepton_dask.store.server import resolve_uri

        return cls(
            resolve_uri(uri),
            database or dask.config.get("lepton.store.database"),
            get_timedelta("lepton.store.timeout"),
        )

    def __repr__(self) -> str:
        return (
            f"StoreSpec(uri={redact_uri(self.uri)!r}, database={self.database!r}, "
            f"timeout={self.timeout!r})"
        )

    def db(self) -> pymongo.database.Database:
        """This process's database handle (shared connection pool)."""
        return get_client(self.uri, self.timeout)[self.database]

    def retry(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn``, retrying connection errors and transient server errors
        (:func:`transient`) with backoff for ``timeout`` s.

        A server that restarts within the timeout is invisible to the caller;
        one that stays away raises :class:`StoreUnavailableError` naming the
        redacted URI. ``fn`` must be idempotent (all store operations are).
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            try:
                return fn()
            except pymongo.errors.OperationFailure as exc:
                if exc.code in AUTH_CODES:
                    raise auth_failed(self.uri, exc, what) from None
                if not transient(exc) or time.monotonic() + delay > deadline:
                    raise
                logger.info("%s: transient server error (%s), retrying", what, exc.code)
            except CONNECTION_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    raise unavailable(self.uri, exc, self.timeout) from None
                logger.info(
                    "%s: server at %s unavailable (%s), retrying in %.2f s",
                    what,
                    redact_uri(self.uri),
                    type(exc).__name__,
                    delay,
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def insert_idempotent(
    coll: pymongo.collection.Collection, docs: Sequence[dict]
) -> None:
    """``insert_many`` that a retried task can repeat: documents whose ``_id``
    an earlier attempt already wrote are replaced instead of refused.

    Any other write error is raised (a ``BulkWriteError``).
    """
    try:
        coll.insert_many(docs, ordered=False)
    except pymongo.errors.BulkWriteError as e:
        errors = e.details.get("writeErrors", [])
        if not errors or any(err.get("code") != 11000 for err in errors):
            raise
        for err in errors:
            doc = docs[err["index"]]
            coll.replace_one({"_id": doc["_id"]}, doc, upsert=True)
