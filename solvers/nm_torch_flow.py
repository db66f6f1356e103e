"""Exact transposable N:M masks by min-cost flow on torch tensors (``"flow-torch"``).

On the CPU ``flow-torch`` hands the tensor's memory to the registered NumPy ``flow`` (no copy
for float64) and answers with a tensor: torch's small operations are slower there. On
other devices it runs :func:`flow_device`, described below.

The successive-shortest-path algorithm of ``"flow"`` (:mod:`pruneopt.solvers.nm_flow`),
vectorized over every block with torch operations so that it runs on the scores' device.
Start: each block row keeps its top-n (for "at most n": its top-n positive scores, scores
clipped at 0); this optimum of the relaxation without column constraints leaves no
negative cycle in the residual graph (a cycle inside the bipartite graph enters and leaves
each column once; for "at most", arcs through the source carry cost 0 and rows keep only
positive entries). Then, while a block has an over-full column, one unit of its excess
moves along a shortest path found by Bellman-Ford rounds over all such blocks at once
(arcs column j -> row i if kept, cost +s_ij; row i -> column j if not kept, cost -s_ij;
for "at most" rows -> source S and S -> rows with room, cost 0) to an under-full column or
(for "at most") to the source, i.e. an entry is dropped. Each augmentation along a shortest
path keeps the residual graph free of negative cycles, so the final mask is optimal.
Distances are float64 (float32 on devices without float64) with ties below
``1e-12 m max |s|`` ignored, relative to the scores. torch is imported lazily.
"""

from __future__ import annotations

import time
from typing import Any

from pruneopt.formulations.nm import TransposableNM
from pruneopt.solvers.registry import Result, register

INF = float("inf")


def _relax(undo, add, d_col, d_row, d_s, pred_col, pred_row, row_from_s, pred_s, row_open,
           at_most: bool, tol: float) -> bool:
    """One Bellman-Ford round over the residual graphs of a batch of blocks (in place).
    ``add`` is stored transposed ([block, j, i]) so both halves reduce over the last axis.
    Returns whether any distance improved by more than ``tol``."""
    v, jb = (undo + d_col[:, None, :]).min(dim=2)
    imp = v < d_row - tol
    changed = bool(imp.any())
    d_row[imp] = v[imp]
    pred_row[imp] = jb[imp]
    row_from_s[imp] = False
    if at_most:
        vs, ib = d_row.min(dim=1)
        imp_s = vs < d_s - tol
        d_s[imp_s] = vs[imp_s]
        pred_s[imp_s] = ib[imp_s]
        cand_r = d_s[:, None].expand_as(d_row).masked_fill(~row_open, INF)
        imp = cand_r < d_row - tol
        changed |= bool(imp.any())
        d_row[imp] = cand_r[imp]
        row_from_s[imp] = True
    v, ib = (add + d_row[:, None, :]).min(dim=2)
    imp = v < d_col - tol
    changed |= bool(imp.any())
    d_col[imp] = v[imp]
    pred_col[imp] = ib[imp]
    return changed


def augment_once_t(x: Any, w: Any, n: int, at_most: bool, tol: float) -> None:
    """Move one unit of column excess in every block of the batch ``x`` (B, m, m, bool,
    updated in place) along a shortest residual path."""
    import torch

    nb, m, _ = x.shape
    dev, dt = x.device, w.dtype
    colc, rowc = x.sum(dim=1), x.sum(dim=2)
    undo = w.masked_fill(~x, INF)
    add = (-w).masked_fill(x, INF).transpose(1, 2).contiguous()
    d_col = torch.full((nb, m), INF, dtype=dt, device=dev).masked_fill(colc > n, 0.0)
    d_row = torch.full((nb, m), INF, dtype=dt, device=dev)
    d_s = torch.full((nb,), INF, dtype=dt, device=dev)
    pred_col = torch.full((nb, m), -1, dtype=torch.long, device=dev)
    pred_row = torch.full((nb, m), -1, dtype=torch.long, device=dev)
    row_from_s = torch.zeros((nb, m), dtype=torch.bool, device=dev)
    pred_s = torch.full((nb,), -1, dtype=torch.long, device=dev)
    row_open = rowc < n
    for _ in range(4 * m + 4):
        if not _relax(undo, add, d_col, d_row, d_s, pred_col, pred_row, row_from_s, pred_s,
                      row_open, at_most, tol):
            break
    else:
        raise RuntimeError("Bellman-Ford did not converge: a negative cycle (a bug)")
    v_col, jstar = d_col.masked_fill(colc >= n, INF).min(dim=1)
    via_s = d_s <= v_col if at_most else torch.zeros(nb, dtype=torch.bool, device=dev)
    if not bool(torch.isfinite(torch.where(via_s, d_s, v_col)).all()):
        raise RuntimeError("no augmenting path for a block with excess (a bug)")
    # trace the paths back to their over-full column, flipping x on the way
    kind = torch.where(via_s, 2, 0)  # 0 column, 1 row, 2 source
    node = torch.where(via_s, 0, jstar)
    live = torch.ones(nb, dtype=torch.bool, device=dev)
    bidx = torch.arange(nb, device=dev)
    for _ in range(4 * m + 8):
        if not bool(live.any()):
            return
        at_col, at_row, at_s = live & (kind == 0), live & (kind == 1), live & (kind == 2)
        b, j = bidx[at_col], node[at_col]
        i = pred_col[b, j]
        origin = i < 0
        live[b[origin]] = False
        b, j, i = b[~origin], j[~origin], i[~origin]
        x[b, i, j] = True
        kind[b], node[b] = 1, i
        b, i = bidx[at_row], node[at_row]
        fs = row_from_s[b, i]
        kind[b[fs]] = 2
        b, i = b[~fs], i[~fs]
        j = pred_row[b, i]
        x[b, i, j] = False
        kind[b], node[b] = 0, j
        b = bidx[at_s]
        kind[b], node[b] = 1, pred_s[b]
    raise RuntimeError("path tracing did not end (a bug)")


