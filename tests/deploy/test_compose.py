"""The compose stack, checked without Docker: loaded by compose-go (the loader
of Docker Compose itself: interpolation, the compose-spec schema, consistency),
pinned images, every referenced file present, ports consistent with
Prometheus's scrape targets, and no credential with a default."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lepton_dask.deploy.spec import _pinned
from lepton_dask.store._install import cache_dir

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose"
CREDENTIALS = (
    "MONGO_USER",
    "MONGO_PASSWORD",
    "GRAFANA_ADMIN_USER",
    "GRAFANA_ADMIN_PASSWORD",
)


CHECKER = Path(__file__).resolve().parent / "composecheck"


def load():
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


# -- compose-go --------------------------------------------------------------------
@functools.cache
def composecheck() -> str:
    """tests/deploy/composecheck (compose-go at the version its go.mod pins),
    built once into ``~/.cache/lepton-dask/bin`` under a name keyed by its
    source, so an edit rebuilds it and a rerun does not."""
    sources = [CHECKER / n for n in ("go.mod", "go.sum", "main.go")]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    dest = Path(cache_dir()) / "bin" / f"composecheck-{digest[:12]}"
    if os.access(dest, os.X_OK):
        return str(dest)
    go = shutil.which("go") or "/usr/local/go/bin/go"
    assert os.access(go, os.X_OK), "the compose check needs the Go toolchain (>= 1.24)"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    build = subprocess.run(
        [go, "build", "-trimpath", "-o", str(tmp), "."],
        cwd=CHECKER,
        env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert build.returncode == 0, f"building composecheck failed:\n{build.stderr}"
    os.replace(tmp, dest)
    return str(dest)


def credentials() -> dict[str, str]:
    return {name: f"{name.lower()}-{secrets.token_hex(4)}" for name in CREDENTIALS}


def compose_config(compose_dir: Path, env: dict[str, str], *args: str):
    """compose-go's view of ``compose_dir/compose.yaml`` with the project's env
    file (``.env.example``) and ``env`` as the only environment (nothing leaks in
    from the caller's)."""
    return subprocess.run(
        [composecheck(), "-f", str(compose_dir / "compose.yaml"),
         "-env-file", str(compose_dir / ".env.example"), *args],
        env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_compose_go_loads_the_stack_with_credentials_interpolated():
    creds = credentials()
    out = compose_config(COMPOSE, creds)
    assert out.returncode == 0, out.stderr
    project = json.loads(out.stdout)
    assert project["name"] == "lepton"
    services = project["services"]
    # the GPU worker is behind its profile
    assert set(services) == {
        "mongo", "scheduler", "worker-cpu", "prometheus", "alertmanager", "grafana"
    }  # fmt: skip
    uri = (
        f"mongodb://{creds['MONGO_USER']}:{creds['MONGO_PASSWORD']}"
        "@mongo:27017/?authSource=admin"
    )
    for name in ("scheduler", "worker-cpu"):
        assert services[name]["environment"]["LEPTON_MONGO_URI"] == uri, name
        assert services[name]["image"] == load()["services"][name]["image"]
    mongo_env = services["mongo"]["environment"]
    assert mongo_env["MONGO_INITDB_ROOT_USERNAME"] == creds["MONGO_USER"]
    assert mongo_env["MONGO_INITDB_ROOT_PASSWORD"] == creds["MONGO_PASSWORD"]
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"] == creds["GRAFANA_ADMIN_PASSWORD"]
    cpu = services["worker-cpu"]["deploy"]
    assert cpu["replicas"] == 2
    assert cpu["resources"]["limits"] == {"cpus": 2, "memory": str(8 * 2**30)}
    # every bind mount, resolved by the loader, is a file or folder of the repo
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            if vol["type"] == "bind":
                assert Path(vol["source"]).exists(), f"{name}: {vol['source']}"
                assert vol.get("read_only"), f"{name}: {vol['target']} writable"
    assert set(project["volumes"]) == {"mongo-data", "prometheus-data", "grafana-data"}


def test_compose_go_loads_the_gpu_profile():
    out = compose_config(COMPOSE, credentials(), "-profile", "gpu")
    assert out.returncode == 0, out.stderr
    gpu = json.loads(out.stdout)["services"]["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == 1
    assert gpu["deploy"]["resources"]["limits"] == {
        "cpus": 4,
        "memory": str(16 * 2**30),
    }
    assert gpu["environment"]["LEPTON_INSTANCE_TYPE"] == "g5.xlarge"


def test_compose_go_names_each_missing_credential():
    # the project's env file alone: every credential named there, none set
    out = compose_config(COMPOSE, {})
    assert out.returncode == 1 and out.stdout == ""
    for name in CREDENTIALS:
        assert f"set {name} (see deploy/compose/.env.example)" in out.stderr, name
    # one missing among the rest is still refused, and named
    creds = credentials()
    del creds["MONGO_PASSWORD"]
    out = compose_config(COMPOSE, creds)
    assert out.returncode == 1
    assert "required variable MONGO_PASSWORD is missing a value" in out.stderr
    assert "GRAFANA_ADMIN_PASSWORD" not in out.stderr


BROKEN = {
    "misspelt key": (
        "    image: mongo:7.0.14", "    imagee: mongo:7.0.14", "services.mongo.imagee"
    ),
    "unknown dependency": (
        "      - alertmanager\n", "      - alertmanagr\n",
        'depends on undefined service "alertmanagr"',
    ),
    "undeclared volume": (
        "      - mongo-data:/data/db", "      - mongo-dat:/data/db",
        "undefined volume mongo-dat",
    ),
    "bad type": ("      replicas: 2", "      replicas: two", "replicas"),
    "bad port": (
        '"127.0.0.1:9090:9090"', '"127.0.0.1:9090:99999"', "Invalid containerPort"
    ),
    "bad YAML": ("  grafana-data:\n", "  grafana-data: [\n", "yaml:"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_compose_go_rejects_a_broken_copy(tmp_path, case):
    """A copy of deploy/compose with one mistake fails to load, with the
    loader's message; the unchanged copy loads (the mistake is the cause)."""
    old, new, message = BROKEN[case]
    copy = tmp_path / "deploy" / "compose"
    shutil.copytree(COMPOSE, copy, ignore=shutil.ignore_patterns(".env"))
    creds = credentials()
    assert compose_config(copy, creds).returncode == 0
    text = (copy / "compose.yaml").read_text()
    assert text.count(old) == 1, f"{case}: {old!r} not once in compose.yaml"
    (copy / "compose.yaml").write_text(text.replace(old, new))
    out = compose_config(copy, creds)
    assert out.returncode == 1 and out.stdout == "", case
    assert message in out.stderr, out.stderr


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
