"""The three dashboards (cost, throughput, scaling), panel by panel."""

from __future__ import annotations

from typing import Any

from lepton_dask.dashboard._model import POOL, SEL, dashboard, panel


def cost_dashboard() -> dict[str, Any]:
    spend = f"sum(lepton_spend_usd_total{{{POOL}}})"
    rate = f"sum(lepton_spend_rate_usd_per_hour{{{POOL}}})"
    left = f"(max(lepton_budget_usd{{{SEL}}}) - sum(lepton_spend_usd_total{{{SEL}}}))"
    return dashboard(
        "lepton-cost",
        "lepton: cost",
        _cost_first(spend, rate, left) + _cost_second(spend, rate, left),
    )


def _cost_first(spend: str, rate: str, left: str) -> list[dict[str, Any]]:
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
    ]


def _cost_second(spend: str, rate: str, left: str) -> list[dict[str, Any]]:
    return [
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
    busy = f"sum(increase(lepton_task_compute_seconds_total{{{POOL}}}[$__range]))"
    paid = f"sum(increase(lepton_paid_thread_seconds_total{{{POOL}}}[$__range]))"
    return dashboard(
        "lepton-throughput",
        "lepton: throughput",
        _throughput_first(busy, paid) + _throughput_second(busy, paid),
    )


def _throughput_first(busy: str, paid: str) -> list[dict[str, Any]]:
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


def _throughput_second(busy: str, paid: str) -> list[dict[str, Any]]:
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
        *_cache_panels(),
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

    return dashboard(
        "lepton-scaling", "lepton: scaling", _scaling_first() + _scaling_second()
    )


def _scaling_first() -> list[dict[str, Any]]:
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
        panel(
            "Workers by pool",
            [(f"sum by (pool) (lepton_workers{{{POOL}}})", "{{pool}}")],
            stack=True,
        ),
    ]


def _scaling_second() -> list[dict[str, Any]]:
    return [
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
        panel(
            "Decisions per minute",
            [
                (
                    f"sum(rate(lepton_scaler_decisions_total{{{SEL}}}[$__rate_interval])) * 60",
                    "decisions/min",
                )
            ],
        ),
    ]
