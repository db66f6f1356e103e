"""Exact N:M masks by enumeration.

- ``"enumerate"`` for :class:`TransposableNM` with small blocks: list every allowed m x m
  pattern once (90 for 2:4 with exactly n; for "at most n" the 186 maximal patterns: the
  90 with two per row and column and 96 with seven entries; with scores clipped at 0 the
  best subset of a maximal pattern is its positive part, and no maximal pattern can be left
  out, since each one is the only optimum of its own 0/1 indicator), then one matrix
  product scores every pattern in every block and the best is taken.

  **Float32 scoring, proven exact.** Blocks are gathered chunk by chunk (:data:`CHUNK`
  blocks, cache-sized) straight from the score matrix into float32, after an exact scaling
  by a power of two that puts the largest score in [0.5, 1); one float32 matrix product
  scores the K patterns. With ``u = 2^-24`` and ``A_b = sum |w|`` over block b (clipped
  scores for "at most"), every float32 pattern score of block b is within

      E_b = (n m + 1) u A_b + 4 n m 2^-126

  of its exact value: the pattern sums at most n m nonzero terms (its products by 1 and
  by 0 are exact, and adding an exact 0 rounds nothing), so the summation in any order
  (BLAS blocking, FMA) errs by at most ``gamma_(nm-1) sum |w~|``, the rounding of each
  score to float32 adds ``u |w|``, together below ``gamma_(nm) A_b <= (nm + 1) u A_b``
  (the slack of the last step also covers the float64 arithmetic of the test below); the
  last term covers underflow (subnormals or their flush to zero, per term and per
  addition). If no other pattern scores within ``2 E_b`` of the float32 best, the float32
  best is the exact best; otherwise the block is re-scored in float64
  (``info["rescored_blocks"]`` counts them). Float64 scores are then exact up to float64
  rounding of sums of n m terms (``gamma_(nm) A_b`` with ``u = 2^-53``, 1e-15 of the
  block's total): for float64 data "exact" means optimal up to that, far inside the
  project's objective tolerance (``RTOL = 1e-9`` of ``sum |s|``); for data that came as
  float32, float16 or bfloat16, the float32 stage is exact in the same sense.

  Time: one float32 matrix product per chunk and one pass over its score table; memory:
  one chunk's table (``K x CHUNK`` float32) beside the mask.
- ``"topk"`` for :class:`NMMask`: the top-n of each group of m (exact by definition).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from functools import lru_cache
from itertools import product

import numpy as np

from pruneopt.formulations.geometry import one_blas_thread
from pruneopt.formulations.nm import NMMask, TransposableNM
from pruneopt.solvers.nm_greedy import greedy_mask
from pruneopt.solvers.registry import Result, register
from pruneopt.solvers.starts import register_start

MAX_PATTERNS = 2_000  # default limit on the patterns scored per block
MAX_GENERATED = 100_000
CHUNK = 2048  # blocks scored at once (a 186 x 2048 float32 table is 1.5 MB)
UNIT = 2.0**-24  # float32 unit roundoff
TINY = 2.0**-126  # smallest normal float32
WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32}  # a block row of m bools as one word


@lru_cache(maxsize=32)
def transposable_patterns(n: int, m: int, exactly: bool) -> np.ndarray:
    """Every m x m 0/1 pattern with n per row and column (``exactly``) or, otherwise, every
    maximal pattern with at most n per row and column; shape (K, m, m), bool."""
    rows = [np.array(r, dtype=np.int8) for r in product((0, 1), repeat=m)
            if (sum(r) == n if exactly else sum(r) <= n)]
    out: list[np.ndarray] = []

    def rec(prefix: list[np.ndarray], colsum: np.ndarray) -> None:
        if len(out) > MAX_GENERATED:
            raise ValueError(f"more than {MAX_GENERATED} patterns for {n}:{m}")
        if len(prefix) == m:
            if exactly and not (colsum == n).all():
                return
            out.append(np.array(prefix, dtype=bool))
            return
        left = m - len(prefix) - 1
        for r in rows:
            cs = colsum + r
            if (cs > n).any():
                continue
            if exactly and (cs + left < n).any():
                continue
            rec(prefix + [r], cs)

    rec([], np.zeros(m, dtype=np.int8))
    pats = np.array(out)
    if not exactly:  # keep the maximal ones: no free cell with an open row and column
        rs, cs = pats.sum(axis=2), pats.sum(axis=1)
        free = ~pats & (rs[:, :, None] < n) & (cs[:, None, :] < n)
        pats = pats[~free.any(axis=(1, 2))]
    return pats


def float32_error(n: int, m: int, unit: float = UNIT) -> tuple[float, float]:
    """``(rel, absolute)``: every float32 pattern score of a block is within
    ``rel * sum |block| + absolute`` of its exact value (module docstring; ``unit`` is the
    unit roundoff of the product's arithmetic, 2^-24 for IEEE float32)."""
    return (n * m + 1) * unit, 4 * n * m * TINY


def power_of_two_scale(top: float) -> float:
    """``2^-e`` with ``top * 2^-e`` in [0.5, 1) (1.0 for ``top == 0``): an exact rescaling."""
    return 1.0 if top == 0 else math.ldexp(1.0, -math.frexp(top)[1])


def enumerable(problem: TransposableNM) -> str | None:
    """Why enumeration cannot take ``problem`` (block size, pattern count), or None."""
    if problem.m > 5 or (problem.m == 5 and not problem.exactly):
        return f"enumeration is for blocks up to 4x4 (5x5 with exactly=True), got m={problem.m}"
    try:
        k = len(transposable_patterns(problem.n, problem.m, problem.exactly))
    except ValueError as exc:
        return str(exc)
    if k > MAX_PATTERNS:
        return f"{k} patterns for {problem.n}:{problem.m}, more than {MAX_PATTERNS}"
    return None


def _rescore(s: np.ndarray, blocks: np.ndarray, m: int, P64: np.ndarray,
             clip: bool) -> np.ndarray:
    """Best pattern of the given blocks of ``s`` (R, C), scored in float64."""
    cb = s.shape[1] // m
    w = s.reshape(s.shape[0] // m, m, cb, m)[blocks // cb, :, blocks % cb, :]
    if clip:
        w = np.maximum(w, 0.0)
    return (w.reshape(len(blocks), -1) @ P64).argmax(axis=1)


def enumerate_array(s: np.ndarray, n: int, m: int, exactly: bool,
                    deadline: float | None = None) -> tuple[np.ndarray, int, int | None]:
    """Optimal transposable mask of the scores ``s`` (R, C; float32 or float64, any
    layout NumPy can view): ``(mask, blocks re-scored in float64, stopped_at)``.

    ``stopped_at`` is None when every block was enumerated, else the first block (row-major
    block order) left undecided because ``deadline`` (a ``time.perf_counter()`` value) had
    passed; the mask is then only filled before it."""
    from pruneopt.solvers.nm_pattern_kernels import (  # numba: loaded on the first solve
        gather_blocks,
        pick_patterns,
        write_pattern_words,
        write_patterns,
    )

    clip = not exactly
    pats = transposable_patterns(n, m, exactly)
    K = len(pats)
    flat = np.ascontiguousarray(pats.reshape(K, -1))
    P32 = flat.astype(np.float32)  # (K, m*m): scores are P32 @ blocks^T
    P64 = np.ascontiguousarray(flat.T, dtype=np.float64)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    s = np.ascontiguousarray(s)
    top = float(s.max()) if clip else float(np.abs(s).max())
    scale = power_of_two_scale(max(top, 0.0))
    rel, absolute = float32_error(n, m)
    nb = (s.shape[0] // m) * (s.shape[1] // m)
    mask = np.empty(s.shape, dtype=bool)
    step = min(CHUNK, nb)
    wt = np.empty((m * m, step), dtype=np.float32)
    St = np.empty((K, step), dtype=np.float32)
    absum, thr = np.empty(step), np.empty(step, dtype=np.float32)
    vmax = np.empty(step, dtype=np.float32)
    idx, count = np.empty(step, dtype=np.int32), np.empty(step, dtype=np.int32)
    positive = np.empty((step, m, m), dtype=bool)
    word = WORDS.get(m)  # write a block row of m bools as one machine word
    if word is not None:
        pat_words = pats.view(word).reshape(K, m)
        pos_words = positive.view(word).reshape(step, m)
        mask_words = mask.view(word)
    rescored = 0
    # many small products: BLAS threads only contend (one chunk: not worth the switch)
    with one_blas_thread() if nb > step else nullcontext():
        for b0 in range(0, nb, step):
            k = min(step, nb - b0)
            if deadline is not None and time.perf_counter() > deadline:
                return mask, rescored, b0
            if k < step:  # the last, shorter chunk
                wt, St = np.empty((m * m, k), dtype=np.float32), np.empty((K, k), np.float32)
            gather_blocks(s, b0, m, scale, clip, wt, absum, positive)
            np.matmul(P32, wt, out=St)
            near = pick_patterns(St, absum, rel, absolute, vmax, thr, count, idx)
            if near:
                rows = np.flatnonzero(count[:k] > 1)
                idx[rows] = _rescore(s, b0 + rows, m, P64, clip)
                rescored += near
            if word is not None:
                write_pattern_words(mask_words, pos_words, pat_words, idx[:k], b0, m, clip)
            else:
                write_patterns(mask, positive, pats, idx[:k], b0, m, clip)
    return mask, rescored, None


#: the proof an "optimal" enumeration carries
PROOF = ("every allowed pattern of every block scored (float32 error bounded, near-ties "
         "re-scored in float64)")


@register("enumerate", TransposableNM, guarantee="exact", accepts=enumerable)
def enumerate_solver(problem: TransposableNM, time_limit: float | None) -> Result:
    """Best of all allowed block patterns: float32 scores by one matrix product per chunk,
    near-ties re-scored in float64 (exact; module docstring)."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    n, m, ex = problem.n, problem.m, problem.exactly
    mask, rescored, stopped_at = enumerate_array(problem.scores, n, m, ex, deadline)
    K = len(transposable_patterns(n, m, ex))
    if stopped_at is not None:
        return _stopped(problem, mask, stopped_at, K, rescored)
    return Result(mask, "optimal", None, {"patterns": K, "rescored_blocks": rescored},
                  proof=PROOF)


def _stopped(problem: TransposableNM, mask: np.ndarray, b0: int, K: int,
             rescored: int) -> Result:
    """The time limit passed before block ``b0``: the greedy fills the rest."""
    xb = problem.blocks(mask)
    w = problem.blocks()[b0:]
    xb[b0:] = greedy_mask(w, problem.n, problem.exactly)
    if not problem.exactly:
        xb[b0:] &= w > 0
    info = {"patterns": K, "rescored_blocks": rescored, "blocks_enumerated": b0}
    return Result(problem.unblock(xb), "time_limit", problem.row_col_bound(), info)


@register("enumerate", NMMask, guarantee="exact")
@register("topk", NMMask, guarantee="exact")
def topk_solver(problem: NMMask, time_limit: float | None) -> Result:
    """Top-n of every group of m consecutive entries (positive ones only for "at most").

    One pass over the matrix (``time_limit`` cannot cut it shorter than that)."""
    g = problem.groups(problem.scores)
    x = np.zeros(g.shape, dtype=bool)
    idx = np.argpartition(-g, problem.n - 1, axis=1)[:, : problem.n]
    np.put_along_axis(x, idx, True, axis=1)
    if not problem.exactly:
        x &= g > 0
    return Result(x.reshape(problem.shape), "optimal", None, {},
                  proof="top-n of every group (exact by definition)")


@register_start(NMMask)
def topk_start(problem: NMMask) -> tuple[np.ndarray, None]:
    """The top-n mask (the optimum itself), the start of the MILP backends."""
    return topk_solver(problem, None).decision, None
