"""Heuristics and the convex lower bound for :class:`~pruneopt.formulations.MMDSelection`.

Internally the objective is scaled by k^2 and the constant dropped::

    F(x) = x^T K x - 2 k c^T x,        MMD^2(x) = F(x) / k^2 + tt

Lower bound (``relaxation_bound``): replace K by K - mu I (mu <= lambda_min(K), exact on
binary x with sum x = k, see ``MMDSelection.convexified``) and relax x to [0, 1]^n with
sum x = k: a convex QP, solved with HiGHS. The bound is not the QP solver's number: for the
QP point x* (any accuracy), convexity gives F(y) >= F(x*) + g^T (y - x*) for every y, so

    LB = F(x*) + (sum of the k smallest entries of g) - g^T x*,    g = grad F(x*)

is a proven lower bound even if the QP solver stopped early.

Solvers registered here (all "heuristic": status "feasible", never "optimal"; each reports
the relaxation bound as ``bound`` when n <= ``BOUND_MAX_N`` or ``bound=True``):

- ``"relax-round"``: relaxation, then keep the k largest x*_i.
- ``"greedy"``: forward (add the point that lowers MMD^2 most, O(n k)) or backward
  (``direction="backward"``: remove points, O(n (n - k))).
- ``"swap"``: best-improvement 1-swap local search from a start (``start="random"``
  (seeded), ``"greedy"``, ``"relax"``, or an index array).
- ``"relax-swap"``: the combination: relaxation + top-k + swap, and greedy forward + swap;
  the better of the two. The recommended heuristic up to ``MAX_DENSE_N`` points; beyond that
  use ``"lowrank"`` (never builds the n x n kernel matrix).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pruneopt.formulations.mmd import MMDSelection
from pruneopt.solvers.registry import Result, register

#: Largest n for which the dense solvers build the n x n kernel matrix (8 n^2 bytes).
MAX_DENSE_N = 6000
#: Up to this n every dense solver also computes the relaxation lower bound by default.
BOUND_MAX_N = 2000


def dense_refusal(problem: MMDSelection) -> str | None:
    """The registry's ``accepts`` hook of the dense solvers: why ``problem`` is too large."""
    if problem.n > MAX_DENSE_N:
        return (f"n = {problem.n} source points exceeds the dense limit n <= {MAX_DENSE_N} "
                f"(an n x n kernel matrix); use solver='lowrank'")
    return None


def dense_data(problem: MMDSelection) -> tuple[np.ndarray, np.ndarray, float]:
    """(K, c, tt) of ``problem``, refusing sizes whose n x n matrix would not fit."""
    if problem.n > MAX_DENSE_N:
        raise ValueError(
            f"n = {problem.n} source points: the dense MMD solvers build an n x n kernel "
            f"matrix and are limited to n <= {MAX_DENSE_N}; use solver='lowrank' (random "
            f"Fourier features / Nystrom, O(n r) memory) for large n"
        )
    K = problem.__dict__.get("_dense_K")
    if K is None:
        K = problem.source_gram()
        K = 0.5 * (K + K.T)
        problem.__dict__["_dense_K"] = K  # cached on the problem (its data never changes)
    return K, problem.cross_means, problem.target_term


def scaled_value(K: np.ndarray, c: np.ndarray, k: int, idx: np.ndarray) -> float:
    """F at the 0/1 vector with ones at ``idx``: sum K[idx, idx] - 2 k sum c[idx]."""
    return float(K[np.ix_(idx, idx)].sum() - 2.0 * k * c[idx].sum())


def shift(problem: MMDSelection, K: np.ndarray) -> float:
    """mu <= lambda_min(K) (a small safety margin below), for the convex relaxation."""
    cached = problem.__dict__.get("_dense_mu")
    if cached is not None:
        return cached
    scale = max(1.0, float(np.abs(np.diag(K)).max()))
    if problem.n <= 1500 or problem._kfun is not None:
        lam = float(np.linalg.eigvalsh(K)[0])
        mu = lam - 1e-9 * scale * max(1.0, problem.n / 100)
    else:  # rbf / linear are PSD: mu = 0 up to the rounding of K's eigenvalues
        mu = -1e-12 * scale * problem.n
    problem.__dict__["_dense_mu"] = mu
    return mu


