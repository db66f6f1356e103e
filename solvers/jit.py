"""numba for the compiled kernels, imported only when a solver first runs.

Kernel modules (``*_kernels``, which the registry does not import) take numba from
:func:`load_numba`; modules imported with the registry compile their functions on the
first call instead (:func:`compile_on_first_call`). Either way ``import pruneopt`` does not
import numba (about 0.3 s).

numba probes the ``coverage`` package when it is imported, and fails with an AttributeError
(not the ImportError it handles) when a plain module of that name shadows the package, as
a user's ``coverage.py`` does for every script run beside it. :func:`load_numba`
then hides the shadow during the import, so numba takes its own path for "coverage not
installed"; the module is put back afterwards.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable
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


def compile_on_first_call(**options: object) -> Callable[[Callable], Callable]:
    """Decorator: the function compiled by ``numba.njit(cache=True, **options)`` at its first
    call (the machine code is cached on disk next to the module), so that defining it does
    not import numba."""

    def decorate(fn: Callable) -> Callable:
        compiled: list[Callable] = []
        lock = threading.Lock()

        @functools.wraps(fn)
        def call(*args):
            if not compiled:
                with lock:
                    if not compiled:
                        compiled.append(load_numba().njit(cache=True, **options)(fn))
            return compiled[0](*args)

        return call

    return decorate
