"""Prunable units of any model and the surgery that shrinks them: the contract.

A *unit* is a set of coupled elements of a model that are removed together by structured
pruning: the output channels of a convolution with the input channels of the layers that
read them, the neurons of an MLP's hidden layer, the heads of an attention block. Removing
``r`` of a unit's ``size`` elements leaves smaller *dense* matrices, so the saved time is
real with the ordinary kernels.

A :class:`Structure` holds a dense model, its units and the surgery: ``pruned(removed)``
returns a new, smaller model with ``removed[i]`` elements of unit ``i`` gone (least
important first, importance computed once on the dense model); the dense model is never
modified. The SPDY timing and error databases, the search and the CLI work on any
:class:`Structure`; each family of models brings its own (BERT encoders, any torch model
through torch-pruning's dependency graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

__all__ = ["Structure", "StructUnit"]


@dataclass(frozen=True)
class StructUnit:
    """One prunable unit.

    ``name``: unique within its model (e.g. ``"block0.attention"``, ``"features.3"``);
    ``kind``: what its elements are (``"heads"``, ``"neurons"``, ``"channels"``, ...);
    ``size``: its number of elements in the dense model; ``modules``: qualified names (as in
    ``model.named_modules()``) of the modules whose shapes change when the unit shrinks,
    the modules its time is measured on.
    """

    name: str
    kind: str
    size: int
    modules: tuple[str, ...] = ()


@runtime_checkable
class Structure(Protocol):
    """A dense model, its prunable units, and the surgery that shrinks them."""

    model: nn.Module
    units: list[StructUnit]

    def pruned(self, removed: Sequence[int]) -> nn.Module:
        """A new model with ``removed[i]`` elements of unit ``i`` removed (``0 <= removed[i]
        < units[i].size``; ``ValueError`` otherwise, nothing modified)."""
        ...

    def describe(self, removed: Sequence[int]) -> dict[str, Any]:
        """JSON-ready record of what ``pruned(removed)`` removes (the element indices of
        every unit), enough to rebuild the pruned model from the dense one."""
        ...
