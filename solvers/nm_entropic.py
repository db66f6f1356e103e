"""Entropic optimal transport for transposable N:M masks (TSENOR-style), with rounding,
repair and a proven Lagrangian bound.

``"entropic"``: every m x m block is an independent b-matching whose LP relaxation is
integral (the constraint matrix is totally unimodular)::

    max <W, X>  s.t.  X 1 (<= or =) n,  X^T 1 (<= or =) n,  0 <= X <= 1.

1. **Entropic dual.** Regularized by ``tau_k * sum X (log X - 1)`` with the box ``X <= 1``
   kept as a hard constraint, the optimal X for row prices u and column prices v is
   ``X_ij = min(1, exp((w_ij - u_i - v_j) / tau_k))`` (the box multiplier eliminated in
   closed form). Exact block coordinate ascent on the dual (what Dykstra's alternating
   KL projections on {X 1 = n}, {X^T 1 = n}, {X <= 1} converge to, one projection at a
   time): each row price solves ``sum_j min(1, alpha e_j) = n`` for ``alpha = exp(-u_i /
   tau)`` exactly (a capped-simplex scaling, a few passes over the row), then each column
   likewise. For "at most n" the prices are those of the exact-n relaxation of
   ``max(W, 0)`` (a block's zeros fill lines for free; measured, they round to 10x smaller
   losses and converge faster than an ascent with prices kept >= 0),
   then shifted to ``(u + c, v - c)`` with ``c = -min u`` (the Lagrangian is unchanged) and
   clipped at 0 for step 2. The temperature is annealed from the block's largest |score|
   down to ``tau`` times it (by :data:`ANNEAL` per stage of :data:`STAGE_SWEEPS` sweeps);
   each stage starts with one exponential per entry, the sweeps inside a stage are
   multiplications only.
   Everything runs on the block divided by its largest |score|, so scores times c > 0 give
   the same mask (up to float rounding of the division, 1 ulp, which decides only exact
   near-ties).
2. **Bound.** For any prices (u, v >= 0 for "at most", free for exactly) the Lagrangian
   ``L(u, v) = n sum u + n sum v + sum_ij max(0, w_ij - u_i - v_j)`` is an upper bound of the
   LP, hence of the integer optimum (weak duality; the LP is integral). The entropic prices
   are improved by one exact block minimization of L: ``v_j`` = the n-th largest of
   ``w_ij - u_i`` over i (clipped at 0 for "at most"), then ``u_i`` likewise.
3. **Rounding.** Greedy on the reduced scores ``w_ij - u_i - v_j`` of the entropic prices
   (largest first, ties by position; the improved prices of step 2 put many reduced scores
   at exactly 0, ties that round worse): keep an entry while its row and column keep fewer
   than n (and, "at most", its score is > 0); only entries with reduced score above
   ``-8 tau`` are sorted (the others' fractional value is below 3e-4).
4. **Repair.** Best-gain augmenting paths in the block's residual graph (row with room ->
   unkept entry -> column -> kept entry -> row ... -> column with room, every node in one
   BFS layer, so the path is simple) until every row and column keeps n (exactly: such a
   path exists while any line is short, so the mask is always valid) or, "at most", while a
   path gains.

``info["kept_ratio_vs_bound"]`` is kept score / bound (a lower bound of kept / optimum),
``info["gap"]`` the bound minus the kept score over the bound. Status ``"optimal"`` only
when the bound meets the kept score within the problem's tolerance (proof "bound meets
objective"), else ``"feasible"``. Heuristic: there is no ratio guarantee.

:func:`entropic_blocks` runs on NumPy arrays (the Numba kernels of
:mod:`pruneopt.solvers.entropic_ot_kernels`, imported on first use, one block at a time in
cache);
:func:`entropic_blocks_torch` is the same algorithm on a torch tensor of blocks, on its
device (written with tensor methods only, so this module does not import torch).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from pruneopt.formulations.nm import TransposableNM
from pruneopt.solvers.nm_blocks import block_chunks
from pruneopt.solvers.options import Integer, Real
from pruneopt.solvers.registry import Result, register

#: Defaults of the options (relative final temperature, sweeps, row-violation tolerance).
TAU = 0.01
ITERATIONS = 10
TOLERANCE = 1e-2
ANNEAL = 0.3  # temperature ratio between stages
STAGE_SWEEPS = 2  # sweeps per stage above the final temperature
EXP_HI = 40.0  # the torch path clips exponents to [EXP_LO, EXP_HI], like the kernels
EXP_LO = -700.0
ROUND_CUT = 8.0  # the rounding considers entries with reduced score > -ROUND_CUT * tau


def entropic_blocks(w: np.ndarray, n: int, exactly: bool, *, tau: float = TAU,
                    iterations: int = ITERATIONS,
                    tolerance: float = TOLERANCE, anneal: float = ANNEAL,
                    stage_sweeps: int = STAGE_SWEEPS) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                           dict[str, int]]:
    """Masks for the blocks ``w`` (B, m, m): ``(mask, bound, kept, counts)``.

    ``mask`` (B, m, m) bool is always valid (n per row and column with ``exactly``, at most
    n and only positive scores otherwise); ``bound[b] >= `` the optimum of block b;
    ``kept[b]`` its kept score; ``counts``: total ``sweeps`` and repair ``paths``.
    """
    w = np.ascontiguousarray(w, dtype=np.float64)
    nb = w.shape[0]
    x = np.zeros(w.shape, dtype=bool)
    bound, kept = np.empty(nb), np.empty(nb)
    sweeps, repairs = np.empty(nb, dtype=np.int64), np.empty(nb, dtype=np.int64)
    if nb:
        from pruneopt.solvers.entropic_ot_kernels import solve_blocks_entropic

        solve_blocks_entropic(w, int(n), bool(exactly), float(tau), int(iterations),
                              float(tolerance), float(anneal), int(stage_sweeps), x, bound,
                              kept, sweeps, repairs)
    return x, bound, kept, {"sweeps": int(sweeps.sum()), "paths": int(repairs.sum())}


@register("entropic", TransposableNM, guarantee="heuristic", requires=("numba",),
          package="numba", options={"tau": Real(1e-4, 1.0), "iterations": Integer(0, 100_000),
                   "tolerance": Real(0.0, 1.0)})
def entropic_solver(problem: TransposableNM, time_limit: float | None, *, tau: float = TAU,
                    iterations: int = ITERATIONS, tolerance: float = TOLERANCE) -> Result:
    """Annealed entropic OT (exact Sinkhorn/Dykstra coordinate ascent) per block, greedy
    rounding on the reduced scores, augmenting-path repair, and the Lagrangian bound.

    ``tau``: final temperature relative to each block's largest |score|; ``iterations``:
    largest number of sweeps (row and column updates) per block; ``tolerance``: stop a
    block at the final temperature once every row sum is within ``tolerance * n``.
    ``time_limit``: read between chunks of blocks; once passed, the remaining blocks get
    no sweeps (greedy on the scores themselves, repaired, bounded) and the status is
    ``"time_limit"``.
    """
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    w = problem.blocks()
    x = np.empty(w.shape, dtype=bool)
    bound = 0.0
    counts = {"sweeps": 0, "paths": 0}
    late = False
    for sl in block_chunks(w.shape[0], problem.m):
        late = late or (deadline is not None and time.perf_counter() > deadline)
        xs, bs, _, cs = entropic_blocks(w[sl], problem.n, problem.exactly, tau=tau,
                                        iterations=0 if late else iterations,
                                        tolerance=tolerance)
        x[sl] = xs
        bound += float(bs.sum())
        for k in counts:
            counts[k] += cs[k]
    mask = problem.unblock(x)
    kept = problem.objective(mask)
    info: dict[str, Any] = {"sweeps_per_block": counts["sweeps"] / max(1, w.shape[0]),
                            "repair_paths": counts["paths"], "lagrangian_bound": bound,
                            "kept_ratio_vs_bound": kept / bound if bound > 0 else 1.0,
                            "gap": (bound - kept) / abs(bound) if bound != 0 else 0.0}
    if late:
        return Result(mask, "time_limit", bound, info)
    if bound - kept <= problem.objective_tolerance(kept):
        return Result(mask, "optimal", bound, info, proof="bound meets objective")
    return Result(mask, "feasible", bound, info)


# ------------------------------------------------------------------------ torch tensors


def _cap_scale_lines(e: Any, n: int, dim: int) -> Any:
    """:func:`~pruneopt.solvers.entropic_ot_kernels.cap_scale` (no upper limit) for every
    line of ``e`` (B, m, m) along ``dim`` at once, exactly, by sorting: with the line sorted
    decreasingly and ``S_k`` the sum of its entries from rank k on, the root is
    ``alpha_k = (n - k) / S_k`` for the k (< n) with ``alpha_k e_(k-1) >= 1 >= alpha_k e_(k)``.
    """
    m = e.shape[dim]
    es = e.sort(dim=dim, descending=True).values
    tail = es.flip(dim).cumsum(dim).flip(dim)  # S_k
    shape = [1, 1, 1]
    shape[dim] = m
    k = es.new_ones(m).cumsum(0).sub(1.0).reshape(shape)
    a = (n - k) / tail.clamp_min(1e-300)
    prev = es.roll(1, dims=dim).where(k > 0, float("inf"))
    ok = (a * prev >= 1.0) & (a * es <= 1.0) & (k < n)  # <=: ties at a breakpoint
    root = a.where(ok, float("inf")).amin(dim=dim, keepdim=True)
    first = a.narrow(dim, 0, 1)  # float ties left no rank valid: the start from below
    root = root.where(root < float("inf"), first)
    npos = (es > 0).sum(dim=dim, keepdim=True)
    emin = es.where(es > 0, float("inf")).amin(dim=dim, keepdim=True)
    return root.where(npos > n, 1.0 / emin)  # n or fewer positive: cap them all


def entropic_blocks_torch(w: Any, n: int, exactly: bool, *, tau: float = TAU,
                          iterations: int = ITERATIONS) -> Any:
    """The steps of :func:`entropic_blocks` on a torch tensor of blocks (B, m, m), on its
    device (CPU or CUDA): a bool tensor (B, m, m) on the same device, always a valid mask.

    Fixed sweep counts (no data-dependent stopping, so nothing waits on the device); the
    capped scaling is solved exactly by sorting each line. The rounding is the greedy on
    the reduced scores over every entry, one step per entry rank over all blocks at once;
    the repair (augmenting paths, sequential) runs on the CPU for the blocks that have a row
    and a column with room, and their masks go back to the device.
    Float32 on CUDA (float32 input), float64 otherwise. Written with tensor methods only:
    this module never imports torch. The CUDA branch is untested here (no GPU).
    """
    dt = w.dtype if w.is_cuda and w.element_size() == 4 else None
    w = w.detach().float() if dt is not None else w.detach().double()
    lo = -80.0 if dt is not None else EXP_LO
    nb, m, _ = w.shape
    if nb == 0:
        return w.new_zeros(w.shape).bool()
    big = w.abs().amax(dim=(1, 2), keepdim=True)
    scale = big.where(big > 0, 1.0)
    wb = w / scale
    wp = wb if exactly else wb.clamp_min(0.0)  # "at most": exact-n prices of max(w, 0)
    u = wb.new_zeros((nb, m, 1))
    v = wb.new_zeros((nb, 1, m))
    t, done = max(1.0, tau), 0
    while done < iterations:
        final = t <= tau
        K = ((wp - u - v) / t).clamp(lo, EXP_HI).exp()
        alpha, beta = u.new_ones(u.shape), v.new_ones(v.shape)
        sweeps = iterations - done if final else min(STAGE_SWEEPS, iterations - done)
        for _ in range(sweeps):
            alpha = _cap_scale_lines(K * beta, n, 2)
            beta = _cap_scale_lines(K * alpha, n, 1)
            done += 1
        u = u - t * alpha.log()
        v = v - t * beta.log()
        if final:
            break
        t = max(tau, t * ANNEAL)
    red = (wb - u - v).reshape(nb, m * m)
    vals, order = red.sort(dim=1, descending=True, stable=True)
    cut = -ROUND_CUT * tau  # as the kernels: far-negative entries are left to the repair
    base = order.new_tensor(range(nb)).unsqueeze(1)
    ent, row, col = base * m * m + order, base * m + order // m, base * m + order % m
    rowc = order.new_zeros(nb * m)
    colc = order.new_zeros(nb * m)
    x = order.new_zeros(nb * m * m).bool()
    wf = wb.reshape(-1)
    for k in range(m * m):  # the greedy, one entry rank at a time over every block
        r, c, e = row[:, k], col[:, k], ent[:, k]
        take = (rowc[r] < n) & (colc[c] < n) & (vals[:, k] > cut)
        if not exactly:
            take &= wf[e] > 0
        x[e] = take
        rowc[r] += take.long()
        colc[c] += take.long()
    x = x.reshape(nb, m, m)
    # the repair (augmenting paths) on the CPU, for the blocks with a row and a column
    # that both have room (exactly: must be filled; "at most": may gain)
    short = ((x.sum(dim=2) < n).any(dim=1) & (x.sum(dim=1) < n).any(dim=1)).nonzero().flatten()
    if short.numel():
        from pruneopt.solvers.entropic_ot_kernels import repair_blocks

        xs = np.ascontiguousarray(x[short].cpu().numpy())
        repair_blocks(np.ascontiguousarray(w[short].cpu().numpy(), dtype=np.float64), int(n),
                      bool(exactly), xs)
        x[short] = x.new_tensor(xs)
    return x
