"""Exact min-cost flow solvers for transposable N:M masks.

- ``"flow"`` (default): our own successive-shortest-path min-cost flow, vectorized in NumPy
  over every block at once. It starts from the optimum of the relaxation without column
  constraints (each block row keeps its top-n), whose residual graph has no negative cycle,
  and removes the excess of over-full columns one unit per round along a shortest
  (Bellman-Ford) path from an over-full column to an under-full one (or, for "at most n",
  to the source: a dropped entry). Each augmentation along a shortest path keeps the
  residual graph free of negative cycles, so the final mask is optimal (up to float
  rounding, guarded by a tolerance of 1e-12 of the largest score, times m). Rounds ~ the
  largest column excess (a few for random scores), each a handful of (blocks x m x m)
  array operations; memory is linear in the matrix size (blocks are processed in chunks).
- ``"ortools"``: OR-Tools ``SimpleMinCostFlow``, one graph per chunk of blocks. Its costs
  are integers: scores are scaled by ``scale`` (default: the finest scale OR-Tools accepts,
  up to 2**52 / (max score n m)) and rounded. The answer is then verified on the float scores by a
  negative-cycle check of the residual graph (:func:`certify`): "optimal" only if it passes.
- ``"networkx"``: networkx's network simplex, one block at a time (the reference library;
  slow by design), on costs scaled to integers (2**52 for the largest) and rounded, as its
  documentation asks, with the same float check.

Every solver here reads the clock between chunks of blocks (between blocks for networkx):
past ``time_limit`` the remaining blocks get the greedy mask and the status is
``"time_limit"`` with the row/column relaxation bound.
"""

from __future__ import annotations

import time

import numpy as np

from pruneopt.formulations.nm import TransposableNM
from pruneopt.solvers.nm_blocks import block_chunks, solve_blocks
from pruneopt.solvers.nm_greedy import greedy_mask
from pruneopt.solvers.options import Real
from pruneopt.solvers.registry import Result, register

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


def stopped(problem: TransposableNM, x: np.ndarray, info: dict) -> Result:
    """The answer of a solve the time limit cut short (the rest filled by the greedy)."""
    info["stopped_early"] = True
    return Result(problem.unblock(x), "time_limit", problem.row_col_bound(), info)


@register("flow", TransposableNM, guarantee="exact")
def flow_solver(problem: TransposableNM, time_limit: float | None) -> Result:
    """Vectorized successive-shortest-path min-cost flow over all blocks (NumPy)."""
    n, ex = problem.n, problem.exactly
    x, done = solve_blocks(problem.blocks(), lambda w: ssp_blocks(w, n, exactly=ex),
                           lambda w: greedy_mask(w, n, ex), time_limit)
    if not done:
        return stopped(problem, x, {})
    return Result(problem.unblock(x), "optimal", None, {},
                  proof="successive shortest paths (no negative cycle)")


