"""The layer-budget notebook runs top to bottom (kernel python3)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NB = Path(__file__).parent.parent / "notebooks" / "layer_budget.ipynb"


def test_notebook_executes():
    pytest.importorskip("transformers", reason="the notebook's last part needs transformers")
    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NB.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "measured speedup" in text and "optimal" in text
