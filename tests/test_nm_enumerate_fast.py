"""``enumerate`` scores in float32 and proves its argmax: checks against brute force, the
smallest correct pattern set, near-ties (which must be re-scored in float64), underflow,
scaling, and the flow as a second exact backend."""

from __future__ import annotations

from functools import cache
from itertools import product

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.formulations import TransposableNM
from pruneopt.solvers.nm_enumerate import float32_error, power_of_two_scale, transposable_patterns

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@cache
def feasible(n: int, m: int) -> np.ndarray:
    """Every m x m 0/1 pattern with at most n per row and column, flattened (K, m*m)."""
    p = np.array(list(product((0, 1), repeat=m * m)), dtype=bool).reshape(-1, m, m)
    ok = ((p.sum(axis=2) <= n) & (p.sum(axis=1) <= n)).all(axis=1)
    return p[ok].reshape(int(ok.sum()), -1)


def brute(problem: TransposableNM) -> float:
    return float(brute_blocks(problem).sum())


def brute_blocks(problem: TransposableNM) -> np.ndarray:
    """The optimum of every block, by brute force over all feasible patterns."""
    n, m = problem.n, problem.m
    if problem.exactly:
        f = feasible(n, m)
        f = f[(f.reshape(-1, m, m).sum(axis=2) == n).all(axis=1)
              & (f.reshape(-1, m, m).sum(axis=1) == n).all(axis=1)]
    else:
        f = feasible(n, m)
    return (problem.blocks().reshape(problem.num_blocks, -1) @ f.T.astype(float)).max(axis=1)


def kept_blocks(problem: TransposableNM, mask: np.ndarray) -> np.ndarray:
    return (problem.blocks() * problem.blocks(mask)).sum(axis=(1, 2))


@pytest.mark.parametrize(("n", "m", "count"), [(2, 4, 186), (1, 4, 24), (1, 3, 6), (2, 3, 15)])
def test_maximal_patterns_are_exactly_the_needed_set(n, m, count):
    """For scores >= 0 the maximal "at most" patterns suffice (a superset never scores
    less) and none can be dropped (each is the only optimum of its own 0/1 indicator)."""
    pats = transposable_patterns(n, m, False).reshape(-1, m * m)
    assert len(pats) == count
    f = feasible(n, m)
    bits = f.astype(np.int64) @ (1 << np.arange(m * m, dtype=np.int64))
    # maximal = no feasible strict superset (p within q: p & q == p)
    sup = ((bits[:, None] & bits[None, :]) == bits[:, None]) & (bits[:, None] != bits[None, :])
    maximal = f[~sup.any(axis=1)]
    assert {r.tobytes() for r in maximal} == {r.tobytes() for r in pats}
    scores = pats.astype(float) @ pats.T.astype(float)  # indicator of p scored by q
    assert (np.diag(scores)[:, None] > scores - np.eye(len(pats)) * 1e9).all()


def test_2_4_at_most_needs_the_seven_entry_patterns():
    # a block whose unique optimum keeps 7 entries: rows 0-2 full in columns 1-3, row 3
    # takes column 0 (column 0 cannot take a second: rows 0-2 are full)
    w = np.zeros((4, 4))
    w[:3, 1:] = [[1, 1, 0], [1, 0, 1], [0, 1, 1]]
    w[:3, 1:] *= 10
    w[3, 0] = 1
    sol = pruneopt.solve(TransposableNM(w, 2, 4), solver="enumerate")
    assert sol.objective == 61.0 and int(sol.decision.sum()) == 7


@pytest.mark.parametrize("kind", ["abs", "signed", "ties"])
@pytest.mark.parametrize("exactly", [False, True])
@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (3, 4), (2, 3)])
def test_matches_brute_force(kind, exactly, n, m):
    rng = np.random.default_rng(n * 10 + m)
    shape = (6 * m, 10 * m)
    w = {"abs": lambda: np.abs(rng.standard_normal(shape)),
         "signed": lambda: rng.standard_normal(shape),
         "ties": lambda: rng.integers(0, 3, shape).astype(float)}[kind]()
    p = TransposableNM(w, n, m, exactly=exactly)
    sol = pruneopt.solve(p, solver="enumerate")
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(brute(p), rel=1e-12, abs=1e-12)
    if kind == "ties":  # integer scores tie exactly: those blocks are re-scored
        assert sol.info["rescored_blocks"] > 0


