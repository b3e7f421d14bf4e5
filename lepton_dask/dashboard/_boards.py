"""The panels of the three Grafana dashboards (cost, throughput, scaling):
which figures each shows, and their PromQL."""

from __future__ import annotations

from typing import Any

from lepton_dask.dashboard._model import POOL, SEL, dashboard, panel


def cost_dashboard() -> dict[str, Any]:
    """What the cluster costs: the figures now, then spend over time."""
    return dashboard("lepton-cost", "lepton: cost", _cost_now() + _cost_over_time())


def _cost_now() -> list[dict[str, Any]]:
    """Stat panels: spend, its rate, the cost of a task, the budgets and how
    long the money lasts, workers missing a price."""
    spend = f"sum(lepton_spend_usd_total{{{POOL}}})"
    rate = f"sum(lepton_spend_rate_usd_per_hour{{{POOL}}})"
    left = f"(max(lepton_budget_usd{{{SEL}}}) - sum(lepton_spend_usd_total{{{SEL}}}))"
    return [
        panel("Spend", [(spend, "USD")], unit="currencyUSD", kind="stat", decimals=4),
        panel(
            "Spend rate",
            [(rate, "USD/h")],
            unit="currencyUSD",
            kind="stat",
            decimals=2,
        ),
        panel(
            "Cost per task",
            [
                (
                    f"sum(increase(lepton_spend_usd_total{{{POOL}}}[$__range])) / sum(increase(lepton_tasks_completed_total{{{POOL}}}[$__range]))",
                    "USD/task",
                )
            ],
            unit="currencyUSD",
            kind="stat",
            decimals=6,
            description="spend over tasks completed in the dashboard's time range",
        ),
        panel(
            "Budget exceeded",
            [(f"max(lepton_budget_exceeded{{{SEL}}})", "exceeded")],
            kind="stat",
            thresholds=[(None, "green"), (1, "red")],
            mappings={"0": ("within budget", "green"), "1": ("EXCEEDED", "red")},
            description="1 when a configured budget (per hour or total) is exceeded",
        ),
        panel(
            "Total budget",
            [(f"max(lepton_budget_usd{{{SEL}}})", "USD")],
            unit="currencyUSD",
            kind="stat",
            decimals=2,
        ),
        panel(
            "Time to budget exhaustion",
            [
                (
                    f"{left} / sum(lepton_spend_rate_usd_per_hour{{{SEL}}}) * 3600",
                    "left",
                )
            ],
            unit="s",
            kind="stat",
            thresholds=[(None, "red"), (3600, "orange"), (6 * 3600, "green")],
            description="USD left of lepton.cost.budget-usd at the current spend rate",
        ),
        panel(
            "Unpriced workers",
            [(f"max(lepton_unpriced_workers{{{SEL}}})", "unpriced")],
            kind="stat",
            thresholds=[(None, "green"), (1, "red")],
            description="workers whose instance type is missing from the price catalog",
        ),
        panel(
            "Spend in range",
            [(f"sum(increase(lepton_spend_usd_total{{{POOL}}}[$__range]))", "USD")],
            unit="currencyUSD",
            kind="stat",
            decimals=4,
        ),
    ]


def _cost_over_time() -> list[dict[str, Any]]:
    """Time series: spend and its rate against the budgets, spend by pool,
    cost per task and per GB of results."""
    spend = f"sum(lepton_spend_usd_total{{{POOL}}})"
    rate = f"sum(lepton_spend_rate_usd_per_hour{{{POOL}}})"
    return [
        panel(
            "Spend rate vs budget",
            [
                (rate, "spend rate"),
                (f"max(lepton_budget_usd_per_hour{{{SEL}}})", "budget"),
            ],
            unit="currencyUSD",
            description="USD per hour now, against lepton.cost.budget-usd-per-hour",
        ),
        panel(
            "Cumulative spend vs total budget",
            [(spend, "spend"), (f"max(lepton_budget_usd{{{SEL}}})", "budget")],
            unit="currencyUSD",
        ),
        panel(
            "Spend by pool",
            [(f"sum by (pool) (lepton_spend_usd_total{{{POOL}}})", "{{pool}}")],
            unit="currencyUSD",
            stack=True,
        ),
        panel(
            "Cost per task and per GB",
            [
                (
                    f"sum(rate(lepton_spend_usd_total{{{POOL}}}[$__rate_interval])) / sum(rate(lepton_tasks_completed_total{{{POOL}}}[$__rate_interval]))",
                    "per task",
                ),
                (
                    f"sum(rate(lepton_spend_usd_total{{{POOL}}}[$__rate_interval])) / sum(rate(lepton_computed_bytes_total{{{POOL}}}[$__rate_interval])) * 1e9",
                    "per GB of results",
                ),
            ],
            unit="currencyUSD",
            description="over each point's interval (not since the scheduler started)",
        ),
    ]


