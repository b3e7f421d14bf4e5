"""The spend ledger in MongoDB: one document per worker lifetime per run.

``_id = "<run>/<worker>/<start ms>"``, so re-flushing a lifetime replaces its
document (idempotent) and a worker that returns is a new lifetime, never a
second bill for the same seconds.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pymongo

from lepton_dask.cost.billing import Lifetime, billed_seconds
from lepton_dask.store import StoreSpec

logger = logging.getLogger(__name__)

LEDGER = "lepton.cost_ledger"


def lifetime_id(run_id: str, life: Lifetime) -> str:
    """Ledger ``_id`` of one lifetime.

    >>> lifetime_id("r1", Lifetime("w-1", "p", "t", "spot", 1.0, 1, 12.3456))
    'r1/w-1/12346'
    """
    return f"{run_id}/{life.worker}/{round(life.start * 1000)}"


def to_doc(run_id: str, life: Lifetime, now: float, minimum: float) -> dict[str, Any]:
    """The ledger document of ``life`` as of ``now``."""
    secs = billed_seconds(life.start, life.end, now, minimum)
    return {
        "_id": lifetime_id(run_id, life),
        "run": run_id,
        "worker": life.worker,
        "pool": life.pool,
        "instance_type": life.instance_type,
        "pricing": life.pricing,
        "usd_per_hour": life.usd_per_hour,
        "nthreads": life.nthreads,
        "start": life.start,
        "end": life.end,
        "updated": now,
        "billed_seconds": float(secs),
        "billed_usd": float(secs) * life.usd_per_hour / 3600.0,
        "minimum_billing_seconds": minimum,
        "written": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None),
    }


class Ledger:
    """Spend per worker per run, kept in the feature store's database.

    Parameters
    ----------
    spec : StoreSpec
        Where to write (URI, database, timeout), e.g.
        :meth:`StoreSpec.from_config() <lepton_dask.store.StoreSpec.from_config>`.

    Examples
    --------
    >>> from lepton_dask.store import StoreSpec
    >>> Ledger(StoreSpec("mongodb://db.example/", "lepton", 5.0))
    Ledger(StoreSpec(uri='mongodb://db.example/', database='lepton', timeout=5.0))
    """

    def __init__(self, spec: StoreSpec):
        self.spec = spec

    def __repr__(self) -> str:
        return f"Ledger({self.spec!r})"

    @property
    def coll(self):
        return self.spec.db()[LEDGER]

    def write(self, docs: list[dict[str, Any]]) -> None:
        """Upsert lifetime documents (idempotent)."""
        if not docs:
            return
        ops = [pymongo.ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs]
        self.spec.retry(
            lambda: self.coll.bulk_write(ops, ordered=False), "writing the cost ledger"
        )

    def entries(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Lifetime documents, of one run or all."""
        query = {} if run_id is None else {"run": run_id}
        return self.spec.retry(
            lambda: list(self.coll.find(query)), "reading the cost ledger"
        )

    def runs(self) -> list[str]:
        """Run ids present in the ledger."""
        return sorted({d["run"] for d in self.entries()})

    def resume(self, run_id: str) -> float:
        """Close lifetimes a previous scheduler of ``run_id`` left open (it
        stopped without closing them) at their last flush; return the run's
        spend so far in USD."""
        total = 0.0
        closed = []
        for d in self.entries(run_id):
            if d.get("end") is None:
                d["end"] = d["updated"]
                secs = billed_seconds(
                    d["start"], d["end"], d["end"], d["minimum_billing_seconds"]
                )
                d["billed_seconds"] = float(secs)
                d["billed_usd"] = float(secs) * d["usd_per_hour"] / 3600.0
                closed.append(d)
            total += d["billed_usd"]
        if closed:
            logger.info(
                "closed %d lifetimes left open by a previous scheduler of run %s",
                len(closed),
                run_id,
            )
            self.write(closed)
        return total
