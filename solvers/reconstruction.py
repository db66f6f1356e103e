"""Solvers for layer-wise reconstruction (:mod:`pruneopt.formulations.reconstruction`).

- ``"normal-equations"`` (:class:`MaskedReconstruction`, exact): each row's kept weights
  solve ``(H_d)_SS delta_S = (H_d)_ST W_T``, ``w_S = W_S + delta_S`` (Cholesky of the
  damped ``H_d``, positive definite); rows that share a support share one factorization.
  The objective is convex and the normal equations are its optimality conditions, so the
  answer is the optimum (up to float rounding of the solve). ``time_limit`` is read between
  groups of rows; the rows left keep their masked dense weights (``"time_limit"``).
- ``"mask-refit"`` (:class:`JointReconstruction`, heuristic): the exact N:M (transposable)
  mask for a saliency (``score``: "obs", "wanda" or "magnitude"), then the exact refit above.
- ``"sparsegpt"`` (:class:`JointReconstruction`, heuristic): SparseGPT (Frantar & Alistarh
  2023) — columns left to right in blocks, each weight's pruning error pushed onto the
  columns to its right through the Cholesky factor of ``H_d^{-1}``; every slab of m columns
  gets its mask from the OBS scores ``w^2 / [H_d^{-1}]_jj`` of the current weights, chosen
  exactly (top-n per row, or the optimal transposable mask of each m x m block of the slab
  by the N:M solvers). ``refit=True`` (default) finishes with the exact refit on the final
  mask, which can only lower the error.
"""

from __future__ import annotations

import time

import numpy as np

from pruneopt.formulations.geometry import one_blas_thread
from pruneopt.formulations.reconstruction import (
    SCORES,
    JointReconstruction,
    MaskedReconstruction,
    saliency,
)
from pruneopt.solvers.options import Boolean, Check, Integer, OneOf
from pruneopt.solvers.registry import Result, register, solve


def refit_rows(W: np.ndarray, Hd: np.ndarray, mask: np.ndarray,
               deadline: float | None = None, chunk_bytes: int = 1 << 27
               ) -> tuple[np.ndarray, bool]:
    """The exact kept weights for ``mask`` (see the module docstring): ``(weights, done)``;
    ``done`` is False when ``deadline`` stopped it (the rest keep ``W * mask``).

    Rows are grouped by support; the supports of one size are solved as stacked batches
    (``numpy.linalg.solve`` on (B, k, k) systems, at most ``chunk_bytes`` at once), each
    support's system once for all the rows that share it."""
    with one_blas_thread():  # many small LAPACK calls: 20x faster on one thread than two
        return _refit_rows(W, Hd, mask, deadline, chunk_bytes)


