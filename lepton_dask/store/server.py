"""The embedded MongoDB-compatible server, and how a URI is chosen.

When no URI is configured (``lepton.store.uri`` or ``LEPTON_MONGO_URI``),
lepton-dask uses a local server over a real connection on a loopback port:

1. a server already running on the data directory (``lepton-dask mongo start``,
   or another process's embedded server), found through its state file;
2. otherwise it starts one for this process and stops it at exit: ``mongod``
   when it is on PATH, else FerretDB with its SQLite backend.

A data directory is served by at most one server: the server process holds an
exclusive ``flock`` on ``<dir>/server.lock`` for as long as it runs (the lock is
inherited by the child, so it is released exactly when the server exits).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Any
from urllib.parse import quote_plus

import dask.config
import pymongo
import pymongo.errors

from lepton_dask.config import get_timedelta
from lepton_dask.store._install import (  # noqa: F401  (install_ferretdb: re-exported for `lepton-dask mongo`)
    ferretdb_path,
    ferretdb_version,
    install_ferretdb,
)
from lepton_dask.store._uri import redact_uri
from lepton_dask.store.errors import ServerStartError

logger = logging.getLogger(__name__)

STATE_FILE = "server.json"
LOCK_FILE = "server.lock"


def default_data_dir() -> str:
    """Data directory of the embedded server (``lepton.store.data-dir``).

    >>> with dask.config.set({"lepton.store.data-dir": "/tmp/x"}):
    ...     default_data_dir()
    '/tmp/x'
    """
    configured = dask.config.get("lepton.store.data-dir")
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "lepton-dask")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_server_binary(kind: str | None = None) -> tuple[str, str]:
    """Pick the server program: ``(kind, path)`` with kind ``mongod``/``ferretdb``.

    ``lepton.store.server-binary`` wins; with ``lepton.store.server: auto``,
    ``mongod`` on PATH is preferred, then ``ferretdb`` on PATH, then the
    FerretDB that ``lepton-dask mongo install`` (or ``make``) built.

    >>> find_server_binary()[0] in ("mongod", "ferretdb")
    True
    """
    kind = kind or dask.config.get("lepton.store.server")
    explicit = dask.config.get("lepton.store.server-binary")
    if explicit:
        base = os.path.basename(explicit)
        found = "mongod" if base.startswith("mongod") else "ferretdb"
        if not os.access(explicit, os.X_OK):
            raise ServerStartError(
                f"lepton.store.server-binary {explicit!r} is not executable"
            )
        return found, explicit
    if kind in ("auto", "mongod"):
        path = shutil.which("mongod")
        if path:
            return "mongod", path
        if kind == "mongod":
            raise ServerStartError(
                "lepton.store.server is 'mongod' but no mongod is on PATH"
            )
    path = shutil.which("ferretdb")
    if path:
        return "ferretdb", path
    cached = ferretdb_path()
    if os.access(cached, os.X_OK):
        return "ferretdb", cached
    raise ServerStartError(
        "no MongoDB-compatible server found: run `lepton-dask mongo install` (builds "
        f"FerretDB {ferretdb_version()} with Go), put mongod on PATH, or set "
        "lepton.store.uri / LEPTON_MONGO_URI"
    )


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child
    # Linux: the server dies with the process that started it, even on SIGKILL.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_held(path: str) -> bool:
    """Whether some process holds the exclusive lock on ``path``."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def ping(uri: str, timeout: float = 2.0) -> bool:
    """Whether a server answers ``ping`` at ``uri`` within ``timeout`` seconds.

    >>> ping("mongodb://127.0.0.1:1/", timeout=0.2)
    False
    """
    ms = max(1, int(timeout * 1000))
    client = pymongo.MongoClient(
        uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, directConnection=True
    )
    try:
        client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False
    finally:
        client.close()


