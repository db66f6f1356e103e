"""SPDY adapter on a tiny random BERT: structured pruning is exact, databases, search, apply."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pruneopt.adapters import spdy

pytest.importorskip("transformers", reason="needs the minilm extra (transformers)")


@pytest.fixture(scope="module")
def tiny():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)
    model = BertModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        ids = torch.randint(1, 64, (4, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 8:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return model, batches


@pytest.fixture(scope="module")
def table(tiny):
    model, batches = tiny
    t = spdy.timing_database(model, batches, repeats=2, progress=False)
    return spdy.error_database(model, t, batches, progress=False)


@pytest.fixture(scope="module")
def modeled(table):
    """The measured table with times replaced by a noise-free model (time proportional to the
    units kept), so that speedup targets are reachable whatever the machine's load."""
    import copy

    t = copy.deepcopy(table)
    t.times = [1e-3 * (1 - r / u.size) for r, u in zip(t.removed, t.units, strict=True)]
    t.base_time = 1e-3
    t.dense_time = t.base_time + sum(float(x[0]) for x in t.times)
    return t


def test_units_and_bad_model(tiny):
    model, _ = tiny
    units = spdy.units_of(model)
    assert [u.name for u in units] == ["block0.attention", "block0.ffn", "block1.attention",
                                       "block1.ffn"]
    assert units[0].size == 4 and units[1].size == 64
    with pytest.raises(ValueError, match="BERT encoder"):
        spdy.bert_of(torch.nn.Linear(2, 2))


def test_structured_pruning_equals_zeroing(tiny):
    """Removing heads/neurons gives exactly the model with their weights zeroed."""
    model, batches = tiny
    units = spdy.units_of(model)
    pruned = spdy.prune_units(model, units, [2, 40, 1, 10])
    import copy

    zeroed = copy.deepcopy(model)
    bert = spdy.bert_of(zeroed)
    for u, r in zip(units, [2, 40, 1, 10], strict=True):
        blk = bert.encoder.layer[u.block]
        with torch.no_grad():
            if u.kind == "attention":
                hs = blk.attention.self.attention_head_size
                for h in np.argsort(-spdy.head_scores(blk.attention), kind="stable")[u.size - r:]:
                    blk.attention.output.dense.weight[:, h * hs:(h + 1) * hs] = 0
            else:
                drop = np.argsort(-spdy.neuron_scores(blk), kind="stable")[u.size - r:]
                blk.output.dense.weight[:, drop] = 0
    a, b = spdy.embed(pruned, batches), spdy.embed(zeroed, batches)
    assert torch.allclose(a, b, atol=1e-5)
    pb = spdy.bert_of(pruned)
    assert pb.encoder.layer[0].attention.self.query.out_features == 2 * 8
    assert pb.encoder.layer[0].intermediate.dense.out_features == 24
    # the user's model is untouched
    assert spdy.bert_of(model).encoder.layer[0].intermediate.dense.out_features == 64
    with pytest.raises(ValueError, match="heads"):
        spdy.pruned_attention(spdy.bert_of(model).encoder.layer[0].attention, 4)


def test_tables_roundtrip_and_validate(tiny, table, modeled, tmp_path):
    model, batches = tiny
    assert len(table.times) == 4 and all(t.size == r.size for t, r in
                                         zip(table.times, table.removed, strict=True))
    assert all((t > 0).all() for t in table.times)
    assert all(e[0] == 0 and (e >= 0).all() for e in table.errors)
    assert table.dense_time > 0 and table.base_time >= 0
    path = tmp_path / "t.json"
    table.save(path)
    back = spdy.SpdyTable.load(path)
    assert back.units == table.units
    for a, b in zip(back.times + back.errors, table.times + table.errors, strict=True):
        assert np.array_equal(a, b)
    bad = json.loads(path.read_text())
    bad["times"] = bad["times"][:-1]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="one entry per unit"):
        spdy.SpdyTable.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="out of reach"):
        modeled.problem(modeled.max_speedup() * 1.5)
    with pytest.raises(ValueError, match=">= 1"):
        modeled.budget(0.5)


