"""Layer-wise reconstruction of a structurally pruned BERT encoder, after or during SPDY.

Shapes, and so times, are unchanged: only the values of the shrunk output matrices (the
attention-output and FFN-output maps ``W, b`` of every pruned unit) are refitted, block by
block, by least squares on calibration activations so that each pre-LayerNorm sum matches
the dense model's, with a ridge penalty towards the pruned weights (see :func:`reconstruct`).

One pass does it all: the calibration batches flow through the pruned model block by block
(a block sees the outputs of the already-refitted blocks before it), each shrunk map is
refitted on the activations that reach it and the block's output is computed with the new
map. The dense side of every refit (the dense model's pre-LayerNorm sums) does not depend on
the pruned model and is computed once (:class:`DenseTargets`), so scoring many pruned
candidates (SPDY's search with ``reconstruct=True``) costs one pruned forward pass plus the
small solves per candidate: :func:`reconstructed_loss`, which leaves every module unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from pruneopt.adapters.bert_surgery import bert_of
from pruneopt.adapters.calibration import cosine_to, forward, mean_pooled, run_with_hooks

__all__ = ["DenseTargets", "reconstruct", "reconstructed_loss"]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once it has what it needs."""


def _stem(model: nn.Module, batches: Sequence[dict]) -> list[tuple[tuple, dict]]:
    """Per batch, the ``(args, kwargs)`` of block 0's self-attention call (args[0]: the
    hidden states leaving the embeddings); the pass stops there."""
    att = bert_of(model).encoder.layer[0].attention.self
    out: list[tuple[tuple, dict]] = []

    def pre(_m, args, kwargs):
        out.append((args, dict(kwargs)))
        raise _Stop

    hook = att.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        for b in batches:
            try:
                forward(model, b)
            except _Stop:
                pass
    finally:
        hook.remove()
    return out


def _rows(xs: Sequence[torch.Tensor], keep: torch.Tensor) -> torch.Tensor:
    """The real-token rows of ``xs`` (per-batch [sentences, tokens, features]), float64."""
    return torch.cat([x.reshape(-1, x.shape[-1]) for x in xs])[keep].double()


class DenseTargets:
    """The dense model's side of every refit, on ``batches`` (computed once).

    For block ``i``: ``att[i]`` and ``ffn[i]``, the dense pre-LayerNorm sums ``W_d a_d + b_d
    + x_d`` of its attention-output and FFN-output maps on the real tokens (float64,
    [tokens, hidden]), and ``widths[i]``, the input widths of those maps (a pruned map has
    fewer); ``keep``: the real-token mask, flattened; ``reference``: the dense embeddings
    (mean-pooled last hidden state, unit norm).
    """

    @torch.inference_mode()
    def __init__(self, dense: nn.Module, batches: Sequence[dict]) -> None:
        bert = bert_of(dense)
        self.batches = list(batches)
        self.keep = torch.cat([b["attention_mask"].reshape(-1) for b in batches]).bool()
        n = len(bert.encoder.layer)
        sums: dict[tuple[int, str], list[torch.Tensor]] = {}
        hooks = []
        for i, blk in enumerate(bert.encoder.layer):
            for name, mod in (("att", blk.attention.output), ("ffn", blk.output)):
                def pre(m, args, key=(i, name)):
                    a, x = args[0].double(), args[1].double()
                    w, b = m.dense.weight.double(), m.dense.bias.double()
                    sums.setdefault(key, []).append(a @ w.T + b + x)
                hooks.append(mod.register_forward_pre_hook(pre))
        last: list[torch.Tensor] = []
        hooks.append(bert.encoder.layer[-1].register_forward_hook(
            lambda _m, _a, out: last.append(out[0] if isinstance(out, tuple) else out)))
        run_with_hooks(dense, batches, hooks)
        self.att = [_rows(sums[(i, "att")], self.keep) for i in range(n)]
        self.ffn = [_rows(sums[(i, "ffn")], self.keep) for i in range(n)]
        self.widths = [(blk.attention.output.dense.in_features, blk.output.dense.in_features)
                       for blk in bert.encoder.layer]
        self.reference = torch.cat([mean_pooled(h, b["attention_mask"])
                                    for h, b in zip(last, batches, strict=True)])


