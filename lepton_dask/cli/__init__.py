""" "``lepton-dask`` command line.

>>> build_parser().prog
'lepton-dask'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

import dask.config

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "build_parser",
    "cmd_config",
    "cmd_cost",
    "cmd_dashboards",
    "cmd_demo",
    "cmd_deploy",
    "cmd_experiment",
    "cmd_k8s_scaler",
    "cmd_mongo",
    "cmd_plan",
    "cmd_store",
    "cmd_up",
    "main",
]


# -- mongo -----------------------------------------------------------------------------
def cmd_mongo(args: argparse.Namespace) -> int:
    from lepton_dask.store.server import (
        EmbeddedServer,
        default_data_dir,
        install_ferretdb,
        read_state,
        stop_server,
    )

    data_dir = args.data_dir or default_data_dir()
    if args.action == "install":
        print(install_ferretdb(force=args.force, echo=True))
        return 0
    if args.action == "status":
        state = read_state(data_dir)
        if state is None:
            print(f"no server running on {data_dir}")
            return 3
        print(
            json.dumps(state, indent=2)
            if args.json
            else (
                f"{state['kind']} (pid {state['pid']}) at {state['uri']}, "
                f"data in {state['data_dir']}"
            )
        )
        return 0
    if args.action == "stop":
        if stop_server(data_dir):
            print(f"stopped the server on {data_dir}")
            return 0
        print(f"no server running on {data_dir}")
        return 3
    # start
    state = read_state(data_dir)
    if state is not None:
        print(f"already running: {state['uri']} (pid {state['pid']})")
        return 0
    server = EmbeddedServer(data_dir, port=args.port, detach=True).start()
    print(f"started {server.kind} (pid {server.proc.pid}) at {server.uri}")
    print(f"data in {server.data_dir}; stop it with `lepton-dask mongo stop`")
    return 0


# -- store -----------------------------------------------------------------------------
def cmd_store(args: argparse.Namespace) -> int:
    from lepton_dask.store import FeatureStore

    if args.action == "cache":
        return _store_cache(args)
    store = FeatureStore(args.uri, args.database)
    if args.action == "list":
        for name in store.list():
            info = store.info(name)
            print(
                f"{name:<30} v{info['version']:<4} {info['shape']!s:<18} "
                f"{info['dtype']!s:<8} {info['nbytes'] / 2**20:10.1f} MiB"
            )
        return 0
    if args.action == "info":
        info = store.info(args.name)
        info["chunks"] = [
            list(c) if len(c) <= 8 else f"{len(c)} chunks" for c in info["chunks"]
        ]
        print(json.dumps(info, indent=2, default=str))
        return 0
    if args.action == "delete":
        store.delete(args.name)
        print(f"deleted {args.name}")
        return 0
    removed = store.gc(args.name, grace=args.grace)
    print(json.dumps(removed, default=str))
    return 0


def _store_cache(args: argparse.Namespace) -> int:
    """``store cache info|clear``: this host's block cache (no server needed)."""
    from dataclasses import replace

    from lepton_dask.store.cache import BlockCache, CacheSettings

    if args.name not in ("info", "clear"):
        print(
            "usage: lepton-dask store cache info|clear [--directory DIR]",
            file=sys.stderr,
        )
        return 2
    settings = CacheSettings.from_config()
    if args.directory:
        settings = replace(settings, directory=os.path.abspath(args.directory))
    cache = BlockCache(settings.directory, settings.max_bytes)
    try:
        if args.name == "clear":
            print(f"removed {cache.clear()} cached blocks from {settings.directory}")
            return 0
        info = {**cache.info(), "enabled": settings.enabled}
    finally:
        cache.close()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    state = "on" if settings.enabled else "off (lepton.store.cache.enabled)"
    print(f"directory : {info['directory']}")
    print(
        f"caching   : {state}"
        + (f"; unusable: {info['disabled']}" if info["disabled"] else "")
    )
    print(f"entries   : {info['entries']}")
    print(
        f"size      : {info['bytes'] / 2**20:.1f} MiB of {info['max_bytes'] / 2**20:.0f} MiB"
    )
    return 0


