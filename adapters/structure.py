"""Prunable units of any torch model: :func:`structure_of`.

One entry, two ways of finding the units:

- **Hugging Face decoders** (Llama-style blocks ``model.layers[i]`` with ``self_attn.q/k/v/
  o_proj`` and ``mlp.gate/up/down_proj``): hand surgery, :mod:`~pruneopt.adapters.
  decoder_structure`. Each block gives two units, its attention heads (``kind="heads"``;
  with grouped-query attention, its key/value heads, each with the query heads that read
  it) and its MLP width (``kind="neurons"``). The hidden size (embeddings, norms, the residual
  stream) and the LM head are not units: shrinking them changes the model's interface or
  needs every block at once.
- **Any other model**: torch-pruning's dependency graph (``tp.DependencyGraph().
  build_dependency`` on a copy, then ``get_all_groups``). Each group of coupled channels
  (a conv's output channels with its BatchNorm and the input channels of the layers that
  read them; a linear layer's output neurons with the next layer's inputs) is one unit,
  ``kind="channels"`` (root is a convolution) or ``"neurons"`` (root is a linear layer).
  Excluded: groups that touch an ``nn.Embedding`` or a ``LayerNorm`` (a transformer's hidden
  size), groups no conv / linear layer reads (they feed the model's output: the classifier,
  a pooler), groups of an ``ignored_layers`` module, and every group whose surgery changes
  the shapes of the model's outputs or breaks its forward. The last is checked, not guessed: on
  a copy, every candidate unit loses one element (then half its elements) at once and the
  model runs on ``example_inputs``; if the outputs' shapes differ from the dense model's
  (a channel group cut inside an attention head, ...) or the forward fails, each candidate
  is tried alone and the failing ones are left out.

Importance (the same for both): the squared L2 norm of the weights an element owns in every
coupled layer, ``sum over the group's layers of ||W[element]||^2`` (out-channel rows of the
root, the BatchNorm scale, in-channel columns of the consumers; for a head, its ``head_dim``
rows of q, k, v and columns of o), computed once on the dense model
(``tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)`` for
the graph path). ``pruned(removed)`` removes the ``removed[i]`` least important elements of
unit ``i`` (ties broken by the lower index) from a deep copy; the dense model is never
modified, not even traced (tracing runs on copies).

``round_to=r`` makes the elements of the channel and neuron units blocks of ``r`` channels
(``size = channels // r``; removing ``k`` elements removes the ``k * r`` least important
channels), so the kept widths stay multiples of ``r`` when the dense widths are; heads are
always whole heads.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from pruneopt.adapters.decoder_structure import DecoderStructure, is_decoder
from pruneopt.adapters.unit_removal import RemovalMixin, check_kinds, ignored_names
from pruneopt.adapters.units import StructUnit, Structure

__all__ = ["GraphStructure", "STRUCTURE_EXTRA", "structure_of"]

STRUCTURE_EXTRA = ("structured pruning of any model needs torch-pruning: "
                   "pip install 'pruneopt[structure]' (package torch-pruning)")
RESIDUAL_TYPES = (nn.Embedding, nn.LayerNorm)


def structure_of(model: nn.Module, example_inputs: Any = None, *,
                 ignored_layers: Sequence[nn.Module | str] | None = None,
                 kinds: Sequence[str] | None = None, round_to: int = 1) -> Structure:
    """The prunable units of ``model`` and their surgery, as a
    :class:`~pruneopt.adapters.units.Structure`.

    ``example_inputs``: what ``model(example_inputs)`` (a tensor or tuple of positional
    tensors) or ``model(**example_inputs)`` (a dict) runs on; needed by the graph path, not
    by Hugging Face decoders. ``ignored_layers``: modules (or their qualified names) whose
    groups are not units. ``kinds``: keep only units of these kinds (``"channels"``,
    ``"neurons"``, ``"heads"``). ``round_to``: see the module doc.

    ``ValueError``: no prunable unit (saying why), bad arguments.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(round_to, int | np.integer) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer, got {round_to!r}")
    kinds = check_kinds(kinds)
    if is_decoder(model):
        return DecoderStructure(model, ignored_layers=ignored_layers, kinds=kinds,
                                round_to=int(round_to))
    if example_inputs is None:
        raise ValueError("example_inputs is required for this model (a tensor, a tuple of "
                         "tensors or a dict the model runs on) to trace its dependencies")
    return GraphStructure(model, example_inputs, ignored_layers=ignored_layers, kinds=kinds,
                          round_to=int(round_to))


