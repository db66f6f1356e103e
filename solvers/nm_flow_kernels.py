"""Numba kernels of the exact transposable N:M flow: per-block successive shortest paths
with potentials (dense Dijkstra), and the dual certificate of the answer.

One m-by-m block with scores ``w`` is the LP (totally unimodular, so its optimum is a 0/1
mask)::

    max  sum_ij w_ij x_ij   s.t.  sum_j x_ij <= n,  sum_i x_ij <= n,  0 <= x_ij <= 1

("at most"; ``exactly``: both sums = n). For "at most" ``w`` is clipped at 0 first (a
non-positive score is never worth keeping). Its dual is::

    min  n sum_i u_i + n sum_j v_j + sum_ij z_ij   s.t.  u_i + v_j + z_ij >= w_ij,  z >= 0

with ``u, v >= 0`` ("at most") or free (``exactly``). For ANY ``u, v`` (clipped at 0 for "at
most") the choice ``z = max(0, w - u - v)`` is dual feasible, so its objective is an upper
bound on every mask's kept score (weak duality): :func:`dual_gaps` computes that bound and
the kept score of a mask, and a gap below the float tolerance proves the mask optimal.

:func:`flow_blocks` finds the mask and those ``u, v``. As a min-cost flow (cost ``-w``) with
node potentials ``p`` and reduced costs ``c(a) + p(tail) - p(head)``: the start keeps each
row's top-n (the optimum without column limits) with row potential ``p_i`` = the row's
(n+1)-th largest score and column potentials 0, so every residual arc has reduced cost
>= 0 (kept entries ``w_ij - p_i >= 0``, others ``p_i - w_ij >= 0``). For "at most" the source
and sink are one node Z with potential 0 (arcs row <-> Z and column <-> Z of cost 0; rows
with room keep all their positive scores and get ``p_i = 0``). Then, while a column keeps
more than n, Dijkstra (dense, O(m^2) on 2m + 1 nodes) from every over-full column finds the
nearest under-full column (``exactly``) or Z ("at most": dropping an entry, or moving it to
a column with room); the potentials are raised by the distances (capped at the target's),
which keeps every reduced cost >= 0, and one unit moves along the path (all of whose arcs
then have reduced cost 0). The number of augmentations is the total column excess of the
start. At the end ``u_i = p_i - p_Z`` and ``v_j = p_Z - p_j`` (``p_Z = 0`` for ``exactly``)
satisfy complementary slackness with the mask, so the dual gap is zero up to rounding.

Scores are float64; all arithmetic is float64. Everything is per block: memory is the
input, the output mask and O(m^2) scratch.
"""

from __future__ import annotations

import numpy as np

from pruneopt.solvers.jit import load_numba
from pruneopt.solvers.nm_greedy_kernels import order_desc

njit = load_numba().njit

INF = np.inf


@njit(cache=True)
def _best_open(w, x, pc, i, exactly):
    """Row ``i``'s best unkept column by priced score ``w_ij + pc_j``: ``(value, column)``;
    for "at most" ``(0, -1)`` when no unkept entry is worth more than 0 (dropping wins)."""
    best = -INF
    bj = -1
    for j in range(w.shape[0]):
        if not x[i, j]:
            t = w[i, j] + pc[j]
            if t > best:
                best, bj = t, j
    if not exactly and not best > 0.0:
        return 0.0, -1
    return best, bj


@njit(cache=True)
def _price_phase(w, n, exactly, x, rowc, colc, pr, pc, bk, dl, il, budget):
    """Shed column excess by raising column prices ``q = -pc`` (Gauss-Seidel, in place):
    an over-full column j with excess e raises its price by the (e+1)-th smallest loss
    ``w_ij - q_j - pr_i`` of its rows, and the e rows of smallest loss move to their best
    unkept column ``bk`` (or, "at most", drop the entry). Every row
    keeps a top-n of its priced scores, with ``pr`` its best unkept priced score (>= 0 for
    "at most"), and a priced column stays full: the potentials stay valid (module
    docstring), so this is a primal-dual method of its own, which the shortest paths
    finish. Stops after ``budget`` moves; returns the moves."""
    m = w.shape[0]
    moves = 0
    while moves < budget:
        changed = False
        for j in range(m):
            e = colc[j] - n
            if e <= 0:
                continue
            changed = True
            c = 0
            for i in range(m):
                if x[i, j]:
                    dl[c] = w[i, j] + pc[j] - pr[i]
                    il[c] = i
                    c += 1
            for a in range(min(e + 1, c)):  # the e + 1 rows that lose least by moving
                b = a
                for q in range(a + 1, c):
                    if dl[q] < dl[b] or (dl[q] == dl[b] and il[q] < il[b]):
                        b = q
                dl[a], dl[b] = dl[b], dl[a]
                il[a], il[b] = il[b], il[a]
            # any price between the e-th and (e+1)-th loss keeps every row's choice a
            # top-n; the higher end leaves the rows that move no reason to come back
            delta = dl[e] if e < c else dl[e - 1]
            if delta > 0.0:
                pc[j] -= delta
            for a in range(e):
                i = il[a]
                x[i, j] = False
                colc[j] -= 1
                k = bk[i]
                if k >= 0:
                    x[i, k] = True
                    colc[k] += 1
                else:
                    rowc[i] -= 1
                pr[i], bk[i] = _best_open(w, x, pc, i, exactly)
                moves += 1
            for i in range(m):  # column j is worth less to rows that had it as best unkept
                if bk[i] == j:
                    pr[i], bk[i] = _best_open(w, x, pc, i, exactly)
        if not changed:
            break
    return moves


