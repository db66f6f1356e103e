"""LayerBudget ``dp`` (Pareto-frontier search): exact against brute force and HiGHS, honest
bounds, the same answer at every scale, edge budgets, time limits."""

from __future__ import annotations

import numpy as np
import pytest
from cases_layer_budget import brute_layer_budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.formulations import LayerBudget

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tables(draw, max_layers: int = 6, max_levels: int = 4):
    """Small ragged tables: real or integer values (integers make ties and equal slopes),
    duplicated layers, negative errors; the budget anywhere from the least to the most cost."""
    integer = draw(st.booleans())
    L = draw(st.integers(1, max_layers))
    value = st.integers(0, 6).map(float) if integer else st.floats(0, 10, allow_nan=False)
    err = st.integers(-3, 6).map(float) if integer else st.floats(-3, 10, allow_nan=False)
    costs, errors = [], []
    for _ in range(L):
        if costs and draw(st.booleans()):  # a duplicate of an earlier layer
            i = draw(st.integers(0, len(costs) - 1))
            costs.append(costs[i].copy())
            errors.append(errors[i].copy())
            continue
        K = draw(st.integers(1, max_levels))
        costs.append(np.array(draw(st.lists(value, min_size=K, max_size=K))))
        errors.append(np.array(draw(st.lists(err, min_size=K, max_size=K))))
    lo = sum(float(c.min()) for c in costs)
    hi = sum(float(c.max()) for c in costs)
    where = draw(st.sampled_from([0.0, 1.0] + [None] * 8))  # the edges, or anywhere between
    t = draw(st.floats(0, 1)) if where is None else where
    budget = lo + t * (hi - lo)
    if integer:
        budget = float(np.floor(budget + 1e-9))
    return LayerBudget(costs, errors, max(budget, lo))


def tol(p: LayerBudget) -> float:
    return 1e-9 * max(p.objective_scale(), 1.0)


def assert_exact(p: LayerBudget, sol, opt: float) -> None:
    assert sol.status == "optimal"
    assert p.cost(sol.decision) <= p.budget + p.tolerance
    assert sol.objective == pytest.approx(opt, abs=tol(p))
    assert sol.bound == pytest.approx(sol.objective, abs=tol(p))


@settings(SETTINGS, max_examples=150)
@given(tables())
def test_dp_equals_brute_force(p):
    assert_exact(p, pruneopt.solve(p, solver="dp"), brute_layer_budget(p))


@SETTINGS
@given(tables(max_layers=4, max_levels=4), st.floats(1e-6, 1e6), st.floats(1e-6, 1e6))
def test_same_answer_at_every_scale(p, a, b):
    """Costs times ``a`` and errors times ``b`` (independent positive factors): the same
    status and the optimum times ``b``."""
    base = pruneopt.solve(p, solver="dp")
    q = LayerBudget([a * c for c in p.costs], [b * e for e in p.errors], a * p.budget)
    sol = pruneopt.solve(q, solver="dp")
    assert sol.status == base.status == "optimal"
    assert sol.objective == pytest.approx(b * base.objective, abs=b * tol(p) + 1e-9 * abs(
        b * base.objective))
    assert q.cost(sol.decision) <= q.budget + q.tolerance


def test_edge_budgets_cheapest_only_and_everything_fits():
    rng = np.random.default_rng(0)
    C = rng.uniform(1, 2, (300, 20))
    E = rng.uniform(0, 1, (300, 20))
    only = LayerBudget(C, E, float(C.min(axis=1).sum()))  # only the cheapest levels fit
    sol = pruneopt.solve(only, solver="dp")
    assert sol.status == "optimal"
    assert sol.decision.tolist() == C.argmin(axis=1).tolist()
    every = LayerBudget(C, E, float(C.max(axis=1).sum()))  # every choice fits
    sol = pruneopt.solve(every, solver="dp")
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(float(E.min(axis=1).sum()), rel=1e-12)


def families(L: int, seed: int):
    """A smooth SPDY-like table, a non-convex one and an integer one with duplicated layers."""
    rng = np.random.default_rng(seed)
    K = 30
    s = np.linspace(0, 0.95, K)
    dense = rng.uniform(1, 3, (L, 1))
    convex_c = dense * (1 - s * rng.uniform(0.6, 0.9, (L, 1)))
    convex_e = rng.lognormal(0, 1, (L, 1)) * (np.exp(3 * s) - 1) * (1 + rng.normal(0, .03, (L, K)))
    noisy_c = convex_c * (1 + rng.normal(0, 0.05, (L, K)))
    noisy_e = np.abs(convex_e * (1 + rng.normal(0, 0.3, (L, K))))
    prof_c = np.round(rng.uniform(1, 20, (5, K)))
    prof_e = np.round(rng.uniform(0, 20, (5, K)))
    ties_c, ties_e = prof_c[np.arange(L) % 5], prof_e[np.arange(L) % 5]
    for c, e, div in ((convex_c, convex_e, 1.5), (noisy_c, noisy_e, 2.0), (ties_c, ties_e, None)):
        budget = c[:, 0].sum() / div if div else float(np.floor(c.mean(axis=1).sum()))
        yield LayerBudget(c, e, max(budget, c.min(axis=1).sum()))


@pytest.mark.parametrize("seed", range(2))
def test_dp_equals_highs_and_cpsat_on_medium_tables(seed):
    for i, p in enumerate(families(150, seed)):
        sol = pruneopt.solve(p, solver="dp")
        ref = pruneopt.solve(p, solver="highs", time_limit=60)
        assert sol.status == ref.status == "optimal"
        assert sol.objective == pytest.approx(ref.objective, rel=1e-7)
        assert sol.objective <= ref.objective + tol(p)
        if i == 2:  # integer table: CP-SAT is exact too
            cp = pruneopt.solve(p, solver="cpsat", time_limit=60)
            assert cp.status == "optimal" and cp.objective == sol.objective


def test_time_limit_gives_an_honest_status():
    p = next(iter(families(2000, 3)))
    opt = pruneopt.solve(p, solver="dp")
    assert opt.status == "optimal"
    for limit in (1e-6, 1e-3):
        s = pruneopt.solve(p, solver="dp", time_limit=limit)
        assert s.status in ("optimal", "time_limit")
        assert p.cost(s.decision) <= p.budget + p.tolerance
        assert s.bound <= opt.objective + tol(p) <= s.objective + 2 * tol(p)
        if s.status == "optimal":
            assert s.objective == pytest.approx(opt.objective, abs=tol(p))



@pytest.mark.parametrize("seed", range(60))
def test_dp_equals_brute_force_on_dense_random_tables(seed):
    # uniform real values: the LP rarely meets the answer here, so the search must prove it
    rng = np.random.default_rng(seed)
    L, K = 6, 4
    C = rng.uniform(0, 1, (L, K))
    E = rng.uniform(-1, 1, (L, K)) if seed % 2 else -np.sort(rng.uniform(0, 1, (L, K)))
    lo, hi = C.min(axis=1).sum(), C.max(axis=1).sum()
    p = LayerBudget(C, E, lo + rng.uniform(0.1, 0.9) * (hi - lo))
    assert_exact(p, pruneopt.solve(p, solver="dp"), brute_layer_budget(p))
