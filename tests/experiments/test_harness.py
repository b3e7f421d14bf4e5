"""Experiments: sweeps, analysis, outputs (simulated; the real run is in the benchmark)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from lepton_dask.experiments.harness import run_experiments
from lepton_dask.experiments.report import analyse, pareto
from lepton_dask.experiments.scenarios import scenarios
from lepton_dask.experiments.sweep import run_sweep

pytestmark = pytest.mark.timeout(300)


def test_sweep_and_analysis_on_a_trace():
    sc = scenarios()["etl"]
    rows = run_sweep(sc, adaptive=(5, 60), balanced=(0.3, 3.0), time_limit=10)
    fams = {r["family"] for r in rows}
    assert fams == {"ours", "adaptive", "slo"} and all(r["cost_usd"] > 0 for r in rows)
    # the exact yardstick is a lower bound of every simulated run
    assert all(r["cost_usd"] >= r["ofo_usd"] - 1e-12 for r in rows)
    assert all(r["ofo_usd"] >= r["oracle_usd"] >= r["lower_bound_usd"] for r in rows)
    s = analyse(rows)
    assert s["ours_vs_ofo"] >= 1.0 and s["ours_vs_clairvoyant"] >= s["ours_vs_ofo"]
    assert s["deadlines_met"] == 1.0 and s["ours_policy"] == "slo deadline 600s"
    assert s["adaptive_best_vs_ofo"] >= 1.0 and isinstance(s["dominates"], bool)
    if s["gap_captured"] is not None:
        ours = next(r for r in rows if r["family"] == "slo")["cost_usd"]
        best = s["adaptive_best_vs_ofo"] * s["ofo_usd"]
        assert s["gap_captured"] == pytest.approx((best - ours) / (best - s["ofo_usd"]))
    front = pareto(rows)
    assert [r["cost_usd"] for r in front] == sorted(r["cost_usd"] for r in front)


def test_run_experiments_writes_csv_plots_and_table(tmp_path):
    out = tmp_path / "exp"
    res = run_experiments(
        str(out), ["sawtooth"], progress=False, online=False, time_limit=5
    )
    assert (out / "pareto-sawtooth.png").stat().st_size > 5000
    assert (out / "timeline-sawtooth.png").stat().st_size > 5000
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(res["rows"]) and {
        "cost_usd",
        "mean_burst_s",
        "deadline_met",
    } <= set(rows[0])
    assert "| sawtooth |" in (out / "summary.md").read_text()
    with pytest.raises(ValueError, match="unknown trace"):
        run_experiments(str(out), ["nope"], progress=False, online=False)


def test_experiment_cli(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lepton_dask.cli",
            "experiment",
            "--traces",
            "burst-reduce",
            "--out",
            str(tmp_path),
            "--clairvoyant-only",
            "--oracle-seconds",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert "| burst-reduce |" in out.stdout and (tmp_path / "runs.csv").exists()
