"""The compiled exact flow (``flow``) and greedy (``greedy``) for transposable N:M masks:
against brute force, OR-Tools and networkx, at every scale, with its dual certificate."""

from __future__ import annotations

import numpy as np
import pytest
from cases_nm import brute_transposable
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.formulations import TransposableNM
from pruneopt.solvers import nm_flow_kernels as kern
from pruneopt.solvers.nm_flow import refine_blocks
from pruneopt.solvers.nm_greedy import greedy_blocks

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
KINDS = ("abs", "ties", "signed")


def scores(seed: int, shape, kind: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "abs":
        return np.abs(rng.standard_normal(shape))
    if kind == "ties":  # many equal scores and zeros
        return rng.integers(0, 3, size=shape).astype(float)
    return rng.standard_normal(shape)


def kernel_duals(p: TransposableNM):
    """Mask, duals and per-block (dual, primal, scale) of the flow kernel on ``p``."""
    s = np.ascontiguousarray(p.scores)
    nb, m = p.num_blocks, p.m
    mask = np.zeros(s.shape, dtype=bool)
    u, v = np.empty((nb, m)), np.empty((nb, m))
    assert kern.flow_blocks(s, p.n, m, p.exactly, 0, nb, mask, u, v, 1) >= 0
    return mask, u, v, gaps(p, mask, u, v)


def gaps(p: TransposableNM, mask, u, v):
    s = np.ascontiguousarray(p.scores)
    nb = p.num_blocks
    dual, primal, scale = np.empty(nb), np.empty(nb), np.empty(nb)
    kern.dual_gaps(s, mask, u, v, p.n, p.m, p.exactly, 0, nb, dual, primal, scale)
    return dual, primal, scale


def tol(p: TransposableNM) -> float:
    return 1e-10 * max(float(np.abs(p.scores).sum()), 1e-300)


@SETTINGS
@given(seed=st.integers(0, 10**6), m=st.integers(1, 4), data=st.data(),
       kind=st.sampled_from(KINDS), exactly=st.booleans())
def test_flow_matches_brute_force_on_small_blocks(seed, m, data, kind, exactly):
    n = data.draw(st.integers(1, m))
    p = TransposableNM(scores(seed, (2 * m, 3 * m), kind), n, m, exactly=exactly)
    sol = pruneopt.solve(p, solver="flow")
    assert sol.status == "optimal" and sol.proof
    p.check(sol.decision)
    assert sol.objective == pytest.approx(brute_transposable(p), abs=tol(p))
    if not exactly:
        assert not (sol.decision & (p.scores <= 0)).any()  # never keeps a score <= 0


@pytest.mark.parametrize("nm", [(4, 8), (3, 8), (8, 16), (5, 16), (16, 32), (7, 32)])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("exactly", [False, True])
def test_flow_matches_ortools_and_networkx(nm, kind, exactly):
    n, m = nm
    p = TransposableNM(scores(m + n, (2 * m, 2 * m), kind), n, m, exactly=exactly)
    sol = pruneopt.solve(p, solver="flow")
    assert sol.status == "optimal"
    for ref in ("ortools", "networkx"):
        r = pruneopt.solve(p, solver=ref)
        assert r.status == "optimal", ref
        assert sol.objective == pytest.approx(r.objective, abs=tol(p)), ref
    assert sol.info["dual_bound"] == pytest.approx(sol.objective, abs=tol(p))


@SETTINGS
@given(seed=st.integers(0, 10**6), nm=st.sampled_from([(2, 8), (4, 8), (8, 16), (16, 32)]),
       kind=st.sampled_from(KINDS), exactly=st.booleans())
def test_flow_matches_ortools_on_random_instances(seed, nm, kind, exactly):
    n, m = nm
    p = TransposableNM(scores(seed, (2 * m, m), kind), n, m, exactly=exactly)
    a, b = pruneopt.solve(p, solver="flow"), pruneopt.solve(p, solver="ortools")
    assert a.status == b.status == "optimal"
    assert a.objective == pytest.approx(b.objective, abs=tol(p))


FACTORS = st.builds(lambda e, mant: mant * 10.0**e, st.integers(-12, 11), st.floats(1.0, 9.99))


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 10**6), factor=FACTORS,
       nm=st.sampled_from([(2, 4), (4, 8), (8, 16), (16, 32)]), exactly=st.booleans())
def test_flow_is_scale_invariant(seed, factor, nm, exactly):
    n, m = nm
    s = scores(seed, (2 * m, 2 * m), "abs")  # no ties: the optimum is unique
    a = pruneopt.solve(TransposableNM(s, n, m, exactly=exactly), solver="flow")
    b = pruneopt.solve(TransposableNM(s * factor, n, m, exactly=exactly), solver="flow")
    assert a.status == b.status == "optimal"
    assert np.array_equal(a.decision, b.decision)
    assert b.info["dual_bound"] == pytest.approx(a.info["dual_bound"] * factor, rel=1e-9)


@pytest.mark.parametrize("factor", [1e-12, 1e-6, 1e6, 1e12])
def test_flow_with_ties_and_signs_at_any_scale(factor):
    for kind in ("ties", "signed"):
        s = scores(3, (32, 32), kind)
        for exactly in (False, True):
            a = pruneopt.solve(TransposableNM(s, 4, 8, exactly=exactly), solver="flow")
            b = pruneopt.solve(TransposableNM(s * factor, 4, 8, exactly=exactly),
                               solver="flow")
            assert a.status == b.status == "optimal"
            assert b.objective == pytest.approx(a.objective * factor, rel=1e-12)


