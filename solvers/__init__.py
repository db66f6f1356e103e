"""Pluggable backends: the registry, :class:`Solution`, and one module per backend family.

Every module of this package registers its solvers on import; the backends' own libraries
(OR-Tools, HiGHS, Pyomo, ...) are imported lazily, inside the solver functions. Modules named
``*_kernels`` hold compiled (numba) kernels and register nothing: they are imported by the
solvers that use them, when they run (importing numba costs ~0.3 s).
"""

import importlib
import pkgutil

from pruneopt.solvers.batch import solve_many
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
    if _mod.name not in ("registry", "solution") and not _mod.name.endswith("_kernels"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = [
    "Result", "Solution", "SolverSpec", "available", "get_solver", "register", "solve",
    "solve_many", "solvers",
]
