"""notebooks/dynamic_masks.ipynb runs top to bottom (nbclient) and shows what it promises:
set-up errors at construction, DPF with exact transposable 2:4 masks (N:M after every
recompute), the greedy's ratio to the exact optimum, the statistics plot, a verified plain
sparse model."""

import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "dynamic_masks.ipynb"

pytestmark = pytest.mark.slow


def test_dynamic_masks_notebook_executes(monkeypatch):
    pytest.importorskip("ipykernel")
    pytest.importorskip("mlxtend")
    from nbclient import NotebookClient

    # the kernel imports the pruneopt of this checkout, whatever is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                 "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert text.count("ValueError:") == 2 and "these layers are not: c1 (8x9)" in text
    assert "every recompute transposable: True" in text
    assert "| 60 | 2:4 |" in text  # the ramp reached the target at its end
    ratio = float(re.search(r"greedy kept score / exact: min ([0-9.]+)", text).group(1))
    assert 0.5 <= ratio <= 1.0
    assert "verified: ['c2', 'fc1']" in text and "Linear zeros: 0.5" in text
    accs = dict(re.findall(r"\| ([A-Za-z -]+) \| ([0-9.]+) \|", text))
    assert float(accs["DPF exact"]) > 0.5 and float(accs["dense"]) > 0.8  # chance is 0.1
