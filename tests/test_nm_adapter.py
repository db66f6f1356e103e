"""The N:M adapter on torch models: feasibility, optimality against brute force, no side
effects of the computing call, torch.nn.utils.prune integration, padding, bad input."""

from itertools import product

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from pruneopt.adapters.nm import (
    apply_nm_masks,
    compute_nm_masks,
    is_nm,
    make_permanent,
    nm_mask,
    prune_nm,
    select_modules,
    verify_nm,
)

# Every 4x4 0/1 pattern with at most 2 per row and per column (brute-force reference).
_ALL = np.array(list(product((0, 1), repeat=16)), dtype=bool).reshape(-1, 4, 4)
_T24 = _ALL[(_ALL.sum(axis=2) <= 2).all(axis=1) & (_ALL.sum(axis=1) <= 2).all(axis=1)]


def brute_transposable_24(s: np.ndarray) -> float:
    """Best kept score of a transposable 2:4 mask, block by block over all patterns."""
    R, C = s.shape
    total = 0.0
    for i in range(0, R, 4):
        for j in range(0, C, 4):
            blk = s[i:i + 4, j:j + 4]
            total += float((_T24 * blk).sum(axis=(1, 2)).max())
    return total


def brute_plain(s: np.ndarray, n: int, m: int) -> float:
    """Best kept score of a plain n:m mask along rows: each group keeps its best subset."""
    total = 0.0
    for g in s.reshape(-1, m):
        total += max(sum(sorted(g, reverse=True)[:k]) for k in range(n + 1))
    return total


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, kernel_size=2),   # weight (4, 2, 2, 2) -> matrix 4 x 8
        nn.Flatten(),
        nn.Linear(16, 8),                 # 8 x 16
        nn.ReLU(),
        nn.Linear(8, 6),                  # 6 x 8: rows not divisible by 4
    )


def snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("solver", ["enumerate", "flow", "highs", "ortools"])
def test_transposable_masks_match_brute_force(solver):
    net = small_net(1)
    plan = compute_nm_masks(net, 2, 4, solver=solver, progress=False)
    rows = {r.name: r for r in plan.report}
    assert set(plan.masks) == {"0", "2"}
    assert rows["4"].skipped is not None and "not divisible by m=4" in rows["4"].skipped
    assert "pad=True" in rows["4"].skipped and rows["4"].status == "skipped"
    for name, mod in [("0", net[0]), ("2", net[2])]:
        s = mod.weight.detach().abs().double().reshape(mod.weight.shape[0], -1).numpy()
        mask = plan.masks[name]
        assert mask.dtype == torch.bool and mask.shape == mod.weight.shape
        assert is_nm(mask, 2, 4, transposable=True)
        best = brute_transposable_24(s)
        r = rows[name]
        assert r.solver == solver and r.status == "optimal"
        assert r.kept_score == pytest.approx(best, rel=1e-9)
        assert r.kept_ratio == pytest.approx(best / s.sum(), rel=1e-9)
        assert r.bound_ratio == pytest.approx(1.0)
        assert float(s[mask.reshape(s.shape).numpy()].sum()) == pytest.approx(best, rel=1e-9)


def test_plain_nm_masks_match_brute_force():
    net = small_net(2)
    plan = compute_nm_masks(net, 1, 4, transposable=False, progress=False)
    # plain N:M needs only the input dimension divisible by m: all three layers qualify
    assert set(plan.masks) == {"0", "2", "4"}
    for r in plan.report:
        w = dict(net.named_modules())[r.name].weight.detach()
        s = w.abs().double().reshape(w.shape[0], -1).numpy()
        assert r.kept_score == pytest.approx(brute_plain(s, 1, 4), rel=1e-9)
        assert is_nm(plan.masks[r.name], 1, 4, transposable=False)
        assert r.density == pytest.approx(0.25)


