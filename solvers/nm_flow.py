"""Exact min-cost flow solvers for transposable N:M masks.

- ``"flow"`` (default from m = 8): our own successive-shortest-path min-cost flow, one block
  at a time in a compiled (numba) kernel (:mod:`pruneopt.solvers.nm_flow_kernels`): start
  from each block row's top-n with the potentials of that start, then Dijkstra paths from
  over-full columns, a total column excess of them. The kernel also returns the block's LP
  duals, and "optimal" rests on them: the dual bound minus the kept score (weak duality,
  :func:`~pruneopt.solvers.nm_flow_kernels.dual_gaps`) is at most ``CERT_ULPS m eps`` times
  the magnitude of the summed terms in every block (a float tolerance relative to the
  block's scores). A block failing that check is solved again by ``"ortools"`` (below,
  with its residual-graph check, :func:`_residual_ok`); ``sol.bound``/``info["dual_bound"]``
  is the sum of the duals, a valid bound whatever the mask. Blocks go in chunks of block
  rows of about ``FLOW_CHUNK_ELEMS`` entries, the clock read between chunks.
- ``"ortools"``: OR-Tools ``SimpleMinCostFlow`` on graphs of ``ORTOOLS_CHUNK_ELEMS`` block
  entries (many small graphs solve faster than one large one), each block with its own
  terminals. Its costs are integers: scores are scaled by ``scale`` (default: the finest
  scale that keeps the costs a margin below the limit OR-Tools checks) and rounded. Each
  chunk's answer is then verified on the float scores by a negative-cycle check of the
  residual graph (:func:`_residual_ok`, the check of :func:`certify`): "optimal" only if
  every block passes.
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

from pruneopt.formulations.nm import TransposableNM, from_blocks, to_blocks
from pruneopt.solvers.nm_blocks import block_chunks, solve_blocks
from pruneopt.solvers.nm_greedy import greedy_mask
from pruneopt.solvers.options import Real
from pruneopt.solvers.registry import Result, register

INF = np.inf


def flow_tolerance(w: np.ndarray) -> float:
    """The float tolerance of path lengths in blocks ``w``: ``1e-12 m max |w|`` (relative to
    the scores, so that scaling them changes nothing)."""
    return 1e-12 * (float(np.abs(w).max()) if w.size else 0.0) * w.shape[-1]


def stopped(problem: TransposableNM, x: np.ndarray, info: dict) -> Result:
    """The answer of a solve the time limit cut short (the rest filled by the greedy)."""
    info["stopped_early"] = True
    return Result(problem.unblock(x), "time_limit", problem.row_col_bound(), info)


#: block entries per kernel call of ``"flow"`` (whole block rows): the time-limit slack
FLOW_CHUNK_ELEMS = 1 << 18
#: the dual gap a block may show and still count as optimal, in units of ``m eps`` times the
#: magnitude of the terms of its dual and primal sums (float rounding of those sums and of
#: the potentials, which Dijkstra builds from sums of path lengths)
CERT_ULPS = 64.0
#: moves of the kernel's price phase per unit of column excess, by m (0: shortest paths
#: only). Measured at 1024^2 (CPU time): one move per unit saves 4 % of the time at m = 16
#: and 16 % at m = 32, and costs 5-8 % at m = 4 and 8; more moves cost more than the paths
#: they save (price wars)
PRICE_MOVES = {4: 0, 8: 0}


def flow_chunks(problem: TransposableNM, elems: int = FLOW_CHUNK_ELEMS):
    """Chunks of whole block rows: ``(first row, last row + 1, first block, last block + 1)``."""
    R, C = problem.shape
    m = problem.m
    per = max(1, elems // (m * C))
    bc = C // m
    for r0 in range(0, R // m, per):
        r1 = min(R // m, r0 + per)
        yield r0 * m, r1 * m, r0 * bc, r1 * bc


@register("flow", TransposableNM, guarantee="exact")
def flow_solver(problem: TransposableNM, time_limit: float | None) -> Result:
    """Successive shortest paths per block (numba), each block proven by its LP duals.

    ``time_limit``: read between chunks of block rows; past it the rest get the greedy mask
    (status ``"time_limit"``, bound: the duals of the solved blocks plus the row/column
    bound of the rest)."""
    from pruneopt.solvers import nm_flow_kernels as kern

    deadline = None if time_limit is None else time.perf_counter() + time_limit
    n, m, ex = problem.n, problem.m, problem.exactly
    s = np.ascontiguousarray(problem.scores, dtype=np.float64)
    mask = np.zeros(s.shape, dtype=bool)
    eps = float(np.finfo(np.float64).eps)
    dual_total, failed, late_bound, augmentations = 0.0, 0, 0.0, 0
    late = False
    for r0, r1, b0, b1 in flow_chunks(problem):
        if deadline is not None and time.perf_counter() > deadline:
            late = True
            w = to_blocks(s[r0:r1], m)
            mask[r0:r1] = from_blocks(greedy_mask(w, n, ex) & ((w > 0) | ex),
                                      (r1 - r0, s.shape[1]), m)
            wc = w if ex else np.maximum(w, 0.0)
            late_bound += min(float(-np.sort(-wc, axis=2)[:, :, :n].sum()),
                              float(-np.sort(-wc, axis=1)[:, :n, :].sum()))
            continue
        k = b1 - b0
        u, v = np.empty((k, m)), np.empty((k, m))
        aug = kern.flow_blocks(s, n, m, ex, b0, b1, mask, u, v, PRICE_MOVES.get(m, 1))
        if aug < 0:
            raise RuntimeError("flow kernel: no augmenting path for a block with excess (a bug)")
        augmentations += aug
        dual, primal, scale = np.empty(k), np.empty(k), np.empty(k)
        kern.dual_gaps(s, mask, u, v, n, m, ex, b0, b1, dual, primal, scale)
        dual_total += float(dual.sum())
        bad = np.flatnonzero(dual - primal > CERT_ULPS * m * eps * scale)
        if bad.size:  # re-solve those blocks with OR-Tools, checked by residual graph
            failed += refine_blocks(s[r0:r1], mask[r0:r1], bad, n, m, ex)
    info = {"dual_bound": dual_total, "augmentations": augmentations,
            "blocks_failing_check": failed}
    if late:
        info["stopped_early"] = True
        return Result(mask, "time_limit", dual_total + late_bound, info)
    if failed:
        return Result(mask, "feasible", dual_total, info)
    return Result(mask, "optimal", dual_total, info,
                  proof="LP duals of every block (dual gap within float rounding)")


def refine_blocks(s: np.ndarray, mask: np.ndarray, bad: np.ndarray, n: int, m: int,
                  exactly: bool) -> int:
    """Solve blocks ``bad`` of the slab ``s`` (whole block rows) again with ``"ortools"``
    (side by side as one row of blocks), write them into ``mask`` (the slab's, in place);
    returns how many of them fail its residual-graph check (no proof of optimality)."""
    bc = s.shape[1] // m
    rows = [slice((b // bc) * m, (b // bc + 1) * m) for b in bad]
    cols = [slice((b % bc) * m, (b % bc + 1) * m) for b in bad]
    side = np.concatenate([s[r, c] for r, c in zip(rows, cols, strict=True)], axis=1)
    res = ortools_solver(TransposableNM(side, n, m, exactly=exactly), None)
    for k, (r, c) in enumerate(zip(rows, cols, strict=True)):
        mask[r, c] = res.decision[:, k * m:(k + 1) * m]
    return 0 if res.status == "optimal" else int(res.info["blocks_failing_check"])


def _residual_ok(w: np.ndarray, x: np.ndarray, n: int, exactly: bool,
                 tol: float) -> np.ndarray:
    """Per block of ``w``, ``x`` (B, m, m): whether the residual graph of mask ``x`` has no
    negative cycle (Bellman-Ford from zero distances; improvements below ``tol`` ignored).

    For "at most n" (``w`` already clipped at 0) the source and sink are one node Z with
    arcs row -> Z if the row keeps any entry, Z -> row if it keeps fewer than n, Z -> column
    if the column keeps any, column -> Z if it keeps fewer than n (all cost 0). A block
    whose distances stop changing is settled (its distances depend on its own arcs only),
    so each round works on the blocks still changing; a block still changing after
    ``2m + 3`` rounds (more than its ``2m + 1`` nodes) has a negative cycle. For m <= 16 the
    minima over a block row or column are taken slice by slice (faster than reducing a
    short axis).
    """
    nb, m, _ = w.shape
    ok = np.ones(nb, dtype=bool)
    sliced = m <= 16
    undo = np.where(x, w, INF)  # column j -> row i, cost +w_ij, if x_ij
    add = np.where(x, INF, -w)  # row i -> column j, cost -w_ij, if not x_ij
    if sliced:  # undo[j] = undo[:, :, j] and add[i] = add[:, i, :], contiguous (B, m)
        undo = np.ascontiguousarray(undo.transpose(2, 0, 1))
        add = np.ascontiguousarray(add.transpose(1, 0, 2))
    rowc, colc = x.sum(axis=2), x.sum(axis=1)
    z_row = np.where(rowc < n, 0.0, INF)  # Z -> row (plus d_z)
    z_col = np.where(colc > 0, 0.0, INF)  # Z -> column
    row_z = np.where(rowc > 0, 0.0, INF)  # row -> Z
    col_z = np.where(colc < n, 0.0, INF)  # column -> Z

    def relax(arcs, d, into_rows):
        """Into rows: min_j arcs[b, i, j] + d[b, j]; into columns: min_i arcs[b, i, j] +
        d[b, i] (sliced: arcs[k] is the (B, m) slice to add d[:, k] to, either way)."""
        if not sliced:
            if into_rows:
                return (arcs + d[:, None, :]).min(axis=2)
            return (arcs + d[:, :, None]).min(axis=1)
        v = arcs[0] + d[:, :1]
        t = np.empty_like(v)
        for k in range(1, m):
            np.minimum(v, np.add(arcs[k], d[:, k:k + 1], out=t), out=v)
        return v

    d_row, d_col, d_z = np.zeros((nb, m)), np.zeros((nb, m)), np.zeros(nb)
    act = None  # None: every block (no copies in the first round)
    for _ in range(2 * m + 3):
        if act is None:
            u, a, dr, dc, dz = undo, add, d_row, d_col, d_z
        else:
            u, a = (undo[:, act], add[:, act]) if sliced else (undo[act], add[act])
            dr, dc, dz = d_row[act], d_col[act], d_z[act]
        sub = slice(None) if act is None else act
        v = relax(u, dc, True)
        if not exactly:
            np.minimum(v, z_row[sub] + dz[:, None], out=v)
        imp = v < dr - tol
        changed = imp.any(axis=1)
        np.copyto(dr, v, where=imp)
        v = relax(a, dr, False)
        if not exactly:
            np.minimum(v, z_col[sub] + dz[:, None], out=v)
        imp = v < dc - tol
        changed |= imp.any(axis=1)
        np.copyto(dc, v, where=imp)
        if not exactly:
            vz = np.minimum((dr + row_z[sub]).min(axis=1), (dc + col_z[sub]).min(axis=1))
            imp = vz < dz - tol
            changed |= imp
            np.copyto(dz, vz, where=imp)
        if act is None:  # dr, dc, dz were d_row, d_col, d_z themselves
            act = np.flatnonzero(changed)
        else:
            d_row[act], d_col[act], d_z[act] = dr, dc, dz
            act = act[changed]
        if not act.size:
            return ok
    ok[act] = False
    return ok


def certify(problem: TransposableNM, mask: np.ndarray) -> bool:
    """Whether ``mask`` (feasible) is optimal: no negative cycle in any block's residual
    graph, checked on the float scores with Bellman-Ford (tolerance ``1e-12 m max |s|``,
    relative to the scores; see :func:`_residual_ok`). For "at most n" scores are clipped at
    0 and a mask keeping a negative score is not optimal.
    """
    w_all = problem.blocks()
    x_all = problem.blocks(np.asarray(mask, dtype=bool))
    if not problem.exactly:
        if (x_all & (w_all < 0)).any():
            return False
        w_all = np.maximum(w_all, 0.0)
    tol = flow_tolerance(w_all)
    for sl in block_chunks(w_all.shape[0], problem.m, ORTOOLS_CHUNK_ELEMS):
        if not _residual_ok(w_all[sl], x_all[sl], problem.n, problem.exactly, tol).all():
            return False
    return True


#: block entries in one OR-Tools graph: OR-Tools' cost scaling is faster on many small
#: graphs than on one large one (``benchmarks/nm_masks.py --chunks`` measures it)
ORTOOLS_CHUNK_ELEMS = 1 << 15
#: integer costs stay below OR-Tools' own limit (int64 max / (2 (nodes + 1)), beyond which it
#: answers BAD_COST_RANGE) by this factor: its cost scaling can overflow a few times below
#: that limit (data-dependent, seen up to 3.2x)
ORTOOLS_COST_MARGIN = 16.0
#: a BAD_COST_RANGE answer anyway is retried (at most 3 times) with a scale this much smaller
_RETRY_FACTOR = 16.0


class _FlowGraph:
    """The min-cost-flow graph of ``nb`` blocks (arcs, capacities, supplies), built once and
    reused for every chunk of that many blocks. The ``nb m m`` row -> column arcs come first
    (block, row, column order), so their flows are the mask.

    - ``exactly``: rows supply n, columns demand n (no source or sink);
    - "at most": per block a source S_b (supply n m) and a sink T_b (demand n m), arcs
      S_b -> row (capacity n), column -> T_b (capacity n) and S_b -> T_b (capacity n m, the
      unkept slots). Per-block terminals keep the blocks apart: one shared source and sink
      make OR-Tools several times slower (``benchmarks/nm_masks.py`` measures both).
    """

    def __init__(self, nb: int, m: int, n: int, exactly: bool) -> None:
        r = nb * m
        rows = np.arange(r, dtype=np.int64)
        cols = r + np.arange(r, dtype=np.int64).reshape(nb, m)
        tail = [np.repeat(rows, m)]
        head = [np.broadcast_to(cols[:, None, :], (nb, m, m)).ravel()]
        cap = [np.ones(r * m, np.int64)]
        if exactly:
            supplies = np.concatenate([np.full(r, n, np.int64), np.full(r, -n, np.int64)])
        else:
            src = 2 * r + np.arange(nb, dtype=np.int64)
            snk = src + nb
            tail += [np.repeat(src, m), cols.ravel(), src]
            head += [rows, np.repeat(snk, m), snk]
            cap += [np.full(2 * r, n, np.int64), np.full(nb, n * m, np.int64)]
            supplies = np.zeros(2 * r + 2 * nb, np.int64)
            supplies[src], supplies[snk] = n * m, -n * m
        self.tail, self.head = np.concatenate(tail), np.concatenate(head)
        self.cap = np.concatenate(cap)
        self.supplies = supplies
        self.nodes = np.arange(supplies.size, dtype=np.int64)
        self.cost = np.zeros(self.tail.size, np.int64)
        self.entries = r * m
        self.shape = (nb, m, m)

    def max_cost(self) -> float:
        """The largest integer cost OR-Tools accepts on this graph, with the margin."""
        return float((2**63 - 1) // (2 * (self.nodes.size + 1))) / ORTOOLS_COST_MARGIN

    def solve(self, w: np.ndarray, scale: float):
        """(mask, OR-Tools status) for blocks ``w`` and integer costs ``rint(-w scale)``."""
        from ortools.graph.python import min_cost_flow

        self.cost[: self.entries] = np.rint(w.reshape(-1) * -scale)
        smcf = min_cost_flow.SimpleMinCostFlow()
        arcs = smcf.add_arcs_with_capacity_and_unit_cost(self.tail, self.head, self.cap,
                                                         self.cost)
        smcf.set_nodes_supplies(self.nodes, self.supplies)
        status = smcf.solve()
        if status != smcf.OPTIMAL:
            return None, status
        return smcf.flows(arcs[: self.entries]).reshape(self.shape) > 0, status


@register("ortools", TransposableNM, guarantee="exact", requires=("ortools",),
          package="ortools",
          options={"scale": Real(0.0, None, closed="neither", allow_none=True)})
def ortools_solver(problem: TransposableNM, time_limit: float | None, *,
                   scale: float | None = None) -> Result:
    """OR-Tools SimpleMinCostFlow, one graph per chunk of blocks (integer-scaled costs).

    ``scale``: the integer cost of a score s is ``round(-s * scale)`` (default: the finest
    scale that keeps every cost ``ORTOOLS_COST_MARGIN`` times below OR-Tools' limit for a
    chunk's graph, about 2**58 / (nodes * max score)). The answer is optimal for the rounded
    costs; "optimal" is said only when the float certificate (:func:`_residual_ok`, the check
    of :func:`certify`) passes for every block. Each chunk is certified right after it is
    solved, so ``time_limit`` (read between chunks) covers the check too.
    """
    from ortools.graph.python import min_cost_flow

    t0 = time.perf_counter()
    n, m, nb, ex = problem.n, problem.m, problem.num_blocks, problem.exactly
    w = problem.blocks()
    wmax = float(np.abs(w).max()) if w.size else 0.0
    wmax = wmax if ex else max(float(w.max()) if w.size else 0.0, 0.0)
    tol = 1e-12 * wmax * m
    step = max(1, ORTOOLS_CHUNK_ELEMS // (m * m))
    graphs: dict[int, _FlowGraph] = {}
    state = {"scale": scale, "retries": 0, "failed_blocks": 0, "check_seconds": 0.0}

    def graph(k: int) -> _FlowGraph:
        if k not in graphs:
            graphs[k] = _FlowGraph(k, m, n, ex)
        return graphs[k]

    if scale is None:  # one scale for every chunk, from the largest chunk's graph
        state["scale"] = graph(min(step, nb)).max_cost() / (wmax or 1.0)
    elif scale * (wmax or 1.0) > graph(min(step, nb)).max_cost() * ORTOOLS_COST_MARGIN:
        raise ValueError(
            f"solver 'ortools': scale={scale:g} gives integer costs up to "
            f"{scale * wmax:.3g}, above what OR-Tools accepts for a graph of "
            f"{graph(min(step, nb)).nodes.size} nodes "
            f"({graph(min(step, nb)).max_cost() * ORTOOLS_COST_MARGIN:.3g}); use a smaller "
            f"scale or leave scale=None (the finest safe one)")

    def solve(chunk: np.ndarray) -> np.ndarray:
        wc = chunk if ex else np.maximum(chunk, 0.0)
        g = graph(chunk.shape[0])
        while True:
            x, status = g.solve(wc, state["scale"])
            if x is not None:
                break
            if status != min_cost_flow.SimpleMinCostFlow.BAD_COST_RANGE:
                raise RuntimeError(f"OR-Tools min cost flow ended with status {status}")
            if scale is not None or state["retries"] >= 3:
                raise ValueError(
                    f"solver 'ortools': OR-Tools rejected the integer costs at "
                    f"scale={state['scale']:g} (BAD_COST_RANGE); use a smaller scale")
            state["scale"] /= _RETRY_FACTOR
            state["retries"] += 1
        if not ex:
            x &= chunk > 0
        tc = time.perf_counter()
        state["failed_blocks"] += int((~_residual_ok(wc, x, n, ex, tol)).sum())
        state["check_seconds"] += time.perf_counter() - tc
        return x

    x, done = solve_blocks(w, solve, lambda c: greedy_mask(c, n, ex), time_limit,
                           elems=ORTOOLS_CHUNK_ELEMS)
    if not ex:
        x &= w > 0  # the greedy fallback's blocks too
    seconds = time.perf_counter() - t0
    info = {"scale": state["scale"], "scale_retries": state["retries"],
            "check_seconds": state["check_seconds"],
            "seconds_without_check": seconds - state["check_seconds"],
            "quantization": "costs = round(-score * scale) as int64"}
    if not done:
        return stopped(problem, x, info)
    mask = problem.unblock(x)
    ok = state["failed_blocks"] == 0
    info["float_check_passed"] = ok
    info["blocks_failing_check"] = state["failed_blocks"]
    if ok:
        return Result(mask, "optimal", None, info, proof="residual graph (float check)")
    # optimal for the rounded costs: each kept entry is off by <= 0.5 / scale
    return Result(mask, "feasible", problem.objective(mask) + n * m * nb / state["scale"],
                  info)


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