# -- cost ------------------------------------------------------------------------------
def cmd_cost(args: argparse.Namespace) -> int:
    from lepton_dask.cost import Ledger, load_catalog
    from lepton_dask.cost.report import Table, report_table
    from lepton_dask.store import FeatureStore

    if args.action == "catalog":
        cat = load_catalog(args.catalog)
        rows = [
            [
                t.name,
                t.vcpus,
                t.memory_gib,
                t.gpus,
                t.on_demand_usd_per_hour,
                t.spot_usd_per_hour,
                t.date,
            ]
            for t in cat.values()
        ]
        print(
            Table(
                [
                    "type",
                    "vcpus",
                    "memory_gib",
                    "gpus",
                    "on_demand_usd_h",
                    "spot_usd_h",
                    "date",
                ],
                rows,
                title=f"price catalog {cat.path}",
            )
        )
        return 0
    store = FeatureStore(args.uri, args.database)
    ledger = Ledger(store.spec)
    runs = ledger.runs()
    if args.action == "runs":
        rows = []
        for run in runs:
            docs = ledger.entries(run)
            rows.append(
                [
                    run,
                    len(docs),
                    sum(d["billed_usd"] for d in docs),
                    min(d["start"] for d in docs),
                ]
            )
        print(Table(["run", "lifetimes", "spend_usd", "first_start"], rows))
        return 0
    if not runs:
        print("the cost ledger is empty")
        return 0
    run = args.run or max(
        runs, key=lambda r: max(d["updated"] for d in ledger.entries(r))
    )
    if run not in runs:
        print(
            f"lepton-dask: error: no run {run!r} in the ledger; runs: {', '.join(runs)}",
            file=sys.stderr,
        )
        return 1
    print(report_table(ledger.entries(run), run))
    return 0


# -- dashboards -------------------------------------------------------------------------
def cmd_dashboards(args: argparse.Namespace) -> int:
    from lepton_dask.dashboard import grafana

    return _write_or_check(grafana.render(), args.dir, args.action, "dashboards")


# -- deploy ------------------------------------------------------------------------------
_DEPLOY_DIRS = {
    "kubernetes": "deploy/kubernetes",
    "helm": "deploy/helm/lepton-dask",
    "compose": "deploy/compose",
}


def cmd_deploy(args: argparse.Namespace) -> int:
    from lepton_dask.deploy import alerts, helm, kubernetes
    from lepton_dask.deploy.spec import DeploySpec, parse_pool

    directory = args.dir or _DEPLOY_DIRS[args.target]
    if args.target == "compose":
        return _write_or_check(
            {"alerts.yml": alerts.rule_file()}, directory, args.action, "deploy compose"
        )
    kw = {
        key: getattr(args, key)
        for key in (
            "name",
            "namespace",
            "image",
            "release",
            "capacity_label",
            "budget_usd_per_hour",
            "budget_usd",
            "scaler_policy",
            "scaler_deadline",
            "scaler_latency",
            "workload",
        )
        if getattr(args, key, None) is not None
    }
    try:
        if args.pool:
            kw["groups"] = tuple(parse_pool(p) for p in args.pool)
        spec = DeploySpec(**kw)
    except ValueError as e:
        print(f"lepton-dask deploy: {e}", file=sys.stderr)
        return 2
    files = helm.render(spec) if args.target == "helm" else kubernetes.render(spec)
    return _write_or_check(files, directory, args.action, f"deploy {args.target}")


def cmd_k8s_scaler(args: argparse.Namespace) -> int:  # pragma: no cover - needs k8s
    from lepton_dask.deploy import k8s_scaler

    return k8s_scaler.main(args)


