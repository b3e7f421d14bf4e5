"""Concurrent clients against one service, readers of an array being
re-published, /metrics scraped every 100 ms: nothing lost, nothing mixed."""

from __future__ import annotations

import pytest

from lepton_dask.service_load import Service, run_load


@pytest.mark.timeout(300)
def test_concurrent_clients_readers_and_scrapes(mongo_uri):
    with Service(mongo_uri, "load_test", workers=2) as svc:
        res = run_load(
            svc.scheduler, mongo_uri, "load_test",
            clients=8, processes=2, iterations=2, rows=4_000, readers=2,
            metrics_url=svc.metrics, service_pid=svc.pid,
        )  # fmt: skip
    s = res.summary()
    assert not res.errors, res.errors[:3]
    assert s["lost"] == 0 and s["ops"] == 8 * 2 * 2
    assert s["mixed_reads"] == 0 and s["shared_reads"] > 0 and s["publishes"] > 0
    assert s["scrapes"] > 0 and s["scrape_errors"] == 0
