"""Conformance cases for MMD data selection: brute force over every subset (n <= 10).

The brute force recomputes the kernel independently (scipy ``cdist``) from the bandwidth
the problem recorded, and the biased MMD^2 straight from its definition.
"""

from __future__ import annotations

import itertools

import numpy as np
from cases import Case
from scipy.spatial.distance import cdist

from pruneopt.formulations import MMDSelection


def laplace(X, Y):
    """The Laplace kernel exp(-||x - y||_1 / 2) (PSD), as a user callable."""
    return np.exp(-cdist(X, Y, "cityblock") / 2.0)


def energy(X, Y):
    """-||x - y||: not PSD (MMD^2 becomes the energy distance); exercises convexification."""
    return -cdist(X, Y)


def kernel_matrix(problem: MMDSelection, X, Y):
    if problem.kernel_name == "linear":
        return X @ Y.T
    if problem.kernel_name == "rbf":
        return np.exp(-cdist(X, Y, "sqeuclidean") / (2.0 * problem.bandwidth**2))
    return np.asarray(problem.kernel(X, Y))  # the user's callable itself


def brute_mmd(problem: MMDSelection) -> float:
    """min over all keep-subsets of the biased MMD^2, by enumeration."""
    S, T, k = problem.source, problem.target, problem.keep
    Kss = kernel_matrix(problem, S, S)
    cst = kernel_matrix(problem, S, T).mean(1)
    tt = kernel_matrix(problem, T, T).mean()
    best = np.inf
    for sub in itertools.combinations(range(len(S)), k):
        idx = list(sub)
        best = min(best, Kss[np.ix_(idx, idx)].mean() - 2.0 * cst[idx].mean() + tt)
    return float(best)


def shifted(seed, n=10, m=8, d=3, keep=4, **kw):
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(n, d))
    target = rng.normal(size=(m, d)) * 0.8 + 0.6
    return MMDSelection(source, target, keep, **kw)


CASES = [
    Case("mmd-rbf-median", make=lambda s: shifted(s), brute=brute_mmd, seeds=(0, 1, 2)),
    Case("mmd-rbf-narrow", make=lambda s: shifted(10 + s, n=9, keep=3, bandwidth=0.7),
         brute=brute_mmd, seeds=(0, 1)),
    Case("mmd-linear", make=lambda s: shifted(20 + s, n=10, keep=5, kernel="linear"),
         brute=brute_mmd, seeds=(0, 1)),
    Case("mmd-callable", make=lambda s: shifted(30 + s, n=8, keep=2, kernel=laplace),
         brute=brute_mmd, seeds=(0, 1)),
    Case("mmd-energy-indefinite", make=lambda s: shifted(60 + s, n=9, keep=3, kernel=energy),
         brute=brute_mmd, seeds=(0, 1)),
    Case("mmd-keep-all", make=lambda s: shifted(40 + s, n=6, keep=6), brute=brute_mmd,
         seeds=(0,)),
    Case("mmd-keep-one", make=lambda s: shifted(50 + s, n=7, keep=1), brute=brute_mmd,
         seeds=(0,)),
]
