"""Class-aware MMD selection: bad input, the counts, the bound, and the domain-shift helpers
(EM prior, CORAL, KMM, iterated selection in a learned space)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases_mmd import brute_mmd, labelled
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pruneopt
from pruneopt.adapters.domain_shift import coral, em_class_mix, kmm_weights, pseudo_label_mix
from pruneopt.adapters.mmd import prune_dataset, select_mmd, target_class_mix
from pruneopt.formulations import MMDSelection
from pruneopt.formulations.mmd import apportion
from pruneopt.solvers.mmd_heuristics import relaxation


def data(n=9, m=5, d=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d))


LABELS = [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep": 4, "class_keep": {0: 1, 1: 1, 2: 1}}, "adds up to 3 points but keep=4"),
        ({"keep": None, "class_keep": {0: 4, 1: 1}}, "class 0 has 3 source points, fewer "
                                                     "than its class_keep 4"),
        ({"keep": 2, "class_keep": {0: 1, 7: 1}}, "class 7 is not in the source labels"),
        ({"keep": 2, "class_mix": {0: 0.5, 9: 0.5}}, "class 9 is not in the source labels"),
        ({"keep": 2, "class_mix": {0: -1.0}}, r"class_mix\[0\] must be a finite number >= 0"),
        ({"keep": 2, "class_mix": {0: 0.0}}, "class_mix is all zero"),
        ({"keep": 2, "class_mix": "target"}, "class_mix must be a mapping"),
        ({"keep": 2, "class_keep": {0: 1, 1: 1}, "class_mix": "source"}, "exactly one of"),
        ({"keep": 2}, "exactly one of"),
        ({"keep": None, "class_mix": "source"}, "class_mix needs keep="),
        ({"keep": 2, "class_keep": {0: 1.5, 1: 0.5}}, r"class_keep\[0\] must be an integer"),
        ({"keep": 2, "class_keep": [1, 1]}, "class_keep must be a mapping"),
    ],
)
def test_bad_class_counts_name_the_class(kwargs, match):
    S, T = data()
    with pytest.raises(ValueError, match=match):
        MMDSelection(S, T, labels=LABELS, **kwargs)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (LABELS[:-1], r"one entry per source point \(9\), got 8"),
        ([[0, 1, 2]] * 3, "1-D sequence"),
        ([0.5] * 9, "non-integral"),
        ([True, False] * 4 + [True], "got booleans"),
        ([0, "a", 1, 2, 0, 1, 2, 0, 1], "integers or strings"),
        ([float("nan")] * 9, "non-integral or NaN"),
    ],
)
def test_bad_labels(labels, match):
    S, T = data()
    with pytest.raises(ValueError, match=match):
        MMDSelection(S, T, 3, labels=labels, class_mix="source")


def test_counts_without_labels_and_check_names_the_class():
    S, T = data()
    with pytest.raises(ValueError, match="need labels="):
        MMDSelection(S, T, 3, class_keep={0: 3})
    p = MMDSelection(S, T, None, labels=LABELS, class_keep={0: 2, 2: 1})
    assert p.keep == 3 and p.quota.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="keeps 1 points of class 0; class_keep requires 2"):
        p.check([0, 3, 6])
    assert p.class_counts([0, 1, 6]) == {0: 2, 1: 0, 2: 1}
    assert "k_c" in p.math() and "classes=3" in repr(p)


def test_with_keep_shares_the_kernel_and_changes_only_the_counts():
    S, T = data(n=30)
    y = np.arange(30) % 3
    base = MMDSelection(S, T, 6)
    K = base.source_gram()
    p = base.with_keep(9, labels=y, class_mix={0: 2, 1: 1, 2: 0})
    assert p.source_gram() is K and p.quota.tolist() == [6, 3, 0]
    assert base.keep == 6 and not base.class_constrained  # the original is unchanged
    q = p.with_keep(3, class_keep={1: 3})  # reuses p's labels
    assert q.quota.tolist() == [0, 3, 0]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=6),
       mix=st.lists(st.floats(0, 1), min_size=6, max_size=6), frac=st.floats(0.01, 1.0))
def test_apportion_adds_up_fits_and_is_close(sizes, mix, frac):
    sizes = np.array(sizes)
    p = np.array(mix[: len(sizes)])
    if sizes.sum() == 0 or p.sum() == 0:
        return
    keep = max(1, int(frac * sizes.sum()))
    q = apportion(p, sizes, keep)
    assert q.sum() == keep and np.all(q >= 0) and np.all(q <= sizes)
    share = keep * p / p.sum()
    # a class below both its share and its size could only be short by the rounding
    short = (q < sizes) & (q < share - 1 + 1e-9)
    assert not short.any(), (q, share)


def test_source_mix_is_stratified():
    S, T = data(n=40)
    y = np.repeat([0, 1, 2, 3], [10, 20, 5, 5])
    p = MMDSelection(S, T, 8, labels=y, class_mix="source")
    assert p.quota.tolist() == [2, 4, 1, 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_class_relaxation_bound_is_below_brute_force_and_above_plain(seed):
    p = labelled(200 + seed, n=10, class_keep={0: 3, 1: 1, 2: 0})
    lb = relaxation(p)[1]
    opt = brute_mmd(p)
    assert lb <= opt + 1e-9 * max(1.0, abs(opt))
    # more constraints: the class-aware relaxation is at least the plain one
    plain = relaxation(p.with_keep(4))[1]
    assert lb >= plain - 1e-9


def test_cvxpy_export_with_classes_is_exact():
    cvxpy = pytest.importorskip("cvxpy")
    if "SCIP" not in cvxpy.installed_solvers():
        pytest.skip("cvxpy without SCIP")
    p = labelled(300, n=9, class_keep={0: 2, 1: 2, 2: 1})
    prob = p.to_cvxpy()
    prob.solve(solver="SCIP")
    x = prob.variables()[0].value
    idx = np.flatnonzero(x > 0.5)
    assert p.objective(idx) == pytest.approx(brute_mmd(p), rel=1e-6, abs=1e-9)
    rel = p.to_cvxpy(relax=True)
    rel.solve()
    assert rel.value <= brute_mmd(p) + 1e-7


def test_pyomo_export_has_one_count_per_class():
    pyo = pytest.importorskip("pyomo.environ")
    p = labelled(310, n=7, labels=[0, 0, 1, 1, 1, 2, 2], class_keep={0: 1, 1: 2, 2: 0})
    mdl = p.to_pyomo()
    idx = [1, 2, 4]
    for i in range(7):
        mdl.x[i].value = 1.0 if i in idx else 0.0
    assert pyo.value(mdl.mmd2) == pytest.approx(p.objective(idx), rel=1e-10)
    assert [pyo.value(mdl.class_keep[c].body) for c in range(3)] == [1, 2, 0]
    assert [pyo.value(mdl.class_keep[c].upper) for c in range(3)] == [1, 2, 0]


@pytest.mark.parametrize("solver", ["relax-swap", "greedy", "swap", "lowrank", "relax-round"])
def test_every_heuristic_keeps_the_counts_on_a_larger_instance(solver):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, 300)
    S = rng.normal(size=(300, 4)) + y[:, None]
    T = rng.normal(size=(120, 4)) + 0.5
    p = MMDSelection(S, T, None, labels=y, class_keep={0: 30, 1: 5, 2: 0, 3: 15})
    sol = pruneopt.solve(p, solver=solver)
    assert p.class_counts(sol.decision) == {0: 30, 1: 5, 2: 0, 3: 15}
    if sol.bound is not None:
        assert sol.bound <= sol.objective + 1e-12


def test_backward_greedy_and_random_swap_with_classes():
    p = labelled(400, n=10, class_keep={0: 2, 1: 2, 2: 1})
    opt = brute_mmd(p)
    for opts in ({"direction": "backward"},):
        sol = pruneopt.solve(p, solver="greedy", **opts)
        assert sol.objective >= opt - 1e-12
    for seed in range(3):
        sol = pruneopt.solve(p, solver="swap", start="random", seed=seed)
        p.check(sol.decision)


# ------------------------------------------------------------------ domain-shift helpers


def test_em_recovers_a_label_shift_that_pseudo_labels_miss():
    rng = np.random.default_rng(0)
    # two 1-D Gaussians (means -1, +1, sd 1); source 50/50, target 90/10
    true = np.array([0.9, 0.1])
    yt = (rng.random(20000) > true[0]).astype(int)
    x = rng.normal(size=20000) + np.where(yt == 1, 1.0, -1.0)
    # Bayes posterior of the balanced source model
    l0, l1 = np.exp(-0.5 * (x + 1) ** 2), np.exp(-0.5 * (x - 1) ** 2)
    P = np.stack([l0, l1], 1) / (l0 + l1)[:, None]
    em = em_class_mix(P, [0.5, 0.5])
    pseudo = pseudo_label_mix(P)
    assert np.abs(em - true).max() < 0.02
    assert np.abs(pseudo - true).max() > 0.05  # the confusion biases the plain estimate
    with pytest.raises(ValueError, match="softmax"):
        em_class_mix(P * 2, [0.5, 0.5])
    with pytest.raises(ValueError, match="source_prior has 3 classes, probs has 2"):
        em_class_mix(P, [0.3, 0.3, 0.4])


def test_coral_matches_the_target_covariance():
    rng = np.random.default_rng(1)
    S = rng.normal(size=(500, 3)) @ np.diag([3.0, 1.0, 0.2])
    T = rng.normal(size=(400, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0], [0, 0, 2.0]]) + 4
    A = coral(S, T, eps=1e-9)
    assert np.allclose(np.cov(A, rowvar=False), np.cov(T, rowvar=False), atol=1e-6)
    assert np.allclose(A.mean(0), T.mean(0))
    with pytest.raises(ValueError, match="different feature dimensions"):
        coral(S, T[:, :2])


def test_kmm_is_the_relaxation_of_mmd_selection():
    S, T = data(n=40, m=30, d=3, seed=3)
    T = T + 0.7
    B = 4.0
    p = MMDSelection(S, T, 10)  # keep = n / B
    beta = kmm_weights(S, T, B=B, iters=3000, problem=p)
    assert beta.sum() == pytest.approx(40) and beta.min() >= 0 and beta.max() <= B + 1e-6
    K, c, tt = p.quadratic()
    w = beta / 40
    kmm_mmd = w @ K @ w - 2 * c @ w + tt
    x, lb, _ = relaxation(p)
    xr = x / x.sum()
    relax_mmd = xr @ K @ xr - 2 * c @ xr + tt
    assert kmm_mmd == pytest.approx(relax_mmd, rel=1e-3, abs=1e-6)
    assert lb <= kmm_mmd + 1e-6


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))


def test_iterated_class_aware_selection_in_a_learned_space():
    rng = np.random.default_rng(0)
    ys = np.repeat([0, 1], 40)
    Xs = (rng.normal(size=(80, 2)) + np.where(ys[:, None] == 1, 2.0, -2.0)).astype(np.float32)
    Xt = (rng.normal(size=(50, 2)) + [-2.0, -2.0] + 0.3).astype(np.float32)  # mostly class 0
    src, tgt = torch.from_numpy(Xs), torch.from_numpy(Xt)
    calls = []

    def fit(idx):
        calls.append(len(idx))
        net = _mlp(len(calls))
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(50):
            opt.zero_grad()
            nn.functional.cross_entropy(net(src[idx]), torch.from_numpy(ys[idx])).backward()
            opt.step()
        return net

    model = fit(np.arange(80))
    mask, sol = prune_dataset(model, src, tgt, 20, layer="1", rounds=3, fit=fit, labels=ys,
                              class_mix="em", as_mask=True, solver="greedy")
    assert len(sol.info["rounds"]) == 3 and calls == [80, 20, 20]
    mix = sol.info["rounds"][-1]["class_mix"]
    assert mix[0] > 0.8  # the target is class 0
    kept = ys[mask.numpy()]
    assert (kept == 0).sum() >= 16
    assert target_class_mix(model, tgt, ys, method="pseudo")[0] > 0.8
    with pytest.raises(ValueError, match="rounds > 1 needs fit="):
        prune_dataset(model, src, tgt, 20, rounds=2)
    sol2 = select_mmd(Xs, Xt, 10, labels=ys, class_keep={0: 5, 1: 5}, solver="relax-swap")
    assert np.bincount(ys[sol2.decision]).tolist() == [5, 5]
