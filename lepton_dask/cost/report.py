"""Spend reports: a small DataFrame-like table."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any


class Table:
    """Rows with named columns; prints as a table, converts to pandas.

    >>> t = Table(["a", "b"], [[1, 2.5]])
    >>> t["b"]
    [2.5]
    >>> print(t)
    | a | b   |
    |---|-----|
    | 1 | 2.5 |
    """

    def __init__(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str = ""
    ):
        self.columns = list(columns)
        self.rows = [list(r) for r in rows]
        self.title = title

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, column: str) -> list[Any]:
        j = self.columns.index(column)
        return [r[j] for r in self.rows]

    def to_records(self) -> list[dict[str, Any]]:
        """Rows as dicts."""
        return [dict(zip(self.columns, r, strict=False)) for r in self.rows]

    def to_pandas(self):
        """A ``pandas.DataFrame`` (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.columns)

    def __str__(self) -> str:
        cells = [self.columns] + [[_fmt(c) for c in r] for r in self.rows]
        widths = [max(len(str(r[j])) for r in cells) for j in range(len(self.columns))]

        def line(r):
            return (
                "| "
                + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False))
                + " |"
            )

        out = ([self.title] if self.title else []) + [line(cells[0])]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out += [line(r) for r in cells[1:]]
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if v is None:
        return "-"
    return str(v)


def _when(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


def report_table(docs: list[dict[str, Any]], run_id: str) -> Table:
    """Per-lifetime spend rows (ledger documents) and a total row.

    >>> d = {"worker": "w", "pool": "p", "instance_type": "t", "pricing": "spot",
    ...      "usd_per_hour": 1.0, "start": 0.0, "end": 60.0,
    ...      "billed_seconds": 60.0, "billed_usd": 1 / 60}
    >>> report_table([d], "r")["billed_usd"][-1] == 1 / 60
    True
    """
    docs = sorted(docs, key=lambda d: (d["start"], d["worker"]))
    cols = [
        "worker",
        "pool",
        "instance_type",
        "pricing",
        "usd_per_hour",
        "start",
        "end",
        "billed_seconds",
        "billed_usd",
    ]
    rows = [
        [
            d["worker"],
            d["pool"],
            d["instance_type"],
            d["pricing"],
            d["usd_per_hour"],
            _when(d["start"]),
            _when(d.get("end")) or "running",
            d["billed_seconds"],
            d["billed_usd"],
        ]
        for d in docs
    ]
    rows.append(
        [
            "TOTAL",
            "",
            "",
            "",
            None,
            None,
            None,
            sum(d["billed_seconds"] for d in docs),
            sum(d["billed_usd"] for d in docs),
        ]
    )
    return Table(cols, rows, title=f"spend of run {run_id}")
