"""The exact transposable N:M flow vectorized in NumPy over a batch of blocks: the fallback
of ``"flow"`` for a block its compiled kernel cannot prove optimal.

:func:`ssp_blocks` starts from the optimum of the relaxation without column constraints
(each block row keeps its top-n, under column prices nudged towards balance), whose residual
graph has no negative cycle, and removes the excess of over-full columns one unit per round
along a shortest (Bellman-Ford) path from an over-full column to an under-full one (or, for
"at most n", to the source: a dropped entry), in every block of the batch at once. Each
augmentation along a shortest path keeps the residual graph free of negative cycles, so the
final mask is optimal up to float rounding, guarded by :func:`flow_tolerance`. Rounds ~ the
largest column excess, each a handful of (blocks x m x m) array operations.
"""

from __future__ import annotations

import numpy as np

INF = np.inf


def flow_tolerance(w: np.ndarray) -> float:
    """The float tolerance of path lengths in blocks ``w``: ``1e-12 m max |w|`` (relative to
    the scores, so that scaling them changes nothing)."""
    return 1e-12 * (float(np.abs(w).max()) if w.size else 0.0) * w.shape[-1]


def _row_topn(w: np.ndarray, n: int) -> np.ndarray:
    m = w.shape[-1]
    x = np.zeros(w.shape, dtype=bool)
    if n == m:
        x[:] = True
        return x
    idx = np.argpartition(-w, n - 1, axis=2)[:, :, :n]
    np.put_along_axis(x, idx, True, axis=2)
    return x


def _relax(undo, add, d_col, d_row, d_s, pred_col, pred_row, row_from_s, pred_s, row_open,
           at_most, tol):
    """One Bellman-Ford round over the residual graph of a batch of blocks (in place).

    Arcs: column j -> row i if x_ij (undo, cost +s_ij); row i -> column j if not x_ij (add,
    cost -s_ij; ``add`` is stored transposed, [block, j, i], so that both halves reduce over
    the contiguous last axis); for "at most": row -> source S (cost 0) and S -> row i if row
    i keeps fewer than n (``row_open``). Returns whether any distance improved by more than
    ``tol``.
    """
    cand = undo + d_col[:, None, :]
    jb = cand.argmin(axis=2)
    v = np.take_along_axis(cand, jb[:, :, None], axis=2)[:, :, 0]
    imp = v < d_row - tol
    changed = bool(imp.any())
    d_row[imp] = v[imp]
    pred_row[imp] = jb[imp]
    row_from_s[imp] = False
    if at_most:
        ib = d_row.argmin(axis=1)
        vs = d_row[np.arange(len(ib)), ib]
        imp_s = vs < d_s - tol
        d_s[imp_s] = vs[imp_s]
        pred_s[imp_s] = ib[imp_s]
        cand_r = np.where(row_open, d_s[:, None], INF)
        imp = cand_r < d_row - tol
        changed |= bool(imp.any())
        d_row[imp] = cand_r[imp]
        row_from_s[imp] = True
    cand = add + d_row[:, None, :]
    ib = cand.argmin(axis=2)
    v = np.take_along_axis(cand, ib[:, :, None], axis=2)[:, :, 0]
    imp = v < d_col - tol
    changed |= bool(imp.any())
    d_col[imp] = v[imp]
    pred_col[imp] = ib[imp]
    return changed


def _price_start(w: np.ndarray, n: int, at_most: bool, rounds: int = 3,
                 step: float = 0.5) -> np.ndarray:
    """Start of the flow: each block row keeps its top-n of ``w - p`` for column prices
    ``p`` nudged towards balance (less column excess means fewer augmentation rounds).

    The start must leave no negative cycle in the residual graph. A cycle inside the
    bipartite graph enters and leaves each column once, so the prices cancel from its cost
    and a top-n choice is safe. For "at most n" (``at_most``, scores >= 0) cycles may also
    pass through the source or sink; they are safe when rows keep only entries of positive
    priced score ``w - p``, prices are >= 0 and under-full columns have price 0. Blocks
    whose prices break the last condition start without prices.
    """

    def choose(price):
        v = w - price
        x = _row_topn(v, n)
        if at_most:
            x &= v > 0
        return x

    if n == w.shape[-1] and not at_most:
        return _row_topn(w, n)
    p = np.zeros((w.shape[0], 1, w.shape[2]))
    scale = step * float(w.std()) / n
    for _ in range(rounds):
        x = choose(p)
        p += scale * (x.sum(axis=1, keepdims=True) - n)
        if at_most:
            np.maximum(p, 0.0, out=p)
    if at_most:  # under-full columns must end with price 0: reset them, re-choose
        for _ in range(2):
            x = choose(p)
            p[x.sum(axis=1, keepdims=True) < n] = 0.0
    x = choose(p)
    if at_most:
        bad = ((x.sum(axis=1) < n) & (p[:, 0, :] > 0)).any(axis=1)
        if bad.any():
            x[bad] = _row_topn(w[bad], n) & (w[bad] > 0)
    return x