def throughput_dashboard() -> dict[str, Any]:
    """What the money buys: work done and how busy the paid workers are, then
    the same by pool, the queue, and where feature reads come from."""
    return dashboard(
        "lepton-throughput",
        "lepton: throughput",
        _throughput_now() + _throughput_by_pool() + _cache_panels(),
    )


def _throughput_now() -> list[dict[str, Any]]:
    """Stat panels: tasks and result bytes per second, utilization (busy over
    paid thread-seconds) and the workers running."""
    busy = f"sum(increase(lepton_task_compute_seconds_total{{{POOL}}}[$__range]))"
    paid = f"sum(increase(lepton_paid_thread_seconds_total{{{POOL}}}[$__range]))"
    return [
        panel(
            "Tasks/s",
            [
                (
                    f"sum(rate(lepton_tasks_completed_total{{{POOL}}}[$__rate_interval]))",
                    "tasks/s",
                )
            ],
            kind="stat",
            decimals=1,
        ),
        panel(
            "Results",
            [
                (
                    f"sum(rate(lepton_computed_bytes_total{{{POOL}}}[$__rate_interval]))",
                    "bytes/s",
                )
            ],
            unit="Bps",
            kind="stat",
        ),
        panel(
            "Utilization",
            [(f"{busy} / {paid}", "busy/paid")],
            unit="percentunit",
            kind="stat",
            description="busy over paid thread-seconds in the dashboard's time range",
        ),
        panel(
            "Workers",
            [(f"sum(dask_scheduler_workers{{{SEL}}})", "workers")],
            kind="stat",
            decimals=0,
        ),
    ]


def _throughput_by_pool() -> list[dict[str, Any]]:
    """Time series: tasks, result bytes and utilization per pool, and the
    scheduler's queue by task state."""
    return [
        panel(
            "Tasks per second",
            [
                (
                    f"sum(lepton_throughput_tasks_per_second{{{SEL}}})",
                    "last minute (monitor)",
                ),
                (
                    f"sum by (pool) (rate(lepton_tasks_completed_total{{{POOL}}}[$__rate_interval]))",
                    "{{pool}}",
                ),
            ],
            unit="ops",
        ),
        panel(
            "Result bytes per second",
            [
                (
                    f"sum by (pool) (rate(lepton_computed_bytes_total{{{POOL}}}[$__rate_interval]))",
                    "{{pool}}",
                )
            ],
            unit="Bps",
        ),
        panel(
            "Utilization by pool",
            [
                (
                    f"sum by (pool) (rate(lepton_task_compute_seconds_total{{{POOL}}}[$__rate_interval])) / sum by (pool) (rate(lepton_paid_thread_seconds_total{{{POOL}}}[$__rate_interval]))",
                    "{{pool}}",
                )
            ],
            unit="percentunit",
            description="busy thread-seconds over paid thread-seconds, per interval",
        ),
        panel(
            "Queue: tasks by state",
            [(f"sum by (state) (dask_scheduler_tasks{{{SEL}}})", "{{state}}")],
            stack=True,
        ),
    ]


def _cache_panels() -> list[dict[str, Any]]:
    """Feature reads: how much came from the hosts' block caches."""
    hits = f"sum(increase(lepton_store_cache_hits_total{{{SEL}}}[$__range]))"
    misses = f"sum(increase(lepton_store_cache_misses_total{{{SEL}}}[$__range]))"
    return [
        panel(
            "Feature reads: block cache vs server",
            [
                (
                    f"sum by (source) (rate(lepton_store_bytes_read_total{{{SEL}}}[$__rate_interval]))",
                    "{{source}}",
                )
            ],
            unit="Bps",
            stack=True,
            description="bytes of feature blocks read per second, from the hosts' "
            "block caches and from MongoDB (the scheduler sums its workers)",
        ),
        panel(
            "Block cache hit ratio",
            [(f"{hits} / clamp_min({hits} + {misses}, 1)", "hits/reads")],
            unit="percentunit",
            kind="stat",
            description="block reads served from a cache in the dashboard's time range",
        ),
        panel(
            "Damaged cache entries",
            [
                (
                    f"sum(increase(lepton_store_cache_corrupt_total{{{SEL}}}[$__range]))",
                    "dropped and read again",
                )
            ],
            kind="stat",
            decimals=0,
            description="cache files that failed their checksum: dropped, read "
            "again from the server, never returned",
        ),
    ]