def _tp():
    try:
        import torch_pruning
    except ImportError:
        raise ValueError(STRUCTURE_EXTRA) from None
    return torch_pruning


def run(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict, ``model(*inputs)`` for a tuple/list, else
    ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def output_shapes(out: Any) -> list[tuple[int, ...]]:
    """The shapes of every tensor in a (nested) model output, in a fixed order."""
    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    if isinstance(out, Mapping):
        return [s for k in out for s in output_shapes(out[k])]
    if isinstance(out, tuple | list):
        return [s for v in out for s in output_shapes(v)]
    return []


def _graph(model: nn.Module, example_inputs: Any):
    """torch-pruning's dependency graph of ``model`` (traced in eval mode, grad on)."""
    tp = _tp()
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs, verbose=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the trace, said as such
        raise ValueError(f"torch-pruning could not trace {type(model).__name__} on "
                         f"example_inputs: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was)


class GraphStructure(RemovalMixin):
    """Units of a model from torch-pruning's dependency graph (see the module doc).

    ``units[i].name`` is the qualified name of the group's root layer (the layer whose output
    channels are cut); ``importance[i]`` the per-channel scores, float64.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, *,
                 ignored_layers: Sequence[nn.Module | str] | None = None,
                 kinds: tuple[str, ...] | None = None, round_to: int = 1) -> None:
        tp = _tp()
        self.model = model
        self.example_inputs = example_inputs
        self.round_to = round_to
        self.options = {"kinds": list(kinds) if kinds else None, "round_to": round_to,
                        "ignored_layers": sorted(ignored_names(model, ignored_layers))}
        work = copy.deepcopy(model)
        names = {m: n for n, m in work.named_modules()}
        ignored = {work.get_submodule(n) for n in self.options["ignored_layers"]}
        try:
            with torch.no_grad():
                self.dense_shapes = output_shapes(run(work.eval(), example_inputs))
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{type(model).__name__} does not run on example_inputs: "
                             f"{type(exc).__name__}: {exc}") from exc
        graph = _graph(work, example_inputs)
        self.traced, self.graph = work, graph
        imp = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
        candidates, why = [], []
        for group in graph.get_all_groups(ignored_layers=list(ignored)):
            root = group[0].dep.target.module
            mods = [d.target.module for d, _ in group if isinstance(d.target.module, nn.Module)
                    and d.target.module in names]
            kind = "neurons" if isinstance(root, nn.Linear) else "channels"
            width = len(group[0].idxs)
            if any(isinstance(m, RESIDUAL_TYPES) for m in mods):
                why.append(f"{names[root]}: feeds an embedding / LayerNorm (hidden size)")
                continue
            if not any(graph.is_in_channel_pruning_fn(d.handler) and d.target.module in mods
                       and d.target.module is not root
                       and getattr(getattr(d.target.module, "weight", None), "ndim", 0) >= 2
                       for d, _ in group):
                why.append(f"{names[root]}: no layer reads its outputs (the model's output)")
                continue
            if kinds and kind not in kinds:
                why.append(f"{names[root]}: of kind {kind!r}, not in kinds={list(kinds)}")
                continue
            if width // round_to < 2:
                why.append(f"{names[root]}: {width} channels, fewer than 2 x round_to")
                continue
            with torch.no_grad():
                score = imp(group)
            unit = StructUnit(names[root], kind, width // round_to,
                              tuple(n for n, m in work.named_modules() if m in set(mods)))
            candidates.append((unit, score.detach().double().numpy()))
        position = {n: k for k, (n, _) in enumerate(work.named_modules())}
        candidates.sort(key=lambda c: position[c[0].name])  # the model's order
        self.importance = [s for _, s in candidates]
        candidates, broken = self._working(candidates)
        why += [f"{u.name}: its surgery changes the output shapes or breaks the forward"
                for u in broken]
        if not candidates:
            detail = "; ".join(why) or "no conv/linear layer whose outputs can shrink"
            raise ValueError(f"{type(model).__name__} has no prunable unit ({detail})")
        self.units = [u for u, _ in candidates]
        self.importance = [s for _, s in candidates]
        self.excluded = why

    def _working(self, candidates):
        """The candidates whose surgery keeps the output shapes, removing one element and
        half the elements of each (all units at once; if that fails, each unit alone)."""
        def ok(subset) -> bool:
            for frac in (0, 1):
                trial = {u.name: self.order(i)[: max(1, (u.size // 2) * frac)
                                                * self.round_to].tolist() for u, i in subset}
                try:
                    pruned = self.pruned_at(trial, share=True)
                    with torch.no_grad():
                        if output_shapes(run(pruned.eval(), self.example_inputs)) != \
                                self.dense_shapes:
                            return False
                except Exception:  # noqa: BLE001 - any failure of the surgery or forward
                    return False
            return True

        indexed = [(u, i) for i, (u, _) in enumerate(candidates)]
        if not indexed or ok(indexed):
            return candidates, []
        good = [k for k, pair in enumerate(indexed) if ok([pair])]
        return ([candidates[k] for k in good],
                [candidates[k][0] for k in range(len(candidates)) if k not in good])

    def _copy(self, share: bool = False):
        """``(model, graph)``: a copy of the traced model with its dependency graph (the
        trace's autograd nodes shared), holding clones of the dense model's current tensors
        (``share``: the traced copy's own tensors, for the construction's throw-away checks;
        torch-pruning's pruners replace tensors, never write into them)."""
        memo: dict[int, Any] = {id(self.graph.ops): self.graph.ops}
        memo.update({id(n.grad_fn): n.grad_fn for n in self.graph.module2node.values()})
        ours = dict(self.traced.named_parameters(remove_duplicate=False))
        ours.update(self.traced.named_buffers(remove_duplicate=False))
        if share:
            memo.update({id(t): t for t in ours.values()})
        else:
            dense = dict(self.model.named_parameters(remove_duplicate=False))
            dense.update(self.model.named_buffers(remove_duplicate=False))
            if dense.keys() != ours.keys() or any(
                    dense[k].shape != ours[k].shape for k in ours):
                raise ValueError("the dense model's parameters changed shape or name since "
                                 "structure_of; build the structure again")
            for k, t in ours.items():
                if id(t) in memo:
                    continue  # tied weights: one clone
                c = dense[k].detach().clone()
                memo[id(t)] = nn.Parameter(c, t.requires_grad) if isinstance(
                    t, nn.Parameter) else c
        work, graph = copy.deepcopy((self.traced, self.graph), memo)
        work.train(self.model.training)
        return work, graph

    def pruned_at(self, indices: Mapping[str, Sequence[int]], *, share: bool = False
                  ) -> nn.Module:
        """A copy of the dense model (its current weights and train/eval mode) with the
        channels ``indices[root name]`` removed by torch-pruning's ``group.prune``; units
        absent from ``indices`` stay whole. The model is traced once, at construction; this
        copies the traced model with its graph."""
        work, graph = self._copy(share)
        for name, idxs in indices.items():
            if len(idxs) == 0:
                continue
            module = work.get_submodule(name)
            fn = graph.get_pruner_of_module(module).prune_out_channels
            graph.get_pruning_group(module, fn, [int(i) for i in idxs]).prune()
        return work
