"""Fast solvers for the coverage coresets: greedy (with bounds), k-center, LP rounding.

- ``"greedy"`` (:class:`CoverageSelection`): the greedy algorithm for monotone submodular
  maximisation, ``(1 - 1/e)``-approximate (Nemhauser, Wolsey and Fisher 1978). Two exact
  implementations of the same rule (the point of largest marginal gain, lowest index on
  ties): ``method="lazy"`` (the default: Minoux's lazy greedy with a heap of stale gains,
  which are upper bounds by submodularity, compiled in
  :mod:`~pruneopt.solvers.coverage_kernels`) and ``method="incremental"`` (the NumPy
  reference: every marginal gain kept up to date with one sparse update per newly covered
  point, O(nnz) updates but an O(n) arg-max per pick). The bound reported is the smallest
  of ``f(S) / (1 - 1/e)``, the total weight, the data-dependent bound ``f(S_t) + (sum of the
  k largest marginal gains at S_t)`` at checkpoints ``t`` and at the end (valid for
  monotone submodular f), a Lagrangian bound (subgradient steps towards the LP bound,
  warm-started by a dual fit to the run, within ``bound_budget`` times the selection's
  time) and, on small graphs, the LP bound.
- ``"greedy"`` (:class:`CoverSelection`): greedy until the required weight is covered, then
  reverse deletion of redundant points; lower bound ``min s : top-s gains at S_t >= what is
  still missing`` at checkpoints. For full cover (``cover=1``) the greedy is within
  ``H(max degree)`` of the optimum (Johnson 1974; Chvatal 1979), reported in ``info``.
- ``"kcenter"``: farthest-first traversal (Gonzalez 1985) in feature space: a heuristic here.
- ``"lp-round"``: the LP relaxation (HiGHS), rounded by the largest fractional ``x_j``, the
  rest filled greedily; the LP optimum is the bound.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pruneopt.formulations.base import RTOL
from pruneopt.formulations.coverage import CoverageSelection, CoverSelection, RadiusCover
from pruneopt.formulations.geometry import one_blas_thread
from pruneopt.solvers.highs import run_highs
from pruneopt.solvers.options import PROGRESS, SEED, Boolean, Integer, OneOf, Real
from pruneopt.solvers.registry import Result, package_installed, register
from pruneopt.solvers.starts import register_start

E_RATIO = math.e / (math.e - 1.0)  # 1 / (1 - 1/e): the greedy is within this factor
#: A pass over the graph in a bound step (streaming, in order) costs about this many times
#: less per entry than the lazy greedy's entries (random access, heap moves): measured here
#: ~4x at 10k points, ~10x at 100k-200k, ~7x at 1M; 8 keeps the bound near the selection.
STEP_SPEEDUP = 8.0
LP_BOUND_MAX_NNZ = 20_000  # the greedy adds the LP bound by default up to this graph size


def _gather(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """Concatenated neighbour lists of ``rows`` and the length of each."""
    starts = indptr[rows].astype(np.int64)
    lens = indptr[rows + 1].astype(np.int64) - starts
    if len(rows) == 1:
        return indices[starts[0]:starts[0] + lens[0]], lens
    idx = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    idx += np.arange(int(lens.sum()))
    return indices[idx], lens


def _rowsum(problem: RadiusCover, v: np.ndarray) -> np.ndarray:
    """``G @ v`` for the boolean radius graph (every row holds at least its diagonal)."""
    g = problem.graph
    return np.add.reduceat(v[g.indices], g.indptr[:-1].astype(np.int64))


class _Greedy:
    """State of a greedy run: selection, uncovered mask, exact marginal gains."""

    def __init__(self, problem: RadiusCover) -> None:
        self.p = problem
        g = problem.graph
        self.indptr, self.indices = g.indptr, g.indices
        self.w = problem.weights
        self.uncovered = np.ones(problem.n, dtype=bool)
        self.gains = _rowsum(problem, self.w)
        self.covered = 0.0
        self.selected: list[int] = []
        self.eps = 1e-12 * problem.total_weight

    def add(self, j: int) -> None:
        nb = self.indices[self.indptr[j]:self.indptr[j + 1]]
        new = nb[self.uncovered[nb]]
        self.selected.append(int(j))
        if len(new) == 0:
            return
        self.uncovered[new] = False
        wn = self.w[new]
        self.covered += float(wn.sum())
        cols, lens = _gather(self.indptr, self.indices, new)
        np.subtract.at(self.gains, cols, np.repeat(wn, lens))

    def best(self) -> tuple[int, float]:
        j = int(np.argmax(self.gains))
        return j, float(self.gains[j])


def _topk_sum(gains: np.ndarray, k: int) -> float:
    k = min(k, len(gains))
    if k <= 0:
        return 0.0
    g = np.maximum(gains, 0.0)
    if k == len(g):
        return float(g.sum())
    return float(np.partition(g, len(g) - k)[len(g) - k:].sum())


def _min_count(gains: np.ndarray, need: float, eps: float) -> int:
    """Fewest points whose gains can add up to ``need`` (a lower bound on what is still
    needed: each point of any solution adds at most its current gain)."""
    if need <= eps:
        return 0
    g = np.sort(np.maximum(gains, 0.0))[::-1]
    c = np.cumsum(g)
    pos = int(np.searchsorted(c, need - eps))
    return pos + 1 if pos < len(g) else len(g) + 1


def _checkpoints(budget: int, count: int = 24) -> set[int]:
    return set(np.unique(np.linspace(0, budget, count + 1).astype(int)).tolist())


def _progress(total: int, progress: bool, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pt")


@dataclass
class GreedyRun:
    """One compiled lazy-greedy run: the picks in order, the step at which each point was
    first covered (``keep + 1`` if never), the covered weight, the best checkpoint bound
    (``f(S_t) + top-k stale gains``) and its step, and the selection's work in graph
    entries (the initial gains, every gain re-evaluation, the coverage updates)."""

    order: np.ndarray
    cover_step: np.ndarray
    covered: float
    tick_bound: float
    tick: int
    selection_work: int


def lazy_run(problem: CoverageSelection, initial: Any = None, checkpoints: int = 24,
             progress: bool = False) -> GreedyRun:
    """The lazy greedy of :func:`~pruneopt.solvers.coverage_kernels.lazy_greedy` on the
    problem's graph (``initial`` points first). The compiled loop cannot update a progress
    bar: with ``progress`` one bar is filled when the run ends."""
    from pruneopt.solvers.coverage_kernels import lazy_greedy  # numba: on first use

    bar = _progress(problem.keep, progress, "greedy coverage")
    g = problem.graph
    k = problem.keep
    init = np.zeros(0, dtype=np.int64) if initial is None else np.asarray(
        list(initial), dtype=np.int64)
    ticks = np.array(sorted(_checkpoints(k, checkpoints)) if checkpoints > 0 else [],
                     dtype=np.int64)
    order, cover_step, covered, tb, work = lazy_greedy(
        g.indptr, g.indices, problem.weights, k, 1e-12 * problem.total_weight, init, ticks)
    if bar is not None:
        bar.update(len(order))
        bar.close()
    best = int(np.argmin(tb)) if len(tb) and np.isfinite(tb).any() else -1
    return GreedyRun(order=order, cover_step=cover_step, covered=float(covered),
                     tick_bound=float(tb[best]) if best >= 0 else np.inf,
                     tick=int(ticks[best]) if best >= 0 else 0, selection_work=int(work))


def greedy_max_coverage(problem: CoverageSelection, *, method: str = "lazy",
                        initial: Any = None, checkpoints: int = 24,
                        progress: bool = False) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Greedy max coverage. Returns (selected indices, upper bound on the optimum, info).

    ``method="lazy"`` (default): the compiled lazy greedy (:func:`lazy_run`), bound
    ``min(f(S_t) + top-k stale gains at checkpoints, f(S) + top-k exact final gains)``.
    ``method="incremental"``: the NumPy reference (every gain kept exact by sparse updates;
    the same picks), bound from exact gains at the checkpoints.
    ``initial``: indices to start from (they count against the budget; LP rounding uses it).
    """
    if method == "lazy":
        run = lazy_run(problem, initial, checkpoints, progress)
        w_unc = problem.weights * (run.cover_step > problem.keep)
        bound = min(problem.total_weight, run.tick_bound,
                    run.covered + _topk_sum(_rowsum(problem, w_unc), problem.keep))
        if initial is None:
            bound = min(bound, run.covered * E_RATIO)
        info: dict[str, Any] = {"method": method, "approximation_ratio": E_RATIO}
        return np.sort(run.order), max(bound, run.covered), info
    if method != "incremental":
        raise ValueError(f"method must be 'incremental' or 'lazy', got {method!r}")
    k = problem.keep
    st = _Greedy(problem)
    bound = problem.total_weight
    ticks = _checkpoints(k, checkpoints)
    for j in [] if initial is None else list(initial):
        st.add(int(j))
    bar = _progress(k, progress, "greedy coverage")
    while len(st.selected) < k:
        if len(st.selected) in ticks:
            bound = min(bound, st.covered + _topk_sum(st.gains, k))
        j, gj = st.best()
        if gj <= st.eps:
            break
        st.add(j)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    bound = min(bound, st.covered + _topk_sum(st.gains, k))
    if initial is None:  # the (1 - 1/e) factor holds for the greedy from the empty set
        bound = min(bound, st.covered * E_RATIO)
    bound = max(bound, st.covered)
    info = {"method": method, "approximation_ratio": E_RATIO}
    return np.array(sorted(st.selected), dtype=np.int64), bound, info


