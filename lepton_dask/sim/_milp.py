"""The integer program behind :mod:`lepton_dask.sim.oracle` (HiGHS via scipy).

A time grid of ``K`` slots of ``dt`` seconds. Per pool ``p`` (integers):
``L[p,k]`` workers launched at the start of slot ``k`` and ``B[p,k]`` workers
billed during slot ``k``; ``CL[p,k]`` is the running sum of launches (an
auxiliary that keeps the rows sparse). Per group of tasks ``g`` (same burst,
kind and latest slot) and pool of its kind, ``x[g,p,k] >= 0`` is the work (in
reference thread-seconds) done in slot ``k``. With ``online``, a binary
``a[b,k]`` says burst ``b`` still has work in slot ``k`` or later.

Rows (``S``: startup slots, ``M``: slots of the shortest life, ``r``: threads x
speed x dt of one worker):

* balance ``B[k] <= B[k-1] + L[k]`` (workers appear only by launch, leave freely;
  ``B[-1]`` is the pool's ``warm`` workers, none for the oracle);
* minimum life ``B[k] >= L[k-M+1] + ... + L[k]``;
* capacity ``sum_g x[g,p,k] <= r * (B[k] - (L[k-S+1] + ... + L[k]))`` (a worker in
  startup is billed and does nothing);
* every group's work is done inside its slots ``[lo, hi]``, no faster than its
  tasks were released (a cumulative bound), and no faster per slot than its
  tasks can run on one thread each (``cap``);
* ``online``: ``a`` is non-increasing, work of ``b`` in slot ``k`` needs
  ``a[b,k] = 1``, the slot where ``a`` drops to 0 (or the one before it) holds at
  least ``mu`` work (so ``a`` cannot claim the burst is unfinished after its
  work is done), and launches in slot ``k`` need an arrived burst with
  ``a[b,k-2] = 1`` (the two slots of slack are the rounding of launch and work
  times to the grid, see :mod:`lepton_dask.sim.oracle`).

Objective: ``dt * (sum B - sum L)`` per pool, weighted by price (a life of ``n``
slots is charged ``n - 1``: the rounding argument in the oracle's docstring),
plus the part of the minimum life that falls after the last slot.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix


@dataclass
class Group:
    """Tasks of one burst and kind that share their latest slot."""

    burst: int
    kind: str
    lo: int  # first slot any of them may use
    hi: int  # last slot (inclusive)
    work: float
    release: np.ndarray  # work released by the end of slots lo..hi (cumulative)
    cap: float = math.inf  # work per slot (sum over tasks of min(d, speed * dt))


@dataclass
class BurstGrid:
    burst: int
    arr: int  # slot of the burst's first submission (floor)
    first: int  # first slot its work may use
    last: int  # last slot its work may use
    work: float
    mu: float  # work its last task does in its last dt (lower bound)


@dataclass
class PoolGrid:
    name: str
    kind: str
    cost: float  # objective weight per worker-slot-second (price / reference)
    rate: float  # work per slot of one worker: threads * speed * dt
    startup: int  # S
    life: int  # M (>= S + 1)
    max_launch: int


@dataclass
class Problem:
    dt: float
    K: int
    pools: list[PoolGrid]
    groups: list[Group]
    bursts: list[BurstGrid]
    #: workers per pool already running and past their startup at slot 0 (a
    #: plan that starts from the current cluster; the oracle has none)
    warm: dict[str, int] = field(default_factory=dict)

    def size(self, online: bool) -> tuple[int, int]:
        """(integer variables, continuous variables) the model will have."""
        ints = sum(2 * self.K for _ in self.pools)
        if online:
            ints += sum(b.last - b.first + 1 for b in self.bursts)
        cont = len(self.pools) * self.K
        for g in self.groups:
            n = sum(1 for p in self.pools if p.kind == g.kind)
            cont += (g.hi - g.lo + 1) * (n + 1)
        return ints, cont


@dataclass
class Solution:
    status: str  # "optimal", "time_limit", "infeasible", "error"
    objective: float  # incumbent (nan when none)
    dual_bound: float  # valid lower bound on the model's optimum
    gap: float
    seconds: float
    n_int: int
    n_cont: int
    n_rows: int
    billed: dict[str, np.ndarray] = field(default_factory=dict)  # B per pool
    launched: dict[str, np.ndarray] = field(default_factory=dict)  # L per pool
    slot_seconds: dict[str, float] = field(default_factory=dict)  # billed s per pool
    message: str = ""


class _Builder:
    def __init__(self):
        self.c: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integ: list[int] = []
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.rlb: list[float] = []
        self.rub: list[float] = []

    def var(self, n: int, lb=0.0, ub=math.inf, integer=False, cost=0.0) -> int:
        start = len(self.c)
        self.c += list(np.broadcast_to(np.asarray(cost, float), (n,)))
        self.lb += list(np.broadcast_to(np.asarray(lb, float), (n,)))
        self.ub += list(np.broadcast_to(np.asarray(ub, float), (n,)))
        self.integ += [1 if integer else 0] * n
        return start

    def row(self, cols, vals, lb=-math.inf, ub=math.inf) -> None:
        r = len(self.rlb)
        self.rows += [r] * len(cols)
        self.cols += list(cols)
        self.vals += list(vals)
        self.rlb.append(lb)
        self.rub.append(ub)


def solve(
    prob: Problem, *, online: bool, time_limit: float, mip_rel_gap: float
) -> Solution:
    """Build and solve the program for ``prob``; see the module docstring."""
    t0 = time.perf_counter()
    m = _Builder()
    v = _variables(m, prob, online)
    _pool_rows(m, prob, v)
    _group_rows(m, prob, v["x"])
    if online:
        _online_rows(m, prob, v["L"], v["x"], v["a"])
    c = np.array(m.c)
    n_vars = len(c)
    A = coo_matrix((m.vals, (m.rows, m.cols)), shape=(len(m.rlb), n_vars)).tocsr()
    integ = np.array(m.integ)
    build_s = time.perf_counter() - t0
    res = milp(
        c,
        integrality=integ,
        bounds=Bounds(np.array(m.lb), np.array(m.ub)),
        constraints=LinearConstraint(A, np.array(m.rlb), np.array(m.rub)),
        options={
            "time_limit": max(1.0, time_limit - build_s),
            "mip_rel_gap": mip_rel_gap,
            "disp": False,
        },
    )
    status = {0: "optimal", 1: "time_limit", 2: "infeasible"}.get(res.status, "error")
    dual = getattr(res, "mip_dual_bound", None)
    sol = Solution(
        status,
        math.nan,
        math.nan if dual is None else float(dual),
        math.nan,
        time.perf_counter() - t0,
        int(integ.sum()),
        int(n_vars - integ.sum()),
        len(m.rlb),
        message=str(res.message),
    )
    if res.x is not None:
        _read_solution(sol, res, prob, v, dual)
    if status == "infeasible":
        sol.dual_bound = math.inf
    return sol


def _variables(m: _Builder, prob: Problem, online: bool) -> dict[str, dict]:
    """Per pool: launches ``L`` (with how many slots they may start in),
    billed workers ``B``, cumulative launches ``C``; per group and pool the
    work done per slot ``x``; per burst (online) its unfinished flags ``a``."""
    K, dt = prob.K, prob.dt
    Lv, Bv, CLv = {}, {}, {}
    for p in prob.pools:
        kl = max(0, K - p.startup)  # a launch must be usable before the end
        tail = np.maximum(0, np.arange(kl) + p.life - K)
        Lv[p.name] = (
            m.var(kl, ub=p.max_launch, integer=True, cost=p.cost * dt * (tail - 1)),
            kl,
        )
        Bv[p.name] = m.var(K, integer=True, cost=p.cost * dt)
        CLv[p.name] = m.var(K)
    xv: dict[tuple[int, str], int] = {}
    for gi, g in enumerate(prob.groups):
        mine = [p for p in prob.pools if p.kind == g.kind]
        n = g.hi - g.lo + 1
        for p in mine:
            ub = min(g.cap, g.work) if len(mine) == 1 else g.work
            xv[gi, p.name] = m.var(n, ub=ub)
    av: dict[int, int] = {}
    if online:
        for bi, b in enumerate(prob.bursts):
            n = b.last - b.first + 1
            lb = np.zeros(n)
            lb[0] = 1.0  # a burst is unfinished at its first slot
            av[bi] = m.var(n, lb=lb, ub=1.0, integer=True)
    return {"L": Lv, "B": Bv, "C": CLv, "x": xv, "a": av}


def _pool_rows(m: _Builder, prob: Problem, v: dict[str, dict]) -> None:
    """Per pool and slot: the running sum of launches, the balance of billed
    workers, the minimum life and the capacity the work may use."""
    K = prob.K
    at_slot: dict[str, list[list[int]]] = {
        p.name: [[] for _ in range(K)] for p in prob.pools
    }
    for (gi, name), x0 in v["x"].items():
        g = prob.groups[gi]
        for k in range(g.lo, g.hi + 1):
            at_slot[name][k].append(x0 + k - g.lo)
    for p in prob.pools:
        L0, kl = v["L"][p.name]
        B0, C0 = v["B"][p.name], v["C"][p.name]
        for k in range(K):
            # running sum of launches
            cols, vals = [C0 + k], [1.0]
            if k > 0:
                cols.append(C0 + k - 1)
                vals.append(-1.0)
            if k < kl:
                cols.append(L0 + k)
                vals.append(-1.0)
            m.row(cols, vals, 0.0, 0.0)
            # balance: B[k] - B[k-1] - L[k] <= 0 (B[-1]: the warm workers)
            cols, vals = [B0 + k], [1.0]
            if k > 0:
                cols.append(B0 + k - 1)
                vals.append(-1.0)
            if k < kl:
                cols.append(L0 + k)
                vals.append(-1.0)
            m.row(cols, vals, ub=0.0 if k else float(prob.warm.get(p.name, 0)))
            # minimum life: CL[k] - CL[k-M] - B[k] <= 0
            cols, vals = [C0 + k, B0 + k], [1.0, -1.0]
            if k - p.life >= 0:
                cols.append(C0 + k - p.life)
                vals.append(-1.0)
            m.row(cols, vals, ub=0.0)
            # capacity: sum x - rate * (B[k] - CL[k] + CL[k-S]) <= 0
            cols, vals = [B0 + k], [-p.rate]
            if p.startup > 0:
                cols.append(C0 + k)
                vals.append(p.rate)
                if k - p.startup >= 0:
                    cols.append(C0 + k - p.startup)
                    vals.append(-p.rate)
            here = at_slot[p.name][k]
            m.row(cols + here, vals + [1.0] * len(here), ub=0.0)


def _group_rows(m: _Builder, prob: Problem, xv: dict) -> None:
    """Per group: all its work done, at most its parallelism per slot, never
    more than has been released (its dependencies done)."""
    for gi, g in enumerate(prob.groups):
        mine = [p for p in prob.pools if p.kind == g.kind]
        n = g.hi - g.lo + 1
        cols = [xv[gi, p.name] + j for p in mine for j in range(n)]
        m.row(cols, [1.0] * len(cols), g.work, g.work)
        if len(mine) > 1 and g.cap < g.work:
            for j in range(n):
                m.row([xv[gi, p.name] + j for p in mine], [1.0] * len(mine), ub=g.cap)
        # released work: Y[j] = Y[j-1] + sum_p x[j], Y[j] <= release[j]
        short = np.nonzero(g.release < g.work * (1 - 1e-12))[0]
        if len(short):
            last = int(short[-1])
            Y0 = m.var(last + 1, ub=g.release[: last + 1])
            for j in range(last + 1):
                cols, vals = [Y0 + j], [1.0]
                if j > 0:
                    cols.append(Y0 + j - 1)
                    vals.append(-1.0)
                cols += [xv[gi, p.name] + j for p in mine]
                vals += [-1.0] * len(mine)
                m.row(cols, vals, 0.0, 0.0)


def _read_solution(sol: Solution, res: Any, prob: Problem, v: dict, dual) -> None:
    """The objective, gap and per-pool plan of a solved program."""
    K, dt = prob.K, prob.dt
    sol.objective = float(res.fun)
    if sol.status == "optimal" and (dual is None or not math.isfinite(dual)):
        sol.dual_bound = sol.objective  # (an LP with nothing to branch on)
    gap = getattr(res, "mip_gap", None)
    sol.gap = float(gap) if gap is not None else math.nan
    for p in prob.pools:
        L0, kl = v["L"][p.name]
        B = np.rint(res.x[v["B"][p.name] : v["B"][p.name] + K]).astype(int)
        L = np.zeros(K, int)
        L[:kl] = np.rint(res.x[L0 : L0 + kl]).astype(int)
        tail = np.maximum(0, np.arange(K) + p.life - K)
        sol.billed[p.name] = B
        sol.launched[p.name] = L
        sol.slot_seconds[p.name] = float(dt * (B.sum() - L.sum() + (L * tail).sum()))


def _online_rows(m: _Builder, prob: Problem, Lv, xv, av) -> None:
    groups_of: dict[int, list[int]] = {}
    for gi, g in enumerate(prob.groups):
        groups_of.setdefault(g.burst, []).append(gi)

    def work_cols(b: BurstGrid, k: int) -> list[int]:
        cols = []
        for gi in groups_of.get(b.burst, []):
            g = prob.groups[gi]
            if g.lo <= k <= g.hi:
                cols += [
                    xv[gi, p.name] + k - g.lo for p in prob.pools if p.kind == g.kind
                ]
        return cols

    for bi, b in enumerate(prob.bursts):
        a0 = av[bi]
        n = b.last - b.first + 1
        for j in range(n):
            k = b.first + j
            if j + 1 < n:  # non-increasing
                m.row([a0 + j + 1, a0 + j], [1.0, -1.0], ub=0.0)
            cols = work_cols(b, k)
            if cols:  # no work once finished
                m.row([*cols, a0 + j], [1.0] * len(cols) + [-b.work], ub=0.0)
            # finishing in slot k (a[k] - a[k+1] = 1) needs mu of work in k-1, k
            both = cols + (work_cols(b, k - 1) if j > 0 else [])
            cv = [1.0] * len(both) + [-b.mu]
            cc = [*both, a0 + j]
            if j + 1 < n:
                cc.append(a0 + j + 1)
                cv.append(b.mu)
            m.row(cc, cv, lb=0.0)
    for p in prob.pools:
        L0, kl = Lv[p.name]
        for k in range(kl):
            free, cols = False, []
            for bi, b in enumerate(prob.bursts):
                if b.arr > k:
                    continue
                j = k - 2
                if j < b.first:
                    free = True
                    break
                if j <= b.last:
                    cols.append(av[bi] + j - b.first)
            if free:
                continue
            m.row([L0 + k, *cols], [1.0] + [-float(p.max_launch)] * len(cols), ub=0.0)
