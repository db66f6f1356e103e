"""Numba kernels of the entropic OT solver for transposable N:M masks, one m x m block at a
time (the math is in :mod:`pruneopt.solvers.nm_entropic`): the capped scaling of one line,
annealed coordinate ascent on the entropic dual, the Lagrangian bound after one exact block
minimization and the greedy rounding on reduced scores; the augmenting-path repair is the
greedy's completion (:func:`pruneopt.solvers.nm_greedy_kernels.complete_block`).

Scores are in units of the block's largest |score|; prices ``u`` (rows) and ``v``
(columns) in the same units.
"""

from __future__ import annotations

import math

import numpy as np

from pruneopt.solvers.jit import load_numba
from pruneopt.solvers.nm_greedy_kernels import complete_block

njit = load_numba().njit

EXP_HI = 40.0  # exponents are clipped to [EXP_LO, EXP_HI] (min(1, .) saturates above)
EXP_LO = -700.0
ROUND_CUT = 8.0  # the rounding sorts entries with reduced score > -ROUND_CUT * tau


@njit(cache=True)
def cap_scale(e, n, amax, start):
    """``alpha`` in (0, amax] with ``sum_j min(1, alpha e_j) = n`` (``e >= 0``), or ``amax``
    when the sum stays below n there (a price at its bound 0).

    Newton's step on the concave, piecewise linear ``f(alpha) = sum min(1, alpha e_j)`` is
    ``alpha <- (n - k) / rest`` (k entries capped, ``rest`` the sum of the others): from
    below it climbs monotonically to the root, from above one step lands below it, so any
    ``start`` works. The step is the root as soon as it caps the same entries (checked in
    the same pass with the smallest capped and the largest uncapped entry), so a warm start
    (the last value) usually needs one pass over the line.
    """
    m = e.size
    a = start
    restarted = False
    for _ in range(2 * m + 4):
        k = 0
        rest = 0.0
        lo_cap = np.inf  # smallest e_j capped at a
        hi_free = 0.0  # largest e_j not capped at a
        for j in range(m):  # branch-free
            capped = a * e[j] >= 1.0
            k += capped
            rest += 0.0 if capped else e[j]
            lo_cap = min(lo_cap, e[j] if capped else np.inf)
            hi_free = max(hi_free, 0.0 if capped else e[j])
        if k >= n or rest <= 0.0:
            if restarted:  # climbing from below, at the n-th breakpoint: the root
                break
            # the start is past the last breakpoint: restart from below
            total = 0.0
            npos = 0
            emin = np.inf
            for j in range(m):
                total += e[j]
                if e[j] > 0.0:
                    npos += 1
                    emin = min(emin, e[j])
            if npos <= n:  # n is reached only by capping every positive entry
                return amax if npos == 0 else min(1.0 / emin, amax)
            a = n / total
            restarted = True
            continue
        a = (n - k) / rest
        restarted = True
        if a * lo_cap >= 1.0 and a * hi_free < 1.0:  # same capped set: the root
            break
    return min(a, amax)


