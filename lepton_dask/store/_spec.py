"""What a task needs to reach the store, and the retry loop around it."""

from __future__ import annotations

import hashlib
import logging
import os
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

    Its ``repr`` redacts the URIs, so a task that fails on a worker never
    shows a password in a traceback or on the dashboard.

    Where a task reaches the store (:attr:`address`): a worker's own
    ``LEPTON_MONGO_URI`` or ``lepton.store.uri`` wins over the URI in the
    graph, then ``worker_uri`` (the client's name for the store as the
    workers see it), then ``uri``. A worker's configuration is its own when
    it differs from what the client's was when the spec was made
    (``client_config``, a digest, never the URI itself); a worker of a local
    cluster, which inherited the client's configuration, uses the URI the
    client chose.

    >>> StoreSpec("mongodb://u:pw@h/", "lepton", 5.0)
    StoreSpec(uri='mongodb://u:***@h/', database='lepton', timeout=5.0)
    >>> StoreSpec("mongodb://u:pw@localhost/", "lepton", 5.0, worker_uri="mongodb://u:pw@mongo/")
    StoreSpec(uri='mongodb://u:***@localhost/', database='lepton', timeout=5.0, worker_uri='mongodb://u:***@mongo/')
    """

    uri: str
    database: str
    timeout: float
    worker_uri: str | None = None
    client_config: str | None = None

    @classmethod
    def from_config(
        cls,
        uri: str | None = None,
        database: str | None = None,
        worker_uri: str | None = None,
    ) -> StoreSpec:
        """The store the configuration names: the URI from
        :func:`~lepton_dask.store.resolve_uri` (``uri``, ``LEPTON_MONGO_URI``,
        ``lepton.store.uri``, else a running or new embedded server), ``database``
        or ``lepton.store.database``, and ``lepton.store.timeout``; tasks on
        workers use ``worker_uri`` when the workers configure no URI of their
        own.

        >>> StoreSpec.from_config("mongodb://db.example/", "features")
        StoreSpec(uri='mongodb://db.example/', database='features', timeout=10.0)
        """
        from lepton_dask.store.server import resolve_uri

        return cls(
            resolve_uri(uri),
            database or dask.config.get("lepton.store.database"),
            get_timedelta("lepton.store.timeout"),
            worker_uri=worker_uri or None,
            client_config=_digest(configured_uri()),
        )

    def __repr__(self) -> str:
        extra = (
            f", worker_uri={redact_uri(self.worker_uri)!r}" if self.worker_uri else ""
        )
        return (
            f"StoreSpec(uri={redact_uri(self.uri)!r}, database={self.database!r}, "
            f"timeout={self.timeout!r}{extra})"
        )

    @property
    def address(self) -> str:
        """The URI this process reaches the store at: :attr:`uri` outside a
        worker; in a task on a worker, the worker's own configured URI, else
        :attr:`worker_uri`, else :attr:`uri` (see the class).

        >>> StoreSpec("mongodb://db.example/", "lepton", 5.0).address
        'mongodb://db.example/'
        """
        if not _in_worker():
            return self.uri
        own = configured_uri()
        if own and _digest(own) != self.client_config:
            chosen = own
        else:
            chosen = self.worker_uri or self.uri
        if chosen != self.uri and (self.uri, chosen) not in _told:
            _told.add((self.uri, chosen))
            logger.info(
                "this worker reaches the store at %s (%s), not at %s (the client's)",
                redact_uri(chosen),
                "its own configuration" if chosen is own else "worker_uri",
                redact_uri(self.uri),
            )
        return chosen

    def db(self) -> pymongo.database.Database:
        """This process's database handle (shared connection pool), at
        :attr:`address`."""
        return get_client(self.address, self.timeout)[self.database]

    def retry(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn``, retrying connection errors and transient server errors
        (:func:`transient`) with backoff for ``timeout`` s.

        A server that restarts within the timeout is invisible to the caller;
        one that stays away raises :class:`StoreUnavailableError` naming the
        redacted URI. ``fn`` must be idempotent (all store operations are).
        """
        uri = self.address
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            try:
                return fn()
            except pymongo.errors.OperationFailure as exc:
                if exc.code in AUTH_CODES:
                    raise auth_failed(uri, exc, what) from None
                if not transient(exc) or time.monotonic() + delay > deadline:
                    raise
                logger.info("%s: transient server error (%s), retrying", what, exc.code)
            except CONNECTION_ERRORS as exc:
                if time.monotonic() + delay > deadline:
                    raise unavailable(uri, exc, self.timeout) from None
                logger.info(
                    "%s: server at %s unavailable (%s), retrying in %.2f s",
                    what,
                    redact_uri(uri),
                    type(exc).__name__,
                    delay,
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)


def configured_uri() -> str | None:
    """This process's own configured URI: ``LEPTON_MONGO_URI``, else
    ``lepton.store.uri`` (None when neither is set).

    >>> with dask.config.set({"lepton.store.uri": "mongodb://db.example/"}):
    ...     configured_uri() or ""
    'mongodb://db.example/'
    """
    return os.environ.get("LEPTON_MONGO_URI") or dask.config.get("lepton.store.uri")


def _digest(uri: str | None) -> str | None:
    """A URI's SHA-256, to compare configurations without shipping them."""
    return None if not uri else hashlib.sha256(uri.encode()).hexdigest()


def _in_worker() -> bool:
    """Whether this runs in a task on a Dask worker."""
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


#: (graph URI, URI used) pairs already logged by this process
_told: set[tuple[str, str]] = set()


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
