"""LayerBudget: validation, exports, and every solver against brute force and each other."""

from __future__ import annotations

import numpy as np
import pytest
from cases_layer_budget import brute_layer_budget, random_table

import pruneopt
from pruneopt.formulations import LayerBudget
from pruneopt.solvers.budget_dp import Flat, bucket_dp, frontier_search, levels_of, lp_bound, reduce


def _table(L, K, seed, speedup=1.5):
    rng = np.random.default_rng(seed)
    s = np.linspace(0, 0.95, K)
    costs = [rng.uniform(1, 3) * (1 - s * rng.uniform(0.6, 0.9)) for _ in range(L)]
    errors = [rng.lognormal() * (np.exp(3 * s) - 1) * (1 + rng.normal(0, 0.03, K))
              for _ in range(L)]
    return LayerBudget(costs, errors, sum(c[0] for c in costs) / speedup)


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize(("costs", "errors", "budget", "match"), [
    ([[1, 2], [1]], [[1, 2]], 5, "2 layers but errors has 1"),
    ([[1, 2], [1]], [[1, 2], [1, 2]], 5, "layer 1: costs has 1 levels but errors has 2"),
    ([[1, np.nan]], [[1, 2]], 5, "NaN or infinite"),
    ([[1, 2]], [[np.inf, 2]], 5, "NaN or infinite"),
    ([[1, -2]], [[1, 2]], 5, "costs must be >= 0"),
    ([[1, 2], []], [[1, 2], []], 5, "empty"),
    ([], [], 5, "no layers"),
    ([[1, 2], [3, 4]], [[1, 2], [3, 4]], 3.5, "minimum achievable cost .* is 4"),
    ([[1, 2]], [[1, 2]], float("nan"), "budget must be finite"),
    ([[1, 2]], [[1, 2]], "x", "budget must be a number"),
    (np.ones((2, 2, 2)), np.ones((2, 2, 2)), 5, "2-D"),
    ("abc", "abc", 5, "list of 1-D arrays"),
])
def test_bad_input(costs, errors, budget, match):
    with pytest.raises(ValueError, match=match):
        LayerBudget(costs, errors, budget)


def test_bad_decisions():
    p = LayerBudget([[3, 1], [2, 1, 0]], [[0, 1], [0, 1, 2]], 3)
    with pytest.raises(ValueError, match="one entry per layer"):
        p.check([0])
    with pytest.raises(ValueError, match="out of range"):
        p.check([0, 3])
    with pytest.raises(ValueError, match="integers"):
        p.check([0.5, 1])
    with pytest.raises(ValueError, match="over the budget"):
        p.check([0, 0])
    assert p.check([1, 0]).tolist() == [1, 0]
    assert p.objective([1, 2]) == 3 and p.cost([1, 2]) == 1


def test_unknown_solver_and_options():
    p = random_table(0)
    with pytest.raises(ValueError, match="unknown solver"):
        pruneopt.solve(p, solver="nope")
    with pytest.raises(ValueError, match="buckets"):
        pruneopt.solve(p, solver="dp", buckets=0)
    with pytest.raises(ValueError, match="cost_scale"):
        pruneopt.solve(p, solver="cpsat", cost_scale=0)


def test_inputs_not_modified_and_equivalent_forms():
    import torch

    C = np.array([[3.0, 2.0, 1.0], [2.0, 1.0, 0.5]])
    E = np.array([[0.0, 1.0, 3.0], [0.0, 0.5, 2.0]])
    C0, E0 = C.copy(), E.copy()
    a = LayerBudget(C, E, 3.5)
    b = LayerBudget(list(C), [list(e) for e in E], 3.5)
    c = LayerBudget(torch.tensor(C), torch.tensor(E), 3.5)
    for p in (a, b, c):
        assert pruneopt.solve(p).objective == pytest.approx(brute_layer_budget(p))
    assert (C == C0).all() and (E == E0).all()
    assert "minimize" in str(a) and "\\sum" in a._repr_latex_()


# -- exports ---------------------------------------------------------------------------------

def test_milp_export_and_pyomo():
    p = random_table(3)
    form = p.to_milp()
    assert form.shape == (p.n_layers + 1, int(p.levels.sum()))
    x = np.zeros(form.shape[1])
    lv = pruneopt.solve(p).decision
    offs = np.concatenate([[0], np.cumsum(p.levels)])
    x[offs[:-1] + lv] = 1
    act = form.A @ x
    assert np.all(act >= form.row_lower - 1e-9) and np.all(act <= form.row_upper + 1e-9)
    assert form.c @ x + form.offset == pytest.approx(p.objective(lv))
    assert form.decode(x).tolist() == lv.tolist()
    m = p.to_pyomo()
    assert len(m.x) == form.shape[1]


# -- solvers vs brute force --------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_dp_matches_brute_force(seed):
    p = random_table(1000 + seed, integer=seed % 2 == 0, max_layers=6, max_levels=4)
    opt = brute_layer_budget(p)
    sol = pruneopt.solve(p)
    assert sol.solver == "dp" and sol.status == "optimal"
    assert sol.objective == pytest.approx(opt, abs=1e-9)
    assert p.cost(sol.decision) <= p.budget + p.tolerance
    # the raw SPDY DP: within budget at every bucket count, its bound below the optimum
    for buckets in (1, 3, 17, 1000):
        s = pruneopt.solve(p, solver="dp_round", buckets=buckets)
        assert p.cost(s.decision) <= p.budget + p.tolerance
        assert s.bound <= opt + 1e-9 <= s.objective + 2e-9
    g = pruneopt.solve(p, solver="greedy")
    assert g.bound <= opt + 1e-9 <= g.objective + 2e-9


