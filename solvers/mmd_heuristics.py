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
from pruneopt.solvers.highs import run_highs
from pruneopt.solvers.options import SEED, Boolean, Check, OneOf
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
    return problem.quadratic()


def scaled_value(K: np.ndarray, c: np.ndarray, k: int, idx: np.ndarray) -> float:
    """F at the 0/1 vector with ones at ``idx``: sum K[idx, idx] - 2 k sum c[idx]."""
    return float(K[np.ix_(idx, idx)].sum() - 2.0 * k * c[idx].sum())


def relaxation(problem: MMDSelection, time_limit: float | None = None
               ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Solve the convex QP relaxation with HiGHS; return (x*, LB, info) with LB a proven lower
    bound on the optimal MMD^2 (see the module docstring)."""
    K, c, tt = dense_data(problem)
    n, k = problem.n, problem.keep
    mu = problem.kernel_shift()
    Q = K - mu * np.eye(n)
    g0 = -2.0 * k * c
    # HiGHS in units of the kernel scale (its tolerances are absolute)
    unit = problem.objective_scale() or 1.0
    A = np.ones((1, n))
    out = run_highs(g0 / unit, A, np.array([float(k)]), np.array([float(k)]), np.zeros(n),
                    np.ones(n), hessian=2.0 * Q / unit, time_limit=time_limit)
    x = out.x
    if x is None or x.shape != (n,) or not np.all(np.isfinite(x)):
        x = np.full(n, k / n)  # any point gives a valid (weaker) bound
    x = np.clip(x, 0.0, 1.0)
    Qx = Q @ x
    F = float(x @ Qx + mu * k + g0 @ x)
    grad = 2.0 * Qx + g0
    lb = F + float(np.sort(grad)[:k].sum()) - float(grad @ x)
    # a relative safety margin for the rounding of the sums above
    lb -= 1e-10 * (abs(F) + float(np.abs(grad).sum()) + k * k * unit)
    bound = lb / k**2 + tt
    return x, bound, {"relaxation_status": out.raw, "mu": mu}


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
    unit = float(np.abs(np.diag(K)).max()) or 1.0  # the kernel's scale
    scale = 1e-12 * (abs(scaled_value(K, c, k, np.flatnonzero(inset))) + k * k * unit)
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
          package="highspy", accepts=dense_refusal)
def relax_round_solver(problem: MMDSelection, time_limit: float | None) -> Result:
    """Convex QP relaxation (HiGHS) rounded to its k largest entries; bound = relaxation."""
    x, lb, info = relaxation(problem, time_limit)
    return Result(top_k(x, problem.keep), "feasible", lb, info)


@register("greedy", MMDSelection, guarantee="heuristic", accepts=dense_refusal,
          options={"direction": OneOf("forward", "backward"), "bound": Boolean(allow_none=True)})
def greedy_solver(problem: MMDSelection, time_limit: float | None, *, direction: str = "forward",
                  bound: bool | None = None) -> Result:
    """Greedy forward (or backward) selection on the exact kernel."""
    K, c, _ = dense_data(problem)
    if direction == "forward":
        idx = greedy_forward(K, c, problem.keep)
    elif direction == "backward":
        idx = greedy_backward(K, c, problem.keep)
    lb = relaxation(problem, time_limit)[1] if _want_bound(problem, bound) else None
    return Result(idx, "feasible", lb, {"direction": direction})


def _start_option(value: Any) -> str | None:
    if isinstance(value, str):
        ok = value in ("random", "greedy", "relax")
        return None if ok else "must be 'random', 'greedy', 'relax' or kept indices"
    if isinstance(value, bool) or not hasattr(value, "__len__"):
        return "must be 'random', 'greedy', 'relax' or kept indices"
    return None


@register("swap", MMDSelection, guarantee="heuristic", accepts=dense_refusal,
          options={"start": Check(_start_option, "'random', 'greedy', 'relax' or kept indices"),
                   "seed": SEED, "bound": Boolean(allow_none=True)})
def swap_solver(problem: MMDSelection, time_limit: float | None, *, start: Any = "random",
                seed: int = 0, bound: bool | None = None) -> Result:
    """1-swap local search from a random (seeded), greedy or relaxation start."""
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
          package="highspy", accepts=dense_refusal)
def relax_swap_solver(problem: MMDSelection, time_limit: float | None) -> Result:
    """Relaxation + top-k + swap and greedy + swap (the better); bound = relaxation."""
    idx, lb, info = best_heuristic(problem, time_limit)
    return Result(idx, "feasible", lb, info)