@SETTINGS
@given(seed=st.integers(0, 10**6), nm=st.sampled_from([(2, 4), (4, 8), (8, 16)]),
       kind=st.sampled_from(KINDS), exactly=st.booleans(), noise=st.floats(0.0, 2.0))
def test_any_duals_bound_the_optimum(seed, nm, kind, exactly, noise):
    """Weak duality: the dual bound of ANY u, v is >= the optimum (block by block)."""
    n, m = nm
    p = TransposableNM(scores(seed, (m, 2 * m), kind), n, m, exactly=exactly)
    mask, u, v, (dual, primal, scale) = kernel_duals(p)
    rng = np.random.default_rng(seed)
    dual2, _, _ = gaps(p, mask, u + noise * rng.standard_normal(u.shape),
                       v + noise * rng.standard_normal(v.shape))
    assert (dual2 >= primal - 1e-12 * scale).all()
    assert (np.abs(dual - primal) <= 1e-12 * scale).all()  # the kernel's own: tight


def test_certificate_rejects_a_non_optimal_mask():
    s = scores(0, (64, 64), "abs")
    for exactly in (False, True):
        p = TransposableNM(s, 4, 8, exactly=exactly)
        mask, u, v, (dual, primal, scale) = kernel_duals(p)
        eps = np.finfo(float).eps
        assert (dual - primal <= 64 * p.m * eps * scale).all()
        # the greedy's mask: feasible, worse in some blocks; the same duals reject those
        g = pruneopt.solve(p, solver="greedy").decision
        p.check(g)
        d2, p2, _ = gaps(p, g, u, v)
        worse = p2 < primal - 1e-9 * scale
        assert worse.any()
        assert ((d2 - p2)[worse] > 64 * p.m * eps * scale[worse]).all()
        # a single swapped entry in an optimal block breaks it too
        bad = mask.copy()
        i, j = np.argwhere(bad[:8, :8])[0]
        bad[i, j] = False
        _, p3, _ = gaps(p, bad, u, v)
        assert dual[0] - p3[0] > 64 * p.m * eps * scale[0]


def test_refine_blocks_solves_the_blocks_it_is_given():
    s = scores(5, (16, 32), "signed")
    for exactly in (False, True):
        p = TransposableNM(s, 3, 8, exactly=exactly)
        mask = np.zeros(s.shape, dtype=bool)
        assert refine_blocks(s, mask, np.arange(p.num_blocks), 3, 8, exactly) == 0
        ref = pruneopt.solve(p, solver="ortools")
        assert p.objective(mask) == pytest.approx(ref.objective, abs=tol(p))


def test_flow_honours_the_time_limit():
    s = scores(1, (1024, 512), "abs")  # two chunks of block rows
    for exactly in (False, True):
        p = TransposableNM(s, 4, 8, exactly=exactly)
        sol = pruneopt.solve(p, solver="flow", time_limit=1e-9)
        assert sol.status == "time_limit" and sol.info["stopped_early"]
        p.check(sol.decision)
        assert sol.bound >= pruneopt.solve(p, solver="flow").objective - tol(p)


@SETTINGS
@given(seed=st.integers(0, 10**6), nm=st.sampled_from([(1, 4), (2, 4), (4, 8), (8, 16),
                                                       (16, 32)]),
       kind=st.sampled_from(KINDS), exactly=st.booleans())
def test_greedy_kernel_is_hubaras_greedy_with_its_bound(seed, nm, kind, exactly):
    n, m = nm
    s = scores(seed, (2 * m, 2 * m), kind)
    p = TransposableNM(s, n, m, exactly=exactly)
    if not exactly and kind != "ties":  # no ties: one visiting order, one greedy mask
        sol = pruneopt.solve(p, solver="greedy", complete=False)
        ref = greedy_blocks(p.blocks(), n, positive_only=True)
        assert np.array_equal(p.blocks(sol.decision), ref)
    full = pruneopt.solve(p, solver="greedy")
    p.check(full.decision)
    opt = pruneopt.solve(p, solver="flow").objective
    assert full.bound >= opt - tol(p)
    assert full.bound <= p.row_col_bound() + tol(p)
    if kind == "abs":
        assert full.objective >= 0.5 * opt - tol(p)
        assert full.info["greedy_score"] <= full.objective + tol(p)


def test_importing_pruneopt_does_not_import_numba():
    """The kernels load when a solver first runs, not with the package (the CLI's start)."""
    import subprocess
    import sys

    code = ("import sys, pruneopt, pruneopt.solvers.nm_flow, pruneopt.solvers.nm_greedy; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_kernels_load_beside_a_module_named_coverage(tmp_path):
    """A plain ``coverage.py`` on the path (as in benchmarks/) must not break numba's import
    (numba probes the coverage package and fails on a shadow)."""
    import subprocess
    import sys

    (tmp_path / "coverage.py").write_text("# not the coverage package\n")
    code = ("import sys; sys.path.insert(0, '.'); import coverage; import numpy as np; "
            "import pruneopt; from pruneopt.formulations import TransposableNM; "
            "p = TransposableNM(np.arange(64.).reshape(8, 8), 2, 8); "
            "print(pruneopt.solve(p, solver='flow').status, "
            "pruneopt.solve(p, solver='greedy').status, sys.modules['coverage'].__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    flow, greedy, cov = out.stdout.split()
    assert (flow, greedy) == ("optimal", "feasible") and cov.endswith("coverage.py")
