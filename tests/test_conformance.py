"""Every (formulation, solver) pair: feasible answers, exact = brute force, honest bounds."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import pruneopt

CASES = []
for _m in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _m.name.startswith("cases_"):
        CASES.extend(importlib.import_module(_m.name).CASES)

PAIRS = []
for case in CASES:
    problem = case.make(case.seeds[0])
    for name in pruneopt.available(problem):
        PAIRS.append(pytest.param(case, name, id=f"{case.name}-{name}"))


@pytest.mark.parametrize(("case", "solver"), PAIRS)
def test_solver_conforms(case, solver):
    for seed in case.seeds:
        problem = case.make(seed)
        opt = case.brute(problem)
        sol = pruneopt.solve(problem, solver=solver, time_limit=60,
                             **case.options.get(solver, {}))
        tol = case.rel_tol.get(solver, 1e-7) * max(1.0, abs(opt))
        spec = pruneopt.solvers.get_solver(problem, solver)
        assert sol.status in ("optimal", "feasible"), (seed, sol)
        problem.check(sol.decision)  # raises if infeasible
        assert sol.objective == pytest.approx(problem.objective(sol.decision))
        sign = 1.0 if problem.sense == "max" else -1.0
        # nobody beats the optimum
        assert sign * (sol.objective - opt) <= tol, (seed, sol.objective, opt)
        if sol.status == "optimal":
            assert abs(sol.objective - opt) <= tol, (seed, sol.objective, opt)
        if spec.guarantee == "exact":
            assert sol.status == "optimal", (seed, sol)
        if sol.bound is not None:  # a bound is a bound on the true optimum
            assert sign * (sol.bound - opt) >= -tol, (seed, sol.bound, opt)
        if spec.guarantee == "approximation" and spec.ratio is not None and opt != 0:
            if problem.sense == "max":
                assert sol.objective >= opt / spec.ratio - tol
            else:
                assert sol.objective <= opt * spec.ratio + tol
