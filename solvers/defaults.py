"""The one rule for ``solver=None``: an ordered list per formulation, and size limits.

``pruneopt.solve(problem)`` (and every adapter and command that is not given a solver name)
takes the **first** solver of ``PREFERENCE[type(problem)]`` that is installed, accepts the
instance (its ``accepts`` hook) and whose default size limit the instance is within
(``DEFAULT_IF[(formulation, solver)](problem)``). Solvers not in the list come after
it, by name. A limit here only steers the default: a solver named explicitly runs at any
size it accepts.

Like cvxpy's preference list, this is the only place that decides; solver modules declare
what they can do (guarantee, accepts, options), never how they rank.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pruneopt.formulations import (
    CoverageSelection,
    CoverSelection,
    JointReconstruction,
    LayerBudget,
    MaskedReconstruction,
    MMDSelection,
    NMMask,
    TransposableNM,
)

_COVERAGE = ("highs", "cpsat", "greedy", "lp-round", "kcenter", "scipy", "pyomo")

PREFERENCE: dict[type, tuple[str, ...]] = {
    # exact first: enumeration of the block patterns (2:4), our flow, then the references;
    # for scores given as a torch tensor the torch backends first (on the tensor's device);
    # the entropic OT heuristic after every exact one (never the default)
    TransposableNM: ("enumerate-torch", "flow-torch", "enumerate", "flow", "ortools", "highs",
                     "greedy", "greedy-torch", "scipy", "pyomo", "networkx", "entropic"),
    NMMask: ("topk-torch", "topk", "enumerate", "enumerate-torch", "highs", "scipy", "pyomo"),
    LayerBudget: ("dp", "greedy", "highs", "dp_round", "scipy", "cpsat", "pyomo"),
    MMDSelection: ("gurobi", "scip", "relax-swap", "relax-round", "greedy", "swap", "lowrank"),
    CoverageSelection: _COVERAGE,
    CoverSelection: _COVERAGE,
    MaskedReconstruction: ("normal-equations",),
    JointReconstruction: ("sparsegpt", "mask-refit"),
}

#: The default skips a solver when the instance is not in its sweet spot: exact MIQP/ILP
#: solves that prove small instances in seconds but can run for hours beyond; the dense MMD
#: heuristics, whose n x n kernel and QP relaxation grow as n^2; the torch N:M backends
#: unless the scores came as a torch tensor.
DEFAULT_IF: dict[tuple[type, str], Callable[[Any], bool]] = {
    (MMDSelection, "gurobi"): lambda p: p.n <= 40,
    (MMDSelection, "scip"): lambda p: p.n <= 40,
    **{(MMDSelection, name): (lambda p: p.n <= 3000)
       for name in ("relax-swap", "relax-round", "greedy", "swap")},
    **{(cls, name): (lambda p: p.n <= 2000) for cls in (CoverageSelection, CoverSelection)
       for name in ("highs", "cpsat", "scipy", "pyomo")},
    **{(cls, "lp-round"): (lambda p: p.n <= 20000) for cls in (CoverageSelection, CoverSelection)},
    # the torch backends are the default for torch scores only (tensor in, tensor out)
    **{(cls, name): (lambda p: p.tensor is not None)
       for cls, name in ((TransposableNM, "enumerate-torch"), (TransposableNM, "flow-torch"),
                         (NMMask, "topk-torch"))},
}


def _formulation_class(cls: type) -> type | None:
    return next((c for c in cls.__mro__ if c in PREFERENCE), None)


def rank(cls: type, name: str) -> tuple[int, str]:
    """Sort key of solver ``name`` for formulations of type ``cls`` (lower comes first)."""
    order = PREFERENCE.get(_formulation_class(cls), ())
    return (order.index(name), name) if name in order else (len(order), name)


def within_default_size(problem: Any, name: str) -> bool:
    """Whether the default may pick ``name`` for this instance (:data:`DEFAULT_IF`)."""
    rule = DEFAULT_IF.get((_formulation_class(type(problem)), name))
    return rule is None or bool(rule(problem))