def _ridge(a: torch.Tensor, goal: torch.Tensor, ridge: float) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """``argmin_{W, b} ||a W^T + b - goal||^2 + ridge * mean_j(sum_n a_nj^2) * ||W||^2``
    (float64; ``b`` not penalised): centred ridge, solved in the primal (features) or the
    dual (tokens), whichever system is smaller. Returns ``(W [out, k], b [out])``."""
    mu_a, mu_g = a.mean(0), goal.mean(0)
    ac, gc = a - mu_a, goal - mu_g
    reg = ridge * float((a * a).sum()) / a.shape[1] or ridge
    n, k = ac.shape
    if k <= n:
        G = ac.T @ ac
        G.diagonal().add_(reg)
        wt = torch.cholesky_solve(ac.T @ gc, torch.linalg.cholesky(G))
    else:
        K = ac @ ac.T
        K.diagonal().add_(reg)
        wt = ac.T @ torch.cholesky_solve(gc, torch.linalg.cholesky(K))
    return wt.T, mu_g - mu_a @ wt


Fits = dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]


def _output(mod: nn.Module, inputs: list[torch.Tensor], residual: list[torch.Tensor],
            fit: tuple[torch.Tensor, torch.Tensor] | None) -> list[torch.Tensor]:
    """A BERT output module (``dense``, dropout, ``LayerNorm(. + residual)``) on every batch,
    with ``fit = (W, b)`` in place of its ``dense`` map when given."""
    if fit is None:
        return [mod(a, x) for a, x in zip(inputs, residual, strict=True)]
    return [mod.LayerNorm(mod.dropout(F.linear(a, *fit)) + x)
            for a, x in zip(inputs, residual, strict=True)]


@torch.inference_mode()
def _blockwise(pruned: nn.Module, batches: Sequence[dict], step) -> list[torch.Tensor]:
    """Run ``pruned`` on ``batches`` block by block; the outputs of a block's attention-output
    and FFN-output modules are ``step(block, "att" | "ffn", module, inputs, residual)``.
    Returns the last hidden states (per batch)."""
    stem = _stem(pruned, batches)
    hs = [args[0] for args, _ in stem]
    for i, blk in enumerate(bert_of(pruned).encoder.layer):
        ctx = [blk.attention.self(h, *args[1:], **kw)[0]
               for h, (args, kw) in zip(hs, stem, strict=True)]
        att = step(i, "att", blk.attention.output, ctx, hs)
        hs = step(i, "ffn", blk.output, [blk.intermediate(a) for a in att], att)
    return hs


def _fit(pruned: nn.Module, targets: DenseTargets, ridge: float
         ) -> tuple[Fits, list[torch.Tensor]]:
    """The block-wise refit of ``pruned`` (not modified) on ``targets``' batches: the new
    ``(W, b)`` of every shrunk map by ``(block, "att" | "ffn")``, and the last hidden states
    of the refitted model (per batch)."""
    if ridge <= 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    if len(bert_of(pruned).encoder.layer) != len(targets.widths):
        raise ValueError("pruned and dense models have different numbers of blocks")
    keep = targets.keep
    fits: Fits = {}

    def step(i, kind, mod, inputs, residual):
        dense_width = targets.widths[i][0 if kind == "att" else 1]
        if mod.dense.in_features == dense_width:
            return _output(mod, inputs, residual, None)  # not pruned: not refitted
        goal = (targets.att if kind == "att" else targets.ffn)[i]
        a, w0 = _rows(inputs, keep), mod.dense.weight.double()
        d, b = _ridge(a, goal - _rows(residual, keep) - a @ w0.T, ridge)  # W = W_p + D
        w = w0 + d
        fits[(i, kind)] = (w.to(mod.dense.weight.dtype), b.to(mod.dense.weight.dtype))
        return _output(mod, inputs, residual, fits[(i, kind)])

    return fits, _blockwise(pruned, targets.batches, step)


