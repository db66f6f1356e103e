"""Numba kernel of the greedy 2-approximation for transposable N:M masks, with completion.

Per m-by-m block with scores ``w``: visit the m^2 entries by decreasing score (ties by
index) and keep an entry while its row and its column keep fewer than n (and, for "at
most", while its score is > 0); this is the greedy b-matching, whose kept score is at least
half the optimum for scores >= 0. Completion (optional; needed for ``exactly``): while some
row and some column keep fewer than n, search alternating paths layer by layer (row with
room -> unkept entry, gain +w -> column -> kept entry, gain -w -> row ...), take the
best-gain path among those of the fewest layers that end at a column with room, and flip
it (its rows and columns keep their counts, except its first row and last column, which
gain one); stop when no path exists or, unless the block must be filled, when the best one
does not gain more than ``1e-12`` of the block's largest |score|.

Scores are float64; per block O(m^2 log m) for the order, O(m^2) for the scan and
O(n m^3) at worst for the completion; memory is the input, the mask and O(m^2) scratch.
"""

from __future__ import annotations

import numpy as np

from pruneopt.solvers.jit import load_numba

njit = load_numba().njit

NEG = -np.inf


@njit(cache=True)
def order_desc(vals, idx, k):
    """``idx[:k]``: indices of ``vals[:k]`` by decreasing value, ties by index."""
    if k > 64:
        o = np.argsort(-vals[:k], kind="mergesort")
        for q in range(k):
            idx[q] = o[q]
        return
    for q in range(k):
        idx[q] = q
    for q in range(1, k):
        t = idx[q]
        v = vals[t]
        r = q - 1
        while r >= 0 and vals[idx[r]] < v:
            idx[r + 1] = idx[r]
            r -= 1
        idx[r + 1] = t


@njit(cache=True)
def complete_block(w, x, rowc, colc, n, must_fill, g_row, g_col, seen_r, seen_c, front,
              new_c, pred_r, pred_c):
    """Completion of one block's mask ``x`` (in place; ``rowc``/``colc`` its line counts):
    best-gain shortest augmenting paths from rows with room to columns with room, until every
    line keeps n (``must_fill``) or no path gains more than 1e-12 of the block's largest
    |score|. Returns the paths applied (each adds one entry). The rest are scratch arrays of
    length m. Also the repair step of the entropic solver."""
    m = w.shape[0]
    wmax = 0.0
    for i in range(m):
        for j in range(m):
            wmax = max(wmax, abs(w[i, j]))
    added = 0
    for _ in range(n * m):
        room_r = False
        room_c = False
        for i in range(m):
            room_r = room_r or rowc[i] < n
            room_c = room_c or colc[i] < n
        if not (room_r and room_c):
            break
        for i in range(m):
            seen_r[i] = rowc[i] < n
            front[i] = seen_r[i]
            g_row[i] = 0.0 if seen_r[i] else NEG
            pred_r[i] = -1
            seen_c[i] = False
            g_col[i] = NEG
            pred_c[i] = -1
        end_gain = NEG
        end_col = -1
        for _layer in range(m + 1):
            any_new = False
            for j in range(m):
                new_c[j] = False
                if seen_c[j]:
                    continue
                best = NEG
                bi = -1
                for i in range(m):
                    if front[i] and not x[i, j]:
                        t = g_row[i] + w[i, j]
                        if t > best:
                            best, bi = t, i
                if bi >= 0:
                    g_col[j], pred_c[j] = best, bi
                    seen_c[j] = True
                    new_c[j] = True
                    any_new = True
                    if colc[j] < n and best > end_gain:
                        end_gain, end_col = best, j
            if end_col >= 0 or not any_new:
                break
            any_row = False
            for i in range(m):
                front[i] = False
                if seen_r[i]:
                    continue
                best = NEG
                bj = -1
                for j in range(m):
                    if new_c[j] and x[i, j]:
                        t = g_col[j] - w[i, j]
                        if t > best:
                            best, bj = t, j
                if bj >= 0:
                    g_row[i], pred_r[i] = best, bj
                    seen_r[i] = True
                    front[i] = True
                    any_row = True
            if not any_row:
                break
        if end_col < 0:
            break
        if not must_fill and not end_gain > 1e-12 * wmax:
            break
        j = end_col
        colc[j] += 1
        for _step in range(m + 1):
            i = pred_c[j]
            x[i, j] = True
            jp = pred_r[i]
            if jp < 0:
                rowc[i] += 1
                break
            x[i, jp] = False
            j = jp
        added += 1
    return added


@njit(cache=True)
def greedy_blocks_kernel(s, n, m, positive_only, complete, must_fill, b0, b1, mask, out):
    """Greedy (plus completion if ``complete``) for blocks ``b0 <= b < b1`` of the score
    matrix ``s`` (R x C, float64; block ``b`` is block row ``b // (C/m)``, block column
    ``b % (C/m)``), written into the bool ``mask`` (R x C). Adds to ``out``: [0] the
    greedy's kept score before completion, [1] the entries the completion added, [2] and
    [3] the row and the column relaxation bounds (each block row's, resp. column's, top-n
    scores, positive ones only if ``positive_only``), [4] the final kept score."""
    bc = s.shape[1] // m
    k = m * m
    w = np.empty((m, m))
    x = np.zeros((m, m), dtype=np.bool_)
    vals = np.empty(k)
    idx = np.zeros(k, dtype=np.int64)
    rowc = np.zeros(m, dtype=np.int64)
    colc = np.zeros(m, dtype=np.int64)
    g_row, g_col = np.empty(m), np.empty(m)
    seen_r, seen_c = np.zeros(m, dtype=np.bool_), np.zeros(m, dtype=np.bool_)
    front, new_c = np.zeros(m, dtype=np.bool_), np.zeros(m, dtype=np.bool_)
    pred_r, pred_c = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    rb, cb = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    score = 0.0
    added = 0
    row_top = 0.0
    col_top = 0.0
    final = 0.0
    for b in range(b0, b1):
        r0 = (b // bc) * m
        c0 = (b % bc) * m
        for i in range(m):
            rowc[i] = 0
            colc[i] = 0
            for j in range(m):
                t = s[r0 + i, c0 + j]
                w[i, j] = t
                vals[i * m + j] = t
                x[i, j] = False
        order_desc(vals, idx, k)
        kept = 0
        for i in range(m):
            rb[i] = 0
            cb[i] = 0
        for q in range(k):
            e = idx[q]
            i = e // m
            j = e - i * m
            t = w[i, j]
            if positive_only and not t > 0.0:
                break  # the rest are <= 0 too
            if rb[i] < n:  # the bounds: each row's (column's) top n, from the same order
                rb[i] += 1
                row_top += t
            if cb[j] < n:
                cb[j] += 1
                col_top += t
            if rowc[i] < n and colc[j] < n:
                x[i, j] = True
                rowc[i] += 1
                colc[j] += 1
                score += t
                kept += 1
        if complete and kept < n * m:
            added += complete_block(w, x, rowc, colc, n, must_fill, g_row, g_col, seen_r, seen_c,
                               front, new_c, pred_r, pred_c)
        for i in range(m):
            for j in range(m):
                mask[r0 + i, c0 + j] = x[i, j]
                if x[i, j]:
                    final += w[i, j]
    out[0] += score
    out[1] += added
    out[2] += row_top
    out[3] += col_top
    out[4] += final
