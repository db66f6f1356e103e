"""notebooks/recovery.ipynb runs top to bottom and shows what it promises: exact masks for
each score, a refit that lowers every layer's error, the cosine table, the error plot."""

import re

import pytest
from notebook_run import run_notebook

pytestmark = pytest.mark.slow


def test_recovery_notebook_executes(monkeypatch):
    outputs, text = run_notebook("recovery.ipynb", monkeypatch)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert text.count("optimal, output error") == 3  # one exact mask per score
    cos = {m[0].strip(): float(m[1]) for m in re.findall(r"\| ([a-z +]+) \| ([0-9.]+) \|", text)}
    assert cos["wanda + refit"] > cos["wanda"] and cos["obs + refit"] > cos["magnitude"]
