"""Compiled (numba) kernels of the max-coverage greedy and its Lagrangian bound.

The graph is a CSR radius graph ``G`` (``indptr``, ``indices``; symmetric, with the
diagonal), the points carry weights ``w >= 0``. Work is counted in graph entries touched
(one unit per neighbour visited, one per point in an O(n) pass), so the bound's cost can be
tied to the selection's without timing anything.

- :func:`lazy_greedy`: Minoux's lazy greedy on a binary max-heap keyed by (gain, -index),
  so it picks exactly what the plain greedy picks (the largest marginal gain, the lowest
  index on ties). Stale heap keys are upper bounds on the current gains (submodularity),
  so ``f(S_t) + (sum of the k largest keys)`` is an upper bound on the optimum at every
  step t (any k points add at most their k gains to ``S_t``, and ``f`` is monotone); it is
  taken at the given checkpoints in O(n) each (no pass over the graph).
- :func:`lagrangian_steps`: projected subgradient on the Lagrangian dual of
  ``y_i <= sum_{j in N(i)} x_j``: for ``0 <= mu <= w``,
  ``OPT <= L(mu) = sum_i (w_i - mu_i) + (sum of the k largest entries of G mu)``.
"""

from __future__ import annotations

import numpy as np

from pruneopt.solvers.jit import load_numba

njit = load_numba().njit

__all__ = ["exact_gains", "lagrangian_steps", "lazy_greedy", "topk_sum"]


@njit(cache=True)
def _before(ga: float, ia: int, gb: float, ib: int) -> bool:
    """Heap order: larger gain first, then the lower index."""
    return ga > gb or (ga == gb and ia < ib)


@njit(cache=True)
def _sift_down(key: np.ndarray, idx: np.ndarray, pos: int, size: int) -> None:
    g, i = key[pos], idx[pos]
    while True:
        c = 2 * pos + 1
        if c >= size:
            break
        if c + 1 < size and _before(key[c + 1], idx[c + 1], key[c], idx[c]):
            c += 1
        if not _before(key[c], idx[c], g, i):
            break
        key[pos], idx[pos] = key[c], idx[c]
        pos = c
    key[pos], idx[pos] = g, i


@njit(cache=True)
def topk_sum(values: np.ndarray, k: int) -> float:
    """Sum of the ``k`` largest entries of ``values`` (negative ones count as 0)."""
    m = values.shape[0]
    if k <= 0 or m == 0:
        return 0.0
    if k >= m:
        s = 0.0
        for v in values:
            s += max(v, 0.0)
        return s
    part = np.partition(values, m - k)
    s = 0.0
    for t in range(m - k, m):
        s += max(part[t], 0.0)
    return s