def test_near_ties_below_float32_resolution_are_resolved_exactly():
    """Two patterns of every block differ by 1e-12 of the block: float32 cannot see it."""
    rng = np.random.default_rng(3)
    base = rng.integers(1, 5, size=(64, 64)).astype(float)
    w = base + 1e-12 * rng.random((64, 64))
    p = TransposableNM(w, 2, 4)
    sol = pruneopt.solve(p, solver="enumerate")
    assert sol.info["rescored_blocks"] > 0
    # block by block (the gaps, 1e-12, are far above float64 rounding, 4e-15)
    got, best = kept_blocks(p, sol.decision), brute_blocks(p)
    assert np.abs(got - best).max() <= 1e-14
    # the flow ignores path gains below its tolerance (1e-12 m max |s|): never better
    flow = kept_blocks(p, pruneopt.solve(p, solver="flow").decision)
    assert (got >= flow - 1e-14).all()


def test_blocks_below_float32_range_still_get_their_optimum():
    """Blocks 1e-45 of the largest score underflow float32 after scaling: the absolute term
    of the bound flags them, and float64 decides them."""
    rng = np.random.default_rng(1)
    w = np.abs(rng.standard_normal((8, 64)))
    w[:, 4:] *= 1e-45
    p = TransposableNM(w, 2, 4)
    sol = pruneopt.solve(p, solver="enumerate")
    assert sol.info["rescored_blocks"] >= p.num_blocks - 2
    tiny = w[:, 4:] * 1e45
    kept = float((tiny * sol.decision[:, 4:]).sum())
    assert kept == pytest.approx(brute(TransposableNM(tiny, 2, 4)), rel=1e-12)


def test_error_bound_holds_against_float64():
    """The float32 scores of the solver's own product stay within the stated bound."""
    rng = np.random.default_rng(0)
    n, m = 2, 4
    pats = transposable_patterns(n, m, False).reshape(-1, m * m)
    w = np.abs(rng.standard_normal((5000, m * m))) * rng.choice([1e-3, 1, 1e3], (5000, 1))
    scale = power_of_two_scale(float(w.max()))
    ws = w * scale
    s32 = ws.astype(np.float32) @ pats.T.astype(np.float32)
    exact = ws @ pats.T.astype(float)
    rel, absolute = float32_error(n, m)
    bound = rel * ws.sum(axis=1, keepdims=True) + absolute
    assert (np.abs(s32 - exact) <= bound).all()


def test_time_limit_returns_a_feasible_mask():
    w = np.abs(np.random.default_rng(0).standard_normal((512, 512)))
    p = TransposableNM(w, 2, 4)
    sol = pruneopt.solve(p, solver="enumerate", time_limit=1e-9)
    assert sol.status == "time_limit" and sol.bound >= sol.objective
    p.check(sol.decision)


@SETTINGS
@given(seed=st.integers(0, 2**16), exp=st.integers(-300, 300), mant=st.floats(1.0, 9.99),
       exactly=st.booleans(), signed=st.booleans(), nm=st.sampled_from([(2, 4), (1, 4), (3, 4)]))
def test_any_positive_factor_gives_the_same_mask(seed, exp, mant, exactly, signed, nm):
    n, m = nm
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4 * m, 6 * m))
    w = w if signed else np.abs(w)
    a = pruneopt.solve(TransposableNM(w, n, m, exactly=exactly), solver="enumerate")
    b = pruneopt.solve(TransposableNM(w * (mant * 10.0**exp), n, m, exactly=exactly),
                       solver="enumerate")
    assert a.status == b.status == "optimal"
    assert np.array_equal(a.decision, b.decision)  # continuous scores: a unique optimum
    assert a.objective == pytest.approx(brute(TransposableNM(w, n, m, exactly=exactly)),
                                        rel=1e-12, abs=1e-12)
