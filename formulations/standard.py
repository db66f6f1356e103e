"""Standard forms a formulation exports and generic backends consume.

A :class:`MILPForm` is a mixed-integer linear program in the matrix form HiGHS and
``scipy.optimize.milp`` take::

    minimize / maximize   c @ x + offset
    subject to            row_lower <= A @ x <= row_upper
                          lower <= x <= upper,   x_j integer where integrality[j]

``decode(x)`` maps a solution vector back to the formulation's decision. When
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

    @property
    def shape(self) -> tuple[int, int]:
        """(number of constraints, number of variables)."""
        return self.A.shape


class MILPExportable:
    """Mixin: the formulation exports itself as a :class:`MILPForm` (and thus to Pyomo)."""

    @abstractmethod
    def to_milp(self) -> MILPForm: ...

    def to_pyomo(self):
        """The MILP as a ``pyomo.environ.ConcreteModel`` with variables ``x[j]`` and
        constraints ``rows[i]`` (a matrix-built model; formulations may override it with a
        model written in their own index sets)."""
        from pruneopt.solvers.milp import pyomo_model_from_milp

        return pyomo_model_from_milp(self.to_milp())[0]
