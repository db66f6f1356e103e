"""The command line's face: help, version, the solver table, clean errors."""

import subprocess
import sys

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
