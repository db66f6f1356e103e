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
from numba import njit


@njit(cache=True)
def gather_blocks(s: np.ndarray, b0: int, m: int, scale: float, clip: bool,
                  out: np.ndarray, absum: np.ndarray) -> None:
    """Blocks ``b0 .. b0 + len(out) - 1`` (row-major block order) of ``s`` (R, C, float64)
    into ``out`` (k, m*m) as ``float32(scale * max(s, 0) if clip else scale * s)``, and
    ``absum[b] = sum |scale * s|`` over the block (float64, of the clipped values)."""
    cb = s.shape[1] // m
    for t in range(out.shape[0]):
        b = b0 + t
        r0 = (b // cb) * m
        c0 = (b % cb) * m
        a = 0.0
        for r in range(m):
            for c in range(m):
                v = s[r0 + r, c0 + c]
                if clip and v < 0.0:
                    v = 0.0
                v *= scale
                out[t, r * m + c] = v
                a += abs(v)
        absum[t] = a


@njit(cache=True, fastmath=True)
def row_max(S: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = max_k S[i, k]`` (no NaN in ``S``: fastmath lets the loop vectorize)."""
    for i in range(S.shape[0]):
        v = S[i, 0]
        for k in range(1, S.shape[1]):
            v = max(v, S[i, k])
        out[i] = v


@njit(cache=True)
def pick_patterns(S: np.ndarray, vmax: np.ndarray, absum: np.ndarray, rel: float,
                  absolute: float, idx: np.ndarray, near: np.ndarray) -> int:
    """For each row i of the float32 score table ``S`` (blocks x K): ``idx[i]``, the first k
    with ``S[i, k] == vmax[i]`` (the row maximum), and ``near[i]``, whether another pattern
    scores within ``2 E_i`` of it, ``E_i = rel * absum[i] + absolute`` (the caller's bound
    on the float32 error of every score of block i). Comparisons are made in float64.
    Returns the number of near rows."""
    count = 0
    for i in range(S.shape[0]):
        v = np.float64(vmax[i])
        t = v - 2.0 * (rel * absum[i] + absolute)
        c = 0
        for k in range(S.shape[1]):
            c += np.float64(S[i, k]) >= t
        near[i] = c > 1
        count += c > 1
        for k in range(S.shape[1]):
            if S[i, k] == vmax[i]:
                idx[i] = k
                break
    return count


@njit(cache=True)
def write_patterns(mask: np.ndarray, s: np.ndarray, pats: np.ndarray, idx: np.ndarray,
                   b0: int, m: int, positive: bool) -> None:
    """Pattern ``pats[idx[t]]`` (K, m*m, bool) into block ``b0 + t`` of ``mask`` (R, C);
    with ``positive``, entries whose score ``s`` is not > 0 are left out ("at most n")."""
    cb = mask.shape[1] // m
    for t in range(idx.shape[0]):
        b = b0 + t
        r0 = (b // cb) * m
        c0 = (b % cb) * m
        p = idx[t]
        for r in range(m):
            for c in range(m):
                keep = pats[p, r * m + c]
                if positive and keep:
                    keep = s[r0 + r, c0 + c] > 0.0
                mask[r0 + r, c0 + c] = keep
