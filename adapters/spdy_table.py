"""The SPDY table: per-unit levels, measured times and errors, and the layer-budget problem.

A :class:`SpdyTable` is pure data (numpy arrays and floats, JSON on disk); it is filled by
:func:`pruneopt.adapters.spdy_timing.timing_database` (times) and
:func:`pruneopt.adapters.spdy_errors.error_database` (errors). A speedup target ``s``
becomes the unit-time budget ``sum_l times[l][k_l] <= dense_time / s - base_time`` of a
:class:`~pruneopt.formulations.LayerBudget`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pruneopt.adapters.bert_surgery import Unit
from pruneopt.adapters.files import atomic_write
from pruneopt.adapters.speedup_budget import SpeedupBudget
from pruneopt.adapters.units import StructUnit

__all__ = ["SpdyTable", "unit_from_json", "unit_json"]


def unit_json(u: StructUnit | Unit) -> dict[str, Any]:
    """A unit as JSON: ``name``, ``kind``, ``size``, ``modules`` (and ``block`` for a BERT
    :class:`~pruneopt.adapters.bert_surgery.Unit`)."""
    d: dict[str, Any] = {"name": u.name, "kind": u.kind, "size": int(u.size),
                         "modules": list(getattr(u, "modules", ()))}
    if isinstance(u, Unit):
        d["block"] = u.block
    return d


def unit_from_json(d: dict[str, Any]) -> StructUnit | Unit:
    """The unit of :func:`unit_json`'s dict; a dict with ``block`` (the older BERT tables,
    with only block/kind/size) gives a BERT :class:`~pruneopt.adapters.bert_surgery.Unit`."""
    if "block" in d:
        return Unit(int(d["block"]), str(d["kind"]), int(d["size"]))
    return StructUnit(str(d["name"]), str(d["kind"]), int(d["size"]),
                      tuple(str(m) for m in d.get("modules", ())))


@dataclass
class SpdyTable(SpeedupBudget):
    """Timing and error database of a model's units.

    ``units``: :class:`~pruneopt.adapters.units.StructUnit` s of any model (a BERT table
    made from a bare model holds the older :class:`~pruneopt.adapters.bert_surgery.Unit` s,
    which have the same ``name``, ``kind`` and ``size``);
    ``removed[l][k]``: elements (heads, neurons, channels) removed by unit ``l`` at level
    ``k`` (level 0 = dense);
    ``times[l][k]``: its measured forward seconds (median) on the calibration batches;
    ``errors[l][k]``: the calibration loss with only that unit pruned (None until the error
    database is run); ``dense_time``: end-to-end seconds of the dense model; ``base_time``:
    ``dense_time`` minus the dense unit times (embeddings, pooling, overheads).
    """

    units: list[StructUnit | Unit]
    removed: list[np.ndarray]
    times: list[np.ndarray]
    errors: list[np.ndarray] | None = None
    dense_time: float = 0.0
    base_time: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    NO_ERRORS = "run error_database first"
    ROW = "unit"

    @property
    def layer_names(self) -> list[str]:
        return [u.name for u in self.units]

    def removed_at(self, levels: Sequence[int]) -> list[int]:
        """Heads/neurons removed by every unit at ``levels`` (one level index per unit)."""
        lv = self.check_levels(levels)
        return [int(self.removed[i][k]) for i, k in enumerate(lv)]

    def to_json(self) -> dict[str, Any]:
        """The table as a JSON-ready dict (lists and numbers)."""
        return {
            "units": [unit_json(u) for u in self.units],
            "removed": [r.tolist() for r in self.removed],
            "times": [t.tolist() for t in self.times],
            "errors": None if self.errors is None else [e.tolist() for e in self.errors],
            "dense_time": self.dense_time, "base_time": self.base_time, "meta": self.meta,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SpdyTable:
        """The table from :meth:`to_json`'s dict; ``ValueError`` naming a missing or
        inconsistent field."""
        try:
            units = [unit_from_json(u) for u in d["units"]]
            t = cls(units=units,
                    removed=[np.asarray(r, dtype=np.int64) for r in d["removed"]],
                    times=[np.asarray(x, dtype=float) for x in d["times"]],
                    errors=None if d.get("errors") is None else
                    [np.asarray(x, dtype=float) for x in d["errors"]],
                    dense_time=float(d["dense_time"]), base_time=float(d["base_time"]),
                    meta=dict(d.get("meta", {})))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an SPDY table: missing or bad field {exc}") from None
        n = len(t.units)
        if (len(t.removed) != n or len(t.times) != n
                or (t.errors is not None and len(t.errors) != n)):
            raise ValueError("SPDY table: units, removed, times and errors need one entry per unit")
        for i in range(n):
            sizes = {t.removed[i].size, t.times[i].size}
            if t.errors is not None:
                sizes.add(t.errors[i].size)
            if len(sizes) != 1:
                raise ValueError(f"SPDY table: unit {i} has mismatched numbers of levels")
        return t

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON (whole or not at all: a temporary file is renamed)."""
        atomic_write(path, lambda f: f.write(json.dumps(self.to_json()).encode()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SpdyTable:
        """Read a table written by :meth:`save`."""
        with open(path) as f:
            return cls.from_json(json.load(f))
