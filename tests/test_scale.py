"""Honest at every scale: an instance multiplied by any positive factor in [1e-12, 1e12] gets
the same decision and status from every exact solver, and its bound on the right side.

Tolerances are relative to the data (``Formulation.objective_scale``); these are the
instances the issue found wrong with absolute tolerances, and hypothesis properties over
random instances and factors.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.formulations import (
    CoverageSelection,
    CoverSelection,
    LayerBudget,
    MMDSelection,
    NMMask,
    TransposableNM,
)

FACTORS = st.builds(lambda e, mant: mant * 10.0**e, st.integers(-12, 11),
                    st.floats(1.0, 9.99))
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def exact_solvers(problem) -> list[str]:
    return [name for name in pruneopt.available(problem)
            if pruneopt.solvers.get_solver(problem, name).guarantee == "exact"]


def same_answer(make, factor: float, *, objective_scales: bool = True, key=None) -> None:
    """Every exact solver: the same decision (``key(problem, decision)``, default the decision
    itself; for problems with ties among optima, what the optimum is unique in) and status
    at scale 1 and at ``factor``."""
    base, scaled = make(1.0), make(factor)
    key = key or (lambda _p, d: np.asarray(d))
    for name in exact_solvers(base):
        a = pruneopt.solve(base, solver=name)
        b = pruneopt.solve(scaled, solver=name)
        assert a.status == b.status == "optimal", (name, factor, a, b)
        assert np.array_equal(key(base, a.decision), key(scaled, b.decision)), (name, factor)
        f = factor if objective_scales else 1.0
        assert b.objective == pytest.approx(a.objective * f, rel=1e-9, abs=0), (name, factor)
        sign = 1.0 if scaled.sense == "max" else -1.0
        assert sign * (b.bound - b.objective) >= -1e-9 * abs(b.objective), (name, b)


# ------------------------------------------------------------------ the instances found


@pytest.mark.parametrize("factor", [1e-12, 1e-6, 1.0, 1e6, 1e12])
def test_transposable_and_nm_tiny_and_huge_scores(factor):
    s = np.abs(np.random.default_rng(0).standard_normal((4, 4)))
    same_answer(lambda f: TransposableNM(s * f, 2, 4), factor)
    same_answer(lambda f: NMMask(s * f, 2, 4), factor)
    for name in pruneopt.available(TransposableNM(s, 2, 4)):
        sol = pruneopt.solve(TransposableNM(s * factor, 2, 4), solver=name)
        assert sol.decision.sum() > 0, name  # never the empty mask


@pytest.mark.parametrize("factor", [1e-12, 1.0, 1e12])
def test_layer_budget_small_errors(factor):
    # the optimum (5) takes the two cheap layers; the single big layer (6) is worse
    def make(f):
        return LayerBudget([[0, 3], [0, 2], [0, 2]], np.array([[5, 0], [3, 0], [3, 0]]) * f, 4)

    same_answer(make, factor)
    for name in ("dp", "greedy", "cpsat", "dp_round"):
        sol = pruneopt.solve(make(factor), solver=name)
        if sol.status == "optimal":
            assert sol.objective == pytest.approx(5 * factor, rel=1e-9), name
        else:
            assert sol.bound <= 5 * factor * (1 + 1e-9), name


@pytest.mark.parametrize("factor", [1e-13, 1.0, 1e13])
def test_coverage_tiny_weights(factor):
    def covered(p, d):
        return p.covered(d)

    def make(f):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return CoverageSelection(np.arange(4.0)[:, None], 2, 1.0,
                                     weights=np.array([1.0, 2, 3, 1]) * f)

    same_answer(make, factor, key=covered)
    for name in pruneopt.available(make(1.0)):
        sol = pruneopt.solve(make(factor), solver=name)
        assert sol.objective == pytest.approx(7 * factor, rel=1e-9), name  # never empty


def test_cover_check_refuses_the_empty_selection_at_any_scale():
    for f in (1e-13, 1.0, 1e13):
        p = CoverSelection(np.arange(4.0)[:, None], radius=1.0, cover=1.0,
                           weights=np.array([1.0, 2, 3, 1]) * f)
        with pytest.raises(ValueError, match="select more points"):
            p.check([])


def test_feasible_cover_with_huge_weights_is_not_called_infeasible():
    w = [235798804812.5328, 429106998665.81116, 92273016553.29211, 592602756954.7103,
         782698680004.6886]
    p = CoverSelection(np.arange(5.0)[:, None], radius=0.5, cover=1.0, weights=w)
    for name in pruneopt.available(p):
        sol = pruneopt.solve(p, solver=name)
        assert sol.status in ("optimal", "feasible"), (name, sol)
        assert sol.objective == 5.0 and p.check(sol.decision) is not None
        if pruneopt.solvers.get_solver(p, name).guarantee == "exact":
            assert sol.status == "optimal", name


def test_overflowing_scale_is_a_clear_error():
    with pytest.raises(ValueError, match="too large in scale"):
        TransposableNM(np.full((4, 4), 1e308), 2, 4)
    with pytest.raises(ValueError, match="too large in scale"):
        LayerBudget([[0, 1], [0, 1]], [[1e308, 0], [1e308, 0]], 2)
    with pytest.raises(ValueError, match="too large in scale"):
        CoverageSelection(np.arange(4.0)[:, None], keep=1, radius=1.0, weights=[1e308] * 4)
    with pytest.raises(ValueError, match="too large in scale"):
        CoverageSelection(np.array([[1e200], [0.0]]), keep=1, radius=1.0)
    with pytest.raises(ValueError, match="too large in scale"):
        MMDSelection(np.full((3, 2), 1e200), np.zeros((2, 2)), 1)


# ------------------------------------------------------------------ properties


@SETTINGS
@given(seed=st.integers(0, 2**16), factor=FACTORS, exactly=st.booleans(),
       signed=st.booleans())
def test_transposable_nm_scale_invariant(seed, factor, exactly, signed):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((8, 8))
    s = s if signed else np.abs(s)
    same_answer(lambda f: TransposableNM(s * f, 2, 4, exactly=exactly), factor)
    same_answer(lambda f: NMMask(s * f, 2, 4, exactly=exactly), factor)


@SETTINGS
@given(seed=st.integers(0, 2**16), error_factor=FACTORS, cost_factor=FACTORS)
def test_layer_budget_scale_invariant(seed, error_factor, cost_factor):
    rng = np.random.default_rng(seed)
    L, K = 5, 4
    costs = np.sort(rng.uniform(0, 1, (L, K)), axis=1)[:, ::-1]
    errors = np.sort(rng.uniform(0, 1, (L, K)), axis=1)
    budget = float(costs.min(axis=1).sum() + 0.4 * (costs.max(axis=1) - costs.min(axis=1)).sum())

    def make(f):  # errors scaled by f; costs and budget by their own factor
        g = cost_factor if f != 1.0 else 1.0
        return LayerBudget(costs * g, errors * f, budget * g)

    same_answer(make, error_factor)


@SETTINGS
@given(seed=st.integers(0, 2**16), factor=FACTORS)
def test_coverage_scale_invariant(seed, factor):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(12, 2))
    w = rng.uniform(0.1, 1.0, 12)
    # the weights scale the objective; the features and the radius scale the geometry. Many
    # selections cover the same points: the covered set is what the optimum is unique in.
    def covered(p, d):
        return p.covered(d)

    same_answer(lambda f: CoverageSelection(X, keep=3, radius=0.8, weights=w * f), factor,
                key=covered)
    same_answer(lambda f: CoverageSelection(X * f, keep=3, radius=0.8 * f, weights=w), factor,
                objective_scales=False, key=covered)
    same_answer(lambda f: CoverSelection(X, cover=0.7, radius=0.8, weights=w * f), factor,
                objective_scales=False, key=lambda p, d: len(d))


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), factor=FACTORS)
def test_mmd_scale_invariant(seed, factor):
    rng = np.random.default_rng(seed)
    S, T = rng.normal(size=(10, 2)), rng.normal(0.5, 1.0, size=(6, 2))
    # the median bandwidth scales with the features: the kernel, and MMD^2, do not change
    same_answer(lambda f: MMDSelection(S * f, T * f, 4), factor, objective_scales=False)
    # the linear kernel: MMD^2 scales with f^2
    lin = [MMDSelection(S * f, T * f, 4, kernel="linear") for f in (1.0, factor)]
    for name in exact_solvers(lin[0]):
        a, b = (pruneopt.solve(p, solver=name) for p in lin)
        assert a.status == b.status == "optimal"
        assert np.array_equal(a.decision, b.decision)


@pytest.mark.parametrize("factor", [1e-12, 1e-6, 1e6, 1e12])
def test_mmd_class_constrained_scale_invariant(factor):
    rng = np.random.default_rng(3)
    S, T = rng.normal(size=(10, 2)), rng.normal(0.5, 1.0, size=(6, 2))
    y = np.arange(10) % 3
    # per-class counts: the decision, status and (median-bandwidth) MMD^2 do not change
    same_answer(lambda f: MMDSelection(S * f, T * f, None, labels=y,
                                       class_keep={0: 2, 1: 1, 2: 1}),
                factor, objective_scales=False)
