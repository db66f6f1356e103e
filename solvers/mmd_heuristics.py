"""Heuristics and the convex lower bound for :class:`~pruneopt.formulations.MMDSelection`.

Internally the objective is scaled by k^2 and the constant dropped::

    F(x) = x^T K x - 2 k c^T x,        MMD^2(x) = F(x) / k^2 + tt

Lower bound (``relaxation_bound``): replace K by K - mu I (mu <= lambda_min(K), exact on
binary x with sum x = k, see ``MMDSelection.convexified``) and relax x to [0, 1]^n with
sum x = k: a convex QP, solved with HiGHS. The bound is not the QP solver's number: for the
QP point x* (any accuracy), convexity gives F(y) >= F(x*) + g^T (y - x*) for every y, so

    LB = F(x*) + (sum of the k smallest entries of g) - g^T x*,    g = grad F(x*)

is a proven lower bound even if the QP solver stopped early.

Class-aware problems (``MMDSelection(labels=..., class_keep=...)``): every piece keeps the
per-class counts sum_{i in c} x_i = k_c. The relaxation gets one equality row per class
instead of the single ``sum x = k`` (the shift by mu stays exact since the classes still add
up to k), and its bound minimizes the linear model over that polytope, which separates by
class: ``LB = F(x*) + sum_c (sum of the k_c smallest g_i, i in c) - g^T x*``. Rounding takes
the k_c largest x*_i of each class; greedy adds only points of classes not yet full (or, going
backward, removes only from classes above their count); swaps exchange a kept and a dropped
point of the same class; random starts draw k_c points per class.

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


def class_min_sum(v: np.ndarray, class_index: np.ndarray, quota: np.ndarray) -> float:
    """min of v^T y over {0 <= y <= 1, sum_{i in c} y_i = quota_c for every class c}: the sum,
    over classes, of the quota_c smallest entries of v in class c."""
    if len(quota) == 1:
        return float(np.sort(v)[: int(quota[0])].sum())
    order = np.lexsort((v, class_index))  # by class, then by value
    start = np.concatenate([[0], np.cumsum(np.bincount(class_index, minlength=len(quota)))])
    total = 0.0
    for c, q in enumerate(quota):
        total += float(v[order[start[c] : start[c] + int(q)]].sum())
    return total


def class_top(x: np.ndarray, class_index: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """Indices of the quota_c largest entries of x in every class c (ties by index), sorted."""
    if len(quota) == 1:
        return top_k(x, int(quota[0]))
    order = np.lexsort((np.arange(len(x)), -x, class_index))
    start = np.concatenate([[0], np.cumsum(np.bincount(class_index, minlength=len(quota)))])
    parts = [order[start[c] : start[c] + int(q)] for c, q in enumerate(quota)]
    return np.sort(np.concatenate(parts)).astype(np.int64)


def round_top(problem: MMDSelection, x: np.ndarray) -> np.ndarray:
    """A relaxed point rounded to a feasible decision: the k_c largest x_i of each class."""
    return class_top(np.asarray(x, dtype=np.float64), problem.class_index, problem.quota)


def random_start(problem: MMDSelection, seed: int = 0) -> np.ndarray:
    """k_c points drawn uniformly (seeded) from every class c, sorted."""
    rng = np.random.default_rng(seed)
    parts = [rng.choice(g, int(q), replace=False)
             for g, q in zip(problem.class_groups(), problem.quota, strict=True)]
    return np.sort(np.concatenate(parts)).astype(np.int64)


def class_rows(problem: MMDSelection) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) of the counts as equality rows A x = b: one row per class (indicator of the
    class), or the single row of ones without classes."""
    A = np.zeros((len(problem.quota), problem.n))
    A[problem.class_index, np.arange(problem.n)] = 1.0
    return A, problem.quota.astype(np.float64)