def test_greedy_is_feasible_and_within_its_ratio():
    net = small_net(3)
    exact = compute_nm_masks(net, 2, 4, progress=False)
    greedy = compute_nm_masks(net, 2, 4, solver="greedy", progress=False)
    for re_, rg in zip(exact.report, greedy.report, strict=True):
        if re_.skipped:
            continue
        assert rg.status == "feasible" and rg.solver == "greedy"
        assert is_nm(greedy.masks[rg.name], 2, 4)
        assert 0.5 * re_.kept_score - 1e-9 <= rg.kept_score <= re_.kept_score + 1e-9
        assert rg.bound is not None and rg.bound >= re_.kept_score - 1e-9


def test_compute_does_not_modify_the_model():
    net = small_net(4)
    before = snapshot(net)
    compute_nm_masks(net, 2, 4, pad=True, progress=False)
    after = net.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(before[k], after[k])
    assert not any(prune.is_pruned(mod) for mod in net.modules())


def test_apply_state_dict_and_permanent_zeros():
    net = small_net(5)
    x = torch.randn(3, 2, 3, 3)
    plan = compute_nm_masks(net, 2, 4, progress=False)
    orig = snapshot(net)
    out = apply_nm_masks(net, plan)
    assert out is net
    keys = set(net.state_dict())
    assert {"0.weight_orig", "0.weight_mask", "2.weight_orig", "2.weight_mask"} <= keys
    assert "4.weight" in keys and "4.weight_mask" not in keys
    assert torch.equal(net.state_dict()["2.weight_orig"], orig["2.weight"])
    assert torch.equal(net.state_dict()["2.weight_mask"].bool(), plan.masks["2"])
    assert verify_nm(net, 2, 4, names=plan.masks) == ["0", "2"]
    with pytest.raises(ValueError, match=r"4: W is not 2:4 \(density 1.00\)"):
        verify_nm(net, 2, 4)  # the default selection includes the skipped, dense layer 4
    # the masked forward is the forward with W * mask
    ref = small_net(5)
    with torch.no_grad():
        ref[0].weight.mul_(plan.masks["0"])
        ref[2].weight.mul_(plan.masks["2"])
    assert torch.allclose(net(x), ref(x))
    assert make_permanent(net) == ["0", "2"]
    sd = net.state_dict()
    assert "2.weight" in sd and "2.weight_orig" not in sd and "2.weight_mask" not in sd
    assert isinstance(net[2].weight, nn.Parameter)
    assert (sd["2.weight"][~plan.masks["2"]] == 0).all()
    assert torch.equal(sd["2.weight"][plan.masks["2"]], orig["2.weight"][plan.masks["2"]])
    assert verify_nm(net, 2, 4, names=["0", "2"]) == ["0", "2"]
    assert torch.allclose(net(x), ref(x))


