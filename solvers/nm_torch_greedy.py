"""Hubara et al.'s greedy for transposable N:M masks, with completion, on torch tensors
(``"greedy-torch"``).

The semantics of ``"greedy"`` (:mod:`pruneopt.solvers.nm_greedy`), written with torch
operations so that it runs on the scores' device: in every block, entries by decreasing
score, each kept while its row and column keep fewer than n (one step per entry rank, over
all blocks at once; a 1/2-approximation of the "at most n" optimum for scores >= 0), then
augmentation along best-gain shortest alternating paths while it gains ("at most") or
until every row and column holds n (``exactly=True``). Bound: ``min(2 * greedy score,
row/column bound)`` for scores >= 0, else the row/column bound. torch is imported lazily.
"""

from __future__ import annotations

import time
from typing import Any

from pruneopt.formulations.nm import TransposableNM
from pruneopt.solvers.options import Boolean
from pruneopt.solvers.registry import Result, register

#: block entries processed at once on the CPU (on accelerators 8x more)
CHUNK_ELEMS = 1 << 21
NEG = float("-inf")


def greedy_blocks_t(w: Any, n: int, *, positive_only: bool) -> Any:
    """The greedy over a batch of blocks ``w`` (B, m, m) tensor -> bool mask tensor."""
    import torch

    nb, m, _ = w.shape
    dev = w.device
    flat = w.reshape(nb, -1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ar = torch.arange(nb, device=dev)[:, None]
    base_e = ar * (m * m) + order
    base_r = ar * m + order // m
    base_c = ar * m + order % m
    rowc = torch.zeros(nb * m, dtype=torch.int32, device=dev)
    colc = torch.zeros(nb * m, dtype=torch.int32, device=dev)
    x = torch.zeros(nb * m * m, dtype=torch.bool, device=dev)
    wf = flat.reshape(-1)
    for k in range(m * m):
        r, c, e = base_r[:, k], base_c[:, k], base_e[:, k]
        take = (rowc[r] < n) & (colc[c] < n)
        if positive_only:
            take &= wf[e] > 0
        x[e] = take
        rowc[r] += take.int()  # r (and c) are distinct within a step: one per block
        colc[c] += take.int()
    return x.reshape(nb, m, m)


def complete_blocks_t(x: Any, w: Any, n: int, *, must_fill: bool) -> Any:
    """Augment along best-gain shortest alternating paths (BFS layers from rows with room:
    row -> column over unused entries, gain +w; column -> row over kept ones, gain -w);
    stops a block when no path exists or (unless ``must_fill``) the best does not gain.
    Returns the completed mask (``x`` is updated in place)."""
    import torch

    nb, m, _ = x.shape
    dev = x.device
    active = ((x.sum(dim=2) < n).any(dim=1) & (x.sum(dim=1) < n).any(dim=1)).nonzero()[:, 0]
    for _ in range(n * m):
        if active.numel() == 0:
            break
        xa, wa = x[active], w[active]
        k = xa.shape[0]
        rowc, colc = xa.sum(dim=2), xa.sum(dim=1)
        g_row = torch.where(rowc < n, 0.0, NEG).to(wa.dtype)
        seen_row = rowc < n
        seen_col = torch.zeros((k, m), dtype=torch.bool, device=dev)
        pred_col = torch.full((k, m), -1, dtype=torch.long, device=dev)
        pred_row = torch.full((k, m), -1, dtype=torch.long, device=dev)
        g_col = torch.full((k, m), NEG, dtype=wa.dtype, device=dev)
        frontier = seen_row.clone()
        end_gain = torch.full((k,), NEG, dtype=wa.dtype, device=dev)
        end_col = torch.full((k,), -1, dtype=torch.long, device=dev)
        done = ~frontier.any(dim=1)
        for _layer in range(m + 1):
            cand = torch.where(frontier[:, :, None] & ~xa, g_row[:, :, None] + wa, NEG)
            v, ib = cand.max(dim=1)
            new_col = (v > NEG) & ~seen_col & ~done[:, None]
            g_col = torch.where(new_col, v, g_col)
            pred_col = torch.where(new_col, ib, pred_col)
            seen_col |= new_col
            ends = torch.where(new_col & (colc < n), g_col, NEG)
            vb, jb = ends.max(dim=1)
            hit = (vb > NEG) & ~done
            end_gain = torch.where(hit, vb, end_gain)
            end_col = torch.where(hit, jb, end_col)
            done |= hit
            cand = torch.where(new_col[:, None, :] & xa, g_col[:, None, :] - wa, NEG)
            v, jb = cand.max(dim=2)
            new_row = (v > NEG) & ~seen_row & ~done[:, None]
            g_row = torch.where(new_row, v, g_row)
            pred_row = torch.where(new_row, jb, pred_row)
            seen_row |= new_row
            frontier = new_row
            done |= ~frontier.any(dim=1)
        go = end_col >= 0
        if not must_fill:
            go &= end_gain > 1e-12 * float(wa.abs().max())
        bsel = go.nonzero()[:, 0]
        j = end_col[bsel]
        for _step in range(m + 1):
            if bsel.numel() == 0:
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


def greedy_mask_t(w: Any, n: int, exactly: bool) -> Any:
    """Greedy plus completion for blocks ``w`` (B, m, m): a feasible mask for the rule (at
    most n, or exactly n, per row and column); for "at most" only positive entries kept.
    The time-limit fallback of the torch N:M solvers."""
    w = w.double() if w.device.type != "mps" else w.float()
    x = greedy_blocks_t(w, n, positive_only=not exactly)
    x = complete_blocks_t(x, w, n, must_fill=exactly)
    return x if exactly else x & (w > 0)


def chunk_blocks(w: Any) -> int:
    """Blocks of ``w`` (B, m, m) processed at once on its device."""
    per = CHUNK_ELEMS if w.device.type == "cpu" else 8 * CHUNK_ELEMS
    return max(1, per // (w.shape[1] * w.shape[2]))


@register("greedy-torch", TransposableNM, guarantee="approximation", ratio=2.0,
          requires=("torch",), package="torch", options={"complete": Boolean()})
def greedy_torch(problem: TransposableNM, time_limit: float | None, *,
                 complete: bool = True) -> Result:
    """``greedy`` (2-approximation plus completion) on the scores' torch device.

    ``time_limit``: read between chunks; once passed, the remaining chunks get the greedy
    mask without the optional completion (with it, for ``exactly=True``)."""
    from pruneopt.solvers.nm_torch import cpu_threads, problem_tensor

    deadline = None if time_limit is None else time.perf_counter() + time_limit
    t, numpy_out = problem_tensor(problem)
    with cpu_threads(t):
        return _greedy(problem, t, numpy_out, deadline, complete)


def _greedy(problem: TransposableNM, t: Any, numpy_out: bool, deadline: float | None,
            complete: bool) -> Result:
    from pruneopt.solvers.nm_torch import answer, from_blocks_t, row_col_bound_t, to_blocks_t

    n, m, ex = problem.n, problem.m, problem.exactly
    w = to_blocks_t(t, m)
    w = w.double() if w.device.type != "mps" else w.float()
    x = w.new_zeros(w.shape, dtype=bool)
    greedy_score, added, late = 0.0, 0, False
    step = chunk_blocks(w)
    for b0 in range(0, w.shape[0], step):
        wc = w[b0:b0 + step]
        xs = greedy_blocks_t(wc, n, positive_only=not ex)
        greedy_score += float((wc * xs).sum())
        late = late or (deadline is not None and time.perf_counter() > deadline)
        if (complete and not late) or ex:
            before = int(xs.sum())
            xs = complete_blocks_t(xs, wc, n, must_fill=ex)
            added += int(xs.sum()) - before
        x[b0:b0 + step] = xs
    bound = row_col_bound_t(w, n, ex)
    if bool((w >= 0).all()):
        bound = min(bound, 2.0 * greedy_score)
    kept = float((w * x).sum())
    info = {"greedy_score": greedy_score, "completion_gain": kept - greedy_score,
            "completion_added": added, "device": str(w.device)}
    mask = answer(from_blocks_t(x, problem.shape, m), numpy_out)
    return Result(mask, "time_limit" if late and complete else "feasible", bound, info)
