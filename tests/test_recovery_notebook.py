"""notebooks/recovery.ipynb runs top to bottom and shows what it promises: exact masks for
each score, a refit that lowers every layer's error, the cosine table, the error plot."""

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "recovery.ipynb"

pytestmark = pytest.mark.slow


def test_recovery_notebook_executes():
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert text.count("optimal, output error") == 3  # one exact mask per score
    cos = {m[0].strip(): float(m[1]) for m in re.findall(r"\| ([a-z +]+) \| ([0-9.]+) \|", text)}
    assert cos["wanda + refit"] > cos["wanda"] and cos["obs + refit"] > cos["magnitude"]