def test_edge_budgets():
    costs = [[2.0, 1.0, 0.0], [4.0, 2.0], [1.0]]
    errors = [[0.0, 1.0, 5.0], [0.0, 3.0], [-1.0]]
    # budget exactly the minimum cost: only the cheapest levels
    p = LayerBudget(costs, errors, 3.0)
    sol = pruneopt.solve(p)
    assert sol.status == "optimal" and sol.decision.tolist() == [2, 1, 0]
    # budget met exactly by the optimum (integer ties)
    p = LayerBudget(costs, errors, 5.0)
    assert pruneopt.solve(p).objective == brute_layer_budget(p) == 2.0
    # budget above the maximum: every layer at its least error
    p = LayerBudget(costs, errors, 100.0)
    assert pruneopt.solve(p).decision.tolist() == [0, 0, 0]
    for name in pruneopt.available(p):
        assert pruneopt.solve(p, solver=name).objective == -1.0


def test_nearest_rounding_goes_over_budget_up_rounding_does_not():
    # three layers whose costly level takes 0.14 of a 0.4 budget; 4 buckets of 0.1
    p = LayerBudget([[0.14, 0.0]] * 3, [[0.0, 1.0]] * 3, 0.4)
    red = reduce(p, pareto=False)
    near = levels_of(red, bucket_dp(red, 4, "nearest")[0])  # 0.14 -> 1 bucket: 3 "fit" in 4
    assert p.cost(near) > p.budget  # 0.42: over budget, as SPDY's reference rounding can be
    up = levels_of(red, bucket_dp(red, 4, "up")[0])  # 0.14 -> 2 buckets: two of them fit
    assert p.cost(up) <= p.budget and p.objective(up) == 1.0
    _, low = bucket_dp(red, 4, "down")  # 0.14 -> 1 bucket: a valid lower bound
    assert low <= brute_layer_budget(p) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_default_equals_highs_on_realistic_tables(seed):
    p = _table(120, 30, seed)
    a = pruneopt.solve(p)
    b = pruneopt.solve(p, solver="highs")
    assert a.status == b.status == "optimal"
    assert a.objective == pytest.approx(b.objective, rel=1e-7)
    assert p.cost(a.decision) <= p.budget
    g = pruneopt.solve(p, solver="greedy")
    assert g.bound <= a.objective + 1e-9 <= g.objective + 1e-9


def test_certify_false_reports_bound_and_gap():
    p = _table(80, 20, 5)
    opt = pruneopt.solve(p).objective
    s = pruneopt.solve(p, solver="dp", certify=False, buckets=200)
    assert s.status in ("optimal", "feasible")
    assert s.bound <= opt + 1e-9 <= s.objective + 1e-9
    assert s.gap is not None and s.gap >= 0


def test_search_falls_back_to_milp_when_too_many_states():
    p = _table(60, 20, 7)
    a = pruneopt.solve(p)
    b = pruneopt.solve(p, max_states=1)
    assert b.status == "optimal" and b.proof in (
        "LP bound meets the answer", "DP lower bound meets the answer",
        "HiGHS on the reduced table")
    assert b.objective == pytest.approx(a.objective, rel=1e-9)


def test_frontier_search_exact_on_small_tables():
    # the search alone, from the greedy's answer: it finds every better answer (or proves
    # there is none), whatever the incumbent
    for seed in range(10):
        p = random_table(500 + seed, max_layers=6, max_levels=4)
        flat = Flat.of(p)
        alive = np.ones(flat.d.size, dtype=bool)
        choice, _, lb, _ = lp_bound(flat, alive)
        ub = float(flat.e[choice].sum())
        status, fc, pruned, _ = frontier_search(flat, alive, ub - 1e-9, None, 10**6)
        assert status == "done"
        best = ub if fc is None else float(flat.e[fc].sum())
        assert best == pytest.approx(brute_layer_budget(p), abs=1e-9)
        assert min(best, pruned) <= brute_layer_budget(p) + 1e-9


def test_cpsat_exact_on_integer_tables_and_honest_on_real_ones():
    p = random_table(7, integer=True)
    s = pruneopt.solve(p, solver="cpsat")
    assert s.status == "optimal" and s.info["cost_exact"] and s.info["error_exact"]
    assert s.objective == brute_layer_budget(p)
    q = _table(30, 10, 1)
    s = pruneopt.solve(q, solver="cpsat", time_limit=20)
    assert not s.info["cost_exact"]
    assert q.cost(s.decision) <= q.budget
    assert s.bound <= pruneopt.solve(q).objective + 1e-9


def test_time_limit_keeps_a_within_budget_answer_and_a_valid_bound():
    p = _table(150, 30, 11)
    opt = pruneopt.solve(p).objective
    s = pruneopt.solve(p, time_limit=1e-3)
    assert s.status in ("optimal", "time_limit", "feasible")
    assert p.cost(s.decision) <= p.budget + p.tolerance
    assert s.bound <= opt + 1e-9 <= s.objective + 1e-9
