"""The ``lepton-dask experiment`` and ``lepton-dask plan`` commands: traces x
policies in the simulator, recorded runs replayed, a recurring job planned
(the parser lives in :mod:`lepton_dask.cli`)."""

from __future__ import annotations

import argparse
import os
import sys


def cmd_experiment(args: argparse.Namespace) -> int:
    from lepton_dask._progress import want_progress
    from lepton_dask.experiments.harness import run_experiments

    if args.run or args.workload:
        return _experiment_replay(args)
    traces = args.traces.split(",") if args.traces else None
    res = run_experiments(
        args.out,
        traces,
        progress=want_progress(None),  # a bar only on a terminal
        online=not args.clairvoyant_only,
        time_limit=args.oracle_seconds,
    )
    table = res["table"]
    if args.real:
        from lepton_dask.experiments.real import compare_traces, real_table

        names = traces or ["sawtooth"]
        print(
            f"running {', '.join(names)} time-scaled to ~{args.real_seconds:g} s on a "
            "real LocalPoolCluster under each policy, beside the simulator...",
            file=sys.stderr,
        )
        real = real_table(
            compare_traces(
                names,
                seconds=args.real_seconds,
                progress=lambda m: print(m, file=sys.stderr),
            )
        )
        table += "\n\nreal LocalPoolCluster runs against the simulator:\n\n" + real
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(table + "\n")
    print(table)
    print(f"\nwrote {args.out}/runs.csv, summary.md, pareto-*.png, timeline-*.png")
    return 0


def _experiment_replay(args: argparse.Namespace) -> int:
    import warnings

    from lepton_dask.experiments import replay
    from lepton_dask.store import StoreSpec

    spec = StoreSpec.from_config(args.uri, args.database)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", replay.PartialRecordingWarning)
            if args.run:
                trace = replay.trace_from_run(args.run, spec)
            else:
                trace = replay.trace_from_workload(args.workload, spec)
    except replay.RecordingNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    res = replay.sweep(
        args.out,
        trace,
        online=not args.clairvoyant_only,
        time_limit=args.oracle_seconds,
    )
    print(res["table"])
    print(f"\nwrote {args.out}/runs.csv, summary.md, pareto-*.png, timeline-*.png")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    import warnings

    from dask.utils import parse_timedelta

    from lepton_dask.experiments import replay
    from lepton_dask.experiments.plan import format_plan, plan
    from lepton_dask.store import StoreSpec

    if not (args.workload or args.run) or not (args.deadline or args.budget_usd):
        print(
            "error: plan needs --workload (or --run) and --deadline and/or "
            "--budget-usd",
            file=sys.stderr,
        )
        return 2
    spec = StoreSpec.from_config(args.uri, args.database)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", replay.PartialRecordingWarning)
            trace = (
                replay.trace_from_run(args.run, spec)
                if args.run
                else replay.trace_from_workload(args.workload, spec)
            )
    except replay.RecordingNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    deadline = parse_timedelta(args.deadline) if args.deadline else None
    print(format_plan(plan(trace, deadline=deadline, budget=args.budget_usd)))
    return 0


__all__ = ["cmd_experiment", "cmd_plan"]


def scaling_demo(seconds: float, png: str | None) -> None:
    """The end of ``lepton-dask demo``: the scaling claim on real workers,
    stock Adaptive and the SLO policy on the same bursty trace, side by side."""
    from lepton_dask.experiments.real import side_by_side

    print(
        f"\nscaling on real workers: the sawtooth trace time-scaled to ~{seconds:g} s "
        "on a LocalPoolCluster, stock Adaptive vs the SLO policy ...",
        flush=True,
    )
    runs = side_by_side(seconds, png)
    for label, r in runs.items():
        print(
            f"{label:<15}: ${r['cost_usd']:.5f}, deadlines met "
            f"{r['deadline_met']:.0%}, {r['launches']} workers launched"
        )
    if png:
        print(
            f"plot       : {png} (workers and dollars so far over time, each burst met or missed)"
        )
