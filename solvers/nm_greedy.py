"""The fast 2-approximation of Hubara et al. for transposable N:M masks, with completion.

``"greedy"``: in every block, visit the entries by decreasing score and keep an entry while
its row and its column both keep fewer than n (a compiled per-block kernel,
:mod:`pruneopt.solvers.nm_greedy_kernels`; :func:`greedy_blocks` and
:func:`complete_blocks` are the same steps vectorized in NumPy over a batch of blocks, the
time-limit fallback of the exact solvers). This is the greedy algorithm for b-matching, a
1/2-approximation of
the "at most n" optimum for nonnegative scores: the kept score is at least half the
optimum (ratio 2).

Completion (``complete=True``, default): greedy stops at a maximal mask that may leave rows
and columns with fewer than n; the completion step then repeatedly augments along a
shortest alternating path (row with room -> unused entry -> column ... -> column with
room), taking the best-gain one among the shortest, while it gains score ("at most") or
until every row and column holds n (``exactly=True``, where it is needed for
feasibility). ``info["completion_gain"]`` reports what it added.

The bound reported is ``min(2 * greedy score, row/column relaxation bound)`` for
nonnegative scores, else the relaxation bound.
"""

from __future__ import annotations

import time

import numpy as np

from pruneopt.formulations.nm import TransposableNM
from pruneopt.solvers.nm_blocks import block_chunks
from pruneopt.solvers.options import Boolean
from pruneopt.solvers.registry import Result, register
from pruneopt.solvers.starts import register_start

NEG = -np.inf


def greedy_blocks(w: np.ndarray, n: int, *, positive_only: bool) -> np.ndarray:
    """Hubara's greedy over a batch of blocks (B, m, m) -> bool mask."""
    nb, m, _ = w.shape
    flat = w.reshape(nb, -1)
    order = np.argsort(-flat, axis=1)  # ties: any fixed order (deterministic)
    base_e = (np.arange(nb) * m * m)[:, None] + order  # flat entry index, by rank
    base_r = (np.arange(nb) * m)[:, None] + order // m  # flat row-counter index
    base_c = (np.arange(nb) * m)[:, None] + order % m
    rowc = np.zeros(nb * m, dtype=np.int32)
    colc = np.zeros(nb * m, dtype=np.int32)
    x = np.zeros(nb * m * m, dtype=bool)
    wf = flat.ravel()
    for k in range(m * m):
        r, c, e = base_r[:, k], base_c[:, k], base_e[:, k]
        take = (rowc[r] < n) & (colc[c] < n)
        if positive_only:
            take &= wf[e] > 0
        x[e] = take
        rowc[r] += take
        colc[c] += take
    return x.reshape(nb, m, m)


def complete_blocks(x: np.ndarray, w: np.ndarray, n: int, *, must_fill: bool) -> np.ndarray:
    """Augment along best-gain shortest alternating paths (in place; returns ``x``).

    BFS layers from rows with room: row -> column over unused entries (gain +w), column ->
    row over kept entries (gain -w); in a layered search every node sits in one layer, so
    the traced path is simple. Stops a block when no path exists or (unless ``must_fill``)
    the best one does not gain.
    """
    nb, m, _ = x.shape
    # a path runs from a row with room to a column with room: other blocks are done
    active = np.flatnonzero((x.sum(axis=2) < n).any(axis=1) & (x.sum(axis=1) < n).any(axis=1))
    for _ in range(n * m):
        if active.size == 0:
            break
        xa, wa = x[active], w[active]
        k = xa.shape[0]
        rowc, colc = xa.sum(axis=2), xa.sum(axis=1)
        g_row = np.where(rowc < n, 0.0, NEG)  # best gain reaching a row (layer-restricted)
        seen_row = rowc < n
        seen_col = np.zeros((k, m), dtype=bool)
        pred_col = np.full((k, m), -1)
        pred_row = np.full((k, m), -1)
        g_col = np.full((k, m), NEG)
        frontier = seen_row.copy()
        end_gain = np.full(k, NEG)
        end_col = np.full(k, -1)
        done = ~frontier.any(axis=1)
        for _layer in range(m + 1):
            # rows in the frontier -> new columns over unused entries
            cand = np.where(frontier[:, :, None] & ~xa, g_row[:, :, None] + wa, NEG)
            ib = cand.argmax(axis=1)
            v = np.take_along_axis(cand, ib[:, None, :], axis=1)[:, 0, :]
            new_col = (v > NEG) & ~seen_col & ~done[:, None]
            g_col = np.where(new_col, v, g_col)
            pred_col = np.where(new_col, ib, pred_col)
            seen_col |= new_col
            # columns with room end a path: take the best among this layer's
            ends = np.where(new_col & (colc < n), g_col, NEG)
            jb = ends.argmax(axis=1)
            vb = ends[np.arange(k), jb]
            hit = (vb > NEG) & ~done
            end_gain[hit], end_col[hit] = vb[hit], jb[hit]
            done |= hit
            # columns -> new rows over kept entries
            cand = np.where(new_col[:, None, :] & xa, g_col[:, None, :] - wa, NEG)
            jb = cand.argmax(axis=2)
            v = np.take_along_axis(cand, jb[:, :, None], axis=2)[:, :, 0]
            new_row = (v > NEG) & ~seen_row & ~done[:, None]
            g_row = np.where(new_row, v, g_row)
            pred_row = np.where(new_row, jb, pred_row)
            seen_row |= new_row
            frontier = new_row
            done |= ~frontier.any(axis=1)
        go = end_col >= 0
        if not must_fill:
            go &= end_gain > 1e-12 * float(np.abs(wa).max())
        # trace: column <- row (add) <- column (undo) ... <- row with room
        bsel = np.flatnonzero(go)
        j = end_col[bsel]
        for _step in range(m + 1):
            if bsel.size == 0:
                break
            i = pred_col[bsel, j]
            xa[bsel, i, j] = True
            jp = pred_row[bsel, i]
            cont = jp >= 0
            xa[bsel[cont], i[cont], jp[cont]] = False
            bsel, j = bsel[cont], jp[cont]
        x[active] = xa
        active = active[go]
    return x


