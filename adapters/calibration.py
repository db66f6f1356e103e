"""Calibration data through a sentence encoder: batches, forward passes, embeddings, cosine.

A *batch* is a dict with ``input_ids`` and ``attention_mask`` (tensors of shape
[sentences, tokens]), as a SentenceTransformer's tokenizer gives (:func:`make_batches`) or as
one builds by hand for a bare ``BertModel``. :func:`forward` runs either kind of model on
one batch; :func:`embed` gives unit-norm sentence embeddings (the SentenceTransformer's own
pooling, or mean pooling over real tokens for a bare ``BertModel``); :func:`cosine_to` is the
quality measure of every SPDY step (mean cosine similarity to the dense model's embeddings).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "cosine_to",
    "embed",
    "forward",
    "is_sentence_transformer",
    "make_batches",
    "mean_pooled",
    "run_batches",
    "run_with_hooks",
]


def is_sentence_transformer(model: nn.Module) -> bool:
    """Whether ``model`` is a SentenceTransformer (it tokenizes and takes a feature dict)."""
    return hasattr(model, "tokenize")


def make_batches(model: nn.Module, sentences: Sequence[str], batch_size: int = 32) -> list[dict]:
    """Tokenized batches of ``sentences`` (``batch_size`` sentences each) for a
    SentenceTransformer ``model``."""
    if not is_sentence_transformer(model):
        raise ValueError("make_batches needs a SentenceTransformer (with .tokenize); for a bare "
                         "BertModel pass dicts with input_ids and attention_mask")
    if not sentences:
        raise ValueError("need at least one sentence")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tok = getattr(model, "preprocess", None) or model.tokenize  # tokenize is deprecated in v5
    return [dict(tok(list(sentences[i:i + batch_size])))
            for i in range(0, len(sentences), batch_size)]


def forward(model: nn.Module, batch: dict) -> Any:
    """``model``'s output on one batch: the SentenceTransformer feature dict, or the
    ``BertModel`` output (with ``last_hidden_state``)."""
    if is_sentence_transformer(model):
        return model(dict(batch))
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


@torch.inference_mode()
def run_batches(model: nn.Module, batches: Iterable[dict]) -> None:
    """Run ``model`` on every batch, discarding the outputs (for timing and capture hooks)."""
    for b in batches:
        forward(model, b)


def run_with_hooks(model: nn.Module, batches: Iterable[dict], hooks: Iterable[Any]) -> None:
    """Run ``model`` on ``batches`` with the given hook handles in place, removing them
    afterwards (also when the forward pass fails)."""
    try:
        run_batches(model, batches)
    finally:
        for h in hooks:
            h.remove()


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit-norm float32 mean of ``hidden`` [sentences, tokens, dim] over the real tokens
    (``mask`` [sentences, tokens] nonzero): all-MiniLM-L6-v2's own pooling."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)


@torch.inference_mode()
def embed(model: nn.Module, batches: Sequence[dict]) -> torch.Tensor:
    """Unit-norm float32 sentence embeddings of all batches, [sentences, dim] (mean pooling
    for a bare BertModel)."""
    out = []
    for b in batches:
        y = forward(model, b)
        if is_sentence_transformer(model):
            out.append(torch.nn.functional.normalize(y["sentence_embedding"].float(), dim=-1))
        else:
            out.append(mean_pooled(y.last_hidden_state, b["attention_mask"]))
    return torch.cat(out)


def cosine_to(reference: torch.Tensor, emb: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows of two unit-norm embeddings (in [-1, 1])."""
    return float((reference * emb).sum(-1).mean())
