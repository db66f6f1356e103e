"""Conformance cases for the coverage coresets: brute force over all subsets (tiny n).

The brute force computes neighbourhoods from coordinate differences, independently of the
formulation's radius graph.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from cases import Case

from pruneopt.formulations.coverage import CoverageSelection, CoverSelection


def _points(seed: int, n: int, d: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def _radius(X: np.ndarray, q: float) -> float:
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    return float(np.quantile(D[np.triu_indices(len(X), 1)], q))


def _cover_matrix(p) -> np.ndarray:
    X = p.features
    D2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    return D2 <= p.radius ** 2


def brute_max(p: CoverageSelection) -> float:
    M = _cover_matrix(p)
    w = p.weights
    k = min(p.budget, p.n)
    return max(float(w[M[list(S)].any(axis=0)].sum())
               for S in itertools.combinations(range(p.n), k))


def brute_cover(p: CoverSelection) -> float:
    M = _cover_matrix(p)
    w = p.weights
    need = math.ceil(p.cover * w.sum() - 1e-9)  # integer weights in these cases
    for s in range(1, p.n + 1):
        for S in itertools.combinations(range(p.n), s):
            if w[M[list(S)].any(axis=0)].sum() >= need:
                return float(s)
    raise AssertionError("unreachable: all points cover everything")


def _max_unweighted(seed: int) -> CoverageSelection:
    X = _points(seed, 10, 2)
    return CoverageSelection(X, budget=3, radius=_radius(X, 0.15))


def _max_weighted(seed: int) -> CoverageSelection:
    X = _points(100 + seed, 9, 12)  # 12-D: the blocked graph builder
    w = np.random.default_rng(seed).integers(1, 6, size=9)
    return CoverageSelection(X, budget=2, radius=_radius(X, 0.25), weights=w)


def _cover_full(seed: int) -> CoverSelection:
    X = _points(200 + seed, 10, 2)
    return CoverSelection(X, radius=_radius(X, 0.2), cover=1.0)


def _cover_partial(seed: int) -> CoverSelection:
    X = _points(300 + seed, 10, 3)
    w = np.random.default_rng(seed).integers(1, 4, size=10)
    return CoverSelection(X, radius=_radius(X, 0.2), cover=0.7, weights=w)


CASES = [
    Case("coverage-max", make=_max_unweighted, brute=brute_max),
    Case("coverage-max-weighted", make=_max_weighted, brute=brute_max),
    Case("coverage-setcover", make=_cover_full, brute=brute_cover),
    Case("coverage-partial-weighted", make=_cover_partial, brute=brute_cover),
]
