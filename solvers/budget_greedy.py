"""Convex-hull greedy for :class:`~pruneopt.formulations.LayerBudget`, with its LP bound.

Each layer's levels are reduced to the lower convex hull of its (cost, error) points; the hull
steps of all layers are taken in order of error saved per unit of cost while they fit (a
layer stops at its first step that does not fit). The LP relaxation of the multiple-choice
knapsack takes exactly these steps plus a fraction of the first one that does not fit, so
its Lagrangian value ``sum_l min_k (e + lam d) - lam R`` at the critical slope ``lam`` is
returned as a proven lower bound (less the rounding of its sums; rounded up when every error
is an integer). O(sum_l K_l log(sum_l K_l)) time, in the compiled kernels of
:mod:`~pruneopt.solvers.budget_frontier`.
"""

from __future__ import annotations

import numpy as np

from pruneopt.formulations.layer_budget import LayerBudget
from pruneopt.solvers.budget_dp import Flat, Proof, lp_bound
from pruneopt.solvers.registry import Result, register


@register("greedy", LayerBudget, guarantee="heuristic", requires=("numba",), package="numba")
def greedy_solver(problem: LayerBudget, time_limit: float | None) -> Result:
    """Convex-hull greedy (LP relaxation rounded down), with the LP bound."""
    flat = Flat.of(problem)
    choice, _, lp, lam = lp_bound(flat, np.ones(flat.d.size, dtype=np.bool_))
    proof = Proof(problem, flat, lam)
    levels = flat.levels(choice)
    ub = problem.objective(levels)
    lb = min(proof.bound(lp), ub)
    info = {"lp_bound": lp, "lambda": lam}
    if proof.closed(ub, lb):
        return Result(levels, "optimal", lb, info, proof="LP bound meets the answer")
    return Result(levels, "feasible", lb, info)
