"""Importance (difficulty) scores of training examples, recorded during torch training.

- **EL2N** (Paul et al. 2021): ``||softmax(f(x)) - onehot(y)||_2``, averaged over the
  recorded epochs up to ``el2n_epochs`` (early in training). Higher = harder.
- **Forgetting events** (Toneva et al. 2019): how often an example goes from correctly to
  incorrectly classified between consecutive epochs; examples never learned get the
  largest count (``epochs``), as in the paper. Higher = harder.
- **AUM**, area under the margin (Pleiss et al. 2020): the mean over epochs of
  ``logit_y - max_{c != y} logit_c``. Lower = harder (negative: likely mislabelled).

All three use the logits of the training forward passes (as in the papers), so recording
costs nothing extra. Use :class:`ImportanceRecorder` inside your own loop, or
:func:`train_with_importance` for a plain classification loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pruneopt.formulations.base import as_int, to_numpy


@dataclass
class ImportanceScores:
    """Per-example scores (numpy arrays of length ``n``), higher EL2N / forgetting = harder,
    lower AUM = harder; ``difficulty(name)`` orients any of them as higher = harder."""

    el2n: np.ndarray
    forgetting: np.ndarray
    aum: np.ndarray

    def difficulty(self, name: str) -> np.ndarray:
        if name == "el2n":
            return self.el2n
        if name == "forgetting":
            return self.forgetting.astype(float)
        if name == "aum":
            return -self.aum
        raise ValueError(f"unknown score {name!r}; use 'el2n', 'forgetting' or 'aum'")


def _int_vector(x: Any, name: str, high: int) -> np.ndarray:
    """``x`` (tensor, array or list) as a non-empty 1-D int64 array with values in
    [0, high); integral floats are accepted, anything else is a ``ValueError``."""
    a = np.asarray(to_numpy(x, name))
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per example), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: an update needs at least one example")
    integral = np.issubdtype(a.dtype, np.integer) or (
        np.issubdtype(a.dtype, np.floating) and bool(np.isfinite(a).all())
        and bool((a == np.round(a)).all()))
    if a.dtype == bool or not integral:
        raise ValueError(f"{name} must be integers, got {a.dtype} values such as {a[:3]}")
    a = a.astype(np.int64)
    if a.min() < 0 or a.max() >= high:
        raise ValueError(f"{name} must lie in [0, {high - 1}], got values from {a.min()} to "
                         f"{a.max()}")
    return a


class ImportanceRecorder:
    """Collects EL2N, forgetting events and AUM from training logits.

    Call :meth:`update` on every training batch with the dataset indices of its examples,
    its logits (before softmax) and labels, and :meth:`end_epoch` after every epoch.
    """

    def __init__(self, num_examples: int, num_classes: int, *, el2n_epochs: int | None = None):
        self.n = as_int(num_examples, "num_examples", low=1)
        self.c = as_int(num_classes, "num_classes", low=2)
        self.el2n_epochs = None if el2n_epochs is None else as_int(el2n_epochs, "el2n_epochs",
                                                                     low=1)
        self.epoch = 0
        self._el2n_sum = np.zeros(self.n)
        self._el2n_cnt = np.zeros(self.n)
        self._margin_sum = np.zeros(self.n)
        self._margin_cnt = np.zeros(self.n)
        self._correct = np.zeros(self.n, dtype=bool)  # this epoch
        self._prev = np.zeros(self.n, dtype=bool)
        self._seen = np.zeros(self.n, dtype=bool)
        self._ever = np.zeros(self.n, dtype=bool)
        self._forget = np.zeros(self.n, dtype=np.int64)

    @torch.no_grad()
    def update(self, indices: Any, logits: torch.Tensor, targets: Any) -> None:
        """Record one training batch: ``indices`` (dataset index of each example, in
        [0, num_examples)), ``logits`` (batch, num_classes) before softmax, and ``targets``
        (labels in [0, num_classes)). Empty batches, mismatched lengths, labels or indices
        out of range, non-integer labels and NaN/inf logits are a ``ValueError`` (nothing is
        recorded)."""
        idx = _int_vector(indices, "indices", self.n)
        y = torch.from_numpy(_int_vector(targets, "targets", self.c))
        z = torch.as_tensor(to_numpy(logits, "logits")).float()
        if z.ndim != 2 or z.shape[1] != self.c:
            raise ValueError(f"logits must be (batch, {self.c}), got {tuple(z.shape)}")
        if not (len(idx) == len(y) == z.shape[0]):
            raise ValueError(f"indices, logits and targets must have one entry per example; "
                             f"got {len(idx)} indices, {z.shape[0]} logit rows, {len(y)} "
                             f"targets")
        if not torch.isfinite(z).all():
            bad = torch.nonzero(~torch.isfinite(z).all(dim=1)).flatten()[:5].tolist()
            raise ValueError(f"logits have NaN or inf entries (batch rows {bad}); the "
                             f"training has diverged or the model output is wrong")
        p = torch.softmax(z, dim=1)
        onehot = torch.nn.functional.one_hot(y, self.c).float()
        if self.el2n_epochs is None or self.epoch < self.el2n_epochs:
            np.add.at(self._el2n_sum, idx, torch.linalg.norm(p - onehot, dim=1).numpy())
            np.add.at(self._el2n_cnt, idx, 1.0)
        true = z.gather(1, y[:, None])[:, 0]
        other = z.masked_fill(onehot.bool(), float("-inf")).max(dim=1).values
        np.add.at(self._margin_sum, idx, (true - other).numpy())
        np.add.at(self._margin_cnt, idx, 1.0)
        self._correct[idx] = (z.argmax(dim=1) == y).numpy()
        self._seen[idx] = True

    def end_epoch(self) -> None:
        seen = self._seen
        if self.epoch > 0:
            self._forget += (self._prev & ~self._correct & seen).astype(np.int64)
        self._ever |= self._correct & seen
        self._prev = np.where(seen, self._correct, self._prev)
        self._seen = np.zeros(self.n, dtype=bool)
        self.epoch += 1

    def scores(self) -> ImportanceScores:
        el2n = self._el2n_sum / np.maximum(self._el2n_cnt, 1.0)
        aum = self._margin_sum / np.maximum(self._margin_cnt, 1.0)
        forgetting = np.where(self._ever, self._forget, max(self.epoch, 1))
        return ImportanceScores(el2n=el2n, forgetting=forgetting, aum=aum)


class _Indexed(Dataset):
    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, i


def train_with_importance(model: nn.Module, dataset: Dataset, *, num_classes: int,
                          epochs: int = 20, batch_size: int = 64, lr: float = 1e-2,
                          weight_decay: float = 0.0, el2n_epochs: int | None = None,
                          seed: int = 0, progress: bool = False) -> ImportanceScores:
    """Train ``model`` (in place) with Adam and cross-entropy on ``dataset`` of
    ``(x, label)`` pairs, recording EL2N, forgetting events and AUM for every example.

    ``el2n_epochs``: average EL2N over the first that many epochs only (None: all).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    gen = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=True, generator=gen)
    rec = ImportanceRecorder(len(dataset), num_classes, el2n_epochs=el2n_epochs)  # type: ignore[arg-type]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    it = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="training (importance)", unit="epoch")
    model.train()
    for _ in it:
        for x, y, idx in loader:
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.update(idx, logits, y)
        rec.end_epoch()
    return rec.scores()


def train_classifier(model: nn.Module, dataset: Dataset, *, steps: int = 500,
                     batch_size: int = 64, lr: float = 1e-2, seed: int = 0) -> nn.Module:
    """Train ``model`` in place for a fixed number of Adam steps (cross-entropy), cycling
    through ``dataset``; a fixed step count gives every subset size the same compute."""
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("cannot train on an empty dataset")
    gen = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)),  # type: ignore[arg-type]
                        shuffle=True, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    done = 0
    while done < steps:
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return model


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (eval mode restored afterwards)."""
    was = model.training
    model.eval()
    right = total = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        right += int((model(x).argmax(dim=1) == y).sum())
        total += len(y)
    model.train(was)
    return right / max(total, 1)
