"""The command line: --help everywhere, mongo start/stop/status, up, demo."""

from __future__ import annotations

import json
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


def test_up_round_trip_and_clean_sigint(store, tmp_path):
    scheduler_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen(
        [
            *CLI,
            "up",
            "--scheduler-file",
            str(scheduler_file),
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--uri",
            store.uri,
            "--database",
            store.database,
            "--nworkers",
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
            m = re.match(r"export LEPTON_SCHEDULER=(\S+)", line)
            return m.group(1) if m else (proc.poll() is not None and "exited")

        addr = wait_for(scheduler_address, timeout=120)
        assert addr != "exited", "".join(lines)
        assert any("dashboard : http://127.0.0.1:" in line for line in lines)
        # a line to paste: the store's own URI (it has no password to hide)
        assert proc.stdout.readline().strip() == f"export LEPTON_MONGO_URI={store.uri}"
        with open(scheduler_file) as f:
            assert json.load(f)["address"] == addr
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
    assert "it/s]" not in out.stderr  # no progress bar off a terminal
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


# -- Dask's conventions -------------------------------------------------------------
def test_version():
    from lepton_dask import __version__

    out = subprocess.run(
        [*CLI, "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == f"lepton-dask {__version__}"


def test_global_options_after_the_command_too():
    parser = build_parser()
    before = parser.parse_args(["-v", "store", "list"])
    after = parser.parse_args(["store", "list", "-vv"])
    assert before.verbose + before.verbose_after == 1
    assert after.verbose + after.verbose_after == 2


def test_errors_show_their_traceback_with_v(tmp_path):
    bad = [*CLI, "cost", "catalog", "--catalog", str(tmp_path / "none.yaml")]
    quiet = subprocess.run(bad, capture_output=True, text=True, timeout=60)
    loud = subprocess.run([*bad, "-v"], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == loud.returncode == 1
    assert "cannot read price catalog" in quiet.stderr
    assert "Traceback" not in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr


def test_help_shows_defaults_and_dask_names():
    out = subprocess.run(
        [*CLI, "up", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    text = " ".join(out.split())
    for option in ("--nworkers", "--nthreads", "--no-dashboard", "--scheduler-file"):
        assert option in text, option
    assert "local worker processes (default: 2)" in text
    assert "(default: None)" not in text


@pytest.mark.parametrize(
    ("argv", "dest", "seconds"),
    [
        (["store", "gc", "--grace", "10m"], "grace", 600.0),
        (["store", "gc", "--grace", "90"], "grace", 90.0),
        (["plan", "--workload", "w", "--deadline", "20m"], "deadline", 1200.0),
        (["demo", "--scaling-seconds", "1m"], "scaling_seconds", 60.0),
        (["experiment", "--oracle-seconds", "2m"], "oracle_seconds", 120.0),
        (["experiment", "--real-seconds", "40s"], "real_seconds", 40.0),
        (
            ["k8s-scaler", "--scheduler", "s", "--groups", "g", "--interval", "30s"],
            "interval",
            30.0,
        ),
        (
            ["deploy", "kubernetes", "check", "--scaler-deadline", "10m"],
            "scaler_deadline",
            600.0,
        ),
        (
            ["deploy", "kubernetes", "check", "--scaler-latency", "90s"],
            "scaler_latency",
            90.0,
        ),
    ],
)
def test_one_duration_parser(argv, dest, seconds):
    assert getattr(build_parser().parse_args(argv), dest) == seconds


def test_a_bad_duration_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["store", "gc", "--grace", "soon"])
    assert e.value.code == 2
    assert "must be a duration" in capsys.readouterr().err


def test_money_has_its_unit_and_old_names_warn(capsys):
    parser = build_parser()
    args = parser.parse_args(["demo", "--budget-usd-per-hour", "0.5"])
    assert args.budget_usd_per_hour == 0.5
    args = parser.parse_args(["plan", "--workload", "w", "--budget-usd", "3"])
    assert args.budget_usd == 3.0
    assert "deprecated" not in capsys.readouterr().err
    args = parser.parse_args(["demo", "--budget", "0.5", "--workers", "3"])
    assert (args.budget_usd_per_hour, args.nworkers) == (0.5, 3)
    err = capsys.readouterr().err
    assert "--budget is deprecated; use --budget-usd-per-hour" in err
    assert "--workers is deprecated; use --nworkers" in err


def test_config_show_redacts_secrets_and_checks_keys():
    env = {
        **os.environ,
        "LEPTON_MONGO_URI": "mongodb://alice:s3cret@db.example:27017/",
        "DASK_LEPTON__SCALING__DEADLINE": "10m",
    }
    out = subprocess.run(
        [*CLI, "config", "show"], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "s3cret" not in out.stdout + out.stderr
    assert "mongodb://alice:***@db.example:27017/" in out.stdout
    assert "deadline: 10m" in out.stdout
    typo = subprocess.run(
        [*CLI, "config", "show", "lepton.store.timeout"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DASK_LEPTON__STORE__TIMOUT": "5"},
    )
    assert typo.returncode == 0
    assert typo.stderr.count("'lepton.store.timout'") == 1
    assert "did you mean 'lepton.store.timeout'" in typo.stderr
    bad = subprocess.run(
        [*CLI, "config", "show"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DASK_LEPTON__STORE__ROWS_PER_CHUNK": "many"},
    )
    assert bad.returncode != 0
    assert "lepton.store.rows-per-chunk must be integer, got 'many'" in bad.stderr