def lagrangian_bound(problem: CoverageSelection, lower: float, mu: np.ndarray | None = None,
                     iters: int = 50, seconds: float | None = None) -> tuple[float, np.ndarray,
                                                                            int]:
    """Upper bound on max coverage by Lagrangian relaxation of ``y_i <= sum_{N(i)} x_j``.

    For any multipliers ``0 <= mu <= w``:
    ``OPT <= L(mu) = sum_i (w_i - mu_i) + (sum of the k largest entries of G mu)``. Its
    minimum over ``mu`` equals the LP bound; projected-subgradient steps (Polyak step
    towards ``lower``, a known objective) from ``mu`` (default ``w``) get most of the way,
    at O(nnz) per step (:func:`~pruneopt.solvers.coverage_kernels.lagrangian_steps`).
    At most ``iters`` steps, and when ``seconds`` is given, no new batch of steps once that
    much time is spent (the first step always runs). Returns (the best bound seen, its
    multipliers, the number of steps).
    """
    from pruneopt.solvers.coverage_kernels import lagrangian_steps  # numba: on first use

    g = problem.graph
    w = problem.weights
    cur = w.copy() if mu is None else np.clip(np.asarray(mu, dtype=np.float64), 0.0, w)
    best_mu = cur.copy()
    state = np.array([np.inf, 1.0, 0.0])
    gap = RTOL * problem.total_weight
    start = time.perf_counter()
    done, batch = 0, 1
    while done < max(1, iters):
        t = time.perf_counter()
        steps, finished = lagrangian_steps(g.indptr, g.indices, w, problem.keep, cur, best_mu,
                                           state, float(lower), min(batch, iters - done), gap)
        done += int(steps)
        if finished or seconds is None and done >= iters:
            break
        if seconds is not None:
            left = seconds - (time.perf_counter() - start)
            per = (time.perf_counter() - t) / max(1, steps)
            if left <= per:
                break
            batch = max(1, int(left / per * 0.9))
        else:
            batch = iters
    return float(state[0]), best_mu, done


