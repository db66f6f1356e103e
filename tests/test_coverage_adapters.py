"""Coverage adapters: importance scores, CCS sampling, coverage subsets, CLI, notebook."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Subset, TensorDataset

from pruneopt.adapters.coreset import (
    allocate_strata,
    ccs_indices,
    ccs_subset,
    coverage_indices,
    coverage_subset,
    drop_hardest,
    random_indices,
    top_indices,
)
from pruneopt.adapters.importance import ImportanceRecorder, train_with_importance
from pruneopt.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def test_recorder_by_hand():
    rec = ImportanceRecorder(3, 2)
    y = torch.tensor([0, 1, 0])
    # epoch 0: ex0 right (margin 2), ex1 wrong (margin -1), ex2 right (margin 1)
    rec.update([0, 1, 2], torch.tensor([[2.0, 0.0], [1.0, 0.0], [1.0, 0.0]]), y)
    rec.end_epoch()
    # epoch 1: ex0 wrong (forgotten once), ex1 wrong again, ex2 right
    rec.update([2, 0, 1], torch.tensor([[3.0, 0.0], [0.0, 1.0], [2.0, 0.0]]), y[[2, 0, 1]])
    rec.end_epoch()
    s = rec.scores()
    assert np.allclose(s.aum, [(2 - 1) / 2, (-1 - 2) / 2, (1 + 3) / 2])
    assert list(s.forgetting) == [1, 2, 0]  # ex1 never learned: the maximum (epochs)
    p = torch.softmax(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), dim=1)
    el2n0 = (torch.linalg.norm(p[0] - torch.tensor([1.0, 0.0])) +
             torch.linalg.norm(p[1] - torch.tensor([1.0, 0.0]))) / 2
    assert s.el2n[0] == pytest.approx(float(el2n0), rel=1e-5)
    assert np.array_equal(s.difficulty("aum"), -s.aum)
    with pytest.raises(ValueError, match="unknown score"):
        s.difficulty("loss")
    with pytest.raises(ValueError, match="logits"):
        rec.update([0], torch.zeros(1, 3), torch.tensor([0]))


def test_ccs_properties():
    rng = np.random.default_rng(0)
    s = rng.normal(size=1000)
    aum = rng.normal(size=1000)
    idx = ccs_indices(s, 200, beta=0.1, difficulty=-aum, seed=3)
    assert len(idx) == 200 and len(np.unique(idx)) == 200
    dropped = np.argsort(aum)[:100]  # the 10 % lowest AUM
    assert not np.isin(dropped, idx).any()
    assert np.array_equal(idx, ccs_indices(s, 200, beta=0.1, difficulty=-aum, seed=3))
    assert not np.array_equal(idx, ccs_indices(s, 200, beta=0.1, difficulty=-aum, seed=4))
    # stratified: the tails are over-represented compared with their share of the data
    tails = np.abs(s) > 2
    assert tails[idx].mean() > tails.mean()
    assert list(allocate_strata([1, 10, 3, 0], 8)) == [1, 4, 3, 0]
    assert list(allocate_strata([5, 5], 3)) == [1, 2]  # floor shares, smallest first
    assert list(allocate_strata([1, 1], 3)) == [1, 1]  # bins run out: budget unspent
    assert list(drop_hardest([3.0, 1.0, 2.0], 0.34)) == [1, 2]
    assert list(top_indices([3.0, 1.0, 2.0], 2)) == [0, 2]
    assert len(random_indices(10, 4, seed=0)) == 4
    with pytest.raises(ValueError, match="beta"):
        ccs_indices(s, 10, beta=1.0)
    with pytest.raises(ValueError, match="keep"):
        ccs_indices(s, 0)
    with pytest.raises(ValueError, match="left after hard pruning"):
        ccs_indices(s, 950, beta=0.1)
    with pytest.raises(ValueError, match="NaN"):
        ccs_indices(np.array([1.0, np.nan]), 1)


def test_coverage_and_subsets():
    X = load_digits().data[:300]
    y = load_digits().target[:300]
    ds = TensorDataset(torch.tensor(X, dtype=torch.float32), torch.tensor(y))
    idx = coverage_indices(X, 30)
    assert len(idx) == 30 and len(np.unique(idx)) == 30
    sub = coverage_subset(ds, X, 30, weights=np.ones(300), beta=0.1,
                          difficulty=np.arange(300.0))
    assert isinstance(sub, Subset) and len(sub) == 30
    assert max(sub.indices) < 270  # the 10 % "hardest" (largest difficulty) were dropped
    full = coverage_indices(X, 20, radius=1e4)  # one point covers all: filled up to 20
    assert len(full) == 20
    c = ccs_subset(ds, np.arange(300.0), 40)
    assert len(c) == 40 and c.dataset is ds
    with pytest.raises(ValueError, match="difficulty"):
        coverage_indices(X, 10, beta=0.2)
    with pytest.raises(ValueError, match="examples"):
        ccs_subset(ds, np.arange(10.0), 5)


def test_train_with_importance_digits():
    d = load_digits()
    ds = TensorDataset(torch.tensor(d.data[:200] / 16, dtype=torch.float32),
                       torch.tensor(d.target[:200]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    s = train_with_importance(model, ds, num_classes=10, epochs=4, el2n_epochs=2, lr=1e-2,
                              batch_size=50)
    assert s.el2n.shape == s.aum.shape == s.forgetting.shape == (200,)
    assert np.all((s.el2n >= 0) & (s.el2n <= np.sqrt(2)))
    # hard examples (low AUM) have high EL2N: the two scores agree on average
    assert np.corrcoef(s.el2n, -s.aum)[0, 1] > 0.5


def test_cli(tmp_path, capsys):
    X = load_digits().data[:200]
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "kept.npy"
    rc = cli_main(["select", "coverage", "--features", str(tmp_path / "X.npy"), "--budget", "10",
                   "--radius", "25", "-o", str(out)])
    assert rc == 0
    kept = np.load(out)
    assert kept.dtype == np.int64 and len(kept) == 10
    assert "kept 10 of 200" in capsys.readouterr().out
    rc = cli_main(["select", "coverage", "--features", str(tmp_path / "X.npy"), "--cover", "0.5",
                   "--radius", "25", "--solver", "cpsat", "--time-limit", "20",
                   "-o", str(tmp_path / "c.npy")])
    assert rc == 0
    bad = tmp_path / "bad.npy"
    rc = cli_main(["select", "coverage", "--features", str(tmp_path / "X.npy"), "--budget", "0",
                   "--radius", "25", "-o", str(bad)])
    assert rc == 2 and not bad.exists()
    assert "keep must be >= 1" in capsys.readouterr().err
    rc = cli_main(["select", "coverage", "--features", str(tmp_path / "nope.npy"), "--budget",
                   "3", "--radius", "2", "-o", str(bad)])
    assert rc == 2 and not bad.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.npy", "c.npy", "kept.npy"]


def test_cli_subprocess(tmp_path):
    np.save(tmp_path / "X.npy", np.random.default_rng(0).normal(size=(50, 3)))
    res = subprocess.run([sys.executable, "-m", "pruneopt", "select", "coverage", "--features",
                          str(tmp_path / "X.npy"), "--budget", "5", "--radius", "-1", "-o",
                          str(tmp_path / "k.npy")], capture_output=True, text=True)
    assert res.returncode == 2 and "radius must be" in res.stderr


def test_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    src = ROOT / "notebooks" / "coverage_coreset.ipynb"
    shutil.copy(src, tmp_path / src.name)
    nb = nbformat.read(tmp_path / src.name, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outs)
    assert "optimal" in text and "CCS examples" in text


def test_coverage_uses_the_registry_default_and_the_new_names(monkeypatch):
    import warnings

    import pruneopt
    from pruneopt.formulations import CoverageSelection
    from pruneopt.formulations.geometry import default_radius
    from pruneopt.solvers import defaults, get_solver

    X = load_digits().data[:300]
    problem = CoverageSelection(X, keep=30, radius=default_radius(X, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated names (budget=, radius_for_budget)
        idx = coverage_indices(X, 30)
    ref = pruneopt.solve(problem)  # solver=None: the registry's rule
    assert ref.solver == get_solver(problem, None).name and ref.status == "optimal"
    assert np.array_equal(idx, ref.decision)
    greedy = pruneopt.solve(problem, solver="greedy")
    assert problem.objective(idx) >= greedy.objective
    # the rule is the registry's alone: change it there and the adapter follows
    monkeypatch.setitem(defaults.PREFERENCE, CoverageSelection, ("greedy",))
    assert np.array_equal(coverage_indices(X, 30), greedy.decision)
