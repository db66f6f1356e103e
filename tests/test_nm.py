"""Transposable N:M masks: formulation, solvers against brute force and each other, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cases_nm import brute_transposable
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pruneopt
from pruneopt.formulations import NMMask, TransposableNM, mask_diversity
from pruneopt.solvers.nm_flow import certify
from pruneopt.solvers.nm_torch_flow import ssp_blocks_t


def _scores(seed, shape=(16, 16)):
    return np.abs(np.random.default_rng(seed).standard_normal(shape))


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    m=st.sampled_from([2, 3, 4]),
    exactly=st.booleans(),
)
def test_flow_matches_brute_force(data, m, exactly):
    n = data.draw(st.integers(1, m))
    blocks = data.draw(st.integers(1, 3))
    w = data.draw(arrays(np.float64, (m, blocks * m),
                         elements=st.floats(-3, 3, allow_nan=False, width=32)))
    p = TransposableNM(w, n, m, exactly=exactly)
    sol = pruneopt.solve(p, solver="flow")
    assert sol.status == "optimal"
    p.check(sol.decision)
    assert sol.objective == pytest.approx(brute_transposable(p), abs=1e-9)


@pytest.mark.parametrize("exactly", [False, True])
@pytest.mark.parametrize(("n", "m"), [(4, 8), (2, 8), (3, 6), (1, 5)])
def test_exact_solvers_agree_on_larger_blocks(n, m, exactly):
    p = TransposableNM(_scores(n * m, (4 * m, 6 * m)), n, m, exactly=exactly)
    ref = pruneopt.solve(p, solver="ortools")
    assert ref.status == "optimal"
    for solver in ("flow", "highs", "networkx"):
        sol = pruneopt.solve(p, solver=solver)
        assert sol.status == "optimal"
        assert sol.objective == pytest.approx(ref.objective, rel=1e-12)
        assert certify(p, sol.decision)


def test_highs_lp_is_integral():
    p = TransposableNM(_scores(3, (32, 32)), 2, 4)
    a = pruneopt.solve(p, solver="highs")
    b = pruneopt.solve(p, solver="ortools")
    assert a.info["lp_integral"] is True
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    assert a.bound == pytest.approx(a.objective, rel=1e-9)


def test_default_is_enumeration_for_2_4_and_flow_for_4_8():
    w = _scores(0, (64, 64))
    assert pruneopt.solvers.get_solver(TransposableNM(w, 2, 4), None).name == "enumerate"
    assert pruneopt.solvers.get_solver(TransposableNM(w, 4, 8), None).name == "flow"
    assert "enumerate" not in pruneopt.available(TransposableNM(w, 4, 8))
    with pytest.raises(ValueError, match="enumeration is for blocks"):
        pruneopt.solve(TransposableNM(w, 4, 8), solver="enumerate")


def test_certify_rejects_a_suboptimal_mask():
    p = TransposableNM(_scores(5, (8, 8)), 2, 4)
    best = pruneopt.solve(p).decision
    greedy = pruneopt.solve(p, solver="greedy", complete=False)
    assert certify(p, best)
    if greedy.objective < pruneopt.solve(p).objective - 1e-9:
        assert not certify(p, greedy.decision)
    # a feasible but clearly worse mask: keep the smallest entries
    worst = pruneopt.solve(TransposableNM(-p.scores, 2, 4, exactly=True)).decision
    assert not certify(TransposableNM(p.scores, 2, 4, exactly=True), worst)


@pytest.mark.parametrize("exactly", [False, True])
def test_greedy_is_a_2_approximation_and_completion_helps(exactly):
    p = TransposableNM(_scores(7, (128, 128)), 4, 8, exactly=exactly)
    opt = pruneopt.solve(p, solver="flow").objective
    g = pruneopt.solve(p, solver="greedy")
    assert g.status == "feasible" and g.guarantee == "approximation"
    assert opt / 2 <= g.objective <= opt + 1e-9
    assert g.bound >= opt - 1e-9
    assert g.info["completion_gain"] >= 0
    if exactly:  # completion is what makes the greedy mask feasible
        assert g.info["completion_added"] > 0
    raw = greedy_raw(p)
    assert g.objective >= raw - 1e-9


def greedy_raw(p):
    from pruneopt.solvers.nm_greedy import greedy_blocks

    w = p.blocks()
    return float((w * greedy_blocks(w, p.n, positive_only=not p.exactly)).sum())


def test_at_most_can_beat_exactly_and_never_loses():
    # rows 0 and 1 of a 3x3 block want the same two columns: with exactly 2 per row and
    # column, the third row forces a swap
    w = np.array([[10, 10, 0], [10, 10, 0], [0, 0, 0]], dtype=float)
    a = pruneopt.solve(TransposableNM(w, 2, 3))
    e = pruneopt.solve(TransposableNM(w, 2, 3, exactly=True))
    assert a.objective == 40 and e.objective == 30
    for seed in range(5):
        s = _scores(seed)
        assert (pruneopt.solve(TransposableNM(s, 2, 4)).objective
                >= pruneopt.solve(TransposableNM(s, 2, 4, exactly=True)).objective - 1e-9)


def test_mask_diversity_matches_the_paper_and_brute_force():
    assert mask_diversity("transposable", 2, 4) == 90
    assert mask_diversity("transposable", 4, 8) == 116_963_796_250
    assert mask_diversity("nm", 2, 4) == math.comb(4, 2) ** 4
    assert mask_diversity("unstructured", 2, 4) == math.comb(16, 8)
    from cases_nm import _all_masks

    for n, m in [(1, 3), (2, 3), (2, 4), (3, 4)]:
        for ex in (True, False):
            assert mask_diversity("transposable", n, m, exactly=ex) == len(_all_masks(m, n, ex))


def test_nm_mask_topk_and_torch_input_are_not_modified():
    torch = pytest.importorskip("torch")
    w = torch.randn(8, 16)
    before = w.clone()
    p = NMMask(w.abs(), 2, 4)
    sol = pruneopt.solve(p)
    assert sol.solver == "topk-torch"  # tensor scores: the torch backend, a bool tensor out
    assert sol.decision.dtype == torch.bool
    assert (sol.decision.reshape(-1, 4).sum(1) == 2).all()
    assert torch.equal(w, before)
    assert sol.objective == pytest.approx(float(w.abs().reshape(-1, 4).topk(2).values.sum()))


def test_flows_handle_dense_ties():
    """All-equal scores: the compiled flow and the torch-operations flow both keep n per line."""
    import torch

    x = ssp_blocks_t(torch.ones((50, 4, 4), dtype=torch.float64), 2).numpy()
    assert (x.sum(1) == 2).all() and (x.sum(2) == 2).all()
    sol = pruneopt.solve(TransposableNM(np.ones((40, 40)), 2, 4, exactly=True), solver="flow")
    assert sol.status == "optimal" and sol.decision.sum() == 40 * 40 // 2


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.ones(8), 2, 4), {}, "2-D"),
        ((np.ones((6, 8)), 2, 4), {}, "not divisible by m=4"),
        ((np.ones((8, 8)), 5, 4), {}, "n must be <= m"),
        ((np.ones((8, 8)), 0, 4), {}, "n must be >= 1"),
        ((np.full((8, 8), np.nan), 2, 4), {}, "NaN or infinite"),
        ((np.full((8, 8), np.inf), 2, 4), {}, "NaN or infinite"),
        ((np.ones((8, 8)), 2.5, 4), {}, "integer"),
        ((np.zeros((0, 4)), 2, 4), {}, "empty"),
    ],
)
def test_bad_input_is_a_clear_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransposableNM(*args, **kwargs)


def test_bad_solver_names_and_masks():
    p = TransposableNM(_scores(0, (8, 8)), 2, 4)
    with pytest.raises(ValueError, match="unknown solver 'gurobi-nm'.*flow"):
        pruneopt.solve(p, solver="gurobi-nm")
    with pytest.raises(ValueError, match="does not accept TransposableNM"):
        pruneopt.solve(p, solver="topk")
    with pytest.raises(ValueError, match="time_limit"):
        pruneopt.solve(p, time_limit=-1)
    with pytest.raises(ValueError, match="no option 'compelte'; its options: complete"):
        pruneopt.solve(p, solver="greedy", compelte=False)
    with pytest.raises(ValueError, match="infeasible"):
        p.check(np.ones((8, 8), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        p.check(np.ones((4, 8), dtype=bool))
    with pytest.raises(ValueError, match="formulation"):
        pruneopt.solve(np.ones((8, 8)))


def test_math_statement_and_exports():
    p = TransposableNM(_scores(0, (8, 8)), 2, 4)
    assert "sum_(j in block cols) x_ij <= 2  for each block row i" in str(p)
    assert p._repr_latex_().startswith("$$")
    form = p.to_milp()
    assert form.A.shape == (2 * 4 * 4, 64) and form.totally_unimodular
    g = p.to_networkx(block=0)
    assert g.number_of_nodes() == 2 + 8 and g.has_edge("s", "t")
    model = p.to_pyomo()
    assert len(model.x) == 64
