"""Saving and reloading structurally pruned models (pruneopt.adapters.structured_models):
same outputs after the round trip, whole-or-nothing folders, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

pytest.importorskip("torch_pruning", reason="needs the 'structure' extra")

from pruneopt.adapters.demo_models import MnistCNN, tiny_decoder  # noqa: E402
from pruneopt.adapters.structure import structure_of  # noqa: E402
from pruneopt.adapters.structured_models import load_structured, save_structured  # noqa: E402

X = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
IDS = torch.randint(2, 90, (2, 12), generator=torch.Generator().manual_seed(3))


def cnn(seed=0):
    torch.manual_seed(seed)
    return MnistCNN((8, 12, 16), 10).eval()


@pytest.fixture(scope="module")
def saved_cnn(tmp_path_factory):
    model = cnn()
    s = structure_of(model, X)
    folder = tmp_path_factory.mktemp("cnn") / "pruned"
    removed = [3, 2, 9, 4]
    save_structured(s, removed, folder)
    return model, s, removed, folder


def state_bytes(model: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}


def test_cnn_round_trip(saved_cnn):
    model, s, removed, folder = saved_cnn
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "structure.json"]
    record = json.loads((folder / "structure.json").read_text())
    assert record["dense"] == "user-supplied" and record["example_inputs"]["shape"] == [5, 1,
                                                                                        28, 28]
    assert [u["removed"] for u in record["units"]] == removed
    # the dense architecture with other weights: the saved weights win, strictly loaded
    loaded = load_structured(folder, dense=cnn(seed=5))
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), s.pruned(removed)(X), rtol=1e-6, atol=1e-6)
    assert loaded.features[8].out_channels == 7 and not loaded.training


def test_decoder_round_trip_from_config(tmp_path):
    model = tiny_decoder(0, layers=2, hidden=64, heads=4, intermediate=96).model
    s = structure_of(model)
    before = state_bytes(model)
    removed = [2, 30, 0, 95]
    pruned = s.pruned(removed)
    with torch.no_grad():  # a fine-tuned pruned model saves too (same shapes)
        pruned.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    save_structured(s, removed, tmp_path / "dec", model=pruned)
    assert state_bytes(model) == before
    assert (tmp_path / "dec" / "config.json").is_file()
    loaded = load_structured(tmp_path / "dec")  # rebuilt from config.json, no dense given
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, pruned(input_ids=IDS).logits,
                                   rtol=1e-5, atol=1e-5)
    assert loaded.model.layers[1].mlp.up_proj.out_features == 1


def test_existing_folder_and_bad_removed_write_nothing(saved_cnn, tmp_path):
    model, s, removed, folder = saved_cnn
    listing = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ValueError, match="not empty"):
        save_structured(s, removed, folder)
    assert sorted(p.name for p in folder.iterdir()) == listing
    with pytest.raises(ValueError, match="must be in"):
        save_structured(s, [0, 0, 0, 10], tmp_path / "new")
    with pytest.raises(ValueError, match="shapes of structure.pruned"):
        save_structured(s, removed, tmp_path / "new", model=s.pruned([0, 0, 0, 0]))
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left behind


def test_load_errors(saved_cnn, tmp_path):
    model, s, removed, folder = saved_cnn
    with pytest.raises(ValueError, match="pass dense="):
        load_structured(folder)
    with pytest.raises(ValueError, match="units"):
        load_structured(folder, dense=MnistCNN((8, 12, 20), 10))
    with pytest.raises(ValueError, match="structure.json"):
        load_structured(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in folder.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    data = (folder / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_structured(broken, dense=cnn())


def test_write_folder_is_whole_or_nothing(tmp_path):
    import subprocess
    import sys

    from pruneopt.adapters.folders import write_folder

    def half_then_fail(tmp):
        (tmp / "a.bin").write_bytes(b"x" * 100)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_folder(tmp_path / "out", half_then_fail)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".out.{dead}.abcd1234.tmp"  # left by a killed writer
    stale.mkdir()
    write_folder(tmp_path / "out", lambda tmp: (tmp / "a.bin").write_bytes(b"ok"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "a.bin").read_bytes() == b"ok"
