"""Benchmarks never write over their inputs or over committed files; by default they only print."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _load(name: str):
    """A benchmark script as a module (without putting benchmarks/ on sys.path)."""
    if "_common" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_common", BENCH / "_common.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_common"] = mod
        spec.loader.exec_module(mod)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True).stdout


RESULTS = "benchmarks/spdy_minilm_results.json"
TABLE = "benchmarks/spdy_minilm_table.json"

REFUSALS = [
    ("nm_masks", ["--out", "README.md"], "tracked"),
    ("layer_budget", ["--out", TABLE], "input"),
    ("layer_budget", ["--out", "benchmarks/layer_budget.py"], "tracked"),
    ("spdy_minilm", ["--reconstruct-from", RESULTS, "--out", RESULTS], "input"),
    ("spdy_minilm", ["--table", TABLE], "tracked"),
    ("spdy_minilm", ["--out", RESULTS], "tracked"),
    ("spdy_minilm", ["--table", "/tmp/x_same.json", "--out", "/tmp/x_same.json"], "different"),
    ("mmd_domain_shift", ["--plot", "docs/mmd_digits_kept.png"], "tracked"),
    ("coverage_digits", ["--plot", "benchmarks/coverage_digits.png"], "tracked"),
    ("coverage_real", ["--task", "mnist", "--model", "cnn", "--plot", "docs/coverage_mnist.png"],
     "tracked"),
    ("dynamic_masks", ["--plot", "benchmarks/coverage_digits.png"], "tracked"),
    ("dynamic_masks", ["--out", "/tmp/x_dm.json", "--from-json", "/tmp/x_dm.json"], "input"),
]


@pytest.mark.parametrize(("name", "argv", "why"), REFUSALS,
                         ids=[f"{n}-{'-'.join(a[::2])}" for n, a, _ in REFUSALS])
def test_refuses_to_overwrite(name, argv, why, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    files = [ROOT / a for a in argv if (ROOT / a).is_file()]
    before = {f: _digest(f) for f in files}
    mod = _load(name)
    with pytest.raises(SystemExit) as exc:
        mod.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "refusing" in err or "different paths" in err, err
    assert why in err
    assert {f: _digest(f) for f in files} == before


def test_tiny_runs_print_and_write_only_where_told(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    status = _git_status()
    out = tmp_path / "nm.md"
    _load("nm_masks").main(["--sizes", "16", "--nm", "2:4", "--repeats", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "ortools plain" in printed and out.read_text().strip() == printed.strip()
    out = tmp_path / "lb.md"
    _load("layer_budget").main(["--part", "shapes", "--shapes", "coarse", "minilm",
                                "--shape-seeds", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| minilm | 5 |" in printed and out.read_text().strip() == printed.strip()
    # nothing in the repository changed, and no stray files were left next to the outputs
    assert _git_status() == status
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lb.md", "nm.md"]


def test_scripts_write_files_only_through_the_safe_helpers():
    """Every file a benchmark writes goes through benchmarks/_common.py (checked paths,
    whole-or-nothing writes), and every option naming an output defaults to None."""
    pattern = re.compile(r"\.write_text\(|\.write_bytes\(|\.savefig\(|json\.dump\(|"
                         r"open\([^)]*[\"'][wa]b?[\"']|np\.save|torch\.save")
    for path in SCRIPTS:
        src = path.read_text()
        bad = [m.group(0) for m in pattern.finditer(src)
               if not src[max(0, m.start() - 8): m.start()].endswith("_common")]
        assert not bad, (path.name, bad)
        for m in re.finditer(r"add_argument\((\"-o\", )?\"--(out|plot|table)\"([^)]*)\)", src,
                             flags=re.S):
            assert not re.search(r"default=(?!None)", m.group(3)), (path.name, m.group(0))


def test_coverage_real_cnn_features_are_the_penultimate_layer():
    """``--model cnn``: the learned space is the 64 ReLU units before the class logits."""
    import torch

    mod = _load("coverage_real")
    from pruneopt.adapters.mmd import extract_features

    net = mod.make_model("mnist", 784, 0, "cnn")
    x = torch.rand(5, 1, 28, 28)
    F = extract_features(net, x, layer=mod.FEATURE_LAYER["cnn"])
    assert F.shape == (5, 64) and (F >= 0).all()
    head = net[-1]
    assert torch.allclose(net(x), head(torch.from_numpy(F).float()), atol=1e-5)
    assert mod.methods("mnist", "cnn")[-2:] == ("max-coverage (CNN features)",
                                                 "coverage-weighted (CNN features)")
