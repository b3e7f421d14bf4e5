"""Exceptions raised by the feature store."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the feature store's errors."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The MongoDB server could not be reached within the configured timeout.

    The message names the server's URI with any password redacted.
    """


class StoreAuthError(StoreError, PermissionError):
    """The server refused the credentials (or the user may not do this).

    The message names the server's URI with the password redacted.
    """


class StoreWriteError(StoreError):
    """The server refused a write (disk full, quota, read-only, ...).

    Nothing is published: the previous version stays the one readers see.
    """


class CorruptBlockError(StoreError):
    """A stored block failed verification (checksum, size, dtype or parts).

    Attributes name the array, version and block so the damage can be located.
    """

    def __init__(self, message: str, *, name: str, version: int, block: tuple):
        super().__init__(message)
        self.name = name
        self.version = version
        self.block = tuple(block)


class VersionGoneError(StoreError, KeyError):
    """A version being read was garbage-collected (or never completed).

    Also a ``KeyError``, as for a version that never existed.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CollectionChangedError(StoreError):
    """A row collection changed while it was being read.

    ``read_collection`` plans its chunks from the ``_id`` values present when it
    is called; a chunk whose documents no longer match the plan raises this
    rather than returning a silently different array.
    """


class ServerStartError(StoreError, RuntimeError):
    """The embedded MongoDB-compatible server could not be started."""
