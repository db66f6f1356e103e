"""Pluggable backends: the registry, :class:`Solution`, and one module per backend family.

Every module of this package registers its solvers on import; the backends' own libraries
(OR-Tools, HiGHS, Pyomo, ...) are imported lazily, inside the solver functions.
"""

import importlib
import pkgutil

from pruneopt.solvers.registry import (
    Result,
    SolverSpec,
    available,
    get_solver,
    register,
    solve,
    solvers,
)
from pruneopt.solvers.solution import Solution

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("registry", "solution"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "Result", "Solution", "SolverSpec", "available", "get_solver", "register", "solve", "solvers",
]
