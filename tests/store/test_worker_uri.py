"""Workers reach the store at their own address: a worker's own
``LEPTON_MONGO_URI`` wins over the URI in the graph, else the client's
``worker_uri``; a worker that shares the client's configuration (a local
cluster) uses the URI the client chose.

The client reaches the embedded server through a TCP proxy on another
loopback port, which is closed once the graph is built: a read that still
succeeds was done at the workers' own address, not at the graph's."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator

import dask
import dask.array as da
import numpy as np
import pytest

from lepton_dask.store import FeatureStore
from lepton_dask.store._spec import StoreSpec
from lepton_dask.store._uri import close_clients
from lepton_dask.store.errors import StoreUnavailableError
from lepton_dask.store.server import free_port
from tests.helpers import nanny_cluster

pytestmark = pytest.mark.timeout(120)


class Proxy:
    """A TCP forwarder from a free loopback port to ``port``; :meth:`close`
    cuts every connection and refuses new ones."""

    def __init__(self, port: int):
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            far = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [near, far]
            for a, b in ((near, far), (far, near)):
                t = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self.threads:
            t.join(timeout=10)


@pytest.fixture
def proxy(mongo_server) -> Iterator[Proxy]:
    p = Proxy(int(mongo_server.uri.rsplit(":", 1)[1].split("/")[0]))
    try:
        yield p
    finally:
        p.close()
        close_clients()


def port_of(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1].split("/")[0])


@contextlib.contextmanager
def workers(env: dict[str, str]):
    """Two worker processes with ``env`` (and no block cache: every read
    goes to the server)."""
    env = {"DASK_LEPTON__STORE__CACHE__ENABLED": "False", **env}
    with (
        dask.config.set({"lepton.store.cache.enabled": False}),
        nanny_cluster(w1={"env": env}, w2={"env": env}) as (client, _),
    ):
        client.wait_for_workers(2, timeout=60)
        yield client


def worker_addresses(client) -> set[str]:
    """The URIs the workers' connection pools were opened for."""

    def pools() -> list[str]:
        from lepton_dask.store import _uri

        return [key[1] for key in _uri._clients]

    return {u for us in client.run(pools).values() for u in us}


def test_the_workers_own_uri_wins_over_the_graphs(mongo_server, proxy):
    port = port_of(mongo_server.uri)
    own = f"mongodb://localhost:{port}/"  # the same server, by another name
    through_proxy = f"mongodb://127.0.0.1:{proxy.port}/"
    x = np.arange(600.0).reshape(60, 10)
    with workers({"LEPTON_MONGO_URI": own}) as client:
        store = FeatureStore(through_proxy, f"wu_{uuid.uuid4().hex[:8]}")
        store.put_array("x", da.from_array(x, chunks=(20, 10)))  # by the workers
        y = store.get_array("x")
        proxy.close()  # the graph's address is gone now
        np.testing.assert_array_equal(y.compute(), x)
        used = worker_addresses(client)
        assert own in used and through_proxy not in used, used


def test_the_graphs_uri_is_not_used_when_the_worker_has_its_own(mongo_server):
    """Negative control: workers configured with an address where nothing
    listens fail to read, naming that address, although the graph's URI
    reaches the server."""
    dead = f"mongodb://127.0.0.1:{free_port()}/"
    x = np.arange(40.0).reshape(4, 10)
    with dask.config.set({"lepton.store.timeout": "2s"}):
        store = FeatureStore(mongo_server.uri, f"wu_{uuid.uuid4().hex[:8]}")
    store.put_array("x", x, chunks=(2, 10))  # from this process
    y = store.get_array("x")
    with workers({"LEPTON_MONGO_URI": dead}), pytest.raises(StoreUnavailableError) as e:
        y.compute()
    assert dead.rstrip("/") in str(e.value)
    assert f":{port_of(mongo_server.uri)}" not in str(e.value)


def test_worker_uri_names_the_store_for_workers_without_their_own(mongo_server, proxy):
    direct = mongo_server.uri
    through_proxy = f"mongodb://127.0.0.1:{proxy.port}/"
    x = np.arange(300.0).reshape(30, 10)
    with workers({}) as client:
        store = FeatureStore(
            through_proxy, f"wu_{uuid.uuid4().hex[:8]}", worker_uri=direct
        )
        store.put_array("x", da.from_array(x, chunks=(10, 10)))  # by the workers
        y = store.get_array("x")
        proxy.close()
        np.testing.assert_array_equal(y.compute(), x)
        assert through_proxy not in worker_addresses(client)


def test_a_worker_sharing_the_clients_configuration_uses_the_clients_choice(
    mongo_server, monkeypatch
):
    """A local cluster inherits the client's environment: its
    LEPTON_MONGO_URI is not the worker's own, and an explicit URI of the
    client's (another server, here the real one) is used."""
    dead = f"mongodb://127.0.0.1:{free_port()}/"
    monkeypatch.setenv("LEPTON_MONGO_URI", dead)  # the client's, inherited
    x = np.arange(40.0).reshape(4, 10)
    with workers({"LEPTON_MONGO_URI": dead}):
        store = FeatureStore(mongo_server.uri, f"wu_{uuid.uuid4().hex[:8]}")
        store.put_array("x", x, chunks=(2, 10))
        np.testing.assert_array_equal(store.get_array("x").compute(), x)


def test_worker_uris_are_redacted_and_never_in_keys(mongo_server):
    spec = StoreSpec(
        "mongodb://alice:s3cret@localhost:1/",
        "db",
        1.0,
        worker_uri="mongodb://alice:s3cret@mongo:27017/",
    )
    assert "s3cret" not in repr(spec)
    assert "alice:***@mongo:27017" in repr(spec)
    store = FeatureStore(
        mongo_server.uri,
        f"wu_{uuid.uuid4().hex[:8]}",
        worker_uri="mongodb://alice:s3cret@127.0.0.1:1/",
    )
    store.put_array("x", np.ones((4, 2)), chunks=(2, 2))
    keys = store.get_array("x").__dask_graph__().keys()
    assert not any("s3cret" in str(k) for k in keys)
    assert "s3cret" not in repr(store.spec)
