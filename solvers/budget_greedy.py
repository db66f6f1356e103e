"""Convex-hull greedy for :class:`~pruneopt.formulations.LayerBudget`, with its LP bound.

Each layer's levels are reduced to the lower convex hull of its (cost, error) points; the hull
steps of all layers are taken in order of error saved per unit of cost while they fit (a
layer stops at its first step that does not fit). The LP relaxation of the multiple-choice
knapsack takes exactly these steps plus a fraction of the first one that does not fit, so
its value is returned as a proven lower bound. O(sum_l K_l log(sum_l K_l)) time.
"""

from __future__ import annotations

from pruneopt.formulations.layer_budget import LayerBudget
from pruneopt.solvers.budget_dp import gap_closed, levels_of, lp_greedy, reduce, value_of
from pruneopt.solvers.registry import Result, register


@register("greedy", LayerBudget, guarantee="heuristic")
def greedy_solver(problem: LayerBudget, time_limit: float | None) -> Result:
    """Convex-hull greedy (LP relaxation rounded down), with the LP bound."""
    red = reduce(problem)
    pos, lb, lam, info = lp_greedy(red)
    ub = value_of(red, pos)
    info = {"lp_bound": lb, "lambda": lam, **info}
    lb = min(lb, ub)
    if gap_closed(ub, lb, red.scale):
        return Result(levels_of(red, pos), "optimal", lb, info, proof="LP bound meets the answer")
    return Result(levels_of(red, pos), "feasible", lb, info)
