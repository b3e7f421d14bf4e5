"""A real Kubernetes API server for the deploy tests: ``kube-apiserver`` and
``etcd`` built with Go from their modules (``.ci/build-kube``, run by
``make``), started on loopback ports with self-signed certificates, RBAC on.

There is no kubelet, controller-manager or scheduler: pods never run and no
controller acts on Deployments. The tests assert on the objects the API
server stores, and on what it admits and refuses.

:class:`Kube` is the few REST calls the tests make (server-side apply,
get, list, delete, token requests), over HTTPS with a client certificate
(the admin, in ``system:masters``) or a bearer token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from lepton_dask.store._install import cache_dir
from lepton_dask.store.server import free_port

ROOT = Path(__file__).resolve().parents[2]
WRAPPERS = ROOT / ".ci" / "kube"


def _required(mod: str, prefix: str) -> str:
    for line in (WRAPPERS / mod / "go.mod").read_text().splitlines():
        if line.startswith(f"require {prefix} "):
            return line.split()[2]
    raise AssertionError(f".ci/kube/{mod}/go.mod: no `require {prefix}` line")


KUBE_VERSION = _required("apiserver", "k8s.io/kubernetes")
ETCD_VERSION = _required("etcd", "go.etcd.io/etcd/server/v3")


@cache
def binaries() -> tuple[str, str]:
    """(kube-apiserver, etcd) as `make` builds them (built here the same
    way when missing: about 11 minutes cold)."""
    bin_dir = Path(cache_dir()) / "bin"
    paths = (
        bin_dir / f"kube-apiserver-{KUBE_VERSION}",
        bin_dir / f"etcd-{ETCD_VERSION}",
    )
    if not all(os.access(p, os.X_OK) for p in paths):
        build = subprocess.run(
            [str(ROOT / ".ci" / "build-kube"), str(bin_dir)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert build.returncode == 0, f"building the API server failed:\n{build.stderr}"
    return str(paths[0]), str(paths[1])


def _detail(raw: bytes) -> dict[str, Any]:
    """The server's Status object, or its text as the message."""
    try:
        return json.loads(raw)
    except ValueError:
        return {"message": raw.decode(errors="replace")}


class KubeError(RuntimeError):
    """A refused call: the HTTP status and the server's message."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.body = body
        super().__init__(f"{status}: {body.get('message', body)}")


@dataclass
class Kube:
    """REST calls to the API server, as the admin (client certificate) or
    with a bearer token."""

    server: str
    ca: str
    cert: tuple[str, str] | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        self._discovered: dict[str, dict[str, tuple[str, bool]]] = {}
        self.context = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            self.context.load_cert_chain(*self.cert)

    #: tries of a call the server throttles (429, API Priority and Fairness)
    TRIES = 5

    def call(self, method: str, path: str, body: Any = None, ctype: str = "") -> Any:
        """The answer (JSON, else text); a refusal raises :class:`KubeError`."""
        data = None
        if body is not None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", ctype or "application/json")
        for attempt in range(self.TRIES):
            try:
                with urllib.request.urlopen(req, context=self.context, timeout=30) as r:
                    raw = r.read()
                    if r.headers.get_content_type() != "application/json":
                        return raw.decode()
                    return json.loads(raw or b"{}")
            except urllib.error.HTTPError as e:
                if e.code == 429 and attempt < self.TRIES - 1:
                    time.sleep(float(e.headers.get("Retry-After") or 1))
                    continue
                raise KubeError(e.code, _detail(e.read())) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def as_token(self, token: str) -> Kube:
        return Kube(self.server, self.ca, token=token)

    # -- discovery -------------------------------------------------------
    def resource(self, api_version: str, kind: str) -> tuple[str, str, bool]:
        """(group-version path, plural, namespaced) of ``kind``, from discovery
        (asked once per group-version, again when ``kind`` is not served yet)."""
        base = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        for fresh in (False, True):
            if fresh or base not in self._discovered:
                self._discovered[base] = {
                    r["kind"]: (r["name"], r["namespaced"])
                    for r in self.call("GET", base)["resources"]
                    if "/" not in r["name"]  # not a subresource
                }
            if kind in self._discovered[base]:
                return (base, *self._discovered[base][kind])
        raise AssertionError(f"the API server serves no {kind} in {api_version}")

    def path(self, doc: dict[str, Any]) -> str:
        """The object's own path."""
        base, plural, namespaced = self.resource(doc["apiVersion"], doc["kind"])
        if namespaced:
            ns = doc["metadata"].get("namespace")
            assert ns, f"{doc['kind']} {doc['metadata']['name']}: no namespace"
            base += f"/namespaces/{ns}"
        return f"{base}/{plural}/{doc['metadata']['name']}"

    # -- calls -----------------------------------------------------------
    def apply(self, doc: dict[str, Any], manager: str = "lepton-tests") -> dict:
        """Server-side apply, unknown or duplicate fields refused (Strict)."""
        q = urllib.parse.urlencode(
            {"fieldManager": manager, "fieldValidation": "Strict", "force": "true"}
        )
        return self.call(
            "PATCH",
            f"{self.path(doc)}?{q}",
            yaml.safe_dump(doc),
            "application/apply-patch+yaml",
        )

    def get(self, path: str) -> dict[str, Any]:
        return self.call("GET", path)

    def names(self, path: str, selector: str = "") -> list[str]:
        q = f"?labelSelector={urllib.parse.quote(selector)}" if selector else ""
        return [i["metadata"]["name"] for i in self.call("GET", path + q)["items"]]

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bound token for the ServiceAccount (the TokenRequest API)."""
        out = self.call(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )
        return out["status"]["token"]

    def wait_established(self, crd: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}"
        while time.monotonic() < deadline:
            conds = (self.get(path).get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                return
            time.sleep(0.1)
        raise AssertionError(f"CRD {crd} not established within {timeout} s")


def _certificates(d: Path) -> None:
    """A CA; the server's certificate (127.0.0.1, localhost); the admin's
    client certificate (group system:masters); the service-account keys."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def write_key(key, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def issue(subject, key, issuer, signer, ca=False, ext=None) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
        )
        if ext is not None:
            b = b.add_extension(ext, False)
        return b.sign(signer, hashes.SHA256())

    def write_cert(cert, path: Path) -> None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(name("lepton-test-ca"), ca_key, name("lepton-test-ca"), ca_key, ca=True)
    write_cert(ca, d / "ca.crt")
    san = x509.SubjectAlternativeName(
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes.default.svc"),
        ]
    )
    for stem, subject, ext in (
        ("server", name("kube-apiserver"), san),
        ("admin", name("lepton-admin", "system:masters"), None),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write_key(key, d / f"{stem}.key")
        write_cert(issue(subject, key, ca.subject, ca_key, ext=ext), d / f"{stem}.crt")
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key(sa, d / "sa.key")
    (d / "sa.pub").write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _kubeconfig(d: Path, server: str) -> Path:
    path = d / "kubeconfig"
    conf = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "t",
                "cluster": {
                    "server": server,
                    "certificate-authority": str(d / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(d / "admin.crt"),
                    "client-key": str(d / "admin.key"),
                },
            }
        ],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "admin"}}],
        "current-context": "t",
    }
    path.write_text(yaml.safe_dump(conf))
    return path


