"""Baselines SPDY is compared with: uniform structured pruning, and unstructured sparsity.

- :func:`uniform_removed`, :func:`uniform_at_speedup`, :func:`uniform_curve`: the same
  fraction of every unit removed (heads and FFN neurons of every BERT block, channels of a
  CNN, ...: any :class:`~pruneopt.adapters.units.Structure`), at a measured speedup or over
  a range of fractions.
- :func:`csr_linear_timing`: unstructured sparsity needs a sparse kernel to save time; this
  measures torch's CSR matmul against the dense one for one linear layer. On CPUs it is
  usually slower than dense below about 90% sparsity, which is why SPDY here uses
  structured levels.

Times are wall-clock seconds with ``threads`` torch threads (see
:mod:`pruneopt.adapters.spdy_timing`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.bert_structure import as_structure
from pruneopt.adapters.spdy_generic import pruned_model
from pruneopt.adapters.spdy_timing import measure_speedup, median_seconds, torch_threads
from pruneopt.adapters.units import Structure

__all__ = ["csr_linear_timing", "uniform_at_speedup", "uniform_curve", "uniform_removed"]


def uniform_removed(units: Sequence[Any], fraction: float) -> list[int]:
    """The same ``fraction`` (in [0, 1)) of every unit's elements removed (heads, neurons,
    channels; at least one element of every unit stays)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    return [min(u.size - 1, int(round(u.size * fraction))) for u in units]


def _uniform(st: Structure, fraction: float, batches: Sequence[Any],
             repeats: int, threads: int | None) -> tuple[nn.Module, dict[str, float]]:
    """The uniformly pruned copy at ``fraction`` and its end-to-end measurement."""
    pruned = pruned_model(st, uniform_removed(st.units, fraction)).eval()
    return pruned, measure_speedup(st.model, pruned, batches, repeats=repeats, threads=threads)


def uniform_at_speedup(model: nn.Module | Structure, speedup: float, batches: Sequence[Any], *,
                       iterations: int = 6, repeats: int = 5, threads: int | None = 1,
                       progress: bool = True) -> tuple[nn.Module, dict]:
    """Uniform pruning (same fraction everywhere) with measured speedup >= ``speedup``:
    bisection on the fraction over end-to-end measurements. The smallest fraction found
    that meets the target is returned with its measurement. ``model``: a
    :class:`~pruneopt.adapters.units.Structure` or a BERT encoder (not modified)."""
    from tqdm import tqdm

    st = as_structure(model)
    units = st.units
    lo, hi = 0.0, 0.95
    best = None
    for _ in tqdm(range(iterations), desc=f"uniform {speedup:g}x", disable=not progress):
        mid = (lo + hi) / 2
        pruned, meas = _uniform(st, mid, batches, repeats, threads)
        if meas["speedup"] >= speedup:
            hi = mid
            best = (mid, pruned, meas)
        else:
            lo = mid
    if best is None:
        best = (hi, *_uniform(st, hi, batches, repeats, threads))
    frac, pruned, meas = best
    return pruned, {"fraction": frac, "removed": uniform_removed(units, frac),
                    "measured_speedup": meas["speedup"], "met": meas["speedup"] >= speedup}


def uniform_curve(model: nn.Module | Structure, batches: Sequence[Any],
                  fractions: Sequence[float] = tuple(np.round(np.arange(0.05, 0.76, 0.05), 2)),
                  *, repeats: int = 5, threads: int | None = 1, progress: bool = True
                  ) -> list[dict[str, float]]:
    """Measured end-to-end speedup of uniform pruning at each fraction, plus an isotonic
    (non-decreasing in the fraction) fit that smooths the timing noise of a shared machine."""
    from sklearn.isotonic import IsotonicRegression
    from tqdm import tqdm

    st = as_structure(model)
    rows = []
    for f in tqdm(list(fractions), desc="uniform curve", disable=not progress):
        _, meas = _uniform(st, float(f), batches, repeats, threads)
        rows.append({"fraction": float(f), "speedup": meas["speedup"]})
    fit = IsotonicRegression(increasing=True).fit_transform(
        [r["fraction"] for r in rows], [r["speedup"] for r in rows])
    for r, v in zip(rows, fit, strict=True):
        r["speedup_fit"] = float(v)
    return rows


def csr_linear_timing(in_features: int = 384, out_features: int = 1536, tokens: int = 1024,
                      sparsities: Sequence[float] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99), *,
                      repeats: int = 9, threads: int | None = 1, seed: int = 0
                      ) -> list[dict[str, float]]:
    """Unstructured sparsity with a real sparse kernel: one linear layer ``y = W x`` for
    ``tokens`` inputs, dense ``W`` vs ``W`` magnitude-pruned to each sparsity and stored as
    torch CSR (``torch.sparse.mm``). Median seconds of each; ``speedup = dense / csr``."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out_features, in_features, generator=g)
    X = torch.randn(in_features, tokens, generator=g)
    out = []
    with torch_threads(threads), torch.inference_mode():
        t_dense = median_seconds(lambda: W @ X, repeats)
        for s in sparsities:
            k = int(round(s * W.numel()))
            Wp = W.clone()
            if k:
                thr = W.abs().flatten().kthvalue(k).values
                Wp[W.abs() <= thr] = 0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                Wc = Wp.to_sparse_csr()
            t = median_seconds(lambda Wc=Wc: torch.sparse.mm(Wc, X), repeats)
            out.append({"sparsity": float(s), "dense_seconds": t_dense, "csr_seconds": t,
                        "speedup": t_dense / t})
    return out
