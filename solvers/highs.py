"""The one place that builds and runs a HiGHS model (highspy), for every backend using it.

:func:`run_highs` takes a problem in HiGHS's matrix form (``row_lower <= A x <= row_upper``,
``lower <= x <= upper``, optional integrality, optional quadratic term ``x^T Q x / 2``),
runs it and returns a :class:`HighsOutcome`: why it stopped (``status``) apart from what it
holds (``x``, ``objective``, ``dual_bound``). Callers scale their data to order 1 first
(HiGHS's tolerances are absolute): the MILP backends divide the objective by
``MILPForm.objective_unit()``.

MIP solves run with ``mip_rel_gap`` (default 0) **and** ``mip_abs_gap = 0``: HiGHS's
default absolute gap of 1e-6 would let "optimal" stand for "within 1e-6".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

#: Primal and dual feasibility tolerances for our models (their rows and objectives are
#: scaled to order 1): HiGHS's smallest, 1e-10, so that "optimal" holds to about 1e-10 of the
#: largest objective coefficient (the defaults, 1e-7, missed optima by 1e-7 relative on
#: layer-budget tables whose layers' errors differ by orders of magnitude).
FEASIBILITY_TOL = 1e-10


@dataclass
class HighsOutcome:
    """Why HiGHS stopped and what it holds."""

    status: str  # "optimal", "infeasible", "time_limit" (any limit), "unbounded", "error"
    x: np.ndarray | None  # a primal solution when HiGHS has a feasible one
    objective: float | None
    dual_bound: float | None  # proven bound on the optimum (MIP dual bound / LP optimum)
    raw: str
    mip_gap: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


def run_highs(
    c: np.ndarray, A: Any, row_lower: np.ndarray, row_upper: np.ndarray, lower: np.ndarray,
    upper: np.ndarray, *, integrality: np.ndarray | None = None, sense: str = "min",
    offset: float = 0.0, hessian: np.ndarray | None = None, time_limit: float | None = None,
    mip_rel_gap: float = 0.0, threads: int | None = None, presolve: bool = True,
    feasibility_tol: float = FEASIBILITY_TOL, start: np.ndarray | None = None,
) -> HighsOutcome:
    """Solve one model with highspy. ``hessian`` (dense, symmetric) adds ``x^T H x / 2``
    (minimization only); ``start`` is a feasible point to warm-start a MIP from."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    if not presolve:
        h.setOptionValue("presolve", "off")
    if time_limit is not None:
        h.setOptionValue("time_limit", max(float(time_limit), 1e-3))
    if threads is not None:
        h.setOptionValue("threads", int(threads))
    h.setOptionValue("primal_feasibility_tolerance", float(feasibility_tol))
    h.setOptionValue("dual_feasibility_tolerance", float(feasibility_tol))
    A = sp.csc_array(A)
    nrow, ncol = A.shape
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = nrow
    lp.col_cost_ = np.asarray(c, dtype=np.float64)
    lp.col_lower_ = np.where(np.isinf(lower), -inf, lower).astype(np.float64)
    lp.col_upper_ = np.where(np.isinf(upper), inf, upper).astype(np.float64)
    lp.row_lower_ = np.where(np.isinf(row_lower), -inf, row_lower).astype(np.float64)
    lp.row_upper_ = np.where(np.isinf(row_upper), inf, row_upper).astype(np.float64)
    lp.offset_ = float(offset)
    lp.sense_ = highspy.ObjSense.kMaximize if sense == "max" else highspy.ObjSense.kMinimize
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(np.float64)
    is_mip = integrality is not None and bool(np.any(integrality))
    if is_mip:
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap))
        h.setOptionValue("mip_abs_gap", 0.0)
        h.setOptionValue("mip_feasibility_tolerance", float(feasibility_tol))
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous
            for flag in integrality
        ]
    if hessian is not None:
        H = sp.csc_array(np.tril(np.asarray(hessian, dtype=np.float64)))
        hess = highspy.HighsHessian()
        hess.dim_ = ncol
        hess.format_ = highspy.HessianFormat.kTriangular
        hess.start_ = H.indptr.astype(np.int32)
        hess.index_ = H.indices.astype(np.int32)
        hess.value_ = H.data
        model = highspy.HighsModel()
        model.lp_ = lp
        model.hessian_ = hess
        h.passModel(model)
    else:
        h.passModel(lp)
    if start is not None and is_mip:
        sol = highspy.HighsSolution()
        sol.col_value = np.asarray(start, dtype=np.float64).tolist()
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    raw = h.modelStatusToString(ms)
    M = highspy.HighsModelStatus
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = np.asarray(h.getSolution().col_value, dtype=float) if has_sol else None
    obj = float(info.objective_function_value) if has_sol else None
    if is_mip:
        dual = float(info.mip_dual_bound)
        dual = dual if np.isfinite(dual) else None
    else:
        dual = obj if ms == M.kOptimal else None
    gap = float(info.mip_gap) if is_mip and has_sol else None
    if ms == M.kOptimal:
        status = "optimal"
    elif ms == M.kInfeasible:
        status = "infeasible"
    elif ms in (M.kTimeLimit, M.kIterationLimit, M.kInterrupt, M.kSolutionLimit):
        status = "time_limit"
    elif ms in (M.kUnbounded, M.kUnboundedOrInfeasible):
        status = "unbounded"
    else:
        status = "error"
    return HighsOutcome(status, x, obj, dual, raw, gap, {"mip": is_mip})