def scaling_dashboard() -> dict[str, Any]:
    """What the cost-aware scaler decides: its latest decision, the workers it
    asks for against the deadline, and the predictive policy's forecast."""
    return dashboard(
        "lepton-scaling",
        "lepton: scaling",
        _scaler_decision()
        + _scaler_workers()
        + _forecast_panels()
        + [_decision_rate()],
    )


def _scaler_decision() -> list[dict[str, Any]]:
    """Stat panels: the decisions taken, whether the deadline is feasible, and
    the latest decision's predicted finish and spend."""
    return [
        panel(
            "Decisions (in range)",
            [
                (
                    f"sum(increase(lepton_scaler_decisions_total{{{SEL}}}[$__range]))",
                    "decisions",
                )
            ],
            kind="stat",
            decimals=0,
        ),
        panel(
            "Infeasible",
            [(f"max(lepton_scaler_infeasible{{{SEL}}})", "infeasible")],
            kind="stat",
            thresholds=[(None, "green"), (1, "red")],
            mappings={"0": ("feasible", "green"), "1": ("INFEASIBLE", "red")},
        ),
        panel(
            "Predicted finish",
            [(f"max(lepton_scaler_predicted_finish_seconds{{{SEL}}})", "finish")],
            unit="s",
            kind="stat",
        ),
        panel(
            "Predicted spend",
            [(f"sum(lepton_scaler_predicted_spend_usd{{{SEL}}})", "USD")],
            unit="currencyUSD",
            kind="stat",
            decimals=4,
        ),
    ]


def _scaler_workers() -> list[dict[str, Any]]:
    """Time series: the workers by pool, what the scaler asks for against what
    runs, and the predicted finish against the deadline."""
    return [
        panel(
            "Workers by pool",
            [(f"sum by (pool) (lepton_workers{{{POOL}}})", "{{pool}}")],
            stack=True,
        ),
        panel(
            "Desired vs actual workers",
            [
                (
                    f"sum by (pool) (lepton_scaler_target_workers{{{POOL}}})",
                    "target {{pool}}",
                ),
                (f"sum by (pool) (lepton_workers{{{POOL}}})", "actual {{pool}}"),
                (f"sum(dask_scheduler_desired_workers{{{SEL}}})", "Dask's desired"),
            ],
            description="what the cost-aware scaler asks for, what is running, and what Dask's own adaptive would ask for",
        ),
        panel(
            "Predicted finish vs deadline",
            [
                (
                    f"max(lepton_scaler_predicted_finish_seconds{{{SEL}}})",
                    "predicted finish",
                ),
                (
                    f"max(lepton_scaler_time_to_deadline_seconds{{{SEL}}})",
                    "time to deadline",
                ),
            ],
            unit="s",
            description="the deadline policy is on time while the first line is below the second",
        ),
    ]


def _forecast_panels() -> list[dict[str, Any]]:
    """The predictive policy: the workers it wants warm for the next forecast
    batch, and how often the forecast hit."""
    return [
        panel(
            "Forecast vs actual workers",
            [
                (
                    f"sum(lepton_forecast_workers{{{SEL}}}) or vector(0)",
                    "forecast",
                ),
                (
                    f"sum(lepton_prewarmed_workers{{{SEL}}}) or vector(0)",
                    "pre-warmed",
                ),
                (f"sum(lepton_workers{{{POOL}}})", "actual"),
            ],
            description="workers the predictive policy wants warm for the next forecast batch, those it launched ahead of one, and those running (0 without a predictive policy)",
        ),
        panel(
            "Forecast hits and misses (in range)",
            [
                (
                    f"sum(increase(lepton_forecast_hits_total{{{SEL}}}[$__range])) or vector(0)",
                    "hits",
                ),
                (
                    f"sum(increase(lepton_forecast_misses_total{{{SEL}}}[$__range])) or vector(0)",
                    "misses",
                ),
            ],
            kind="stat",
            decimals=0,
            description="forecast batches that arrived in their window, and those that did not (three misses in five switch the forecast off)",
        ),
    ]


def _decision_rate() -> dict[str, Any]:
    """Time series: how often the scaler decides."""
    return panel(
        "Decisions per minute",
        [
            (
                f"sum(rate(lepton_scaler_decisions_total{{{SEL}}}[$__rate_interval])) * 60",
                "decisions/min",
            )
        ],
    )
