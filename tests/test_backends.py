"""The pinned backends behave: both HiGHS copies load beside OR-Tools, and HiGHS's MIP
answers are right (highspy 1.14.0 returned a wrong "optimal" answer on the instance below)."""

import numpy as np
import pytest
import scipy.sparse as sp

import pruneopt
from pruneopt.formulations import CoverageSelection, TransposableNM
from pruneopt.formulations.standard import MILPForm
from pruneopt.solvers.highs import run_highs


def test_highspy_and_ortools_in_one_process():
    import highspy
    from ortools.graph.python import min_cost_flow  # noqa: F401
    from ortools.sat.python import cp_model  # noqa: F401

    assert highspy.Highs().version()
    p = TransposableNM(np.abs(np.random.default_rng(0).standard_normal((16, 16))), 2, 4)
    assert pruneopt.solve(p, solver="highs").objective == pytest.approx(
        pruneopt.solve(p, solver="ortools").objective, rel=1e-12)


def test_highs_mip_after_presolve_is_right():
    # max 2.599 y0 + 1.429 y1  s.t.  y_i <= x_i,  x0 + x1 <= 1  (choose one point of two)
    c = np.array([0.0, 0.0, 2.59891843, 1.42850813])
    A = sp.csr_array(np.array([[-1.0, 0, 1, 0], [0, -1, 0, 1], [1, 1, 0, 0]]))
    form = MILPForm(c=c, A=A, row_lower=np.full(3, -np.inf), row_upper=np.array([0, 0, 1.0]),
                    lower=np.zeros(4), upper=np.ones(4),
                    integrality=np.array([1, 1, 0, 0], dtype=bool), sense="max",
                    decode=lambda x: x)
    out = run_highs(form.c, form.A, form.row_lower, form.row_upper, form.lower, form.upper,
                    integrality=form.integrality, sense=form.sense)
    assert out.status == "optimal"
    assert out.x[:2].tolist() == [1.0, 0.0]
    assert out.dual_bound == pytest.approx(2.59891843)


def test_the_same_instance_as_a_coverage_problem():
    X = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    p = CoverageSelection(X, budget=1, radius=0.45, weights=[2.59891843, 1.42850813])
    for solver in ("highs", "scipy", "pyomo", "cpsat"):
        sol = pruneopt.solve(p, solver=solver)
        assert sol.status == "optimal" and sol.decision.tolist() == [0], solver


def test_highs_optimal_means_zero_gap():
    """HiGHS's default absolute MIP gap (1e-6) let "optimal" stand for "within 1e-6" (seen on
    a ResNet-50 layer-budget table: bound 0.8744886568 vs a feasible 0.8744879815). With the
    gap closed, every backend's "optimal" equals the exact DP's optimum to 1e-9."""
    from pruneopt.formulations import LayerBudget

    rng = np.random.default_rng(3)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        L, K = 50, 12
        costs = np.sort(rng.uniform(0.0, 1.0, (L, K)), axis=1)[:, ::-1] * 1e-3
        errors = np.sort(rng.uniform(0.0, 1.0, (L, K)) ** 2, axis=1) * 0.02  # ~0.87 in all
        budget = float(costs.min(1).sum() + 0.35 * (costs.max(1) - costs.min(1)).sum())
        p = LayerBudget(costs, errors, budget)
        dp = pruneopt.solve(p, solver="dp")
        for name in ("highs", "scipy", "pyomo"):
            sol = pruneopt.solve(p, solver=name)
            assert sol.status == "optimal", (name, sol)
            assert sol.objective == pytest.approx(dp.objective, rel=1e-9, abs=0), name
            assert sol.bound == sol.objective


def test_cpsat_cover_with_large_scaled_weights_is_right():
    """OR-Tools 9.15's CP-SAT presolve returned OPTIMAL 2 on this set cover with
    coefficients near 1e9, where one point covers enough (found by a randomized comparison
    with brute force). The cover solver scales weights to 1e6 by default."""
    from ortools.sat.python import cp_model

    from pruneopt.formulations import CoverSelection

    rng = np.random.default_rng(797)
    n = int(rng.integers(3, 11))
    f = 10 ** rng.uniform(-6, 6)
    X = rng.normal(size=(n, 2)) * f
    rng.random()
    w = rng.uniform(0, 1, n) * 10.0 ** rng.uniform(-12, 12)
    rng.random()
    p = CoverSelection(X, cover=float(rng.uniform(0.2, 1)), radius=float(rng.uniform(0.3, 1.5)) * f,
                       weights=w)
    assert p.enough(p.covered_weight([3]))  # one point is enough
    sol = pruneopt.solve(p, solver="cpsat")
    assert sol.objective == 1.0 and sol.status == "optimal"
    # the backend itself, with presolve on and off (documents the upstream behaviour)
    G = [[int(j) for j in p.neighbors(i)] for i in range(n)]
    wi = [int(v) for v in np.ceil(w * (1e9 / w.max()))]
    need = int(np.floor(p.required * (1e9 / w.max())))
    found = {}
    for presolve in (True, False):
        m = cp_model.CpModel()
        x = [m.new_bool_var(f"x{j}") for j in range(n)]
        y = [m.new_bool_var(f"y{j}") for j in range(n)]
        for i in range(n):
            m.add(sum(x[j] for j in G[i]) >= y[i])
        m.add(sum(wi[i] * y[i] for i in range(n)) >= need)
        m.minimize(sum(x))
        s = cp_model.CpSolver()
        s.parameters.num_workers = 1
        s.parameters.cp_model_presolve = presolve
        s.solve(m)
        found[presolve] = s.objective_value
    assert found[False] == 1.0  # without presolve CP-SAT is right
