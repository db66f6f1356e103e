"""Entropic optimal transport for transposable N:M masks (TSENOR-style), with rounding,
repair and a proven Lagrangian bound.

``"entropic"``: every m x m block is an independent b-matching whose LP relaxation is
integral (the constraint matrix is totally unimodular)::

    max <W, X>  s.t.  X 1 (<= or =) n,  X^T 1 (<= or =) n,  0 <= X <= 1.

1. **Entropic dual.** Regularized by ``tau_k * sum X (log X - 1)`` with the box ``X <= 1``
   kept as a hard constraint, the optimal X for row prices u and column prices v is
   ``X_ij = min(1, exp((w_ij - u_i - v_j) / tau_k))`` (the box multiplier eliminated in
   closed form). Exact block coordinate ascent on the dual (what Dykstra's alternating
   KL projections on {X 1 = n}, {X^T 1 = n}, {X <= 1} converge to, one projection at a
   time): each row price solves ``sum_j min(1, alpha e_j) = n`` for ``alpha = exp(-u_i /
   tau)`` exactly (a capped-simplex scaling, a few passes over the row), then each column
   likewise. "At most n" keeps prices >= 0 (``alpha <= exp(u_i / tau)``); "exactly" leaves
   them free. The temperature is annealed from the block's largest |score| down to ``tau``
   times it (by :data:`ANNEAL` per stage of :data:`STAGE_SWEEPS` sweeps); each stage starts
   with one exponential per entry, the sweeps inside a stage are multiplications only.
   Everything runs on the block divided by its largest |score|, so scores times c > 0 give
   the same mask (up to float rounding of the division, 1 ulp, which decides only exact
   near-ties).
2. **Bound.** For any prices (u, v >= 0 for "at most", free for exactly) the Lagrangian
   ``L(u, v) = n sum u + n sum v + sum_ij max(0, w_ij - u_i - v_j)`` is an upper bound of the
   LP, hence of the integer optimum (weak duality; the LP is integral). The entropic prices
   are improved by one exact block minimization of L: ``v_j`` = the n-th largest of
   ``w_ij - u_i`` over i (clipped at 0 for "at most"), then ``u_i`` likewise.
3. **Rounding.** Greedy on the reduced scores ``w_ij - u_i - v_j`` (largest first, ties by
   position): keep an entry while its row and column keep fewer than n (and, "at most",
   its score is > 0).
4. **Repair.** Best-gain augmenting paths in the block's residual graph (row with room ->
   unkept entry -> column -> kept entry -> row ... -> column with room, every node in one
   BFS layer, so the path is simple) until every row and column keeps n (exactly: such a
   path exists while any line is short, so the mask is always valid) or, "at most", while a
   path gains.

``info["kept_ratio_vs_bound"]`` is kept score / bound (a lower bound of kept / optimum),
``info["gap"]`` the bound minus the kept score over the bound. Status ``"optimal"`` only
when the bound meets the kept score within the problem's tolerance (proof "bound meets
objective"), else ``"feasible"``. Heuristic: there is no ratio guarantee.

:func:`entropic_blocks` runs on NumPy arrays (Numba kernels, one pass per block in cache);
:func:`entropic_blocks_torch` is the same algorithm on a torch tensor of blocks, on its
device (written with tensor methods only, so this module does not import torch).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from numba import njit

from pruneopt.formulations.nm import TransposableNM
from pruneopt.solvers.nm_blocks import block_chunks
from pruneopt.solvers.options import Integer, Real
from pruneopt.solvers.registry import Result, register

#: Defaults of the options (relative final temperature, sweeps, row-violation tolerance).
TAU = 0.01
ITERATIONS = 16
TOLERANCE = 1e-2
ANNEAL = 0.3  # temperature ratio between stages
STAGE_SWEEPS = 2  # sweeps per stage above the final temperature
EXP_HI = 40.0  # exponents are clipped to [EXP_LO, EXP_HI] (min(1, .) saturates above)
EXP_LO = -700.0
GAIN_TOL = 1e-12  # augmenting paths must gain more than this (units of the block scale)


@njit(cache=True)
def _cap_scale(e, n, amax, start):
    """``alpha`` in (0, amax] with ``sum_j min(1, alpha e_j) = n`` (``e >= 0``), or ``amax``
    when the sum stays below n there (a price at its bound 0).

    Newton's step on the concave, piecewise linear ``f(alpha) = sum min(1, alpha e_j)`` is
    ``alpha <- (n - k) / rest`` (k entries capped, ``rest`` the sum of the others): from
    below it climbs monotonically to the root, from above one step lands below it, so any
    ``start`` works; a warm start (the last value) needs one or two passes over the line.
    """
    m = e.size
    a = start
    prev_k = -1
    for _ in range(2 * m + 4):
        k = 0
        rest = 0.0
        for j in range(m):  # branch-free (vectorizes)
            capped = a * e[j] >= 1.0
            k += capped
            rest += 0.0 if capped else e[j]
        if k >= n or rest <= 0.0:
            if prev_k != -1:  # climbing from below, at the n-th breakpoint: the root
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
            prev_k = -2
            continue
        a_new = (n - k) / rest
        if k == prev_k:  # same capped set twice: a fixed point
            a = a_new
            break
        prev_k = k
        a = a_new
    return min(a, amax)


@njit(cache=True)
def _nth_largest(buf, n):
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
def _entropic_prices(w, n, exactly, tau, iterations, tolerance, anneal, stage_sweeps, u, v, K, e,
                     alpha, beta):
    """Annealed exact coordinate ascent on the entropic dual of one block (in place on the
    prices ``u``, ``v``); returns the number of sweeps done."""
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
                amax = np.inf if exactly else math.exp(min(700.0, u[i] / t))
                alpha[i] = _cap_scale(e, n, amax, alpha[i])
            for j in range(m):
                for i in range(m):
                    e[i] = K[i, j] * alpha[i]
                amax = np.inf if exactly else math.exp(min(700.0, v[j] / t))
                beta[j] = _cap_scale(e, n, amax, beta[j])
            done += 1
            if final:  # columns hold; how far are the rows from theirs?
                worst = 0.0
                for i in range(m):
                    r = 0.0
                    for j in range(m):
                        r += min(1.0, alpha[i] * K[i, j] * beta[j])
                    slack = r - n
                    if not exactly and slack < 0.0 and u[i] - t * math.log(alpha[i]) <= 0.0:
                        slack = 0.0  # a free row (price 0) may keep fewer
                    worst = max(worst, abs(slack))
                if worst <= tolerance * n:
                    converged = True
                    break
        for i in range(m):
            u[i] -= t * math.log(alpha[i])
            if not exactly and u[i] < 0.0:
                u[i] = 0.0
        for j in range(m):
            v[j] -= t * math.log(beta[j])
            if not exactly and v[j] < 0.0:
                v[j] = 0.0
        if final and (converged or done >= iterations):
            break
        t = max(tau, t * anneal)
    return done


@njit(cache=True)
def _best_response(w, n, exactly, u, v, buf):
    """One exact block minimization of the Lagrangian (v given u, then u given v); returns
    ``L(u, v) = n sum u + n sum v + sum max(0, w - u - v)``."""
    m = w.shape[0]
    for j in range(m):
        for i in range(m):
            buf[i] = w[i, j] - u[i]
        v[j] = _nth_largest(buf, n)
        if not exactly and v[j] < 0.0:
            v[j] = 0.0
    for i in range(m):
        for j in range(m):
            buf[j] = w[i, j] - v[j]
        u[i] = _nth_largest(buf, n)
        if not exactly and u[i] < 0.0:
            u[i] = 0.0
    total = 0.0
    for i in range(m):
        total += n * (u[i] + v[i])
        for j in range(m):
            total += max(0.0, w[i, j] - u[i] - v[j])
    return total


@njit(cache=True)
def _round_greedy(w, n, exactly, u, v, x, rc, cc, red):
    """Greedy on the reduced scores ``w - u - v`` (largest first, ties by position).

    Shortcut with the same result: when no line holds more than n entries of positive
    reduced score, the greedy takes all of them first whatever their order, and afterwards
    only entries whose row and column both have room can be taken; only those are sorted.
    """
    m = w.shape[0]
    rc[:] = 0
    cc[:] = 0
    for i in range(m):
        for j in range(m):
            r = w[i, j] - u[i] - v[j]
            red[i * m + j] = -r
            take = r > 0.0 and (exactly or w[i, j] > 0.0)
            x[i, j] = take
            rc[i] += take
            cc[j] += take
    if rc.max() > n or cc.max() > n:  # conflicts: the plain greedy over every entry
        x[:, :] = False
        rc[:] = 0
        cc[:] = 0
        order = np.argsort(red, kind="mergesort")
    else:
        cand = np.empty(m * m, dtype=np.int64)
        nc = 0
        for i in range(m):
            if rc[i] >= n:
                continue
            for j in range(m):
                if cc[j] < n and not x[i, j]:
                    cand[nc] = i * m + j
                    nc += 1
        keys = np.empty(nc)
        for k in range(nc):
            keys[k] = red[cand[k]]
        order = cand[np.argsort(keys, kind="mergesort")]
    for k in range(order.size):
        i = order[k] // m
        j = order[k] % m
        if rc[i] < n and cc[j] < n and (exactly or w[i, j] > 0.0):
            x[i, j] = True
            rc[i] += 1
            cc[j] += 1


@njit(cache=True)
def _augment(w, n, exactly, x, rc, cc, g_row, g_col, pred_row, pred_col, seen_row, seen_col):
    """Best-gain layered augmenting paths (in place on ``x``, ``rc``, ``cc``): until every
    line keeps n (``exactly``) or no path gains more than :data:`GAIN_TOL`. Returns the
    number of paths applied."""
    m = w.shape[0]
    front = np.empty(m, dtype=np.bool_)
    new_col = np.empty(m, dtype=np.bool_)
    applied = 0
    for _ in range(n * m):
        any_row = False
        for i in range(m):
            seen_row[i] = rc[i] < n
            g_row[i] = 0.0 if seen_row[i] else -np.inf
            pred_row[i] = -1
            any_row |= seen_row[i]
        if not any_row:
            break
        for j in range(m):
            seen_col[j] = False
            g_col[j] = -np.inf
            pred_col[j] = -1
        front[:] = seen_row
        end_j = -1
        end_g = -np.inf
        for _layer in range(m + 1):
            new_col[:] = False
            for j in range(m):
                if seen_col[j]:
                    continue
                for i in range(m):
                    if front[i] and not x[i, j] and g_row[i] + w[i, j] > g_col[j]:
                        g_col[j] = g_row[i] + w[i, j]
                        pred_col[j] = i
                if pred_col[j] >= 0:
                    new_col[j] = True
                    seen_col[j] = True
                    if cc[j] < n and g_col[j] > end_g:
                        end_g = g_col[j]
                        end_j = j
            if end_j >= 0:
                break
            any_new = False
            for i in range(m):
                front[i] = False
                if seen_row[i]:
                    continue
                for j in range(m):
                    if new_col[j] and x[i, j] and g_col[j] - w[i, j] > g_row[i]:
                        g_row[i] = g_col[j] - w[i, j]
                        pred_row[i] = j
                if pred_row[i] >= 0:
                    front[i] = True
                    seen_row[i] = True
                    any_new = True
            if not any_new:
                break
        if end_j < 0 or (not exactly and end_g <= GAIN_TOL):
            break
        j = end_j
        cc[j] += 1
        while True:  # column <- row (keep) <- column (drop) ... <- row with room
            i = pred_col[j]
            x[i, j] = True
            jp = pred_row[i]
            if jp < 0:
                rc[i] += 1
                break
            x[i, jp] = False
            j = jp
        applied += 1
    return applied


@njit(cache=True)
def _blocks_kernel(w, n, exactly, tau, iterations, tolerance, anneal, stage_sweeps, x, bound,
                   kept, sweeps, repairs):
    """Steps 1-4 on every block of ``w`` (B, m, m); per block: bound, kept score, sweeps,
    augmenting paths."""
    nb, m, _ = w.shape
    u = np.empty(m)
    v = np.empty(m)
    K = np.empty((m, m))
    wb = np.empty((m, m))
    red = np.empty(m * m)
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
    for b in range(nb):
        big = 0.0
        for i in range(m):
            for j in range(m):
                big = max(big, abs(w[b, i, j]))
        scale = 1.0 if big == 0.0 else big  # the block in units of its largest |score|
        for i in range(m):
            for j in range(m):
                wb[i, j] = w[b, i, j] / scale
        sweeps[b] = _entropic_prices(wb, n, exactly, tau, iterations, tolerance, anneal,
                                     stage_sweeps, u, v, K, e, alpha, beta)
        bound[b] = _best_response(wb, n, exactly, u, v, e) * scale
        xb = x[b]
        _round_greedy(wb, n, exactly, u, v, xb, rc, cc, red)
        repairs[b] = _augment(wb, n, exactly, xb, rc, cc, g_row, g_col, pred_row, pred_col,
                              seen_row, seen_col)
        s = 0.0
        for i in range(m):
            for j in range(m):
                if xb[i, j]:
                    s += w[b, i, j]
        kept[b] = s


def entropic_blocks(w: np.ndarray, n: int, exactly: bool, *, tau: float = TAU,
                    iterations: int = ITERATIONS,
                    tolerance: float = TOLERANCE, anneal: float = ANNEAL,
                    stage_sweeps: int = STAGE_SWEEPS) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                           dict[str, int]]:
    """Masks for the blocks ``w`` (B, m, m): ``(mask, bound, kept, counts)``.

    ``mask`` (B, m, m) bool is always valid (n per row and column with ``exactly``, at most
    n and only positive scores otherwise); ``bound[b] >= `` the optimum of block b;
    ``kept[b]`` its kept score; ``counts``: total ``sweeps`` and repair ``paths``.
    """
    w = np.ascontiguousarray(w, dtype=np.float64)
    nb = w.shape[0]
    x = np.zeros(w.shape, dtype=bool)
    bound, kept = np.empty(nb), np.empty(nb)
    sweeps, repairs = np.empty(nb, dtype=np.int64), np.empty(nb, dtype=np.int64)
    if nb:
        _blocks_kernel(w, int(n), bool(exactly), float(tau), int(iterations), float(tolerance),
                       float(anneal), int(stage_sweeps), x, bound, kept, sweeps, repairs)
    return x, bound, kept, {"sweeps": int(sweeps.sum()), "paths": int(repairs.sum())}


@register("entropic", TransposableNM, guarantee="heuristic",
          options={"tau": Real(1e-4, 1.0), "iterations": Integer(0, 100_000),
                   "tolerance": Real(0.0, 1.0)})
def entropic_solver(problem: TransposableNM, time_limit: float | None, *, tau: float = TAU,
                    iterations: int = ITERATIONS, tolerance: float = TOLERANCE) -> Result:
    """Annealed entropic OT (exact Sinkhorn/Dykstra coordinate ascent) per block, greedy
    rounding on the reduced scores, augmenting-path repair, and the Lagrangian bound.

    ``tau``: final temperature relative to each block's largest |score|; ``iterations``:
    largest number of sweeps (row and column updates) per block; ``tolerance``: stop a
    block at the final temperature once every row sum is within ``tolerance * n``.
    ``time_limit``: read between chunks of blocks; once passed, the remaining blocks get
    no sweeps (greedy on the scores themselves, repaired, bounded) and the status is
    ``"time_limit"``.
    """
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    w = problem.blocks()
    x = np.empty(w.shape, dtype=bool)
    bound = 0.0
    counts = {"sweeps": 0, "paths": 0}
    late = False
    for sl in block_chunks(w.shape[0], problem.m):
        late = late or (deadline is not None and time.perf_counter() > deadline)
        xs, bs, _, cs = entropic_blocks(w[sl], problem.n, problem.exactly, tau=tau,
                                        iterations=0 if late else iterations,
                                        tolerance=tolerance)
        x[sl] = xs
        bound += float(bs.sum())
        for k in counts:
            counts[k] += cs[k]
    mask = problem.unblock(x)
    kept = problem.objective(mask)
    info: dict[str, Any] = {"sweeps_per_block": counts["sweeps"] / max(1, w.shape[0]),
                            "repair_paths": counts["paths"], "lagrangian_bound": bound,
                            "kept_ratio_vs_bound": kept / bound if bound > 0 else 1.0,
                            "gap": (bound - kept) / abs(bound) if bound != 0 else 0.0}
    if late:
        return Result(mask, "time_limit", bound, info)
    if bound - kept <= problem.objective_tolerance(kept):
        return Result(mask, "optimal", bound, info, proof="bound meets objective")
    return Result(mask, "feasible", bound, info)


# ------------------------------------------------------------------------ torch tensors


def _cap_scale_lines(e: Any, n: int, amax: Any, start: Any, dim: int, passes: int) -> Any:
    """:func:`_cap_scale` for every line of ``e`` along ``dim`` at once (tensor methods)."""
    total = e.sum(dim=dim, keepdim=True)
    npos = (e > 0).sum(dim=dim, keepdim=True)
    emin = e.masked_fill(e <= 0, float("inf")).amin(dim=dim, keepdim=True)
    a = start
    for _ in range(passes):
        capped = a * e >= 1.0
        k = capped.sum(dim=dim, keepdim=True)
        rest = e.masked_fill(capped, 0.0).sum(dim=dim, keepdim=True)
        past = (k >= n) | (rest <= 0)
        a = (n - k) / rest.clamp_min(1e-300)
        a = a.where(~past, n / total.clamp_min(1e-300))
    few = npos <= n  # n is reached only by capping every positive entry
    a = a.where(~few, (1.0 / emin).where(npos > 0, amax))
    return a.minimum(amax)


def entropic_blocks_torch(w: Any, n: int, exactly: bool, *, tau: float = TAU,
                          iterations: int = ITERATIONS, passes: int = 4) -> Any:
    """The steps of :func:`entropic_blocks` on a torch tensor of blocks (B, m, m), on its
    device (CPU or CUDA): a bool tensor (B, m, m) on the same device, always a valid mask.

    Fixed sweep counts (no data-dependent stopping, so nothing waits on the device); the
    capped scaling takes ``passes`` Newton passes per line. The rounding is the same greedy
    on the reduced scores, one step per entry rank over all blocks at once; the blocks an
    exact mask leaves short (rare) are repaired by the NumPy kernel on the CPU. Float32 on
    CUDA, float64 on the CPU (half precision is widened). Written with tensor methods only:
    this module never imports torch.
    """
    dt = w.dtype if w.is_cuda and w.element_size() == 4 else None
    w = w.detach().float() if dt is not None else w.detach().double()
    lo = -80.0 if dt is not None else EXP_LO
    nb, m, _ = w.shape
    if nb == 0:
        return w.new_zeros(w.shape).bool()
    big = w.abs().amax(dim=(1, 2), keepdim=True)
    scale = big.where(big > 0, 1.0)
    wb = w / scale
    u = wb.new_zeros((nb, m, 1))
    v = wb.new_zeros((nb, 1, m))
    inf = float("inf")
    t, done = max(1.0, tau), 0
    while done < iterations:
        final = t <= tau
        K = ((wb - u - v) / t).clamp(lo, EXP_HI).exp()
        alpha, beta = u.new_ones(u.shape), v.new_ones(v.shape)
        sweeps = iterations - done if final else min(STAGE_SWEEPS, iterations - done)
        amax_r = u.new_full(u.shape, inf) if exactly else (u / t).clamp_max(700.0).exp()
        amax_c = v.new_full(v.shape, inf) if exactly else (v / t).clamp_max(700.0).exp()
        for _ in range(sweeps):
            alpha = _cap_scale_lines(K * beta, n, amax_r, alpha, 2, passes)
            beta = _cap_scale_lines(K * alpha, n, amax_c, beta, 1, passes)
            done += 1
        u = u - t * alpha.log()
        v = v - t * beta.log()
        if not exactly:
            u, v = u.clamp_min(0.0), v.clamp_min(0.0)
        if final:
            break
        t = max(tau, t * ANNEAL)
    v = (wb - u).topk(n, dim=1).values[:, n - 1: n, :]
    v = v if exactly else v.clamp_min(0.0)
    u = (wb - v).topk(n, dim=2).values[:, :, n - 1: n]
    u = u if exactly else u.clamp_min(0.0)
    red = (wb - u - v).reshape(nb, m * m)
    order = red.argsort(dim=1, descending=True, stable=True)
    base = order.new_tensor(range(nb)).unsqueeze(1)
    ent, row, col = base * m * m + order, base * m + order // m, base * m + order % m
    rowc = order.new_zeros(nb * m)
    colc = order.new_zeros(nb * m)
    x = order.new_zeros(nb * m * m).bool()
    wf = wb.reshape(-1)
    for k in range(m * m):  # the greedy, one entry rank at a time over every block
        r, c, e = row[:, k], col[:, k], ent[:, k]
        take = (rowc[r] < n) & (colc[c] < n)
        if not exactly:
            take &= wf[e] > 0
        x[e] = take
        rowc[r] += take.long()
        colc[c] += take.long()
    x = x.reshape(nb, m, m)
    short = (x.sum(dim=2) < n).any(dim=1) if exactly else None
    if short is not None and bool(short.any()):
        idx = short.nonzero().flatten()
        xs, _, _, _ = entropic_blocks(w[idx].cpu().numpy(), n, exactly, tau=tau,
                                      iterations=iterations)
        x[idx] = x.new_tensor(xs)
    return x
