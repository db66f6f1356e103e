"""Declared solver options: one table per solver, checked before the backend runs.

Modelled on scikit-learn's ``_parameter_constraints``: every keyword option of a solver
implementation is declared at :func:`~pruneopt.solvers.register` time with a constraint
from this module, and :func:`check_options` validates what the user passed (unknown names,
wrong types, out-of-range or non-finite numbers) with one message format before any backend
code runs::

    @register("ortools", TransposableNM, guarantee="exact",
              options={"scale": Real(0, None, closed="neither", allow_none=True)})
    def ortools_solver(problem, time_limit, *, scale=None): ...

A registration whose table does not name exactly the implementation's keyword options is
an error (so the table cannot drift from the code).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class Constraint:
    """What one option accepts; ``problem(value)`` says why a value is refused, or None."""

    allow_none: bool = False

    def describe(self) -> str:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def refuse(self, value: Any) -> str | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def problem(self, value: Any) -> str | None:
        if value is None:
            return None if self.allow_none else "must not be None"
        return self.refuse(value)


def _range_text(low: float | None, high: float | None, closed: str) -> str:
    lo_op = ">=" if closed in ("both", "left") else ">"
    hi_op = "<=" if closed in ("both", "right") else "<"
    def fmt(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    parts = []
    if low is not None:
        parts.append(f"{lo_op} {fmt(low)}")
    if high is not None:
        parts.append(f"{hi_op} {fmt(high)}")
    return " and ".join(parts)


def _in_range(v: float, low: float | None, high: float | None, closed: str) -> bool:
    if low is not None and (v < low if closed in ("both", "left") else v <= low):
        return False
    if high is not None and (v > high if closed in ("both", "right") else v >= high):
        return False
    return True


@dataclass(frozen=True)
class Real(Constraint):
    """A finite real number in [low, high] (``closed``: "both", "left", "right", "neither")."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"
    allow_none: bool = False

    def describe(self) -> str:
        rng = _range_text(self.low, self.high, self.closed)
        return "a finite number" + (f" {rng}" if rng else "") + (
            " or None" if self.allow_none else "")

    def refuse(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer |
                                                      np.floating):
            return f"must be {self.describe()}"
        v = float(value)
        if not math.isfinite(v) or not _in_range(v, self.low, self.high, self.closed):
            return f"must be {self.describe()}"
        return None


@dataclass(frozen=True)
class Integer(Constraint):
    """An integer (not a bool) in [low, high]."""

    low: int | None = None
    high: int | None = None
    allow_none: bool = False

    def describe(self) -> str:
        rng = _range_text(self.low, self.high, "both")
        return "an integer" + (f" {rng}" if rng else "") + (" or None" if self.allow_none else "")

    def refuse(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            return f"must be {self.describe()}"
        if not _in_range(int(value), self.low, self.high, "both"):
            return f"must be {self.describe()}"
        return None


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False``."""

    allow_none: bool = False

    def describe(self) -> str:
        return "True or False" + (" or None" if self.allow_none else "")

    def refuse(self, value: Any) -> str | None:
        return None if isinstance(value, bool | np.bool_) else f"must be {self.describe()}"


class OneOf(Constraint):
    """One of a fixed set of values (usually strings)."""

    def __init__(self, *values: Any, allow_none: bool = False) -> None:
        self.values = values
        self.allow_none = allow_none

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.values)) + (
            " or None" if self.allow_none else "")

    def refuse(self, value: Any) -> str | None:
        ok = isinstance(value, str | int | float | bool) and any(
            type(value) is type(v) and value == v for v in self.values)
        return None if ok else f"must be {self.describe()}"


class Check(Constraint):
    """Anything ``test(value)`` accepts (it returns a reason to refuse, or None)."""

    def __init__(self, test: Callable[[Any], str | None], description: str, *,
                 allow_none: bool = False) -> None:
        self.test = test
        self.description = description
        self.allow_none = allow_none

    def describe(self) -> str:
        return self.description

    def refuse(self, value: Any) -> str | None:
        return self.test(value)


#: Options shared by many solvers, declared once (the Pyomo way: one vocabulary).
SEED = Integer(0, 2**31 - 1)  # CP-SAT takes an int32 seed
THREADS = Integer(1, 1024, allow_none=True)
WORKERS = Integer(1, 1024)
REL_GAP = Real(0.0, 1.0)
PROGRESS = Boolean()
WARM_START = Boolean()


def check_options(solver: str, kind: str, table: Mapping[str, Constraint],
                  options: Mapping[str, Any]) -> None:
    """``ValueError`` for the first unknown or refused option, naming the solver's options."""
    for name, value in options.items():
        if name not in table:
            raise ValueError(
                f"solver {solver!r} ({kind}) has no option {name!r}; its options: "
                f"{', '.join(sorted(table)) or 'none'}"
            )
        why = table[name].problem(value)
        if why is not None:
            raise ValueError(f"solver {solver!r} ({kind}): option {name} {why}, got {value!r}")


def describe(table: Mapping[str, Constraint]) -> dict[str, str]:
    """The table as text: option name -> what it accepts (for ``pruneopt solvers``)."""
    return {name: c.describe() for name, c in table.items()}
