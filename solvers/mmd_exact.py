"""Exact MIQP solvers for :class:`~pruneopt.formulations.MMDSelection`.

Both use the factored convex form (``MMDSelection.convexified``): K - mu I = L L^T, so on
binary x with sum x = k the objective is

    k^2 (MMD^2(x) - tt) = z + mu k - 2 k c^T x,   y = L^T x,   z >= ||y||^2

(an epigraph of a convex quadratic; SCIP works in these k^2-scaled units so that its
absolute tolerances are small against the objective). Written this way SCIP solves n = 20
in seconds; the expanded form with n^2 bilinear products stalls at n = 30-40.

- ``"scip"`` (pyscipopt, optional extra ``pruneopt[mip]``): warm-started with the
  ``relax-swap`` heuristic; ``bound`` = max(SCIP dual bound, convex relaxation bound).
  Status ``"optimal"`` only when SCIP proves it (gap 0 up to its tolerances); otherwise
  ``"time_limit"`` with the incumbent and the proven bound.
Class-aware problems get one count constraint per class (sum over class c of x_i = k_c)
instead of the cardinality row; the relaxation bound they are combined with has the same rows.

- ``"gurobi"`` (gurobipy): registered only when gurobipy is importable (its pip licence is
  size-limited); same model, same honesty.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from pruneopt.formulations.mmd import MMDSelection
from pruneopt.solvers.mmd_heuristics import best_heuristic, dense_data, dense_refusal, round_top
from pruneopt.solvers.options import THREADS, Boolean
from pruneopt.solvers.registry import Result, register

OPTIONS = {"warm_start": Boolean(), "threads": THREADS, "verbose": Boolean()}

#: Relative optimality gap at which the exact solvers stop (0 = prove optimality).
GAP = 1e-9
#: SCIP feasibility tolerance (smaller values make SCIP print warnings without GMP).
FEASTOL = 1e-7


def _start(problem: MMDSelection, time_limit: float | None, warm_start: bool):
    if not warm_start:
        return None, None, {}
    budget = None if time_limit is None else 0.2 * time_limit
    return best_heuristic(problem, budget)


@register("scip", MMDSelection, guarantee="exact", requires=("pyscipopt",),
          package="pyscipopt", accepts=dense_refusal, options=OPTIONS)
def scip_solver(problem: MMDSelection, time_limit: float | None, *, warm_start: bool = True,
                threads: int | None = None, verbose: bool = False) -> Result:
    """SCIP on the factored MIQP (epigraph z >= ||L^T x||^2); proven status and bound."""
    try:
        import pyscipopt
    except ImportError:  # pragma: no cover - the registry checks first
        raise ValueError("solver 'scip' needs pyscipopt: pip install 'pruneopt[mip]'") from None
    t0 = time.perf_counter()
    _, c, tt = dense_data(problem)
    n, k = problem.n, problem.keep
    L, mu = problem.factor()
    # in units of the kernel's scale: SCIP's tolerances are absolute
    unit = problem.objective_scale() or 1.0
    L, c, mu = L / np.sqrt(unit), c / unit, mu / unit
    r = L.shape[1]
    idx0, lb_relax, info = _start(problem, time_limit, warm_start)

    # Scaled by k^2 / unit and without the constant tt, so SCIP's absolute tolerances act on
    # numbers of order k^2 MMD^2 / unit rather than MMD^2 (often 1e-3):
    #   k^2 (MMD^2 - tt) / unit = z + mu k - 2 k c^T x,   y = L^T x,   z >= ||y||^2
    m = pyscipopt.Model("MMDSelection")
    if not verbose:
        m.hideOutput()
    if time_limit is not None:
        m.setParam("limits/time", max(time_limit - (time.perf_counter() - t0), 1e-3))
    m.setParam("limits/gap", GAP)
    m.setParam("numerics/feastol", FEASTOL)
    if threads is not None:
        m.setParam("parallel/maxnthreads", int(threads))
    x = [m.addVar(f"x{i}", vtype="B") for i in range(n)]
    y = [m.addVar(f"y{j}", lb=None, ub=None) for j in range(r)]
    z = m.addVar("z", lb=0.0, ub=None)
    if problem.class_constrained:  # one count per class (they add up to k)
        for cls, (grp, q) in enumerate(zip(problem.class_groups(), problem.quota, strict=True)):
            m.addCons(pyscipopt.quicksum(x[int(i)] for i in grp) == int(q), name=f"class{cls}")
    else:
        m.addCons(pyscipopt.quicksum(x) == k, name="cardinality")
    for j in range(r):
        col = L[:, j]
        m.addCons(y[j] == pyscipopt.quicksum(float(col[i]) * x[i] for i in range(n) if col[i] != 0),
                  name=f"factor{j}")
    m.addCons(z >= pyscipopt.quicksum(y[j] * y[j] for j in range(r)), name="epigraph")
    lin = pyscipopt.quicksum(float(-2.0 * k * c[i]) * x[i] for i in range(n))
    m.setObjective(z + lin, "minimize")
    if idx0 is not None:
        xv = np.zeros(n)
        xv[idx0] = 1.0
        yv = L.T @ xv
        sol = m.createSol()
        for i in range(n):
            m.setSolVal(sol, x[i], float(xv[i]))
        for j in range(r):
            m.setSolVal(sol, y[j], float(yv[j]))
        m.setSolVal(sol, z, float(yv @ yv) * (1 + 1e-12))
        m.addSol(sol, free=True)
    m.optimize()
    status = m.getStatus()
    decision = None
    if m.getNSols() > 0:
        best = m.getBestSol()
        xv = np.array([m.getSolVal(best, xi) for xi in x])
        decision = round_top(problem, xv)
    elif idx0 is not None:
        decision = idx0
    dual = (m.getDualbound() + mu * k) * unit / k**2 + tt
    bound = max(dual, lb_relax) if lb_relax is not None else dual
    info.update({"scip_status": status, "nodes": m.getNNodes(), "rank": r, "mu": mu,
                 "scip_gap": m.getGap()})
    if status == "optimal":
        return Result(decision, "optimal", _safe(problem, decision, bound), info,
                      proof="backend")
    if status == "infeasible":  # cannot happen (keep <= n) but never hide a backend answer
        return Result(None, "infeasible", None, info)
    # time limit (or another SCIP limit): the incumbent and the proven bound
    return Result(decision, "time_limit", _safe(problem, decision, bound), info)


def _safe(problem: MMDSelection, decision, bound: float) -> float:
    """The bound never above the re-scored objective (SCIP's tolerances may overshoot by
    ~1e-9; the true optimum is at most the objective of the decision)."""
    if decision is None:
        return bound
    return min(bound, problem.objective(decision))


if importlib.util.find_spec("gurobipy") is not None:  # pragma: no cover - needs a licence

    @register("gurobi", MMDSelection, guarantee="exact", requires=("gurobipy",),
              package="gurobipy", accepts=dense_refusal, options={"warm_start": Boolean()})
    def gurobi_solver(problem: MMDSelection, time_limit: float | None, *,
                      warm_start: bool = True) -> Result:
        """Gurobi on the factored MIQP; proven status and bound."""
        import gurobipy as gp

        _, c, tt = dense_data(problem)
        n, k = problem.n, problem.keep
        L, mu = problem.factor()
        idx0, lb_relax, info = _start(problem, time_limit, warm_start)
        env = gp.Env(params={"OutputFlag": 0})
        m = gp.Model("MMDSelection", env=env)
        if time_limit is not None:
            m.Params.TimeLimit = float(time_limit)
        m.Params.MIPGap = GAP
        x = m.addMVar(n, vtype="B", name="x")
        y = m.addMVar(L.shape[1], lb=-gp.GRB.INFINITY, name="y")
        if problem.class_constrained:
            for grp, q in zip(problem.class_groups(), problem.quota, strict=True):
                m.addConstr(x[grp].sum() == int(q))
        else:
            m.addConstr(x.sum() == k)
        m.addConstr(y == (L.T / k) @ x)
        m.setObjective(y @ y - (2.0 * c / k) @ x + mu / k + tt, gp.GRB.MINIMIZE)
        if idx0 is not None:
            start = np.zeros(n)
            start[idx0] = 1.0
            x.Start = start
        m.optimize()
        decision = round_top(problem, x.X) if m.SolCount > 0 else idx0
        bound = float(m.ObjBound)
        if lb_relax is not None:
            bound = max(bound, lb_relax)
        info.update({"gurobi_status": int(m.Status), "nodes": float(m.NodeCount)})
        if m.Status == gp.GRB.OPTIMAL:
            return Result(decision, "optimal", _safe(problem, decision, bound), info)
        return Result(decision, "time_limit", _safe(problem, decision, bound), info)
