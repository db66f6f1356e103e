"""MMD selection glue: torch features, Subset / mask, the CLI, the digits shift, the notebook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pruneopt.adapters.mmd import (
    auto_solver,
    digits_domain_shift,
    extract_features,
    keep_mask,
    mmd_problem,
    prune_dataset,
    select_mmd,
    subset,
)
from pruneopt.cli import main

ROOT = Path(__file__).resolve().parent.parent


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_extract_features_penultimate_and_model_untouched():
    net = small_net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    X = torch.randn(37, 4)
    feats = extract_features(net, X, layer="1", batch_size=10)
    assert feats.shape == (37, 8) and feats.dtype == np.float64
    expected = torch.relu(net[0](X)).detach().numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-6, atol=1e-6)
    out = extract_features(net, X)  # whole-model output
    assert out.shape == (37, 3)
    assert net.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not net[1]._forward_hooks  # hook removed
    ds = torch.utils.data.TensorDataset(X, torch.zeros(37))
    # float32 features: another batch size may round differently (a few ulp)
    np.testing.assert_allclose(extract_features(net, ds, layer=net[1]), feats,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no sub-module"):
        extract_features(net, X, layer="9")
    with pytest.raises(ValueError, match="nn.Module"):
        extract_features("net", X)


def test_prune_dataset_subset_and_mask():
    torch.manual_seed(1)
    net = small_net()
    src = torch.utils.data.TensorDataset(torch.randn(40, 4), torch.arange(40))
    tgt = torch.randn(15, 4) + 1.0
    sub, sol = prune_dataset(net, src, tgt, 10, layer="1", solver="relax-swap")
    assert isinstance(sub, torch.utils.data.Subset) and len(sub) == 10
    assert sorted(int(sub[i][1]) for i in range(10)) == sol.decision.tolist()
    mask, sol2 = prune_dataset(net, src, tgt, 0.25, layer="1", as_mask=True, solver="relax-swap")
    assert mask.dtype == torch.bool and int(mask.sum()) == 10
    assert torch.equal(mask, keep_mask(40, sol.decision))
    with pytest.raises(ValueError, match="kept indices"):
        subset(src, [0, 40])


def test_auto_policy():
    rng = np.random.default_rng(0)
    T = rng.normal(size=(5, 2))
    small = mmd_problem(rng.normal(size=(12, 2)), T, 0.5)
    assert small.keep == 6
    assert auto_solver(small) in ("scip", "relax-swap")
    assert auto_solver(mmd_problem(rng.normal(size=(500, 2)), T, 10)) == "relax-swap"
    assert auto_solver(mmd_problem(rng.normal(size=(5000, 2)), T, 10)) == "lowrank"
    sol = select_mmd(rng.normal(size=(12, 2)), T, 4)
    assert len(sol.decision) == 4


def test_digits_domain_shift_is_shifted():
    Xs, ys, Xt, yt = digits_domain_shift(0)
    assert Xs.shape[1] == Xt.shape[1] == 64
    assert len(Xs) == 898 and 450 < len(Xt) < 700
    assert Xt.min() >= 0 and Xt.max() <= 16
    # class mix: classes 5-9 are the minority in the target, not in the source
    assert (yt >= 5).mean() < 0.3 < (ys >= 5).mean()


def test_cli_select_mmd(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "S.npy", rng.normal(size=(60, 3)))
    np.save(tmp_path / "T.npy", rng.normal(size=(20, 3)) + 0.5)
    out = tmp_path / "kept.npy"
    code = main(["select", "mmd", "--source", str(tmp_path / "S.npy"), "--target",
                 str(tmp_path / "T.npy"), "--keep", "15", "-o", str(out)])
    assert code == 0
    kept = np.load(out)
    assert kept.dtype == np.int64 and len(kept) == 15 and np.all(np.diff(kept) > 0)
    assert "MMD^2" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    code = main(["select", "mmd", "--source", str(tmp_path / "S.npy"), "--target",
                 str(tmp_path / "T.npy"), "--keep", "0.5", "-o", str(tmp_path / "m.npy"),
                 "--mask", "--solver", "greedy", "--kernel", "linear"])
    assert code == 0
    mask = np.load(tmp_path / "m.npy")
    assert mask.dtype == bool and mask.sum() == 30


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--keep", "0"], "keep must be >= 1"),
        (["--keep", "500"], "keep must be <= 60"),
        (["--keep", "2.5"], "whole count"),
        (["--keep", "10", "--bandwidth", "-1"], "bandwidth"),
        (["--keep", "10", "--solver", "nope"], "unknown solver"),
    ],
)
def test_cli_bad_input(tmp_path, capsys, extra, message):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "S.npy", rng.normal(size=(60, 3)))
    np.save(tmp_path / "T.npy", rng.normal(size=(20, 3)))
    args = ["select", "mmd", "--source", str(tmp_path / "S.npy"), "--target",
            str(tmp_path / "T.npy"), "-o", str(tmp_path / "kept.npy")]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "kept.npy").exists()


def test_cli_mismatched_dims_missing_file_bad_output(tmp_path, capsys):
    np.save(tmp_path / "S.npy", np.zeros((10, 3)))
    np.save(tmp_path / "T.npy", np.zeros((10, 4)))
    base = ["select", "mmd", "--source", str(tmp_path / "S.npy"), "--keep", "3"]
    assert main(base + ["--target", str(tmp_path / "T.npy"), "-o", str(tmp_path / "k.npy")]) == 2
    assert "different feature dimensions" in capsys.readouterr().err
    assert main(base + ["--target", str(tmp_path / "no.npy"), "-o", str(tmp_path / "k.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "T.npy", np.zeros((10, 3)))
    assert main(base + ["--target", str(tmp_path / "T.npy"), "-o", str(tmp_path / "k.txt")]) == 2
    assert ".npy" in capsys.readouterr().err
    assert not (tmp_path / "k.npy").exists()


def test_notebook_executes():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = ROOT / "notebooks" / "mmd_selection.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "optimal" in text
