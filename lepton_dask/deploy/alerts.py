"""Prometheus alerting rules on the ``lepton_*`` metrics, from one pure function.

The same rules ship in ``deploy/compose/alerts.yml`` (loaded by the compose
Prometheus, sent to its Alertmanager) and as a Prometheus Operator
``PrometheusRule`` (``deploy/kubernetes/monitoring.yaml``). Each rule has unit
tests with ``promtool test rules`` (``tests/deploy/alerts.test.yml``).

Series are matched on their target labels (``job``, ``instance``, and in
Kubernetes ``namespace``, ``pod``...): ``sum without (pool)`` drops only the
pool, so one scheduler's spend meets that scheduler's budget.
"""

from __future__ import annotations

from typing import Any

#: how long each condition must hold before its alert fires
FOR = {
    "LeptonSpendOverHourlyBudget": "5m",
    "LeptonBudgetExhaustedWithinHour": "5m",
    "LeptonWorkersBilledWithoutProgress": "30m",
    "LeptonUnpricedWorkers": "5m",
    "LeptonScalerInfeasible": "5m",
    "LeptonMetricsDown": "2m",
}

_SPEND_RATE = "sum without (pool) (lepton_spend_rate_usd_per_hour)"
_SPEND = "sum without (pool) (lepton_spend_usd_total)"


def rules(
    scheduler_job: str = "dask-scheduler",
    for_: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The rule groups (Prometheus rule-file ``groups``).

    ``scheduler_job`` is the scrape job of the schedulers' ``/metrics`` (the
    compose job, or the Service name a ServiceMonitor gives as ``job``);
    ``for_`` overrides :data:`FOR` per alert (tests use seconds).

    >>> [r["alert"] for r in rules()[0]["rules"]][:2]
    ['LeptonSpendOverHourlyBudget', 'LeptonBudgetExhaustedWithinHour']
    """
    fors = {**FOR, **(for_ or {})}
    unknown = set(fors) - set(FOR)
    if unknown:
        raise ValueError(f"unknown alerts in for_: {sorted(unknown)}")

    def alert(name, expr, severity, summary, description):
        return {
            "alert": name,
            "expr": expr,
            "for": fors[name],
            "labels": {"severity": severity, "component": "lepton-dask"},
            "annotations": {"summary": summary, "description": description},
        }

    return [
        {
            "name": "lepton-budget",
            "rules": [
                alert(
                    "LeptonSpendOverHourlyBudget",
                    f"{_SPEND_RATE} > lepton_budget_usd_per_hour",
                    "warning",
                    "Spend rate over the hourly budget",
                    "{{ $labels.job }} {{ $labels.instance }} spends "
                    '{{ $value | printf "%.2f" }} USD/h, over its '
                    "lepton.cost.budget-usd-per-hour.",
                ),
                alert(
                    "LeptonBudgetExhaustedWithinHour",
                    f"(lepton_budget_usd - {_SPEND}) < {_SPEND_RATE}",
                    "critical",
                    "Total budget exhausted within the hour",
                    "At the current spend rate the total budget "
                    "(lepton.cost.budget-usd) of {{ $labels.job }} "
                    "{{ $labels.instance }} runs out within an hour "
                    '(USD left below one hour of spend: {{ $value | printf "%.2f" }}).',
                ),
                alert(
                    "LeptonWorkersBilledWithoutProgress",
                    f"{_SPEND_RATE} > 0 unless sum without (pool) "
                    "(increase(lepton_tasks_completed_total[2m])) > 0",
                    "warning",
                    "Workers billed while no task completes",
                    "{{ $labels.job }} {{ $labels.instance }} pays for workers "
                    "but completed no task for "
                    + fors["LeptonWorkersBilledWithoutProgress"]
                    + ".",
                ),
                alert(
                    "LeptonUnpricedWorkers",
                    "lepton_unpriced_workers > 0",
                    "warning",
                    "Workers without a price",
                    "{{ $value }} workers of {{ $labels.job }} have an instance "
                    "type missing from the price catalog: their spend is not counted.",
                ),
            ],
        },
        {
            "name": "lepton-scaler",
            "rules": [
                alert(
                    "LeptonScalerInfeasible",
                    "lepton_scaler_infeasible > 0",
                    "warning",
                    "The scaler cannot meet its goal",
                    "The policy of {{ $labels.job }} reports its deadline or "
                    "budget cannot be met with the pools it may use.",
                ),
                alert(
                    "LeptonMetricsDown",
                    f'up{{job="{scheduler_job}"}} == 0 or '
                    f'absent(up{{job="{scheduler_job}"}})',
                    "critical",
                    "The scheduler's metrics endpoint is gone",
                    f"Prometheus cannot scrape job {scheduler_job}: spend and "
                    "budgets are not being watched.",
                ),
            ],
        },
    ]


def rule_file(scheduler_job: str = "dask-scheduler", for_=None) -> str:
    """A Prometheus rule file (``deploy/compose/alerts.yml``) as text."""
    import yaml

    return (
        "# generated by `lepton-dask deploy compose write` from "
        "lepton_dask/deploy/alerts.py\n"
        + yaml.safe_dump(
            {"groups": rules(scheduler_job, for_)}, sort_keys=False, width=88
        )
    )
