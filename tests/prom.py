"""A real Prometheus server (Debian's ``prometheus``) for tests, on a free port."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from typing import Any

import yaml

from lepton_dask.store.server import free_port
from tests.helpers import wait_for


class PrometheusServer:
    """Runs ``prometheus`` scraping ``targets`` (host:port) every second;
    use as a context manager and ask it PromQL with :meth:`query`."""

    def __init__(self, targets: list[str], data_dir: str, scrape_interval: str = "1s"):
        self.binary = shutil.which("prometheus")
        if self.binary is None:
            raise RuntimeError(
                "Debian's prometheus is not installed (make system-deps)"
            )
        self.port = free_port()
        self.data_dir = data_dir
        self.config = {
            "global": {
                "scrape_interval": scrape_interval,
                "evaluation_interval": scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": "dask-scheduler",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": list(targets)}],
                }
            ],
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PrometheusServer:
        cfg = f"{self.data_dir}/prometheus.yml"
        with open(cfg, "w") as f:
            yaml.safe_dump(self.config, f)
        self.log = open(f"{self.data_dir}/prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.data_dir}/tsdb",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=60, interval=0.1)
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: see {self.data_dir}/prometheus.log")
        try:
            return (
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).status == 200
            )
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result vector."""
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        body = json.loads(urllib.request.urlopen(url, timeout=10).read())
        if body.get("status") != "success":
            raise RuntimeError(f"PromQL {promql!r} failed: {body}")
        return body["data"]["result"]

    def targets_up(self) -> bool:
        res = self.query("up")
        return bool(res) and all(r["value"][1] == "1" for r in res)

    def wait_for_samples(
        self, promql: str, timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Wait until ``promql`` returns a non-empty result; return it."""
        return wait_for(lambda: self.query(promql), timeout=timeout, interval=0.25)

    @staticmethod
    def when(sample: dict[str, Any]) -> float:
        return float(sample["value"][0])

    @staticmethod
    def value(sample: dict[str, Any]) -> float:
        return float(sample["value"][1])
