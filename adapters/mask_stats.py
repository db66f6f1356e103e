"""Statistics of training-time mask recomputes, and their plot.

One record (a dict) per recompute of :class:`~pruneopt.adapters.dynamic_masks.
DynamicSparsifier`, over all its layers:

- ``step``: optimizer steps done; ``n``/``m``: the pattern in effect (``n = m``: no mask);
  ``density``: fraction of weights kept.
- ``flip_rate``: fraction of the weights whose mask entry changed at this recompute
  (``sum |M_new - M_old| / numel``, in [0, 1]; DPF's measure of how much the mask moves).
- ``kept_ratio``: kept score / total score, ``sum s M / sum s`` (for ``|W|`` scores the
  fraction of the magnitude that survives).
- ``exact_ratio``: kept score / the exact optimum's kept score for the same scores (only with
  ``compare_exact=True``; 1.0 for an exact solver; >= 0.5 for the 2-approximation).
- ``solver_seconds``: wall time of the mask solves; ``step_seconds``: mean wall time of a
  training step since the previous recompute (measured between ``step()`` calls, the
  recomputes excluded); ``overhead = solver_seconds / (every * step_seconds)``: the solver's
  cost as a fraction of the training time between two recomputes (None at step 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def flip_count(old: torch.Tensor, new: torch.Tensor) -> int:
    """Number of entries where two boolean masks differ."""
    return int((old != new).sum())


def kept_and_total(scores: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """``(sum(scores * mask), sum(scores))`` in float64."""
    s = scores.detach().to(torch.float64)
    return float(s[mask].sum()), float(s.sum())


def plot_statistics(statistics: Sequence[dict[str, Any]], *, axes: Any = None,
                    label: str | None = None):
    """A matplotlib Figure of the recompute records: flip rate, density and kept-score
    ratios, solver overhead, each against the optimizer step. ``axes`` (three Axes) draws
    into an existing figure (e.g. to compare runs, with ``label``). Returns the Figure."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), constrained_layout=True)
    else:
        fig = axes[0].figure
    recs = [r for r in statistics if r.get("step", 0) > 0]
    steps = [r["step"] for r in recs]
    tag = f"{label}: " if label else ""
    axes[0].plot(steps, [r["flip_rate"] for r in recs], marker=".", label=label)
    axes[0].set(xlabel="step", ylabel="mask flip rate", yscale="log")
    axes[1].plot(steps, [r["density"] for r in recs], label=f"{tag}density")
    axes[1].plot(steps, [r["kept_ratio"] for r in recs], label=f"{tag}kept score")
    ex = [(r["step"], r["exact_ratio"]) for r in recs if r.get("exact_ratio") is not None]
    if ex:
        axes[1].plot(*zip(*ex, strict=True), label=f"{tag}vs exact")
    axes[1].set(xlabel="step", ylabel="fraction")
    axes[1].legend(fontsize=7)
    ov = [(r["step"], r["overhead"]) for r in recs if r.get("overhead") is not None]
    if ov:
        axes[2].plot(*zip(*ov, strict=True), marker=".", label=label)
    axes[2].set(xlabel="step", ylabel="solver time / training time")
    if label:
        axes[0].legend(fontsize=7)
        axes[2].legend(fontsize=7)
    return fig
