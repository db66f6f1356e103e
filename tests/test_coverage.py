"""Coverage coresets: radius graph, formulations, bad input, bounds, solvers agreeing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits

import pruneopt
from pruneopt.formulations import CoverageSelection, CoverSelection, coverage_curve
from pruneopt.formulations.coverage import (
    nearest_distances,
    radius_for_budget,
    radius_graph,
)
from pruneopt.solvers.coverage_greedy import greedy_max_coverage, lagrangian_bound


def _brute_graph(X: np.ndarray, r: float) -> np.ndarray:
    return ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1) <= r * r


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits().data[:400]


@pytest.mark.parametrize("method", ["kdtree", "blocked"])
@pytest.mark.parametrize(("n", "d", "r"), [(300, 2, 0.3), (250, 16, 4.5), (40, 5, 0.01)])
def test_radius_graph_exact(method, n, d, r):
    X = np.random.default_rng(n + d).normal(size=(n, d))
    G = radius_graph(X, r, method=method)
    assert G.dtype == bool and G.shape == (n, n)
    assert np.array_equal(G.toarray(), _brute_graph(X, r))


def test_radius_graph_integer_ties(digits):
    # digits are integers: squared distances are integers, so r = sqrt(integer) hits ties
    r = float(np.sqrt(900.0))
    ref = _brute_graph(digits, r)
    assert (((digits[:, None] - digits[None]) ** 2).sum(-1) == 900).any()
    for method in ("blocked", "kdtree"):
        assert np.array_equal(radius_graph(digits, r, method=method).toarray(), ref)


def test_radius_graph_memory_cap():
    X = np.random.default_rng(0).normal(size=(200, 3))
    with pytest.raises(ValueError, match="smaller radius"):
        radius_graph(X, 10.0, max_edges=1000)
    with pytest.raises(ValueError, match="method"):
        radius_graph(X, 1.0, method="ball")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"budget": 0}, "budget must be >= 1"),
        ({"budget": 2.5}, "budget must be an integer"),
        ({"budget": 11}, "larger than the number of points"),
        ({"radius": 0.0}, "radius must be"),
        ({"radius": -1.0}, "radius must be"),
        ({"radius": float("nan")}, "radius must be"),
        ({"radius": "big"}, "radius must be"),
        ({"features": np.zeros((0, 3))}, "empty"),
        ({"features": np.zeros((4, 0))}, "empty"),
        ({"features": np.array([[0.0, np.nan]] * 10)}, "NaN"),
        ({"features": np.zeros(10)}, "2-D"),
        ({"weights": -np.ones(10)}, ">= 0"),
        ({"weights": np.ones(3)}, "one entry per point"),
        ({"weights": np.zeros(10)}, "positive sum"),
    ],
)
def test_bad_input_max(kwargs, match):
    args = {"features": np.random.default_rng(0).normal(size=(10, 2)), "budget": 2,
            "radius": 0.5} | kwargs
    with pytest.raises(ValueError, match=match):
        CoverageSelection(**args)


@pytest.mark.parametrize("cover", [0.0, -0.1, 1.5, float("nan"), "all"])
def test_bad_cover(cover):
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match=r"cover must be a fraction in \(0, 1\]"):
        CoverSelection(X, radius=0.5, cover=cover)
    with pytest.raises(ValueError, match="radius"):
        CoverSelection(X, radius=0.0)


def test_check_and_objective():
    X = np.array([[0.0], [1.0], [2.0], [10.0]])
    p = CoverageSelection(X, budget=2, radius=1.0)
    assert p.objective([1]) == 3.0  # 0, 1, 2
    assert p.objective(np.array([True, False, False, True])) == 3.0  # {0,1} and {3}
    assert list(p.check([3, 1])) == [1, 3]
    with pytest.raises(ValueError, match="more than keep"):
        p.check([0, 1, 2])
    with pytest.raises(ValueError, match="more than once"):
        p.check([1, 1])
    with pytest.raises(ValueError, match="outside"):
        p.check([4])
    with pytest.raises(ValueError, match="integer"):
        p.check([0.5])
    c = CoverSelection(X, radius=1.0, cover=0.75)
    assert c.required == 3.0
    assert c.objective(c.check([1])) == 1.0
    with pytest.raises(ValueError, match="select more points"):
        c.check([3])


def test_torch_input_not_modified():
    t = torch.randn(30, 4)
    before = t.clone()
    p = CoverageSelection(t, budget=3, radius=1.0)
    pruneopt.solve(p, solver="greedy")
    assert torch.equal(t, before)


def test_math_exports(digits):
    p = CoverageSelection(digits[:50], budget=5, radius=25.0, weights=np.arange(1, 51))
    assert "keep k = 5" in p.math() and "w_i" in p.math()
    assert p._repr_latex_().startswith("$$")
    form = p.to_milp()
    assert form.shape == (51, 100)
    m = p.pyomo_model()
    assert len(m.x) == 50 and len(m.cover) == 50
    c = CoverSelection(digits[:50], radius=25.0, cover=0.9)
    assert c.to_milp().shape == (51, 100) and "cover" in c.math()
    assert len(c.pyomo_model().cover) == 50


def test_greedy_lazy_equals_incremental(digits):
    r = radius_for_budget(digits, 20)
    p = CoverageSelection(digits, budget=20, radius=r)
    a, ba, _ = greedy_max_coverage(p, method="incremental")
    b, bb, _ = greedy_max_coverage(p, method="lazy")
    assert np.array_equal(a, b)
    assert ba >= p.objective(a) and bb >= p.objective(b)


def test_solvers_agree_and_bounds_valid(digits):
    X = digits[:150]
    p = CoverageSelection(X, budget=8, radius=radius_for_budget(X, 8))
    opt = pruneopt.solve(p, solver="highs")
    assert opt.status == "optimal"
    cp = pruneopt.solve(p, solver="cpsat", time_limit=30)
    assert cp.status == "optimal" and cp.objective == opt.objective
    for name in ("greedy", "lp-round", "kcenter"):
        sol = pruneopt.solve(p, solver=name)
        assert sol.objective <= opt.objective
        assert sol.bound is None or sol.bound >= opt.objective - 1e-9
    g = pruneopt.solve(p, solver="greedy", bound_iters=200, bound_budget=None,
                        lp_bound=False)
    assert g.objective >= (1 - 1 / np.e) * opt.objective
    lp = pruneopt.solve(p, solver="greedy", bound_iters=0, lp_bound=True).info["lp_bound"]
    assert g.info["lagrangian_bound"] >= lp - 1e-6 >= opt.objective - 1e-6
    assert g.info["approximation_ratio"] == pytest.approx(np.e / (np.e - 1))
    c = CoverSelection(X, radius=p.radius, cover=0.8)
    copt = pruneopt.solve(c, solver="highs")
    assert pruneopt.solve(c, solver="cpsat", time_limit=30).objective == copt.objective
    for name in ("greedy", "lp-round", "kcenter"):
        sol = pruneopt.solve(c, solver=name)
        assert sol.objective >= copt.objective
        assert sol.bound is None or sol.bound <= copt.objective


def test_fractional_weights(digits):
    X = digits[:60]
    w = np.random.default_rng(0).random(60) + 0.01
    p = CoverageSelection(X, budget=4, radius=radius_for_budget(X, 4), weights=w)
    opt = pruneopt.solve(p, solver="highs")
    cp = pruneopt.solve(p, solver="cpsat", time_limit=30)
    assert cp.objective == pytest.approx(opt.objective, rel=1e-5)
    assert cp.bound >= opt.objective - 1e-9
    g = pruneopt.solve(p, solver="greedy")
    assert g.bound >= opt.objective - 1e-9 and g.objective <= opt.objective + 1e-9
    c = CoverSelection(X, radius=p.radius, cover=0.6, weights=w)
    sol = pruneopt.solve(c, solver="cpsat", time_limit=30)
    c.check(sol.decision)
    assert sol.objective >= pruneopt.solve(c, solver="highs").objective


def test_time_limit_is_honest():
    X = load_digits().data
    p = CoverageSelection(X, budget=100, radius=23.4)
    sol = pruneopt.solve(p, solver="cpsat", time_limit=1)
    assert sol.status in ("time_limit", "optimal")
    if sol.status == "time_limit" and sol.decision is not None:
        assert sol.bound >= sol.objective


def test_everything_covered_is_certified():
    X = np.random.default_rng(0).normal(size=(30, 2))
    p = CoverageSelection(X, budget=3, radius=100.0)
    for name in ("greedy", "kcenter", "lp-round"):
        sol = pruneopt.solve(p, solver=name)
        assert sol.status == "optimal" and sol.objective == 30


def test_coverage_curve(digits):
    sel = np.arange(0, 400, 10)
    dist = nearest_distances(digits, sel)
    brute = np.sqrt(((digits[:, None] - digits[sel][None]) ** 2).sum(-1)).min(axis=1)
    assert np.allclose(dist, brute)
    radii = np.linspace(0, 60, 31)
    cur = coverage_curve(digits, sel, radii)
    assert np.all(np.diff(cur.coverage) >= 0) and cur.coverage[0] == pytest.approx(0.1)
    assert np.allclose(cur.coverage, [(brute <= r).mean() for r in radii])
    assert 0 < cur.auc < 1
    assert coverage_curve(digits, np.arange(400)).auc == 1.0
    more = coverage_curve(digits, np.arange(0, 400, 2), radii)
    assert more.auc >= cur.auc
    with pytest.raises(ValueError, match="increasing"):
        coverage_curve(digits, sel, [1.0, 0.5])
    with pytest.raises(ValueError, match="empty"):
        coverage_curve(digits, [])


def test_radius_for_budget_scale(digits):
    for k in (10, 40):
        r = radius_for_budget(digits, k)
        deg = radius_graph(digits, r).sum(axis=1).mean()
        assert len(digits) / k / 2 <= deg <= 2 * len(digits) / k
    with pytest.raises(ValueError, match="budget"):
        radius_for_budget(digits, 0)


def test_precomputed_graph(digits):
    p = CoverageSelection(digits, budget=5, radius=25.0)
    q = CoverageSelection(digits, budget=9, radius=25.0, graph=p.graph)
    assert (q.graph != p.graph).nnz == 0
    with pytest.raises(ValueError, match="graph must be"):
        CoverageSelection(digits, budget=5, radius=25.0, graph=p.graph[:10, :10])



@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), d=st.integers(1, 12), q=st.floats(0.01, 0.9),
       seed=st.integers(0, 10**6), integer=st.booleans())
def test_radius_graph_property(n, d, q, seed, integer):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(n, d)).astype(float) if integer else rng.normal(size=(n, d))
    D2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    r = float(np.sqrt(np.quantile(D2, q))) or 0.5
    ref = D2 <= r * r
    # a pair at distance r up to float rounding (r comes from a quantile of the distances)
    # may go either way; every other pair must match
    clear = np.abs(D2 - r * r) > 1e-9 * max(r * r, 1e-300)
    for method in ("kdtree", "blocked"):
        got = radius_graph(X, r, method=method).toarray()
        assert np.array_equal(got[clear], ref[clear])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(1, 4))
def test_greedy_bounds_property(seed, k):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(9, 2))
    w = rng.integers(1, 5, size=9)
    p = CoverageSelection(X, budget=k, radius=0.7, weights=w)
    M = _brute_graph(X, 0.7)
    opt = max(float(w[M[list(S)].any(axis=0)].sum()) for S in itertools.combinations(range(9), k))
    sel, bound, _ = greedy_max_coverage(p)
    assert p.objective(sel) >= (1 - 1 / np.e) * opt - 1e-9
    assert bound >= opt - 1e-9
    assert lagrangian_bound(p, p.objective(sel), iters=30)[0] >= opt - 1e-9
