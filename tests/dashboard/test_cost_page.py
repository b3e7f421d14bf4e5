"""The Cost page in the Dask dashboard, loaded in a real headless Chromium."""

from __future__ import annotations

import io
import time
import urllib.request

import dask.array as da
import numpy as np
import pytest
from distributed import Client

from lepton_dask import _protocol as protocol
from lepton_dask.cost import CostMonitor
from lepton_dask.dashboard.cost_page import TITLES
from tests.browser import Chromium
from tests.helpers import cluster_with

# Truthy once BokehJS has the document and has built views for its roots:
# the Title models' texts, the decisions table's rows, the number of views.
READY = """(() => {
  if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) return null;
  const d = Bokeh.documents[0];
  const models = [...d._all_models.values()];
  const titles = models.filter(m => m.constructor.__name__ == 'Title').map(m => m.text);
  const divs = models.filter(m => m.constructor.__name__ == 'Div').map(m => m.text);
  const tables = models.filter(m => m.constructor.__name__ == 'DataTable');
  const reasons = tables.length ? tables[0].source.data.reason : [];
  const views = Bokeh.index ? Object.keys(Bokeh.index).length : 0;
  if (!titles.length || !views) return null;
  return {titles, divs, reasons: Array.from(reasons), views};
})()"""


@pytest.fixture
def cluster_with_costs():
    monitor = CostMonitor(ledger=False, budget_usd_per_hour=1.0, flush_interval=0.2)
    with cluster_with(monitor) as cluster, Client(cluster) as client:
        yield cluster, client, monitor


def test_cost_page_is_linked_from_the_dashboard(cluster_with_costs):
    cluster, _client, monitor = cluster_with_costs
    assert monitor.page == "/cost"
    base = f"http://127.0.0.1:{cluster.scheduler.http_server.port}"
    status = urllib.request.urlopen(f"{base}/status", timeout=30).read().decode()
    assert 'href="cost">Cost</a>' in status  # in the top bar of the other pages
    page = urllib.request.urlopen(f"{base}/cost", timeout=30).read().decode()
    assert "Dask Diagnostic UI" in page and "static/js/bokeh" in page  # in the template


def test_cost_page_renders_in_chromium(cluster_with_costs, tmp_path):
    import matplotlib.image

    cluster, client, _monitor = cluster_with_costs
    x = da.random.random((2000, 2000), chunks=500)
    assert np.isfinite(x.sum().compute())
    # what a scaler reports after each decision, over the scheduler's real comm
    client.sync(
        getattr(client.scheduler, protocol.SCALER_DECISION),
        decision={
            "targets": {"default": 3},
            "reason": "deadline 60 s needs 3 workers",
            "predicted_finish_s": 42.0,
            "changed": True,
        },
    )
    time.sleep(0.5)  # a few timeline samples (flush interval 0.2 s)
    url = f"http://127.0.0.1:{cluster.scheduler.http_server.port}/cost"
    with Chromium() as browser:
        seen = browser.visit(url, READY)
    (tmp_path / "cost.png").write_bytes(seen["png"])
    ready = seen["ready"]
    assert set(TITLES[:3]) <= set(ready["titles"])
    assert any(TITLES[3] in d for d in ready["divs"])
    assert any("spend" in d and "budget" in d for d in ready["divs"])
    assert ready["reasons"] == ["deadline 60 s needs 3 workers"]

    img = matplotlib.image.imread(io.BytesIO(seen["png"]), format="png")[..., :3]
    assert img.shape[1] == 1400 and img.shape[0] > 600
    body = img[60:, :, :]  # below the dashboard's top bar
    background = np.median(body.reshape(-1, 3), axis=0)
    drawn = np.abs(body - background).sum(axis=2) > 0.1
    assert drawn.mean() > 0.01, "page is blank below the top bar"
    # the plotted series are drawn in their colours: the first pool's blue
    # (#1f77b4) lines and the budget's dashed red (#d62728)
    for rgb in ((0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)):
        close = np.abs(body - np.array(rgb) / 255.0).max(axis=2) < 0.05
        assert close.sum() > 50, f"no pixels of colour {rgb}"
