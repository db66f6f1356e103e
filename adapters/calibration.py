"""Calibration data through a model: batches, forward passes, embeddings, cosine.

The calibration runner of every model family is :func:`forward`, in this one place:

- a SentenceTransformer takes its feature dict (``model(batch)``);
- a Hugging Face model (BERT, a causal LM, ...) takes a *tokenized dict batch*, ``input_ids``
  and ``attention_mask`` (tensors [sentences, tokens]) and any other keys, as keywords
  (``model(**batch)``; :func:`make_batches` for a SentenceTransformer,
  :func:`tokenized_batches` for any Hugging Face tokenizer);
- a plain torch model takes a *tensor* batch (``model(x)``; a tuple or list batch is
  unpacked, ``model(*batch)``; :func:`tensor_batches` cuts an array into them).

:func:`forward` runs any of them on one batch; :func:`embed` gives unit-norm sentence
embeddings (the SentenceTransformer's own pooling, or mean pooling over real tokens for a
bare ``BertModel``); :func:`cosine_to` is the quality measure of every SPDY step on a
sentence encoder (mean cosine similarity to the dense model's embeddings).
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
    "tensor_batches",
    "tokenized_batches",
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


def tokenized_batches(tokenizer: Any, texts: Sequence[str], batch_size: int = 16, *,
                      max_length: int = 128) -> list[dict]:
    """Tokenized dict batches (``input_ids``, ``attention_mask``; padded, truncated to
    ``max_length`` tokens) of ``texts`` for a Hugging Face model with ``tokenizer``."""
    if not texts:
        raise ValueError("need at least one text")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if getattr(tokenizer, "pad_token", "") is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True,
                        truncation=True, max_length=max_length)
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


def tensor_batches(inputs: Any, batch_size: int = 64) -> list[torch.Tensor]:
    """Float32 tensor batches (the first axis split into ``batch_size`` rows) of ``inputs``
    (an array or tensor of model inputs, e.g. images [n, channels, height, width])."""
    x = torch.as_tensor(inputs)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"need at least one input row, got shape {tuple(x.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if x.is_floating_point() or not x.dtype.is_signed and x.dtype != torch.bool:
        x = x.float()
    return list(torch.split(x, int(batch_size)))


def forward(model: nn.Module, batch: Any) -> Any:
    """``model``'s output on one batch (see the module doc): the SentenceTransformer feature
    dict, a Hugging Face model's output (``last_hidden_state`` or ``logits``), or a plain
    model's output tensor."""
    if is_sentence_transformer(model):
        return model(dict(batch))
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    return model(batch)


@torch.inference_mode()
def run_batches(model: nn.Module, batches: Iterable[Any]) -> None:
    """Run ``model`` on every batch, discarding the outputs (for timing and capture hooks)."""
    for b in batches:
        forward(model, b)


def run_with_hooks(model: nn.Module, batches: Iterable[Any], hooks: Iterable[Any]) -> None:
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
