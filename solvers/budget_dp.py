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

Solvers registered here:

- ``"dp"`` (exact, the default): LP bound and greedy answer, elimination, bucket DP up
  (answer) and down (bound) on the reduced table; when the bound meets the answer (relative
  ``1e-9``) the answer is proven optimal. Otherwise :func:`pareto_search` (exact: partial
  answers layer by layer, keeping only (cost, error)-Pareto states whose summed reduced cost
  stays within ``answer - bound``) finds the optimum of the reduced table, which is the
  optimum of the whole table. If that would need more than ``max_states`` states, or 80% of
  ``time_limit`` has passed, HiGHS solves the reduced table as a MILP (warm-started,
  feasibility tolerance ``1e-9``) instead. ``certify=False`` stops after the DP and returns
  ``"feasible"`` with the proven bound. ``time_limit`` is checked between phases and
  between the layers of each DP (the slack is one layer of one DP).
- ``"dp_round"`` (heuristic): SPDY's plain bucket DP on the full table, rounding up for the
  answer and down for the bound; ``"optimal"`` only when the two meet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pruneopt.formulations.layer_budget import LayerBudget
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


def pareto_search(red: Reduced, lam: float, lb: float, ub: float,
                  max_states: int = 2_000_000,
                  deadline: float | None = None) -> tuple[np.ndarray | None, int]:
    """Exact search over partial answers, layer by layer; (positions or None, peak states).

    A state is the (cost, error) of a choice for the layers so far. States over the budget,
    states dominated by another (no more cost and no more error), and states whose summed
    reduced cost exceeds ``ub - lb`` (they cannot complete below ``ub``) are dropped; what
    is left at the end contains an optimal answer. Exact up to floating-point summation.
    ``None`` when more than ``max_states`` states would be needed or ``time.perf_counter()``
    passes ``deadline``.
    """
    slack = ub - lb + GAP_RTOL * max(red.scale, abs(ub))
    cost = np.zeros(1)
    err = np.zeros(1)
    rcs = np.zeros(1)
    parents: list[np.ndarray] = []
    choice: list[np.ndarray] = []
    peak = 1
    for d, e in zip(red.d, red.e, strict=True):
        K = d.size
        if K == 1:  # a fixed layer (its only level costs 0 extra): shift the errors only
            err = err + e[0]
            parents.append(np.arange(cost.size))
            choice.append(np.zeros(cost.size, dtype=np.int64))
            continue
        v = e + lam * d
        rc = v - v.min()
        if cost.size * K > max_states:
            return None, cost.size * K
        if deadline is not None and time.perf_counter() > deadline:
            return None, peak
        C = (cost[:, None] + d[None, :]).ravel()
        E = (err[:, None] + e[None, :]).ravel()
        Q = (rcs[:, None] + rc[None, :]).ravel()
        ok = np.flatnonzero((Q <= slack) & (C <= red.R))
        order = ok[np.lexsort((E[ok], C[ok]))]
        Eo = E[order]
        prev = np.minimum.accumulate(np.concatenate([[np.inf], Eo[:-1]]))
        order = order[Eo < prev]
        cost, err, rcs = C[order], E[order], Q[order]
        parents.append(order // K)
        choice.append(order % K)
        peak = max(peak, cost.size)
    if cost.size == 0:  # cannot happen when ub is the value of a feasible answer
        return None, peak
    s = int(np.argmin(err))
    pos = np.zeros(len(red.d), dtype=np.int64)
    for li in range(len(red.d) - 1, -1, -1):
        pos[li] = choice[li][s]
        s = int(parents[li][s])
    return pos, peak


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


def solve_exact(problem: LayerBudget, time_limit: float | None = None, *, buckets: int = 10000,
                certify: bool = True, max_states: int = 2_000_000) -> Result:
    """The ``"dp"`` pipeline (see the module docstring); returns a :class:`Result`.

    ``time_limit`` is checked between the phases and between the layers of each DP; when
    it passes, the best answer so far comes back with ``"time_limit"`` and the best bound.
    """
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + time_limit
    red0 = reduce(problem)
    pos, lb, lam, ginfo = lp_greedy(red0)
    ub = value_of(red0, pos)
    best = levels_of(red0, pos)
    info: dict[str, Any] = {"lp_bound": lb, "greedy": ub, "levels_in": int(problem.levels.sum()),
                            "levels_pareto": int(sum(d.size for d in red0.d))}
    if gap_closed(ub, lb, red0.scale):
        return Result(best, "optimal", min(lb, ub), info, proof="LP bound meets the answer")
    try:
        red, dropped = eliminate(red0, lam, lb, ub)
        info["levels_after_elimination"] = int(sum(d.size for d in red.d))
        pos_up, _ = bucket_dp(red, buckets, "up", deadline)
        v_up = value_of(red, pos_up)
        if v_up < ub and problem.fits(levels_of(red, pos_up)):
            ub, best = v_up, levels_of(red, pos_up)
        _, v_dn = bucket_dp(red, buckets, "down", deadline)
    except TimeoutError:
        return Result(best, "time_limit", lb, info)
    lb = max(lb, min(v_dn, ub))
    info.update({"dp_up": v_up, "dp_down_bound": v_dn, "buckets": buckets})
    if gap_closed(ub, lb, red0.scale):
        return Result(best, "optimal", min(lb, ub), info, proof="DP lower bound meets the answer")
    if not certify:
        return Result(best, "feasible", lb, info)
    red2, _ = eliminate(red0, lam, lagrangian_bound(red0, lam), ub)
    info["levels_for_search"] = int(sum(d.size for d in red2.d))
    search_deadline = None if time_limit is None else t0 + 0.8 * time_limit
    spos, peak = pareto_search(red2, lam, lagrangian_bound(red2, lam), ub, max_states,
                               search_deadline)
    info["search_states"] = peak
    if spos is not None:
        lv = levels_of(red2, spos)
        if problem.objective(lv) < ub and problem.fits(lv):
            ub, best = problem.objective(lv), lv
        return Result(best, "optimal", ub, info, proof="exhaustive Pareto search")
    # too many states (or out of time): let HiGHS prove it on the reduced table
    left = None if deadline is None else deadline - time.perf_counter()
    if left is not None and left <= 0:
        return Result(best, "time_limit", lb, info)
    start = np.array([int(np.flatnonzero(i == k)[0]) if np.any(i == k) else 0
                      for i, k in zip(red2.idx, best, strict=True)])
    status, mpos, mbound = milp_reduced(red2, left, start, slack=0.5 * problem.tolerance)
    info["milp_status"] = status
    if mpos is not None:
        lv = levels_of(red2, mpos)
        if problem.fits(lv) and problem.objective(lv) < ub:
            ub, best = problem.objective(lv), lv
    if mbound is not None:
        lb = max(lb, min(mbound, ub))
    if status == "optimal":
        return Result(best, "optimal", min(lb, ub), info, proof="HiGHS on the reduced table")
    return Result(best, "time_limit" if status == "time_limit" else "feasible", lb, info)


BUCKETS = Integer(1, 10_000_000)


@register("dp", LayerBudget, guarantee="exact", requires=("highspy",), package="highspy",
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
