"""Conformance cases for N:M masks: brute force over every 0/1 pattern of each block."""

from __future__ import annotations

from functools import cache
from itertools import product

import numpy as np
from cases import Case

from pruneopt.formulations import NMMask, TransposableNM


@cache
def _all_masks(m: int, n: int, exactly: bool) -> np.ndarray:
    """Every m x m 0/1 matrix (all 2^(m*m)) that satisfies the row/column rule, flattened."""
    pats = np.array(list(product((0, 1), repeat=m * m)), dtype=bool).reshape(-1, m, m)
    rs, cs = pats.sum(axis=2), pats.sum(axis=1)
    ok = ((rs == n) & (cs == n)).all(axis=1) if exactly else ((rs <= n) & (cs <= n)).all(axis=1)
    return pats[ok].reshape(ok.sum(), -1).astype(float)


def brute_block(w: np.ndarray, n: int, exactly: bool) -> float:
    """Best kept score of one m x m block over all 2^(m*m) masks (m <= 4)."""
    return float((_all_masks(w.shape[0], n, exactly) @ w.ravel()).max())


def brute_transposable(problem: TransposableNM) -> float:
    return sum(brute_block(b, problem.n, problem.exactly) for b in problem.blocks())


def brute_nm(problem: NMMask) -> float:
    m, n = problem.m, problem.n
    total = 0.0
    for g in problem.groups(problem.scores):
        best = -np.inf
        for bits in product((0, 1), repeat=m):
            k = sum(bits)
            if (k == n) if problem.exactly else (k <= n):
                best = max(best, float(np.dot(bits, g)))
        total += best
    return total


def _scores(seed: int, shape, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "abs":
        return np.abs(rng.standard_normal(shape))
    if kind == "ties":  # many equal scores and zeros
        return rng.integers(0, 3, size=shape).astype(float)
    return rng.standard_normal(shape)  # signed


CASES = [
    Case(f"transposable-{n}:{m}-{kind}-{'exact' if ex else 'atmost'}",
         make=lambda seed, n=n, m=m, kind=kind, ex=ex: TransposableNM(
             _scores(seed, (2 * m, 2 * m), kind), n, m, exactly=ex),
         brute=brute_transposable)
    for (n, m) in [(2, 4), (1, 4), (3, 4), (1, 3), (2, 3)]
    for kind in ("abs", "ties")
    for ex in (False, True)
] + [
    Case(f"transposable-2:4-signed-{'exact' if ex else 'atmost'}",
         make=lambda seed, ex=ex: TransposableNM(_scores(seed, (8, 8), "signed"), 2, 4,
                                                 exactly=ex),
         brute=brute_transposable)
    for ex in (False, True)
] + [
    Case(f"nm-{n}:{m}-{kind}-{'exact' if ex else 'atmost'}",
         make=lambda seed, n=n, m=m, kind=kind, ex=ex: NMMask(
             _scores(seed, (3, 2 * m), kind), n, m, exactly=ex),
         brute=brute_nm)
    for (n, m) in [(2, 4), (1, 3)]
    for kind in ("abs", "signed")
    for ex in (False, True)
]