def _augment_once(x: np.ndarray, w: np.ndarray, n: int, at_most: bool, tol: float) -> None:
    """Move one unit of column excess in every block of the batch along a shortest path."""
    nb, m, _ = x.shape
    colc = x.sum(axis=1)
    rowc = x.sum(axis=2)
    undo = np.where(x, w, INF)
    add = np.ascontiguousarray(np.where(x, INF, -w).transpose(0, 2, 1))
    d_col = np.where(colc > n, 0.0, INF)
    d_row = np.full((nb, m), INF)
    d_s = np.full(nb, INF)
    pred_col = np.full((nb, m), -1)
    pred_row = np.full((nb, m), -1)
    row_from_s = np.zeros((nb, m), dtype=bool)
    pred_s = np.full(nb, -1)
    row_open = rowc < n
    for _ in range(4 * m + 4):
        if not _relax(undo, add, d_col, d_row, d_s, pred_col, pred_row, row_from_s, pred_s,
                      row_open, at_most, tol):
            break
    else:
        raise RuntimeError("Bellman-Ford did not converge: a negative cycle (a bug)")
    end_col = np.where(colc < n, d_col, INF)
    jstar = end_col.argmin(axis=1)
    v_col = end_col[np.arange(nb), jstar]
    if at_most:
        via_s = d_s <= v_col
    else:
        via_s = np.zeros(nb, dtype=bool)
    if not np.isfinite(np.where(via_s, d_s, v_col)).all():
        raise RuntimeError("no augmenting path for a block with excess (a bug)")
    # trace the shortest paths back to their over-full column, flipping x on the way
    kind = np.where(via_s, 2, 0)  # 0 column, 1 row, 2 source
    node = np.where(via_s, 0, jstar)
    live = np.ones(nb, dtype=bool)
    bidx = np.arange(nb)
    for _ in range(4 * m + 8):
        if not live.any():
            return
        at_col = live & (kind == 0)
        at_row = live & (kind == 1)
        at_s = live & (kind == 2)
        b = bidx[at_col]
        j = node[at_col]
        i = pred_col[b, j]
        origin = i < 0
        live[b[origin]] = False
        b, j, i = b[~origin], j[~origin], i[~origin]
        x[b, i, j] = True
        kind[b], node[b] = 1, i
        b = bidx[at_row]
        i = node[at_row]
        fs = row_from_s[b, i]
        kind[b[fs]] = 2
        b, i = b[~fs], i[~fs]
        j = pred_row[b, i]
        x[b, i, j] = False
        kind[b], node[b] = 0, j
        b = bidx[at_s]
        kind[b], node[b] = 1, pred_s[b]
    raise RuntimeError("path tracing did not end (a bug)")


def ssp_blocks(w: np.ndarray, n: int, *, exactly: bool = False) -> np.ndarray:
    """Optimal transposable masks for a batch of blocks ``w`` of shape (B, m, m)."""
    w = np.asarray(w, dtype=np.float64)
    if not exactly:
        w_pos = np.maximum(w, 0.0)
    else:
        w_pos = w
    tol = flow_tolerance(w_pos)
    x = _price_start(w_pos, n, not exactly)
    active = np.flatnonzero((x.sum(axis=1) > n).any(axis=1))
    while active.size:
        xa = x[active]
        _augment_once(xa, w_pos[active], n, not exactly, tol)
        x[active] = xa
        active = active[(xa.sum(axis=1) > n).any(axis=1)]
    if not exactly:
        x &= w > 0
    return x
