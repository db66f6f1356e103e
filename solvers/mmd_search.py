"""Compiled (numba, single-threaded) loops of the ``lowrank`` MMD solver: matrix-vector
products, stochastic greedy and the pair step of batched swaps, all in the raw features of
:mod:`pruneopt.solvers.mmd_features` (phi_a . phi_b = C_a G C_b^T).

Notation (the objective scaled by k^2, constants dropped): for a kept set S of size k with
sigma = sum_{l in S} C_l and u = sigma / k - mean_T C, the witness at point j is
h_j = C_j G u (units of the kernel), and with kappa_j = k(s_j, s_j), nu_j = ||phi_j||^2,

    add j (not in S):     A_j = 2 k h_j + kappa_j
    remove i (in S):      R_i = -2 k h_i - kappa_i + 2 nu_i
    swap i -> j:          k^2 dMMD^2 = A_j + R_i - 2 phi_i . phi_j

(the Nystrom kernel with its exact diagonal). The same pair step serves the exact-kernel
polish, with A, R and the pair matrix from the exact kernel.

Each function is compiled by ``numba.njit(cache=True, fastmath=True)`` on its first call
(:func:`pruneopt.solvers.jit.compile_on_first_call`), so ``import pruneopt`` does not import
numba.
"""

from __future__ import annotations

import numpy as np

from pruneopt.solvers.jit import compile_on_first_call

jit = compile_on_first_call(fastmath=True)


@jit
def matvec(C: np.ndarray, w: np.ndarray) -> np.ndarray:
    """C w for float32 C (n, r) and float64 w (r,), accumulated in float64 (n,)."""
    n, r = C.shape
    out = np.empty(n)
    for j in range(n):
        acc = 0.0
        for q in range(r):
            acc += C[j, q] * w[q]
        out[j] = acc
    return out


@jit
def swap_scores(C: np.ndarray, w: np.ndarray, kappa: np.ndarray, nu: np.ndarray,
                inset: np.ndarray, k: int) -> np.ndarray:
    """The swap scores of every point in one pass: R_i for kept points, A_j for the others
    (h_j = C_j w with w = G u; see the module docstring)."""
    n, r = C.shape
    out = np.empty(n)
    for j in range(n):
        acc = 0.0
        for q in range(r):
            acc += C[j, q] * w[q]
        if inset[j]:
            out[j] = -2.0 * k * acc - kappa[j] + 2.0 * nu[j]
        else:
            out[j] = 2.0 * k * acc + kappa[j]
    return out


@jit
def rmatvec(C: np.ndarray, x: np.ndarray) -> np.ndarray:
    """C^T x for float32 C (n, r) and float64 x (n,), in float64 (r,)."""
    n, r = C.shape
    acc = np.zeros(r)
    for j in range(n):
        xj = x[j]
        if xj != 0.0:
            for q in range(r):
                acc[q] += C[j, q] * xj
    return acc


@jit
def stochastic_greedy(C: np.ndarray, G: np.ndarray, tmean: np.ndarray, kappa: np.ndarray,
                      quota: np.ndarray, order: np.ndarray, starts: np.ndarray,
                      draws: np.ndarray) -> np.ndarray:
    """Stochastic greedy forward selection (Mirzasoleiman et al. 2015): at step t, among
    ``draws.shape[1]`` points drawn at random from the classes not yet at their count, add the one
    minimizing 2 C_j G (sigma / (t+1) - tmean) / (t+1) + kappa_j / (t+1)^2 (the MMD^2 of the
    kept set after adding j). ``order``: the source indices grouped by class, class c at
    ``order[starts[c]:starts[c+1]]``; ``quota``: the count of every class. If every draw is
    already kept, the step scans the whole eligible pool. Returns the kept indices."""
    n, r = C.shape
    ncls = len(quota)
    left = quota.copy()
    k = int(quota.sum())
    taken = np.zeros(n, dtype=np.bool_)
    sigma = np.zeros(r)
    diff = np.empty(r)
    w = np.empty(r)
    out = np.empty(k, dtype=np.int64)
    for t in range(k):
        inv = 1.0 / (t + 1)
        for q in range(r):
            diff[q] = sigma[q] * inv - tmean[q]
        for q in range(r):
            acc = 0.0
            for l in range(r):
                acc += G[q, l] * diff[l]
            w[q] = acc
        pool = 0
        for c in range(ncls):
            if left[c] > 0:
                pool += starts[c + 1] - starts[c]
        best, bj, bc = np.inf, -1, -1
        for s in range(draws.shape[1]):
            u = min(int(draws[t, s] * pool), pool - 1)
            c = 0
            while True:  # the u-th eligible point, class by class
                if left[c] > 0:
                    size = starts[c + 1] - starts[c]
                    if u < size:
                        break
                    u -= size
                c += 1
            j = order[starts[c] + u]
            if taken[j]:
                continue
            acc = 0.0
            for q in range(r):
                acc += C[j, q] * w[q]
            val = 2.0 * acc * inv + kappa[j] * inv * inv
            if val < best:
                best, bj, bc = val, j, c
        if bj < 0:  # every draw was kept already: scan the eligible points
            for c in range(ncls):
                if left[c] == 0:
                    continue
                for pos in range(starts[c], starts[c + 1]):
                    j = order[pos]
                    if taken[j]:
                        continue
                    acc = 0.0
                    for q in range(r):
                        acc += C[j, q] * w[q]
                    val = 2.0 * acc * inv + kappa[j] * inv * inv
                    if val < best:
                        best, bj, bc = val, j, c
        taken[bj] = True
        left[bc] -= 1
        out[t] = bj
        for q in range(r):
            sigma[q] += C[bj, q]
    return out


@jit
def apply_pairs(add: np.ndarray, rem: np.ndarray, M: np.ndarray, cls_in: np.ndarray,
                cls_out: np.ndarray, tol: float) -> np.ndarray:
    """Greedy non-overlapping swaps among b_in kept candidates (``rem``: their removal
    scores R) and b_out outside candidates (``add``: A). ``M``: (b_in + b_out)^2 pair
    matrix, kept candidates first (M_ij = phi_i . phi_j, or k(s_i, s_j) for the exact
    polish). Repeatedly applies the best swap of the same class with
    A_j + R_i - 2 M_ij < -tol, then updates the other candidates' scores for it. Returns the
    applied pairs as rows (position in the kept candidates, position in the outside ones)."""
    bi, bo = len(rem), len(add)
    add = add.copy()
    rem = rem.copy()
    free_i = np.ones(bi, dtype=np.bool_)
    free_o = np.ones(bo, dtype=np.bool_)
    done = np.empty((min(bi, bo), 2), dtype=np.int64)
    made = 0
    while made < min(bi, bo):
        best, bp, bq = -tol, -1, -1
        for p in range(bi):
            if not free_i[p]:
                continue
            for q in range(bo):
                if free_o[q] and cls_in[p] == cls_out[q]:
                    d = add[q] + rem[p] - 2.0 * M[p, bi + q]
                    if d < best:
                        best, bp, bq = d, p, q
        if bp < 0:
            break
        free_i[bp] = False
        free_o[bq] = False
        done[made, 0] = bp
        done[made, 1] = bq
        made += 1
        for q in range(bo):
            if free_o[q]:
                add[q] += 2.0 * (M[bi + q, bi + bq] - M[bi + q, bp])
        for p in range(bi):
            if free_i[p]:
                rem[p] -= 2.0 * (M[p, bi + bq] - M[p, bp])
    return done[:made]