def _write_or_check(
    files: dict[str, str], directory: str, action: str, cmd: str
) -> int:
    from pathlib import Path

    if action == "write":
        for rel, text in files.items():
            path = Path(directory) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(path)
        return 0
    stale = [
        rel
        for rel, text in files.items()
        if not (Path(directory) / rel).is_file()
        or (Path(directory) / rel).read_text() != text
    ]
    for rel in stale:
        print(
            f"{directory}/{rel} differs from what lepton-dask generates",
            file=sys.stderr,
        )
    if stale:
        print(f"run `lepton-dask {cmd} write`", file=sys.stderr)
    return 1 if stale else 0


# -- up --------------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def cmd_up(args: argparse.Namespace) -> int:
    from lepton_dask.cost import CostMonitor
    from lepton_dask.cost.ledger import Ledger
    from lepton_dask.scaling import CostAwareAdaptive, LocalPoolCluster, PoolSpec
    from lepton_dask.store import FeatureStore, redact_uri

    if not _is_loopback(args.host) and not args.allow_remote:
        print(
            f"refusing to listen on {args.host}: the scheduler would accept "
            "connections from other machines. Pass --allow-remote (and configure "
            "distributed.comm.tls, see README) if that is what you want.",
            file=sys.stderr,
        )
        return 2
    store = FeatureStore(args.uri, args.database)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    monitor = CostMonitor(ledger=Ledger(store.spec))
    dashboard = (
        None
        if args.no_dashboard or args.dashboard_port < 0
        else f"{args.host}:{args.dashboard_port}"
    )
    pool = PoolSpec.from_catalog(
        "cpu",
        dask.config.get("lepton.cost.default-instance-type"),
        threads=args.nthreads,
        max_workers=args.nworkers,
        min_workers=0 if args.adaptive else args.nworkers,
    )
    scheduler_options = {"plugins": [monitor], "port": args.port}
    if args.scheduler_file:
        scheduler_options["scheduler_file"] = os.path.abspath(args.scheduler_file)
    with LocalPoolCluster(
        [pool],
        processes=True,
        host=args.host,
        dashboard_address=dashboard,
        scheduler_options=scheduler_options,
    ) as cluster:
        if args.adaptive:
            cluster.adapt(Adaptive=CostAwareAdaptive)
        http = (
            f"http://{args.host}:{cluster.scheduler.http_server.port}"
            if dashboard
            else None
        )
        lines = [
            "lepton-dask is up (stop with Ctrl-C)",
            f"  scheduler : {cluster.scheduler_address}",
            f"  dashboard : {http + '/status' if http else 'off'}",
            f"  mongodb   : {redact_uri(store.uri)} (database {store.database})",
            f"  workers   : {args.nworkers} x {args.nthreads} thread(s)"
            + (" (CostAwareAdaptive)" if args.adaptive else ""),
        ]
        if http:
            lines.append(f"  cost page : {http}{monitor.page or '/cost'}")
            lines.append(f"  metrics   : {http}/metrics")
        if args.scheduler_file:
            lines.append(f"  sched file: {os.path.abspath(args.scheduler_file)}")
        lines += [
            f"  cost run  : {monitor.run_id}",
            f"connect from a notebook: Client({cluster.scheduler_address!r})",
            "paste into a shell (notebooks and lepton-dask read these):",
            f"export LEPTON_SCHEDULER={cluster.scheduler_address}",
            _uri_export(store.uri),
            *([f"export LEPTON_METRICS={http}/metrics"] if http else []),
        ]
        for line in lines:
            print(line, flush=True)
        while not stop.wait(0.5):
            pass
        print("shutting down", flush=True)
    return 0


