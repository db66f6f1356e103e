"""Solvers for :class:`~pruneopt.formulations.LayerBudget`: SPDY's dynamic program, made honest.

Notation: layer ``l`` at level ``k`` costs ``c[l][k]`` and errs ``e[l][k]``; budget ``B``.
Every solver first shifts each layer by its cheapest level, ``d[l][k] = c[l][k] - min_k
c[l][k]``, leaving the budget ``R = B - sum_l min_k c[l][k] >= 0`` for the extra cost, and
drops dominated levels (another level is no more costly and no worse, one of them strictly).

**Bucket DP** (SPDY, Frantar & Alistarh 2022, vectorized in numpy). The budget ``R`` is cut
into ``N`` buckets of width ``h = R / N`` and each layer's extra cost is made an integer number
of buckets; ``dp[b]`` is the least error of the layers so far within ``b`` buckets::

    dp_l[b] = min_k dp_{l-1}[b - w[l][k]] + e[l][k],     dp_0[b] = 0.

- costs rounded **up**, ``w = ceil(d / h)``: ``sum d <= h sum w <= h N = R``, so the answer is
  within budget (SPDY's reference rounds to the *nearest* bucket and so often is not);
- costs rounded **down**, ``w = floor(d / h)``: every feasible choice fits, so ``dp[N]`` is a
  proven lower bound on the optimum.

**LP bound** (convex-hull greedy; Sinha & Zoltners 1979): the LP relaxation of the
multiple-choice knapsack takes the lower convex hull of each layer's (cost, error) points,
and fills the budget with hull steps in order of error saved per unit of cost; the step that
does not fit is taken fractionally. Its value equals the Lagrangian bound
``LB(lam) = sum_l min_k (e[l][k] + lam d[l][k]) - lam R`` at the critical slope ``lam``.

**Reduced-cost elimination**: any answer that takes level ``k`` in layer ``l`` has error at
least ``LB(lam) + rc[l][k]`` with ``rc[l][k] = e[l][k] + lam d[l][k] - min_j (e[l][j] + lam
d[l][j])``. Levels with ``LB + rc > UB`` (the best answer known) cannot be in any better answer
and are removed; the optimum stays in the reduced table.

**Exact search** (``"dp"``): a Pareto-frontier dynamic program over the layers that keep
more than one level after elimination, in exact floating-point arithmetic (no buckets). A
state is the (extra cost ``D``, error ``E``) of a choice for the layers done so far; adding a
layer merges the frontier shifted by each of its levels and drops states that do not fit
(``D > R``), that are dominated (another has no more cost and no more error) or whose bound
``E + f(R - D)`` reaches the threshold, where ``f(r)`` is the LP relaxation of the layers still
to do at capacity ``r`` (read exactly from a Fenwick tree of their hull steps in slope order).
Every answer is either kept to the end or passes through a dropped state or level, whose
bound is then a lower bound on its error: the least such bound, less the rounding of the
sums behind it (:class:`Proof`), is the proven bound ``sol.bound``. The threshold is the
incumbent less half the relative gap tolerance ``GAP_RTOL`` of the objective's scale (or less
1/2 when every error is an integer: a better answer is then at least 1 better), so ties with
the incumbent are not enumerated.

**Cores** (Pisinger 1995, for the multiple-choice knapsack): the exact search is cheap when
the incumbent is nearly optimal, because the reduced-cost elimination then leaves few
levels. Before it, the same search runs on growing cores (:data:`CORE_SIZES` layers) with
every other layer held at the LP's integer part (the hull steps before the critical one): half
the core are the layers whose nearest level above the LP's is cheapest in reduced cost, half
those whose nearest level below is; each core's optimum that beats the incumbent replaces it.

Solvers registered here:

- ``"dp"`` (exact, the default): LP bound and greedy answer; cores; reduced-cost
  elimination with the final incumbent; exact search (above). Proven optimal when the bound
  meets the answer within ``GAP_RTOL`` (``sol.bound`` is then the proven bound). If the
  frontier exceeds ``max_states`` states, HiGHS solves the reduced table as a MILP (warm
  started) instead. ``time_limit`` is checked between the layers of every search; when it
  passes the best answer so far comes back as ``"time_limit"`` with the LP bound.
  ``certify=False`` skips the search: LP bound, elimination and SPDY's bucket DP on the
  reduced table (``buckets`` buckets, rounding up for the answer, down for a bound), giving
  ``"feasible"`` unless the bounds meet.
- ``"dp_round"`` (heuristic): SPDY's plain bucket DP on the full table, rounding up for the
  answer and down for the bound; ``"optimal"`` only when the two meet.

Kernels are compiled with numba (:mod:`~pruneopt.solvers.budget_frontier`) on first use.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pruneopt.formulations.layer_budget import LayerBudget
from pruneopt.solvers import budget_frontier
from pruneopt.solvers.options import Boolean, Integer
from pruneopt.solvers.registry import Result, register
from pruneopt.solvers.starts import register_start

GAP_RTOL = 1e-9


@dataclass
class Reduced:
    """A LayerBudget table after shifting and filtering: per layer the kept original level
    indices ``idx``, extra costs ``d`` (ascending, first is 0) and errors ``e`` (descending)."""

    idx: list[np.ndarray]
    d: list[np.ndarray]
    e: list[np.ndarray]
    R: float  # budget for the extra cost
    base: float  # sum of the cheapest costs
    scale: float = 0.0  # the problem's objective scale (sum_l max_k |e|): gap tolerances


def reduce(problem: LayerBudget, pareto: bool = True) -> Reduced:
    """Shift every layer by its cheapest cost; keep only Pareto levels when ``pareto``."""
    idx, ds, es = [], [], []
    base = 0.0
    for c, e in zip(problem.costs, problem.errors, strict=True):
        cmin = float(c.min())
        base += cmin
        order = np.lexsort((e, c))  # by cost, then error
        if pareto:
            eo = e[order]
            prev_min = np.minimum.accumulate(np.concatenate([[np.inf], eo[:-1]]))
            keep = eo < prev_min
            order = order[keep]
        idx.append(order)
        ds.append(c[order] - cmin)
        es.append(e[order].astype(float))
    R = max(problem.budget - base, 0.0)
    return Reduced(idx, ds, es, R, base, problem.objective_scale())


def _take(red: Reduced, keep: list[np.ndarray]) -> Reduced:
    """The levels ``keep[l]`` (boolean masks) of ``red``; the cheapest kept level becomes 0."""
    idx, ds, es = [], [], []
    base = red.base
    R = red.R
    for i, d, e, m in zip(red.idx, red.d, red.e, keep, strict=True):
        dk = d[m]
        shift = float(dk[0])
        base += shift
        R -= shift
        idx.append(i[m])
        ds.append(dk - shift)
        es.append(e[m])
    return Reduced(idx, ds, es, max(R, 0.0), base, red.scale)


def _hull(d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Indices of the lower convex hull of points (d, e), d ascending and e descending."""
    hull: list[int] = []
    for k in range(d.size):
        while len(hull) >= 2:
            i, j = hull[-2], hull[-1]
            # drop j if it lies on or above the segment i -> k
            if (e[j] - e[i]) * (d[k] - d[i]) >= (e[k] - e[i]) * (d[j] - d[i]):
                hull.pop()
            else:
                break
        hull.append(k)
    return np.asarray(hull, dtype=np.int64)


