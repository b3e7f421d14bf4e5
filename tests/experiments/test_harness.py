"""Experiments: sweeps, analysis, outputs (simulated; the real run is in the benchmark)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from lepton_dask.experiments.harness import (
    analyse,
    pareto,
    run_experiments,
    run_sweep,
    scenarios,
)

pytestmark = pytest.mark.timeout(300)


def test_sweep_and_analysis_on_a_trace():
    sc = scenarios()["etl"]
    rows = run_sweep(sc, adaptive=(5, 60), balanced=(0.3, 3.0))
    fams = {r["family"] for r in rows}
    assert fams == {"ours", "adaptive"} and all(r["cost_usd"] > 0 for r in rows)
    assert all(r["cost_usd"] >= r["lower_bound_usd"] for r in rows)
    s = analyse(rows)
    assert s["ours_vs_oracle"] > 0 and s["adaptive_vs_oracle"] > 0
    assert isinstance(s["dominates"], bool)
    front = pareto(rows)
    assert [r["cost_usd"] for r in front] == sorted(r["cost_usd"] for r in front)


def test_run_experiments_writes_csv_plots_and_table(tmp_path):
    out = tmp_path / "exp"
    res = run_experiments(str(out), ["sawtooth"], progress=False)
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
        run_experiments(str(out), ["nope"], progress=False)


def test_experiment_cli(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "lepton_dask.cli", "experiment", "--traces", "burst-reduce",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "| burst-reduce |" in out.stdout and (tmp_path / "runs.csv").exists()
