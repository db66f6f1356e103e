"""The speedup arithmetic shared by every timing table: targets, budgets, predictions.

A table of per-layer (or per-unit) times ``t[l][k]`` (seconds of layer ``l`` at level
``k``), the dense model's end-to-end seconds ``T`` and the seconds ``T_out`` spent outside
the prunable layers turns a speedup target ``s`` into the budget on the layers' summed time::

    sum_l t[l][k_l] <= T / s - T_out,

the :class:`~pruneopt.formulations.LayerBudget` of :meth:`SpeedupBudget.problem`; the
largest reachable speedup is ``T / (T_out + sum_l min_k t[l][k])`` and a choice of levels
predicts ``T / (T_out + sum_l t[l][k_l])``. :class:`SpeedupBudget` holds that arithmetic
once for the tables that carry ``times``, ``errors``, ``dense_time``, ``base_time`` and
name their layers (``layer_names``): the SPDY table of structured units
(:class:`~pruneopt.adapters.spdy_table.SpdyTable`) and imported or joint-pattern timing tables
(:class:`~pruneopt.adapters.timing_tables.TimingTable`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pruneopt.formulations.layer_budget import LayerBudget

__all__ = ["SpeedupBudget"]


class SpeedupBudget:
    """Budget, reach and prediction of a timing table (module docstring). Subclasses
    (dataclasses) provide ``times``, ``errors``, ``dense_time``, ``base_time`` and
    :attr:`layer_names`."""

    times: list[np.ndarray]
    errors: list[np.ndarray] | None
    dense_time: float
    base_time: float
    #: What to do when the table has no errors yet (completes the ``ValueError``).
    NO_ERRORS = "fill the table's errors"
    #: What the table calls its rows in messages ("layer", "unit").
    ROW = "layer"

    @property
    def layer_names(self) -> list[str]:
        raise NotImplementedError

    def budget(self, speedup: float) -> float:
        """Seconds of the prunable layers allowed at ``speedup`` (>= 1):
        ``T / speedup - T_out``."""
        speedup = float(speedup)
        if not (math.isfinite(speedup) and speedup >= 1.0):
            raise ValueError(f"speedup must be a finite number >= 1, got {speedup}")
        return self.dense_time / speedup - self.base_time

    def max_speedup(self) -> float:
        """``T / (T_out + sum_l min_k t[l][k])``: every layer at its fastest level."""
        least = self.base_time + sum(float(t.min()) for t in self.times)
        return self.dense_time / least if least > 0 else float("inf")

    def check_levels(self, levels: Sequence[int]) -> np.ndarray:
        """``levels`` (one level index per layer) as an int64 array, or ``ValueError``
        (wrong length, not integers, out of range)."""
        names = self.layer_names
        lv = np.asarray(levels)
        if lv.shape != (len(names),):
            raise ValueError(f"levels must have one entry per {self.ROW} ({len(names)}), got "
                             f"shape {lv.shape}")
        if lv.size and not np.issubdtype(lv.dtype, np.integer):
            if not (np.isfinite(lv.astype(float)).all() and (lv == np.round(lv)).all()):
                raise ValueError("levels must be integer level indices")
        lv = lv.astype(np.int64)
        for i, k in enumerate(lv):
            if not 0 <= k < self.times[i].size:
                raise ValueError(f"{names[i]}: level {k} is outside 0..{self.times[i].size - 1}")
        return lv

    def predicted_speedup(self, levels: Sequence[int]) -> float:
        """``T / (T_out + sum_l t[l][k_l])`` at ``levels``."""
        lv = self.check_levels(levels)
        return self.dense_time / (self.base_time + sum(
            float(t[k]) for t, k in zip(self.times, lv, strict=True)))

    def require_errors(self) -> list[np.ndarray]:
        """The table's errors, or ``ValueError`` saying how to fill them."""
        if self.errors is None:
            raise ValueError(f"the table has no errors: {self.NO_ERRORS}")
        return self.errors

    def problem(self, speedup: float, errors: Sequence[Any] | None = None) -> LayerBudget:
        """The :class:`LayerBudget` for ``speedup``: costs the times (seconds), errors
        ``errors`` (default: the table's), budget :meth:`budget`. ``ValueError`` naming the
        best reachable speedup when no choice of levels meets the target."""
        errs = errors if errors is not None else self.require_errors()
        b = self.budget(speedup)
        least = sum(float(t.min()) for t in self.times)
        if b < least * (1 - 1e-12):
            raise ValueError(f"speedup {float(speedup):g} is out of reach: the table allows at "
                             f"most {self.max_speedup():.4f}x (every {self.ROW} at its "
                             "fastest level)")
        return LayerBudget(self.times, errs, max(b, least), names=self.layer_names)