def dual_fit(problem: CoverageSelection, cover_step: np.ndarray, floor: float) -> np.ndarray:
    """Multipliers fitted to a greedy run: ``mu_i = w_i * min(1, floor / g_t(i))``, where
    ``g_t(i)`` is the gain of the pick that first covered i (``w_i`` if never covered) and
    ``floor`` the last pick's gain. Each pick's ball then holds about ``floor`` of price."""
    k = problem.keep
    w = problem.weights
    gains = np.bincount(np.minimum(cover_step, k), weights=w, minlength=k + 1)[:k]
    rho = np.ones(problem.n)
    cov = cover_step < k
    rho[cov] = np.minimum(1.0, floor / np.maximum(gains[cover_step[cov]], 1e-300))
    return w * rho


def finish_max(problem: CoverageSelection, sel: np.ndarray, bound: float,
               info: dict[str, Any], status: str = "feasible") -> Result:
    """The Result of a max-coverage heuristic: "optimal" when the bound meets the objective
    (rounded down to an integer first when the weights are integers)."""
    obj = problem.objective(sel)
    tol = problem.objective_tolerance(obj)
    if problem.integral_weights:
        bound = math.floor(bound + tol)
    bound = max(bound, obj)
    if bound <= obj + tol:
        return Result(sel, "optimal", obj, info, proof="bound meets the objective")
    return Result(sel, status, bound, info)


