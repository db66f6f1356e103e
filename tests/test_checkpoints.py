"""``pruneopt.adapters.checkpoints``: state_dict files read, selected, masked and written by
the library (the ``pruneopt nm`` command only calls it)."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from safetensors.torch import load_file

import pruneopt.commands.nm as nm_command
from pruneopt.adapters import checkpoints
from pruneopt.adapters.checkpoints import (
    load_state_dict,
    mask_state_dict,
    save_state_dict,
    select_tensors,
    shared_tensors,
)
from pruneopt.adapters.nm import DEFAULT_EXCLUDE, is_nm
from pruneopt.cli import main


def bert_like(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embeddings.word_embeddings.weight": torch.randn(16, 8, generator=g),
        "encoder.layer.0.attention.query.weight": torch.randn(8, 8, generator=g),
        "encoder.layer.0.attention.query.bias": torch.randn(8, generator=g),
        "encoder.layer.0.LayerNorm.weight": torch.ones(8),
        "encoder.layer.0.output.dense.weight": torch.randn(8, 16, generator=g),
        "pooler.dense.weight": torch.randn(8, 8, generator=g),
        "lm_head.weight": torch.randn(16, 8, generator=g),
        "position_ids": torch.arange(8).reshape(1, 8),  # integer: never a candidate
    }


def test_the_command_uses_the_library():
    src = inspect.getsource(nm_command)
    for fn in ("load_state_dict", "save_state_dict", "mask_state_dict"):
        assert f"def {fn}" not in src
        assert getattr(nm_command, fn) is getattr(checkpoints, fn)  # old import path works
    for fn in (load_state_dict, save_state_dict, mask_state_dict, select_tensors, shared_tensors):
        assert fn.__doc__ and fn.__module__ == "pruneopt.adapters.checkpoints"
        assert "return" in fn.__annotations__  # typed


def test_default_selection_leaves_embeddings_pooler_and_heads_dense():
    sd = bert_like()
    names, skipped = select_tensors(sd)
    assert names == ["encoder.layer.0.attention.query.weight",
                     "encoder.layer.0.output.dense.weight"]
    assert list(skipped) == ["embeddings.word_embeddings.weight", "pooler.dense.weight",
                             "lm_head.weight"]
    assert all(any(p in r for p in DEFAULT_EXCLUDE) for r in skipped.values())
    # explicit patterns choose exactly what they name, the default exclusion aside
    names, skipped = select_tensors(sd, ["*embed*", "*.bias"])
    assert names == ["embeddings.word_embeddings.weight"] and skipped == {}
    names, _ = select_tensors(sd, [r"^lm_head\."], regex=True)
    assert names == ["lm_head.weight"]
    with pytest.raises(ValueError, match="excluded by default"):
        select_tensors({"embed.weight": torch.randn(4, 4)})


def test_mask_state_dict_is_transposable_by_default_and_copies():
    sd = bert_like(1)
    before = {k: v.clone() for k, v in sd.items()}
    out, rows = mask_state_dict(sd, progress=False)
    assert all(torch.equal(sd[k], before[k]) for k in sd)  # the input is not modified
    by_name = {r.name: r for r in rows}
    assert [r.name for r in rows] == [k for k in sd if k in by_name]  # in the file's order
    for k in ("encoder.layer.0.attention.query.weight", "encoder.layer.0.output.dense.weight"):
        assert by_name[k].transposable and by_name[k].status == "optimal"
        assert is_nm(out[k] != 0, 2, 4, transposable=True)
    for k in ("embeddings.word_embeddings.weight", "pooler.dense.weight", "lm_head.weight"):
        assert by_name[k].status == "skipped" and "default exclusion" in by_name[k].skipped
        assert out[k] is sd[k]
    assert out["encoder.layer.0.attention.query.bias"] is sd["encoder.layer.0.attention.query.bias"]
    _, rows = mask_state_dict(sd, transposable=False, solver="topk", progress=False)
    assert all(not r.transposable for r in rows)


def test_save_and_load_round_trip(tmp_path):
    sd = bert_like(2)
    for name in ("a.pt", "a.bin", "a.safetensors"):
        save_state_dict(sd, tmp_path / name)
        back = load_state_dict(tmp_path / name)
        assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    with pytest.raises(ValueError, match="must end in one of"):
        save_state_dict(sd, tmp_path / "a.npz")


def test_shared_tensors_and_safetensors():
    base = torch.randn(8, 4)
    sd = {"tied.a": base, "tied.b": base, "top": base[:4], "bottom": base[4:],
          "alone": torch.randn(3)}
    # top overlaps tied.a/b; bottom overlaps them too; alone shares with nothing
    assert shared_tensors(sd) == [["bottom", "tied.a", "tied.b", "top"]]
    halves = {"top": base[:4], "bottom": base[4:]}  # views of one storage that do not overlap
    assert shared_tensors(halves) == []
    with pytest.raises(ValueError, match="share memory"):
        checkpoints.state_dict_writer({"a": base, "b": base}, "x.safetensors")


def test_cli_report_lists_the_excluded_tensors(tmp_path, capsys):
    sd = bert_like(3)
    torch.save(sd, tmp_path / "m.pt")
    assert main(["nm", str(tmp_path / "m.pt"), "-o", str(tmp_path / "o.safetensors"),
                 "--no-progress"]) == 0
    assert "masked 2 tensors (3 skipped) with transposable 2:4" in capsys.readouterr().out
    report = json.loads((tmp_path / "o.safetensors.json").read_text())
    assert report["transposable"] is True and report["exclude"] == list(DEFAULT_EXCLUDE)
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["lm_head.weight"]["status"] == "skipped"
    assert "--pattern" in rows["pooler.dense.weight"]["skipped"]
    out = load_file(str(tmp_path / "o.safetensors"))
    assert torch.equal(out["embeddings.word_embeddings.weight"],
                       sd["embeddings.word_embeddings.weight"])
    # naming them masks them
    assert main(["nm", str(tmp_path / "m.pt"), "-o", str(tmp_path / "all.pt"), "--pattern",
                 "*.weight", "--no-progress"]) == 0
    report = json.loads((tmp_path / "all.pt.json").read_text())
    assert report["exclude"] is None
    assert report["summary"]["masked"] == 5 and report["summary"]["skipped"] == 0
