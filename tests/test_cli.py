"""The command line's face: help, version, the solver table, clean errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import pruneopt
from pruneopt.cli import main


def test_solvers_table_lists_every_registered_solver(capsys):
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    for spec in pruneopt.solvers.solvers():
        assert f"`{spec.name}`" in out
    assert "| TransposableNM | `flow` | exact |" in out
    assert "approximation (ratio 2)" in out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_module_entry_point_and_version():
    out = subprocess.run([sys.executable, "-m", "pruneopt", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == f"pruneopt {pruneopt.__version__}"


# One vocabulary across the commands: -o/--output, --no-progress, --solver (registry default),
# --keep, transposable by default; the old spellings still work, hidden, with a warning.

COMMANDS = [["nm", "m.pt", "-o", "o.pt"], ["budget", "t.json"], ["demo"],
            ["select", "coverage", "--features", "X.npy", "--radius", "1", "-o", "k.npy"],
            ["select", "mmd", "--source", "S.npy", "--target", "T.npy", "--keep", "3",
             "-o", "k.npy"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_has_the_same_flags(argv):
    from pruneopt.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    assert args.no_progress is False  # progress on by default
    assert parser.parse_args([*argv, "--no-progress"]).no_progress is True
    assert parser.parse_args([*argv, "--progress"]).no_progress is False  # accepted, a no-op
    if "--solver" in _help(argv):
        assert args.solver is None
    if argv[0] != "demo":
        assert "-o OUT, --output OUT" in _help(argv) or "-o PATH, --output PATH" in _help(argv)
        assert "--out " not in _help(argv) and "--progress " not in _help(argv)


def _help(argv):
    from pruneopt.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    if argv[0] == "select":
        sub = sub._subparsers._group_actions[0].choices[argv[1]]
    return sub.format_help()


def test_help_says_the_defaults():
    nm = " ".join(_help(["nm"]).split())
    assert "--transposable, --no-transposable" in nm and "default: on" in nm
    for kind in ("coverage", "mmd"):
        assert "registry's choice for the instance size" in " ".join(
            _help(["select", kind]).split())
    assert "--keep K" in _help(["select", "coverage"])
    assert "--budget" not in _help(["select", "coverage"])


def test_budget_output_and_its_old_spelling(tmp_path, capsys):
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"costs": [[3, 2, 1], [2, 1]], "errors": [[0, 1, 3], [0, 2]],
                             "budget": 4}))
    assert main(["budget", str(t), "-o", str(tmp_path / "a.json")]) == 0
    assert main(["budget", str(t), "--out", str(tmp_path / "b.json")]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err == "pruneopt budget: warning: --out is deprecated; use -o/--output\n"
    assert json.loads((tmp_path / "a.json").read_text())["levels"] == \
        json.loads((tmp_path / "b.json").read_text())["levels"]
    assert main(["budget", str(t), "--save-table", str(tmp_path / "s.json")]) == 2
    assert "--save-table needs --minilm" in capsys.readouterr().err


def test_budget_minilm_shows_progress_by_default():
    from pruneopt.cli import build_parser

    args = build_parser().parse_args(["budget", "--minilm", "--speedup", "1.5"])
    assert args.no_progress is False


def test_nm_is_transposable_by_default(tmp_path, capsys):
    from pruneopt.adapters.nm import is_nm

    torch.manual_seed(0)
    torch.save({"a.weight": torch.randn(8, 8)}, tmp_path / "m.pt")
    assert main(["nm", str(tmp_path / "m.pt"), "-o", str(tmp_path / "t.pt"), "--no-progress"]) == 0
    assert "with transposable 2:4" in capsys.readouterr().out
    w = torch.load(tmp_path / "t.pt", weights_only=True)["a.weight"]
    assert is_nm(w != 0, 2, 4, transposable=True)
    assert json.loads((tmp_path / "t.pt.json").read_text())["transposable"] is True
    assert main(["nm", str(tmp_path / "m.pt"), "-o", str(tmp_path / "p.pt"), "--no-progress",
                 "--no-transposable"]) == 0
    assert "with 2:4" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.pt.json").read_text())["transposable"] is False


def test_select_coverage_keep_and_the_registry_default(tmp_path, capsys):
    from pruneopt.formulations import CoverageSelection
    from pruneopt.solvers import get_solver

    X = np.random.default_rng(0).normal(size=(60, 2))
    np.save(tmp_path / "X.npy", X)
    base = ["select", "coverage", "--features", str(tmp_path / "X.npy"), "--radius", "0.5"]
    assert main([*base, "--keep", "6", "-o", str(tmp_path / "a.npy")]) == 0
    out = capsys.readouterr().out
    default = get_solver(CoverageSelection(X, keep=6, radius=0.5), None).name
    assert f"; {default}: " in out and default != "greedy"  # no longer greedy by default
    assert main([*base, "--keep", "0.1", "-o", str(tmp_path / "b.npy")]) == 0  # 10% of 60
    assert len(np.load(tmp_path / "b.npy")) == 6
    assert main([*base, "--budget", "6", "-o", str(tmp_path / "c.npy")]) == 0
    err = capsys.readouterr().err
    assert err == "pruneopt select coverage: warning: --budget is deprecated; use --keep\n"
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "c.npy"))
    assert main(["select", "coverage", "--features", str(tmp_path / "X.npy"), "--radius", "auto",
                 "--keep", "0.1", "-o", str(tmp_path / "d.npy")]) == 0
    assert len(np.load(tmp_path / "d.npy")) <= 6


def test_select_mmd_solver_default_is_the_registry(tmp_path, capsys):
    from pruneopt.adapters.mmd import auto_solver, mmd_problem

    rng = np.random.default_rng(1)
    S, T = rng.normal(size=(50, 2)), rng.normal(size=(20, 2)) + 0.3
    np.save(tmp_path / "S.npy", S)
    np.save(tmp_path / "T.npy", T)
    assert main(["select", "mmd", "--source", str(tmp_path / "S.npy"), "--target",
                 str(tmp_path / "T.npy"), "--keep", "10", "-o", str(tmp_path / "k.npy")]) == 0
    assert f"solver = {auto_solver(mmd_problem(S, T, 10))}," in capsys.readouterr().out


def test_solvers_lists_options(capsys):
    from pruneopt.cli import main

    assert main(["solvers", "--options"]) == 0
    out = capsys.readouterr().out
    assert "`scale`: a finite number > 0 or None" in out and "`seed`: an integer >= 0" in out
