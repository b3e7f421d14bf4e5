"""A **Cost** page in the Dask dashboard (``/cost``), served by CostMonitor.

Live spend rate against the budget, cumulative spend, workers by pool over
time and the scaler's recent decisions, drawn with Bokeh in the dashboard's
own template and theme (the page shows up in the dashboard's top bar).

The page is a Bokeh server document like the dashboard's other pages: each
open browser tab gets a document that reads :meth:`CostMonitor.snapshot` once a
second and streams the new point; the history before the tab opened comes
from the monitor's :attr:`~CostMonitor.timeline` (one sample per flush
interval), so a page opened late still shows the whole run.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

logger = logging.getLogger(__name__)

#: route of the page under the dashboard's prefix
ROUTE = "cost"
#: the plugin name the CostMonitor registers under on the scheduler; the page
#: finds it there and reads only its ``snapshot()``, ``timeline``, ``log`` and
#: ``budget_usd_per_hour`` (so the dashboard does not import the cost package)
MONITOR = "lepton-cost"
#: titles of the page's plots, in order (the Chromium test looks for them)
TITLES = (
    "Spend rate (USD/hour)",
    "Cumulative spend (USD)",
    "Workers by pool",
    "Scaler decisions",
)
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def _ms(t: float) -> float:
    return t * 1000.0  # bokeh datetime axes take milliseconds since the epoch


def _point(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": _ms(snap["time"]),
        "rate": float(snap["spend_rate_usd_per_hour"]),
        "spend": float(snap["spend_usd"]),
        "workers": {p: v["workers"] for p, v in snap["pools"].items()},
    }


def _decision_rows(monitor: Any, limit: int = 20) -> dict[str, list]:
    rows = [e for e in monitor.log if e[1].get("event") == "scaler"][-limit:][::-1]
    return {
        "time": [
            datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S") for t, _ in rows
        ],
        "targets": [
            ", ".join(f"{p}={n}" for p, n in sorted(d.get("targets", {}).items()))
            for _, d in rows
        ],
        "finish": [f"{d.get('predicted_finish_s', 0.0):.0f} s" for _, d in rows],
        "reason": [str(d.get("reason", "")) for _, d in rows],
    }


class CostPage:
    """The Bokeh layout of one open Cost page, fed from one monitor."""

    def __init__(self, monitor: Any):
        from bokeh.layouts import column, row
        from bokeh.models import (
            ColumnDataSource,
            DataTable,
            Div,
            Legend,
            TableColumn,
        )
        from bokeh.plotting import figure

        self.monitor = monitor
        snap = monitor.snapshot()
        points = [_point(s) for s in monitor.timeline] + [_point(snap)]
        self.pools: list[str] = sorted({p for pt in points for p in pt["workers"]})
        self.series = ColumnDataSource(self._columns(points))
        self.decisions = ColumnDataSource(_decision_rows(monitor))
        tools = "pan,wheel_zoom,box_zoom,reset,save"

        def fig(title: str, y: str):
            f = figure(
                title=title,
                x_axis_type="datetime",
                height=260,
                sizing_mode="stretch_width",
                tools=tools,
                y_axis_label=y,
            )
            f.min_border_left = 60
            f.y_range.start = 0
            return f

        self.rate = fig(TITLES[0], "USD/hour")
        self.rate.step("time", "rate", source=self.series, line_width=2, mode="after")
        self.rate.step(
            "time",
            "budget",
            source=self.series,
            line_width=2,
            mode="after",
            color="#d62728",
            line_dash="dashed",
            legend_label="budget",
        )
        self.rate.legend.location = "bottom_left"
        self.spend = fig(TITLES[1], "USD")
        self.spend.line("time", "spend", source=self.series, line_width=2)
        self.workers = fig(TITLES[2], "workers")
        self.workers.add_layout(Legend(location="top_left"), "right")
        for pool in self.pools:
            self._add_pool_glyph(pool)
        table = DataTable(
            source=self.decisions,
            columns=[
                TableColumn(field="time", title="time", width=70),
                TableColumn(field="targets", title="targets", width=160),
                TableColumn(field="finish", title="predicted finish", width=110),
                TableColumn(field="reason", title="reason", width=600),
            ],
            height=220,
            sizing_mode="stretch_width",
            index_position=None,
        )
        self.summary = Div(text=self._summary(snap))
        self.root = column(
            self.summary,
            row(self.rate, self.spend, sizing_mode="stretch_width"),
            self.workers,
            Div(text=f"<h3>{TITLES[3]}</h3>"),
            table,
            sizing_mode="stretch_width",
        )

    def _columns(self, points: list[dict[str, Any]]) -> dict[str, list]:
        budget = self.monitor.budget_usd_per_hour
        budget = float("nan") if budget is None else float(budget)
        data: dict[str, list] = {
            "time": [p["time"] for p in points],
            "rate": [p["rate"] for p in points],
            "spend": [p["spend"] for p in points],
            "budget": [budget] * len(points),
        }
        for pool in self.pools:
            data[f"w_{pool}"] = [p["workers"].get(pool, 0) for p in points]
        return data

    def _add_pool_glyph(self, pool: str) -> None:
        color = _COLORS[self.pools.index(pool) % len(_COLORS)]
        self.workers.step(
            "time",
            f"w_{pool}",
            source=self.series,
            line_width=2,
            color=color,
            mode="after",
            legend_label=pool,
        )

    def _summary(self, s: dict[str, Any]) -> str:
        budget = self.monitor.budget_usd_per_hour
        parts = [
            f"<b>run</b> {s['run_id']}",
            f"<b>spend</b> ${s['spend_usd']:.4f}",
            f"<b>rate</b> ${s['spend_rate_usd_per_hour']:.2f}/h"
            + (f" of ${budget:.2f}/h budget" if budget is not None else ""),
            f"<b>workers</b> {s['workers']}",
            f"<b>cost/task</b> ${s['cost_per_task_usd']:.2e}",
            f"<b>utilization</b> {100 * s['utilization']:.0f}%",
        ]
        return "<h2>Cost</h2><p>" + " &nbsp;·&nbsp; ".join(parts) + "</p>"

    def update(self) -> None:
        snap = self.monitor.snapshot()
        pt = _point(snap)
        new = [p for p in sorted(pt["workers"]) if p not in self.pools]
        if new:  # a pool appeared: rebuild the columns, then draw it
            data = dict(self.series.data)
            n = len(data["time"])
            self.pools.extend(new)
            for pool in new:
                data[f"w_{pool}"] = [0] * n
            self.series.data = data
            for pool in new:
                self._add_pool_glyph(pool)
        self.series.stream(self._columns([pt]), rollover=100_000)
        self.decisions.data = _decision_rows(self.monitor)
        self.summary.text = self._summary(snap)


def cost_doc(scheduler: Any, extra: dict[str, Any], doc: Any) -> None:
    """Bokeh document function (the dashboard's signature)."""
    from distributed.dashboard.components import add_periodic_callback
    from distributed.dashboard.components.scheduler import BOKEH_THEME, env

    monitor = scheduler.plugins.get(MONITOR)
    doc.title = "Dask: Cost"
    if monitor is None:  # pragma: no cover - the page is installed by the monitor
        from bokeh.models import Div

        doc.add_root(Div(text="<h2>Cost</h2><p>no CostMonitor on this scheduler</p>"))
    else:
        page = CostPage(monitor)
        add_periodic_callback(doc, page, 1000)
        doc.add_root(page.root)
    doc.template = env.get_template("simple.html")
    doc.template_variables.update(extra)
    doc.theme = BOKEH_THEME


def install(scheduler: Any) -> str | None:
    """Serve the Cost page on ``scheduler``'s dashboard; return its path.

    Returns None (and does nothing) when the scheduler has no dashboard.
    Idempotent per scheduler.
    """
    apps = getattr(getattr(scheduler, "http_application", None), "applications", [])
    try:
        from bokeh.server.server import BokehTornado
        from distributed.dashboard.core import BokehApplication
        from distributed.dashboard.scheduler import template_variables
    except ImportError:  # no bokeh: no dashboard either
        return None
    dashboards = [a for a in apps if isinstance(a, BokehTornado)]
    if not dashboards:
        return None
    prefix = dashboards[0].prefix or ""
    path = f"{prefix.rstrip('/')}/{ROUTE}"
    if any(f"/{ROUTE}" in a.applications for a in dashboards):
        return path
    from tornado.ioloop import IOLoop

    variables = template_variables(scheduler)
    if ROUTE not in variables["pages"]:
        # the list is shared with the pages already served: the link shows there too
        variables["pages"].insert(max(len(variables["pages"]) - 1, 0), ROUTE)
    app = BokehApplication(
        {f"/{ROUTE}": cost_doc},
        scheduler,
        prefix=prefix,
        template_variables=variables,
    )
    scheduler.http_application.add_application(app)
    app.initialize(IOLoop.current())
    app.start()
    logger.info("Cost page at %s on the dashboard", path)
    return path