def lp_greedy(red: Reduced) -> tuple[np.ndarray, float, float, dict[str, Any]]:
    """Convex-hull greedy: (positions into ``red`` per layer, LP bound, lam, info).

    The positions are a within-budget integer answer (hull steps that fit, skipping a
    layer once one of its steps does not fit); the bound is the LP relaxation's optimum.
    """
    L = len(red.d)
    pos = np.zeros(L, dtype=np.int64)
    lays, steps, dd, de = [], [], [], []
    hulls = []
    for li, (d, e) in enumerate(zip(red.d, red.e, strict=True)):
        h = _hull(d, e)
        hulls.append(h)
        if h.size > 1:
            lays.append(np.full(h.size - 1, li))
            steps.append(np.arange(1, h.size))
            dd.append(np.diff(d[h]))
            de.append(np.diff(e[h]))
    obj0 = float(sum(e[0] for e in red.e))
    if not lays:
        return pos, obj0, 0.0, {"lp_fractional": None}
    lays_a = np.concatenate(lays)
    steps_a = np.concatenate(steps)
    dd_a = np.concatenate(dd)
    de_a = np.concatenate(de)
    slope = de_a / dd_a
    order = np.lexsort((steps_a, slope))
    cum = np.cumsum(dd_a[order])
    crit = int(np.searchsorted(cum, red.R, side="right"))  # first step that does not fit
    taken = order[:crit]
    # answer: all steps before the critical one, then later steps that still fit
    last = {}
    for t in taken:
        last[int(lays_a[t])] = max(last.get(int(lays_a[t]), 0), int(steps_a[t]))
    used = float(cum[crit - 1]) if crit > 0 else 0.0
    if crit == len(order):
        lam = 0.0
        frac_info = None
    else:
        c = order[crit]
        lam = float(-slope[c])
        frac_info = (int(lays_a[c]), float((red.R - used) / dd_a[c]))
        blocked = {int(lays_a[c])}
        for t in order[crit + 1:]:
            li = int(lays_a[t])
            if li in blocked:
                continue
            if used + dd_a[t] <= red.R:
                used += float(dd_a[t])
                last[li] = int(steps_a[t])
            else:
                blocked.add(li)
    for li, s in last.items():
        pos[li] = hulls[li][s]
    lb = lagrangian_bound(red, lam)
    return pos, lb, lam, {"lp_fractional": frac_info}


