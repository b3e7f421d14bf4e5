"""Connection handling: URI redaction and one cached MongoClient per process.

Credentials never leave this module in clear text: every URI that reaches a log
message, an exception or a metric goes through :func:`redact_uri` first.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import pymongo
import pymongo.errors

from lepton_dask.store.errors import StoreAuthError, StoreUnavailableError

logger = logging.getLogger(__name__)

_SECRET_PARAMS = re.compile(
    r"(password|secret|token|key|credential)", flags=re.IGNORECASE
)
_REDACTED = "***"


def redact_uri(uri: str | None) -> str:
    """Return ``uri`` with its password and secret query parameters masked.

    Parameters
    ----------
    uri : str or None
        A MongoDB connection string (``mongodb://`` or ``mongodb+srv://``).

    Returns
    -------
    str
        The same URI with the password (and any query parameter whose name
        mentions a password, secret, token, key or credential) replaced by
        ``***``. Hosts, user name and other options are kept so the message
        still says where we tried to connect.

    Examples
    --------
    >>> redact_uri("mongodb://alice:s3cret@db.example:27017/?authSource=admin")
    'mongodb://alice:***@db.example:27017/?authSource=admin'
    >>> redact_uri("mongodb://h/?tlsCertificateKeyFilePassword=pw")
    'mongodb://h/?tlsCertificateKeyFilePassword=***'
    """
    if uri is None:
        return "<none>"
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{_REDACTED}@{hosts}" if ":" in userinfo else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{k}={_REDACTED if _SECRET_PARAMS.search(k) else quote(v, safe='/:,')}"
            for k, v in pairs
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_clients: dict[tuple[int, str, float], pymongo.MongoClient] = {}
_lock = threading.Lock()


def get_client(uri: str, timeout: float) -> pymongo.MongoClient:
    """Return this process's shared :class:`pymongo.MongoClient` for ``uri``.

    One client per (process, URI) pool of connections: tasks on a worker share
    it, and a forked child gets its own (MongoClient is not fork-safe).

    Parameters
    ----------
    uri : str
        MongoDB connection string; authentication and TLS options pass through.
    timeout : float
        Seconds to wait for a server before an operation fails.

    Examples
    --------
    >>> c = get_client("mongodb://127.0.0.1:1/", timeout=0.1)
    >>> c is get_client("mongodb://127.0.0.1:1/", timeout=0.1)
    True
    """
    key = (os.getpid(), uri, timeout)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            ms = max(1, int(timeout * 1000))
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                try:
                    client = pymongo.MongoClient(
                        uri,
                        serverSelectionTimeoutMS=ms,
                        connectTimeoutMS=ms,
                        appname="lepton-dask",
                        connect=False,
                    )
                except (pymongo.errors.ConfigurationError, ValueError, TypeError) as e:
                    raise ValueError(
                        f"invalid MongoDB URI {redact_uri(uri)!r}: "
                        f"{str(e).replace(uri, redact_uri(uri))}"
                    ) from None
            # pymongo drops an option it cannot parse with a warning (tls=maybe
            # would silently mean no TLS): refuse the URI instead
            bad = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
            if bad:
                client.close()
                raise ValueError(
                    f"invalid MongoDB URI {redact_uri(uri)!r}: {'; '.join(bad)}"
                )
            _clients[key] = client
    return client


def close_clients(timeout: float = 1.0) -> None:
    """Close every client this process opened (used at shutdown and in tests).

    ``close()`` first ends the client's sessions on the server, which waits for
    server selection; a server that is gone would hold each close for the
    whole selection timeout, so the wait is bounded by ``timeout``.
    """
    with _lock:
        for key, client in list(_clients.items()):
            if key[0] == os.getpid():
                with pymongo.timeout(timeout):
                    client.close()
            del _clients[key]


def unavailable(uri: str, exc: BaseException, timeout: float) -> StoreUnavailableError:
    """Build the error raised when the server at ``uri`` cannot be reached.

    >>> e = unavailable("mongodb://u:pw@h:1/", OSError("refused"), 2.0)
    >>> "pw" in str(e), "u:***@h:1" in str(e)
    (False, True)
    """
    reason = str(exc)
    # pymongo's messages name hosts, never passwords, but a URI can hide in a
    # reason (e.g. DNS errors for mongodb+srv); scrub anything URI-shaped.
    reason = re.sub(r"mongodb(\+srv)?://\S+", lambda m: redact_uri(m.group(0)), reason)
    if len(reason) > 300:
        reason = reason[:300] + "..."
    return StoreUnavailableError(
        f"MongoDB server at {redact_uri(uri)} is unreachable "
        f"(gave up after {timeout:g} s): {reason}"
    )


#: AuthenticationFailed, Unauthorized
AUTH_CODES = (18, 13)


def auth_failed(uri: str, exc: BaseException, what: str) -> StoreAuthError:
    """The error raised when the server refuses the credentials.

    >>> e = auth_failed("mongodb://u:pw@h:1/?authSource=admin", OSError("x"), "listing")
    >>> "pw" in str(e), "u:***@h:1" in str(e)
    (False, True)
    """
    code = getattr(exc, "code", None)
    if code == 13:
        reason = "the user is not allowed to do this (or no credentials were given)"
    else:
        reason = "authentication failed: check the user name, password and authSource"
    return StoreAuthError(
        f"{what}: MongoDB server at {redact_uri(uri)} refused access: {reason}"
    )


CONNECTION_ERRORS = (
    pymongo.errors.ServerSelectionTimeoutError,
    pymongo.errors.AutoReconnect,
    pymongo.errors.NetworkTimeout,
)
