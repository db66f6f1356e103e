"""OR-Tools CP-SAT for :class:`~pruneopt.formulations.LayerBudget`.

CP-SAT solves integer programs only, so the table is scaled to integers:

- **costs**: each layer is shifted by its cheapest level (``d = c - min c``, budget
  ``R = B - sum min c``); if every ``d`` and ``R`` is already an integer (and below 2**40)
  they are used as they are (exact); otherwise ``w = ceil(d * S)`` with ``S = cost_scale /
  R`` and the capacity ``floor(R * S) = cost_scale``. Rounding costs *up* keeps every answer
  truly within budget, but may exclude answers whose slack is below about
  ``layers / cost_scale`` of the budget.
- **errors**: each layer is shifted by its smallest error; if all are integers (below
  2**40) they are exact, else ``round(e * T)`` with ``T = error_scale / (largest shifted
  error)``, which changes each error by at most ``0.5 / T``.

Status: ``"optimal"`` only when both scalings were exact and CP-SAT proved optimality, or
when the answer meets the LP lower bound of the *unscaled* table. Otherwise ``"feasible"``,
with the LP bound (valid for the real table) as ``bound``. It is therefore registered as a
heuristic that certifies itself when it can: exact on integer tables.
"""

from __future__ import annotations

import numpy as np

from pruneopt.formulations.layer_budget import LayerBudget
from pruneopt.solvers.budget_dp import _closed, lp_greedy, reduce
from pruneopt.solvers.registry import Result, register

_EXACT_MAX = 2.0**40


def _integral(a: np.ndarray) -> bool:
    return bool(np.all(a == np.round(a)) and np.all(np.abs(a) < _EXACT_MAX))


@register("cpsat", LayerBudget, guarantee="heuristic", requires=("ortools",), package="ortools",
          priority=75)
def cpsat_solver(problem: LayerBudget, time_limit: float | None, *, cost_scale: int = 10**6,
                 error_scale: int = 10**6, workers: int = 1, seed: int = 0) -> Result:
    """OR-Tools CP-SAT on the integer-scaled table (exact on integer tables)."""
    from ortools.sat.python import cp_model

    for name, v in (("cost_scale", cost_scale), ("error_scale", error_scale)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 1 <= v <= 10**12:
            raise ValueError(f"{name} must be an integer in 1..1e12, got {v!r}")
    red = reduce(problem, pareto=False)
    alld = np.concatenate(red.d)
    cost_exact = _integral(alld) and float(red.R).is_integer() and red.R < _EXACT_MAX
    if cost_exact:
        W = [d.astype(np.int64) for d in red.d]
        cap = int(red.R)
    else:
        S = cost_scale / red.R if red.R > 0 else 1.0
        W = [np.ceil(d * S).astype(np.int64) for d in red.d]
        cap = int(np.floor(red.R * S)) if red.R > 0 else 0
    eshift = [e - e.min() for e in red.e]
    alle = np.concatenate(eshift)
    err_exact = _integral(alle)
    if err_exact:
        V = [e.astype(np.int64) for e in eshift]
    else:
        T = error_scale / alle.max() if alle.max() > 0 else 1.0
        V = [np.rint(e * T).astype(np.int64) for e in eshift]
    m = cp_model.CpModel()
    xs = []
    for li, w in enumerate(W):
        x = [m.NewBoolVar(f"x{li}_{k}") for k in range(w.size)]
        m.AddExactlyOne(x)
        xs.append(x)
    m.Add(sum(int(wk) * xk for w, x in zip(W, xs, strict=True)
              for wk, xk in zip(w, x, strict=True) if wk) <= cap)
    m.Minimize(sum(int(vk) * xk for v, x in zip(V, xs, strict=True)
                   for vk, xk in zip(v, x, strict=True) if vk))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = float(time_limit)
    st = solver.Solve(m)
    info = {"cost_exact": cost_exact, "error_exact": err_exact,
            "backend_status": solver.StatusName(st)}
    if st == cp_model.INFEASIBLE:  # only possible when rounding costs up excluded every answer
        return Result(None, "infeasible" if cost_exact else "time_limit", None, info)
    if st not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Result(None, "time_limit", None, info)
    pos = np.array([int(np.argmax([solver.Value(xk) for xk in x])) for x in xs])
    levels = np.array([int(i[p]) for i, p in zip(red.idx, pos, strict=True)])
    obj = problem.objective(levels)
    _, lb, _, _ = lp_greedy(reduce(problem))
    lb = min(lb, obj)
    if st == cp_model.OPTIMAL and cost_exact and err_exact:
        info["certified"] = True
        return Result(levels, "optimal", obj, info)
    if _closed(obj, lb):
        info["certified"] = True
        return Result(levels, "optimal", lb, info)
    return Result(levels, "feasible" if st == cp_model.OPTIMAL else "time_limit", lb, info)
