"""Coresets of a torch dataset: CCS stratified sampling and (weighted) maximum coverage.

- :func:`ccs_indices` / :func:`ccs_subset`: Coverage-centric Coreset Selection (Zheng et
  al., ICLR 2023): drop the ``beta`` fraction of hardest examples (the public code drops
  the lowest AUM), split the rest into ``strata`` equal-width bins of the score, spread the
  budget over the bins starting from the smallest (each bin gets at most an equal share of
  what is left), and sample uniformly inside every bin.
- :func:`coverage_indices` / :func:`coverage_subset`: the points maximising the (importance-
  weighted) number of examples within a radius, solved as :class:`CoverageSelection` by the
  registry's default solver unless one is named.
- :func:`top_indices`, :func:`random_indices`: the usual baselines.

Indices are sorted int64 numpy arrays; the ``*_subset`` functions wrap them in a
``torch.utils.data.Subset`` (the dataset itself is not modified).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

import pruneopt
from pruneopt.formulations.base import as_array, as_int
from pruneopt.formulations.coverage import CoverageSelection
from pruneopt.formulations.geometry import default_radius


def _scores(scores: Any, name: str, n: int | None = None) -> np.ndarray:
    s = as_array(scores, name, ndim=1)
    if len(s) == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and len(s) != n:
        raise ValueError(f"{name} must have one entry per example ({n}), got {len(s)}")
    return s


def _beta(beta: float) -> float:
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta must be a fraction in [0, 1), got {beta!r}") from None
    if not 0.0 <= b < 1.0:
        raise ValueError(f"beta (hard-pruning ratio) must be in [0, 1), got {beta!r}")
    return b


def _keep_alias(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Accept the deprecated keyword ``budget=`` for ``keep=`` (the naming table: a count of
    kept items is ``keep``; ``budget`` is a cost cap)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "budget" in kwargs:
            if "keep" in kwargs:
                raise TypeError(f"{fn.__name__}() got both keep= and its old name budget=")
            warnings.warn(f"{fn.__name__}(budget=...) is deprecated; use keep=",
                          DeprecationWarning, stacklevel=2)
            kwargs["keep"] = kwargs.pop("budget")
        return fn(*args, **kwargs)

    return wrapper


def drop_hardest(difficulty: Any, beta: float) -> np.ndarray:
    """Indices that remain after dropping the ``floor(beta * n)`` hardest examples
    (highest ``difficulty``; pass ``-aum`` to drop the lowest AUM, as CCS does)."""
    d = _scores(difficulty, "difficulty")
    drop = int(np.floor(_beta(beta) * len(d)))
    order = np.argsort(-d, kind="stable")
    return np.sort(order[drop:]).astype(np.int64)


@_keep_alias
def allocate_strata(counts: Any, keep: int) -> np.ndarray:
    """Spread ``keep`` over bins of the given sizes, smallest bin first: each bin takes
    ``min(its size, remaining keep // remaining bins)``, as in the CCS code."""
    counts = np.asarray(counts, dtype=np.int64)
    order = np.argsort(counts, kind="stable")
    out = np.zeros(len(counts), dtype=np.int64)
    rest = int(keep)
    for pos, b in enumerate(order):
        share = min(int(counts[b]), rest // (len(counts) - pos))
        out[b] = share
        rest -= share
    return out


@_keep_alias
def ccs_indices(scores: Any, keep: int, *, beta: float = 0.0, strata: int = 50,
                difficulty: Any = None, seed: int = 0) -> np.ndarray:
    """CCS: stratified sampling over ``scores`` after hard pruning.

    ``scores``: the stratification score of every example (EL2N, forgetting, AUM...).
    ``keep``: the coreset size. ``beta``: fraction of the whole data dropped as hardest
    first (by ``difficulty``, higher = harder; default ``scores``). ``strata``: number of
    equal-width bins over [min, max] of the remaining scores (the maximum falls in the last
    bin). The result has exactly ``min(keep, n - dropped)`` indices, unless the
    smallest-first allocation leaves some keep unspent (only when bins run out).
    """
    s = _scores(scores, "scores")
    n = len(s)
    keep = as_int(keep, "keep", low=1, high=n)
    strata = as_int(strata, "strata", low=1)
    diff = s if difficulty is None else _scores(difficulty, "difficulty", n)
    pool = drop_hardest(diff, beta)
    if keep > len(pool):
        raise ValueError(
            f"keep {keep} exceeds the {len(pool)} examples left after hard pruning "
            f"(beta={beta}); lower beta or the keep"
        )
    v = s[pool]
    lo, hi = float(v.min()), float(v.max())
    if hi > lo:
        edges = np.linspace(lo, hi, strata + 1)
        bins = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, strata - 1)
    else:
        bins = np.zeros(len(v), dtype=np.int64)
    counts = np.bincount(bins, minlength=strata)
    take = allocate_strata(counts, keep)
    rng = np.random.default_rng(seed)
    chosen = []
    for b in np.flatnonzero(take):
        members = pool[bins == b]
        chosen.append(rng.choice(members, size=int(take[b]), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@_keep_alias
def top_indices(difficulty: Any, keep: int) -> np.ndarray:
    """The ``keep`` hardest examples (highest ``difficulty``): score-only pruning."""
    d = _scores(difficulty, "difficulty")
    keep = as_int(keep, "keep", low=1, high=len(d))
    return np.sort(np.argsort(-d, kind="stable")[:keep]).astype(np.int64)


@_keep_alias
def random_indices(n: int, keep: int, *, seed: int = 0) -> np.ndarray:
    """``keep`` examples drawn uniformly without replacement."""
    n = as_int(n, "n", low=1)
    keep = as_int(keep, "keep", low=1, high=n)
    return np.sort(np.random.default_rng(seed).choice(n, keep, replace=False)).astype(np.int64)


@_keep_alias
def coverage_indices(features: Any, keep: int, *, radius: float | None = None,
                     weights: Any = None, beta: float = 0.0, difficulty: Any = None,
                     solver: str | None = None, time_limit: float | None = None,
                     fill: bool = True, seed: int = 0, **options: Any) -> np.ndarray:
    """Maximum (weighted) coverage coreset of ``keep`` examples.

    ``features``: (n, d) embedding of every example. ``radius``: the covering radius in the
    units of the features (default :func:`~pruneopt.formulations.geometry.default_radius`
    of the examples left after hard pruning). ``weights``: importance of each example
    (default 1). ``beta``/``difficulty``: hard pruning first, as in :func:`ccs_indices`.
    ``solver``: any solver for :class:`CoverageSelection` (``pruneopt.available``);
    ``None``: the registry's default for the instance (:mod:`pruneopt.solvers.defaults`).
    ``time_limit`` in seconds. ``fill``: when the solver covers everything with fewer
    points, top the coreset up to ``keep`` with the heaviest (then seeded random) points
    not chosen.
    """
    X = as_array(features, "features", ndim=2)
    n = X.shape[0]
    keep = as_int(keep, "keep", low=1, high=n)
    w = None if weights is None else _scores(weights, "weights", n)
    pool = np.arange(n) if _beta(beta) == 0.0 else drop_hardest(
        _scores(difficulty, "difficulty", n) if difficulty is not None else
        (w if w is not None else _need_difficulty()), beta)
    if keep > len(pool):
        raise ValueError(f"keep {keep} exceeds the {len(pool)} examples left after "
                         f"hard pruning (beta={beta})")
    Xp = X[pool]
    r = default_radius(Xp, keep, seed=seed) if radius is None else radius
    wp = None if w is None else w[pool]
    problem = CoverageSelection(Xp, keep=keep, radius=r, weights=wp)
    sol = pruneopt.solve(problem, solver=solver, time_limit=time_limit, **options)
    if sol.decision is None:
        raise ValueError(f"solver {sol.solver!r} found no selection within the time limit "
                         f"(status {sol.status!r}); raise time_limit or use solver='greedy'")
    sel = pool[sol.decision]
    if fill and len(sel) < keep:
        rest = np.setdiff1d(pool, sel)
        rng = np.random.default_rng(seed)
        tie = rng.random(len(rest))
        order = np.argsort(tie) if w is None else np.lexsort((tie, -w[rest]))
        sel = np.concatenate([sel, rest[order[: keep - len(sel)]]])
    return np.sort(sel).astype(np.int64)


def _need_difficulty() -> np.ndarray:
    raise ValueError("beta > 0 needs difficulty scores (or weights) to know what is hardest")


def _check_dataset(dataset: Dataset, n: int) -> None:
    if len(dataset) != n:  # type: ignore[arg-type]
        raise ValueError(f"dataset has {len(dataset)} examples but the scores/features "  # type: ignore[arg-type]
                         f"have {n}")


@_keep_alias
def ccs_subset(dataset: Dataset, scores: Any, keep: int, **kwargs: Any) -> Subset:
    """:func:`ccs_indices` as a ``torch.utils.data.Subset`` of ``dataset``."""
    idx = ccs_indices(scores, keep, **kwargs)
    _check_dataset(dataset, len(np.asarray(scores)))
    return Subset(dataset, idx.tolist())


@_keep_alias
def coverage_subset(dataset: Dataset, features: Any, keep: int, **kwargs: Any) -> Subset:
    """:func:`coverage_indices` as a ``torch.utils.data.Subset`` of ``dataset``."""
    idx = coverage_indices(features, keep, **kwargs)
    _check_dataset(dataset, len(features))
    return Subset(dataset, idx.tolist())