def lagrangian_bound(red: Reduced, lam: float) -> float:
    """``sum_l min_k (e + lam d) - lam R``: a lower bound on the optimum for every lam >= 0."""
    return float(sum(float(np.min(e + lam * d)) for d, e in zip(red.d, red.e, strict=True))
                 - lam * red.R)


def eliminate(red: Reduced, lam: float, lb: float, ub: float) -> tuple[Reduced, int]:
    """Drop levels whose reduced cost proves them worse than ``ub``; (reduced table, dropped)."""
    slack = ub - lb + GAP_RTOL * max(red.scale, abs(ub))
    keep, dropped = [], 0
    for d, e in zip(red.d, red.e, strict=True):
        v = e + lam * d
        m = (v - v.min()) <= slack
        dropped += int(m.size - m.sum())
        keep.append(m)
    return _take(red, keep), dropped


def _weights(d: np.ndarray, h: float, rounding: str) -> np.ndarray:
    q = d / h
    if rounding == "up":
        w = np.ceil(q)
        w[w * h < d] += 1  # guard the floating-point division
    elif rounding == "down":
        w = np.floor(q)
        w[(w * h > d) & (w > 0)] -= 1
    elif rounding == "nearest":  # SPDY's reference rounding: not within budget; benchmark only
        w = np.rint(q)
    else:
        raise ValueError(f"rounding must be 'up', 'down' or 'nearest', got {rounding!r}")
    w[d == 0] = 0
    return w


def bucket_dp(red: Reduced, buckets: int, rounding: str,
              deadline: float | None = None) -> tuple[np.ndarray, float]:
    """SPDY's DP with ``buckets`` buckets: (positions into ``red`` per layer, DP value).

    With ``rounding="up"`` the positions are within budget; with ``"down"`` the value is a
    lower bound on the optimum. O(sum_l K_l * buckets) time, vectorized over buckets.
    ``TimeoutError`` when ``time.perf_counter()`` passes ``deadline`` (checked per layer).
    """
    L = len(red.d)
    N = int(buckets)
    if red.R <= 0:  # only zero-extra-cost levels fit
        pos = np.array([int(np.argmin(np.where(d == 0, e, np.inf)))
                        for d, e in zip(red.d, red.e, strict=True)])
        return pos, float(sum(e[p] for e, p in zip(red.e, pos, strict=True)))
    h = red.R / N
    dp = np.zeros(N + 1)
    arg = np.zeros((L, N + 1), dtype=np.int32)
    ws = []
    for li, (d, e) in enumerate(zip(red.d, red.e, strict=True)):
        if deadline is not None and time.perf_counter() > deadline:
            raise TimeoutError("bucket DP passed the time limit")
        w = _weights(d, h, rounding).astype(np.int64)
        ws.append(w)
        new = np.full(N + 1, np.inf)
        a = arg[li]
        for k in np.flatnonzero(w <= N):
            wk = int(w[k])
            cand = dp[: N + 1 - wk] + e[k]
            seg = new[wk:]
            better = cand < seg
            seg[better] = cand[better]
            a[wk:][better] = k
        dp = new
    pos = np.zeros(L, dtype=np.int64)
    b = N
    for li in range(L - 1, -1, -1):
        k = int(arg[li, b])
        pos[li] = k
        b -= int(ws[li][k])
    return pos, float(dp[N])


