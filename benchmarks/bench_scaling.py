"""Cost-aware scaling vs Dask's Adaptive, in the simulator (and for real).

For each of the four traces (burst then reduce, sawtooth, memory-heavy ETL,
CPU -> GPU -> CPU pipeline with spot preemptions) on cloud-like pools (60 s
startup, 60 s minimum billing, AWS prices): stock Adaptive swept over
target_duration 1 s - 3 min vs ours swept over its knob (balanced weight, and
deadline), compared with the offline-optimal oracle. Also the simulator's own
speed on 1,000 workers and 1,000,000 tasks. ``--real`` also runs a small
sawtooth on a real LocalPoolCluster under both and compares real and simulated
cost.

Usage: ``python benchmarks/bench_scaling.py [--real] [--quick] [--out DIR]``
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from _common import machine, result_line, run, table

from lepton_dask.experiments.harness import run_experiments
from lepton_dask.scaling import BalancedPolicy, PoolSpec
from lepton_dask.sim import Simulator, Trace


def sim_speed(n_tasks: int, n_workers: int) -> dict:
    rng = np.random.default_rng(0)
    trace = Trace("scale", np.sort(rng.uniform(0, 3600, n_tasks)), rng.gamma(2.0, 2.0, n_tasks),
                  np.zeros(n_tasks, np.int8), np.zeros(n_tasks, int))  # fmt: skip
    pool = PoolSpec("cpu", threads=1, startup_s=60, max_workers=n_workers)
    t0 = time.perf_counter()
    r = Simulator(
        trace, [pool], BalancedPolicy(100.0), minimum_billing=60, record_timeline=False
    ).run()
    elapsed = time.perf_counter() - t0
    peak = max(d["targets"]["cpu"] for _, d in r.decisions)
    assert r.tasks_done == n_tasks
    return {
        "seconds": elapsed,
        "tasks": n_tasks,
        "peak_workers": peak,
        "max_workers": n_workers,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--real",
        action="store_true",
        help="also run the real LocalPoolCluster comparison",
    )
    ap.add_argument(
        "--quick", action="store_true", help="simulator speed on 100,000 tasks"
    )
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "scaling")
    )
    args = ap.parse_args(argv)
    res = run_experiments(args.out, progress=False)
    summary = res["summary"]
    print(res["table"])
    speed = sim_speed(100_000 if args.quick else 1_000_000, 1000)
    print(f"\nsimulator: {speed['tasks']:,} tasks, up to {speed['max_workers']} workers "
          f"(peak {speed['peak_workers']}): {speed['seconds']:.1f} s")  # fmt: skip
    result: dict = {"traces": {}, "sim_seconds_1000w_1Mt": None if args.quick else round(speed["seconds"], 2),
                    "sim_speed": speed, "machine": machine()}  # fmt: skip
    for name, s in summary.items():
        result["traces"][name] = {
            "ours_vs_oracle": round(s["ours_vs_oracle"], 3),
            "adaptive_vs_oracle": round(s["adaptive_vs_oracle"], 3),
            "saving_vs_adaptive": None
            if s["saving_vs_adaptive"] is None
            else round(s["saving_vs_adaptive"], 3),
            "dominates": s["dominates"],
        }
    if args.real:
        from lepton_dask.experiments.real import compare

        real = compare()
        print("\n" + table([[k, v["real_usd"], v["sim_usd"], f"{v['error']:.1%}", v["real_s"], v["sim_s"]]
                            for k, v in real.items()],
                           ["real sawtooth run", "real $", "simulated $", "error", "real s", "simulated s"]))  # fmt: skip
        result["sim_real_cost_error"] = round(max(v["error"] for v in real.values()), 4)
        result["sim_real"] = {k: round(v["error"], 4) for k, v in real.items()}
        with open(os.path.join(args.out, "real.md"), "w") as f:
            f.write(str(real) + "\n")
    goals = []
    for name, t in result["traces"].items():
        goals.append(f"{name}: ours_vs_oracle {t['ours_vs_oracle']} (goal <= 1.15: "
                     f"{'met' if t['ours_vs_oracle'] <= 1.15 else 'MISSED'}), saving_vs_adaptive "
                     f"{t['saving_vs_adaptive']} (goal >= 0.30: "
                     f"{'met' if (t['saving_vs_adaptive'] or 0) >= 0.30 else 'MISSED'}), dominates {t['dominates']} "
                     f"(goal true: {'met' if t['dominates'] else 'MISSED'})")  # fmt: skip
    if "sim_real_cost_error" in result:
        e = result["sim_real_cost_error"]
        goals.append(
            f"sim_real_cost_error {e} (goal <= 0.15: {'met' if e <= 0.15 else 'MISSED'})"
        )
    if result["sim_seconds_1000w_1Mt"] is not None:
        sec = result["sim_seconds_1000w_1Mt"]
        goals.append(
            f"simulator 1,000 workers x 1,000,000 tasks: {sec} s (goal < 60: {'met' if sec < 60 else 'MISSED'})"
        )
    print("\n" + "\n".join(goals))
    print(result_line(result))
    return result


if __name__ == "__main__":
    run(main)
