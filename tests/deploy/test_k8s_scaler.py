"""The k8s scaler's parts that run without a Kubernetes API: retiring the
chosen workers by name through a real scheduler (only those go, whatever
pool the others are in), and the client's configuration and its retries of
throttled calls (429) against a local HTTP server."""

from __future__ import annotations

import http.server
import json
import threading
from typing import ClassVar

import kubernetes.client
import pytest
import yaml

from lepton_dask.deploy.k8s_scaler import KubernetesAPI, retire_by_name
from tests.helpers import nanny_cluster, wait_for


@pytest.mark.timeout(90)
def test_retire_by_name_retires_exactly_the_chosen_pools_workers():
    # worker names as the operator gives them: <group>-worker-<id>
    workers = {
        "lepton_default_worker_a": {},
        "lepton_default_worker_b": {},
        "lepton_gpu_worker_c": {"resources": {"GPU": 1}},
        "lepton_gpu_worker_d": {"resources": {"GPU": 1}},
    }
    with nanny_cluster(**workers) as (client, _names):
        client.wait_for_workers(4, timeout=60)
        gone = retire_by_name(client, ["lepton_gpu_worker_d"])
        assert gone == ["lepton_gpu_worker_d"]

        def left():
            info = client.scheduler_info(n_workers=-1)["workers"].values()
            return sorted(w["name"] for w in info)

        wait_for(lambda: len(left()) == 3, timeout=30)
        # the CPU workers stay; Dask's own choice (retire n anywhere) could
        # have taken one of them
        assert left() == [
            "lepton_default_worker_a",
            "lepton_default_worker_b",
            "lepton_gpu_worker_c",
        ]
        # a name the scheduler does not know retires nothing
        assert retire_by_name(client, ["lepton_gpu_worker_x"]) == []


def test_a_service_account_token_file_is_what_the_client_sends(tmp_path):
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("first\n")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # read when it connects
    api = KubernetesAPI("https://127.0.0.1:6443", str(token), str(ca))
    assert api.server == "https://127.0.0.1:6443"
    assert api.token() == "first"
    with pytest.raises(ValueError, match="needs --token-file and --ca-file"):
        KubernetesAPI("https://127.0.0.1:6443", str(token), None)


class _Throttling(http.server.BaseHTTPRequestHandler):
    """An API server that throttles the first ``throttle`` calls (429 with
    ``Retry-After: 0``), then answers as the real one does."""

    throttle = 0
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _answer(self, body: dict) -> None:
        self.seen.append(
            (self.command, self.path, self.headers.get("Authorization", ""))
        )
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if len(self.seen) <= self.throttle:
            self.send_response(429)
            self.send_header("Retry-After", "0")
            data = b'{"kind":"Status","code":429,"message":"too many requests"}'
        else:
            self.send_response(200)
            data = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._answer({"spec": {"worker": {"replicas": 4}}})

    def do_PATCH(self):
        self._answer({"spec": {"worker": {"replicas": 5}}})

    def log_message(self, *args):
        pass


@pytest.fixture
def throttling(tmp_path):
    """(kubeconfig, handler class) of a throttling server on a free port."""
    handler = type("H", (_Throttling,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": f"http://127.0.0.1:{server.server_port}"},
            }
        ],
        "users": [{"name": "u", "user": {"token": "from-kubeconfig"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    try:
        yield str(path), handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
def test_throttled_calls_are_retried_by_the_client(throttling):
    kubeconfig, handler = throttling
    api = KubernetesAPI(kubeconfig=kubeconfig)
    handler.throttle = 2
    assert api.replicas("ns", "DaskWorkerGroup", "g") == 4
    assert len(handler.seen) == 3  # two throttled, then answered
    assert {auth for *_, auth in handler.seen} == {"Bearer from-kubeconfig"}
    # a patch too (throttled requests were not carried out)
    handler.seen.clear()
    handler.throttle = 1
    api.patch("ns", "DaskWorkerGroup", "g", {"spec": {"worker": {"replicas": 5}}})
    assert [m for m, *_ in handler.seen] == ["PATCH", "PATCH"]
    # and a server that keeps throttling: the 429, after TRIES calls
    handler.seen.clear()
    handler.throttle = 100
    with pytest.raises(kubernetes.client.ApiException) as e:
        api.replicas("ns", "DaskWorkerGroup", "g")
    assert e.value.status == 429
    assert len(handler.seen) == KubernetesAPI.TRIES