@njit(cache=True)
def _solve_block(w, n, exactly, x, rowc, colc, pr, pc, dr, dc, kr, kc, sr, sc, pred_r,
                 pred_c, idx, vals, bk, dl, il, cu, ca, budget):
    """Optimal mask ``x`` of one block ``w`` (m x m, already clipped for "at most") and its
    potentials ``pr``, ``pc`` (rows, columns; Z's potential is returned). Returns
    ``(p_Z, augmentations)``; ``augmentations < 0`` if a path was missing (a bug)."""
    m = w.shape[0]
    for j in range(m):
        colc[j] = 0
        pc[j] = 0.0
    for i in range(m):
        for j in range(m):
            vals[j] = w[i, j]
            x[i, j] = False
        order_desc(vals, idx, m)
        k = 0
        for q in range(n):
            j = idx[q]
            if exactly or w[i, j] > 0.0:
                x[i, j] = True
                colc[j] += 1
                k += 1
        rowc[i] = k
        if n < m:
            pr[i], bk[i] = _best_open(w, x, pc, i, exactly)
        else:
            pr[i], bk[i] = w[i, idx[m - 1]], -1
    excess = 0
    for j in range(m):
        if colc[j] > n:
            excess += colc[j] - n
    if excess > 0 and budget > 0:
        _price_phase(w, n, exactly, x, rowc, colc, pr, pc, bk, dl, il, budget * excess)
        excess = 0
        for j in range(m):
            if colc[j] > n:
                excess += colc[j] - n
    if excess == 0:
        return 0.0, 0
    return _shortest_paths(w, n, exactly, x, rowc, colc, pr, pc, excess, cu, ca, kr, kc,
                           dr, dc, sr, sc, pred_r, pred_c)


@njit(cache=True)
def _shortest_paths(w, n, exactly, x, rowc, colc, pr, pc, excess, cu, ca, kr, kc, dr, dc,
                    sr, sc, pred_r, pred_c):
    """Move the column excess along Dijkstra shortest paths (reduced costs, in place);
    returns ``(p_Z, augmentations)``, augmentations < 0 on a missing path (a bug).

    Arc costs are kept in two tables with ``inf`` for absent arcs, so the relaxations have
    no branches on the mask: ``cu[j, i] = w_ij`` (column j -> row i, if kept) and
    ``ca[i, j] = -w_ij`` (row i -> column j, if not). ``kr``/``kc`` are the tentative
    distances of unsettled nodes (``inf`` once settled), ``sr``/``sc`` are ``inf`` on settled
    nodes (so nothing relaxes them again), ``dr``/``dc`` the final distances."""
    m = w.shape[0]
    for i in range(m):
        for j in range(m):
            if x[i, j]:
                cu[j, i] = w[i, j]
                ca[i, j] = INF
            else:
                cu[j, i] = INF
                ca[i, j] = -w[i, j]
    pz = 0.0
    aug = 0
    while excess > 0:
        for q in range(m):
            kr[q] = INF
            sr[q] = 0.0
            dr[q] = INF
            pred_r[q] = -1
            kc[q] = 0.0 if colc[q] > n else INF
            sc[q] = 0.0
            dc[q] = INF
            pred_c[q] = -1
        kz = INF
        pred_z = 0  # row i: i + 1; column j: -(j + 1)
        target = -1  # column index, or m for Z
        dist = INF
        while True:
            best = INF
            node = -1
            for q in range(m):
                if kr[q] < best:
                    best = kr[q]
                    node = q
            for q in range(m):
                if kc[q] < best:
                    best = kc[q]
                    node = m + q
            if kz <= best and kz < INF:
                target, dist = m, kz
                break
            if node < 0:
                return pz, -1
            if node >= m:
                j = node - m
                dc[j] = best
                kc[j] = INF
                sc[j] = INF
                if colc[j] < n:
                    if exactly:
                        target, dist = j, best
                        break
                    c = best + pc[j] - pz
                    if c < kz:
                        kz, pred_z = c, -(j + 1)
                base = best + pc[j]
                for i in range(m):
                    c = base + cu[j, i] - pr[i] + sr[i]
                    if c < kr[i]:
                        kr[i] = c
                        pred_r[i] = j
            else:
                i = node
                dr[i] = best
                kr[i] = INF
                sr[i] = INF
                if not exactly and rowc[i] > 0:
                    c = best + pr[i] - pz
                    if c < kz:
                        kz, pred_z = c, i + 1
                base = best + pr[i]
                for j in range(m):
                    c = base + ca[i, j] - pc[j] + sc[j]
                    if c < kc[j]:
                        kc[j] = c
                        pred_c[j] = i
        for q in range(m):
            pr[q] += dr[q] if dr[q] < dist else dist
            pc[q] += dc[q] if dc[q] < dist else dist
        if not exactly:
            pz += dist
        # trace back: column <- row (entry added) <- column (entry dropped) ... <- source
        if target == m:
            if pred_z > 0:
                kind, node = 0, pred_z - 1
            else:
                kind, node = 1, -pred_z - 1
        else:
            kind, node = 1, target
        ended = False
        for _ in range(4 * m + 4):
            if kind == 1:
                i = pred_c[node]
                if i < 0:
                    ended = True
                    break
                x[i, node] = True
                cu[node, i] = w[i, node]
                ca[i, node] = INF
                rowc[i] += 1
                colc[node] += 1
                kind, node = 0, i
            else:
                j = pred_r[node]
                x[node, j] = False
                cu[j, node] = INF
                ca[node, j] = -w[node, j]
                rowc[node] -= 1
                colc[j] -= 1
                kind, node = 1, j
        if not ended:
            return pz, -1
        excess -= 1
        aug += 1
    return pz, aug


