"""Training-time masks (DPF, SR-STE, masked gradient): exact N:M masks after every recompute,
the gradient rules, the solvers against brute force, resuming from a state_dict, finalize,
and bad settings refused at construction."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from pruneopt.adapters.dynamic_masks import DynamicSparsifier, wanda_input_norms
from pruneopt.adapters.mask_schedule import SparsitySchedule
from pruneopt.adapters.mask_stats import plot_statistics
from pruneopt.adapters.nm import is_nm, verify_nm


def mlp(seed: int = 0, sizes=(16, 32, 8)) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.ReLU(), nn.Linear(sizes[1], sizes[2]))


def batch(t: int, d_in: int = 16, d_out: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(32, d_in, generator=g), torch.randn(32, d_out, generator=g)


def train_step(net, opt, sp, t) -> float:
    x, y = batch(t)
    loss = ((net(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if sp is not None:
        sp.step()
    return float(loss.detach())


def kept(scores: torch.Tensor, mask: torch.Tensor) -> float:
    return float(scores.double()[mask].sum())


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("solver", [None, "greedy", "flow"])
def test_masks_are_transposable_nm_after_every_recompute(solver):
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    sp = DynamicSparsifier(net, "transposable", 1, 4, every=3, ramp_steps=12, solver=solver)
    seen = set()
    for t in range(20):
        train_step(net, opt, None, t)
        rec = sp.step()
        if rec is None:
            continue
        seen.add(rec["n"])
        for mk in sp.masks.values():
            assert is_nm(mk, rec["n"], 4) and is_nm(mk.T, rec["n"], 4, transposable=False)
        assert 0.0 <= rec["flip_rate"] <= 1.0
    assert sp.statistics[0]["n"] == 4 and sp.statistics[0]["density"] == 1.0  # dense at 0
    assert seen == {3, 2, 1}  # the ramp went through every pattern down to the target
    assert sp.statistics[-1]["density"] <= 0.25


def test_plain_nm_and_unstructured_patterns():
    net = mlp()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    sp = DynamicSparsifier(net, "nm", 2, 8, every=2)
    for t in range(4):
        train_step(net, opt, sp, t)
    assert all(is_nm(mk, 2, 8, transposable=False) for mk in sp.masks.values())
    net = mlp()
    sp = DynamicSparsifier(net, "unstructured", sparsity=0.9, every=2, ramp_steps=6)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    dens = []
    for t in range(8):
        train_step(net, opt, sp, t)
        dens.append(sp.density())
    assert dens == sorted(dens, reverse=True)
    for name, mk in sp.masks.items():
        assert abs(mk.float().mean().item() - 0.1) <= 1.0 / mk.numel()
        s = sp.scores(name)  # the top-k: every kept score >= every pruned score
        assert s[mk].min() >= s[~mk].max()


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 4), m=st.sampled_from([4, 8]), r=st.integers(1, 3), c=st.integers(1, 3),
       solver=st.sampled_from([None, "greedy"]), seed=st.integers(0, 2**16))
def test_property_every_recompute_is_transposable(n, m, r, c, solver, seed):
    n = min(n, m)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(c * m, r * m))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sp = DynamicSparsifier(net, "transposable", n, m, every=1, ramp_steps=3, solver=solver,
                           include="*")
    for _ in range(4):
        loss = net(torch.randn(4, c * m)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec = sp.step()
        mk = sp.masks["0"]
        assert is_nm(mk, rec["n"], m) and rec["n"] >= n
    assert rec["n"] == n


@settings(max_examples=60, deadline=None)
@given(pattern=st.sampled_from(["transposable", "unstructured"]), n=st.integers(1, 8),
       s_i=st.floats(0, 1), start=st.integers(0, 50), steps=st.integers(0, 200),
       target=st.floats(0, 1))
def test_property_schedule_is_a_monotone_ramp(pattern, n, s_i, start, steps, target):
    m = 8
    s_f = target if pattern == "unstructured" else 1 - n / m
    s_i = min(s_i, s_f)
    sch = SparsitySchedule(pattern=pattern, n=n, m=m, initial_sparsity=s_i, ramp_start=start,
                           ramp_steps=steps, every=5,
                           sparsity=target if pattern == "unstructured" else None)
    ts = range(0, start + steps + 10)
    s = [sch.sparsity_at(t) for t in ts]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(s))
    assert all(s_i - 1e-12 <= v <= s_f + 1e-12 for v in s)
    assert sch.sparsity_at(start + steps) == pytest.approx(s_f)
    nts = [sch.n_at(t) for t in ts]
    assert all(b <= a for a, b in itertools.pairwise(nts))
    if pattern == "transposable":
        assert nts[-1] == n and all(n <= v <= m for v in nts)
        assert all(sch.density_at(t) >= 1 - sch.sparsity_at(t) - 1e-12 for t in ts)
        assert set(nts) <= set(sch.patterns())


# ----------------------------------------------------------------------------- gradients


def _grads(update: str, decay=None):
    net = mlp()
    sp = DynamicSparsifier(net, "transposable", 2, 4, update=update, decay=decay, every=100)
    x, y = batch(0)
    ((net(x) - y) ** 2).mean().backward()
    return sp, {name: sp.dense_weight(name).grad.clone() for name in sp.layers}


def test_gradient_reaches_pruned_weights_under_dpf_not_under_masked():
    sp_d, g_d = _grads("dpf")
    sp_m, g_m = _grads("masked")
    for name in sp_d.layers:
        mk = sp_d.masks[name]
        assert torch.equal(mk, sp_m.masks[name])
        assert (g_d[name][~mk] != 0).float().mean() > 0.9  # the feedback of the masked model
        assert torch.all(g_m[name][~mk] == 0)
        assert torch.allclose(g_d[name][mk], g_m[name][mk])  # same gradient on kept weights


def test_srste_adds_its_decay_on_pruned_weights_only():
    sp_d, g_d = _grads("dpf")
    sp_s, g_s = _grads("srste", decay=0.5)
    for name in sp_d.layers:
        W, mk = sp_s.dense_weight(name).detach(), sp_s.masks[name]
        assert torch.allclose(g_s[name] - g_d[name], 0.5 * W * ~mk, atol=1e-7)


def test_srste_decay_shrinks_pruned_weights():
    norms = {}
    for update in ("dpf", "srste"):
        net = mlp()
        sp = DynamicSparsifier(net, "transposable", 2, 4, update=update, every=1000,
                               **({"decay": 0.2} if update == "srste" else {}))
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        before = {n: sp.dense_weight(n).detach().clone() for n in sp.layers}
        for t in range(10):
            train_step(net, opt, sp, t)
        norms[update] = [(sp.dense_weight(n).detach()[~sp.masks[n]].abs().sum() /
                          before[n][~sp.masks[n]].abs().sum()).item() for n in sp.layers]
    # SR-STE: (1 - lr lambda)^10 = 0.9^10 of the pruned magnitude, plus the gradient's part
    assert all(s < d - 0.3 for s, d in zip(norms["srste"], norms["dpf"], strict=True))
    assert all(s < 0.6 for s in norms["srste"])


# ----------------------------------------------------------------------------- solvers


def brute_force_transposable(s: np.ndarray, n: int) -> float:
    """Best kept score over all 2^16 masks of one 4x4 block with <= n per row and column."""
    bits = ((np.arange(1 << 16)[:, None] >> np.arange(16)) & 1).astype(bool)
    M = bits.reshape(-1, 4, 4)
    ok = (M.sum(2) <= n).all(1) & (M.sum(1) <= n).all(1)
    return float((M[ok] * s[None]).sum(axis=(1, 2)).max())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_exact_masks_match_brute_force_and_a_second_backend(n):
    torch.manual_seed(n)
    results = {}
    for solver in ("flow", "ortools", "enumerate"):
        net = nn.Sequential(nn.Linear(4, 4))
        net[0].weight.data = torch.randn(4, 4, generator=torch.Generator().manual_seed(n))
        sp = DynamicSparsifier(net, "transposable", n, 4, solver=solver, include="*")
        results[solver] = kept(sp.scores("0"), sp.masks["0"])
        best = brute_force_transposable(sp.scores("0").double().numpy(), n)
        assert results[solver] == pytest.approx(best, rel=1e-9)
    big = {}
    for solver in ("flow", "ortools"):  # 4:8 on a 16x32 layer, two exact backends
        torch.manual_seed(7)
        net = nn.Sequential(nn.Linear(32, 16))
        sp = DynamicSparsifier(net, "transposable", 4, 8, solver=solver, include="*")
        big[solver] = kept(sp.scores("0"), sp.masks["0"])
    assert big["flow"] == pytest.approx(big["ortools"], rel=1e-9)


@pytest.mark.parametrize("nm", [(2, 4), (1, 8), (4, 8)])
def test_greedy_keeps_at_least_half_the_exact_score(nm):
    net = mlp(sizes=(32, 64, 16))
    sp = DynamicSparsifier(net, "transposable", *nm, every=2, solver="greedy",
                           solver_options={"complete": False}, compare_exact=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(4):
        x = torch.randn(8, 32)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sp.step()
    ratios = [r["exact_ratio"] for r in sp.statistics]
    assert all(0.5 <= r <= 1.0 + 1e-12 for r in ratios)
    exact = DynamicSparsifier(mlp(sizes=(32, 64, 16)), "transposable", *nm, compare_exact=True)
    assert exact.statistics[0]["exact_ratio"] == 1.0


def test_wanda_scores_and_input_norms():
    net = mlp()
    data = [torch.randn(16, 16) for _ in range(3)]
    norms = wanda_input_norms(net, ["0", "2"], data)
    x = torch.cat(data)
    assert torch.allclose(norms["0"], x.norm(dim=0), rtol=1e-5)
    sp = DynamicSparsifier(net, "transposable", 2, 4, score="wanda", input_norms=norms)
    W = sp.dense_weight("0").detach()
    assert torch.allclose(sp.scores("0"), W.abs() * norms["0"][None, :])
    ones = {k: torch.ones_like(v) for k, v in norms.items()}
    a = DynamicSparsifier(mlp(), "transposable", 2, 4, score="wanda", input_norms=ones)
    b = DynamicSparsifier(mlp(), "transposable", 2, 4)
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks)


# ----------------------------------------------------------------------------- saving


def _setup(seed):
    net = mlp(seed)
    sp = DynamicSparsifier(net, "transposable", 2, 4, every=4, ramp_steps=12, solver="greedy")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    return net, sp, opt


def test_state_dict_round_trip_resumes_identically():
    net, sp, opt = _setup(0)
    losses, masks = [], []
    for t in range(24):
        if t == 10:
            saved = (copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict()),
                     sp.state_dict())
        losses.append(train_step(net, opt, sp, t))
        masks.append({k: v.clone() for k, v in sp.masks.items()})
    net2, sp2, opt2 = _setup(1)  # another initialization, overwritten by the load
    net2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sp2.load_state_dict(saved[2])
    assert sp2.steps == 10
    for t in range(10, 24):
        assert train_step(net2, opt2, sp2, t) == losses[t]
        assert all(torch.equal(masks[t][k], sp2.masks[k]) for k in masks[t])
    assert [r["step"] for r in sp2.statistics] == [r["step"] for r in sp.statistics]


def test_model_state_dict_alone_restores_masks_and_step():
    net, sp, opt = _setup(0)
    for t in range(9):
        train_step(net, opt, sp, t)
    net2, sp2, _ = _setup(1)
    net2.load_state_dict(net.state_dict())
    assert sp2.steps == 9
    assert all(torch.equal(sp.masks[k], sp2.masks[k]) for k in sp.masks)


def test_loading_a_state_saved_with_other_settings_is_a_value_error():
    net, sp, _ = _setup(0)
    other = DynamicSparsifier(mlp(), "transposable", 1, 4, every=4)
    with pytest.raises(ValueError, match="other settings"):
        mlp_other = other.model
        mlp_other.load_state_dict(net.state_dict())
    with pytest.raises(ValueError, match="other settings.*schedule"):
        other.load_state_dict(sp.state_dict())
    with pytest.raises(ValueError, match="not a DynamicSparsifier"):
        sp.load_state_dict({"step": 3})


def test_finalize_gives_plain_sparse_modules():
    net, sp, opt = _setup(0)
    sp.attach(opt)  # the optimizer hook calls sp.step()
    for t in range(5):
        train_step(net, opt, None, t)
    assert sp.steps == 5  # ramp unfinished (3:4): finalize solves the 2:4 target first
    masks_before = dict(sp.masks)
    model = sp.finalize()
    for name in ("0", "2"):
        mod = dict(model.named_modules())[name]
        assert type(mod) is nn.Linear and not parametrize.is_parametrized(mod)
        assert is_nm(mod.weight, 2, 4) and is_nm(mod.weight.T, 2, 4, transposable=False)
        assert (mod.weight == 0).float().mean() >= 0.5
    assert verify_nm(model, 2, 4, names=["0", "2"]) == ["0", "2"]
    assert sorted(model.state_dict()) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert masks_before
    with pytest.raises(RuntimeError, match="finalized"):
        sp.step()


def test_plot_statistics_returns_a_figure():
    net, sp, opt = _setup(0)
    for t in range(12):
        train_step(net, opt, sp, t)
    fig = plot_statistics(sp.statistics, label="greedy")
    assert len(fig.axes) == 3
    assert sp.statistics[-1]["overhead"] is not None and sp.statistics[-1]["overhead"] > 0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(pattern="transposable", n=2, m=4, include="*", sizes=(16, 30, 8)), "divisible by m"),
    (dict(pattern="nm", n=2, m=8, sizes=(12, 16, 8)), "divisible by m"),
    (dict(pattern="unstructured", sparsity=1.5), r"sparsity must be in \[0, 1\]"),
    (dict(pattern="unstructured", sparsity=-0.1), r"sparsity must be in \[0, 1\]"),
    (dict(pattern="unstructured"), "needs sparsity"),
    (dict(pattern="transposable", initial_sparsity=0.8), "above the target"),
    (dict(pattern="transposable", initial_sparsity=-0.2), "initial_sparsity"),
    (dict(pattern="transposable", sparsity=0.5), "sparsity= is for"),
    (dict(every=0), "every"),
    (dict(every=2.5), "every"),
    (dict(solver="topk"), "does not accept TransposableNM"),
    (dict(solver="no-such-solver"), "unknown solver"),
    (dict(n=4, m=8, solver="enumerate"), "enumeration is for blocks up to"),
    (dict(n=1, m=4, ramp_steps=10, solver="enumerate", sizes=(16, 16, 16)), None),
    (dict(solver="greedy", solver_options={"compete": False}), "no option 'compete'"),
    (dict(update="sgd"), "update must be"),
    (dict(update="dpf", decay=0.1), "decay is SR-STE"),
    (dict(update="srste", decay=-1.0), "decay must be"),
    (dict(score="wanda"), "needs input_norms"),
    (dict(score="taylor"), "score must be"),
    (dict(pattern="unstructured", sparsity=0.5, solver="greedy"), "top-k"),
    (dict(n=5, m=4), "n must be <= m"),
    (dict(compare_exact=True, exact_solver="greedy"), "not exact"),
    (dict(time_limit=-1), "time_limit"),
    (dict(ramp_steps=-3), "ramp_steps"),
])
def test_bad_settings_raise_at_construction(kwargs, match):
    sizes = kwargs.pop("sizes", (16, 32, 8))
    net = mlp(sizes=sizes)
    if match is None:  # a valid setting: constructs
        DynamicSparsifier(net, **kwargs)
        return
    with pytest.raises(ValueError, match=match):
        DynamicSparsifier(net, **kwargs)
    assert not any(parametrize.is_parametrized(m) for m in net.modules())  # nothing changed


def test_bad_callable_scores_and_double_registration():
    with pytest.raises(ValueError, match="returned shape"):
        DynamicSparsifier(mlp(), score=lambda name, mod, W: W.abs().flatten())
    net = mlp()
    DynamicSparsifier(net)
    with pytest.raises(ValueError, match="already carry"):
        DynamicSparsifier(net)
    with pytest.raises(ValueError, match="input_norms"):
        DynamicSparsifier(mlp(), score="wanda", input_norms={"0": torch.ones(3),
                                                            "2": torch.ones(32)})
