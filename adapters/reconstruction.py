"""Layer-wise reconstruction of a structurally pruned BERT encoder (after pruning).

Shapes, and so times, are unchanged: only the values of the shrunk output matrices are
refitted, by ridge least squares on calibration activations (see :func:`reconstruct`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from pruneopt.adapters.bert_surgery import bert_of
from pruneopt.adapters.calibration import run_with_hooks

__all__ = ["reconstruct"]


def _inputs(model: nn.Module, module: nn.Module, batches: Sequence[dict]) -> list[tuple]:
    """The positional inputs of every call of ``module`` while ``model`` runs ``batches``."""
    store: list[tuple] = []
    hook = module.register_forward_pre_hook(lambda _m, args: store.append(args))
    run_with_hooks(model, batches, [hook])
    return store


def _tokens(calls: list[tuple], position: int, keep: torch.Tensor) -> torch.Tensor:
    """Argument ``position`` of every call, as float64 rows [real tokens, features]."""
    rows = torch.cat([c[position].reshape(-1, c[position].shape[-1]) for c in calls])
    return rows[keep].double()


@torch.inference_mode()
def reconstruct(pruned: nn.Module, dense: nn.Module, batches: Sequence[dict], *,
                ridge: float = 1e-2, inplace: bool = False) -> nn.Module:
    """Refit the output matrix of every shrunk attention and FFN on calibration activations.

    Block by block (so that each refit sees the errors left by the blocks before it), the
    attention-output and FFN-output linear maps ``W, b`` of the pruned model are replaced by

        argmin_{W, b}  sum_tokens || W a_p + b - (W_d a_d + b_d + x_d - x_p) ||^2
                       + ridge * mean(diag(A_p^T A_p)) * ||W||^2

    where ``a_p`` are the pruned model's inputs to that map, ``a_d``/``W_d``/``b_d`` the dense
    model's, and ``x_d - x_p`` the difference of the residual inputs: the pre-LayerNorm sum
    then matches the dense one as well as a linear map can. Only real tokens (attention mask)
    are used. ``ridge`` (> 0) is relative to the mean squared activation. Returns a copy
    unless ``inplace``; ``dense`` is not modified.
    """
    if ridge <= 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    target = pruned if inplace else copy.deepcopy(pruned)
    pb, db = bert_of(target), bert_of(dense)
    if len(pb.encoder.layer) != len(db.encoder.layer):
        raise ValueError("pruned and dense models have different numbers of blocks")
    keep = torch.cat([b["attention_mask"].reshape(-1) for b in batches]).bool()

    for pblk, dblk in zip(pb.encoder.layer, db.encoder.layer, strict=True):
        for pm, dm in ((pblk.attention.output, dblk.attention.output),
                       (pblk.output, dblk.output)):
            if pm.dense.in_features == dm.dense.in_features:
                continue  # not pruned
            ps, ds = _inputs(target, pm, batches), _inputs(dense, dm, batches)
            ap, xp = _tokens(ps, 0, keep), _tokens(ps, 1, keep)
            ad, xd = _tokens(ds, 0, keep), _tokens(ds, 1, keep)
            goal = ad @ dm.dense.weight.double().T + dm.dense.bias.double() + xd - xp
            A = torch.cat([ap, torch.ones(ap.shape[0], 1, dtype=ap.dtype)], 1)
            G = A.T @ A
            reg = ridge * float(torch.diagonal(G)[:-1].mean())
            G[:-1, :-1] += reg * torch.eye(ap.shape[1], dtype=G.dtype)
            sol = torch.linalg.solve(G, A.T @ goal)  # (k + 1, out)
            pm.dense.weight.copy_(sol[:-1].T.to(pm.dense.weight.dtype))
            pm.dense.bias.copy_(sol[-1].to(pm.dense.bias.dtype))
    return target
