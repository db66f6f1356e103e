"""numba for the ``*_kernels`` modules, imported only when they are (on a solver's first run).

numba probes the ``coverage`` package when it is imported, and fails with an AttributeError
(not the ImportError it handles) when a plain module of that name shadows the package, as
``benchmarks/coverage.py`` does for every script run from that folder. :func:`load_numba`
then hides the shadow during the import, so numba takes its own path for "coverage not
installed"; the module is put back afterwards.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def _coverage_shadowed() -> bool:
    mod = sys.modules.get("coverage")
    if mod is not None:
        return not hasattr(mod, "__path__")  # a plain module, not the coverage package
    try:
        spec = importlib.util.find_spec("coverage")
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.submodule_search_locations is None


def load_numba() -> ModuleType:
    """The ``numba`` module, imported safely (see the module docstring)."""
    if "numba" in sys.modules:
        return sys.modules["numba"]
    if not _coverage_shadowed():
        return importlib.import_module("numba")
    missing = object()
    saved = sys.modules.get("coverage", missing)
    sys.modules["coverage"] = None  # ``import coverage`` now raises ImportError
    try:
        return importlib.import_module("numba")
    finally:
        if saved is missing:
            sys.modules.pop("coverage", None)
        else:
            sys.modules["coverage"] = saved
