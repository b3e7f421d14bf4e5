"""The ``lepton-dask`` argument parser: one function per command.

Dask's conventions: ``--version``; the global options (``-v``) also after the
command; defaults shown in ``--help``; durations as seconds or Dask duration
strings (``90s``, ``10m``) through one parser; money in explicit units
(``--budget-usd-per-hour``, ``--budget-usd``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

Command = Callable[[argparse.Namespace], int]


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless it has none (None, False, a count)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if (
            action.default is None
            or action.default is False
            or isinstance(action, argparse._CountAction)
        ):
            return action.help
        return super()._get_help_string(action)


def duration(text: str) -> float:
    """The one duration parser of the command line: seconds, or a Dask
    duration string.

    >>> duration("10m"), duration("90")
    (600.0, 90.0)
    """
    from lepton_dask.config import parse_duration

    try:
        return parse_duration(text, "a duration")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Deprecated(argparse.Action):
    """An old option name: stores under the new one's dest and says so."""

    def __init__(self, *args: Any, new: str, **kwargs: Any):
        self.new = new
        super().__init__(*args, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(
            f"lepton-dask: {option_string} is deprecated; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def _common() -> argparse.ArgumentParser:
    """The global options, accepted after the command too."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest="verbose_after",
        help="more logging (-vv: debug); errors show their traceback",
    )
    return p


def _parser(sub: argparse._SubParsersAction, name: str, **kw: Any):
    return sub.add_parser(name, parents=[_common()], formatter_class=_Help, **kw)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--uri",
        default=None,
        help="MongoDB URI (default: LEPTON_MONGO_URI, lepton.store.uri, or the "
        "embedded server)",
    )
    p.add_argument("--database", default=None, help="database (default: lepton)")


def _mongo(sub: argparse._SubParsersAction, func: Command) -> None:
    p = _parser(sub, "mongo", help="manage the embedded MongoDB-compatible server")
    p.add_argument(
        "action",
        choices=["install", "start", "stop", "status"],
        help="install: build FerretDB with Go (printing its progress)",
    )
    p.add_argument(
        "--data-dir", default=None, help="data directory (lepton.store.data-dir)"
    )
    p.add_argument("--port", type=int, default=0, help="port for start (0: free port)")
    p.add_argument("--force", action="store_true", help="install: rebuild")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    p.set_defaults(func=func)


def _store(sub: argparse._SubParsersAction, func: Command) -> None:
    p = _parser(
        sub,
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
        "--grace",
        type=duration,
        default=None,
        help="gc: grace period, e.g. 10m (default: lepton.store.gc-grace)",
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
    p = _parser(
        sub, "cost", help="spend reports from the ledger, and the price catalog"
    )
    p.add_argument("action", choices=["report", "runs", "catalog"])
    p.add_argument("--run", default=None, help="report: run id (default: the latest)")
    p.add_argument("--catalog", default=None, help="catalog: a catalog file to show")
    _add_store_args(p)
    p.set_defaults(func=func)


def _experiment(sub: argparse._SubParsersAction, func: Command) -> None:
    p = _parser(
        sub, "experiment", help="adaptive-scaling experiments: traces x policies"
    )
    p.add_argument("--traces", default=None, help="comma-separated (default: all)")
    p.add_argument("--out", default="experiment-results", help="output folder")
    p.add_argument(
        "--oracle-seconds",
        type=duration,
        default=30.0,
        help="time limit of each exact-oracle solve, e.g. 30s (its bound stays valid)",
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
        type=duration,
        default=40.0,
        help="--real: about how long each real run takes",
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
    p = _parser(
        sub, "plan", help="recommend pools and SLO settings for a recorded workload"
    )
    p.add_argument("--workload", default=None, help="a recorded workload")
    p.add_argument("--run", default=None, help="or one recorded run id")
    p.add_argument(
        "--deadline", type=duration, default=None, help="per batch, e.g. 20m or 1200"
    )
    p.add_argument(
        "--budget-usd", type=float, default=None, help="total USD of one run"
    )
    p.add_argument(
        "--budget",
        type=float,
        dest="budget_usd",
        action=_Deprecated,
        new="--budget-usd",
    )
    _add_store_args(p)
    p.set_defaults(func=func)


def _up(sub: argparse._SubParsersAction, func: Command) -> None:
    p = _parser(
        sub, "up", help="run the service (MongoDB, scheduler, workers, dashboard)"
    )
    p.add_argument("--nworkers", type=int, default=2, help="local worker processes")
    p.add_argument("--nthreads", type=int, default=1, help="threads per worker")
    p.add_argument(
        "--workers", type=int, dest="nworkers", action=_Deprecated, new="--nworkers"
    )
    p.add_argument(
        "--threads", type=int, dest="nthreads", action=_Deprecated, new="--nthreads"
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8786, help="scheduler port (0: free)")
    p.add_argument(
        "--dashboard-port", type=int, default=8787, help="dashboard port (0: free)"
    )
    p.add_argument("--no-dashboard", action="store_true", help="no dashboard")
    p.add_argument(
        "--scheduler-file",
        default=None,
        help="write the scheduler's address to this JSON file (as dask scheduler "
        "--scheduler-file; Client(scheduler_file=...) reads it)",
    )
    p.add_argument(
        "--adaptive",
        action="store_true",
        help="scale the workers with CostAwareAdaptive (lepton.scaling.*) up to "
        "--nworkers",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow listening on a non-loopback interface",
    )
    _add_store_args(p)
    p.set_defaults(func=func)


def _dashboards(sub: argparse._SubParsersAction, func: Command) -> None:
    p = _parser(
        sub, "dashboards", help="write or check the Grafana dashboards and provisioning"
    )
    p.add_argument("action", choices=["write", "check"])
    p.add_argument("--dir", default="dashboards", help="output folder")
    p.set_defaults(func=func)


def _deploy(sub: argparse._SubParsersAction, func: Command) -> None:
    from lepton_dask.scaling.registry import POLICIES

    p = _parser(sub, "deploy", help="write or check the generated Kubernetes manifests")
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
    p.add_argument("--budget-usd-per-hour", type=float, help="spend-rate budget")
    p.add_argument("--budget-usd", type=float, help="total budget")
    p.add_argument(
        "--scaler-policy",
        choices=list(POLICIES),
        help="the scaler's policy (default slo: a 10-minute deadline unless "
        "--scaler-deadline or --scaler-latency says otherwise)",
    )
    p.add_argument(
        "--scaler-deadline", type=duration, help="slo/predictive: per batch, e.g. 10m"
    )
    p.add_argument(
        "--scaler-latency", type=duration, help="slo/predictive: streams, e.g. 90s"
    )
    p.add_argument("--workload", help="predictive: the workload key it learns under")
    p.set_defaults(func=func)


def _k8s_scaler(sub: argparse._SubParsersAction, func: Command) -> None:
    p = _parser(
        sub,
        "k8s-scaler",
        help="apply the cost-aware policy (lepton.scaling.*) to dask-kubernetes worker groups",
    )
    p.add_argument("--scheduler", required=True, help="tcp://host:8786")
    p.add_argument("--namespace", default="default")
    p.add_argument(
        "--groups", required=True, help="YAML list of worker groups (see deploy/)"
    )
    p.add_argument("--interval", type=duration, default="10s", help="between decisions")
    p.add_argument("--api-server", default=None, help="default: in-cluster")
    p.add_argument("--token-file", default=None, help="bearer token (out of cluster)")
    p.add_argument("--ca-file", default=None, help="API server CA (out of cluster)")
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="a kubeconfig to connect with (default: in-cluster, else $KUBECONFIG "
        "or ~/.kube/config)",
    )
    p.set_defaults(func=func)


def _demo(sub: argparse._SubParsersAction, func: Command) -> None:
    p = _parser(sub, "demo", help="run the main job end to end")
    p.add_argument("--rows", type=int, default=None, help="rows of the feature matrix")
    p.add_argument("--cols", type=int, default=16, help="columns")
    p.add_argument("--nworkers", type=int, default=2, help="local worker processes")
    p.add_argument(
        "--workers", type=int, dest="nworkers", action=_Deprecated, new="--nworkers"
    )
    p.add_argument("--quick", action="store_true", help="small sizes")
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep the cluster (dashboard, Cost page, /metrics) up until Ctrl-C",
    )
    p.add_argument(
        "--budget-usd-per-hour",
        type=float,
        default=None,
        help="the scaler's spend-rate budget (default: --nworkers workers' worth)",
    )
    p.add_argument(
        "--budget",
        type=float,
        dest="budget_usd_per_hour",
        action=_Deprecated,
        new="--budget-usd-per-hour",
    )
    p.add_argument(
        "--scaling-seconds",
        type=duration,
        default=30.0,
        help="length of each real scaling run at the end, e.g. 30s (0: skip it)",
    )
    p.add_argument(
        "--scaling-png",
        default="lepton-demo-scaling.png",
        help="where the scaling plot is written",
    )
    _add_store_args(p)
    p.set_defaults(func=func)


def _config(sub: argparse._SubParsersAction, func: Command) -> None:
    p = _parser(
        sub,
        "config",
        help="show the effective lepton.* settings (secrets redacted)",
    )
    p.add_argument("action", choices=["show"])
    p.add_argument(
        "key", nargs="?", default="lepton", help="a dotted key, e.g. lepton.scaling"
    )
    p.set_defaults(func=func)


def build(commands: dict[str, Command]) -> argparse.ArgumentParser:
    """The ``lepton-dask`` argument parser (every command has ``--help``);
    ``commands``: the function each command runs, by name."""
    from lepton_dask._version import __version__

    parser = argparse.ArgumentParser(
        prog="lepton-dask",
        description="Dask-native, cost-optimizing compute over features in MongoDB.",
        formatter_class=_Help,
    )
    parser.add_argument(
        "--version", action="version", version=f"lepton-dask {__version__}"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-vv: debug); errors show their traceback",
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
    "config": _config,
}