def test_error_database_matches_full_forward(tiny, table):
    """The cached-prefix evaluation equals running the whole pruned model."""
    model, batches = tiny
    ref = spdy.embed(model, batches)
    u, k = 2, 2  # block1.attention, level 2
    pruned = spdy.prune_units(model, [table.units[u]], [int(table.removed[u][k])])
    full = 1 - spdy.cosine_to(ref, spdy.embed(pruned, batches))
    assert table.errors[u][k] == pytest.approx(full, abs=1e-5)


def test_search_is_seeded_and_meets_table_target(tiny, modeled):
    model, batches = tiny
    table = modeled
    target = 1.3
    a = spdy.spdy_search(model, table, target, batches, random_starts=3, steps=4, seed=3,
                         progress=False)
    b = spdy.spdy_search(model, table, target, batches, random_starts=3, steps=4, seed=3,
                         progress=False)
    assert a.levels.tolist() == b.levels.tolist() and a.loss == b.loss
    assert a.speedup_table >= target * (1 - 1e-9)
    assert a.history == sorted(a.history, reverse=True)  # best loss never gets worse
    lv = spdy.levels_for(table, target)
    assert table.problem(target).check(lv) is not None


def test_spdy_prune_applies_to_a_copy(tiny, modeled):
    model, batches = tiny
    table = modeled
    before = [p.clone() for p in model.parameters()]
    target = 1.2
    pruned, rep = spdy.spdy_prune(model, table, target, batches, random_starts=2, steps=2,
                                  repeats=3, max_rounds=2, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert rep["met"] == (rep["measured_speedup"] >= target)
    assert len(rep["removed"]) == 4 and 1 <= len(rep["rounds"]) <= 2
    assert spdy.embed(pruned, batches).shape == (8, 32)
    again = spdy.apply_levels(model, table, rep["levels"], inplace=False)
    assert torch.allclose(spdy.embed(again, batches), spdy.embed(pruned, batches), atol=1e-6)
    with pytest.raises(ValueError, match="one entry per unit"):
        spdy.apply_levels(model, table, [0])


def test_uniform_and_measurements(tiny):
    model, batches = tiny
    units = spdy.units_of(model)
    assert spdy.uniform_removed(units, 0.5) == [2, 32, 2, 32]
    with pytest.raises(ValueError):
        spdy.uniform_removed(units, 1.0)
    m = spdy.measure_speedup(model, model, batches, repeats=3)
    assert m["dense_seconds"] > 0 and m["speedup"] > 0
    _, rep = spdy.uniform_at_speedup(model, 1.0, batches, iterations=2, repeats=2,
                                     progress=False)
    assert 0 <= rep["fraction"] <= 0.95
    rows = spdy.csr_linear_timing(16, 32, 8, sparsities=(0.0, 0.9), repeats=2)
    assert [r["sparsity"] for r in rows] == [0.0, 0.9] and all(r["csr_seconds"] > 0 for r in rows)


def test_reconstruct_refits_without_changing_shapes(tiny):
    model, batches = tiny
    units = spdy.units_of(model)
    pruned = spdy.prune_units(model, units, [0, 40, 2, 0])
    before = [p.clone() for p in pruned.parameters()]
    rec = spdy.reconstruct(pruned, model, batches, ridge=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, pruned.parameters(), strict=True))
    assert [p.shape for p in rec.parameters()] == [p.shape for p in pruned.parameters()]
    ref = spdy.embed(model, batches)
    # least squares on these very batches can only bring the outputs closer to the dense ones
    assert spdy.cosine_to(ref, spdy.embed(rec, batches)) >= spdy.cosine_to(
        ref, spdy.embed(pruned, batches)) - 1e-6
    same = spdy.reconstruct(model, model, batches)  # nothing pruned: nothing refitted
    assert all(torch.equal(a, b) for a, b in zip(same.parameters(), model.parameters(),
                                                  strict=True))
    with pytest.raises(ValueError, match="ridge"):
        spdy.reconstruct(pruned, model, batches, ridge=0)
