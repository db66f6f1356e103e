"""Coverage at scale: the approximate (faiss IVF) radius graph, its measured recall, exact
re-scoring, the compiled lazy greedy, and the budgeted bound, against brute force."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.formulations import CoverageSelection
from pruneopt.formulations.geometry import default_radius, radius_graph
from pruneopt.formulations.neighbors import exact_covered, ivf_radius_graph, radius_recall
from pruneopt.solvers.coverage_greedy import (
    dual_fit,
    greedy_max_coverage,
    lagrangian_bound,
    lazy_run,
)

pytest.importorskip("faiss")

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)
FACTORS = st.sampled_from([1e-6, 1e-3, 0.37, 1.0, 64.0, 1e5])


def _brute(X: np.ndarray, r: float) -> np.ndarray:
    """The exact radius graph from float64 coordinate differences."""
    return ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1) <= r * r


def _clusters(seed: int, n: int = 300, d: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (6, d))
    return centres[rng.integers(0, 6, n)] + rng.normal(0.0, 1.0, (n, d))


def _opt(p: CoverageSelection) -> float:
    """The optimum by enumeration (small n and k)."""
    best = 0.0
    for s in itertools.combinations(range(p.n), p.keep):
        best = max(best, p.objective(np.array(s)))
    return best


@SETTINGS
@given(seed=st.integers(0, 2**16), nprobe=st.integers(1, 3))
def test_ivf_graph_is_a_true_subgraph(seed, nprobe):
    X = _clusters(seed)
    r = default_radius(X, 30, seed=seed)
    g, info = ivf_radius_graph(X, r, nlist=12, nprobe=nprobe, recall_sample=300, seed=seed)
    exact = _brute(X, r)
    G = g.toarray()
    assert G.dtype == bool and (G == G.T).all() and G.diagonal().all()
    assert not (G & ~exact).any()  # every edge is a true neighbour
    off = ~np.eye(len(X), dtype=bool)
    assert info.recall == pytest.approx((G & exact & off).sum() / (exact & off).sum())
    assert info.true_pairs == (exact & off).sum() and info.sample == len(X)
    assert info.mean_degree == pytest.approx(G.sum() / len(X))


def test_ivf_graph_ties_on_integer_data():
    """Integer-valued points at exactly the radius (float32 rounding near the threshold)."""
    rng = np.random.default_rng(3)
    X = rng.integers(0, 4, (400, 8)).astype(float) * 1e3
    r = 2e3
    g, _ = ivf_radius_graph(X, r, nlist=4, nprobe=4, recall_sample=0)
    assert np.array_equal(g.toarray(), _brute(X, r))  # all lists probed: the exact graph
    sel = np.random.default_rng(4).choice(400, 40, replace=False)
    assert np.array_equal(exact_covered(X, r, sel), _brute(X, r)[:, sel].any(axis=1))


@SETTINGS
@given(seed=st.integers(0, 2**16), drop=st.floats(0.0, 0.9), sample=st.integers(1, 250))
def test_recall_matches_brute_force(seed, drop, sample):
    X = _clusters(seed, n=250, d=6)
    r = default_radius(X, 25, seed=seed)
    exact = _brute(X, r)
    rng = np.random.default_rng(seed)
    keep = np.triu(rng.random(exact.shape) >= drop, 1)
    G = exact & (keep | keep.T) | np.eye(len(X), dtype=bool)
    got, pairs = radius_recall(X, r, sp.csr_array(G), sample=sample, seed=seed)
    q = np.sort(np.random.default_rng(seed).choice(len(X), sample, replace=False))
    off = ~np.eye(len(X), dtype=bool)[q]
    true = exact[q] & off
    assert pairs == true.sum()
    assert got == pytest.approx((G[q] & true).sum() / true.sum() if true.sum() else 1.0)


@SETTINGS
@given(seed=st.integers(0, 2**16), factor=FACTORS, nprobe=st.integers(1, 2))
def test_exact_rescoring_equals_the_exact_objective(seed, factor, nprobe):
    X = _clusters(seed, n=200) * factor
    r = default_radius(X, 20, seed=seed)
    approx = CoverageSelection(X, keep=20, radius=r, graph_method="ivf",
                               graph_options={"nlist": 8, "nprobe": nprobe,
                                              "recall_sample": 50})
    exact = CoverageSelection(X, keep=20, radius=r)
    sel = np.sort(np.random.default_rng(seed).choice(200, 20, replace=False))
    assert approx.objective(sel) <= exact.objective(sel)  # a subgraph: a lower bound
    assert approx.exact_covered_weight(sel) == exact.objective(sel)
    assert np.array_equal(exact_covered(X, r, sel), exact.covered(sel))
    sol = pruneopt.solve(approx, solver="greedy")
    assert sol.info["exact_objective"] == exact.objective(sol.decision)
    assert 0.0 <= sol.info["graph"]["recall"] <= 1.0


@SETTINGS
@given(seed=st.integers(0, 2**16), factor=FACTORS, k=st.integers(1, 4))
def test_budgeted_bound_is_valid_and_scale_free(seed, factor, k):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(13, 3)) * factor
    w = rng.integers(1, 5, 13) * factor
    p = CoverageSelection(X, keep=k, radius=0.9 * factor, weights=w)
    opt = _opt(p)
    sol = pruneopt.solve(p, solver="greedy", lp_bound=False)
    assert sol.objective <= opt * (1 + 1e-12)
    assert sol.bound >= opt * (1 - 1e-9)
    q = CoverageSelection(X / factor, keep=k, radius=0.9, weights=w / factor)
    ref = pruneopt.solve(q, solver="greedy", lp_bound=False, bound_budget=None)
    assert np.array_equal(sol.decision, ref.decision)
    assert ref.bound >= opt / factor * (1 - 1e-9)


@SETTINGS
@given(seed=st.integers(0, 2**16))
def test_lazy_kernel_matches_incremental_greedy(seed):
    X = _clusters(seed, n=400, d=4)
    p = CoverageSelection(X, keep=40, radius=default_radius(X, 40, seed=seed))
    a, ba, _ = greedy_max_coverage(p, method="incremental")
    b, bb, _ = greedy_max_coverage(p, method="lazy")
    assert np.array_equal(a, b)
    run = lazy_run(p)
    assert run.covered == p.objective(a)
    covered = run.cover_step <= p.keep
    assert np.array_equal(covered, p.covered(a))
    # the warm starts and every subgradient step are valid upper bounds
    lag, _, steps = lagrangian_bound(p, run.covered, dual_fit(p, run.cover_step, 1.0), iters=5)
    lp = pruneopt.solve(p, solver="highs", time_limit=30)
    if lp.status == "optimal":
        assert min(ba, bb, lag) >= lp.objective - 1e-9
    assert 1 <= steps <= 5


def test_radius_graph_options_and_missing_faiss(monkeypatch):
    X = _clusters(0, n=50)
    with pytest.raises(ValueError, match="graph_method"):
        CoverageSelection(X, keep=5, radius=1.0, graph_method="hnsw")
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ValueError, match=r"pruneopt\[scale\]"):
        CoverageSelection(X, keep=5, radius=1.0, graph_method="ivf")
    g = radius_graph(X, 3.0)
    assert CoverageSelection(X, keep=5, radius=3.0).graph_exact
    assert CoverageSelection(X, keep=5, radius=3.0, graph=g).graph.nnz == g.nnz