@njit(cache=True)
def flow_blocks(s, n, m, exactly, b0, b1, mask, u, v, budget):
    """Solve blocks ``b0 <= b < b1`` of the score matrix ``s`` (R x C, float64; block ``b``
    is block row ``b // (C/m)``, block column ``b % (C/m)``), writing their entries of the
    bool ``mask`` (R x C) and their duals ``u[b - b0]``, ``v[b - b0]`` (rows, columns; see the
    module docstring). ``budget``: moves of the price phase per unit of column excess (0:
    none). Returns the number of augmenting paths, or -1 on a missing path."""
    bc = s.shape[1] // m
    w = np.empty((m, m))
    x = np.zeros((m, m), dtype=np.bool_)
    rowc = np.zeros(m, dtype=np.int64)
    colc = np.zeros(m, dtype=np.int64)
    pr = np.zeros(m)
    pc = np.zeros(m)
    dr = np.zeros(m)
    dc = np.zeros(m)
    kr = np.zeros(m)
    kc = np.zeros(m)
    sr = np.zeros(m)
    sc = np.zeros(m)
    cu = np.zeros((m, m))
    ca = np.zeros((m, m))
    pred_r = np.zeros(m, dtype=np.int64)
    pred_c = np.zeros(m, dtype=np.int64)
    idx = np.zeros(m, dtype=np.int64)
    vals = np.zeros(m)
    bk = np.zeros(m, dtype=np.int64)
    dl = np.zeros(m)
    il = np.zeros(m, dtype=np.int64)
    total = 0
    for b in range(b0, b1):
        r0 = (b // bc) * m
        c0 = (b % bc) * m
        for i in range(m):
            for j in range(m):
                t = s[r0 + i, c0 + j]
                w[i, j] = t if exactly or t > 0.0 else 0.0
        pz, aug = _solve_block(w, n, exactly, x, rowc, colc, pr, pc, dr, dc, kr, kc, sr, sc,
                               pred_r, pred_c, idx, vals, bk, dl, il, cu, ca, budget)
        if aug < 0:
            return -1
        total += aug
        for i in range(m):
            u[b - b0, i] = pr[i] - pz
            v[b - b0, i] = pz - pc[i]
            for j in range(m):
                mask[r0 + i, c0 + j] = x[i, j] and (exactly or s[r0 + i, c0 + j] > 0.0)
    return total


@njit(cache=True)
def dual_gaps(s, mask, u, v, n, m, exactly, b0, b1, dual, primal, scale):
    """For blocks ``b0 <= b < b1``: the dual bound from ``u``, ``v`` (clipped at 0 for "at
    most"; ``z = max(0, w - u - v)``), the kept score of ``mask`` (both on the clipped
    scores for "at most") and the magnitude of the terms summed (``sum |w| + n sum |u| +
    n sum |v|``, for the rounding tolerance), into ``dual[b - b0]``, ``primal[b - b0]``,
    ``scale[b - b0]``. ``dual >= optimum >= primal`` up to rounding, whatever ``u``, ``v``."""
    bc = s.shape[1] // m
    for b in range(b0, b1):
        r0 = (b // bc) * m
        c0 = (b % bc) * m
        k = b - b0
        d = 0.0
        a = 0.0
        for i in range(m):
            ui = u[k, i]
            vi = v[k, i]
            if not exactly:
                ui = max(ui, 0.0)
                vi = max(vi, 0.0)
            d += n * (ui + vi)
            a += n * (abs(ui) + abs(vi))
        p = 0.0
        for i in range(m):
            ui = u[k, i] if exactly else max(u[k, i], 0.0)
            for j in range(m):
                vj = v[k, j] if exactly else max(v[k, j], 0.0)
                t = s[r0 + i, c0 + j]
                if not exactly and t < 0.0:
                    t = 0.0
                a += abs(t)
                z = t - ui - vj
                if z > 0.0:
                    d += z
                if mask[r0 + i, c0 + j]:
                    p += t
        dual[k] = d
        primal[k] = p
        scale[k] = a
