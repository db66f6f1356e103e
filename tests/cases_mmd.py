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
    """min over all feasible keep-subsets (per-class counts included) of the biased MMD^2,
    by enumeration."""
    S, T = problem.source, problem.target
    Kss = kernel_matrix(problem, S, S)
    cst = kernel_matrix(problem, S, T).mean(1)
    tt = kernel_matrix(problem, T, T).mean()
    best = np.inf
    for idx in subsets(problem):
        best = min(best, Kss[np.ix_(idx, idx)].mean() - 2.0 * cst[idx].mean() + tt)
    return float(best)


def subsets(problem: MMDSelection):
    """Every feasible kept set: all keep-subsets, or with classes the product over classes of
    the k_c-subsets of each class (labels and counts read from what the user passed:
    ``problem.labels`` and ``problem.quota`` aligned with ``problem.classes``)."""
    n, k = problem.n, problem.keep
    if not problem.class_constrained:
        yield from (list(s) for s in itertools.combinations(range(n), k))
        return
    labels = np.asarray(problem.labels)
    per = [itertools.combinations(np.flatnonzero(labels == cls).tolist(), int(q))
           for cls, q in zip(problem.classes, problem.quota, strict=True)]
    for combo in itertools.product(*per):
        yield [i for part in combo for i in part]


def labelled(seed, n=10, m=8, d=3, keep=None, labels=None, **kw):
    """A shifted instance whose source has classes; the target over-represents class 0."""
    rng = np.random.default_rng(seed)
    labels = np.array(labels if labels is not None else [i % 3 for i in range(n)])
    _, code = np.unique(labels, return_inverse=True)
    centres = rng.normal(scale=1.5, size=(code.max() + 1, d))
    source = centres[code] + rng.normal(size=(n, d))
    target = np.vstack([centres[0] + rng.normal(size=(m // 2, d)),
                        centres[1 + np.arange(m - m // 2) % (len(centres) - 1)]
                        + rng.normal(size=(m - m // 2, d))]) * 0.9 + 0.3
    return MMDSelection(source, target, keep, labels=labels, **kw)


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
    # class-aware selection: one count per class (sum over class c of x_i = k_c)
    Case("mmd-classes-rbf", make=lambda s: labelled(70 + s, class_keep={0: 2, 1: 1, 2: 2}),
         brute=brute_mmd, seeds=(0, 1, 2)),
    Case("mmd-classes-zero-quota", make=lambda s: labelled(80 + s, n=9,
                                                         class_keep={0: 3, 2: 1}),
         brute=brute_mmd, seeds=(0, 1)),
    Case("mmd-classes-whole-class",  # a class kept whole, one with a single point
         make=lambda s: labelled(90 + s, n=8, labels=[0, 0, 0, 1, 1, 1, 1, 2],
                                 class_keep={0: 3, 1: 1, 2: 0}), brute=brute_mmd, seeds=(0,)),
    Case("mmd-classes-linear", make=lambda s: labelled(100 + s, keep=4, class_mix="source",
                                                     kernel="linear"),
         brute=brute_mmd, seeds=(0, 1)),
    Case("mmd-classes-energy-indefinite",
         make=lambda s: labelled(110 + s, n=9, keep=4, class_mix={0: 0.5, 1: 0.25, 2: 0.25},
                                 kernel=energy), brute=brute_mmd, seeds=(0, 1)),
    Case("mmd-classes-string-labels",
         make=lambda s: labelled(120 + s, n=9, labels=list("abcabcaab"),
                                 class_keep={"a": 2, "b": 1, "c": 1}, bandwidth=0.8),
         brute=brute_mmd, seeds=(0, 1)),
]
