"""The rent-or-buy keep-alive: how long idle workers are kept warm for the
next batch, for the SLO policy.

Keeping ``n`` idle workers costs their rent (price per second); releasing
them costs, when the next batch comes, what a cold start costs more than a
warm one (the "buy": the billed startup of the cold workers *and* the extra
cold workers needed to still meet the deadline after the startup). The
break-even rule keeps the workers until the rent paid equals the buy cost,
which is 2-competitive; ``"randomized"`` draws the threshold from the
density ``e^x / (e - 1)`` on ``[0, 1]`` (x the fraction of the buy cost),
``e / (e - 1) ~ 1.58``-competitive in expectation. Once :data:`MIN_GAPS`
idle gaps have been seen, the threshold is the one that would have cost
least over them (zero, break-even, or just past one of the gaps): when every
gap outlasts break-even, keeping workers only pays rent.
"""

from __future__ import annotations

import math
import random

from lepton_dask.scaling.state import ClusterView, PoolSpec

__all__ = ["MIN_GAPS", "RULES", "KeepAlive"]

MIN_GAPS = 4  # idle gaps seen before the keep-alive follows them
#: the keep-alive rules (``"none"``: release once the paid minimum is used)
RULES = ("break-even", "randomized", "none")


class KeepAlive:
    """The rent-or-buy rule for idle workers of one policy.

    Parameters
    ----------
    rule : {"break-even", "randomized", "none"}
    seed : int
        Seeds the randomized threshold.

    >>> from lepton_dask.scaling.state import ClusterView, PoolSpec
    >>> pool = PoolSpec("cpu", threads=1, usd_per_hour=3.6, startup_s=60)
    >>> view = ClusterView(now=0.0, pools={"cpu": pool}, workers=[], backlog={})
    >>> KeepAlive().threshold(view, pool, work=60.0, deadline=120.0,
    ...                       critical=1.0, arrived=2)  # (workers, seconds)
    (1, 120.0)
    """

    def __init__(self, rule: str = "break-even", seed: int = 0):
        if rule not in RULES:
            raise ValueError(
                f"keep_alive must be 'break-even', 'randomized' or 'none', got {rule!r}"
            )
        self.rule = rule
        self._rng = random.Random(seed)
        self._fraction = 1.0
        self._drawn_for: float | None = None

    def threshold(
        self,
        view: ClusterView,
        pool: PoolSpec,
        work: float,
        deadline: float,
        critical: float,
        arrived: int,
    ) -> tuple[int, float]:
        """(workers to keep, seconds to keep them once their rent starts) for
        a next batch of ``work`` seconds due ``deadline`` seconds after it
        arrives (longest chain ``critical``), served from ``pool``, with
        ``arrived`` workers there now."""
        thr = pool.threads * pool.speed
        price = pool.usd_per_hour / 3600.0
        warm_span = deadline - critical
        cold_span = deadline - critical - pool.startup_s
        n_warm = (
            max(1, math.ceil(work / (thr * warm_span))) if warm_span > 0 else arrived
        )
        n_keep = min(arrived, n_warm)
        run = work / thr  # worker-seconds of running, warm or cold
        warm_cost = run * price
        if cold_span > 0:
            n_cold = max(1, math.ceil(work / (thr * cold_span)))
            per = pool.startup_s + work / (n_cold * thr)
            cold_cost = n_cold * max(per, view.minimum_billing) * price
        else:  # a cold start cannot meet the deadline: keep as long as the gaps last
            cold_cost = (
                (max(view.idle_gaps, default=0.0) + view.minimum_billing)
                * n_keep
                * price
            )
        buy = max(0.0, cold_cost - warm_cost)
        rent = n_keep * price
        return n_keep, self._seconds(view, buy, rent)

    def _seconds(self, view: ClusterView, buy: float, rent: float) -> float:
        """Seconds of rent until the buy cost is paid (times the drawn
        fraction), or the threshold that would have cost least over the gaps
        seen."""
        if self.rule == "randomized" and view.idle_since is not None:
            if self._drawn_for != view.idle_since:
                self._drawn_for = view.idle_since
                u = self._rng.random()
                self._fraction = math.log(1 + u * (math.e - 1))
        else:
            self._fraction = 1.0
        keep_s = buy * self._fraction / rent if rent > 0 else math.inf
        gaps = view.idle_gaps[-16:]
        if len(gaps) >= MIN_GAPS and rent > 0:
            # enough idle gaps seen: the threshold that would have cost least
            # over them (rent while kept, a cold start when a gap outlasts it)
            def regret(t: float) -> float:
                return sum(rent * min(g, t) + (buy if g > t else 0.0) for g in gaps)

            keep_s = min([0.0, keep_s, *(g + 1.0 for g in gaps)], key=regret)
        return keep_s
