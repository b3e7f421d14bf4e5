"""Alerting rules: the committed rule file is generated, promtool accepts it and
its unit tests pass (one per alert), and one alert goes end to end: a real
Prometheus scrapes a real scheduler whose spend exceeds a tiny budget,
evaluates the rule and a real Alertmanager (Debian's) receives the alert."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from distributed import Client

from lepton_dask.cost import CostMonitor
from lepton_dask.deploy import alerts
from lepton_dask.deploy import spec as dspec
from lepton_dask.deploy.monitoring import monitoring
from lepton_dask.store.server import free_port
from tests.helpers import cluster_with, wait_for
from tests.prom import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "compose" / "alerts.yml"
UNIT_TESTS = Path(__file__).with_name("alerts.test.yml")


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool (Debian's prometheus) is not installed: make system-deps"
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_committed_rules_are_generated():
    assert RULES.read_text() == alerts.rule_file(), (
        "deploy/compose/alerts.yml stale: lepton-dask deploy compose write"
    )


def test_promtool_accepts_the_compose_and_kubernetes_rules(tmp_path):
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    rule = next(
        d for d in monitoring(dspec.DeploySpec()) if d["kind"] == "PrometheusRule"
    )
    path = tmp_path / "k8s-rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    # the PrometheusRule watches the job its ServiceMonitor scrapes
    assert 'up{job="lepton-scheduler"}' in path.read_text()


def test_every_alert_has_a_promtool_unit_test_that_passes():
    tested = yaml.safe_load(UNIT_TESTS.read_text())
    fired = {
        t["alertname"]
        for case in tested["tests"]
        for t in case["alert_rule_test"]
        if t["exp_alerts"]
    }
    quiet = {
        t["alertname"]
        for case in tested["tests"]
        for t in case["alert_rule_test"]
        if not t["exp_alerts"]
    }
    assert fired == quiet == set(alerts.FOR)
    r = promtool("test", "rules", UNIT_TESTS.name, cwd=UNIT_TESTS.parent)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


class Alertmanager:
    """Debian's prometheus-alertmanager on a free loopback port."""

    def __init__(self, data_dir: Path):
        self.binary = shutil.which("prometheus-alertmanager")
        assert self.binary, "prometheus-alertmanager not installed: make system-deps"
        self.port = free_port()
        self.dir = data_dir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Alertmanager:
        cfg = self.dir / "alertmanager.yml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "route": {"receiver": "null", "group_wait": "0s"},
                    "receivers": [{"name": "null"}],
                }
            )
        )
        self.log = open(self.dir / "alertmanager.log", "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={cfg}",
                f"--storage.path={self.dir / 'am'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=30, interval=0.1)
        return self

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"alertmanager exited: see {self.dir}"
        try:
            return (
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
            )
        except OSError:
            return False

    def alerts(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as r:
            return json.loads(r.read())

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.mark.timeout(120)
def test_spend_over_a_tiny_budget_reaches_alertmanager(tmp_path):
    monitor = CostMonitor(ledger=False, budget_usd_per_hour=0.001, flush_interval=0.5)
    rules = tmp_path / "alerts.yml"
    rules.write_text(alerts.rule_file(for_={"LeptonSpendOverHourlyBudget": "2s"}))
    with (
        cluster_with(monitor, n_workers=1) as cluster,
        Client(cluster) as client,
        Alertmanager(tmp_path) as am,
    ):
        client.submit(sum, [1, 2]).result()  # a worker that is billed
        port = cluster.scheduler.http_server.port
        prom = PrometheusServer([f"127.0.0.1:{port}"], str(tmp_path))
        prom.config["rule_files"] = [str(rules)]
        prom.config["alerting"] = {
            "alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{am.port}"]}]}
            ]
        }
        with prom:

            def received():
                return [
                    a
                    for a in am.alerts()
                    if a["labels"]["alertname"] == "LeptonSpendOverHourlyBudget"
                ]

            (alert,) = wait_for(received, timeout=60, interval=0.5)
            # nothing else fires for a healthy scheduler within its total budget
            others = {a["labels"]["alertname"] for a in am.alerts()} - {
                "LeptonSpendOverHourlyBudget"
            }
    assert alert["labels"]["job"] == "dask-scheduler"
    assert alert["labels"]["severity"] == "warning"
    assert alert["status"]["state"] == "active"
    assert "USD/h" in alert["annotations"]["description"]
    assert others == set()


def test_compose_prometheus_loads_the_rules_and_alertmanager_config(tmp_path):
    compose = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
    prom = compose["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prom["volumes"] if v.startswith("./"))
    cfg = yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text())
    # the rule file Prometheus reads is the generated one, mounted where it looks
    assert [mounts["./alerts.yml"]] == cfg["rule_files"]
    (target,) = cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    am = compose["services"][host]
    assert f"127.0.0.1:{port}:{port}" in am["ports"]
    # promtool checks the config as compose mounts it (rule path made local)
    cfg["rule_files"] = [str(RULES)]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(cfg))
    r = promtool("check", "config", str(local))
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    amtool = shutil.which("amtool")
    assert amtool, "amtool (prometheus-alertmanager) is not installed"
    r = subprocess.run(
        [amtool, "check-config", str(ROOT / "deploy/compose/alertmanager.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
