"""The k8s scaler's parts that run without a Kubernetes API: retiring the
chosen workers by name through a real scheduler (only those go, whatever
pool the others are in), and rereading a rotated service-account token."""

from __future__ import annotations

import os

import pytest

from lepton_dask.deploy.k8s_scaler import KubernetesAPI, _timestamp, retire_by_name
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


def test_token_is_reread_when_the_file_changes(tmp_path):
    token = tmp_path / "token"
    token.write_text("first\n")
    api = KubernetesAPI("https://127.0.0.1:6443", str(token), None)
    assert api.token() == "first"
    token.write_text("second-rotated\n")
    os.utime(token, (1e9, 1e9))  # a new mtime even within one clock tick
    assert api.token() == "second-rotated"
    assert api.token() == "second-rotated"


def test_creation_timestamps_are_epoch_seconds():
    assert _timestamp("2026-01-01T00:00:00Z") == 1767225600.0
