"""The commands the compose file and the manifests run, for real: ``dask
scheduler`` and ``dask worker`` with ``--preload lepton_dask.cost.preload``."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from lepton_dask.store.server import free_port
from tests.helpers import wait_for

BIN = Path(sys.executable).parent


def _get(url: str) -> str | None:
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None


@pytest.mark.timeout(180)
def test_scheduler_and_worker_preloads(mongo_uri, tmp_path):
    port, http, wport = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "LEPTON_MONGO_URI": mongo_uri,
        "DASK_LEPTON__STORE__DATABASE": "preload_test",
    }
    procs = []
    slog, wlog = open(tmp_path / "s.log", "wb"), open(tmp_path / "w.log", "wb")
    try:
        procs.append(
            subprocess.Popen(
                [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--dashboard-address", f"127.0.0.1:{http}",
                 "--preload", "lepton_dask.cost.preload"],
                env=env, stdout=subprocess.DEVNULL, stderr=slog,
            )
        )  # fmt: skip
        procs.append(
            subprocess.Popen(
                [BIN / "dask", "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                 "--host", "127.0.0.1", "--dashboard-address", f"127.0.0.1:{wport}",
                 "--preload", "lepton_dask.cost.preload"],
                env={**env, "LEPTON_INSTANCE_TYPE": "m6i.large", "LEPTON_POOL": "cpu"},
                stdout=subprocess.DEVNULL, stderr=wlog,
            )
        )  # fmt: skip
        base = f"http://127.0.0.1:{http}"
        metrics = wait_for(
            lambda: (
                (m := _get(f"{base}/metrics"))
                and 'lepton_workers{instance_type="m6i.large",pool="cpu",pricing="on-demand"} 1.0'
                in m
                and m
            ),
            timeout=120,
            interval=0.5,
        )
        assert "lepton_spend_usd_total" in metrics
        assert 'href="cost">Cost</a>' in (_get(f"{base}/status") or "")
        assert _get(f"{base}/cost") is not None
        # the worker's own /metrics, which Prometheus scrapes too
        assert "dask_worker_threads" in (
            _get(f"http://127.0.0.1:{wport}/metrics") or ""
        )
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        slog.close()
        wlog.close()
    assert "Traceback" not in (tmp_path / "s.log").read_text()