def _uri_export(uri: str) -> str:
    """The shell line that points a client at the store: the URI itself, unless
    it holds a password and stdout is not a terminal (a log keeps no secret).

    >>> _uri_export("mongodb://127.0.0.1:27017/")
    'export LEPTON_MONGO_URI=mongodb://127.0.0.1:27017/'
    """
    import shlex

    from lepton_dask.store import redact_uri

    if redact_uri(uri) == uri or sys.stdout.isatty():
        return f"export LEPTON_MONGO_URI={shlex.quote(uri)}"
    return (
        f"# LEPTON_MONGO_URI: {redact_uri(uri)} (its password is not written to "
        "logs; export the URI you gave with --uri / LEPTON_MONGO_URI)"
    )


# -- demo ------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from distributed import Client

    from lepton_dask.cost import CostMonitor
    from lepton_dask.cost.ledger import Ledger
    from lepton_dask.demo import run_demo, scaler_summary
    from lepton_dask.scaling import (
        BudgetPolicy,
        CostAwareAdaptive,
        LocalPoolCluster,
        PoolSpec,
    )
    from lepton_dask.store import FeatureStore

    store = FeatureStore(args.uri, args.database)
    store.list()  # fail fast (and clearly) when the server is unreachable
    png = _demo_png(args)
    rows = args.rows or (200_000 if args.quick else 2_000_000)
    monitor = CostMonitor(ledger=Ledger(store.spec))
    pool = PoolSpec.from_catalog(
        "cpu",
        dask.config.get("lepton.cost.default-instance-type"),
        threads=1,
        max_workers=args.nworkers + 2,
        min_workers=1,
        startup_s=2.0,
    )
    budget = (
        args.budget_usd_per_hour
        if args.budget_usd_per_hour is not None
        else pool.usd_per_hour * args.nworkers
    )
    with (
        LocalPoolCluster(
            [pool],
            processes=True,
            dashboard_address="127.0.0.1:0",
            scheduler_options={"plugins": [monitor]},
        ) as cluster,
        Client(cluster) as client,
    ):
        scaler = cluster.adapt(
            Adaptive=CostAwareAdaptive,
            policy=BudgetPolicy(usd_per_hour=budget),
            interval=0.5,
        )
        base = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"
        print(f"cluster: {cluster.scheduler_address}, dashboard {base}/status")
        print(
            f"scaling: CostAwareAdaptive, budget ${budget:.3f}/hour "
            f"({pool.instance_type} workers at ${pool.usd_per_hour:.3f}/hour each)"
        )
        report = run_demo(
            client,
            store,
            rows=rows,
            cols=args.cols,
            chunk_rows=max(1, rows // 8),
            progress=None,  # a bar only on a terminal
            usd_per_worker_hour=pool.usd_per_hour,
        )
        scaled = scaler_summary(scaler.log, budget)
        report.extra.update(_demo_extras(monitor, base, args.serve, scaled))
        print(report.summary())
        if args.serve:
            print("serving the dashboard; Ctrl-C stops the cluster", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    if args.scaling_seconds > 0:
        from lepton_dask.experiments.commands import scaling_demo

        scaling_demo(args.scaling_seconds, png)
    return 0 if all(report.checks.values()) else 1


def _demo_png(args: argparse.Namespace) -> str | None:
    """Where the scaling plot goes: none when there is no scaling run, or no
    matplotlib (a plain install: the demo runs, unplotted, and says so)."""
    if args.scaling_seconds <= 0 or not args.scaling_png:
        return None
    from lepton_dask.experiments.report import matplotlib_figure

    try:
        matplotlib_figure()
    except ImportError as e:
        print(f"note: {e}; no scaling plot", file=sys.stderr)
        return None
    return args.scaling_png


def _demo_extras(monitor, base: str, serve: bool, scaler: str) -> dict[str, str]:
    """The demo summary's cost lines and where to look next."""
    snap = monitor.snapshot()
    alive = "while it runs" if serve else "until the demo exits"
    return {
        "spend": f"${snap['spend_usd']:.6f} for run {snap['run_id']} "
        f"({snap['workers']} workers now at ${snap['spend_rate_usd_per_hour']:.3f}/hour)",
        "per task": f"${snap['cost_per_task_usd']:.2e} over {snap['tasks']} tasks",
        "utilization": f"{snap['utilization']:.1%} of paid thread-seconds busy",
        "scaler": scaler,
        "dashboard": f"{base}/status ({alive})",
        "cost page": f"{base}{monitor.page or '/cost'}",
        "metrics": f"{base}/metrics (Prometheus scrapes this)",
        "grafana": "dashboards/*.json (deploy/compose provisions them)",
    }


# -- experiment, plan: lepton_dask.experiments.commands ----------------------------
def cmd_experiment(args: argparse.Namespace) -> int:
    from lepton_dask.experiments.commands import cmd_experiment as run

    return run(args)


def cmd_plan(args: argparse.Namespace) -> int:
    from lepton_dask.experiments.commands import cmd_plan as run

    return run(args)


# -- config ----------------------------------------------------------------------------
#: settings whose values are secrets or hold them (their values are redacted)
_SECRET_WORDS = ("password", "secret", "token", "credential", "key")


def _redacted(value, key: str = ""):
    """``value`` with secrets masked: URIs through ``redact_uri``, and the
    values of keys that name a secret.

    >>> _redacted({"uri": "mongodb://a:pw@h/", "api-token": "t", "n": 1})
    {'uri': 'mongodb://a:***@h/', 'api-token': '***', 'n': 1}
    """
    from lepton_dask.store import redact_uri

    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v, key) for v in value]
    if value is not None and any(w in key.lower() for w in _SECRET_WORDS):
        return "***"
    if isinstance(value, str) and "://" in value and "@" in value:
        return redact_uri(value)
    return value


