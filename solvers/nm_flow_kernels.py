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
from numba import njit

INF = np.inf


@njit(cache=True)
def _sort_desc(vals, idx, m):
    """Indices ``idx[:m]`` of ``vals[:m]`` by decreasing value, ties by index (insertion
    sort: m <= 64 in practice)."""
    for k in range(m):
        idx[k] = k
    for k in range(1, m):
        t = idx[k]
        v = vals[t]
        q = k - 1
        while q >= 0 and vals[idx[q]] < v:
            idx[q + 1] = idx[q]
            q -= 1
        idx[q + 1] = t


@njit(cache=True)
def _solve_block(w, n, exactly, x, rowc, colc, pr, pc, dr, dc, done_r, done_c, pred_r,
                 pred_c, idx, vals):
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
        _sort_desc(vals, idx, m)
        k = 0
        for q in range(n):
            j = idx[q]
            if exactly or w[i, j] > 0.0:
                x[i, j] = True
                colc[j] += 1
                k += 1
        rowc[i] = k
        pr[i] = w[i, idx[n]] if n < m else w[i, idx[m - 1]]
    excess = 0
    for j in range(m):
        if colc[j] > n:
            excess += colc[j] - n
    pz = 0.0
    aug = 0
    while excess > 0:
        for i in range(m):
            dr[i] = INF
            done_r[i] = False
            dc[i] = INF
            done_c[i] = False
            pred_c[i] = -1
            pred_r[i] = -1
        for j in range(m):
            if colc[j] > n:
                dc[j] = 0.0
        dz = INF
        pred_z = 0  # row i: i + 1; column j: -(j + 1)
        target = -1  # column index, or m for Z
        dist = INF
        while True:
            best = INF
            kind = -1
            node = -1
            for i in range(m):
                if not done_r[i] and dr[i] < best:
                    best, kind, node = dr[i], 0, i
            for j in range(m):
                if not done_c[j] and dc[j] < best:
                    best, kind, node = dc[j], 1, j
            if not exactly and dz < best:
                best, kind = dz, 2
            if kind < 0:
                return pz, -1
            if kind == 2:
                target, dist = m, dz
                break
            if kind == 1:
                j = node
                done_c[j] = True
                if colc[j] < n:
                    if exactly:
                        target, dist = j, best
                        break
                    cand = best + pc[j] - pz
                    if cand < dz:
                        dz, pred_z = cand, -(j + 1)
                for i in range(m):
                    if x[i, j] and not done_r[i]:
                        cand = best + w[i, j] + pc[j] - pr[i]
                        if cand < dr[i]:
                            dr[i] = cand
                            pred_r[i] = j
            else:
                i = node
                done_r[i] = True
                if not exactly and rowc[i] > 0:
                    cand = best + pr[i] - pz
                    if cand < dz:
                        dz, pred_z = cand, i + 1
                for j in range(m):
                    if not x[i, j] and not done_c[j]:
                        cand = best - w[i, j] + pr[i] - pc[j]
                        if cand < dc[j]:
                            dc[j] = cand
                            pred_c[j] = i
        for i in range(m):
            pr[i] += dr[i] if dr[i] < dist else dist
            pc[i] += dc[i] if dc[i] < dist else dist
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
                rowc[i] += 1
                colc[node] += 1
                kind, node = 0, i
            else:
                j = pred_r[node]
                x[node, j] = False
                rowc[node] -= 1
                colc[j] -= 1
                kind, node = 1, j
        if not ended:
            return pz, -1
        excess -= 1
        aug += 1
    return pz, aug


@njit(cache=True)
def flow_blocks(s, n, m, exactly, b0, b1, mask, u, v):
    """Solve blocks ``b0 <= b < b1`` of the score matrix ``s`` (R x C, float64; block ``b``
    is block row ``b // (C/m)``, block column ``b % (C/m)``), writing their entries of the
    bool ``mask`` (R x C) and their duals ``u[b - b0]``, ``v[b - b0]`` (rows, columns; see the
    module docstring). Returns the number of augmenting paths, or -1 on a missing path."""
    bc = s.shape[1] // m
    w = np.empty((m, m))
    x = np.zeros((m, m), dtype=np.bool_)
    rowc = np.zeros(m, dtype=np.int64)
    colc = np.zeros(m, dtype=np.int64)
    pr = np.zeros(m)
    pc = np.zeros(m)
    dr = np.zeros(m)
    dc = np.zeros(m)
    done_r = np.zeros(m, dtype=np.bool_)
    done_c = np.zeros(m, dtype=np.bool_)
    pred_r = np.zeros(m, dtype=np.int64)
    pred_c = np.zeros(m, dtype=np.int64)
    idx = np.zeros(m, dtype=np.int64)
    vals = np.zeros(m)
    total = 0
    for b in range(b0, b1):
        r0 = (b // bc) * m
        c0 = (b % bc) * m
        for i in range(m):
            for j in range(m):
                t = s[r0 + i, c0 + j]
                w[i, j] = t if exactly or t > 0.0 else 0.0
        pz, aug = _solve_block(w, n, exactly, x, rowc, colc, pr, pc, dr, dc, done_r,
                               done_c, pred_r, pred_c, idx, vals)
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
