"""What every formulation is: data, an objective, a feasibility check, and its mathematics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

#: Relative tolerance of comparisons of objective values and sums, times the data's scale
#: (:meth:`Formulation.objective_scale`): it absorbs floating-point summation, nothing else.
RTOL = 1e-9


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

    def objective_scale(self) -> float:
        """A magnitude of this instance's objective values, in the objective's own units
        (e.g. ``sum |s_ij|`` for a mask): every tolerance on objective values is
        :data:`RTOL` times it, so that an instance multiplied by any positive factor gets the
        same decision and status. Subclasses override it; 0 means "use the value compared"."""
        return 0.0

    def objective_tolerance(self, value: float = 0.0) -> float:
        """The slack allowed when comparing objective values near ``value``:
        ``RTOL * max(objective_scale(), |value|)`` (floating-point summation only)."""
        return RTOL * max(self.objective_scale(), abs(float(value)))

    def better(self, a: float, b: float) -> bool:
        """Whether objective ``a`` is strictly better than ``b`` in this problem's sense."""
        return a > b if self.sense == "max" else a < b


def to_numpy(x: Any, name: str = "input") -> Any:
    """A torch tensor as a numpy array on the CPU (float32/float64 kept, other float dtypes
    such as bfloat16 and float16 widened to float32, which holds them exactly); anything
    else is returned as it is. Does not import torch."""
    if not (hasattr(x, "detach") and hasattr(x, "cpu")):
        return x
    t = x.detach().cpu()
    if getattr(t, "is_complex", lambda: False)():
        raise ValueError(f"{name} is complex; pass real numbers (e.g. the magnitude .abs())")
    if getattr(t, "is_floating_point", lambda: False)() and t.element_size() < 4:
        t = t.float()
    return t.numpy()


def as_array(x: Any, name: str, *, ndim: int | None = None, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (numpy, torch tensor, nested lists) as a finite numpy array of ``dtype``.

    Never modifies ``x``; torch tensors (any float dtype, bfloat16 and float16 included)
    are detached and copied to the CPU. Complex input is a ``ValueError``, never silently
    truncated to its real part.
    """
    x = to_numpy(x, name)
    if np.iscomplexobj(x):
        raise ValueError(f"{name} is complex; pass real numbers (e.g. the magnitude np.abs)")
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


def finite_scale(a: np.ndarray, name: str) -> float:
    """``sum |a|``, or a ``ValueError`` when it overflows float64 (the objective would be
    ``inf``): the data must be rescaled first."""
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.abs(a).sum())
    if not np.isfinite(total):
        raise ValueError(
            f"{name} is too large in scale: the sum of |{name}| overflows float64 "
            f"(largest entry {float(np.abs(a).max()):.3g}); divide {name} by a constant first "
            f"(the decision does not change)")
    return total


def is_integral(a: np.ndarray, limit: float = 2.0**53) -> bool:
    """Whether every entry of ``a`` is an integer of magnitude below ``limit`` (exact in
    float64, and in int64 after conversion)."""
    a = np.asarray(a, dtype=np.float64)
    return bool(np.all(a == np.round(a)) and (a.size == 0 or float(np.abs(a).max()) < limit))


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
