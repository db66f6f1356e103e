"""Exact N:M masks by enumeration.

- ``"enumerate"`` for :class:`TransposableNM` with small blocks: list every allowed m x m
  pattern once (90 for 2:4 with exactly n; for "at most n" only the maximal patterns, 90
  for 2:4, since with scores clipped at 0 the best subset of a maximal pattern is its
  positive part), then one matrix product scores every pattern in every block and the best
  is taken. Exact; time linear in the number of blocks and patterns, memory bounded by
  chunking.
- ``"topk"`` for :class:`NMMask`: the top-n of each group of m (exact by definition).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product

import numpy as np

from pruneopt.formulations.nm import NMMask, TransposableNM
from pruneopt.solvers.nm_blocks import solve_blocks
from pruneopt.solvers.nm_greedy import greedy_mask
from pruneopt.solvers.registry import Result, register
from pruneopt.solvers.starts import register_start

MAX_PATTERNS = 2_000  # default limit on the patterns scored per block
MAX_GENERATED = 100_000
CHUNK = 1 << 22  # entries of the (blocks x patterns) score matrix held at once


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


def _enumerable(problem: TransposableNM) -> str | None:
    if problem.m > 5 or (problem.m == 5 and not problem.exactly):
        return f"enumeration is for blocks up to 4x4 (5x5 with exactly=True), got m={problem.m}"
    try:
        k = len(transposable_patterns(problem.n, problem.m, problem.exactly))
    except ValueError as exc:
        return str(exc)
    if k > MAX_PATTERNS:
        return f"{k} patterns for {problem.n}:{problem.m}, more than {MAX_PATTERNS}"
    return None


@register("enumerate", TransposableNM, guarantee="exact", accepts=_enumerable)
def enumerate_solver(problem: TransposableNM, time_limit: float | None) -> Result:
    """Best of all allowed block patterns, scored by one matrix product per chunk."""
    n, m = problem.n, problem.m
    pats = transposable_patterns(n, m, problem.exactly)
    w = problem.blocks()
    if not problem.exactly:
        w = np.maximum(w, 0.0)
    P = pats.reshape(len(pats), -1).astype(w.dtype).T  # (m*m, K)

    def best(chunk: np.ndarray) -> np.ndarray:
        return pats[(chunk.reshape(chunk.shape[0], -1) @ P).argmax(axis=1)]

    x, done = solve_blocks(w, best, lambda c: greedy_mask(c, n, problem.exactly), time_limit,
                           elems=max(m * m, CHUNK // len(pats) * m * m))
    if not problem.exactly:
        x = x & (problem.blocks() > 0)
    info = {"patterns": len(pats)}
    if not done:
        return Result(problem.unblock(x), "time_limit", problem.row_col_bound(), info)
    return Result(problem.unblock(x), "optimal", None, info,
                  proof="every allowed pattern of every block scored")


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