@njit(cache=True)
def exact_gains(indptr: np.ndarray, indices: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``G @ v``: for each point j the sum of ``v`` over its neighbours."""
    n = indptr.shape[0] - 1
    out = np.empty(n)
    for j in range(n):
        s = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            s += v[indices[p]]
        out[j] = s
    return out


@njit(cache=True)
def lazy_greedy(indptr: np.ndarray, indices: np.ndarray, w: np.ndarray, k: int, eps: float,
                initial: np.ndarray, ticks: np.ndarray):
    """Lazy greedy max coverage.

    Returns ``(order, cover_step, covered, tick_bounds, work)``: the selected points in the
    order picked (at most ``k``; ``initial`` first), the step at which each point was first
    covered (``k`` + 1 if never), the covered weight, the upper bound
    ``f(S_t) + top-k stale keys`` at each step ``t`` in ``ticks`` (``inf`` where not
    reached), and the selection's work in graph entries (the checkpoints not counted).
    """
    n = indptr.shape[0] - 1
    uncovered = np.ones(n, dtype=np.bool_)
    cover_step = np.full(n, k + 1, dtype=np.int64)
    order = np.empty(k, dtype=np.int64)
    tick_bounds = np.full(ticks.shape[0], np.inf)
    covered = 0.0
    t = 0
    work = 0
    for s in range(initial.shape[0]):
        if t >= k:
            break
        j = initial[s]
        order[t] = j
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if uncovered[i]:
                uncovered[i] = False
                cover_step[i] = t
                covered += w[i]
        work += indptr[j + 1] - indptr[j]
        t += 1
    key = np.empty(n)
    idx = np.empty(n, dtype=np.int64)
    size = 0
    for j in range(n):
        g = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if uncovered[i]:
                g += w[i]
        if g > eps:
            key[size], idx[size] = g, j
            size += 1
    work += indptr[n] + n
    for pos in range(size // 2 - 1, -1, -1):
        _sift_down(key, idx, pos, size)
    nt = 0
    while nt < ticks.shape[0] and ticks[nt] < t:
        nt += 1
    while t < k and size > 0:
        if nt < ticks.shape[0] and ticks[nt] == t:
            tick_bounds[nt] = covered + topk_sum(key[:size], k)
            nt += 1
        j = idx[0]
        cur = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if uncovered[i]:
                cur += w[i]
        work += indptr[j + 1] - indptr[j]
        if cur <= eps:  # nothing left to gain: drop it
            size -= 1
            key[0], idx[0] = key[size], idx[size]
            _sift_down(key, idx, 0, size)
            continue
        if size == 1 or _best_child_not_before(key, idx, size, cur, j):
            order[t] = j
            for p in range(indptr[j], indptr[j + 1]):
                i = indices[p]
                if uncovered[i]:
                    uncovered[i] = False
                    cover_step[i] = t
                    covered += w[i]
            t += 1
            size -= 1
            key[0], idx[0] = key[size], idx[size]
            _sift_down(key, idx, 0, size)
        else:
            key[0] = cur
            _sift_down(key, idx, 0, size)
    return order[:t], cover_step, covered, tick_bounds, work


@njit(cache=True)
def _best_child_not_before(key: np.ndarray, idx: np.ndarray, size: int, cur: float,
                           j: int) -> bool:
    """Whether ``(cur, j)`` comes before both children of the root (so before all keys)."""
    for c in (1, 2):
        if c < size and _before(key[c], idx[c], cur, j):
            return False
    return True


@njit(cache=True)
def _topk_members(gains: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest gains (ties: the lowest indices)."""
    n = gains.shape[0]
    if k >= n:
        return np.arange(n)
    thr = np.partition(gains, n - k)[n - k]
    out = np.empty(k, dtype=np.int64)
    c = 0
    for j in range(n):
        if gains[j] > thr:
            out[c] = j
            c += 1
    for j in range(n):
        if c >= k:
            break
        if gains[j] == thr:
            out[c] = j
            c += 1
    return out


@njit(cache=True)
def lagrangian_steps(indptr: np.ndarray, indices: np.ndarray, w: np.ndarray, k: int,
                     mu: np.ndarray, best_mu: np.ndarray, state: np.ndarray, lower: float,
                     iters: int, stop_gap: float):
    """Projected-subgradient steps on ``L(mu)``, resumable: ``mu`` (the current point, in
    ``[0, w]``), ``best_mu`` and ``state = [best bound, step scale theta, steps without
    improvement]`` are updated in place, so a caller can run the steps in batches. Polyak
    step towards the known objective ``lower``; the scale halves after 4 steps without
    improvement. Stops after ``iters`` steps, when the best bound is within ``stop_gap`` of
    ``lower``, or when the scale falls below 1e-3.

    Returns ``(steps taken, finished)``; ``finished`` means a stopping rule other than
    ``iters`` fired (no further batch can help).
    """
    n = indptr.shape[0] - 1
    sub = np.empty(n)
    wsum = 0.0
    for i in range(n):
        wsum += w[i]
    steps = 0
    while steps < iters:
        steps += 1
        gains = exact_gains(indptr, indices, mu)
        top = _topk_members(gains, k)
        val = wsum
        for i in range(n):
            val -= mu[i]
        for j in top:
            val += gains[j]
        if val < state[0] - 1e-12 * wsum:
            state[0] = val
            best_mu[:] = mu
            state[2] = 0.0
        else:
            state[2] += 1.0
            if state[2] >= 4.0:
                state[1] /= 2.0
                state[2] = 0.0
        sub[:] = -1.0
        for j in top:
            for p in range(indptr[j], indptr[j + 1]):
                sub[indices[p]] += 1.0
        norm = 0.0
        for i in range(n):
            if (mu[i] <= 0.0 and sub[i] > 0.0) or (mu[i] >= w[i] and sub[i] < 0.0):
                sub[i] = 0.0  # projected: only directions that can move inside the box
            norm += sub[i] * sub[i]
        if norm == 0.0 or state[1] < 1e-3 or state[0] - lower <= stop_gap:
            return steps, True
        step = state[1] * (val - lower) / norm
        for i in range(n):
            mu[i] = min(max(mu[i] - step * sub[i], 0.0), w[i])
    return steps, False
