"""Shared fixtures (tests and doctests): one real MongoDB-compatible server per
session, real clusters.

The server is the embedded one (FerretDB/SQLite here, mongod where installed)
on a free loopback port with a temporary data directory; tests talk to it
over a real connection. Each test gets its own database.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import dask
import pytest
from hypothesis import settings as _hsettings

import lepton_dask  # noqa: F401  (config defaults)
from lepton_dask.store import EmbeddedServer, FeatureStore
from lepton_dask.store._uri import close_clients

# CI runs on a clean clone every time: derandomized examples make a failure
# reproducible (the same examples on every run); HYPOTHESIS_PROFILE=explore
# searches afresh.
_hsettings.register_profile("ci", derandomize=True, deadline=None)
_hsettings.register_profile("explore", deadline=None)
_hsettings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(data_dir=str(tmp_path_factory.mktemp("mongo"))).start()
    yield server
    close_clients()
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _isolated_config(tmp_path_factory) -> Iterator[None]:
    """Never touch the user's data directory: default data-dir is a temp dir."""
    data = str(tmp_path_factory.mktemp("lepton-data"))
    blocks = str(tmp_path_factory.mktemp("lepton-blocks"))
    os.environ.pop("LEPTON_MONGO_URI", None)
    # the block cache too (and in the CLI and worker processes tests start)
    os.environ["DASK_LEPTON__STORE__CACHE__DIRECTORY"] = blocks
    with dask.config.set(
        {"lepton.store.data-dir": data, "lepton.store.cache.directory": blocks}
    ):
        yield
    # a test that left lepton.store.uri unset got a default server on ``data``
    # (from this process, a worker or a CLI child): stop it with the session,
    # not at interpreter exit
    from lepton_dask.store.server import stop_server

    close_clients()
    stop_server(data)


@pytest.fixture(autouse=True)
def _doctest_namespace(request, doctest_namespace):
    """Doctests run against the real server: ``store`` is a fresh database."""
    from _pytest.doctest import DoctestItem

    if not isinstance(request.node, DoctestItem):
        yield
        return
    import numpy as np

    server = request.getfixturevalue("mongo_server")
    doctest_namespace["np"] = np
    with dask.config.set({"lepton.store.uri": server.uri}):
        doctest_namespace["store"] = FeatureStore(
            server.uri, database=f"doc_{uuid.uuid4().hex[:10]}"
        )
        yield


@pytest.fixture
def mongo_uri(mongo_server) -> Iterator[str]:
    with dask.config.set({"lepton.store.uri": mongo_server.uri}):
        yield mongo_server.uri


@pytest.fixture
def store(mongo_uri) -> FeatureStore:
    return FeatureStore(mongo_uri, database=f"t_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def cluster():
    """A real LocalCluster: 2 worker processes x 1 thread, shared by the session."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        host="127.0.0.1",
    ) as c:
        yield c


@pytest.fixture
def client(cluster):
    from distributed import Client

    with Client(cluster) as c:
        yield c


# -- no process outlives the suite -------------------------------------------------
_SESSION_START = time.time()
# every process the tests start carries this session's mark (tests.helpers
# ends only those: a second session, a build or a benchmark beside it is safe)
os.environ["LEPTON_TEST_SESSION"] = f"{os.getpid()}-{_SESSION_START}"


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a process that a test started (a worker, a server, a
    daemon, a browser) is still alive once every fixture has been torn down;
    name each, then end it so that it does not outlive the run either."""
    import psutil

    from tests.helpers import kill_started_since, started_since

    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    left = started_since(_SESSION_START)
    if left:
        time.sleep(3)  # a process told to stop may take a moment
        left = [p for p in left if p.is_running()]
    if not left:
        return
    lines = []
    for p in left:
        try:
            lines.append(f"  pid {p.pid}: {' '.join(p.cmdline())[:200]}")
        except psutil.Error:  # gone meanwhile
            continue
    if not lines:
        return
    kill_started_since(_SESSION_START)
    session.config.pluginmanager.get_plugin("terminalreporter").write_line(
        "processes started by the tests were still running at the end:\n"
        + "\n".join(lines),
        red=True,
    )
    session.exitstatus = 1
