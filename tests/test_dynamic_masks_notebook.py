"""notebooks/dynamic_masks.ipynb runs top to bottom (nbclient) and shows what it promises:
set-up errors at construction, DPF with exact transposable 2:4 masks (N:M after every
recompute), the greedy's ratio to the exact optimum, the statistics plot, a verified plain
sparse model."""

import re

import pytest
from notebook_run import run_notebook

pytestmark = pytest.mark.slow


def test_dynamic_masks_notebook_executes(monkeypatch):
    pytest.importorskip("mlxtend")
    outputs, text = run_notebook("dynamic_masks.ipynb", monkeypatch, timeout=300)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert text.count("ValueError:") == 2 and "these layers are not: c1 (8x9)" in text
    assert "every recompute transposable: True" in text
    assert "| 60 | 2:4 |" in text  # the ramp reached the target at its end
    ratio = float(re.search(r"greedy kept score / exact: min ([0-9.]+)", text).group(1))
    assert 0.5 <= ratio <= 1.0
    assert "verified: ['c2', 'fc1']" in text and "Linear zeros: 0.5" in text
    accs = dict(re.findall(r"\| ([A-Za-z -]+) \| ([0-9.]+) \|", text))
    assert float(accs["DPF exact"]) > 0.5 and float(accs["dense"]) > 0.8  # chance is 0.1
