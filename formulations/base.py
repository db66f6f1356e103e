"""What every formulation is: data, an objective, a feasibility check, and its mathematics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np


class Formulation(ABC):
    """Base class of every pruning decision written as an optimization problem.

    Subclasses validate their data in ``__init__`` (``ValueError`` on bad input), set
    ``sense`` to ``"max"`` or ``"min"``, and implement:

    - ``objective(decision) -> float``: the one definition of the objective;
    - ``check(decision) -> decision``: the decision in canonical form, or ``ValueError``
      saying which constraint it breaks;
    - ``math() -> str``: the model as readable text (``__str__``) and ``latex() -> str``
      (``_repr_latex_`` in notebooks).
    """

    sense: ClassVar[str] = "max"

    @abstractmethod
    def objective(self, decision: Any) -> float: ...

    @abstractmethod
    def check(self, decision: Any) -> Any: ...

    @abstractmethod
    def math(self) -> str: ...

    def latex(self) -> str:
        return "$$\\text{" + self.math().replace("\n", "}\\\\\\text{") + "}$$"

    def __str__(self) -> str:
        return self.math()

    def _repr_latex_(self) -> str:
        return self.latex()

    def exact_by_default(self) -> bool:
        """Whether ``solve(problem)`` without a solver name should run an exact solver.

        True by default; formulations whose exact solvers can take very long on large
        instances (MIQP, large ILPs) return False above a size, and the default is then the
        best approximate solver (which still reports a bound where it has one).
        """
        return True

    def better(self, a: float, b: float) -> bool:
        """Whether objective ``a`` is strictly better than ``b`` in this problem's sense."""
        return a > b if self.sense == "max" else a < b

    def solve(self, solver: str | None = None, time_limit: float | None = None, **options: Any):
        """Shortcut for ``pruneopt.solve(self, solver, time_limit, **options)``."""
        from pruneopt.solvers import solve

        return solve(self, solver=solver, time_limit=time_limit, **options)


def as_array(x: Any, name: str, *, ndim: int | None = None, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (numpy, torch tensor, nested lists) as a finite numpy array of ``dtype``.

    Never modifies ``x``; torch tensors are detached and copied to the CPU.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} has {bad} NaN or infinite entries; replace them first")
    return arr


def as_int(x: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``x`` as a Python int within [low, high], else ``ValueError``."""
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        if isinstance(x, float | np.floating) and float(x).is_integer():
            x = int(x)
        else:
            raise ValueError(f"{name} must be an integer, got {x!r}")
    x = int(x)
    if low is not None and x < low:
        raise ValueError(f"{name} must be >= {low}, got {x}")
    if high is not None and x > high:
        raise ValueError(f"{name} must be <= {high}, got {x}")
    return x