class EmbeddedServer:
    """A MongoDB-compatible server on a loopback port, over a data directory.

    Parameters
    ----------
    data_dir : str, optional
        Where the server keeps its data; default ``lepton.store.data-dir``.
    kind, binary : str, optional
        Force ``mongod`` or ``ferretdb`` and/or a binary; default
        :func:`find_server_binary`.
    port : int
        0 picks a free port.
    host : str
        Interface to listen on (loopback by default).
    detach : bool
        Keep running after this process exits (``lepton-dask mongo start``);
        otherwise the server is stopped at exit and dies with this process.
    extra_args : sequence of str
        More command-line arguments for the server (e.g. FerretDB's
        ``--setup-username``).

    Examples
    --------
    >>> import tempfile
    >>> with EmbeddedServer(data_dir=tempfile.mkdtemp()) as server:
    ...     ping(server.uri)
    True
    """

    def __init__(
        self,
        data_dir: str | None = None,
        *,
        kind: str | None = None,
        binary: str | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        detach: bool = False,
        extra_args: tuple[str, ...] | list[str] = (),
        start_timeout: float | None = None,
        auth: tuple[str, str] | None = None,
        file_size_limit: int | None = None,
    ):
        self.data_dir = os.path.abspath(data_dir or default_data_dir())
        if binary:
            self.kind = kind or (
                "mongod" if "mongod" in os.path.basename(binary) else "ferretdb"
            )
            self.binary = binary
        else:
            self.kind, self.binary = find_server_binary(kind)
        self.host = host
        self.port = port
        self.detach = detach
        self.extra_args = list(extra_args)
        self.start_timeout = (
            start_timeout
            if start_timeout is not None
            else get_timedelta("lepton.store.start-timeout")
        )
        self.proc: subprocess.Popen | None = None
        self.uri: str | None = None
        if auth is not None and self.kind != "ferretdb":
            raise ValueError(
                "auth= sets up a SCRAM user on the embedded FerretDB; for mongod, "
                "create the user yourself and start it with --auth in extra_args"
            )
        self.auth = auth
        # fault injection: the server's files may not grow past this many bytes
        # (RLIMIT_FSIZE), so writes fail as they would on a full disk
        self.file_size_limit = file_size_limit

    # -- lifecycle ---------------------------------------------------------------
    def _command(self, port: int) -> list[str]:
        if self.kind == "mongod":
            dbpath = os.path.join(self.data_dir, "mongod")
            os.makedirs(dbpath, exist_ok=True)
            return [
                self.binary,
                "--dbpath",
                dbpath,
                "--port",
                str(port),
                "--bind_ip",
                self.host,
                "--quiet",
                *self.extra_args,
            ]
        dbpath = os.path.join(self.data_dir, "ferretdb")
        os.makedirs(dbpath, exist_ok=True)
        return [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{dbpath}/",
            f"--listen-addr={self.host}:{port}",
            "--debug-addr=-",
            "--telemetry=disable",
            f"--state-dir={dbpath}",
            "--log-level=warn",
            *(
                [
                    "--test-enable-new-auth",
                    "--setup-database=admin",
                    f"--setup-username={self.auth[0]}",
                ]
                if self.auth
                else []
            ),
            *self.extra_args,
        ]

    def start(self) -> EmbeddedServer:
        """Start the server and wait until it answers ``ping``.

        Raises :class:`ServerStartError` (with the end of the server's log)
        when it exits or does not answer within ``start_timeout``, and when
        another server already serves this data directory.
        """
        os.makedirs(self.data_dir, exist_ok=True)
        lock_path = os.path.join(self.data_dir, LOCK_FILE)
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ServerStartError(
                    f"another server already serves {self.data_dir} "
                    f"(see {os.path.join(self.data_dir, STATE_FILE)})"
                ) from None
            last_error = None
            for _attempt in range(3):
                port = self.port or free_port(self.host)
                try:
                    self._spawn(port, lock_fd)
                    break
                except ServerStartError as e:  # port taken between probe and bind
                    last_error = e
                    if self.port:
                        raise
            else:
                raise last_error  # type: ignore[misc]
        finally:
            os.close(lock_fd)  # the child holds its own copy of the lock
        self._write_state()
        if not self.detach:
            _register_for_exit(self)
        logger.info(
            "Started %s (pid %d) at %s, data in %s",
            self.kind,
            self.proc.pid,
            redact_uri(self.uri),
            self.data_dir,
        )
        return self

    def _spawn(self, port: int, lock_fd: int) -> None:
        log_path = os.path.join(self.data_dir, f"{self.kind}.log")
        log = open(log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self._command(port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(lock_fd,),
                # the password goes by environment, never on the command line
                env=(
                    {**os.environ, "FERRETDB_SETUP_PASSWORD": self.auth[1]}
                    if self.auth
                    else None
                ),
                start_new_session=self.detach,
                preexec_fn=self._preexec,
            )
        finally:
            log.close()
        uri = f"mongodb://{self.host}:{port}/"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.kind} exited with code {self.proc.returncode} at start; "
                    f"last log lines:\n{_tail(log_path)}"
                )
            if ping(uri, timeout=0.5):
                self.port = port
                self.uri = uri
                if self.auth:
                    user, password = (quote_plus(v) for v in self.auth)
                    self.uri = f"mongodb://{user}:{password}@{self.host}:{port}/?authSource=admin"
                return
            time.sleep(0.05)
        self._terminate()
        raise ServerStartError(
            f"{self.kind} did not answer ping at {uri} within "
            f"{self.start_timeout:g} s; last log lines:\n{_tail(log_path)}"
        )

    def _preexec(self) -> None:
        if not self.detach:
            _set_pdeathsig()
        if self.file_size_limit is not None:
            import resource

            lim = int(self.file_size_limit)
            resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))

    def _write_state(self) -> None:
        state = {
            "pid": self.proc.pid,
            # never the password: clients of an auth server bring their own
            "uri": redact_uri(self.uri) if self.auth else self.uri,
            "auth": bool(self.auth),
            "kind": self.kind,
            "binary": self.binary,
            "data_dir": self.data_dir,
            "started": time.time(),
        }
        path = os.path.join(self.data_dir, STATE_FILE)
        tmp = path + f".tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, path)

    def _terminate(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        self._terminate(timeout)
        with contextlib.suppress(FileNotFoundError):
            state = read_state(self.data_dir)
            if state and self.proc is not None and state.get("pid") == self.proc.pid:
                os.remove(os.path.join(self.data_dir, STATE_FILE))
        _unregister(self)

    def kill(self) -> None:
        """Kill the server with SIGKILL (fault-injection tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> EmbeddedServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedServer {self.kind} {redact_uri(self.uri)} {state}>"


def _tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


_owned: list[EmbeddedServer] = []
_owned_lock = threading.Lock()


def _register_for_exit(server: EmbeddedServer) -> None:
    with _owned_lock:
        if not _owned:
            atexit.register(_stop_owned)
        _owned.append(server)


def _unregister(server: EmbeddedServer) -> None:
    with _owned_lock:
        if server in _owned:
            _owned.remove(server)


def _stop_owned() -> None:
    for server in list(_owned):
        with contextlib.suppress(Exception):
            server.stop()


def read_state(data_dir: str | None = None) -> dict[str, Any] | None:
    """State of the server running on ``data_dir``, or None if none runs there.

    >>> read_state("/nonexistent") is None
    True
    """
    data_dir = os.path.abspath(data_dir or default_data_dir())
    path = os.path.join(data_dir, STATE_FILE)
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if not _pid_alive(int(state.get("pid", -1))) or not _lock_held(
        os.path.join(data_dir, LOCK_FILE)
    ):
        return None
    return state


def stop_server(data_dir: str | None = None, timeout: float = 10.0) -> bool:
    """Stop the server running on ``data_dir`` (from any process).

    Returns whether a server was running.
    """
    data_dir = os.path.abspath(data_dir or default_data_dir())
    state = read_state(data_dir)
    if state is None:
        return False
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(data_dir, STATE_FILE))
    return True


_default: dict[str, Any] = {}
_default_lock = threading.Lock()


def resolve_uri(uri: str | None = None) -> str:
    """The MongoDB URI to use: explicit, configured, running, or newly embedded.

    Order: the ``uri`` argument, ``LEPTON_MONGO_URI``, ``lepton.store.uri``, a
    server already running on the default data directory, and finally a new
    embedded server owned by this process.

    >>> resolve_uri("mongodb://db.example:27017/")
    'mongodb://db.example:27017/'
    """
    if uri:
        return uri
    env = os.environ.get("LEPTON_MONGO_URI")
    if env:
        return env
    configured = dask.config.get("lepton.store.uri")
    if configured:
        return configured
    data_dir = default_data_dir()
    with _default_lock:
        cached = _default.get(data_dir)
        if cached is not None and (
            not isinstance(cached, EmbeddedServer) or cached.running
        ):
            return cached.uri if isinstance(cached, EmbeddedServer) else cached
        state = read_state(data_dir)
        if state is not None:
            _default[data_dir] = state["uri"]
            return state["uri"]
        try:
            server = EmbeddedServer(data_dir).start()
        except ServerStartError:
            state = read_state(data_dir)  # lost a race with another process
            if state is None:
                raise
            _default[data_dir] = state["uri"]
            return state["uri"]
        _default[data_dir] = server
        logger.info(
            "started an embedded %s at %s (data in %s)",
            server.kind,
            redact_uri(server.uri),
            server.data_dir,
        )
        return server.uri
