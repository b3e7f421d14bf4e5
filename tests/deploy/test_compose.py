"""The compose stack, checked without Docker: valid YAML, pinned images,
every referenced file present, ports consistent with Prometheus's scrape
targets, and no credential with a default."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from lepton_dask.deploy.kubernetes import _pinned

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
CREDENTIALS = (
    "MONGO_USER",
    "MONGO_PASSWORD",
    "GRAFANA_ADMIN_USER",
    "GRAFANA_ADMIN_PASSWORD",
)


def load():
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def test_services_and_images_pinned():
    doc = load()
    services = doc["services"]
    assert {
        "mongo",
        "scheduler",
        "worker-cpu",
        "worker-gpu",
        "prometheus",
        "grafana",
    } <= set(services)
    for name, svc in services.items():
        assert _pinned(svc["image"]), f"{name}: image {svc['image']} not pinned"
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "GPU=1" in gpu["command"] and "cuda" in gpu["image"]


def test_referenced_files_exist():
    doc = load()
    for name, svc in doc["services"].items():
        build = svc.get("build")
        if build:
            ctx = (COMPOSE / build["context"]).resolve()
            assert (ctx / build["dockerfile"]).is_file(), name
            assert (ctx / "pyproject.toml").is_file()
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE / src).exists(), f"{name}: {src} missing"
    # what Grafana is given: provisioning with data source and dashboards
    assert (ROOT / "dashboards/provisioning/datasources/lepton.yaml").is_file()
    home = doc["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert (ROOT / "dashboards" / Path(home).name).is_file()


def test_ports_agree_with_prometheus_and_preload():
    doc = load()
    prom = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    (target,) = jobs["dask-scheduler"]["static_configs"][0]["targets"]
    host, port = target.split(":")
    sched = doc["services"][host]
    assert f":{port}" in sched["command"]  # --dashboard-address serves /metrics
    workers = jobs["dask-workers"]["dns_sd_configs"][0]
    for name in workers["names"]:
        cmd = doc["services"][name]["command"]
        assert f":{workers['port']}" in cmd and "tcp://scheduler:8786" in cmd
        assert "lepton_dask.cost.preload" in cmd
    assert "lepton_dask.cost.preload" in sched["command"]
    # published ports are loopback-only
    for name, svc in doc["services"].items():
        for p in svc.get("ports", []):
            assert p.startswith("127.0.0.1:"), (
                f"{name} publishes {p} on every interface"
            )


def test_credentials_have_no_defaults_and_missing_ones_are_named():
    text = (COMPOSE / "compose.yaml").read_text()
    refs = re.findall(r"\$\{([A-Z_]+)([^}]*)\}", text)
    used = {name for name, _ in refs}
    assert set(CREDENTIALS) <= used
    for name, rest in refs:
        if name in CREDENTIALS:
            # ${NAME:?message}: compose stops with the message when NAME is unset
            # or empty; the message names the variable
            assert rest.startswith(":?") and name in rest, f"${{{name}{rest}}}"
    # no service sets a user or password literally
    for name, svc in load()["services"].items():
        env = svc.get("environment", {})
        for key, value in env.items():
            if re.search(r"USER|PASSWORD", key) and key.endswith(
                ("USER", "USERNAME", "PASSWORD")
            ):
                assert str(value).startswith("${") and ":?" in value, f"{name}: {key}"
        uri = env.get("LEPTON_MONGO_URI", "")
        if uri:
            assert "${MONGO_USER:?" in uri and "${MONGO_PASSWORD:?" in uri
    example = (COMPOSE / ".env.example").read_text()
    for name in CREDENTIALS:
        assert re.search(rf"^{name}=$", example, re.M), name  # named, no value
    assert "deploy/compose/.env" in (ROOT / ".gitignore").read_text()


def test_worker_limits_match_their_priced_instance_type():
    from lepton_dask.cost.catalog import load_catalog

    catalog = load_catalog()
    for name in ("worker-cpu", "worker-gpu"):
        svc = load()["services"][name]
        itype = catalog[svc["environment"]["LEPTON_INSTANCE_TYPE"]]
        limits = svc["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) == itype.vcpus, name
        assert limits["memory"] == f"{int(itype.memory_gib)}G", name
    # MongoDB is reachable from this machine only (the README's notebook snippet)
    assert load()["services"]["mongo"]["ports"] == ["127.0.0.1:27017:27017"]
