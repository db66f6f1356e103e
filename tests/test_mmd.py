"""MMD data selection: the formulation, its exports, the bound and the solvers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from cases_mmd import brute_mmd, energy, shifted
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import pdist

import pruneopt
from pruneopt.formulations import MMDSelection
from pruneopt.solvers import mmd_heuristics
from pruneopt.solvers.mmd_heuristics import relaxation

# ----------------------------------------------------------------------------- bad input


def data(n=8, m=5, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep": 0}, "keep must be >= 1"),
        ({"keep": -3}, "keep must be >= 1"),
        ({"keep": 9}, "keep must be <= 8"),
        ({"keep": 2.5}, "keep must be an integer"),
        ({"bandwidth": 0.0}, "bandwidth must be a finite number > 0"),
        ({"bandwidth": -1.0}, "bandwidth must be a finite number > 0"),
        ({"bandwidth": float("inf")}, "bandwidth must be a finite number > 0"),
        ({"bandwidth": "mean"}, "bandwidth must be 'median' or a positive number"),
        ({"kernel": "poly"}, "kernel must be 'rbf', 'linear' or a callable"),
    ],
)
def test_bad_parameters(kwargs, match):
    S, T = data()
    args = {"keep": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        MMDSelection(S, T, **args)


def test_bad_arrays():
    S, T = data()
    with pytest.raises(ValueError, match="different feature dimensions"):
        MMDSelection(S, np.ones((4, 3)), 2)
    with pytest.raises(ValueError, match="target is empty"):
        MMDSelection(S, np.ones((0, 2)), 2)
    with pytest.raises(ValueError, match="source is empty"):
        MMDSelection(np.ones((0, 2)), T, 1)
    bad = S.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        MMDSelection(bad, T, 2)
    bad = T.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        MMDSelection(S, bad, 2)
    with pytest.raises(ValueError, match="2-D"):
        MMDSelection(np.ones((2, 2, 2)), T, 1)
    with pytest.raises(ValueError, match="shape"):
        MMDSelection(S, T, 2, kernel=lambda X, Y: np.ones((len(X), 1))).objective([0, 1])


def test_check_rejects_bad_decisions():
    p = MMDSelection(*data(), 3)
    for bad, match in [([0, 1], "keeps 2"), ([0, 1, 1], "duplicates"), ([0, 1, 8], r"\[0, 8\)"),
                       ([-1, 0, 1], r"\[0, 8\)"), ([0.5, 1, 2], "integers"),
                       (np.ones(5, dtype=bool), "shape")]:
        with pytest.raises(ValueError, match=match):
            p.check(bad)
    mask = np.zeros(8, dtype=bool)
    mask[[6, 1, 3]] = True
    assert p.check(mask).tolist() == [1, 3, 6]
    assert p.check(torch.tensor([6, 3, 1])).tolist() == [1, 3, 6]
    assert p.mask([1, 3, 6]).tolist() == mask.tolist()


# ----------------------------------------------------------------------------- the math


def test_objective_matches_definition_and_inputs_untouched():
    S, T = data(n=12, m=7, d=3, seed=3)
    St = torch.tensor(S)
    before = St.clone()
    p = MMDSelection(St, T, 5)
    assert torch.equal(St, before)
    pooled = np.vstack([S, T])
    assert p.bandwidth == pytest.approx(np.median(pdist(pooled)))
    idx = [0, 2, 5, 7, 11]
    bw = p.bandwidth

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * bw**2))

    ss = np.mean([k(S[i], S[j]) for i in idx for j in idx])
    st = np.mean([k(S[i], t) for i in idx for t in T])
    tt = np.mean([k(a, b) for a in T for b in T])
    assert p.objective(idx) == pytest.approx(ss - 2 * st + tt, rel=1e-12)
    # the quadratic form agrees with the objective on binary points
    K, c, tt2 = p.quadratic()
    x = np.zeros(12)
    x[idx] = 1
    assert x @ K @ x / 25 - 2 * c @ x / 5 + tt2 == pytest.approx(p.objective(idx), rel=1e-12)
    assert "x_i in {0, 1}" in p.math() and "convex QP" in p.math()
    assert p._repr_latex_().startswith("$$")


def test_linear_kernel_is_mean_difference():
    S, T = data(n=9, m=6, d=4, seed=5)
    p = MMDSelection(S, T, 4, kernel="linear")
    assert p.bandwidth is None
    idx = [1, 2, 4, 8]
    diff = S[idx].mean(0) - T.mean(0)
    assert p.objective(idx) == pytest.approx(diff @ diff, rel=1e-10)


def test_fixed_bandwidth_recorded_and_large_blocks():
    rng = np.random.default_rng(0)
    S, T = rng.normal(size=(2300, 2)), rng.normal(size=(200, 2))
    p = MMDSelection(S, T, 2100, bandwidth=1.5)  # 2100 > BLOCK: sums in blocks
    assert p.bandwidth == 1.5
    idx = np.arange(2100)
    Ks = np.exp(-((S[idx, None] - S[None, idx]) ** 2).sum(-1) / 4.5)
    Kst = np.exp(-((S[idx, None] - T[None]) ** 2).sum(-1) / 4.5)
    Ktt = np.exp(-((T[:, None] - T[None]) ** 2).sum(-1) / 4.5)
    assert p.objective(idx) == pytest.approx(Ks.mean() - 2 * Kst.mean() + Ktt.mean(), rel=1e-9)


# ----------------------------------------------------------------------------- exports


def test_pyomo_export_evaluates_to_objective():
    pyo = pytest.importorskip("pyomo.environ")
    p = shifted(4, n=5, keep=3)
    mdl = p.to_pyomo()
    idx = [0, 3, 4]
    for i in range(5):
        mdl.x[i].value = 1.0 if i in idx else 0.0
    assert pyo.value(mdl.mmd2) == pytest.approx(p.objective(idx), rel=1e-10)
    assert pyo.value(mdl.cardinality.body) == 3
    assert all(mdl.x[i].domain is pyo.Binary for i in range(5))


@pytest.mark.parametrize("seed", [0, 1])
def test_cvxpy_relaxation_is_a_lower_bound_and_matches_ours(seed):
    p = shifted(seed, n=10, keep=4)
    opt = brute_mmd(p)
    prob = p.to_cvxpy(relax=True)
    prob.solve(solver="CLARABEL")
    x, lb, _ = relaxation(p)
    assert prob.value <= opt + 1e-7
    assert lb <= opt + 1e-9
    assert lb == pytest.approx(prob.value, abs=1e-6)  # same convex QP, two solvers


def test_cvxpy_miqp_with_scip_matches_brute_force():
    cp = pytest.importorskip("cvxpy")
    pytest.importorskip("pyscipopt")
    if "SCIP" not in cp.installed_solvers():
        pytest.skip("cvxpy does not see SCIP")
    p = shifted(7, n=9, keep=3)
    prob = p.to_cvxpy()
    prob.solve(solver="SCIP")
    x = prob.variables()[0].value
    idx = np.flatnonzero(x > 0.5)
    assert prob.value == pytest.approx(brute_mmd(p), abs=1e-6)
    assert p.objective(idx) == pytest.approx(brute_mmd(p), abs=1e-7)


# ----------------------------------------------------------------------------- solvers


def test_relaxation_bound_valid_for_indefinite_kernel():
    for seed in range(3):
        p = shifted(seed, n=9, keep=3, kernel=energy)
        _, lb, info = relaxation(p)
        assert info["mu"] < 0  # the energy kernel is not PSD: the shift convexifies it
        assert lb <= brute_mmd(p) + 1e-9


def test_default_solver_is_exact_scip():
    pytest.importorskip("pyscipopt")
    p = shifted(3, n=10, keep=4)
    sol = pruneopt.solve(p)
    assert sol.solver == "scip" and sol.status == "optimal"
    assert sol.objective == pytest.approx(brute_mmd(p), abs=1e-8)
    assert sol.gap == 0.0


def test_scip_time_limit_is_honest():
    pytest.importorskip("pyscipopt")
    rng = np.random.default_rng(0)
    p = MMDSelection(rng.normal(size=(70, 3)), rng.normal(size=(40, 3)) + 0.3, 20)
    sol = pruneopt.solve(p, solver="scip", time_limit=1.0)
    relax = relaxation(p)[1]
    assert sol.status in ("time_limit", "optimal")
    p.check(sol.decision)
    assert relax - 1e-12 <= sol.bound <= sol.objective + 1e-12
    if sol.status == "time_limit":
        assert sol.gap > 0


@pytest.mark.parametrize("solver", ["relax-swap", "relax-round", "greedy", "swap"])
def test_heuristics_feasible_bounded_and_beat_random(solver):
    rng = np.random.default_rng(1)
    S = rng.normal(size=(150, 4))
    T = rng.normal(size=(60, 4)) * 0.6 + 0.8
    p = MMDSelection(S, T, 30)
    sol = pruneopt.solve(p, solver=solver)
    assert sol.status == "feasible" and sol.bound is not None
    assert sol.bound <= sol.objective
    rand = np.mean([p.objective(rng.choice(150, 30, replace=False)) for _ in range(20)])
    assert sol.objective < 0.5 * rand


def test_greedy_backward_and_swap_starts():
    p = shifted(2, n=10, keep=4)
    opt = brute_mmd(p)
    back = pruneopt.solve(p, solver="greedy", direction="backward")
    assert back.objective >= opt - 1e-12
    for start in ("random", "greedy", "relax", [0, 1, 2, 3]):
        sol = pruneopt.solve(p, solver="swap", start=start)
        assert sol.objective >= opt - 1e-12
        # a 1-swap local optimum: no single swap improves it
        kept = set(sol.decision.tolist())
        for i, j in itertools.product(kept, set(range(10)) - kept):
            assert p.objective(sorted(kept - {i} | {j})) >= sol.objective - 1e-12
    with pytest.raises(ValueError, match="direction"):
        pruneopt.solve(p, solver="greedy", direction="sideways")
    with pytest.raises(ValueError, match="start"):
        pruneopt.solve(p, solver="swap", start="best")
    with pytest.raises(ValueError, match="has no option"):
        pruneopt.solve(p, solver="relax-swap", foo=1)


def test_dense_solvers_refuse_huge_n_and_point_to_lowrank():
    rng = np.random.default_rng(0)
    p = MMDSelection(rng.normal(size=(mmd_heuristics.MAX_DENSE_N + 1, 1)),
                     rng.normal(size=(5, 1)), 10)
    with pytest.raises(ValueError, match="lowrank"):
        pruneopt.solve(p, solver="greedy")


@pytest.mark.parametrize("kernel", ["rbf", "linear", "laplace"])
def test_lowrank_large_n_never_dense(kernel):
    rng = np.random.default_rng(0)
    n = mmd_heuristics.MAX_DENSE_N + 2000  # too large for the dense solvers
    S = rng.normal(size=(n, 3))
    T = rng.normal(size=(300, 3)) * 0.7 + 0.5
    kern = kernel
    if kernel == "laplace":
        def kern(X, Y):
            return np.exp(-np.abs(X[:, None, :] - Y[None, :, :]).sum(-1) / 2)
    p = MMDSelection(S, T, 500, kernel=kern)
    sol = pruneopt.solve(p, solver="lowrank", rank=64)
    assert sol.status == "feasible" and sol.bound is None
    assert "_dense_K" not in p.__dict__
    rand = p.objective(rng.choice(n, 500, replace=False))
    assert sol.objective < 0.2 * rand


# ----------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 8), d=st.integers(1, 3),
           kernel=st.sampled_from(["rbf", "linear", "energy"]), data=st.data())
def test_bound_and_heuristics_never_cross_brute_force(seed, n, d, kernel, data):
    keep = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(n, d))
    T = rng.normal(size=(rng.integers(1, 6), d)) + rng.normal(size=d)
    p = MMDSelection(S, T, keep, kernel=energy if kernel == "energy" else kernel)
    opt = brute_mmd(p)
    _, lb, _ = relaxation(p)
    assert lb <= opt + 1e-9 * max(1.0, abs(opt))
    for solver in ("relax-swap", "greedy", "lowrank"):
        sol = pruneopt.solve(p, solver=solver)
        assert sol.objective >= opt - 1e-9 * max(1.0, abs(opt))