def levels_of(red: Reduced, pos: np.ndarray) -> np.ndarray:
    return np.array([int(i[p]) for i, p in zip(red.idx, pos, strict=True)], dtype=np.int64)


def value_of(red: Reduced, pos: np.ndarray) -> float:
    return float(sum(float(e[p]) for e, p in zip(red.e, pos, strict=True)))


def extra_cost(red: Reduced, pos: np.ndarray) -> float:
    return float(sum(float(d[p]) for d, p in zip(red.d, pos, strict=True)))


def milp_reduced(red: Reduced, time_limit: float | None, start: np.ndarray | None = None,
                 slack: float = 0.0) -> tuple[str, np.ndarray | None, float | None]:
    """Solve the table ``red`` exactly with HiGHS; (status, positions, dual bound).

    The budget row is divided by ``R`` and the errors by their largest magnitude, so that
    HiGHS's absolute tolerances act on numbers of order 1; the bound is scaled back."""
    import scipy.sparse as sp

    from pruneopt.solvers.highs import run_highs

    L = len(red.d)
    sizes = np.array([d.size for d in red.d])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])
    scale = red.R if red.R > 0 else 1.0
    shift = np.array([float(e.min()) for e in red.e])  # exact: one level per layer
    errs = np.concatenate([e - m for e, m in zip(red.e, shift, strict=True)]).astype(np.float64)
    unit = float(np.abs(errs).max()) or 1.0
    rows = np.concatenate([np.repeat(np.arange(L), sizes), np.full(n, L)])
    cols = np.concatenate([np.arange(n), np.arange(n)])
    vals = np.concatenate([np.ones(n), np.concatenate(red.d) / scale])
    A = sp.csc_array((vals, (rows, cols)), shape=(L + 1, n))
    x0 = None
    if start is not None:
        x0 = np.zeros(n)
        x0[offsets[:-1] + start] = 1.0
    out = run_highs(errs / unit, A, np.concatenate([np.ones(L), [-np.inf]]),
                    np.concatenate([np.ones(L), [(red.R + slack) / scale]]), np.zeros(n),
                    np.ones(n),
                    integrality=np.ones(n, dtype=bool), time_limit=time_limit, threads=1,
                    start=x0)
    # the dual bound, moved down by the LP tolerances it was computed with (see milp.py)
    slack = 1e-9 * n * unit
    bound = None if out.dual_bound is None else (
        out.dual_bound * unit + float(shift.sum()) - slack)
    pos = None
    if out.x is not None:
        pos = np.array([int(np.argmax(out.x[offsets[i]: offsets[i + 1]])) for i in range(L)])
    if out.status in ("optimal", "infeasible"):
        return out.status, (pos if out.status == "optimal" else None), bound
    return "time_limit", pos, bound


def gap_closed(ub: float, lb: float, scale: float) -> bool:
    """Whether a lower bound ``lb`` proves the answer ``ub`` optimal: ``ub - lb`` within
    ``GAP_RTOL`` of the objective ``scale`` (relative: the same at every scale)."""
    return ub - lb <= GAP_RTOL * max(scale, abs(ub))