def certify(problem: TransposableNM, mask: np.ndarray) -> bool:
    """Whether ``mask`` (feasible) is optimal: no negative cycle in any block's residual
    graph, checked on the float scores with Bellman-Ford (tolerance 1e-12 relative).

    For "at most n" the source and sink are merged into one node Z with arcs row -> Z if
    the row keeps any entry, Z -> row if it keeps fewer than n, Z -> column if the column
    keeps any, column -> Z if it keeps fewer than n (all cost 0); scores are clipped at 0.
    """
    w_all = problem.blocks()
    x_all = problem.blocks(np.asarray(mask, dtype=bool))
    n, m = problem.n, problem.m
    for sl in block_chunks(w_all.shape[0], m):
        w = w_all[sl]
        x = x_all[sl]
        if not problem.exactly:
            if (x & (w < 0)).any():
                return False
            w = np.maximum(w, 0.0)
        tol = flow_tolerance(w)
        undo = np.where(x, w, INF)
        add = np.where(x, INF, -w)
        nb = w.shape[0]
        d_row = np.zeros((nb, m))
        d_col = np.zeros((nb, m))
        colc, rowc = x.sum(axis=1), x.sum(axis=2)
        d_z = np.zeros(nb)
        for _ in range(2 * m + 3):
            changed = False
            v = (undo + d_col[:, None, :]).min(axis=2)
            if not problem.exactly:
                v = np.minimum(v, np.where(rowc < n, d_z[:, None], INF))
            imp = v < d_row - tol
            changed |= bool(imp.any())
            d_row = np.where(imp, v, d_row)
            v = (add + d_row[:, :, None]).min(axis=1)
            if not problem.exactly:
                v = np.minimum(v, np.where(colc > 0, d_z[:, None], INF))
            imp = v < d_col - tol
            changed |= bool(imp.any())
            d_col = np.where(imp, v, d_col)
            if not problem.exactly:
                vz = np.minimum(np.where(rowc > 0, d_row, INF).min(axis=1),
                                np.where(colc < n, d_col, INF).min(axis=1))
                imp = vz < d_z - tol
                changed |= bool(imp.any())
                d_z = np.where(imp, vz, d_z)
            if not changed:
                break
        else:
            return False
    return True


def _ortools_chunk(w: np.ndarray, n: int, exactly: bool, scale: float | None) -> tuple[
        np.ndarray, float]:
    """One SimpleMinCostFlow graph for the blocks ``w`` (scores clipped for "at most"):
    (mask, the integer cost scale used)."""
    from ortools.graph.python import min_cost_flow

    nb, m, _ = w.shape
    wmax = float(np.abs(w).max()) or 1.0
    # the finest integer costs OR-Tools accepts for this graph (it rejects a cost range
    # that could overflow its cost scaling with BAD_COST_RANGE)
    scales = [scale] if scale is not None else [
        float(2**e) / (wmax * n * m) for e in (52, 48, 44, 40, 36, 32)]
    # node ids: source 0, sink 1, rows 2 .. 2+nb*m, cols after
    rows = 2 + np.arange(nb * m).reshape(nb, m)
    cols = 2 + nb * m + np.arange(nb * m).reshape(nb, m)
    tail = [np.zeros(nb * m, np.int64), rows[:, :, None].repeat(m, 2).ravel(), cols.ravel()]
    head = [rows.ravel(), cols[:, None, :].repeat(m, 1).ravel(), np.ones(nb * m, np.int64)]
    cap = [np.full(nb * m, n), np.ones(nb * m * m, np.int64), np.full(nb * m, n)]
    total = n * m * nb
    if not exactly:
        tail.append(np.zeros(1, np.int64))
        head.append(np.ones(1, np.int64))
        cap.append(np.array([total]))
    tail, head = np.concatenate(tail), np.concatenate(head)
    cap = np.concatenate(cap).astype(np.int64)
    supplies = np.zeros(2 + 2 * nb * m, np.int64)
    supplies[0], supplies[1] = total, -total
    for sc in scales:
        if sc * wmax * n * m > 2.0**62:
            raise ValueError(f"solver 'ortools': scale={sc:g} makes integer costs overflow "
                             f"int64 for scores up to {wmax:g}; use a smaller scale")
        cost = np.zeros(tail.size, np.int64)
        cost[nb * m: nb * m + nb * m * m] = np.rint(-w * sc).astype(np.int64).ravel()
        smcf = min_cost_flow.SimpleMinCostFlow()
        arcs = smcf.add_arcs_with_capacity_and_unit_cost(tail, head, cap, cost)
        smcf.set_nodes_supplies(np.arange(supplies.size), supplies)
        status = smcf.solve()
        if status != smcf.BAD_COST_RANGE:
            break
    if status != smcf.OPTIMAL:
        raise RuntimeError(f"OR-Tools min cost flow ended with status {status}")
    flows = smcf.flows(arcs[nb * m: nb * m + nb * m * m])
    return flows.reshape(nb, m, m) > 0, sc