def relaxation(problem: MMDSelection, time_limit: float | None = None
               ) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Solve the convex QP relaxation with HiGHS; return (x*, LB, info) with LB a proven lower
    bound on the optimal MMD^2 (see the module docstring; with classes, one equality row per
    class)."""
    K, c, tt = dense_data(problem)
    n, k = problem.n, problem.keep
    mu = problem.kernel_shift()
    Q = K - mu * np.eye(n)
    g0 = -2.0 * k * c
    # HiGHS in units of the kernel scale (its tolerances are absolute)
    unit = problem.objective_scale() or 1.0
    A, b = class_rows(problem)
    out = run_highs(g0 / unit, A, b, b, np.zeros(n),
                    np.ones(n), hessian=2.0 * Q / unit, time_limit=time_limit)
    x = out.x
    if x is None or x.shape != (n,) or not np.all(np.isfinite(x)):
        # any point of the polytope gives a valid (weaker) bound
        x = (problem.quota / np.bincount(problem.class_index))[problem.class_index]
    x = np.clip(x, 0.0, 1.0)
    Qx = Q @ x
    F = float(x @ Qx + mu * k + g0 @ x)
    grad = 2.0 * Qx + g0
    lb = F + class_min_sum(grad, problem.class_index, problem.quota) - float(grad @ x)
    # a relative safety margin for the rounding of the sums above
    lb -= 1e-10 * (abs(F) + float(np.abs(grad).sum()) + k * k * unit)
    bound = lb / k**2 + tt
    return x, bound, {"relaxation_status": out.raw, "mu": mu}


def swap_search(K: np.ndarray, c: np.ndarray, k: int, idx: np.ndarray, *,
                deadline: float | None = None, max_iter: int = 100_000,
                class_index: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Best-improvement 1-swap local search (swap one kept and one dropped point while it
    lowers F; with ``class_index``, only points of the same class). Returns (kept indices,
    number of swaps)."""
    n = len(c)
    if class_index is not None and class_index.max(initial=0) == 0:
        class_index = None  # one class: no restriction
    inset = np.zeros(n, dtype=bool)
    inset[idx] = True
    if k == n:
        return np.flatnonzero(inset), 0
    if class_index is None:
        groups = [np.arange(n)]
    else:
        order = np.argsort(class_index, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(class_index))[:-1])
    diag = np.diag(K).copy()
    g = K[:, inset].sum(1)
    unit = float(np.abs(np.diag(K)).max()) or 1.0  # the kernel's scale
    scale = 1e-12 * (abs(scaled_value(K, c, k, np.flatnonzero(inset))) + k * k * unit)
    swaps = 0
    for _ in range(max_iter):
        if deadline is not None and time.perf_counter() > deadline:
            break
        best, i, j = np.inf, -1, -1
        for grp in groups:  # the best swap within each class (one group without classes)
            I = grp[inset[grp]]
            J = grp[~inset[grp]]
            if I.size == 0 or J.size == 0:
                continue
            a = -2.0 * g[I] + diag[I] + 2.0 * k * c[I]
            b = 2.0 * g[J] + diag[J] - 2.0 * k * c[J]
            D = a[:, None] + b[None, :] - 2.0 * K[np.ix_(I, J)]
            pos = int(np.argmin(D))
            if D.flat[pos] < best:
                best, i, j = float(D.flat[pos]), I[pos // len(J)], J[pos % len(J)]
        if not best < -scale:
            break
        inset[i], inset[j] = False, True
        g += K[:, j] - K[:, i]
        swaps += 1
    return np.flatnonzero(inset), swaps


def greedy_forward(K: np.ndarray, c: np.ndarray, k: int, class_index: np.ndarray | None = None,
                   quota: np.ndarray | None = None) -> np.ndarray:
    """Add, k times, the point whose addition gives the smallest MMD^2 of the current set
    (with ``class_index``/``quota``: among the classes not yet at their count)."""
    n = len(c)
    diag = np.diag(K)
    g = np.zeros(n)
    quad = lin = 0.0
    taken = np.zeros(n, dtype=bool)
    left = None if quota is None else np.asarray(quota, dtype=np.int64).copy()
    order = []
    for t in range(k):
        val = (quad + 2.0 * g + diag) / (t + 1) ** 2 - 2.0 * (lin + c) / (t + 1)
        val[taken] = np.inf
        if left is not None:
            val[left[class_index] == 0] = np.inf
        j = int(np.argmin(val))
        taken[j] = True
        if left is not None:
            left[class_index[j]] -= 1
        order.append(j)
        quad += 2.0 * g[j] + diag[j]
        lin += c[j]
        g += K[:, j]
    return np.sort(np.asarray(order, dtype=np.int64))


def greedy_backward(K: np.ndarray, c: np.ndarray, k: int, class_index: np.ndarray | None = None,
                    quota: np.ndarray | None = None) -> np.ndarray:
    """Remove, n - k times, the point whose removal gives the smallest MMD^2 (with
    ``class_index``/``quota``: only from classes still above their count)."""
    n = len(c)
    diag = np.diag(K)
    g = K.sum(1)
    quad = float(g.sum())
    lin = float(c.sum())
    alive = np.ones(n, dtype=bool)
    excess = None
    if quota is not None:
        excess = np.bincount(class_index, minlength=len(quota)) - np.asarray(quota)
    for t in range(n, k, -1):
        val = (quad - 2.0 * g + diag) / (t - 1) ** 2 - 2.0 * (lin - c) / (t - 1)
        val[~alive] = np.inf
        if excess is not None:
            val[excess[class_index] == 0] = np.inf
        i = int(np.argmin(val))
        alive[i] = False
        if excess is not None:
            excess[class_index[i]] -= 1
        quad += -2.0 * g[i] + diag[i]
        lin -= c[i]
        g -= K[:, i]
    return np.flatnonzero(alive).astype(np.int64)


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries (ties broken by index), sorted."""
    order = np.lexsort((np.arange(len(x)), -x))
    return np.sort(order[:k]).astype(np.int64)


def class_args(problem: MMDSelection) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(class_index, quota)`` for the greedy and swap helpers, ``(None, None)`` without
    classes."""
    if not problem.class_constrained:
        return None, None
    return problem.class_index, problem.quota


def _want_bound(problem: MMDSelection, bound: bool | None) -> bool:
    return problem.n <= BOUND_MAX_N if bound is None else bool(bound)


def _deadline(time_limit: float | None) -> float | None:
    return None if time_limit is None else time.perf_counter() + time_limit


@register("relax-round", MMDSelection, guarantee="heuristic", requires=("highspy",),
          package="highspy", accepts=dense_refusal)
def relax_round_solver(problem: MMDSelection, time_limit: float | None) -> Result:
    """Convex QP relaxation (HiGHS) rounded to its k largest entries; bound = relaxation."""
    x, lb, info = relaxation(problem, time_limit)
    return Result(round_top(problem, x), "feasible", lb, info)


@register("greedy", MMDSelection, guarantee="heuristic", accepts=dense_refusal,
          options={"direction": OneOf("forward", "backward"), "bound": Boolean(allow_none=True)})
def greedy_solver(problem: MMDSelection, time_limit: float | None, *, direction: str = "forward",
                  bound: bool | None = None) -> Result:
    """Greedy forward (or backward) selection on the exact kernel."""
    K, c, _ = dense_data(problem)
    cls, quota = class_args(problem)
    if direction == "forward":
        idx = greedy_forward(K, c, problem.keep, cls, quota)
    elif direction == "backward":
        idx = greedy_backward(K, c, problem.keep, cls, quota)
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
    cls, quota = class_args(problem)
    if isinstance(start, str) and start == "random":
        if cls is None:
            idx0 = np.sort(np.random.default_rng(seed).choice(problem.n, k, replace=False))
        else:
            idx0 = random_start(problem, seed)
    elif isinstance(start, str) and start == "greedy":
        idx0 = greedy_forward(K, c, k, cls, quota)
    elif isinstance(start, str) and start == "relax":
        x, lb, info = relaxation(problem, time_limit)
        idx0 = round_top(problem, x)
    else:
        idx0 = problem.check(start)
    idx, swaps = swap_search(K, c, k, idx0, deadline=deadline, class_index=cls)
    if lb is None and _want_bound(problem, bound):
        lb = relaxation(problem)[1]
    return Result(idx, "feasible", lb, {**info, "swaps": swaps})


def best_heuristic(problem: MMDSelection, time_limit: float | None = None
                   ) -> tuple[np.ndarray, float | None, dict[str, Any]]:
    """relaxation + top-k + swap and greedy + swap; the better answer, the relaxation bound."""
    deadline = _deadline(time_limit)
    K, c, _ = dense_data(problem)
    k = problem.keep
    cls, quota = class_args(problem)
    x, lb, info = relaxation(problem, time_limit)
    a, sa = swap_search(K, c, k, round_top(problem, x), deadline=deadline, class_index=cls)
    b, sb = swap_search(K, c, k, greedy_forward(K, c, k, cls, quota), deadline=deadline,
                        class_index=cls)
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
