"""What every :class:`~pruneopt.adapters.units.Structure` of :mod:`~pruneopt.adapters.structure`
shares: checking a ``removed`` vector, turning it into the indices to cut (the least
important first), ``pruned`` and ``describe``.

A structure using :class:`RemovalMixin` provides ``model``, ``units``, ``round_to`` (the
number of channels per element of a ``"channels"`` / ``"neurons"`` unit; heads are single
elements), ``importance[i]`` (float64 scores of unit ``i``'s channels, neurons or heads) and
``pruned_at(indices)`` (a new model with ``indices[unit name]`` cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

__all__ = ["KINDS", "RemovalMixin", "check_kinds", "ignored_names"]

#: The kinds of units :func:`~pruneopt.adapters.structure.structure_of` finds.
KINDS = ("channels", "neurons", "heads")


def check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...] | None:
    """``kinds`` as a tuple (``None``: all), ``ValueError`` for an unknown kind."""
    if kinds is None:
        return None
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown unit kinds {bad}; choose among {list(KINDS)}")
    return kinds


def ignored_names(model: nn.Module, layers: Sequence[nn.Module | str] | None) -> set[str]:
    """Qualified names of ``layers`` (modules of ``model`` or names); ``ValueError`` for a
    module or name that is not in ``model``."""
    names = {m: n for n, m in model.named_modules()}
    out = set()
    for layer in layers or ():
        if isinstance(layer, str):
            if layer not in dict(model.named_modules()):
                raise ValueError(f"ignored layer {layer!r} is not a module of the model")
            out.add(layer)
        elif isinstance(layer, nn.Module) and layer in names:
            out.add(names[layer])
        else:
            raise ValueError(f"ignored layer {layer!r} is not a module of the model")
    return out


class RemovalMixin:
    """``check``, ``removal``, ``pruned`` and ``describe`` on top of ``order`` and
    ``pruned_at`` (see the module doc)."""

    model: nn.Module
    units: list
    round_to: int
    importance: list[np.ndarray]

    def order(self, i: int) -> np.ndarray:
        """Indices of unit ``i`` (channels, neurons or heads), least important first
        (``importance[i]`` ascending; ties by the lower index)."""
        return np.argsort(self.importance[i], kind="stable")

    def width(self, i: int) -> int:
        """Channels per element of unit ``i`` (1 for heads)."""
        return 1 if self.units[i].kind == "heads" else self.round_to

    def check(self, removed: Sequence[int]) -> list[int]:
        """``removed`` as a list of ints; ``ValueError`` unless it has one entry per unit and
        ``0 <= removed[i] < units[i].size``."""
        try:
            values = np.asarray(removed)
        except Exception:  # noqa: BLE001
            raise ValueError("removed must be a sequence of integers") from None
        if values.ndim != 1 or len(values) != len(self.units):
            raise ValueError(f"removed must have one entry per unit ({len(self.units)}), got "
                             f"shape {values.shape}")
        if values.size and not np.issubdtype(values.dtype, np.integer):
            if not np.issubdtype(values.dtype, np.floating) or np.any(values != np.round(values)):
                raise ValueError("removed must hold integers")
        out = [int(v) for v in values]
        for u, r in zip(self.units, out, strict=True):
            if not 0 <= r < u.size:
                raise ValueError(f"removed for unit {u.name!r} must be in 0..{u.size - 1} "
                                 f"(it has {u.size} elements; one must stay), got {r}")
        return out

    def removal(self, removed: Sequence[int]) -> dict[str, list[int]]:
        """``{unit name: sorted indices to cut}``: the ``removed[i] * width`` least important
        indices of unit ``i`` (channels, neurons or heads of the dense modules)."""
        counts = self.check(removed)
        return {u.name: sorted(int(j) for j in self.order(i)[: r * self.width(i)])
                for i, (u, r) in enumerate(zip(self.units, counts, strict=True))}

    def pruned(self, removed: Sequence[int]) -> nn.Module:
        """A new model with ``removed[i]`` elements of unit ``i`` removed (least important
        first); the dense model is not modified. ``ValueError`` before any work for a bad
        ``removed``."""
        return self.pruned_at(self.removal(removed))

    def describe(self, removed: Sequence[int]) -> dict[str, Any]:
        """JSON-ready: per unit its name, kind, size, elements removed, and the dense
        indices removed and kept (channels, neurons or heads)."""
        cut = self.removal(removed)
        units = []
        for i, (u, r) in enumerate(zip(self.units, self.check(removed), strict=True)):
            total = len(self.order(i))
            gone = cut[u.name]
            units.append({"name": u.name, "kind": u.kind, "size": u.size, "removed": r,
                          "modules": list(u.modules), "removed_indices": gone,
                          "kept_indices": sorted(set(range(total)) - set(gone))})
        return {"units": units, "round_to": self.round_to}
