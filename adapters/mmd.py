"""Torch glue for MMD data selection (AdaPrune): features of a dataset from a model, the
selection, and the answer as a ``torch.utils.data.Subset`` or a boolean keep mask.

>>> feats_s = extract_features(model, source_dataset, layer="net.3")   # doctest: +SKIP
>>> feats_t = extract_features(model, target_dataset, layer="net.3")   # doctest: +SKIP
>>> sol = select_mmd(feats_s, feats_t, keep=500)                       # doctest: +SKIP
>>> pruned = subset(source_dataset, sol.decision)                      # doctest: +SKIP

Also the data of the domain-shift experiment (``digits_domain_shift``): scikit-learn's
8x8 digits (shipped with scikit-learn, no download) as source, and as target the other
digits under a class-mix change plus rotation, blur and pixel noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.domain_shift import em_class_mix, pseudo_label_mix
from pruneopt.formulations.base import as_int
from pruneopt.formulations.geometry import as_indices
from pruneopt.formulations.mmd import MMDSelection
from pruneopt.solvers import Solution, get_solver, solve


def _resolve_layer(model: nn.Module, layer: nn.Module | str | None) -> nn.Module | None:
    if layer is None or isinstance(layer, nn.Module):
        return layer
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n]
            raise ValueError(
                f"model has no sub-module {layer!r}; its sub-modules are: {', '.join(names)}"
            ) from None
    raise ValueError(f"layer must be a module, a sub-module name or None, got {type(layer)}")


def _batches(data: Any, batch_size: int):
    """Input batches of ``data``: a tensor / array (rows are examples) or a Dataset whose
    items are ``x`` or ``(x, ...)``."""
    if isinstance(data, torch.Tensor | np.ndarray):
        t = torch.as_tensor(data)
        for a in range(0, len(t), batch_size):
            yield t[a : a + batch_size]
        return
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise ValueError(
            f"data must be a tensor, an array or a map-style Dataset, got {type(data)}"
        )
    for a in range(0, len(data), batch_size):
        items = [data[i] for i in range(a, min(a + batch_size, len(data)))]
        xs = [it[0] if isinstance(it, tuple | list) else it for it in items]
        yield torch.stack([torch.as_tensor(x) for x in xs])


def extract_features(model: nn.Module, data: Any, *, layer: nn.Module | str | None = None,
                     batch_size: int = 256, device: str | torch.device = "cpu",
                     progress: bool = False) -> np.ndarray:
    """Features of every example of ``data``: the (flattened) output of ``layer`` (a
    sub-module or its name, e.g. the penultimate layer or an embedding) or of the whole model
    when ``layer`` is None. Returns a float64 array (len(data), features).

    The model runs in eval mode under ``torch.no_grad``; its training flag is restored and its
    weights are untouched afterwards. The model is not moved: ``device`` is where the input
    batches are sent, so pass the device the model lives on.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mod = _resolve_layer(model, layer)
    captured: list[torch.Tensor] = []

    def hook(_m, _inp, out):
        out = out[0] if isinstance(out, tuple | list) else out
        captured.append(out.detach().reshape(out.shape[0], -1).to("cpu", torch.float64))

    handle = mod.register_forward_hook(hook) if mod is not None else None
    was_training = model.training
    model.eval()
    outs = []
    try:
        it = _batches(data, int(batch_size))
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="features", total=-(-len(data) // int(batch_size)))
        with torch.no_grad():
            for xb in it:
                y = model(xb.to(device))
                if mod is None:
                    y = y[0] if isinstance(y, tuple | list) else y
                    outs.append(y.detach().reshape(y.shape[0], -1).to("cpu", torch.float64))
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    feats = captured if mod is not None else outs
    if not feats:
        raise ValueError("data is empty: no features to extract")
    return torch.cat(feats).numpy()


def select_mmd(source: Any, target: Any, keep: int | float | None, *, kernel: Any = "rbf",
               bandwidth: float | str = "median", solver: str | None = None,
               time_limit: float | None = None, labels: Any = None,
               class_keep: Mapping[Any, int] | None = None,
               class_mix: Mapping[Any, float] | str | None = None,
               **options: Any) -> Solution:
    """Select ``keep`` source points (a count, or a fraction in (0, 1)) matching ``target``
    in MMD; returns the :class:`~pruneopt.Solution` (``decision`` = sorted kept indices).

    Class-aware selection: ``labels`` (one per source point) with ``class_keep`` (counts per
    class) or ``class_mix`` (proportions, e.g. :func:`~pruneopt.adapters.domain_shift.
    em_class_mix` of the target, or ``"source"``), as in :class:`MMDSelection`.

    ``solver=None`` (or ``"auto"``): the registry's default for the instance
    (:mod:`pruneopt.solvers.defaults`: exact SCIP for small n, the dense relax-swap
    heuristic up to a few thousand points, the low-rank solver beyond).
    """
    problem = mmd_problem(source, target, keep, kernel=kernel, bandwidth=bandwidth,
                          labels=labels, class_keep=class_keep, class_mix=class_mix)
    return solve(problem, solver=solver, time_limit=time_limit, **options)


def mmd_problem(source: Any, target: Any, keep: int | float | None, **kw: Any) -> MMDSelection:
    """:class:`MMDSelection` with ``keep`` given as a count or as a fraction in (0, 1)."""
    n = len(source)
    if isinstance(keep, float | np.floating) and 0 < keep < 1:
        keep = max(1, int(round(float(keep) * n)))
    return MMDSelection(source, target, keep, **kw)


def predict_proba(model: nn.Module, data: Any, *, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Softmax of ``model``'s outputs (class logits, column c = class c) on every example of
    ``data``: (len(data), classes) float64. Same model handling as :func:`extract_features`."""
    logits = extract_features(model, data, batch_size=batch_size, device=device)
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def target_class_mix(model: nn.Module, target: Any, source_labels: Any, *,
                     method: str = "em") -> dict[int, float]:
    """The target's class proportions estimated without target labels from a classifier
    trained on the source (outputs: logits of classes 0..C-1, the integer labels of
    ``source_labels``): ``method="em"`` (Saerens et al. 2002, the source prior from
    ``source_labels``) or ``"pseudo"`` (the share of argmax predictions)."""
    y = np.asarray(source_labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError("source_labels must be a 1-D array of class indices 0..C-1")
    P = predict_proba(model, target)
    if P.shape[1] <= y.max():
        raise ValueError(f"the model has {P.shape[1]} outputs but source_labels reach "
                         f"class {y.max()}")
    if method == "pseudo":
        mix = pseudo_label_mix(P)
    elif method == "em":
        prior = np.bincount(y, minlength=P.shape[1]).astype(np.float64)
        if np.any(prior == 0):
            missing = np.flatnonzero(prior == 0).tolist()
            raise ValueError(f"classes {missing} have no source labels; EM needs every class "
                             f"the model predicts to appear in the source")
        mix = em_class_mix(P, prior)
    else:
        raise ValueError(f"method must be 'em' or 'pseudo', got {method!r}")
    return {c: float(v) for c, v in enumerate(mix)}


def auto_solver(problem: MMDSelection) -> str:
    """The solver ``select_mmd(solver=None)`` uses for ``problem`` (the registry's rule)."""
    return get_solver(problem, None).name


def keep_mask(n: int, decision: Any) -> torch.Tensor:
    """Boolean tensor of length ``n``, True at the kept indices.

    ``decision``: kept indices (integers; integral floats such as 2.0 are accepted) or a
    boolean mask of length ``n``. Fractional, repeated or out-of-range indices are a
    ``ValueError``, never rounded."""
    n = as_int(n, "n", low=0)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.as_tensor(as_indices(decision, n, "kept indices"))] = True
    return mask


def subset(dataset: Any, decision: Any) -> torch.utils.data.Subset:
    """``torch.utils.data.Subset`` of the kept examples, in index order (the dataset itself
    is not copied). ``decision`` as in :func:`keep_mask`."""
    idx = as_indices(decision, len(dataset), "kept indices")
    return torch.utils.data.Subset(dataset, idx.tolist())


def prune_dataset(model: nn.Module, source: Any, target: Any, keep: int | float | None, *,
                  layer: nn.Module | str | None = None, as_mask: bool = False,
                  rounds: int = 1, fit: Callable[[np.ndarray], nn.Module] | None = None,
                  labels: Any = None, class_mix: Mapping[Any, float] | str | None = None,
                  **select_options: Any) -> tuple[Any, Solution]:
    """Features of ``source`` and ``target`` from ``model`` (at ``layer``), MMD selection,
    and the kept source examples as a ``Subset`` (or a boolean mask with ``as_mask=True``).
    Returns ``(subset_or_mask, solution)``.

    Iterated selection in a learned space (``rounds`` > 1, with ``fit``): after each
    selection, ``fit(kept_indices) -> model`` trains a model on the kept source examples
    (the user's training loop), its features at the same ``layer`` re-embed source and
    target, and the selection is made again; the last round's solution is returned, with
    ``solution.info["rounds"]`` listing every round's MMD^2 and kept indices.

    ``labels`` (source class indices) with ``class_mix``: class-aware selection. Besides
    proportions or ``"source"``, ``class_mix`` may be ``"em"`` or ``"pseudo"``: the target's
    mix estimated in every round from the current model's predictions
    (:func:`target_class_mix`; the model's outputs must be the class logits). Other keywords
    (``class_keep``, ``solver``, ``kernel``, ...) go to :func:`select_mmd`."""
    rounds = as_int(rounds, "rounds", low=1)
    if rounds > 1 and fit is None:
        raise ValueError("rounds > 1 needs fit=: a function kept_indices -> trained model")
    history: list[dict[str, Any]] = []
    sol = None
    for r in range(rounds):
        if r > 0:
            model = fit(sol.decision)
            if not isinstance(model, nn.Module):
                raise ValueError(f"fit must return a torch.nn.Module, got {type(model)}")
        mix = class_mix
        if isinstance(class_mix, str) and class_mix in ("em", "pseudo"):
            if labels is None:
                raise ValueError(f"class_mix={class_mix!r} needs labels= (source classes)")
            mix = target_class_mix(model, target, labels, method=class_mix)
        fs = extract_features(model, source, layer=layer)
        ft = extract_features(model, target, layer=layer)
        sol = select_mmd(fs, ft, keep, labels=labels, class_mix=mix, **select_options)
        history.append({"round": r, "objective": sol.objective, "decision": sol.decision,
                        "class_mix": mix})
    sol.info["rounds"] = history
    if as_mask:
        return keep_mask(len(fs), sol.decision), sol
    return subset(source, sol.decision), sol


# --------------------------------------------------------------------- the digits experiment
def digits_domain_shift(seed: int = 0, *, minority: float = 0.25, angle: float = 20.0,
                        blur: float = 0.6, noise: float = 1.0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(Xs, ys, Xt, yt): scikit-learn's digits (8x8, pixels 0..16) split in halves (seeded).

    Source: one half as is (all ten classes). Target: the other half under a class-mix
    change (classes 5-9 subsampled to a ``minority`` fraction) and a transform: rotation by
    ``angle`` degrees, Gaussian blur (sigma ``blur`` pixels) and Gaussian pixel noise
    (sigma ``noise``, clipped to 0..16). yt is for evaluation only.
    """
    from scipy import ndimage
    from sklearn.datasets import load_digits

    d = load_digits()
    X, y = d.images.astype(np.float64), d.target
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(X))
    src, tgt = perm[: len(X) // 2], perm[len(X) // 2 :]
    tgt = tgt[(y[tgt] < 5) | (rng.random(len(tgt)) < minority)]
    imgs = []
    for img in X[tgt]:
        im = ndimage.rotate(img, angle, reshape=False, order=1, mode="constant")
        im = ndimage.gaussian_filter(im, blur) if blur > 0 else im
        imgs.append(np.clip(im + rng.normal(scale=noise, size=im.shape), 0.0, 16.0))
    Xt = np.stack(imgs).reshape(len(tgt), -1)
    return X[src].reshape(len(src), -1), y[src], Xt, y[tgt]