@dataclass
class ApiServer:
    """A started API server: its admin client and a kubeconfig for it."""

    admin: Kube
    kubeconfig: Path
    dir: Path


def _wait_ready(admin: Kube, procs: list[subprocess.Popen], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(
                    f"{p.args[0]} exited with {p.returncode}:\n{log.read_text()[-3000:]}"
                )
        try:
            if admin.call("GET", "/readyz") == "ok":
                return
        except (KubeError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(
        f"kube-apiserver not ready in 90 s:\n{log.read_text()[-3000:]}"
    )


@contextlib.contextmanager
def api_server() -> Iterator[ApiServer]:
    """etcd and kube-apiserver on free loopback ports, RBAC authorization;
    both are gone when the block ends."""
    import psutil

    from lepton_dask._process import end_processes

    apiserver, etcd = binaries()
    with tempfile.TemporaryDirectory(prefix="lepton-kube-") as tmp:
        d = Path(tmp)
        _certificates(d)
        client, peer, port = free_port(), free_port(), free_port()
        log = d / "server.log"
        procs: list[subprocess.Popen] = []
        try:
            with open(log, "ab") as out:
                procs.append(
                    subprocess.Popen(
                        [
                            etcd,
                            "--data-dir",
                            str(d / "etcd"),
                            "--listen-client-urls",
                            f"http://127.0.0.1:{client}",
                            "--advertise-client-urls",
                            f"http://127.0.0.1:{client}",
                            "--listen-peer-urls",
                            f"http://127.0.0.1:{peer}",
                            "--initial-advertise-peer-urls",
                            f"http://127.0.0.1:{peer}",
                            "--initial-cluster",
                            f"default=http://127.0.0.1:{peer}",
                            "--log-level",
                            "error",
                        ],
                        stdout=out,
                        stderr=out,
                    )
                )
                procs.append(
                    subprocess.Popen(
                        [
                            apiserver,
                            f"--etcd-servers=http://127.0.0.1:{client}",
                            "--bind-address=127.0.0.1",
                            "--advertise-address=127.0.0.1",
                            f"--secure-port={port}",
                            f"--cert-dir={d}",
                            f"--tls-cert-file={d / 'server.crt'}",
                            f"--tls-private-key-file={d / 'server.key'}",
                            f"--client-ca-file={d / 'ca.crt'}",
                            f"--service-account-key-file={d / 'sa.pub'}",
                            f"--service-account-signing-key-file={d / 'sa.key'}",
                            "--service-account-issuer=https://kubernetes.default.svc",
                            "--authorization-mode=RBAC",
                            "--service-cluster-ip-range=10.96.0.0/16",
                            "--endpoint-reconciler-type=none",
                            "--v=0",
                        ],
                        stdout=out,
                        stderr=out,
                    )
                )
            server = f"https://127.0.0.1:{port}"
            admin = Kube(
                server, str(d / "ca.crt"), (str(d / "admin.crt"), str(d / "admin.key"))
            )
            _wait_ready(admin, procs, log)
            yield ApiServer(admin, _kubeconfig(d, server), d)
        finally:
            end_processes(
                [psutil.Process(p.pid) for p in procs if p.poll() is None], timeout=10
            )
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
