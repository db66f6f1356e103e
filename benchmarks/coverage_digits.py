"""Coreset selection at high pruning rates on scikit-learn's digits (no download).

For every seed: a fresh stratified 70/30 train/test split of the 1,797 digits, a small MLP
(64-128-10) trained on the full training set for 20 epochs while recording EL2N (first 5
epochs), forgetting events and AUM; then, for each pruning rate (30/50/70/90 % of the
training set removed) and method, a fresh MLP trained on the kept examples for a fixed
number of Adam steps (the same compute for every subset size) and scored on the test set.

Methods: random; top-importance (keep the highest EL2N); CCS (drop the ``beta`` fraction
of lowest AUM, 50 EL2N strata, smallest stratum first); max-coverage (greedy
:class:`CoverageSelection` on the standardised pixels, radius from ``default_radius``);
coverage-weighted (the same with EL2N weights after the same hard pruning as CCS).
``beta`` per rate is fixed in advance (not tuned on the test set): 0, 0, 0.1, 0.3.

    python benchmarks/coverage_digits.py --seeds 5 --plot /tmp/coverage_digits.png

(The committed ``benchmarks/coverage_digits.png`` came from this run; the script refuses to
write over a committed file, so give a new path.)

Prints a markdown table (mean +- standard deviation of the test accuracy, in %).
"""

from __future__ import annotations

import argparse
import time

import _common
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import Subset, TensorDataset

from pruneopt.adapters.coreset import ccs_indices, coverage_indices, random_indices, top_indices
from pruneopt.adapters.importance import accuracy, train_classifier, train_with_importance

RATES = (0.3, 0.5, 0.7, 0.9)
BETA = {0.3: 0.0, 0.5: 0.0, 0.7: 0.1, 0.9: 0.3}
METHODS = ("random", "top-importance", "CCS", "max-coverage", "coverage-weighted")


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def select(method: str, rate: float, X: np.ndarray, scores, seed: int) -> np.ndarray:
    n = len(X)
    keep = int(round((1 - rate) * n))
    beta = BETA[rate]
    if method == "random":
        return random_indices(n, keep, seed=seed)
    if method == "top-importance":
        return top_indices(scores.el2n, keep)
    if method == "CCS":
        return ccs_indices(scores.el2n, keep, beta=beta, difficulty=-scores.aum, seed=seed)
    if method == "max-coverage":
        return coverage_indices(X, keep, seed=seed)
    if method == "coverage-weighted":
        return coverage_indices(X, keep, weights=scores.el2n + 1e-3, beta=beta,
                                difficulty=-scores.aum, seed=seed)
    raise ValueError(method)


def run(seeds: int, steps: int) -> dict:
    torch.set_num_threads(1)
    data = load_digits()
    X_all = (data.data / 16.0).astype(np.float32)
    y_all = data.target.astype(np.int64)
    acc: dict = {(m, r): [] for m in METHODS for r in RATES}
    full = []
    for seed in range(seeds):
        Xtr, Xte, ytr, yte = train_test_split(X_all, y_all, test_size=0.3, stratify=y_all,
                                              random_state=seed)
        train = TensorDataset(torch.from_numpy(Xtr), torch.from_numpy(ytr))
        test = TensorDataset(torch.from_numpy(Xte), torch.from_numpy(yte))
        scores = train_with_importance(mlp(1000 + seed), train, num_classes=10, epochs=20,
                                       el2n_epochs=5, lr=1e-3, seed=seed)
        model = train_classifier(mlp(seed), train, steps=steps, lr=1e-3, seed=seed)
        full.append(accuracy(model, test))
        for rate in RATES:
            for method in METHODS:
                idx = select(method, rate, Xtr.astype(np.float64), scores, seed)
                model = train_classifier(mlp(seed), Subset(train, idx.tolist()), steps=steps,
                                         lr=1e-3, seed=seed)
                acc[(method, rate)].append(accuracy(model, test))
    return {"acc": acc, "full": full}


def table(res: dict, seeds: int) -> str:
    full = np.array(res["full"]) * 100
    lines = [
        f"full training set: {full.mean():.1f} +- {full.std(ddof=1):.1f} % test accuracy "
        f"({seeds} seeds)",
        "",
        "| method | " + " | ".join(f"{int(r * 100)}% pruned" for r in RATES) + " |",
        "|---|" + "---:|" * len(RATES),
    ]
    for m in METHODS:
        cells = []
        for r in RATES:
            a = np.array(res["acc"][(m, r)]) * 100
            cells.append(f"{a.mean():.1f} +- {a.std(ddof=1):.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = np.array(RATES) * 100
    for m in METHODS:
        a = np.array([res["acc"][(m, r)] for r in RATES]) * 100
        ax.errorbar(xs, a.mean(axis=1), yerr=a.std(axis=1, ddof=1), marker="o", capsize=3,
                    label=m)
    full = np.array(res["full"]) * 100
    ax.axhline(full.mean(), color="gray", ls="--", lw=1, label="full data")
    ax.set_xlabel("pruning rate (% of training set removed)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"digits, MLP 64-128-10, mean +- std over {len(res['full'])} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _common.save_figure(fig, path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400, help="Adam steps per training run")
    ap.add_argument("--plot", default=None, help="write the figure to this new PNG")
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--plot": args.plot})
    t0 = time.perf_counter()
    res = run(args.seeds, args.steps)
    print(table(res, args.seeds))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if args.plot:
        plot(res, args.plot)


if __name__ == "__main__":
    main()
