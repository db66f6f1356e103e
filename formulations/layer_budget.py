"""Layer budgets (SPDY): one sparsity level per layer, minimal summed error, summed cost in budget.

Data: for every layer ``l`` a list of levels ``k = 0..K_l-1`` with a cost ``c[l][k] >= 0``
(e.g. the layer's measured time in seconds at that sparsity) and an error ``e[l][k]`` (e.g.
the calibration loss increase when only that layer is pruned to that level). Layers may have
different numbers of levels (a ragged table). The problem is the multiple-choice knapsack

    minimize    sum_l e[l][k_l]
    subject to  sum_l c[l][k_l] <= B,       k_l in {0, ..., K_l - 1} for every layer l.

As a MILP with binaries ``x[l,k]`` (1 when layer l takes level k)::

    min  sum_{l,k} e[l][k] x[l,k]
    s.t. sum_k x[l,k] = 1                  for every layer l
         sum_{l,k} c[l][k] x[l,k] <= B
         x[l,k] in {0, 1}

Budgets that no choice meets (``B < sum_l min_k c[l][k]``) are rejected when the problem is
built, with a ``ValueError`` stating the minimum achievable cost: there is never an
over-budget answer. Feasibility is checked exactly up to floating-point summation
(relative tolerance :data:`COST_RTOL` of the cost scale).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from pruneopt.formulations.base import Formulation, as_array, finite_scale, to_numpy
from pruneopt.formulations.standard import MILPExportable, MILPForm

#: Relative tolerance of the budget check, times ``max(|B|, sum_l max_k c[l][k])``: it only
#: absorbs floating-point summation order, not any solver's feasibility tolerance.
COST_RTOL = 1e-9


def _as_table(x: Any, name: str) -> list[np.ndarray]:
    """A ragged table (list of 1-D arrays, one per layer) from a 2-D array or nested lists."""
    x = to_numpy(x, name)
    if isinstance(x, np.ndarray):
        if x.ndim != 2:
            raise ValueError(
                f"{name} must be a 2-D array (layers x levels) or a list of 1-D arrays, one per "
                f"layer; got shape {x.shape}"
            )
        rows = list(x)
    elif isinstance(x, Sequence) and not isinstance(x, str | bytes):
        rows = list(x)
    else:
        raise ValueError(
            f"{name} must be a list of 1-D arrays (one per layer), got {type(x).__name__}"
        )
    if not rows:
        raise ValueError(f"{name} has no layers; give at least one layer with at least one level")
    out = []
    for i, row in enumerate(rows):
        arr = as_array(row, f"{name}[{i}]", ndim=1)
        if arr.size == 0:
            raise ValueError(f"{name}[{i}] is empty: every layer needs at least one level")
        out.append(arr)
    return out


class LayerBudget(MILPExportable, Formulation):
    """Choose one level per layer: minimal summed error with the summed cost within ``budget``.

    Parameters
    ----------
    costs, errors
        Ragged tables: a list with one 1-D array per layer (or a 2-D array when every layer
        has the same number of levels). ``costs[l][k] >= 0`` in any unit (seconds, FLOPs,
        bytes); ``errors[l][k]`` any finite number (lower is better). Same lengths per layer.
    budget
        The largest allowed summed cost, in the unit of ``costs``.
    names
        Optional layer names (for reports).

    The decision is an integer array ``levels`` with ``levels[l]`` in ``0..K_l-1``.
    """

    sense: ClassVar[str] = "min"

    def __init__(self, costs: Any, errors: Any, budget: float,
                 names: Sequence[str] | None = None) -> None:
        c = _as_table(costs, "costs")
        e = _as_table(errors, "errors")
        if len(c) != len(e):
            raise ValueError(f"costs has {len(c)} layers but errors has {len(e)}; give one row per "
                             "layer in both")
        for i, (ci, ei) in enumerate(zip(c, e, strict=True)):
            if ci.size != ei.size:
                raise ValueError(f"layer {i}: costs has {ci.size} levels but errors has {ei.size}; "
                                 "every level needs both a cost and an error")
            if (ci < 0).any():
                raise ValueError(f"layer {i}: costs must be >= 0, got min {ci.min():g}; shift or "
                                 "clip the timing table")
        try:
            budget = float(budget)
        except (TypeError, ValueError):
            raise ValueError(f"budget must be a number, got {budget!r}") from None
        if not np.isfinite(budget):
            raise ValueError(f"budget must be finite, got {budget}")
        self.costs = [x.copy() for x in c]
        self.errors = [x.copy() for x in e]
        self.budget = budget
        self.n_layers = len(c)
        self.levels = np.array([x.size for x in c], dtype=np.int64)
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != self.n_layers:
                raise ValueError(f"names has {len(names)} entries for {self.n_layers} layers")
        self.names = names
        finite_scale(np.concatenate(c), "costs")
        self._error_scale = float(sum(float(np.abs(x).max()) for x in e))
        finite_scale(np.array([self._error_scale]), "errors")
        self.min_cost = float(sum(x.min() for x in c))
        self.max_cost = float(sum(x.max() for x in c))
        self.tolerance = COST_RTOL * max(abs(budget), self.max_cost)
        if self.min_cost > budget + self.tolerance:
            raise ValueError(
                f"budget {budget:.6g} cannot be met: the minimum achievable cost (cheapest level "
                f"in every layer) is {self.min_cost:.6g}; raise the budget to at least that"
            )

    def objective_scale(self) -> float:
        """``sum_l max_k |e[l][k]|``: the largest summed error any choice could reach."""
        return self._error_scale

    # -- the objective and the constraints ------------------------------------------------
    def _levels(self, decision: Any) -> np.ndarray:
        arr = as_array(decision, "levels", ndim=1)
        if arr.size != self.n_layers:
            raise ValueError(
                f"levels must have one entry per layer ({self.n_layers}), got {arr.size}"
            )
        if not np.all(arr == np.round(arr)):
            raise ValueError("levels must be integers")
        lv = arr.astype(np.int64)
        bad = np.flatnonzero((lv < 0) | (lv >= self.levels))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"layer {i}: level {lv[i]} out of range 0..{self.levels[i] - 1}")
        return lv

    def cost(self, decision: Any) -> float:
        """Summed cost ``sum_l c[l][k_l]`` of the levels ``decision``."""
        lv = self._levels(decision)
        return float(sum(float(c[k]) for c, k in zip(self.costs, lv, strict=True)))

    def objective(self, decision: Any) -> float:
        """Summed error ``sum_l e[l][k_l]``."""
        lv = self._levels(decision)
        return float(sum(float(e[k]) for e, k in zip(self.errors, lv, strict=True)))

    def fits(self, decision: Any) -> bool:
        """Whether the levels ``decision`` cost at most the budget (up to ``tolerance``,
        floating-point summation of the costs)."""
        return self.cost(decision) <= self.budget + self.tolerance

    def check(self, decision: Any) -> np.ndarray:
        """The levels as an int array; ``ValueError`` if out of range or over budget."""
        lv = self._levels(decision)
        total = self.cost(lv)
        if total > self.budget + self.tolerance:
            raise ValueError(f"levels cost {total:.9g}, over the budget {self.budget:.9g}")
        return lv

    # -- helpers for solvers -------------------------------------------------------------
    def padded(self) -> tuple[np.ndarray, np.ndarray]:
        """(costs, errors) as ``(L, K_max)`` arrays, ``inf`` beyond each layer's levels."""
        kmax = int(self.levels.max())
        C = np.full((self.n_layers, kmax), np.inf)
        E = np.full((self.n_layers, kmax), np.inf)
        for i, (c, e) in enumerate(zip(self.costs, self.errors, strict=True)):
            C[i, : c.size] = c
            E[i, : e.size] = e
        return C, E

    def math(self) -> str:
        return (
            f"LayerBudget: {self.n_layers} layers, {int(self.levels.sum())} levels in all, "
            f"budget B = {self.budget:.6g} (min achievable {self.min_cost:.6g})\n"
            "minimize   sum_l e[l][k_l]\n"
            "subject to sum_l c[l][k_l] <= B,   k_l in {0..K_l-1}\n"
            "MILP: x[l,k] in {0,1}, sum_k x[l,k] = 1 (each l), sum_{l,k} c[l][k] x[l,k] <= B"
        )

    def latex(self) -> str:
        return (
            r"$$\begin{aligned}\min_{x}\ & \sum_{l=1}^{" + str(self.n_layers)
            + r"} \sum_{k} e_{lk}\, x_{lk} \\ \text{s.t. }\ & \sum_k x_{lk} = 1 \quad"
            r" \forall l, \qquad \sum_{l,k} c_{lk}\, x_{lk} \le B = " + f"{self.budget:.6g}"
            + r", \qquad x_{lk} \in \{0,1\}\end{aligned}$$"
        )

    def to_milp(self) -> MILPForm:
        """The multiple-choice MILP; variable ``x[l,k]`` is column ``offsets[l] + k``.

        The budget row is divided by ``1e-6 max(|B|, max summed cost)``, so that a backend's
        absolute feasibility tolerance (1e-6 in HiGHS) is 1e-12 of the budget, well inside
        the check's :data:`COST_RTOL`.
        """
        L = self.n_layers
        offsets = np.concatenate([[0], np.cumsum(self.levels)])
        n = int(offsets[-1])
        # each layer's errors relative to its smallest (exact: every layer takes one level),
        # so that one layer's large constant does not drown the others' differences in a
        # backend's tolerances; the constant goes to the offset
        shift = np.array([float(e.min()) for e in self.errors])
        cvec = np.concatenate([e - m for e, m in zip(self.errors, shift, strict=True)])
        cost = np.concatenate(self.costs)
        # the budget row in units of 1e-6 of the cost scale: MILP solvers accept rows violated
        # by their feasibility tolerance (HiGHS: 1e-6 absolute), i.e. 1e-12 of the budget here
        scale = max(abs(self.budget), self.max_cost, 1e-300) * 1e-6
        rows = np.concatenate([np.repeat(np.arange(L), self.levels), np.full(n, L)])
        cols = np.concatenate([np.arange(n), np.arange(n)])
        vals = np.concatenate([np.ones(n), cost / scale])
        A = sp.csr_array((vals, (rows, cols)), shape=(L + 1, n))
        row_lower = np.concatenate([np.ones(L), [-np.inf]])
        # half the check's tolerance above the budget: summation rounding in a backend never
        # cuts off an answer that fits, and nothing it accepts fails the check
        row_upper = np.concatenate([np.ones(L), [(self.budget + 0.5 * self.tolerance) / scale]])
        levels = self.levels

        def decode(x: np.ndarray) -> np.ndarray:
            return np.array([int(np.argmax(x[offsets[i]: offsets[i] + levels[i]]))
                             for i in range(L)], dtype=np.int64)

        return MILPForm(
            c=cvec, A=A, row_lower=row_lower, row_upper=row_upper, offset=float(shift.sum()),
            lower=np.zeros(n), upper=np.ones(n), integrality=np.ones(n, dtype=np.int8),
            sense="min", decode=decode,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``costs``, ``errors``, ``budget``, ``names``)."""
        return {"costs": [c.tolist() for c in self.costs],
                "errors": [e.tolist() for e in self.errors],
                "budget": self.budget, "names": self.names}