def ssp_blocks_t(w: Any, n: int, *, exactly: bool = False) -> Any:
    """Optimal transposable masks for a batch of blocks ``w`` (B, m, m) tensor."""
    import torch

    w = w.to(torch.float32 if w.device.type == "mps" else torch.float64)
    m = w.shape[-1]
    w_pos = w if exactly else w.clamp_min(0)
    tol = 1e-12 * float(w_pos.abs().max()) * m
    x = torch.zeros(w.shape, dtype=torch.bool, device=w.device)
    x.scatter_(2, w_pos.topk(n, dim=2).indices, True)
    if not exactly:
        x &= w_pos > 0
    active = (x.sum(dim=1) > n).any(dim=1).nonzero()[:, 0]
    while active.numel():
        xa = x[active]
        augment_once_t(xa, w_pos[active], n, not exactly, tol)
        x[active] = xa
        active = active[(xa.sum(dim=1) > n).any(dim=1)]
    if not exactly:
        x &= w > 0
    return x


@register("flow-torch", TransposableNM, guarantee="exact", requires=("torch",),
          package="torch")
def flow_torch(problem: TransposableNM, time_limit: float | None) -> Result:
    """``flow`` on the scores' torch device: on the CPU the registered NumPy ``flow`` on the
    tensor's memory (faster there than torch operations, README), answering with a bool
    tensor; elsewhere :func:`flow_device`."""
    import torch

    from pruneopt.solvers.nm_torch import (
        answer,
        cpu_threads,
        problem_tensor,
        row_col_bound_t,
        to_blocks_t,
    )
    from pruneopt.solvers.registry import get_solver

    deadline = None if time_limit is None else time.perf_counter() + time_limit
    t, numpy_out = problem_tensor(problem)
    n, m, ex = problem.n, problem.m, problem.exactly
    if t.device.type == "cpu":
        a = t if t.dtype in (torch.float32, torch.float64) else t.float()
        sub = problem if numpy_out else TransposableNM(a.numpy(), n, m, exactly=ex)
        res = get_solver(sub, "flow").impl(sub, time_limit)
        mask = res.decision if numpy_out else torch.from_numpy(res.decision)
        return Result(mask, res.status, res.bound, {**res.info, "device": "cpu", "via": "flow"},
                      proof=res.proof)
    with cpu_threads(t):
        x, late = flow_device(t, n, m, ex, deadline)
    info = {"device": str(t.device)}
    if late:
        info["stopped_early"] = True
        return Result(answer(x, numpy_out), "time_limit",
                      row_col_bound_t(to_blocks_t(t, m), n, ex), info)
    return Result(answer(x, numpy_out), "optimal", None, info,
                  proof="successive shortest paths (no negative cycle)")


def flow_device(t: Any, n: int, m: int, exactly: bool,
                deadline: float | None = None) -> tuple[Any, bool]:
    """The flow in torch operations on ``t``'s device (also callable on the CPU):
    ``(mask tensor, stopped)``; once ``deadline`` has passed, the remaining chunks of blocks
    get the greedy mask and ``stopped`` is True."""
    from pruneopt.solvers.nm_torch import from_blocks_t, to_blocks_t
    from pruneopt.solvers.nm_torch_greedy import chunk_blocks, greedy_mask_t

    w = to_blocks_t(t, m)
    x = w.new_zeros(w.shape, dtype=bool)
    step = chunk_blocks(w)
    late = False
    for b0 in range(0, w.shape[0], step):
        late = late or (deadline is not None and time.perf_counter() > deadline)
        wc = w[b0:b0 + step]
        x[b0:b0 + step] = greedy_mask_t(wc, n, exactly) if late else ssp_blocks_t(
            wc, n, exactly=exactly)
    return from_blocks_t(x, tuple(t.shape), m), late
