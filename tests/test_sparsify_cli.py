"""``pruneopt sparsify``: a model folder in, a sparse model folder out that loads the same way."""

from __future__ import annotations

import json

import pytest
import torch

from pruneopt.adapters.calibration import embed, make_batches
from pruneopt.adapters.models import stdlib_sentences
from pruneopt.adapters.nm import verify_nm
from pruneopt.cli import main

pytestmark = pytest.mark.slow


def _run(capsys, *args):
    code = main(["sparsify", *args, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_minilm_in_a_loadable_sparse_folder_out(tmp_path, capsys):
    from sentence_transformers import SentenceTransformer

    cal = tmp_path / "cal.txt"
    cal.write_text("\n".join(stdlib_sentences(24)))
    out = tmp_path / "sparse"
    code, stdout, err = _run(capsys, "minilm", "--calibration", str(cal), "--include",
                             "*layer.0.attention*", "-o", str(out))
    assert code == 0, err
    report = json.loads((out / "sparsify_report.json").read_text())
    layers = [r for r in report["layers"] if r["skipped"] is None]
    assert len(layers) == 4 and all(r["mask_status"] == "optimal" for r in layers)
    assert all(r["error_after"] <= r["error_masked"] for r in layers)
    reloaded = SentenceTransformer(str(out), device="cpu")
    names = [n for n, _ in reloaded.named_modules() if ".layer.0.attention" in n
             and isinstance(dict(reloaded.named_modules())[n], torch.nn.Linear)]
    assert len(verify_nm(reloaded, 2, 4, names=names)) == 4
    # a second run into the same (now full) folder is refused before any work
    code, _, err = _run(capsys, "minilm", "-o", str(out))
    assert code == 2 and "not an empty folder" in err and len(err.strip().splitlines()) == 1


def test_reloaded_folder_gives_the_embeddings_of_the_pruned_model(tmp_path):
    from sentence_transformers import SentenceTransformer

    from pruneopt.adapters.model_folders import load_model, save_model
    from pruneopt.adapters.oneshot import sparsify

    loaded = load_model("minilm")
    sents = stdlib_sentences(40)
    pruned, _ = sparsify(loaded.model, 2, 4, score="magnitude", reconstruct=False,
                         include="*layer.1.*", progress=False)
    save_model(loaded, pruned, tmp_path / "m")
    held = make_batches(pruned, sents[24:], 16)
    a = embed(pruned, held)
    b = embed(SentenceTransformer(str(tmp_path / "m"), device="cpu"), held)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("args", "match"), [
    (["nowhere", "-o", "OUT"], "neither 'minilm' nor an existing folder"),
    (["minilm", "--n", "5", "-o", "OUT"], "n must be <= m"),
    (["minilm", "--calibration", "missing.txt", "-o", "OUT"], "does not exist"),
    (["minilm", "--finetune", "-3", "-o", "OUT"], "finetune"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *args)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "OUT").exists()


def test_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("hello")
    code, _, err = _run(capsys, str(tmp_path / "junk"), "-o", str(tmp_path / "out"))
    assert code == 2 and "holds no supported model" in err


def test_output_inside_the_input_folder_is_refused(tmp_path, capsys):
    from pruneopt.adapters.model_folders import load_model, save_model

    loaded = load_model("minilm")
    save_model(loaded, loaded.model, tmp_path / "dense")
    code, _, err = _run(capsys, str(tmp_path / "dense"), "-o", str(tmp_path / "dense" / "sub"))
    assert code == 2 and "names the input" in err


def test_spdy_pruned_folder_loads_through_load_model(tmp_path):
    """A structurally pruned (SPDY) MiniLM saved with its modeling file loads through the
    same loader as any model folder (and then sparsifies like one)."""
    from pruneopt.adapters import spdy
    from pruneopt.adapters.model_folders import load_model

    loaded = load_model("minilm")
    units = spdy.units_of(loaded.model)
    pruned = spdy.prune_units(loaded.model, units[:2], [2, 512])
    spdy.save_pruned(pruned, tmp_path / "spdy")
    again = load_model(tmp_path / "spdy")
    held = make_batches(pruned, stdlib_sentences(8), 8)
    torch.testing.assert_close(embed(pruned, held), embed(again.model, held), rtol=1e-5,
                               atol=1e-5)


def test_a_hugging_face_folder_in_and_out(tmp_path, capsys):
    """A plain Hugging Face encoder folder (config.json + tokenizer) sparsifies into a folder
    that ``AutoModel.from_pretrained`` loads with the N:M weights."""
    from transformers import AutoModel

    from pruneopt.adapters.model_folders import load_model

    st = load_model("minilm").model
    bert, tok = st[0].auto_model, st.tokenizer
    bert.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    code, _, err = _run(capsys, str(tmp_path / "hf"), "--scores", "magnitude",
                        "--no-reconstruct", "--include", "*layer.2.*", "-o", str(tmp_path / "out"))
    assert code == 0, err
    again = AutoModel.from_pretrained(str(tmp_path / "out"))
    names = [n for n, mod in again.named_modules()
             if ".layer.2." in n and isinstance(mod, torch.nn.Linear)]
    assert len(verify_nm(again, 2, 4, names=names)) == 6
    dense = dict(bert.named_modules())["encoder.layer.3.output.dense"].weight
    torch.testing.assert_close(dict(again.named_modules())["encoder.layer.3.output.dense"].weight,
                               dense)  # untouched layers load as they were


def test_stream_gives_the_in_memory_masks_and_a_loadable_folder(tmp_path, capsys):
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer

    from pruneopt.adapters.models import load_minilm

    src = tmp_path / "src"
    load_minilm().save(str(src))
    (src / "pytorch_model.bin").write_bytes(b"dense weights in another format")
    before = {p.name: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    ref, got = tmp_path / "ref", tmp_path / "streamed"
    common = ["--scores", "magnitude", "--no-reconstruct"]
    code, _, err = _run(capsys, str(src), *common, "-o", str(ref))
    assert code == 0, err
    code, _, err = _run(capsys, str(src), *common, "--stream", "-o", str(got))
    assert code == 0, err
    a, b = load_file(str(ref / "model.safetensors")), load_file(str(got / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((got / "sparsify_report.json").read_text())
    assert report["not_copied"] == ["pytorch_model.bin"] and report["summary"]["masked"] == 36
    assert not (got / "pytorch_model.bin").exists()
    model = SentenceTransformer(str(got), device="cpu")
    assert len(verify_nm(model, 2, 4)) == 36
    assert before == {p.name: p.read_bytes() for p in src.rglob("*") if p.is_file()}


@pytest.mark.parametrize("extra, match", [
    (["--stream"], "--stream needs --scores magnitude"),
    (["--stream", "--scores", "magnitude", "--no-reconstruct", "--executor", "processes",
      "--workers", "0"], "--workers must be >= 1"),
    (["--executor", "processes"], "run the solves of --stream"),
    (["--stream", "--scores", "magnitude", "--no-reconstruct", "--address", "127.0.0.1:1"],
     "--executor ray"),
])
def test_stream_bad_input(tmp_path, capsys, extra, match):
    from pruneopt.adapters.models import load_minilm

    src = tmp_path / "src"
    load_minilm().save(str(src))
    code, _, err = _run(capsys, str(src), *extra, "-o", str(tmp_path / "out"))
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