def reconstruct(pruned: nn.Module, dense: nn.Module | DenseTargets, batches: Sequence[dict],
                *, ridge: float = 0.3, inplace: bool = False) -> nn.Module:
    """Refit the output matrix of every shrunk attention and FFN on calibration activations.

    Block by block (so that each refit sees the errors left by the blocks before it), the
    attention-output and FFN-output linear maps ``W, b`` of the pruned model are replaced by

        argmin_{W, b}  sum_tokens || W a_p + b - (W_d a_d + b_d + x_d - x_p) ||^2
                       + ridge * mean_j(sum_tokens a_pj^2) * ||W - W_p||^2

    where ``a_p`` are the pruned model's inputs to that map, ``W_p`` its weights now (after
    magnitude pruning: the dense weights' kept columns), ``a_d``/``W_d``/``b_d`` the dense
    model's, and ``x_d - x_p`` the difference of the residual inputs: the pre-LayerNorm sum
    then matches the dense one as well as a linear map near ``W_p`` can. The penalty pulls
    towards ``W_p``, not towards 0, so that a refit on few tokens stays close to the pruned
    model instead of overfitting them (the bias is free). Only real tokens (attention mask)
    are used. ``ridge`` (> 0) is relative to the mean squared activation; the default 0.3
    measured best or near best on all-MiniLM-L6-v2 with 32, 64 and 128 refit sentences (see
    the README). Maps whose width equals the dense one are not refitted.

    ``dense``: the dense model, or its :class:`DenseTargets` (to reuse them; the refit then
    uses the targets' batches).
    One forward pass of each model over ``batches`` (float64 solves of size
    ``min(tokens, width)``). Returns a copy unless ``inplace``; ``dense`` is not modified.
    """
    targets = dense if isinstance(dense, DenseTargets) else DenseTargets(dense, batches)
    target = pruned if inplace else copy.deepcopy(pruned)
    fits, _ = _fit(target, targets, ridge)
    blocks = bert_of(target).encoder.layer
    with torch.no_grad():
        for (i, kind), (w, b) in fits.items():
            mod = blocks[i].attention.output if kind == "att" else blocks[i].output
            mod.dense.weight.copy_(w)
            mod.dense.bias.copy_(b)
    return target


def reconstructed_loss(pruned: nn.Module, targets: DenseTargets,
                       batches: Sequence[dict] | None = None,
                       reference: torch.Tensor | None = None, *, ridge: float = 0.3
                       ) -> float:
    """Calibration loss ``1 - mean cos`` of ``pruned`` after :func:`reconstruct` on
    ``targets``' batches, without changing ``pruned``.

    The loss is measured on ``batches`` against the dense embeddings ``reference`` (both
    needed together; default: on the refit batches themselves, against
    ``targets.reference``). Embeddings are the mean over real tokens of the last hidden
    state, unit norm (all-MiniLM-L6-v2's pooling). Cost: one block-wise pass over the refit
    batches (plus one over ``batches``).
    """
    fits, hs = _fit(pruned, targets, ridge)
    if batches is None:
        batches, reference = targets.batches, targets.reference
    elif reference is None:
        raise ValueError("give the dense embeddings of batches as reference")
    elif not (len(batches) == len(targets.batches)
              and all(a is b for a, b in zip(batches, targets.batches, strict=True))):
        def step(i, kind, mod, inputs, residual):
            return _output(mod, inputs, residual, fits.get((i, kind)))
        hs = _blockwise(pruned, batches, step)
    emb = torch.cat([mean_pooled(h, b["attention_mask"]) for h, b in zip(hs, batches,
                                                                          strict=True)])
    return 1.0 - cosine_to(reference, emb)
