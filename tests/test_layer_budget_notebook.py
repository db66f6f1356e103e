"""The layer-budget notebook runs top to bottom (kernel python3)."""

from __future__ import annotations

import pytest
from notebook_run import run_notebook


def test_notebook_executes(monkeypatch):
    pytest.importorskip("transformers", reason="the notebook's last part needs transformers")
    outputs, text = run_notebook("layer_budget.ipynb", monkeypatch, timeout=120)
    assert "measured speedup" in text and "optimal" in text
