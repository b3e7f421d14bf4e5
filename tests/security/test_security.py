"""Security: SCRAM authentication and TLS pass through to the server, and a
planted password never shows in logs, errors, metrics, the dashboard, the
service's output, experiment outputs or the server's state file."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dask
import numpy as np
import pytest
from distributed import Client

from lepton_dask.cost import CostMonitor
from lepton_dask.cost.ledger import Ledger
from lepton_dask.store import (
    EmbeddedServer,
    FeatureStore,
    StoreAuthError,
    StoreUnavailableError,
)
from lepton_dask.store._uri import close_clients
from lepton_dask.store.server import free_port
from tests.helpers import cluster_with

PLANTED = "Pl4nted-s3cret-9f2c"
CLI = [sys.executable, "-m", "lepton_dask.cli"]


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    srv = EmbeddedServer(
        str(tmp_path_factory.mktemp("auth")), auth=("alice", PLANTED)
    ).start()
    yield srv
    close_clients()
    srv.stop()


def test_scram_credentials_pass_through(auth_server):
    assert (
        f"alice:{PLANTED}@" in auth_server.uri and "authSource=admin" in auth_server.uri
    )
    store = FeatureStore(auth_server.uri, "sec")
    x = np.arange(60.0).reshape(20, 3)
    store.put_array("a", x, chunks=(5, 3))
    np.testing.assert_array_equal(store.get_array("a").compute(scheduler="sync"), x)


def test_wrong_password_fails_clearly_and_redacted(auth_server):
    wrong = auth_server.uri.replace(PLANTED, "not-the-password")
    with pytest.raises(StoreAuthError) as e:
        FeatureStore(wrong, "sec").list()
    msg = str(e.value)
    assert "authentication failed" in msg and "alice:***@127.0.0.1" in msg
    assert "not-the-password" not in msg and PLANTED not in msg
    anonymous = f"mongodb://127.0.0.1:{auth_server.port}/"
    with pytest.raises(StoreAuthError, match=r"not allowed|no credentials"):
        FeatureStore(anonymous, "sec").put_array("b", np.ones(3))


def _certs(d: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1, made with openssl."""

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=lepton test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")  # fmt: skip
    return {
        k: str(d / f)
        for k, f in (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"))
    }


def test_tls_options_pass_through(tmp_path):
    certs = _certs(tmp_path)
    tls_port = free_port()
    srv = EmbeddedServer(
        str(tmp_path / "data"),
        extra_args=[
            f"--listen-tls=127.0.0.1:{tls_port}",
            f"--listen-tls-cert-file={certs['cert']}",
            f"--listen-tls-key-file={certs['key']}",
        ],
    ).start()
    try:
        uri = f"mongodb://127.0.0.1:{tls_port}/?tls=true&tlsCAFile={certs['ca']}"
        store = FeatureStore(uri, "tls")
        store.put_array("t", np.arange(10.0))
        np.testing.assert_array_equal(
            store.get_array("t").compute(scheduler="sync"), np.arange(10.0)
        )
        # without the CA the server's certificate is not trusted: a clear error
        with dask.config.set({"lepton.store.timeout": "2s"}):
            with pytest.raises(StoreUnavailableError, match="unreachable"):
                FeatureStore(f"mongodb://127.0.0.1:{tls_port}/?tls=true", "tls").list()
    finally:
        close_clients()
        srv.stop()


def _scan(label: str, text: str, found: dict[str, str]) -> None:
    if PLANTED in text:
        i = text.index(PLANTED)
        found[label] = text[max(0, i - 80) : i + 40]


@pytest.mark.timeout(240)
def test_planted_password_appears_nowhere(auth_server, caplog, tmp_path):
    found: dict[str, str] = {}
    caplog.set_level(logging.DEBUG)
    uri = auth_server.uri
    store = FeatureStore(uri, "leak")
    texts: list[tuple[str, str]] = [("repr(store)", repr(store))]
    monitor = CostMonitor(ledger=Ledger(store.spec), budget_usd_per_hour=1.0)
    with cluster_with(monitor) as cluster, Client(cluster) as client:
        x = np.arange(4000.0).reshape(1000, 4)
        store.put_array("f", x, chunks=(250, 4))
        y = store.get_array("f")
        assert float(y.sum().compute()) == float(x.sum())
        # errors: a missing array, a task that fails on a worker holding the spec
        for bad in (lambda: store.get_array("missing"), lambda: store.info("nope")):
            with pytest.raises(KeyError) as e:
                bad()
            texts.append(("KeyError", str(e.value)))
        wrong = FeatureStore(uri.replace(PLANTED, "x" + PLANTED[::-1]), "leak")
        with pytest.raises(StoreAuthError) as e:
            wrong.list()
        texts.append(("StoreAuthError", str(e.value) + repr(e.value.__cause__)))
        from lepton_dask.store.layout import blocks_collection

        for c in store.db.list_collection_names():  # lose its blocks
            if c.startswith(blocks_collection("f", 1, None)):
                store.db.drop_collection(c)
        # (the blocks are in the hosts' block cache: read past it)
        with (
            dask.config.set({"lepton.store.cache.enabled": False}),
            pytest.raises(Exception) as e,
        ):
            store.get_array("f").compute()
        import traceback

        texts.append(("task error", "".join(traceback.format_exception(e.value))))
        time.sleep(1.5)  # a ledger flush, a metrics sample
        base = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"
        for page in ("/metrics", "/cost", "/status", "/info/main/workers.html"):
            try:
                texts.append(
                    (
                        page,
                        urllib.request.urlopen(base + page, timeout=30).read().decode(),
                    )
                )
            except OSError as err:  # a page that does not exist is not a leak
                texts.append((page, str(err)))
        # what the dashboard's task views show: task keys, exceptions, tracebacks
        texts.append(("scheduler task state", repr(cluster.scheduler.tasks)))
        texts.append(("events", repr(client.get_events())))
        texts.append(("worker logs", repr(client.get_worker_logs())))
        texts.append(("scheduler logs", repr(client.get_scheduler_logs())))
    texts.append(("ledger", repr(list(store.db["lepton.cost.ledger"].find()))))
    texts.append(("python logs", caplog.text))
    data_dir = Path(auth_server.data_dir)
    for f in data_dir.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".log"):
            texts.append((str(f), f.read_text(errors="replace")))
    from lepton_dask.store.cache import CacheSettings, flush

    flush()
    blocks = Path(CacheSettings.from_config().directory)  # keys, index, blocks
    cached = [f for f in blocks.rglob("*") if f.is_file()]
    assert cached, "the reads above were cached"
    for f in cached:
        texts.append((str(f), f.read_bytes().decode("latin-1")))

    # `lepton-dask up` with the credentials, and an experiment run beside it
    env = {**os.environ, "LEPTON_MONGO_URI": uri}
    proc = subprocess.Popen(
        [*CLI, "-v", "up", "--nworkers", "1", "--port", "0", "--dashboard-port", "0",
         "--database", "leak_up"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    out = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if line.startswith("export LEPTON_SCHEDULER="):
                break
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=60)
        out.append(rest)
    up_text = "".join(out)
    assert "LEPTON_SCHEDULER=" in up_text, up_text[-2000:]
    assert "alice:***@" in up_text
    texts.append(("lepton-dask up", up_text))
    exp = subprocess.run(
        [*CLI, "experiment", "--traces", "burst-reduce", "--out", str(tmp_path / "exp")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert exp.returncode == 0, exp.stderr
    texts.append(("experiment output", exp.stdout + exp.stderr))
    for f in (tmp_path / "exp").iterdir():
        texts.append((str(f), f.read_bytes().decode("latin-1")))

    seen = dict(texts)
    assert "lepton_spend_usd_total" in seen["/metrics"]
    assert "corrupt" in seen["task error"] or "garbage-collected" in seen["task error"]
    assert "alice:***@" in seen["StoreAuthError"]
    for label, text in texts:
        _scan(label, text, found)
    assert not found, f"the password leaked into: {found}"
    # and the redacted form is what shows where a URI is shown
    assert any(re.search(r"alice:\*\*\*@127\.0\.0\.1", t) for _, t in texts)


@pytest.mark.timeout(120)
def test_cluster_uses_dasks_tls_configuration(tmp_path):
    """`lepton-dask up --allow-remote` relies on distributed.comm.tls.*: with
    require-encryption the pools' scheduler and workers speak tls:// only."""
    from distributed.security import Security

    from lepton_dask.scaling import LocalPoolCluster, PoolSpec

    certs = _certs(tmp_path)
    # one certificate for every role (a real deployment has one per role)
    both = {"cert": certs["cert"], "key": certs["key"]}
    cfg = {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": certs["ca"],
        "distributed.comm.tls.scheduler": both,
        "distributed.comm.tls.worker": both,
        "distributed.comm.tls.client": both,
    }
    with dask.config.set(cfg):
        with (
            LocalPoolCluster(
                [PoolSpec("cpu", max_workers=1)], minimum={"cpu": 1}, processes=False
            ) as cluster,
            Client(cluster, security=Security()) as client,
        ):
            assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
            assert client.submit(lambda v: v + 1, 1).result() == 2
            # a client speaking plain TCP to the TLS port gets nowhere
            plain = cluster.scheduler_address.replace("tls://", "tcp://")
            with dask.config.set({"distributed.comm.require-encryption": False}):
                with pytest.raises((OSError, TimeoutError)):
                    Client(
                        plain, timeout="3s", security=Security(require_encryption=False)
                    )
