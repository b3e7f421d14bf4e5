"""The command line: --help everywhere, mongo start/stop/status, up, demo."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import numpy as np
import psutil
import pytest

from lepton_dask.cli import build_parser
from lepton_dask.store import FeatureStore
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(240)

CLI = [sys.executable, "-m", "lepton_dask.cli"]


def _subcommands():
    parser = build_parser()
    sub = next(
        a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"
    )
    return sorted(sub.choices)


@pytest.mark.parametrize("command", [None, *_subcommands()])
def test_every_command_has_help(command):
    args = CLI + ([command] if command else []) + ["--help"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: lepton-dask" in out.stdout


def test_mongo_start_status_stop(tmp_path):
    env = dict(os.environ)
    d = str(tmp_path / "srv")
    run = lambda *a: subprocess.run(  # noqa: E731
        [*CLI, "mongo", *a, "--data-dir", d],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert run("status").returncode == 3
    started = run("start")
    assert started.returncode == 0, started.stderr
    uri = re.search(r"at (mongodb://\S+)", started.stdout).group(1)
    try:
        st = run("status")
        assert st.returncode == 0 and uri in st.stdout
        # the detached server outlives the command and serves a store
        FeatureStore(uri, "cli").put_array("a", np.ones(3))
        assert run("start").stdout.startswith("already running")
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0
    assert run("status").returncode == 3


def test_store_commands(store):
    store.put_array("feat", np.ones((4, 2)))
    base = [*CLI, "store"]
    opts = ["--uri", store.uri, "--database", store.database]
    out = subprocess.run(
        [*base, "list", *opts], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "feat" in out.stdout
    out = subprocess.run(
        [*base, "info", "feat", *opts], capture_output=True, text=True, timeout=60
    )
    assert '"shape"' in out.stdout
    out = subprocess.run(
        [*base, "info", "nope", *opts], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "no array 'nope'" in out.stderr
    out = subprocess.run(
        [*base, "delete", "feat", *opts], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and store.list() == []


def test_up_round_trip_and_clean_sigint(store):
    proc = subprocess.Popen(
        [
            *CLI,
            "up",
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--uri",
            store.uri,
            "--database",
            store.database,
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:

        def scheduler_address():
            line = proc.stdout.readline()
            lines.append(line)
            m = re.match(r"LEPTON_SCHEDULER=(\S+)", line)
            return m.group(1) if m else (proc.poll() is not None and "exited")

        addr = wait_for(scheduler_address, timeout=120)
        assert addr != "exited", "".join(lines)
        assert any("dashboard : http://127.0.0.1:" in line for line in lines)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2
        from distributed import Client

        with Client(addr, timeout=30) as c:
            assert len(c.scheduler_info()["workers"]) == 2
            import dask.array as da

            x = da.arange(1000.0, chunks=100)
            store.put_array("up", x, progress=False)
            np.testing.assert_array_equal(
                c.compute(store.get_array("up"), sync=True), np.arange(1000.0)
            )
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == 0
    wait_for(
        lambda: not any(ch.is_running() and ch.status() != "zombie" for ch in children),
        30,
    )


def test_up_refuses_non_loopback_without_flag():
    out = subprocess.run(
        [*CLI, "up", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "--allow-remote" in out.stderr


@pytest.mark.timeout(320)
def test_demo_end_to_end(store, tmp_path):
    png = tmp_path / "scaling.png"
    out = subprocess.run(
        [
            *CLI,
            "demo",
            "--rows",
            "40000",
            "--cols",
            "6",
            "--uri",
            store.uri,
            "--database",
            store.database,
            "--scaling-seconds",
            "10",
            "--scaling-png",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all match numpy" in out.stdout
    assert "40,000 x 6 float64" in out.stdout
    assert store.list() == ["demo.features", "demo.features.label"]
    for line in (
        "accuracy   : ours",
        "spend      : $",
        "utilization:",
        "/metrics",
        "/cost",
        "logreg",
        "scaling on real workers",
        "stock Adaptive : $",
        "SLO policy     : $",
        "deadlines met",
    ):
        assert line in out.stdout, line
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # workers and $/hour
    # the features read twice: the second time from the workers' block cache
    again = re.search(
        r"read again : .*MiB/s, [\d.,]+x the first read \(block cache\); saved "
        r"[\d.,]+ worker-seconds = \$[\d.]+; (\d+) of (\d+) blocks from the cache",
        out.stdout,
    )
    assert again, out.stdout
    hits, blocks = int(again.group(1)), int(again.group(2))
    assert blocks == 16 and hits >= 12  # (a block still being written is a miss)
