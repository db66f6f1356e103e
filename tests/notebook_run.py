"""Run a notebook of ``notebooks/`` top to bottom (nbclient, kernel python3) the way every
notebook test needs: the kernel imports this checkout's pruneopt whatever is installed,
matplotlib on its Agg backend (as in CI), the committed copy carrying its outputs, no cell
raising. Returns the outputs and their concatenated text."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(name: str, monkeypatch, timeout: int = 600) -> tuple[list[dict], str]:
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    path = ROOT / "notebooks" / name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT),
                                                      os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs, "".join(o.get("text", "") for o in outputs)