def test_prune_nm_inplace_false_returns_a_masked_copy():
    net = small_net(6)
    before = snapshot(net)
    masked, plan = prune_nm(net, 2, 4, inplace=False, progress=False)
    assert masked is not net
    assert not any(prune.is_pruned(mod) for mod in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    assert verify_nm(masked, 2, 4, names=plan.masks) == sorted(plan.masks)


def test_pad_gives_feasible_optimal_masks():
    net = small_net(7)
    plan = compute_nm_masks(net, 2, 4, pad=True, progress=False)
    r = {x.name: x for x in plan.report}["4"]
    assert r.padded and r.skipped is None and r.status == "optimal"
    mask = plan.masks["4"]
    assert mask.shape == (6, 8) and is_nm(mask, 2, 4, transposable=True)
    s = net[4].weight.detach().abs().double().numpy()
    padded = np.zeros((8, 8))
    padded[:6] = s
    assert r.kept_score == pytest.approx(brute_transposable_24(padded), rel=1e-9)
    apply_nm_masks(net, plan)
    assert verify_nm(net, 2, 4) == ["0", "2", "4"]


def test_verify_catches_a_violation():
    net = small_net(8)
    prune.custom_from_mask(net[2], "weight", torch.ones_like(net[2].weight, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"2: W is not 2:4.*2: W\^T is not 2:4"):
        verify_nm(net, 2, 4)
    # a plain (row-wise) 2:4 mask passes for W but not for W^T
    plain = torch.zeros(8, 16, dtype=torch.bool)
    plain[:, 0::4] = True
    plain[:, 1::4] = True
    net2 = small_net(8)
    prune.custom_from_mask(net2[2], "weight", plain)
    assert verify_nm(net2, 2, 4, transposable=False, names=["2"]) == ["2"]
    with pytest.raises(ValueError, match=r"W\^T is not 2:4"):
        verify_nm(net2, 2, 4, names=["2"])


def test_selection_by_pattern_type_and_regex():
    net = small_net(9)
    assert [n for n, _ in select_modules(net)] == ["0", "2", "4"]
    assert [n for n, _ in select_modules(net, types=(nn.Linear,))] == ["2", "4"]
    assert [n for n, _ in select_modules(net, include="[02]")] == ["0", "2"]
    assert [n for n, _ in select_modules(net, exclude=["4"])] == ["0", "2"]
    assert [n for n, _ in select_modules(net, include=r"^[24]$", regex=True)] == ["2", "4"]
    plan = compute_nm_masks(net, 2, 4, include="2", progress=False)
    assert [r.name for r in plan.report] == ["2"]


def test_custom_scores_and_options():
    net = small_net(10)
    w = net[2].weight.detach()
    scores = torch.rand_like(w)
    plan = compute_nm_masks(net, 2, 4, include="2", scores={"2": scores}, solver="ortools",
                            time_limit=30, progress=False, options={"scale": 1e9})
    r = plan.report[0]
    assert r.status == "optimal"
    assert r.kept_score == pytest.approx(brute_transposable_24(scores.double().numpy()),
                                         rel=1e-6)
    mask, rep = nm_mask(w, 2, 4, scores=scores.numpy(), name="w")
    assert torch.equal(mask, plan.masks["2"])


def test_exactly_keeps_exactly_n():
    w = torch.randn(8, 8)
    mask, rep = nm_mask(w, 2, 4, exactly=True)
    b = mask.reshape(2, 4, 2, 4).permute(0, 2, 1, 3)
    assert (b.sum(-1) == 2).all() and (b.sum(-2) == 2).all()
    assert rep.density == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=5, m=4), "n must be <= m"),
        (dict(n=0, m=4), "n must be >= 1"),
        (dict(solver="nope"), "unknown solver 'nope'"),
        (dict(solver="topk"), "does not accept TransposableNM"),
        (dict(include="[", regex=True), "invalid regular expression"),
        (dict(types=(int,)), "types must be"),
        (dict(scores=3), "scores must be"),
        (dict(scores={"2": torch.ones(3, 3)}), "expected the weight's shape"),
        (dict(time_limit=-1), "time_limit"),
    ],
)
def test_bad_input_is_a_clear_value_error(kwargs, message):
    net = small_net(11)
    kw = dict(n=2, m=4, progress=False)
    kw.update(kwargs)
    n, m = kw.pop("n"), kw.pop("m")
    with pytest.raises(ValueError, match=message):
        compute_nm_masks(net, n, m, **kw)
    assert not any(prune.is_pruned(mod) for mod in net.modules())


def test_bad_model_and_weights():
    with pytest.raises(ValueError, match="torch.nn.Module"):
        compute_nm_masks("not a model", progress=False)
    net = small_net(12)
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        compute_nm_masks(net, progress=False)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        nm_mask(torch.ones(8), 2, 4)
    with pytest.raises(ValueError, match="no module named"):
        apply_nm_masks(small_net(0), {"missing": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="has shape"):
        apply_nm_masks(small_net(0), {"2": torch.ones(2, 2, dtype=torch.bool)})
    net = small_net(0)
    plan = compute_nm_masks(net, 2, 4, include="2", progress=False)
    plan.masks["2"] = torch.ones(8, 16, dtype=torch.bool)  # tampered: not 2:4
    with pytest.raises(ValueError, match="not 2:4 transposable; nothing applied"):
        apply_nm_masks(net, plan)
    assert not any(prune.is_pruned(mod) for mod in net.modules())
