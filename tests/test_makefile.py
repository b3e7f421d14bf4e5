"""``make demo`` builds only what the demo needs; ``make test`` everything."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _dry_run(target: str, tmp_path: Path) -> str:
    """What ``make -n target`` would run from a fresh clone (no virtualenv,
    an empty build cache)."""
    out = subprocess.run(
        ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_demo_builds_only_what_it_needs(tmp_path):
    text = _dry_run("demo", tmp_path)
    assert 'pip install --progress-bar off -e ".[plots]"' in text
    assert "_install.py --if-needed" in text  # FerretDB
    for other in ("[dev]", "build-helm", "build-kube", "system-deps", "-m pytest"):
        assert other not in text, other
    assert text.count(".ci/timed") >= 3  # each step prints its time


def test_test_sets_up_everything(tmp_path):
    text = _dry_run("test", tmp_path)
    for step in ("[plots]", "[dev]", "_install.py", "build-helm", "build-kube",
                 "system-deps", "-m pytest"):  # fmt: skip
        assert step in text, step
