"""notebooks/transposable_nm.ipynb runs top to bottom (nbclient, kernel python3) and shows
what it promises: the math, agreeing exact solvers, a plot, a verified masked model."""


from notebook_run import run_notebook


def test_transposable_nm_notebook_executes(monkeypatch):
    outputs, text = run_notebook("transposable_nm.ipynb", monkeypatch, timeout=120)
    data = [o.get("data", {}) for o in outputs]
    assert any("text/latex" in d and r"\max" in d["text/latex"] for d in data)
    assert any("image/png" in d for d in data)
    table = next(d["text/markdown"] for d in data if "| enumerate |" in d.get("text/markdown", ""))
    for solver in ("enumerate", "flow", "ortools", "highs"):
        row = next(r for r in table.splitlines() if r.startswith(f"| {solver} |"))
        assert "| optimal |" in row and "| 1.00000 |" in row
    assert "verified (W and W^T are 2:4): ['0', '3', '5']" in text
    assert "original model untouched: ['0.weight', '0.bias']" in text
    assert "after prune.remove: ['0.bias', '0.weight']" in text
