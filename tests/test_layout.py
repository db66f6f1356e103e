"""The layout's dependency rule, checked on the source (every import, lazy ones included):

- ``formulations/`` imports neither ``pruneopt.solvers`` nor ``pruneopt.adapters`` nor torch;
- ``solvers/`` imports neither ``pruneopt.adapters`` nor torch, except the torch backends:
  modules named ``*torch*`` may import torch lazily (inside functions, never at the top);
- no module imports another module's private (``_name``) names, and no solver reads a
  problem's private attributes (``problem._x``): shared helpers have public homes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "formulations": ("pruneopt.solvers", "pruneopt.adapters", "torch"),
    "solvers": ("pruneopt.adapters", "torch"),
}


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def _top_level_lines(path: Path) -> set[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {node.lineno for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)}


def _lazy_torch_allowed(folder: str, path: Path, line: int, module: str) -> bool:
    """The torch backends of ``solvers/`` (modules named ``*torch*``) import torch lazily."""
    return (folder == "solvers" and "torch" in path.stem
            and (module == "torch" or module.startswith("torch."))
            and line not in _top_level_lines(path))


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_dependencies_point_one_way(folder):
    bad = []
    for path in _modules(folder):
        for line, module, _ in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[folder]) and \
                    not _lazy_torch_allowed(folder, path, line, module):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", ["formulations", "solvers", "adapters", "pruneopt"])
def test_no_private_names_cross_modules(folder):
    bad = []
    paths = _modules(folder) + (sorted((ROOT / "pruneopt" / "commands").glob("*.py"))
                                if folder == "pruneopt" else [])
    for path in paths:
        for line, module, names in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if module.startswith("pruneopt") and private:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {private} from {module}")
    assert not bad, "\n".join(bad)


def test_solvers_do_not_read_private_attributes_of_problems():
    bad = []
    for path in _modules("solvers"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "problem" and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} problem.{node.attr}")
    assert not bad, "\n".join(bad)
