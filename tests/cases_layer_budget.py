"""Conformance cases for LayerBudget: tiny ragged tables, optimum by enumerating every choice."""

from __future__ import annotations

import itertools

import numpy as np
from cases import Case

from pruneopt.formulations import LayerBudget


def brute_layer_budget(problem: LayerBudget) -> float:
    """Least summed error over every combination of levels within the budget."""
    best = np.inf
    for combo in itertools.product(*(range(k) for k in problem.levels)):
        cost = sum(float(c[k]) for c, k in zip(problem.costs, combo, strict=True))
        if cost <= problem.budget + problem.tolerance:
            best = min(best, sum(float(e[k]) for e, k in zip(problem.errors, combo, strict=True)))
    return float(best)


def random_table(seed: int, *, integer: bool = False, max_layers: int = 5,
                 max_levels: int = 5) -> LayerBudget:
    """A ragged table with decreasing error vs cost (plus noise), budget between min and max."""
    rng = np.random.default_rng(seed)
    L = int(rng.integers(2, max_layers + 1))
    costs, errors = [], []
    for _ in range(L):
        K = int(rng.integers(1, max_levels + 1))
        c = np.sort(rng.uniform(0, 10, K))[::-1]
        e = np.sort(rng.uniform(0, 5, K)) + rng.normal(0, 0.5, K)
        if integer:
            c, e = np.round(c), np.round(e * 3)
        costs.append(c)
        errors.append(e)
    lo = sum(c.min() for c in costs)
    hi = sum(c.max() for c in costs)
    budget = lo + rng.uniform(0.2, 0.8) * (hi - lo)
    if integer:
        budget = float(np.floor(budget))
    return LayerBudget(costs, errors, budget)


CASES = [
    Case("layer_budget_float", make=lambda s: random_table(s), brute=brute_layer_budget,
         seeds=(0, 1, 2, 3)),
    Case("layer_budget_integer", make=lambda s: random_table(100 + s, integer=True),
         brute=brute_layer_budget, seeds=(0, 1, 2),
         options={"dp_round": {"buckets": 50}}),
]
