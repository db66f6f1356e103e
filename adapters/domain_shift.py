"""Domain-shift companions of MMD selection: the target's class mix without target labels,
CORAL feature alignment and kernel mean matching (KMM) weights. NumPy only (no torch).

- :func:`pseudo_label_mix`: the target's class proportions as the mean one-hot prediction of a
  source model (its confusion biases them towards the classes it over-predicts).
- :func:`em_class_mix`: Saerens, Latinne & Decaestecker (2002), "Adjusting the outputs of a
  classifier to new a priori probabilities": EM on the target prior pi given the source
  prior p_s and the source model's posteriors p_s(c | x_t):

      E: w_tc = pi_c p_s(c | x_t) / p_s(c)  /  sum_c' pi_c' p_s(c' | x_t) / p_s(c')
      M: pi_c = mean_t w_tc

  (the maximum-likelihood prior under a pure label shift, p(x | c) unchanged).
- :func:`estimate_class_mix`: both estimates from features alone: a multinomial logistic
  regression fitted on the labelled source features gives p_s(c | x_t) on the target.
- :func:`coral`: CORAL (Sun, Feng & Saenko, AAAI 2016): recolour the source features so that
  their covariance is the target's, X_s' = (X_s - m_s) C_s^{-1/2} C_t^{1/2} + m_t with
  C = cov + eps I (the mean shift is optional; the paper aligns second moments only).
- :func:`kmm_weights`: kernel mean matching (Huang et al., NIPS 2006): weights beta >= 0 on the
  source, 0 <= beta_i <= B, sum beta = n, minimizing the squared MMD between the weighted
  source and the target, || sum_i beta_i phi(s_i) / n - mean_t phi(t) ||^2. With x = beta / B
  this is exactly the continuous relaxation of :class:`~pruneopt.formulations.MMDSelection`
  with keep = n / B: KMM is the relaxed problem, MMD selection its integer version.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pruneopt.formulations.base import as_array, as_int
from pruneopt.formulations.mmd import MMDSelection
from pruneopt.solvers.mmd_lowrank import project_capped_simplex


def _probs(probs: Any, name: str = "probs") -> np.ndarray:
    P = as_array(probs, name, ndim=2)
    if P.shape[0] == 0 or P.shape[1] < 2:
        raise ValueError(f"{name} must be (points, classes) with >= 2 classes, got {P.shape}")
    if np.any(P < 0) or not np.allclose(P.sum(1), 1.0, rtol=0, atol=1e-6):
        raise ValueError(f"{name} must hold class probabilities (rows >= 0 summing to 1); "
                         f"apply a softmax to logits first")
    return P


def pseudo_label_mix(probs: Any) -> np.ndarray:
    """Class proportions of the argmax predictions, ``probs`` (points, classes) of
    probabilities (or one row per target point of any scores: only the argmax is used)."""
    P = as_array(probs, "probs", ndim=2)
    if P.shape[0] == 0:
        raise ValueError("probs is empty")
    return np.bincount(P.argmax(1), minlength=P.shape[1]) / P.shape[0]


def em_class_mix(probs: Any, source_prior: Any, *, max_iter: int = 1000,
                 tol: float = 1e-8) -> np.ndarray:
    """The target prior pi by EM (Saerens et al. 2002; module docstring). ``probs``: a source
    model's posteriors on the target points (points, classes), rows summing to 1;
    ``source_prior``: the class proportions of its training data (classes,). Stops when
    ``max |pi_new - pi| < tol`` (proportions, dimensionless) or after ``max_iter`` steps."""
    P = _probs(probs)
    ps = as_array(source_prior, "source_prior", ndim=1)
    if len(ps) != P.shape[1]:
        raise ValueError(f"source_prior has {len(ps)} classes, probs has {P.shape[1]}")
    if np.any(ps <= 0):
        raise ValueError("source_prior must be > 0 for every class (the model saw each class)")
    ps = ps / ps.sum()
    pi = ps.copy()
    ratio = P / ps
    for _ in range(as_int(max_iter, "max_iter", low=1)):
        W = ratio * pi
        W /= W.sum(1, keepdims=True)
        new = W.mean(0)
        done = float(np.abs(new - pi).max()) < tol
        pi = new
        if done:
            break
    return pi


def estimate_class_mix(source: Any, labels: Any, target: Any, *, method: str = "em",
                       C: float = 1.0, max_iter: int = 300) -> dict[Any, float]:
    """The target's class proportions ``{label: p_c}`` (summing to 1) without target labels,
    from features: scikit-learn's multinomial ``LogisticRegression(C=C, max_iter=max_iter)``
    (the default classifier of the README and ``benchmarks/mmd_digits_real.py``) is fitted on
    ``source`` (n, d) with ``labels`` (n,), and its posteriors on ``target`` (m, d) give
    ``method="em"`` (:func:`em_class_mix`, source prior = the label shares) or ``"pseudo"``
    (:func:`pseudo_label_mix`). Labels are integers or strings; every source class gets a
    proportion (0 where nothing is predicted). Needs at least two classes."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from pruneopt.formulations.mmd import class_labels

    if method not in ("em", "pseudo"):
        raise ValueError(f"method must be 'em' or 'pseudo', got {method!r}")
    S = as_array(source, "source", ndim=2)
    T = as_array(target, "target", ndim=2)
    if S.shape[1] != T.shape[1]:
        raise ValueError(f"source and target have different feature dimensions "
                         f"({S.shape[1]} vs {T.shape[1]})")
    classes, index = class_labels(labels, len(S))
    if len(classes) < 2:
        raise ValueError(f"estimating a class mix needs at least 2 source classes, got "
                         f"{len(classes)} ({classes.tolist()})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=as_int(max_iter, "max_iter", low=1))
        clf.fit(S, index)  # class positions 0..C-1: the columns of predict_proba
    P = clf.predict_proba(T)
    if method == "pseudo":
        mix = pseudo_label_mix(P)
    else:
        mix = em_class_mix(P, np.bincount(index, minlength=len(classes)))
    return {cls: float(v) for cls, v in zip(classes.tolist(), mix, strict=True)}


def _sqrtm(C: np.ndarray, power: float) -> np.ndarray:
    w, V = np.linalg.eigh(0.5 * (C + C.T))
    return (V * np.maximum(w, 1e-300) ** power) @ V.T


def coral(source: Any, target: Any, *, eps: float = 1.0, match_mean: bool = True) -> np.ndarray:
    """CORAL-aligned source features (module docstring): the same rows, with the target's
    covariance (and mean with ``match_mean``). ``eps`` (> 0, in squared feature units) is
    added to both covariances' diagonals, as in the paper. Inputs are not modified."""
    S = as_array(source, "source", ndim=2)
    T = as_array(target, "target", ndim=2)
    if S.shape[1] != T.shape[1]:
        raise ValueError(f"source and target have different feature dimensions "
                         f"({S.shape[1]} vs {T.shape[1]})")
    if len(S) < 2 or len(T) < 2:
        raise ValueError("coral needs at least 2 source and 2 target points")
    if not (isinstance(eps, int | float) and np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    eye = np.eye(S.shape[1])
    Cs = np.cov(S, rowvar=False) + eps * eye
    Ct = np.cov(T, rowvar=False) + eps * eye
    ms, mt = S.mean(0), T.mean(0)
    out = (S - ms) @ _sqrtm(Cs, -0.5) @ _sqrtm(Ct, 0.5)
    return out + (mt if match_mean else ms)


def kmm_weights(source: Any, target: Any, *, B: float = 10.0, kernel: Any = "rbf",
                bandwidth: float | str = "median", iters: int = 500,
                problem: MMDSelection | None = None) -> np.ndarray:
    """KMM importance weights beta (length n, 0 <= beta <= B, sum = n) by accelerated
    projected gradient (FISTA) on the exact kernel; module docstring for the model.
    ``problem``: an :class:`MMDSelection` on the same source and target whose kernel
    matrix is reused (then ``kernel``/``bandwidth`` are ignored). ``B`` > 1: the largest weight
    (the paper's bound; n / B is the relaxed keep)."""
    if problem is None:
        problem = MMDSelection(source, target, 1, kernel=kernel, bandwidth=bandwidth)
    n = problem.n
    B = float(B)
    if not (np.isfinite(B) and B > 1.0):
        raise ValueError(f"B (the largest weight) must be a finite number > 1, got {B!r}")
    K, c, _ = problem.quadratic()
    k = min(n / B, float(n))  # x = beta / B lies in the capped simplex of sum n / B
    lip = 2.0 * float(np.linalg.eigvalsh(K)[-1]) if n <= 2000 else 2.0 * float(
        np.abs(K).sum(1).max())
    step = 1.0 / max(lip, 1e-300)
    x = np.full(n, k / n)
    y, t = x.copy(), 1.0
    for _ in range(as_int(iters, "iters", low=1)):
        grad = 2.0 * (K @ y) - 2.0 * k * c  # gradient of x^T K x - 2 k c^T x
        x_new = project_capped_simplex(y - step * grad, k)
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    beta = B * x
    return beta * (n / beta.sum())
