"""Layer-wise reconstruction: the weights of a pruned layer that best reproduce the dense one.

Notation: a linear layer ``y = W x`` with ``W`` of shape (R, C) ([out, in]); calibration
inputs ``X`` (N x C, N tokens or positions) reach it through the model; ``H = X^T X`` (C x C,
in units of input^2 x tokens) is all these problems need. Damping ``lambda = damping *
mean(diag H)`` makes ``H_d = H + lambda I`` positive definite (calibration shorter than the
layer width leaves ``H`` singular: the least squares are then under-determined, and the
damping is a ridge towards the dense weights).

Both problems minimize the output error on the calibration data, summed over output rows::

    E(w) = sum_r (w_r - W_r)^T H_d (w_r - W_r) = ||X (w - W)^T||_F^2 + lambda ||w - W||_F^2

- :class:`MaskedReconstruction`: the mask is given (``w_rj = 0`` where ``mask_rj`` is
  False), the kept weights are free. A convex QP, separable by row, solved exactly in closed
  form: for row r with support S (and ``T`` its complement),
  ``w_S = W_S + (H_d)_SS^{-1} (H_d)_ST W_T`` (AdaPrune's layer-wise step; Hubara et al.).
- :class:`JointReconstruction`: the mask too is a decision, constrained to N:M (n kept in
  every m consecutive inputs of a row) or transposable N:M (n per row and column of every
  m x m block). Non-convex and combinatorial; solved by heuristics (SparseGPT's
  column-sequential OBS updates with an exact mask per slab, or an exact mask for a saliency
  followed by the exact refit). Its objective makes any two answers comparable.

:func:`saliency` gives the calibration-aware scores that an exact N:M mask can then
maximize: magnitude ``|W|``, Wanda ``|W_rj| ||x_j|| = |W_rj| sqrt(H_jj)`` (Sun et al. 2023)
and the OBS saliency ``W_rj^2 / [H_d^{-1}]_jj`` (the error of removing one weight with the
others refit; SparseGPT).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pruneopt.formulations.base import Formulation, as_array, finite_scale, to_numpy
from pruneopt.formulations.nm import validate_nm

#: Default damping, as a fraction of mean(diag H). SparseGPT uses 1 %; on all-MiniLM-L6-v2
#: (transposable 2:4, Wanda + refit, 512 calibration sentences) 5 % generalizes better to
#: held-out text (cosine 0.8945 at 1 %, 0.9019 at 5 %, 0.9035 at 10 % with a lower minimum).
DAMPING = 0.05
SCORES = ("magnitude", "wanda", "obs")


def damped(H: np.ndarray, damping: float) -> np.ndarray:
    """``H + damping * mean(diag H) * I`` (a copy); a zero H gets ``damping * I``."""
    mean = float(np.mean(np.diag(H))) if H.size else 0.0
    lam = damping * (mean if mean > 0 else 1.0)
    out = np.array(H, dtype=np.float64, copy=True)
    out[np.diag_indices_from(out)] += lam
    return out


def as_hessian(H: Any, C: int, name: str = "H") -> np.ndarray:
    """``H`` as a symmetric (C, C) float64 array with a non-negative diagonal."""
    H = as_array(H, name, ndim=2)
    if H.shape != (C, C):
        raise ValueError(f"{name} must be ({C}, {C}) (inputs x inputs, X^T X), got {H.shape}")
    if (np.diag(H) < 0).any():
        raise ValueError(f"{name} has negative diagonal entries; pass X^T X of the inputs")
    finite_scale(H, name)
    return 0.5 * (H + H.T)


def saliency(W: Any, H: Any | None = None, kind: str = "magnitude", *,
             damping: float = DAMPING) -> np.ndarray:
    """Importance of each weight of ``W`` (R, C) for an N:M mask, from ``H = X^T X``.

    ``"magnitude"``: ``|W|``; ``"wanda"``: ``|W_rj| sqrt(H_jj)`` (H needed);
    ``"obs"``: ``W_rj^2 / [H_d^{-1}]_jj`` with the damped ``H_d`` (H needed). Units: the
    weight's (magnitude), weight x input (wanda), weight^2 x input^2 (obs): only the order
    within a layer matters to a mask.
    """
    W = as_array(W, "W", ndim=2)
    if kind not in SCORES:
        raise ValueError(f"kind must be one of {SCORES}, got {kind!r}")
    if kind == "magnitude":
        return np.abs(W)
    if H is None:
        raise ValueError(f"the {kind!r} score needs calibration statistics H = X^T X; "
                         f"pass H, or use kind='magnitude'")
    H = as_hessian(H, W.shape[1])
    if kind == "wanda":
        return np.abs(W) * np.sqrt(np.diag(H))[None, :]
    Hinv_diag = np.diag(np.linalg.inv(damped(H, damping)))
    return W * W / Hinv_diag[None, :]


def _quadratic(D: np.ndarray, H: np.ndarray) -> float:
    """``sum_r D_r^T H D_r`` (one matrix product: BLAS, not a Python-speed contraction)."""
    return float(np.sum((D @ H) * D))


class _Reconstruction(Formulation):
    sense = "min"

    def __init__(self, W: Any, H: Any, damping: float) -> None:
        self.W = as_array(W, "W", ndim=2)
        if self.W.size == 0:
            raise ValueError("W is empty")
        R, C = self.W.shape
        self.H = as_hessian(H, C)
        try:
            damping = float(damping)
        except (TypeError, ValueError):
            raise ValueError(f"damping must be a number >= 0, got {damping!r}") from None
        if not (np.isfinite(damping) and damping >= 0):
            raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
        self.damping = damping
        self.Hd = damped(self.H, damping)
        self._scale = _quadratic(self.W, self.Hd)

    @property
    def shape(self) -> tuple[int, int]:
        return self.W.shape

    def objective_scale(self) -> float:
        """``E(0) = trace(W H_d W^T)``: the error of removing every weight."""
        return self._scale

    def error(self, weights: Any) -> float:
        """``E(w) = sum_r (w_r - W_r)^T H_d (w_r - W_r)`` (output error on the calibration
        data plus the damping term), in output^2 x tokens."""
        D = as_array(weights, "weights", ndim=2) - self.W
        return _quadratic(D, self.Hd)

    def _weights(self, decision: Any) -> np.ndarray:
        w = as_array(decision, "weights", ndim=2)
        if w.shape != self.shape:
            raise ValueError(f"weights have shape {w.shape}, expected {self.shape}")
        return w


class MaskedReconstruction(_Reconstruction):
    """The kept weights of a layer, for a fixed mask, that best reproduce the dense outputs.

    Parameters
    ----------
    W : (R, C) array or tensor
        The dense weights ([out, in]).
    H : (C, C) array
        ``X^T X`` of the layer's calibration inputs.
    mask : (R, C) bool
        True where a weight is kept.
    damping : float
        Ridge ``lambda = damping * mean(diag H)`` (default 1 %).

    Decision: the new weights (R, C), zero wherever ``mask`` is False. Objective: ``E(w)``
    (module docstring), minimized; the closed form is exact (solver ``"normal-equations"``).
    """

    def __init__(self, W: Any, H: Any, mask: Any, *, damping: float = DAMPING) -> None:
        super().__init__(W, H, damping)
        mask = np.asarray(to_numpy(mask, "mask"))
        if mask.shape != self.shape:
            raise ValueError(f"mask has shape {mask.shape}, expected {self.shape}")
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError("mask entries must be 0/1 or boolean")
            mask = mask.astype(bool)
        self.mask = mask

    def objective(self, decision: Any) -> float:
        return self.error(self._weights(decision))

    def check(self, decision: Any) -> np.ndarray:
        w = self._weights(decision)
        off = np.count_nonzero(w[~self.mask])
        if off:
            raise ValueError(f"{off} weights outside the mask are not zero")
        return w

    def math(self) -> str:
        R, C = self.shape
        return (
            f"Masked reconstruction: W {R}x{C}, {int(self.mask.sum())} weights kept, "
            f"damping {self.damping:g} * mean(diag H)\n"
            "minimize   sum_r (w_r - W_r)^T (H + lambda I) (w_r - W_r)\n"
            "subject to w_rj = 0 where mask_rj = 0\n"
            "exact: w_S = W_S + (H_d)_SS^-1 (H_d)_ST W_T for each row (S kept, T pruned)"
        )


class JointReconstruction(_Reconstruction):
    """Choose an N:M (or transposable N:M) mask **and** the kept weights of a layer that best
    reproduce its dense outputs on the calibration inputs.

    Parameters
    ----------
    W, H, damping
        As for :class:`MaskedReconstruction`.
    n, m : int
        Keep at most ``n`` of every ``m`` (along the input dimension; with
        ``transposable=True`` also along the output dimension, per m x m block).
    transposable : bool
        Transposable N:M (``W`` and ``W^T`` both N:M).

    Decision: the new weights (R, C); their nonzero pattern must be N:M (transposable).
    Objective: ``E(w)``, minimized. Heuristic solvers only (``"sparsegpt"``,
    ``"mask-refit"``); none proves optimality.
    """

    def __init__(self, W: Any, H: Any, n: int, m: int, *, transposable: bool = False,
                 damping: float = DAMPING) -> None:
        super().__init__(W, H, damping)
        self.n, self.m = validate_nm(n, m)
        self.transposable = bool(transposable)
        R, C = self.shape
        if C % self.m or (self.transposable and R % self.m):
            need = "both dimensions" if self.transposable else "the input dimension"
            raise ValueError(f"W of shape {self.shape} is not divisible by m={self.m} in "
                             f"{need}; pad or slice it")

    def mask_problem(self, scores: Any):
        """The exact mask problem for ``scores`` under this problem's N:M rule."""
        from pruneopt.formulations.nm import NMMask, TransposableNM

        cls = TransposableNM if self.transposable else NMMask
        return cls(scores, self.n, self.m)

    def objective(self, decision: Any) -> float:
        return self.error(self._weights(decision))

    def check(self, decision: Any) -> np.ndarray:
        w = self._weights(decision)
        self.mask_problem(np.abs(self.W)).check(w != 0)
        return w

    def math(self) -> str:
        R, C = self.shape
        rule = "transposable N:M" if self.transposable else "N:M"
        return (
            f"Joint mask and reconstruction: W {R}x{C}, {rule} {self.n}:{self.m}, damping "
            f"{self.damping:g} * mean(diag H)\n"
            "minimize   sum_r (w_r - W_r)^T (H + lambda I) (w_r - W_r)\n"
            f"subject to the nonzeros of w are {rule} (n kept of every m)"
        )
