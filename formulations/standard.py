"""Standard forms a formulation exports and generic backends consume.

A :class:`MILPForm` is a mixed-integer linear program in the matrix form HiGHS and
``scipy.optimize.milp`` take::

    minimize / maximize   c @ x + offset
    subject to            row_lower <= A @ x <= row_upper
                          lower <= x <= upper,   x_j integer where integrality[j]

``decode(x)`` maps a solution vector back to the formulation's decision and ``encode``
(optional) a decision to a solution vector (for warm starts). When
``totally_unimodular`` is true (the constraint matrix is TU and the bounds integral), every
vertex of the LP relaxation is integral: a simplex solver may solve the LP and verify that
the answer is integral instead of branching.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp


@dataclass
class MILPForm:
    c: np.ndarray
    A: sp.csr_array
    row_lower: np.ndarray
    row_upper: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    integrality: np.ndarray
    sense: str
    decode: Callable[[np.ndarray], Any]
    offset: float = 0.0
    totally_unimodular: bool = False
    encode: Callable[[Any], np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(number of constraints, number of variables)."""
        return self.A.shape

    def objective_unit(self) -> float:
        """``max |c|`` (1 when c is 0): backends solve with ``c / unit`` so that their
        absolute tolerances act on numbers of order 1 whatever the scale of the data."""
        c = np.asarray(self.c, dtype=np.float64)
        unit = float(np.abs(c).max()) if c.size else 0.0
        return unit if unit > 0 and np.isfinite(unit) else 1.0


class MILPExportable:
    """Mixin: the formulation exports itself as a :class:`MILPForm` (and thus to Pyomo)."""

    @abstractmethod
    def to_milp(self) -> MILPForm: ...

    def to_pyomo(self):
        """The MILP as a ``pyomo.environ.ConcreteModel`` with variables ``x[j]`` and
        constraints ``rows[i]`` (a matrix-built model; formulations may override it with a
        model written in their own index sets)."""
        return pyomo_model(self.to_milp())


def pyomo_model(form: MILPForm, *, deadline: float | None = None):
    """A Pyomo ``ConcreteModel`` of ``form``: ``x[j]`` variables, ``rows[i]`` constraints,
    objective ``obj``. With ``deadline`` (a ``time.perf_counter()`` value), ``TimeoutError``
    once building passes it (Pyomo builds expressions in Python: large models take long)."""
    import time

    import pyomo.environ as pyo

    A = sp.csr_array(form.A)
    nrow, ncol = A.shape
    m = pyo.ConcreteModel()
    m.J = pyo.RangeSet(0, ncol - 1)
    m.I = pyo.RangeSet(0, nrow - 1)

    def bounds(_m, j):
        lo, up = form.lower[j], form.upper[j]
        return (None if np.isinf(lo) else float(lo), None if np.isinf(up) else float(up))

    def domain(_m, j):
        return pyo.Integers if form.integrality[j] else pyo.Reals

    m.x = pyo.Var(m.J, bounds=bounds, domain=domain)
    c = np.asarray(form.c, dtype=float)
    nz = np.flatnonzero(c)
    m.obj = pyo.Objective(
        expr=sum(float(c[j]) * m.x[int(j)] for j in nz) + float(form.offset),
        sense=pyo.maximize if form.sense == "max" else pyo.minimize,
    )

    def row(_m, i):
        if deadline is not None and i % 256 == 0 and time.perf_counter() > deadline:
            raise TimeoutError("building the Pyomo model passed the time limit")
        lo, up = form.row_lower[i], form.row_upper[i]
        s, e = A.indptr[i], A.indptr[i + 1]
        body = sum(float(v) * _m.x[int(j)] for j, v in zip(A.indices[s:e], A.data[s:e],
                                                             strict=True))
        return (None if np.isinf(lo) else float(lo), body, None if np.isinf(up) else float(up))

    m.rows = pyo.Constraint(m.I, rule=row)
    return m
