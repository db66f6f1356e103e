"""Every solver honours ``time_limit`` (within a stated slack) and a time-limited exact solve
is never worse than the heuristic it starts from.

The slack: a solver reads the clock between its steps (chunks of blocks, layers of a DP,
rows of a Pyomo model, CP-SAT/HiGHS's own limit), so it returns within the limit plus one
step and the time to build the problem's data; :data:`SLACK` seconds is generous for these
instances, which take from several seconds to minutes without a limit.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

import pruneopt
from pruneopt.formulations import (
    CoverageSelection,
    CoverSelection,
    LayerBudget,
    MMDSelection,
    TransposableNM,
)

LIMIT = 0.05
SLACK = 3.0


def _instances():
    rng = np.random.default_rng(0)
    digits = load_digits().data
    L, K = 200, 30
    costs = np.sort(rng.uniform(0, 1, (L, K)), axis=1)[:, ::-1]
    errors = np.sort(rng.uniform(0, 1, (L, K)) ** 3, axis=1)
    budget = float(costs.min(1).sum() + 0.3 * (costs.max(1) - costs.min(1)).sum())
    return {
        "nm": TransposableNM(np.abs(rng.standard_normal((256, 256))), 2, 4),
        "coverage": CoverageSelection(digits, keep=30, radius=23.0),
        "cover": CoverSelection(digits[:1500], cover=0.9, radius=23.0),
        "budget": LayerBudget(costs, errors, budget),
        "mmd": MMDSelection(rng.normal(size=(120, 3)), rng.normal(0.3, 1, size=(60, 3)), 30),
    }


INSTANCES = _instances()
CASES = [pytest.param(kind, name, id=f"{kind}-{name}")
         for kind, p in INSTANCES.items() for name in pruneopt.available(p)]


@pytest.fixture(scope="module", autouse=True)
def _warm_imports():
    """Import the backends once, so that an import is not counted as solve time."""
    import highspy  # noqa: F401
    import pyomo.environ  # noqa: F401
    from ortools.sat.python import cp_model  # noqa: F401


@pytest.mark.parametrize(("kind", "solver"), CASES)
def test_time_limit_is_honoured(kind, solver):
    problem = INSTANCES[kind]
    spec = pruneopt.solvers.get_solver(problem, solver)
    if not spec.honours_time_limit:
        with pytest.raises(ValueError, match="time limit"):
            pruneopt.solve(problem, solver=solver, time_limit=LIMIT)
        return
    t0 = time.perf_counter()
    sol = pruneopt.solve(problem, solver=solver, time_limit=LIMIT)
    elapsed = time.perf_counter() - t0
    assert elapsed <= LIMIT + SLACK, (solver, elapsed)
    assert sol.status in ("optimal", "feasible", "time_limit")
    assert sol.decision is not None, sol  # every instance has a fast feasible answer
    problem.check(sol.decision)
    if sol.bound is not None:
        sign = 1.0 if problem.sense == "max" else -1.0
        assert sign * (sol.bound - sol.objective) >= -problem.objective_tolerance(
            sol.objective), sol


@pytest.mark.parametrize("kind", ["coverage", "cover", "budget"])
def test_time_limited_exact_solve_is_never_worse_than_the_heuristic(kind):
    problem = INSTANCES[kind]
    heuristic = {"coverage": "greedy", "cover": "greedy", "budget": "greedy"}[kind]
    ref = pruneopt.solve(problem, solver=heuristic)
    for name in pruneopt.available(problem):
        if pruneopt.solvers.get_solver(problem, name).guarantee != "exact":
            continue
        sol = pruneopt.solve(problem, solver=name, time_limit=0.1)
        assert not problem.better(ref.objective, sol.objective) or abs(
            ref.objective - sol.objective) <= problem.objective_tolerance(ref.objective), (
            name, sol, ref)


def test_cpsat_time_limited_bound_is_a_bound():
    """CP-SAT stopped early reported an upper bound of 0 for max coverage."""
    problem = INSTANCES["coverage"]
    greedy = pruneopt.solve(problem, solver="greedy")
    for limit in (0.01, 0.2):
        sol = pruneopt.solve(problem, solver="cpsat", time_limit=limit)
        assert sol.bound is not None and sol.bound >= greedy.objective  # OPT >= greedy
        assert sol.objective >= greedy.objective


def test_infinite_time_limit_means_none():
    p = MMDSelection(np.random.default_rng(1).normal(size=(8, 2)), np.zeros((3, 2)), 3)
    assert pruneopt.solve(p, solver="scip", time_limit=float("inf")).status == "optimal"
    with pytest.raises(ValueError, match="time_limit"):
        pruneopt.solve(p, solver="scip", time_limit=float("nan"))