def _reverse_delete(problem: CoverSelection, sel: list[int], order: list[int]) -> list[int]:
    """Drop selected points (in ``order``) while the required weight stays covered."""
    g = problem.graph
    w = problem.weights
    count = np.zeros(problem.n, dtype=np.int64)
    cols, _ = _gather(g.indptr, g.indices, np.asarray(sel, dtype=np.int64))
    np.add.at(count, cols, 1)
    covered = float(w[count > 0].sum())
    keep = set(sel)
    for j in order:
        nb = g.indices[g.indptr[j]:g.indptr[j + 1]]
        lost = float(w[nb[count[nb] == 1]].sum())
        if problem.enough(covered - lost):
            keep.discard(j)
            count[nb] -= 1
            covered -= lost
    return sorted(keep)


def greedy_set_cover(problem: CoverSelection, *, initial: Any = None, checkpoints: int = 24,
                     progress: bool = False) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Greedy partial cover + reverse deletion. Returns (indices, lower bound, info)."""
    st = _Greedy(problem)
    need = problem.required
    eps = RTOL * problem.total_weight
    lower = _min_count(st.gains, need, eps)
    for j in [] if initial is None else list(initial):
        if st.covered >= need - eps:
            break
        st.add(int(j))
    bar = _progress(problem.n, progress, "greedy cover")
    every = max(1, problem.n // (checkpoints * 8))
    while st.covered < need - eps:
        t = len(st.selected)
        if t % every == 0:
            lower = max(lower, _min_count(st.gains, need - st.covered, eps))
        j, gj = st.best()
        if gj <= 0:  # cannot happen: every point covers itself
            break
        st.add(j)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    picked = list(st.selected)
    sel = _reverse_delete(problem, picked, picked[::-1])
    info: dict[str, Any] = {"greedy_size": len(picked)}
    if problem.cover == 1.0:
        dmax = int(problem.degree().max())
        info["approximation_ratio"] = float(sum(1.0 / i for i in range(1, dmax + 1)))
    return np.array(sel, dtype=np.int64), float(lower), info


def finish_min(problem: CoverSelection, sel: np.ndarray, lower: float,
               info: dict[str, Any], status: str = "feasible") -> Result:
    """The Result of a set-cover heuristic: "optimal" when the (integer-rounded) lower bound
    meets the number of selected points."""
    obj = float(len(sel))
    lower = min(float(math.ceil(lower - 1e-9)), obj)
    if lower >= obj:
        return Result(sel, "optimal", obj, info, proof="bound meets the objective")
    return Result(sel, status, lower, info)


@register("greedy", CoverageSelection, guarantee="approximation", ratio=E_RATIO,
          options={"method": OneOf("incremental", "lazy"), "lp_bound": Boolean(allow_none=True),
                   "bound_iters": Integer(0, None),
                   "bound_budget": Real(0.0, None, allow_none=True), "progress": PROGRESS})
def greedy_solver(problem: CoverageSelection, time_limit: float | None, *,
                  method: str = "lazy", lp_bound: bool | None = None,
                  bound_iters: int = 100, bound_budget: float | None = 1.0,
                  progress: bool = False) -> Result:
    """Greedy max coverage, (1 - 1/e)-approximate, with a data-dependent upper bound.

    The bound: ``f/(1 - 1/e)``, ``f(S_t) + top-k gains`` at checkpoints and at the end, and
    the Lagrangian dual ``L(mu)`` (:func:`lagrangian_bound`) at multipliers fitted to the
    run (:func:`dual_fit`), refined by projected-subgradient steps from the best of these.
    ``bound_budget``: the bound's work (passes over the graph: one for the final bound,
    one for the dual fit, about two per step) is at most this multiple of the selection's
    counted work (graph entries touched) times ``STEP_SPEEDUP``, so the bound costs about
    the selection's time and is the same on every run; ``None`` (and always with
    ``method="incremental"``, whose O(n) arg-max per pick outweighs them): all
    ``bound_iters`` steps (0 skips them).
    ``lp_bound``: also solve the LP relaxation (HiGHS); ``None`` does so only where it is
    cheap (at most ``LP_BOUND_MAX_NNZ`` graph entries). ``info`` reports
    ``lagrangian_steps``, ``selection_seconds`` and ``bound_seconds``.

    On an approximate graph (``graph_method="ivf"``) the objective and the bound are those
    of the problem on that graph (a subgraph of the true one: the objective is a lower
    bound of the true coverage of the same points); ``info["exact_objective"]`` re-scores
    the selection on the exact radius and ``info["graph"]`` carries the measured recall.
    """
    from pruneopt.solvers.coverage_kernels import exact_gains, topk_sum  # numba: on first use

    t0 = time.perf_counter()
    g = problem.graph
    one_pass = g.nnz + problem.n  # graph entries of one pass over the graph
    if method == "incremental":
        sel, bound, info = greedy_max_coverage(problem, method=method, progress=progress)
        t1 = time.perf_counter()
        mu = None
        obj = problem.objective(sel)
        passes = np.inf  # its O(n) arg-max per pick outweighs all bound_iters steps
    else:
        run = lazy_run(problem, progress=progress)
        sel = np.sort(run.order)
        t1 = time.perf_counter()
        info = {"method": method, "approximation_ratio": E_RATIO}
        w = problem.weights
        k = problem.keep
        obj = run.covered
        # the bound's allowance, in passes over the graph (deterministic: counted work)
        passes = np.inf if bound_budget is None else (
            bound_budget * STEP_SPEEDUP * run.selection_work / one_pass)
        final_mu = w * (run.cover_step > k)
        final = obj + topk_sum(exact_gains(g.indptr, g.indices, final_mu), k)
        passes -= 1.0
        bound = min(problem.total_weight, obj * E_RATIO, run.tick_bound, final)
        # warm start: the multipliers of the best of these bounds
        mu = final_mu if final <= run.tick_bound else w * (run.cover_step >= run.tick)
        if passes >= 2.0:
            last = float(w[run.cover_step == len(run.order) - 1].sum()) if len(
                run.order) else 0.0
            fit_mu = dual_fit(problem, run.cover_step, last)
            fit = float((w - fit_mu).sum()) + topk_sum(exact_gains(g.indptr, g.indices,
                                                                   fit_mu), k)
            passes -= 1.0
            if fit < min(final, run.tick_bound):
                mu = fit_mu
            bound = min(bound, fit)
    iters = int(min(bound_iters, max(0.0, passes) // 2.0))  # a step: about two passes
    if iters > 0 and bound > obj:
        lag, _, steps = lagrangian_bound(problem, obj, mu, iters=iters)
        info["lagrangian_bound"] = lag
        info["lagrangian_steps"] = steps
        bound = min(bound, lag + 1e-12 * problem.total_weight)
    info["selection_seconds"] = t1 - t0
    info["bound_seconds"] = time.perf_counter() - t1
    if lp_bound is None:
        lp_bound = problem.graph.nnz <= LP_BOUND_MAX_NNZ and package_installed("highspy")
    if lp_bound and bound > problem.objective(sel):
        _, lpb, lp_info = lp_relaxation(problem, time_limit)
        info.update(lp_info)
        if lpb is not None:
            bound = min(bound, lpb + problem.objective_tolerance(lpb))
    if not problem.graph_exact:
        t2 = time.perf_counter()
        info["exact_objective"] = problem.exact_covered_weight(sel)
        info["rescore_seconds"] = time.perf_counter() - t2
        info["graph"] = problem.graph_info
        info["bound_applies_to"] = "the approximate graph"
    return finish_max(problem, sel, bound, info)


@register("greedy", CoverSelection, guarantee="heuristic",
          options={"lp_bound": Boolean(allow_none=True), "progress": PROGRESS})
def greedy_cover_solver(problem: CoverSelection, time_limit: float | None, *,
                        lp_bound: bool | None = None, progress: bool = False) -> Result:
    """Greedy partial set cover with reverse deletion and a lower bound.

    ``lp_bound``: also solve the LP relaxation for its (usually much better) lower bound;
    ``None`` does so only on graphs of at most ``LP_BOUND_MAX_NNZ`` entries.
    """
    sel, lower, info = greedy_set_cover(problem, progress=progress)
    if lp_bound is None:
        lp_bound = problem.graph.nnz <= LP_BOUND_MAX_NNZ and package_installed("highspy")
    if lp_bound and lower < len(sel):
        _, lpb, lp_info = lp_relaxation(problem, time_limit)
        info.update(lp_info)
        if lpb is not None:
            lower = max(lower, lpb - 1e-6)
    return finish_min(problem, sel, lower, info)


def farthest_first(problem: RadiusCover, count: int | None, *, seed: int = 0,
                   stop_cover: float | None = None, progress: bool = False) -> np.ndarray:
    """Farthest-first traversal (k-center greedy): start at a seeded random point, then
    repeatedly add the point farthest from the chosen ones. Stops after ``count`` points,
    when every point is within the radius, or when ``stop_cover`` weight is covered."""
    X = problem.features - problem.features.mean(axis=0)
    sq = np.einsum("ij,ij->i", X, X)
    n = problem.n
    rng = np.random.default_rng(seed)
    j = int(rng.integers(n))
    dist = np.full(n, np.inf)
    sel: list[int] = []
    g = problem.graph
    w = problem.weights
    uncovered = np.ones(n, dtype=bool)
    covered = 0.0
    r2 = problem.radius ** 2
    limit = n if count is None else count
    bar = _progress(limit, progress, "k-center")
    while len(sel) < limit:
        sel.append(j)
        d2 = sq - 2.0 * (X @ X[j]) + sq[j]
        np.minimum(dist, d2, out=dist)
        dist[j] = 0.0
        if bar is not None:
            bar.update(1)
        if stop_cover is not None:
            nb = g.indices[g.indptr[j]:g.indptr[j + 1]]
            new = nb[uncovered[nb]]
            uncovered[new] = False
            covered += float(w[new].sum())
            if covered >= stop_cover:
                break
        j = int(np.argmax(dist))
        if dist[j] <= r2 * (1 - 1e-9) and stop_cover is None:
            break  # everything is (comfortably) within the radius
    if bar is not None:
        bar.close()
    return np.array(sorted(set(sel)), dtype=np.int64)


@register("kcenter", CoverageSelection, guarantee="heuristic",
          options={"seed": SEED, "progress": PROGRESS})
def kcenter_solver(problem: CoverageSelection, time_limit: float | None, *, seed: int = 0,
                   progress: bool = False) -> Result:
    """k-center greedy (farthest-first traversal); optimal when it covers everything."""
    with one_blas_thread():
        sel = farthest_first(problem, problem.keep, seed=seed, progress=progress)
    obj = problem.objective(sel)
    if obj >= problem.total_weight - RTOL * problem.total_weight:
        return Result(sel, "optimal", obj, {}, proof="everything is covered")
    return Result(sel, "feasible", problem.total_weight, {})


@register("kcenter", CoverSelection, guarantee="heuristic",
          options={"seed": SEED, "progress": PROGRESS})
def kcenter_cover_solver(problem: CoverSelection, time_limit: float | None, *, seed: int = 0,
                         progress: bool = False) -> Result:
    """Farthest-first traversal until the required weight is covered."""
    need = problem.required - RTOL * problem.total_weight
    with one_blas_thread():
        sel = farthest_first(problem, None, seed=seed, stop_cover=need, progress=progress)
    return finish_min(problem, sel, 1.0, {})


def lp_relaxation(problem: RadiusCover, time_limit: float | None) -> tuple[
        np.ndarray | None, float | None, dict]:
    """The LP relaxation with HiGHS (objective in units of its largest coefficient):
    (x of the selection variables, LP bound in the problem's units, info)."""
    form = problem.to_milp()
    unit = form.objective_unit()
    out = run_highs(form.c / unit, form.A, form.row_lower, form.row_upper, form.lower,
                    form.upper, sense=form.sense, time_limit=time_limit)
    if out.status != "optimal" or out.x is None:
        return None, None, {"lp_status": out.raw}
    bound = out.dual_bound * unit
    return np.asarray(out.x[: problem.n]), float(bound), {"lp_status": out.raw,
                                                          "lp_bound": bound}


@register("lp-round", CoverageSelection, guarantee="heuristic", requires=("highspy",),
          package="highspy", options={"rounds": Integer(0, None), "seed": SEED})
def lp_round_solver(problem: CoverageSelection, time_limit: float | None, *, rounds: int = 16,
                    seed: int = 0) -> Result:
    """LP relaxation (HiGHS), rounded: the largest x_j, and ``rounds`` randomized roundings
    (k draws with probabilities x_j / k, as in the (1 - 1/e)-in-expectation analysis), each
    filled greedily to k points; the best is returned, with the LP bound."""
    x, lp_bound, info = lp_relaxation(problem, time_limit)
    if x is None:  # LP stopped early: fall back to the greedy answer and its bound
        sel, bound, ginfo = greedy_max_coverage(problem)
        info.update(ginfo)
        return finish_max(problem, sel, bound, info)
    deg = problem.degree()
    order = np.lexsort((-deg, -x))  # by x descending, ties by degree
    top = [int(j) for j in order[: problem.keep] if x[j] > 1e-9]
    sel, gbound, _ = greedy_max_coverage(problem, initial=top)
    best = problem.objective(sel)
    info["rounded_from_lp"] = len(top)
    prob = np.clip(x, 0.0, None)
    rng = np.random.default_rng(seed)
    if prob.sum() > 0:
        prob = prob / prob.sum()
        for _ in range(max(0, int(rounds))):
            draw = np.unique(rng.choice(problem.n, size=problem.keep, p=prob))
            cand, _, _ = greedy_max_coverage(problem, initial=draw, checkpoints=0)
            val = problem.objective(cand)
            if val > best:
                sel, best = cand, val
    return finish_max(problem, sel, min(gbound, lp_bound + problem.objective_tolerance(lp_bound)),
                      info)


@register("lp-round", CoverSelection, guarantee="heuristic", requires=("highspy",),
          package="highspy")
def lp_round_cover_solver(problem: CoverSelection, time_limit: float | None) -> Result:
    """LP relaxation (HiGHS): add points by largest x_j until covered, reverse-delete."""
    x, lp_bound, info = lp_relaxation(problem, time_limit)
    if x is None:
        sel, lower, ginfo = greedy_set_cover(problem)
        info.update(ginfo)
        return finish_min(problem, sel, lower, info)
    deg = problem.degree()
    order = [int(j) for j in np.lexsort((-deg, -x))]
    sel, _, _ = greedy_set_cover(problem, initial=order)
    sel = _reverse_delete(problem, [int(j) for j in sel],
                          sorted((int(j) for j in sel), key=lambda j: x[j]))
    return finish_min(problem, np.array(sel, dtype=np.int64), lp_bound - 1e-6, info)


@register_start(CoverageSelection)
def coverage_start(problem: CoverageSelection) -> np.ndarray:
    """The greedy max-coverage answer and its bound (warm start of the exact backends)."""
    sel, bound, _ = greedy_max_coverage(problem)
    return sel, bound


@register_start(CoverSelection)
def cover_start(problem: CoverSelection) -> np.ndarray:
    """The greedy set cover answer and its lower bound (warm start of the exact backends)."""
    sel, lower, _ = greedy_set_cover(problem)
    return sel, float(math.ceil(lower - 1e-9))
