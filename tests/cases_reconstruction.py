"""Conformance cases for layer-wise reconstruction: least squares per row (numpy lstsq on
the data X itself, not on H) and, for the joint problem, every N:M mask of a tiny layer."""

from __future__ import annotations

from itertools import product

import numpy as np
from cases import Case

from pruneopt.formulations import JointReconstruction, MaskedReconstruction
from pruneopt.solvers.nm_enumerate import transposable_patterns


def _layer(seed: int, R: int, C: int, N: int = 12):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, C)) @ rng.normal(size=(C, C))
    return rng.normal(size=(R, C)), X


def lstsq_error(W: np.ndarray, X: np.ndarray, mask: np.ndarray, lam: float) -> float:
    """min over kept weights of ||X (w - W)^T||^2 + lam ||w - W||^2, by stacked lstsq."""
    C = W.shape[1]
    total = 0.0
    for r in range(W.shape[0]):
        S = mask[r]
        A = np.vstack([X[:, S], np.sqrt(lam) * np.eye(C)[:, S]])
        b = np.concatenate([X @ W[r], np.sqrt(lam) * W[r]])
        sol = np.linalg.lstsq(A, b, rcond=None)[0]
        w = np.zeros(C)
        w[S] = sol
        d = w - W[r]
        total += float(d @ (X.T @ X) @ d + lam * d @ d)
    return total


def _lam(X: np.ndarray, damping: float) -> float:
    return damping * float(np.mean(np.diag(X.T @ X)))


def _masked(seed: int) -> MaskedReconstruction:
    W, X = _layer(seed, 5, 6)
    mask = np.random.default_rng(seed + 100).random(W.shape) < 0.5
    p = MaskedReconstruction(W, X.T @ X, mask, damping=0.01)
    p._X = X  # the data, for the brute force only
    return p


def brute_masked(p) -> float:
    return lstsq_error(p.W, p._X, p.mask, _lam(p._X, p.damping))


def _joint(seed: int, transposable: bool) -> JointReconstruction:
    W, X = _layer(seed, 4, 4)
    p = JointReconstruction(W, X.T @ X, 2, 4, transposable=transposable, damping=0.01)
    p._X = X
    return p


def brute_joint(p) -> float:
    lam = _lam(p._X, p.damping)
    if p.transposable:
        masks = transposable_patterns(2, 4, False)
    else:
        rows = [np.array(r, dtype=bool) for r in product((0, 1), repeat=4) if sum(r) <= 2]
        masks = [np.array(c) for c in product(rows, repeat=4)]
    return min(lstsq_error(p.W, p._X, np.asarray(mk, dtype=bool), lam) for mk in masks)


CASES = [
    Case("reconstruction-masked", make=_masked, brute=brute_masked),
    Case("reconstruction-joint-nm", make=lambda s: _joint(s, False), brute=brute_joint),
    Case("reconstruction-joint-transposable", make=lambda s: _joint(s, True), brute=brute_joint),
]