def relaxation(problem: MMDSelection, time_limit: float | None = None
               ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Solve the convex QP relaxation with HiGHS; return (x*, LB, info) with LB a proven lower
    bound on the optimal MMD^2 (see the module docstring)."""
    import highspy
    import scipy.sparse as sp

    K, c, tt = dense_data(problem)
    n, k = problem.n, problem.keep
    mu = shift(problem, K)
    Q = K - mu * np.eye(n)
    g0 = -2.0 * k * c
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    if time_limit is not None:
        h.setOptionValue("time_limit", float(max(time_limit, 1e-3)))
    lp = highspy.HighsLp()
    lp.num_col_ = n
    lp.num_row_ = 1
    lp.col_cost_ = g0.astype(np.float64)
    lp.col_lower_ = np.zeros(n)
    lp.col_upper_ = np.ones(n)
    lp.row_lower_ = np.array([float(k)])
    lp.row_upper_ = np.array([float(k)])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(n + 1, dtype=np.int32)
    lp.a_matrix_.index_ = np.zeros(n, dtype=np.int32)
    lp.a_matrix_.value_ = np.ones(n)
    H = sp.csc_matrix(np.tril(2.0 * Q))
    hess = highspy.HighsHessian()
    hess.dim_ = n
    hess.format_ = highspy.HessianFormat.kTriangular
    hess.start_ = H.indptr.astype(np.int32)
    hess.index_ = H.indices.astype(np.int32)
    hess.value_ = H.data
    model = highspy.HighsModel()
    model.lp_ = lp
    model.hessian_ = hess
    h.passModel(model)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    x = np.asarray(h.getSolution().col_value, dtype=float)
    if x.shape != (n,) or not np.all(np.isfinite(x)):
        x = np.full(n, k / n)  # any point gives a valid (weaker) bound
    x = np.clip(x, 0.0, 1.0)
    Qx = Q @ x
    F = float(x @ Qx + mu * k + g0 @ x)
    grad = 2.0 * Qx + g0
    lb = F + float(np.sort(grad)[:k].sum()) - float(grad @ x)
    # a relative safety margin for the rounding of the sums above
    lb -= 1e-10 * (abs(F) + float(np.abs(grad).sum()) + 1.0)
    bound = lb / k**2 + tt
    return x, bound, {"relaxation_status": status, "mu": mu}


def swap_search(K: np.ndarray, c: np.ndarray, k: int, idx: np.ndarray, *,
                deadline: float | None = None, max_iter: int = 100_000) -> tuple[np.ndarray, int]:
    """Best-improvement 1-swap local search (swap one kept and one dropped point while it
    lowers F). Returns (kept indices, number of swaps)."""
    n = len(c)
    inset = np.zeros(n, dtype=bool)
    inset[idx] = True
    if k == n:
        return np.flatnonzero(inset), 0
    diag = np.diag(K).copy()
    g = K[:, inset].sum(1)
    scale = 1e-12 * (abs(scaled_value(K, c, k, np.flatnonzero(inset))) + k * k)
    swaps = 0
    for _ in range(max_iter):
        if deadline is not None and time.perf_counter() > deadline:
            break
        I = np.flatnonzero(inset)
        J = np.flatnonzero(~inset)
        a = -2.0 * g[I] + diag[I] + 2.0 * k * c[I]
        b = 2.0 * g[J] + diag[J] - 2.0 * k * c[J]
        D = a[:, None] + b[None, :] - 2.0 * K[np.ix_(I, J)]
        pos = int(np.argmin(D))
        if D.flat[pos] >= -scale:
            break
        i, j = I[pos // len(J)], J[pos % len(J)]
        inset[i], inset[j] = False, True
        g += K[:, j] - K[:, i]
        swaps += 1
    return np.flatnonzero(inset), swaps


def greedy_forward(K: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Add, k times, the point whose addition gives the smallest MMD^2 of the current set."""
    n = len(c)
    diag = np.diag(K)
    g = np.zeros(n)
    quad = lin = 0.0
    taken = np.zeros(n, dtype=bool)
    order = []
    for t in range(k):
        val = (quad + 2.0 * g + diag) / (t + 1) ** 2 - 2.0 * (lin + c) / (t + 1)
        val[taken] = np.inf
        j = int(np.argmin(val))
        taken[j] = True
        order.append(j)
        quad += 2.0 * g[j] + diag[j]
        lin += c[j]
        g += K[:, j]
    return np.sort(np.asarray(order, dtype=np.int64))


def greedy_backward(K: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Remove, n - k times, the point whose removal gives the smallest MMD^2."""
    n = len(c)
    diag = np.diag(K)
    g = K.sum(1)
    quad = float(g.sum())
    lin = float(c.sum())
    alive = np.ones(n, dtype=bool)
    for t in range(n, k, -1):
        val = (quad - 2.0 * g + diag) / (t - 1) ** 2 - 2.0 * (lin - c) / (t - 1)
        val[~alive] = np.inf
        i = int(np.argmin(val))
        alive[i] = False
        quad += -2.0 * g[i] + diag[i]
        lin -= c[i]
        g -= K[:, i]
    return np.flatnonzero(alive).astype(np.int64)


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries (ties broken by index), sorted."""
    order = np.lexsort((np.arange(len(x)), -x))
    return np.sort(order[:k]).astype(np.int64)


def _want_bound(problem: MMDSelection, bound: bool | None) -> bool:
    return problem.n <= BOUND_MAX_N if bound is None else bool(bound)


def _deadline(time_limit: float | None) -> float | None:
    return None if time_limit is None else time.perf_counter() + time_limit


@register("relax-round", MMDSelection, guarantee="heuristic", requires=("highspy",),
          package="highspy", priority=60, accepts=dense_refusal)
def _relax_round(problem: MMDSelection, time_limit: float | None, **opts: Any) -> Result:
    """Convex QP relaxation (HiGHS) rounded to its k largest entries; bound = relaxation."""
    _no_options("relax-round", opts)
    x, lb, info = relaxation(problem, time_limit)
    return Result(top_k(x, problem.keep), "feasible", lb, info)


@register("greedy", MMDSelection, guarantee="heuristic", priority=61, accepts=dense_refusal)
def _greedy(problem: MMDSelection, time_limit: float | None, *, direction: str = "forward",
            bound: bool | None = None, **opts: Any) -> Result:
    """Greedy forward (or backward) selection on the exact kernel."""
    _no_options("greedy", opts)
    K, c, _ = dense_data(problem)
    if direction == "forward":
        idx = greedy_forward(K, c, problem.keep)
    elif direction == "backward":
        idx = greedy_backward(K, c, problem.keep)
    else:
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    lb = relaxation(problem, time_limit)[1] if _want_bound(problem, bound) else None
    return Result(idx, "feasible", lb, {"direction": direction})


@register("swap", MMDSelection, guarantee="heuristic", priority=62, accepts=dense_refusal)
def _swap(problem: MMDSelection, time_limit: float | None, *, start: Any = "random",
          seed: int = 0, bound: bool | None = None, **opts: Any) -> Result:
    """1-swap local search from a random (seeded), greedy or relaxation start."""
    _no_options("swap", opts)
    deadline = _deadline(time_limit)
    K, c, _ = dense_data(problem)
    k = problem.keep
    lb, info = None, {}
    if isinstance(start, str) and start == "random":
        idx0 = np.sort(np.random.default_rng(seed).choice(problem.n, k, replace=False))
    elif isinstance(start, str) and start == "greedy":
        idx0 = greedy_forward(K, c, k)
    elif isinstance(start, str) and start == "relax":
        x, lb, info = relaxation(problem, time_limit)
        idx0 = top_k(x, k)
    elif isinstance(start, str):
        raise ValueError(
            f"start must be 'random', 'greedy', 'relax' or kept indices, got {start!r}"
        )
    else:
        idx0 = problem.check(start)
    idx, swaps = swap_search(K, c, k, idx0, deadline=deadline)
    if lb is None and _want_bound(problem, bound):
        lb = relaxation(problem)[1]
    return Result(idx, "feasible", lb, {**info, "swaps": swaps})


def best_heuristic(problem: MMDSelection, time_limit: float | None = None
                   ) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    """relaxation + top-k + swap and greedy + swap; the better answer, the relaxation bound."""
    deadline = _deadline(time_limit)
    K, c, _ = dense_data(problem)
    k = problem.keep
    x, lb, info = relaxation(problem, time_limit)
    a, sa = swap_search(K, c, k, top_k(x, k), deadline=deadline)
    b, sb = swap_search(K, c, k, greedy_forward(K, c, k), deadline=deadline)
    fa, fb = scaled_value(K, c, k, a), scaled_value(K, c, k, b)
    best = a if fa <= fb else b
    info.update({"start_won": "relax" if fa <= fb else "greedy", "swaps": sa + sb})
    return best, lb, info


@register("relax-swap", MMDSelection, guarantee="heuristic", requires=("highspy",),
          package="highspy", priority=50, accepts=dense_refusal)
def _relax_swap(problem: MMDSelection, time_limit: float | None, **opts: Any) -> Result:
    """Relaxation + top-k + swap and greedy + swap (the better); bound = relaxation."""
    _no_options("relax-swap", opts)
    idx, lb, info = best_heuristic(problem, time_limit)
    return Result(idx, "feasible", lb, info)


def _no_options(name: str, opts: dict[str, Any]) -> None:
    if opts:
        raise ValueError(f"solver {name!r} got unknown options {sorted(opts)}")
