"""The adapters' module layout: ``spdy`` is a facade over one module per job, and no module
imports another's private names."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "adapters"

pytest.importorskip("transformers", reason="the spdy modules are for transformers' BERT")

SPDY_MODULES = ("bert_surgery", "bert_structure", "calib_loss", "calibration", "spdy_table",
                "spdy_timing", "spdy_errors", "spdy_generic", "spdy_search", "spdy_correction",
                "spdy_baselines", "reconstruction",
                "pruned_models")


def test_spdy_is_a_facade_over_one_module_per_job():
    spdy = importlib.import_module("pruneopt.adapters.spdy")
    tree = ast.parse((ADAPTERS / "spdy.py").read_text())
    defined = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    assert not defined, "spdy.py only re-exports"
    homes = {name: importlib.import_module(f"pruneopt.adapters.{name}") for name in SPDY_MODULES}
    for name in spdy.__all__:
        obj = getattr(spdy, name)
        home = obj.__module__.rsplit(".", 1)[-1]
        assert home in homes and getattr(homes[home], name) is obj, name
        assert name in homes[home].__all__, f"{name} is public in {home}"
    # the callers' names (command line, benchmarks, notebooks, tests) are all still there
    for name in ("SpdyTable", "apply_levels", "bert_of", "cosine_to", "csr_linear_timing",
                 "embed", "error_database", "head_scores", "levels_for", "make_batches",
                 "measure_speedup", "neuron_scores", "prune_units", "pruned_attention",
                 "reconstruct", "spdy_prune", "spdy_search", "timing_database",
                 "uniform_at_speedup", "uniform_curve", "uniform_removed", "units_of"):
        assert callable(getattr(spdy, name)), name
    for name in SPDY_MODULES:
        lines = (ADAPTERS / f"{name}.py").read_text().count("\n")
        assert lines < 350, f"{name}.py has {lines} lines: split it by job"


def test_no_private_names_cross_modules():
    bad = []
    for path in sorted(ADAPTERS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pruneopt"):
                bad += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and isinstance(
                    node.value, ast.Name) and node.value.id in SPDY_MODULES:
                bad.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not bad, bad
