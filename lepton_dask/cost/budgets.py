"""Budgets: a spending limit per hour and in total, and the check that warns
when a run goes over one.

A budget comes from the CostMonitor's arguments or from
``lepton.cost.budget-usd-per-hour`` and ``lepton.cost.budget-usd``. Every
flush interval the monitor checks its snapshot against it: crossing a budget
logs one warning (again only after spend has come back under it) and sets
``lepton_budget_exceeded``. A budget only raises the alarm; keeping spend under
one is a scaling policy's job (the SLO policy with a budget).
"""

from __future__ import annotations

import logging
from typing import Any

import dask.config

__all__ = ["Budget"]

logger = logging.getLogger(__name__)

_UNITS = {"rate": "$/hour", "total": "$"}


class Budget:
    """Spending limits and whether spend is over them now.

    Parameters
    ----------
    usd_per_hour : float, optional
        The most the cluster may cost per hour (the ``rate`` budget).
    usd : float, optional
        The most the run may cost in total (the ``total`` budget).

    Examples
    --------
    >>> b = Budget(usd_per_hour=0.1)
    >>> b.check({"spend_rate_usd_per_hour": 0.2, "spend_usd": 1.0}, now=0.0)
    [(0.0, {'event': 'budget-exceeded', 'kind': 'rate', 'value': 0.2, 'budget': 0.1})]
    >>> b.exceeded
    {'rate': True, 'total': False}
    """

    def __init__(self, usd_per_hour: float | None = None, usd: float | None = None):
        self.usd_per_hour = _limit(usd_per_hour, "budget-usd-per-hour")
        self.usd = _limit(usd, "budget-usd")
        #: whether spend was over each budget at the last check
        self.exceeded = {"rate": False, "total": False}

    @classmethod
    def from_config(
        cls, usd_per_hour: float | None = None, usd: float | None = None
    ) -> Budget:
        """The budgets given, else those of ``lepton.cost``; a budget that is
        not a positive number raises ``ValueError``.

        >>> Budget.from_config(usd=5).usd
        5.0
        """
        cfg = dask.config.get("lepton.cost")
        return cls(
            cfg.get("budget-usd-per-hour") if usd_per_hour is None else usd_per_hour,
            cfg.get("budget-usd") if usd is None else usd,
        )

    def check(self, snap: dict[str, Any], now: float) -> list[tuple[float, dict]]:
        """Compare a CostMonitor snapshot with the budgets: update
        :attr:`exceeded`, warn once per crossing, and return the crossings as
        ``(now, event)`` entries for the monitor's log."""
        events = []
        for kind, value, budget in (
            ("rate", snap["spend_rate_usd_per_hour"], self.usd_per_hour),
            ("total", snap["spend_usd"], self.usd),
        ):
            over = budget is not None and value > budget
            if over and not self.exceeded[kind]:
                unit = _UNITS[kind]
                logger.warning(
                    "cost budget exceeded: %s %.4f %s > budget %.4f %s",
                    kind,
                    value,
                    unit,
                    budget,
                    unit,
                )
                events.append(
                    (
                        now,
                        {
                            "event": "budget-exceeded",
                            "kind": kind,
                            "value": value,
                            "budget": budget,
                        },
                    )
                )
            self.exceeded[kind] = over
        return events


def _limit(v: Any, key: str) -> float | None:
    """No budget (None), or a positive number of dollars (``lepton.cost.<key>``)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or v <= 0:
        raise ValueError(f"lepton.cost.{key} must be a positive number, got {v!r}")
    return float(v)