@dataclass
class Flat:
    """A LayerBudget table held flat after :func:`budget_frontier.pareto_levels`: layer ``l``'s
    Pareto levels are ``[off[l], off[l+1])`` of ``d`` (extra cost over its cheapest level),
    ``e`` (error) and ``idx`` (original level index); ``R`` is the budget for the extra cost
    (``B - base + tolerance / 2``, the MILP export's capacity), ``base`` the summed cheapest
    costs."""

    off: np.ndarray
    d: np.ndarray
    e: np.ndarray
    idx: np.ndarray
    R: float
    base: float

    @classmethod
    def of(cls, problem: LayerBudget) -> Flat:
        kernels = budget_frontier.compiled()

        off = np.concatenate([[0], np.cumsum(problem.levels)]).astype(np.int64)
        c = np.concatenate(problem.costs).astype(np.float64)
        e = np.concatenate(problem.errors).astype(np.float64)
        off2, d, e2, idx, cmin = kernels.pareto_levels(off, c, e)
        base = float(math.fsum(cmin))
        R = max(problem.budget - base + 0.5 * problem.tolerance, 0.0)
        return cls(off2, d, e2, idx, R, base)

    @property
    def layer(self) -> np.ndarray:
        """The layer of every flat level."""
        return np.repeat(np.arange(self.off.size - 1), np.diff(self.off))

    def levels(self, flat_choice: np.ndarray) -> np.ndarray:
        """Original level per layer from one flat level index per layer."""
        return (self.idx[flat_choice]).astype(np.int64)