def greedy_mask(w: np.ndarray, n: int, exactly: bool) -> np.ndarray:
    """Greedy plus completion for a batch of blocks: a feasible mask for the problem's
    rule (at most n, or exactly n per row and column); the time-limit fallback of the
    exact N:M solvers."""
    x = greedy_blocks(w, n, positive_only=not exactly)
    return complete_blocks(x, w, n, must_fill=exactly)


def _ratio_ok(problem: TransposableNM) -> bool:
    return bool((problem.scores >= 0).all())


#: block entries per kernel call of ``"greedy"`` (whole block rows): the time-limit slack
GREEDY_CHUNK_ELEMS = 1 << 18


@register("greedy", TransposableNM, guarantee="approximation", ratio=2.0,
          options={"complete": Boolean()})
def greedy_solver(problem: TransposableNM, time_limit: float | None, *,
                  complete: bool = True) -> Result:
    """Hubara et al.'s 2-approximation (greedy by decreasing score), plus completion, in a
    compiled per-block kernel (:mod:`pruneopt.solvers.nm_greedy_kernels`).

    ``time_limit``: checked between chunks of block rows; once passed, the remaining chunks
    get the greedy mask without the (optional) completion, the cheapest feasible answer
    there is (with ``exactly=True`` the completion always runs: it makes the mask
    feasible)."""
    from pruneopt.solvers import nm_greedy_kernels as kern

    deadline = None if time_limit is None else time.perf_counter() + time_limit
    late = False
    n, m, ex = problem.n, problem.m, problem.exactly
    s = np.ascontiguousarray(problem.scores, dtype=np.float64)
    mask = np.empty(s.shape, dtype=bool)
    out = np.zeros(5)
    R, C = s.shape
    per = max(1, GREEDY_CHUNK_ELEMS // (m * C))
    for r0 in range(0, R // m, per):
        r1 = min(R // m, r0 + per)
        late = late or (deadline is not None and time.perf_counter() > deadline)
        kern.greedy_blocks_kernel(s, n, m, not ex, (complete and not late) or ex, ex,
                                  r0 * (C // m), r1 * (C // m), mask, out)
    greedy_score = float(out[0])
    bound = min(float(out[2]), float(out[3]))  # = problem.row_col_bound()
    if _ratio_ok(problem):
        bound = min(bound, 2.0 * greedy_score)
    info = {"greedy_score": greedy_score, "completion_gain": float(out[4]) - greedy_score,
            "completion_added": int(out[1])}
    return Result(mask, "time_limit" if late and complete else "feasible", bound, info)


@register_start(TransposableNM)
def greedy_start(problem: TransposableNM) -> tuple[np.ndarray, float]:
    """The greedy mask with completion, and the row/column bound (warm start of the MILP
    backends)."""
    w = problem.blocks()
    x = np.empty(w.shape, dtype=bool)
    for sl in block_chunks(w.shape[0], problem.m):
        x[sl] = greedy_mask(w[sl], problem.n, problem.exactly)
    return problem.unblock(x), problem.row_col_bound()
