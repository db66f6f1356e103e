"""notebooks/transposable_nm.ipynb runs top to bottom (nbclient, kernel python3) and shows
what it promises: the math, agreeing exact solvers, a plot, a verified masked model."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "transposable_nm.ipynb"


def test_transposable_nm_notebook_executes():
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the committed notebook carries its outputs
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    data = [o.get("data", {}) for o in outputs]
    text = "".join(o.get("text", "") for o in outputs)
    assert any("text/latex" in d and r"\max" in d["text/latex"] for d in data)
    assert any("image/png" in d for d in data)
    table = next(d["text/markdown"] for d in data if "| enumerate |" in d.get("text/markdown", ""))
    for solver in ("enumerate", "flow", "ortools", "highs"):
        row = next(r for r in table.splitlines() if r.startswith(f"| {solver} |"))
        assert "| optimal |" in row and "| 1.00000 |" in row
    assert "verified (W and W^T are 2:4): ['0', '3', '5']" in text
    assert "original model untouched: ['0.weight', '0.bias']" in text
    assert "after prune.remove: ['0.bias', '0.weight']" in text
