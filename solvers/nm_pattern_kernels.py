"""Numba kernels of the pattern enumeration for transposable N:M masks (``"enumerate"``).

The solver (:mod:`pruneopt.solvers.nm_enumerate`) scores blocks in chunks: these kernels
gather a chunk of m x m blocks straight from the (R, C) score matrix into a float32
(blocks x m*m) array (clipped at 0 for "at most n", scaled by a power of two), pick the
best pattern of each block from the float32 score table with a near-tie flag, and write the
chosen patterns straight into the (R, C) boolean mask. No full-size copy of the matrix is
made. Units: scores are the caller's (times the power of two ``scale``); bounds are in the
same units as the scaled scores.
"""

from __future__ import annotations

import numpy as np

from pruneopt.solvers.jit import load_numba

njit = load_numba().njit


@njit(cache=True)
def gather_blocks(s: np.ndarray, b0: int, m: int, scale: float, clip: bool,
                  out: np.ndarray, absum: np.ndarray, positive: np.ndarray) -> None:
    """Blocks ``b0 .. b0 + k - 1`` (row-major block order, k = ``out.shape[1]``) of ``s``
    (R, C, float32 or float64) into the columns of ``out`` (m*m, k, float32), entry (r, c)
    of block ``b0 + t`` at ``out[r m + c, t] = float32(scale * max(s, 0) if clip else
    scale * s)``; ``absum[t] = sum |scale * s|`` over the block (float64, of the clipped
    values) and ``positive[t, r, c] = s > 0``."""
    cb = s.shape[1] // m
    bi, bj = b0 // cb, b0 % cb
    k = out.shape[1]
    for t in range(k):
        absum[t] = 0.0
    t0 = 0
    while t0 < k:  # the chunk's part of block row bi, one image row at a time (contiguous)
        here = min(cb - bj, k - t0)
        for r in range(m):
            row = s[bi * m + r]
            for u in range(here):
                c0 = (bj + u) * m
                t = t0 + u
                a = 0.0
                for c in range(m):
                    v = np.float64(row[c0 + c])
                    positive[t, r, c] = v > 0.0
                    if clip and v < 0.0:
                        v = 0.0
                    v *= scale
                    out[r * m + c, t] = v
                    a += abs(v)
                absum[t] += a
        t0 += here
        bi, bj = bi + 1, 0


@njit(cache=True, fastmath=True)
def column_max(St: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = max_k St[k, i]`` (elementwise over the contiguous axis: it vectorizes;
    no NaN in ``St``)."""
    for i in range(St.shape[1]):
        out[i] = St[0, i]
    for k in range(1, St.shape[0]):
        for i in range(St.shape[1]):
            out[i] = max(out[i], St[k, i])


@njit(cache=True)
def pick_patterns(St: np.ndarray, absum: np.ndarray, rel: float, absolute: float,
                  vmax: np.ndarray, thr: np.ndarray, count: np.ndarray,
                  idx: np.ndarray) -> int:
    """Best pattern per block from the float32 score table ``St`` (K patterns x k blocks).

    With ``E_i = rel * absum[i] + absolute`` (the caller's bound on the float32 error of
    every score of block i): ``vmax[i]`` is the best float32 score, ``count[i]`` the number
    of patterns scoring at least ``thr[i]``, a float32 at most ``vmax[i] - 2 E_i`` (it is
    computed as ``vmax - 2 E_i - 2^-23 absum[i]`` in float64, then rounded to float32, an
    error of at most ``2^-24 |thr| <= 2^-24 absum[i]``), and ``idx[i]`` the pattern scoring
    ``vmax[i]`` (the sum of the indices of all that do: the right one whenever
    ``count[i] == 1``). Returns the number of blocks with ``count > 1``, the near-ties."""
    K, k = St.shape
    column_max(St, vmax)
    for i in range(k):
        thr[i] = np.float64(vmax[i]) - 2.0 * (rel * absum[i] + absolute) - 2.0**-23 * absum[i]
        count[i] = 0
        idx[i] = 0
    for p in range(K):
        pp = np.int32(p)
        for i in range(k):
            v = St[p, i]
            count[i] += np.int32(v >= thr[i])
            idx[i] += pp * np.int32(v == vmax[i])
    near = 0
    for i in range(k):
        near += count[i] > 1
    return near


@njit(cache=True)
def write_patterns(mask: np.ndarray, positive: np.ndarray, pats: np.ndarray, idx: np.ndarray,
                   b0: int, m: int, clip: bool) -> None:
    """Pattern ``pats[idx[t]]`` (K, m, m; bool) into block ``b0 + t`` of ``mask`` (R, C);
    with ``clip`` ("at most n") only where ``positive`` (k, m, m) holds."""
    cb = mask.shape[1] // m
    bi, bj = b0 // cb, b0 % cb
    for t in range(idx.shape[0]):
        p = idx[t]
        for r in range(m):
            for c in range(m):
                keep = pats[p, r, c]
                if clip:
                    keep = keep and positive[t, r, c]
                mask[bi * m + r, bj * m + c] = keep
        bj += 1
        if bj == cb:
            bi, bj = bi + 1, 0


@njit(cache=True)
def write_pattern_words(mask_words: np.ndarray, positive_words: np.ndarray,
                        pat_words: np.ndarray, idx: np.ndarray, b0: int, m: int,
                        clip: bool) -> None:
    """:func:`write_patterns` with each block row of m bools read and written as one
    machine word: ``mask_words`` is the (R, C/m) word view of the mask, ``pat_words``
    (K, m) and ``positive_words`` (k, m) the word views of the patterns' and the
    positivity flags' rows."""
    cb = mask_words.shape[1]
    bi, bj = b0 // cb, b0 % cb
    for t in range(idx.shape[0]):
        p = idx[t]
        for r in range(m):
            w = pat_words[p, r]
            if clip:
                w &= positive_words[t, r]
            mask_words[bi * m + r, bj] = w
        bj += 1
        if bj == cb:
            bi, bj = bi + 1, 0
