"""Bad input to the data adapters is a clear ValueError, never a silent answer: fractional
indices are not rounded, the importance recorder refuses batches it cannot score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pruneopt.adapters.importance import ImportanceRecorder
from pruneopt.adapters.mmd import keep_mask, subset


def test_kept_indices_are_never_rounded():
    ds = TensorDataset(torch.arange(5.0))
    for bad, message in [([1.5], "integer"), ([0.7], "integer"), ([0, 5], "outside"),
                         ([-1], "outside"), ([1, 1], "more than once"), ([[1]], "1-D"),
                         (["a"], "integer"), ([np.nan], "integer"),
                         (np.ones(4, dtype=bool), "shape")]:
        with pytest.raises(ValueError, match=f"kept indices.*{message}"):
            keep_mask(5, bad)
        with pytest.raises(ValueError, match=f"kept indices.*{message}"):
            subset(ds, bad)
    # integral floats, tensors and boolean masks are fine
    assert keep_mask(5, [2.0, 4.0]).tolist() == [False, False, True, False, True]
    assert subset(ds, torch.tensor([3.0, 1.0])).indices == [1, 3]
    assert subset(ds, np.array([True, False, False, False, True])).indices == [0, 4]
    assert keep_mask(3, []).tolist() == [False] * 3
    with pytest.raises(ValueError, match="n must be"):
        keep_mask(2.5, [0])


@pytest.mark.parametrize("indices, logits, targets, message", [
    ([0, 1], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0, 3], r"targets must lie in \[0, 2\]"),
    ([0, 1], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [-1, 0], r"targets must lie in \[0, 2\]"),
    ([0, 1], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0.5, 1], "targets must be integers"),
    ([], torch.zeros(0, 3), [], "indices is empty"),
    ([0, 1, 2], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0, 1], "one entry per example"),
    ([0, 1], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0, 1, 2], "one entry per example"),
    ([0, 1], [[1.0, 0.0, 0.0]], [0, 1], "one entry per example"),
    ([0, 1], [[float("nan"), 0.0, 0.0], [0.0, 1.0, 0.0]], [0, 1], r"NaN or inf.*rows \[0\]"),
    ([0, 1], [[1.0, 0.0, 0.0], [0.0, float("inf"), 0.0]], [0, 1], r"NaN or inf.*rows \[1\]"),
    ([0, 4], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0, 1], r"indices must lie in \[0, 3\]"),
    ([0, 1.5], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0, 1], "indices must be integers"),
    ([0, 1], [1.0, 0.0, 0.0], [0, 1], r"logits must be \(batch, 3\)"),
])
def test_recorder_refuses_what_it_cannot_score(indices, logits, targets, message):
    rec = ImportanceRecorder(4, 3)
    rec.update([0, 1], torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([0, 1]))
    before = rec.scores()
    with pytest.raises(ValueError, match=message):
        rec.update(indices, torch.as_tensor(logits), torch.as_tensor(targets))
    after = rec.scores()  # nothing half-recorded
    for a, b in zip((before.el2n, before.aum, before.forgetting),
                    (after.el2n, after.aum, after.forgetting), strict=True):
        assert np.array_equal(a, b)
    rec.end_epoch()
    assert rec.epoch == 1


def test_recorder_accepts_tensors_with_grad_and_integral_float_labels():
    rec = ImportanceRecorder(2, 2)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]], requires_grad=True)
    rec.update(torch.tensor([1, 0]), logits * 1.0, np.array([0.0, 1.0]))
    rec.end_epoch()
    assert rec.scores().aum.tolist() == [1.0, 2.0]
    for bad, message in [(dict(num_examples=0, num_classes=2), "num_examples"),
                         (dict(num_examples=3, num_classes=1), "num_classes"),
                         (dict(num_examples=3, num_classes=2, el2n_epochs=0), "el2n_epochs")]:
        with pytest.raises(ValueError, match=message):
            ImportanceRecorder(**bad)