@register("ortools", TransposableNM, guarantee="exact", requires=("ortools",),
          package="ortools",
          options={"scale": Real(0.0, None, closed="neither", allow_none=True)})
def ortools_solver(problem: TransposableNM, time_limit: float | None, *,
                   scale: float | None = None) -> Result:
    """OR-Tools SimpleMinCostFlow, one graph per chunk of blocks (integer-scaled costs).

    ``scale``: the integer cost of a score s is ``round(-s * scale)`` (default: the finest
    scale OR-Tools accepts, about 2**52 / (max score * n * m)). The answer is optimal for the
    rounded costs; "optimal" is said only when the float certificate (:func:`certify`) passes.
    """
    t0 = time.perf_counter()
    w = problem.blocks()
    if not problem.exactly:
        w = np.maximum(w, 0.0)
    n, m, nb = problem.n, problem.m, problem.num_blocks
    used: list[float] = []

    def solve(chunk):
        mask, sc = _ortools_chunk(chunk, n, problem.exactly, scale)
        used.append(sc)
        return mask

    x, done = solve_blocks(w, solve, lambda c: greedy_mask(c, n, problem.exactly), time_limit,
                           elems=1 << 22)
    if not problem.exactly:
        x &= problem.blocks() > 0
    info = {"scale": min(used) if used else None, "seconds_without_check":
            time.perf_counter() - t0, "quantization": "costs = round(-score * scale) as int64"}
    if not done:
        return stopped(problem, x, info)
    mask = problem.unblock(x)
    ok = certify(problem, mask)
    info["float_check_passed"] = ok
    if ok:
        return Result(mask, "optimal", None, info, proof="residual graph (float check)")
    # optimal for the rounded costs: each kept entry is off by <= 0.5 / scale
    return Result(mask, "feasible", problem.objective(mask) + n * m * nb / min(used), info)


@register("networkx", TransposableNM, guarantee="exact", requires=("networkx",),
          package="networkx")
def networkx_solver(problem: TransposableNM, time_limit: float | None) -> Result:
    """networkx network simplex, block by block (the reference library; slow).

    ``time_limit`` is checked between blocks; the rest is filled by the greedy."""
    import networkx as nx

    deadline = None if time_limit is None else time.perf_counter() + time_limit
    nb = problem.num_blocks
    m = problem.m
    w = problem.blocks()
    wc = np.maximum(w, 0.0) if not problem.exactly else w
    # network simplex is exact on integers (with floats it may cycle): scale and round
    scale = float(2**52) / ((float(np.abs(wc).max()) or 1.0) * problem.n * m)
    cost = np.rint(-wc * scale).astype(np.int64)
    x = np.zeros((nb, m, m), dtype=bool)
    for b in range(nb):
        if deadline is not None and time.perf_counter() > deadline:
            x[b:] = greedy_mask(w[b:], problem.n, problem.exactly)
            if not problem.exactly:
                x &= w > 0
            return stopped(problem, x, {"scale": scale, "blocks_solved": b})
        g = problem.to_networkx(block=b)
        for i in range(m):
            for j in range(m):
                g[("r", b, i)][("c", b, j)]["weight"] = int(cost[b, i, j])
        flow = nx.min_cost_flow(g)
        for i in range(m):
            out = flow[("r", b, i)]
            for j in range(m):
                x[b, i, j] = out[("c", b, j)] > 0
    if not problem.exactly:
        x &= w > 0
    mask = problem.unblock(x)
    ok = certify(problem, mask)
    # optimal for the rounded costs: each of at most n*m*nb kept entries is off by <= 0.5/scale
    # in both the answer and the true optimum
    if ok:
        return Result(mask, "optimal", None, {"float_check_passed": ok, "scale": scale},
                      proof="residual graph (float check)")
    bound = problem.objective(mask) + problem.n * m * nb / scale
    return Result(mask, "feasible", bound, {"float_check_passed": ok, "scale": scale})