def cmd_config(args: argparse.Namespace) -> int:
    """``config show``: the effective settings (defaults, the user's YAML files,
    ``DASK_*`` variables), secrets redacted."""
    import yaml

    value = dask.config.get(args.key)  # (checked against the schema at import)
    if args.key in ("lepton", "lepton.store", "lepton.store.uri"):
        env = os.environ.get("LEPTON_MONGO_URI")
        if env:  # what the store connects to wins over lepton.store.uri
            print("# LEPTON_MONGO_URI is set: it overrides lepton.store.uri")
            if args.key == "lepton.store.uri":
                value = env
            else:
                store = value["store"] if args.key == "lepton" else value
                store = {**store, "uri": env}
                value = {**value, "store": store} if args.key == "lepton" else store
    leaf = args.key.rpartition(".")[2]
    shown = _redacted(value, leaf)
    print(yaml.safe_dump({args.key: shown}, sort_keys=False).rstrip())
    return 0


# -- parser ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``lepton-dask`` argument parser (every command has ``--help``)."""
    from lepton_dask.cli._parser import build

    return build(
        {
            "mongo": cmd_mongo,
            "store": cmd_store,
            "cost": cmd_cost,
            "experiment": cmd_experiment,
            "plan": cmd_plan,
            "up": cmd_up,
            "dashboards": cmd_dashboards,
            "deploy": cmd_deploy,
            "k8s-scaler": cmd_k8s_scaler,
            "demo": cmd_demo,
            "config": cmd_config,
        }
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lepton-dask`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += getattr(args, "verbose_after", 0)  # -v after the command
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    for handler in logging.getLogger().handlers:  # distributed sets INFO on its loggers
        handler.setLevel(level)
    from lepton_dask.store.errors import StoreError

    try:
        return int(args.func(args) or 0)
    except (
        StoreError,
        KeyError,
        ValueError,
        TypeError,
        RuntimeError,
        ImportError,
    ) as e:
        if args.verbose:  # -v: the whole story
            import traceback

            traceback.print_exc()
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"lepton-dask: error: {msg}", file=sys.stderr)
        return 1
