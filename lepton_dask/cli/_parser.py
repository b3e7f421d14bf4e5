"""The ``lepton-dask`` argument parser: one function per command."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Command = Callable[[argparse.Namespace], int]


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--uri",
        default=None,
        help="MongoDB URI (default: LEPTON_MONGO_URI, lepton.store.uri, or the "
        "embedded server)",
    )
    p.add_argument("--database", default=None, help="database (default: lepton)")


def _mongo(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser("mongo", help="manage the embedded MongoDB-compatible server")
    p.add_argument("action", choices=["install", "start", "stop", "status"])
    p.add_argument(
        "--data-dir", default=None, help="data directory (lepton.store.data-dir)"
    )
    p.add_argument("--port", type=int, default=0, help="port for start (0: free port)")
    p.add_argument("--force", action="store_true", help="install: rebuild")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    p.set_defaults(func=func)


def _store(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser(
        "store",
        help="list, inspect, delete and garbage-collect arrays; "
        "`store cache info|clear` for this host's block cache",
    )
    p.add_argument("action", choices=["list", "info", "delete", "gc", "cache"])
    p.add_argument(
        "name",
        nargs="?",
        help="array name (info, delete; optional for gc); cache: info or clear",
    )
    p.add_argument(
        "--grace", type=float, default=None, help="gc: grace period in seconds"
    )
    p.add_argument(
        "--directory",
        default=None,
        help="cache: the cache directory (lepton.store.cache.directory)",
    )
    p.add_argument("--json", action="store_true", help="cache info: print JSON")
    _add_store_args(p)
    p.set_defaults(func=func)


def _cost(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser(
        "cost", help="spend reports from the ledger, and the price catalog"
    )
    p.add_argument("action", choices=["report", "runs", "catalog"])
    p.add_argument("--run", default=None, help="report: run id (default: the latest)")
    p.add_argument("--catalog", default=None, help="catalog: a catalog file to show")
    _add_store_args(p)
    p.set_defaults(func=func)


def _experiment(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser(
        "experiment", help="adaptive-scaling experiments: traces x policies"
    )
    p.add_argument("--traces", default=None, help="comma-separated (default: all)")
    p.add_argument("--out", default="experiment-results", help="output folder")
    p.add_argument(
        "--oracle-seconds",
        type=float,
        default=30.0,
        help="time limit of each exact-oracle solve (its bound stays valid)",
    )
    p.add_argument(
        "--clairvoyant-only",
        action="store_true",
        help="skip the online-feasible oracle (about twice as slow)",
    )
    p.add_argument(
        "--real",
        action="store_true",
        help="also run the traces (default: sawtooth) time-scaled on a real "
        "LocalPoolCluster, beside the simulator",
    )
    p.add_argument(
        "--real-seconds",
        type=float,
        default=40.0,
        help="--real: about how long each real run takes (default 40)",
    )
    p.add_argument(
        "--run", default=None, help="sweep a recorded run instead (its run id)"
    )
    p.add_argument(
        "--workload",
        default=None,
        help="sweep the latest complete recorded run of this workload",
    )
    _add_store_args(p)
    p.set_defaults(func=func)


def _plan(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser(
        "plan", help="recommend pools and SLO settings for a recorded workload"
    )
    p.add_argument("--workload", default=None, help="a recorded workload")
    p.add_argument("--run", default=None, help="or one recorded run id")
    p.add_argument("--deadline", default=None, help="per batch, e.g. 20m or 1200")
    p.add_argument("--budget", type=float, default=None, help="total USD of a run")
    _add_store_args(p)
    p.set_defaults(func=func)


def _up(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser(
        "up", help="run the service (MongoDB, scheduler, workers, dashboard)"
    )
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--threads", type=int, default=1, help="threads per worker")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8786, help="scheduler port (0: free)")
    p.add_argument("--dashboard-port", type=int, default=8787, help="-1 disables")
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="scale the workers with CostAwareAdaptive (lepton.scaling.*) up to --workers",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow listening on a non-loopback interface",
    )
    _add_store_args(p)
    p.set_defaults(func=func)


def _dashboards(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser(
        "dashboards", help="write or check the Grafana dashboards and provisioning"
    )
    p.add_argument("action", choices=["write", "check"])
    p.add_argument("--dir", default="dashboards", help="output folder")
    p.set_defaults(func=func)


def _deploy(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser(
        "deploy", help="write or check the generated Kubernetes manifests"
    )
    p.add_argument(
        "target",
        choices=["kubernetes", "helm", "compose"],
        help="helm: the chart (deploy/helm/lepton-dask); compose: its alert rules",
    )
    p.add_argument("action", choices=["write", "check"])
    p.add_argument(
        "--dir",
        default=None,
        help="output folder (default deploy/kubernetes, deploy/helm/lepton-dask "
        "or deploy/compose)",
    )
    p.add_argument("--name", help="DaskCluster name (default lepton)")
    p.add_argument("--namespace", help="namespace (default lepton)")
    p.add_argument(
        "--image", help="pinned lepton-dask image for scheduler and CPU pools"
    )
    p.add_argument(
        "--pool",
        action="append",
        metavar="NAME=TYPE[:PRICING][,key=value]",
        help="a worker pool, first one the default CPU group; keys replicas, "
        "min, max, threads, image (e.g. cpu=m6i.large:spot,min=1,max=20); repeat",
    )
    p.add_argument("--release", help="release label of the monitors and rules")
    p.add_argument("--capacity-label", help="node label of spot/on-demand capacity")
    p.add_argument("--budget-usd-per-hour", type=float)
    p.add_argument("--budget-usd", type=float)
    p.add_argument(
        "--scaler-policy",
        choices=["balanced", "deadline", "budget", "slo", "predictive"],
        help="the scaler's policy (slo and predictive need --scaler-deadline or "
        "--scaler-latency)",
    )
    p.add_argument(
        "--scaler-deadline", type=float, help="slo/predictive: seconds per batch"
    )
    p.add_argument(
        "--scaler-latency", type=float, help="slo/predictive: seconds (streams)"
    )
    p.add_argument("--workload", help="predictive: the workload key it learns under")
    p.set_defaults(func=func)


def _k8s_scaler(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser(
        "k8s-scaler",
        help="apply the cost-aware policy (lepton.scaling.*) to dask-kubernetes worker groups",
    )
    p.add_argument("--scheduler", required=True, help="tcp://host:8786")
    p.add_argument("--namespace", default="default")
    p.add_argument(
        "--groups", required=True, help="YAML list of worker groups (see deploy/)"
    )
    p.add_argument("--interval", default="10s", help="between decisions")
    p.add_argument("--api-server", default=None, help="default: in-cluster")
    p.add_argument("--token-file", default=None, help="bearer token (out of cluster)")
    p.add_argument("--ca-file", default=None, help="API server CA (out of cluster)")
    p.set_defaults(func=func)


def _demo(sub: argparse._SubParsersAction, func: Command) -> None:
    p = sub.add_parser("demo", help="run the main job end to end")
    p.add_argument("--rows", type=int, default=None, help="rows of the feature matrix")
    p.add_argument("--cols", type=int, default=16, help="columns")
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep the cluster (dashboard, Cost page, /metrics) up until Ctrl-C",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="scaler budget in USD/hour (default: --workers workers' worth)",
    )
    p.add_argument(
        "--scaling-seconds",
        type=float,
        default=30.0,
        help="length of each real scaling run at the end (0: skip it)",
    )
    p.add_argument(
        "--scaling-png",
        default="lepton-demo-scaling.png",
        help="where the scaling plot is written",
    )
    _add_store_args(p)
    p.set_defaults(func=func)


def build(commands: dict[str, Command]) -> argparse.ArgumentParser:
    """The ``lepton-dask`` argument parser (every command has ``--help``);
    ``commands``: the function each command runs, by name."""
    parser = argparse.ArgumentParser(
        prog="lepton-dask",
        description="Dask-native, cost-optimizing compute over features in MongoDB.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add in ADD.items():
        add(sub, commands[name])
    return parser


ADD = {
    "mongo": _mongo,
    "store": _store,
    "cost": _cost,
    "experiment": _experiment,
    "plan": _plan,
    "up": _up,
    "dashboards": _dashboards,
    "deploy": _deploy,
    "k8s-scaler": _k8s_scaler,
    "demo": _demo,
}