def _refit_rows(W, Hd, mask, deadline, chunk_bytes):
    R, C = W.shape
    out = np.where(mask, W, 0.0)
    # (H_d)_ST W_T for every row at once: the pull of each row's pruned weights on its kept
    # inputs, (W * ~mask) H_d (H_d is symmetric); a row's right-hand side is Y[r, S_r]
    Y = np.where(mask, 0.0, W) @ Hd
    _, first, group = np.unique(np.packbits(mask, axis=1), axis=0, return_index=True,
                                return_inverse=True)
    group = group.ravel()
    members = np.split(np.argsort(group, kind="stable"),
                       np.cumsum(np.bincount(group, minlength=len(first)))[:-1])
    sizes = mask[first].sum(axis=1)
    for k in np.unique(sizes):
        if k in (0, C):  # nothing kept, or nothing pruned: nothing to refit
            continue
        gids = np.flatnonzero(sizes == k)
        step = max(1, int(chunk_bytes // (8 * k * k)))
        for c0 in range(0, len(gids), step):
            if deadline is not None and time.perf_counter() > deadline:
                return out, False
            gs = gids[c0:c0 + step]
            S = np.stack([np.flatnonzero(mask[first[g]]) for g in gs])  # (B, k)
            A = Hd[S[:, :, None], S[:, None, :]]  # (B, k, k)
            rows = [members[g] for g in gs]
            width = max(len(r) for r in rows)
            rhs = np.zeros((len(gs), k, width))
            for b, r in enumerate(rows):
                rhs[b, :, :len(r)] = Y[r[:, None], S[b][None, :]].T
            delta = np.linalg.solve(A, rhs)
            for b, r in enumerate(rows):
                out[r[:, None], S[b][None, :]] += delta[b, :, :len(r)].T
    return out, True


@register("normal-equations", MaskedReconstruction, guarantee="exact")
def normal_equations_solver(problem: MaskedReconstruction, time_limit: float | None) -> Result:
    """Closed-form least squares on the kept weights of every row (Cholesky)."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    w, done = refit_rows(problem.W, problem.Hd, problem.mask, deadline)
    if not done:
        return Result(w, "time_limit", None, {})
    return Result(w, "optimal", None, {}, proof="normal equations of a convex QP")


def _slab_mask(scores: np.ndarray, n: int, m: int, transposable: bool) -> np.ndarray:
    """The best mask of one slab (R, m) of scores: top-n per row, or the exact transposable
    mask of each m x m block of rows."""
    if not transposable:
        keep = np.zeros(scores.shape, dtype=bool)
        idx = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        np.put_along_axis(keep, idx, True, axis=1)
        return keep
    from pruneopt.formulations.nm import TransposableNM

    return np.asarray(solve(TransposableNM(scores, n, m)).decision, dtype=bool)


def sparsegpt(W: np.ndarray, Hd: np.ndarray, n: int, m: int, *, transposable: bool = False,
              blocksize: int = 128) -> np.ndarray:
    """SparseGPT's joint N:M mask and weight update (module docstring); returns the weights."""
    R, C = W.shape
    W = W.astype(np.float64, copy=True)
    # upper Cholesky factor U of H_d^{-1} (H_d^{-1} = U^T U), as in the reference code
    Hinv = np.linalg.inv(Hd)
    U = np.linalg.cholesky(0.5 * (Hinv + Hinv.T)).T
    blocksize = max(m, blocksize - blocksize % m)
    for i1 in range(0, C, blocksize):
        i2 = min(i1 + blocksize, C)
        W1 = W[:, i1:i2].copy()
        E1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        keep = np.ones(W1.shape, dtype=bool)
        for i in range(i2 - i1):
            if i % m == 0:
                d = np.diag(U1)[i:i + m]
                keep[:, i:i + m] = _slab_mask(W1[:, i:i + m] ** 2 / d[None, :] ** 2, n, m,
                                              transposable)
            w = W1[:, i]
            q = np.where(keep[:, i], w, 0.0)
            err = (w - q) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            W1[:, i] = q
            E1[:, i] = err
        W[:, i1:i2] = W1
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return W


@register("sparsegpt", JointReconstruction, guarantee="heuristic",
          options={"blocksize": Integer(1, None), "refit": Boolean()})
def sparsegpt_solver(problem: JointReconstruction, time_limit: float | None, *,
                     blocksize: int = 128, refit: bool = True) -> Result:
    """SparseGPT with an exact mask per slab of m columns, then (``refit``) the exact refit.

    ``time_limit``: the column sweep runs to its end (one pass, O(R C^2)); the refit reads
    the clock between groups of rows."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    w = sparsegpt(problem.W, problem.Hd, problem.n, problem.m,
                  transposable=problem.transposable, blocksize=blocksize)
    info = {"sparsegpt_error": problem.error(w)}
    status = "feasible"
    if refit:
        w2, done = refit_rows(problem.W, problem.Hd, w != 0, deadline)
        status = "feasible" if done else "time_limit"
        if problem.error(w2) <= info["sparsegpt_error"]:
            w = w2
    return Result(w, status, 0.0, info)


@register("mask-refit", JointReconstruction, guarantee="heuristic",
          options={"score": OneOf(*SCORES), "mask_solver": Check(
              lambda v: None if isinstance(v, str) else "must be a solver name",
              "a solver name (of the N:M mask problem) or None", allow_none=True)})
def mask_refit_solver(problem: JointReconstruction, time_limit: float | None, *,
                      score: str = "obs", mask_solver: str | None = None) -> Result:
    """The exact N:M mask for a saliency, then the exact refit of the kept weights."""
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    scores = saliency(problem.W, problem.H, score, damping=problem.damping)
    mask_sol = solve(problem.mask_problem(scores), solver=mask_solver, time_limit=time_limit)
    mask = np.asarray(mask_sol.decision, dtype=bool)
    w, done = refit_rows(problem.W, problem.Hd, mask, deadline)
    info = {"mask_status": mask_sol.status, "mask_solver": mask_sol.solver,
            "masked_error": problem.error(np.where(mask, problem.W, 0.0))}
    return Result(w, "feasible" if done else "time_limit", 0.0, info)