def lp_bound(flat: Flat, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(greedy flat choice per layer, the LP's integer part, LP bound, critical slope lam)
    over the alive levels.

    The bound is the Lagrangian ``sum_l min_k (e + lam d) - lam R``, valid for every
    ``lam >= 0`` whatever rounding went into finding ``lam``."""
    kernels = budget_frontier.compiled()

    L = flat.off.size - 1
    first = flat.off[:-1].copy()
    s_l, _, s_b, dd, de = kernels.hull_steps(flat.off, flat.d, flat.e, alive)
    order = np.argsort(de / dd, kind="stable")
    choice, anchor, crit, _ = kernels.lp_greedy(L, first, s_l, s_b, dd, de, order, flat.R)
    lam = 0.0 if crit < 0 else float(-de[order[crit]] / dd[order[crit]])
    lb = float(math.fsum(kernels.layer_min(flat.off, flat.d, flat.e, alive, lam))) - lam * flat.R
    return choice, anchor, lb, lam


def frontier_search(flat: Flat, alive: np.ndarray, thr: float, deadline: float | None,
                    max_states: int, priority: np.ndarray | None = None,
                    ) -> tuple[str, np.ndarray | None, float, int]:
    """Exact Pareto-frontier DP over the alive levels for an answer of error below ``thr``.

    Layers with one alive level are fixed; the others are added one by one to the frontier
    (:func:`budget_frontier.extend`), every candidate bounded by its error plus the exact LP
    relaxation of the layers still to do, in order of ``priority`` (ascending; default: layer
    order). Returns (status, flat choice or None, least pruned bound, peak states):
    ``"done"`` (the choice is the best alive-only answer below ``thr``, or None if none
    exists: every pruned answer has error >= the returned bound),
    ``"states"`` (over ``max_states``) or ``"time"`` (past ``deadline``)."""
    kernels = budget_frontier.compiled()

    off, d, e = flat.off, flat.d, flat.e
    L = off.size - 1
    layer = flat.layer
    n_alive = np.bincount(layer[alive], minlength=L)
    if np.any(n_alive == 0):
        return "done", None, np.inf, 0
    first = np.full(L, -1, dtype=np.int64)
    rev = np.flatnonzero(alive)[::-1]
    first[layer[rev]] = rev  # the cheapest alive level of every layer
    R = flat.R - float(math.fsum(d[first]))
    e0 = float(math.fsum(e[first]))
    if R < 0:
        return "done", None, np.inf, 0
    free = np.flatnonzero(n_alive > 1)
    s_l, _, _, dd, de = kernels.hull_steps(off, d, e, alive)
    steps_of = np.split(np.arange(s_l.size), np.searchsorted(s_l, free[1:])) if free.size else []
    if priority is not None:  # the most uncertain layers first
        o = np.argsort(priority[free], kind="stable")
        free = free[o]
        steps_of = [steps_of[i] for i in o]
    slope = de / dd
    rank_order = np.argsort(slope, kind="stable")
    rank = np.empty_like(rank_order)
    rank[rank_order] = np.arange(rank_order.size)
    dd_r, de_r, slope_r = dd[rank_order], de[rank_order], slope[rank_order]
    tree_d = kernels.fenwick_build(dd_r)
    tree_e = kernels.fenwick_build(de_r)
    present = np.ones(rank_order.size, dtype=np.bool_)
    steps_of = [rank[q] for q in steps_of]
    D = np.zeros(1)
    E = np.zeros(1)
    parents, choices = [], []
    min_pruned = np.inf
    peak = 1
    for t, li in enumerate(free):
        for q in steps_of[t]:
            kernels.fenwick_add(tree_d, q, -dd_r[q])
            kernels.fenwick_add(tree_e, q, -de_r[q])
            present[q] = False
        ks = np.flatnonzero(alive[off[li]: off[li + 1]]) + off[li]
        dk = d[ks] - d[first[li]]
        ek = e[ks] - e[first[li]]
        D, E, P, K, mp = kernels.extend(D, E, dk, ek, R, tree_d, tree_e, slope_r, present,
                                        thr - e0)
        min_pruned = min(min_pruned, mp + e0)
        parents.append(P)
        choices.append(ks[K])
        peak = max(peak, D.size)
        if D.size == 0:
            return "done", None, min_pruned, peak
        if D.size > max_states:
            return "states", None, min_pruned, peak
        if deadline is not None and time.perf_counter() > deadline:
            return "time", None, min_pruned, peak
    if not free.size and e0 >= thr:  # nothing to choose, and the only answer is no better
        return "done", None, e0, peak
    choice = first.copy()
    s = int(np.argmin(E))
    for t in range(free.size - 1, -1, -1):
        choice[free[t]] = choices[t][s]
        s = int(parents[t][s])
    return "done", choice, min_pruned, peak


class Proof:
    """What a bound must beat to matter, and what a pruned bound proves.

    ``value`` is the incumbent's error. A candidate is pruned when its bound reaches
    :meth:`threshold`: ``value`` less half the relative gap tolerance, or, when every error
    is an integer, ``value - 1/2`` (a better answer errs at most ``value - 1``). A pruned
    bound ``b`` proves ``optimum >= b - margin`` (``margin``: rounding of the sums behind
    it), rounded up to an integer when the errors are integers."""

    def __init__(self, problem: LayerBudget, flat: Flat, lam: float) -> None:
        self.scale = problem.objective_scale()
        e = flat.e
        self.integral = bool(np.all(e == np.round(e)) and np.abs(e).max() < 2.0 ** 52)
        L = problem.n_layers
        # every sum behind a bound has terms bounded by these totals
        mag = self.scale + abs(lam) * float(flat.d[flat.off[1:] - 1].sum())
        self.margin = 8 * np.finfo(float).eps * (L + 64) * mag

    def threshold(self, value: float) -> float:
        gap = 0.5 * GAP_RTOL * max(self.scale, abs(value))
        return value - max(gap, 0.5) if self.integral else value - gap

    def bound(self, b: float) -> float:
        b -= self.margin
        return float(np.ceil(b)) if self.integral and np.isfinite(b) else b

    def closed(self, ub: float, lb: float) -> bool:
        return ub <= lb or gap_closed(ub, lb, self.scale)


def solve_exact(problem: LayerBudget, time_limit: float | None = None, *, buckets: int = 10000,
                certify: bool = True, max_states: int = 2_000_000) -> Result:
    """The ``"dp"`` pipeline (see the module docstring); returns a :class:`Result`.

    ``time_limit`` is checked between the phases and between the layers of the frontier
    search; when it passes, the best answer so far comes back with ``"time_limit"`` and the
    best bound."""
    kernels = budget_frontier.compiled()
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + time_limit
    if not certify:
        return rounded_dp(problem, buckets, deadline)
    flat = Flat.of(problem)
    L = problem.n_layers
    alive = np.ones(flat.d.size, dtype=np.bool_)
    choice, anchor, lp, lam = lp_bound(flat, alive)
    proof = Proof(problem, flat, lam)
    lb = proof.bound(lp)
    best = flat.levels(choice)
    ub = problem.objective(best)
    info: dict[str, Any] = {"lp_bound": lp, "greedy": ub, "lambda": lam,
                            "levels_in": int(problem.levels.sum()),
                            "levels_pareto": int(flat.d.size)}
    if proof.closed(ub, lb):
        return Result(best, "optimal", min(lb, ub), info, proof="LP bound meets the answer")
    # reduced costs: an answer through level k errs at least lp + rc[k]
    vmin = kernels.layer_min(flat.off, flat.d, flat.e, alive, lam)
    rc = flat.e + lam * flat.d - vmin[flat.layer]
    value = float(math.fsum(flat.e[choice]))
    # the cores (Pisinger's, for the multiple-choice knapsack): the layers whose other levels
    # are nearest in reduced cost to the LP's, the others held at the LP's integer part; each
    # core's exact optimum below the incumbent is a better incumbent
    held = np.zeros(flat.d.size, dtype=bool)
    held[anchor] = True
    # a better answer trades capacity: some layers move up from the LP's level, others down;
    # a core takes the layers nearest in reduced cost in each direction, half and half
    up = flat.d > flat.d[anchor][flat.layer]
    score = np.zeros(L)
    for size in CORE_SIZES:
        thr = proof.threshold(value)
        alive = lp + rc < thr
        near = [np.minimum.reduceat(np.where(alive & ~held & side, rc, np.inf), flat.off[:-1])
                for side in (up, ~up)]
        score = np.minimum(*near)
        core = np.zeros(L, dtype=bool)
        for sc in near:
            core[np.argsort(sc, kind="stable")[: (size + 1) // 2]] = True
        core &= np.isfinite(score)
        status, fc, _, _ = frontier_search(flat, (alive & core[flat.layer]) | held, thr,
                                           deadline, max_states, score)
        if fc is not None and float(math.fsum(flat.e[fc])) < value:
            choice, value = fc, float(math.fsum(flat.e[fc]))
        if status != "done" or core.sum() == np.isfinite(score).sum():
            break
    best = flat.levels(choice)
    ub = problem.objective(best)
    info["core"] = ub
    thr = proof.threshold(value)
    alive = lp + rc < thr
    pruned = float((lp + rc[~alive]).min(initial=np.inf))
    info["levels_after_elimination"] = int(alive.sum())
    status, fchoice, mp, peak = frontier_search(flat, alive, thr, deadline, max_states, score)
    info["search_states"] = peak
    pruned = min(pruned, mp)
    if status == "done":
        if fchoice is not None:
            lv = flat.levels(fchoice)
            if problem.fits(lv) and problem.objective(lv) < ub:
                ub, best = problem.objective(lv), lv
        bound = min(ub, proof.bound(pruned))
        if proof.closed(ub, bound):
            return Result(best, "optimal", bound, info, proof="Pareto frontier search")
        return Result(best, "feasible", max(lb, bound), info)
    if status == "time":
        return Result(best, "time_limit", lb, info)
    # too many states: let HiGHS prove it on the reduced table
    return milp_fallback(problem, flat, alive, best, ub, lb, info, deadline)


def milp_fallback(problem: LayerBudget, flat: Flat, alive: np.ndarray, best: np.ndarray,
                  ub: float, lb: float, info: dict[str, Any], deadline: float | None) -> Result:
    """HiGHS on the alive levels (the reduced table), warm-started from ``best``."""
    left = None if deadline is None else deadline - time.perf_counter()
    if left is not None and left <= 0:
        return Result(best, "time_limit", lb, info)
    idx, ds, es = [], [], []
    base = flat.base
    R = flat.R - 0.5 * problem.tolerance
    for a, b in zip(flat.off[:-1], flat.off[1:], strict=True):
        ks = np.flatnonzero(alive[a:b]) + a
        shift = float(flat.d[ks[0]])
        base += shift
        R -= shift
        idx.append(flat.idx[ks])
        ds.append(flat.d[ks] - shift)
        es.append(flat.e[ks])
    red = Reduced(idx, ds, es, max(R, 0.0), base, problem.objective_scale())
    start = np.array([int(np.flatnonzero(i == k)[0]) if np.any(i == k) else 0
                      for i, k in zip(red.idx, best, strict=True)])
    status, mpos, mbound = milp_reduced(red, left, start, slack=0.5 * problem.tolerance)
    info["milp_status"] = status
    if mpos is not None:
        lv = levels_of(red, mpos)
        if problem.fits(lv) and problem.objective(lv) < ub:
            ub, best = problem.objective(lv), lv
    if mbound is not None:
        lb = max(lb, min(mbound, ub))
    if status == "optimal":
        return Result(best, "optimal", min(lb, ub), info, proof="HiGHS on the reduced table")
    return Result(best, "time_limit" if status == "time_limit" else "feasible", lb, info)


def rounded_dp(problem: LayerBudget, buckets: int, deadline: float | None) -> Result:
    """``certify=False``: LP bound, elimination and SPDY's bucket DP (up: answer, down:
    bound) on the reduced table; ``"optimal"`` only when the bounds meet."""
    red0 = reduce(problem)
    pos, lb, lam, _ = lp_greedy(red0)
    ub = value_of(red0, pos)
    best = levels_of(red0, pos)
    info: dict[str, Any] = {"lp_bound": lb, "greedy": ub}
    if gap_closed(ub, lb, red0.scale):
        return Result(best, "optimal", min(lb, ub), info, proof="LP bound meets the answer")
    try:
        red, _ = eliminate(red0, lam, lb, ub)
        pos_up, v_up = bucket_dp(red, buckets, "up", deadline)
        if v_up < ub and problem.fits(levels_of(red, pos_up)):
            ub, best = v_up, levels_of(red, pos_up)
        _, v_dn = bucket_dp(red, buckets, "down", deadline)
    except TimeoutError:
        return Result(best, "time_limit", lb, info)
    lb = max(lb, min(v_dn, ub))
    info.update({"dp_up": v_up, "dp_down_bound": v_dn, "buckets": buckets})
    if gap_closed(ub, lb, red0.scale):
        return Result(best, "optimal", min(lb, ub), info, proof="DP lower bound meets the answer")
    return Result(best, "feasible", lb, info)


#: layers in the cores tried before the exact search (see :func:`solve_exact`)
CORE_SIZES = (16, 64, 256, 1024)

BUCKETS = Integer(1, 10_000_000)


@register("dp", LayerBudget, guarantee="exact", requires=("numba", "highspy"),
          package="numba highspy",
          options={"buckets": BUCKETS, "certify": Boolean(), "max_states": Integer(1, None)})
def dp_solver(problem: LayerBudget, time_limit: float | None, *, buckets: int = 10000,
              certify: bool = True, max_states: int = 2_000_000) -> Result:
    """LP bound + reduced-cost elimination + SPDY bucket DP (up/down) + exact certification."""
    return solve_exact(problem, time_limit, buckets=buckets, certify=certify,
                       max_states=max_states)


@register("dp_round", LayerBudget, guarantee="heuristic", options={"buckets": BUCKETS})
def dp_round_solver(problem: LayerBudget, time_limit: float | None, *,
                    buckets: int = 10000) -> Result:
    """SPDY's bucket DP: costs rounded up (within budget) and down (lower bound)."""
    red = reduce(problem, pareto=False)
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    try:
        pos, v_up = bucket_dp(red, buckets, "up", deadline)
        _, v_dn = bucket_dp(red, buckets, "down", deadline)
    except TimeoutError:
        pos, lb, _, _ = lp_greedy(reduce(problem))
        return Result(levels_of(reduce(problem), pos), "time_limit", lb, {})
    lv = levels_of(red, pos)
    bound = min(v_dn, v_up)
    info = {"buckets": buckets, "dp_up": v_up, "dp_down_bound": v_dn}
    if gap_closed(v_up, bound, red.scale):
        return Result(lv, "optimal", bound, info, proof="DP lower bound meets the answer")
    return Result(lv, "feasible", bound, info)


@register_start(LayerBudget)
def greedy_start(problem: LayerBudget):
    """The convex-hull greedy answer (warm start of the MILP backends)."""
    red = reduce(problem)
    pos, lb, _, _ = lp_greedy(red)
    return levels_of(red, pos), lb