@njit(cache=True)
def nth_largest(buf, n):
    """The n-th largest entry of ``buf`` (reordered in place): quickselect, middle pivot."""
    lo, hi = 0, buf.size - 1
    k = n - 1
    while lo < hi:
        pivot = buf[(lo + hi) // 2]
        i, j = lo, hi
        while i <= j:
            while buf[i] > pivot:
                i += 1
            while buf[j] < pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return buf[k]


@njit(cache=True)
def entropic_prices(w, n, tau, iterations, tolerance, anneal, stage_sweeps, u, v, K, e, alpha,
                    beta):
    """Annealed exact coordinate ascent on the entropic dual of one block with n per row
    and column (free prices; "at most" calls it on ``max(w, 0)``), in place on the prices
    ``u``, ``v``; returns the number of sweeps done."""
    m = w.shape[0]
    u[:] = 0.0
    v[:] = 0.0
    t = max(1.0, tau)
    done = 0
    while done < iterations:
        final = t <= tau
        for i in range(m):
            for j in range(m):
                z = (w[i, j] - u[i] - v[j]) / t
                K[i, j] = math.exp(min(EXP_HI, max(EXP_LO, z)))
        alpha[:] = 1.0
        beta[:] = 1.0
        sweeps = iterations - done if final else min(stage_sweeps, iterations - done)
        converged = False
        for _ in range(sweeps):
            for i in range(m):
                for j in range(m):
                    e[j] = K[i, j] * beta[j]
                alpha[i] = cap_scale(e, n, np.inf, alpha[i])
            for j in range(m):
                for i in range(m):
                    e[i] = K[i, j] * alpha[i]
                beta[j] = cap_scale(e, n, np.inf, beta[j])
            done += 1
            if final:  # columns hold; how far are the rows from theirs?
                worst = 0.0
                for i in range(m):
                    r = 0.0
                    for j in range(m):
                        r += min(1.0, alpha[i] * K[i, j] * beta[j])
                    worst = max(worst, abs(r - n))
                if worst <= tolerance * n:
                    converged = True
                    break
        for i in range(m):
            u[i] -= t * math.log(alpha[i])
        for j in range(m):
            v[j] -= t * math.log(beta[j])
        if final and (converged or done >= iterations):
            break
        t = max(tau, t * anneal)
    return done


@njit(cache=True)
def best_response(w, n, exactly, u, v, buf):
    """One exact block minimization of the Lagrangian (v given u, then u given v); returns
    ``L(u, v) = n sum u + n sum v + sum max(0, w - u - v)``."""
    m = w.shape[0]
    for j in range(m):
        for i in range(m):
            buf[i] = w[i, j] - u[i]
        v[j] = nth_largest(buf, n)
        if not exactly and v[j] < 0.0:
            v[j] = 0.0
    for i in range(m):
        for j in range(m):
            buf[j] = w[i, j] - v[j]
        u[i] = nth_largest(buf, n)
        if not exactly and u[i] < 0.0:
            u[i] = 0.0
    total = 0.0
    for i in range(m):
        total += n * (u[i] + v[i])
        for j in range(m):
            total += max(0.0, w[i, j] - u[i] - v[j])
    return total


@njit(cache=True)
def round_greedy(w, n, exactly, u, v, x, rc, cc, red, cand, cut):
    """Greedy on the reduced scores ``r = w - u - v`` (largest first, ties by position) over
    the entries with ``r > -cut`` (and, "at most", a positive score); the entries below,
    whose fractional value ``exp(r / tau)`` is negligible, are left to the repair."""
    m = w.shape[0]
    rc[:] = 0
    cc[:] = 0
    x[:, :] = False
    nc = 0
    for i in range(m):
        for j in range(m):
            r = w[i, j] - u[i] - v[j]
            if r > -cut and (exactly or w[i, j] > 0.0):
                cand[nc] = i * m + j
                red[nc] = -r
                nc += 1
    order = np.argsort(red[:nc], kind="mergesort")
    for k in range(nc):
        c = cand[order[k]]
        i = c // m
        j = c % m
        if rc[i] < n and cc[j] < n:
            x[i, j] = True
            rc[i] += 1
            cc[j] += 1


@njit(cache=True)
def block_scale(w, b):
    """The largest |score| of block ``b`` of ``w`` (B, m, m), 1 for an all-zero block: the
    unit the kernels measure that block in."""
    m = w.shape[1]
    big = 0.0
    for i in range(m):
        for j in range(m):
            big = max(big, abs(w[b, i, j]))
    return 1.0 if big == 0.0 else big


@njit(cache=True)
def solve_blocks_entropic(w, n, exactly, tau, iterations, tolerance, anneal, stage_sweeps, x, bound,
                   kept, sweeps, repairs):
    """Steps 1-4 on every block of ``w`` (B, m, m); per block: bound, kept score, sweeps,
    augmenting paths."""
    nb, m, _ = w.shape
    u = np.empty(m)
    v = np.empty(m)
    ub = np.empty(m)
    vb = np.empty(m)
    K = np.empty((m, m))
    wb = np.empty((m, m))
    red = np.empty(m * m)
    cand = np.empty(m * m, dtype=np.int64)
    e = np.empty(m)
    alpha = np.empty(m)
    beta = np.empty(m)
    rc = np.empty(m, dtype=np.int64)
    cc = np.empty(m, dtype=np.int64)
    g_row = np.empty(m)
    g_col = np.empty(m)
    pred_row = np.empty(m, dtype=np.int64)
    pred_col = np.empty(m, dtype=np.int64)
    seen_row = np.empty(m, dtype=np.bool_)
    seen_col = np.empty(m, dtype=np.bool_)
    front = np.empty(m, dtype=np.bool_)
    new_col = np.empty(m, dtype=np.bool_)
    for b in range(nb):
        scale = block_scale(w, b)  # the block in units of its largest |score|
        for i in range(m):
            for j in range(m):
                wb[i, j] = w[b, i, j] / scale
        if not exactly:  # prices of the exact-n relaxation of max(w, 0) (see below)
            for i in range(m):
                for j in range(m):
                    wb[i, j] = max(wb[i, j], 0.0)
        sweeps[b] = entropic_prices(wb, n, tau, iterations, tolerance, anneal, stage_sweeps,
                                     u, v, K, e, alpha, beta)
        if not exactly:
            for i in range(m):
                for j in range(m):
                    wb[i, j] = w[b, i, j] / scale
        # "at most" needs prices >= 0: shift (u + c, v - c) leaves the Lagrangian unchanged;
        # c = -min u makes u >= 0, and v >= 0 too when min u + min v >= 0 (else clip)
        c = 0.0 if exactly else -u.min()
        for i in range(m):
            ub[i] = u[i] + c if exactly else max(u[i] + c, 0.0)
            vb[i] = v[i] - c if exactly else max(v[i] - c, 0.0)
        bound[b] = best_response(wb, n, exactly, ub, vb, e) * scale
        xb = x[b]
        round_greedy(wb, n, exactly, u, v, xb, rc, cc, red, cand,
                     ROUND_CUT * tau if sweeps[b] > 0 else np.inf)
        repairs[b] = complete_block(wb, xb, rc, cc, n, exactly, g_row, g_col, seen_row,
                                    seen_col, front, new_col, pred_row, pred_col)
        s = 0.0
        for i in range(m):
            for j in range(m):
                if xb[i, j]:
                    s += w[b, i, j]
        kept[b] = s


@njit(cache=True)
def repair_blocks(w, n, exactly, x):
    """Step 4 alone on masks ``x`` (B, m, m) of blocks ``w`` (in place): augmenting paths
    until every line keeps n (``exactly``) or no path gains. Returns the paths applied."""
    nb, m, _ = w.shape
    wb = np.empty((m, m))
    rc = np.empty(m, dtype=np.int64)
    cc = np.empty(m, dtype=np.int64)
    g_row = np.empty(m)
    g_col = np.empty(m)
    pred_row = np.empty(m, dtype=np.int64)
    pred_col = np.empty(m, dtype=np.int64)
    seen_row = np.empty(m, dtype=np.bool_)
    seen_col = np.empty(m, dtype=np.bool_)
    front = np.empty(m, dtype=np.bool_)
    new_col = np.empty(m, dtype=np.bool_)
    total = 0
    for b in range(nb):
        scale = block_scale(w, b)
        rc[:] = 0
        cc[:] = 0
        for i in range(m):
            for j in range(m):
                wb[i, j] = w[b, i, j] / scale
                if x[b, i, j]:
                    rc[i] += 1
                    cc[j] += 1
        total += complete_block(wb, x[b], rc, cc, n, exactly, g_row, g_col, seen_row,
                                seen_col, front, new_col, pred_row, pred_col)
    return total
