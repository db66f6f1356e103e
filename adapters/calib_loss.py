"""Calibration losses of a pruned model against its dense original, by model family.

Every loss compares the pruned model's outputs on the calibration batches with the dense
model's (``reference``) and is 0 when they agree:

- ``"cosine"`` (sentence embeddings: a SentenceTransformer or a BERT encoder):
  ``1 - mean_i cos(f(x_i), f_dense(x_i))`` over sentences, in [0, 2];
- ``"kl"`` (classifiers, any model whose output is logits [examples, classes]): the KL
  divergence of the pruned softmax from the dense one, ``mean_i sum_c p_c (log p_c - log
  q_c)`` with ``p`` dense and ``q`` pruned, in nats, over examples;
- ``"next_token_kl"`` (causal language models, logits [sentences, tokens, vocabulary]): the
  same KL of every next-token distribution, averaged over the real tokens (the batch's
  ``attention_mask``).

:func:`default_loss` picks one by the model's type; :func:`model_loss` evaluates it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pruneopt.adapters.calibration import cosine_to, embed, forward, is_sentence_transformer

__all__ = ["LOSSES", "check_loss", "compare_outputs", "default_loss", "is_causal_lm",
           "loss_outputs", "model_loss"]

#: The loss names :func:`model_loss` knows.
LOSSES = ("cosine", "kl", "next_token_kl")


def is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face language model with an output-embedding head."""
    get = getattr(model, "get_output_embeddings", None)
    return callable(get) and get() is not None and hasattr(model, "config")


def default_loss(model: nn.Module) -> str:
    """``"cosine"`` for a sentence encoder (SentenceTransformer or ``BertModel``),
    ``"next_token_kl"`` for a causal language model, ``"kl"`` for anything else."""
    if is_sentence_transformer(model) or (hasattr(model, "encoder")
                                          and hasattr(model.encoder, "layer")):
        return "cosine"
    return "next_token_kl" if is_causal_lm(model) else "kl"


def check_loss(loss: str | None, model: nn.Module) -> str:
    """``loss`` (``None``: :func:`default_loss`), or ``ValueError`` naming the known ones."""
    name = default_loss(model) if loss is None else str(loss)
    if name not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
    return name


def _logits(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y
    if hasattr(y, "logits"):
        return y.logits
    if isinstance(y, tuple | list) and y and isinstance(y[0], torch.Tensor):
        return y[0]
    raise ValueError(f"cannot find logits in a model output of type {type(y).__name__}")


@torch.inference_mode()
def loss_outputs(model: nn.Module, batches: Sequence[Any], loss: str) -> torch.Tensor:
    """What ``loss`` compares, as rows: unit-norm embeddings (``"cosine"``), or float32
    log-probabilities of every example (``"kl"``) or real token (``"next_token_kl"``)."""
    if loss == "cosine":
        return embed(model, batches)
    rows = []
    for b in batches:
        lp = torch.log_softmax(_logits(forward(model, b)).float(), dim=-1)
        if loss == "next_token_kl":
            if lp.ndim != 3:
                raise ValueError(f"next_token_kl needs logits [sentences, tokens, vocabulary], "
                                 f"got shape {tuple(lp.shape)}")
            mask = b.get("attention_mask") if isinstance(b, dict) else None
            keep = (torch.ones(lp.shape[:2], dtype=torch.bool) if mask is None
                    else mask.bool())
            rows.append(lp[keep])
        else:
            rows.append(lp.reshape(-1, lp.shape[-1]))
    return torch.cat(rows)


def compare_outputs(reference: torch.Tensor, out: torch.Tensor, loss: str) -> float:
    """The loss between the dense ``reference`` and the pruned ``out`` rows of
    :func:`loss_outputs` (0 when equal; ``"cosine"`` as computed, ``1 - mean cos``, the KL
    losses clipped at 0 against rounding)."""
    if reference.shape != out.shape:
        raise ValueError(f"output shapes differ: dense {tuple(reference.shape)}, pruned "
                         f"{tuple(out.shape)}")
    if loss == "cosine":
        return 1.0 - cosine_to(reference, out)
    kl = (reference.exp() * (reference - out)).sum(-1).mean()
    return max(0.0, float(kl))


def model_loss(model: nn.Module, batches: Sequence[Any], reference: torch.Tensor,
               loss: str) -> float:
    """``loss`` of ``model`` on ``batches`` against the dense ``reference`` outputs."""
    return compare_outputs(reference, loss_outputs(model, batches, loss), loss)
