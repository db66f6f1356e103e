"""The answer of a solve: the decision, its objective, and the certificate that comes with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATUSES = ("optimal", "feasible", "infeasible", "time_limit")


@dataclass
class Solution:
    """What :func:`pruneopt.solve` returns.

    Attributes
    ----------
    decision
        The answer in the problem's own terms (a boolean mask, an integer level per layer,
        an array of kept indices). ``None`` when no feasible answer was found.
    objective
        ``problem.objective(decision)``, recomputed by the formulation (never the backend's
        own number), or ``None`` without a decision.
    status
        ``"optimal"`` only with a proof of optimality; ``"feasible"`` for an answer without
        one; ``"infeasible"`` when the problem has no feasible answer (proven);
        ``"time_limit"`` when the time limit stopped the backend (``decision`` is then the
        best answer found, if any).
    bound
        A proven bound on the optimal objective: an upper bound for a maximization, a lower
        bound for a minimization. ``None`` when the solver has none.
    solver, seconds
        The registered solver name and the wall-clock time of the solve, in seconds.
    sense
        ``"max"`` or ``"min"``, copied from the problem.
    guarantee
        What the solver promises: ``"exact"``, ``"approximation"`` or ``"heuristic"``.
    proof
        What proves ``status == "optimal"`` (``"exact algorithm"``, ``"backend"``, ``"bound
        meets objective"``, ``"residual graph"``, ...); ``None`` for any other status.
    info
        Backend details (raw status, iterations, quantization, ...), for inspection.
    """

    decision: Any
    objective: float | None
    status: str
    bound: float | None
    solver: str
    seconds: float
    sense: str = "max"
    guarantee: str = "exact"
    proof: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float | None:
        """Relative distance of objective and bound: ``|bound - obj| / |obj|`` (``inf`` when
        the objective is 0 and the bound is not).

        ``0.0`` for a proven optimum; ``None`` without a bound or an objective.
        """
        if self.status == "optimal":
            return 0.0
        if self.bound is None or self.objective is None:
            return None
        diff = abs(self.bound - self.objective)
        if self.objective == 0:
            return 0.0 if diff == 0 else float("inf")
        return diff / abs(self.objective)

    def __repr__(self) -> str:  # short: decisions can be large arrays
        obj = "None" if self.objective is None else f"{self.objective:.6g}"
        bnd = "None" if self.bound is None else f"{self.bound:.6g}"
        return (
            f"Solution(status={self.status!r}, objective={obj}, bound={bnd}, "
            f"solver={self.solver!r}, seconds={self.seconds:.3g})"
        )
