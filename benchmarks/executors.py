"""Benchmark: the executor argument, in process vs a local pool vs a local Ray cluster.

    python benchmarks/executors.py                      # MiniLM 4:8 masks + a solve_many batch
    python benchmarks/executors.py --repeats 5 --workers 2
    python benchmarks/executors.py --batch 0            # the MiniLM masks only
    python benchmarks/executors.py --solver ortools     # a slower exact solver per layer

**MiniLM masks.** The 36 encoder weight matrices of the bundled all-MiniLM-L6-v2
(``pruneopt[minilm]``, offline; 384x384, 1536x384, 384x1536) get transposable 4:8 masks
(``compute_nm_masks``, default solver), within each repeat and in turn:

- ``in process``: ``executor=None`` (the reference: its masks are compared with every
  other peer's, entry by entry);
- ``processes``: ``executor="processes"``, a fresh pool of ``--workers`` spawned processes
  per call (their start, torch import included, is part of the time);
- ``ray``: ``executor="ray"`` on a local Ray cluster of ``--workers`` CPUs started once
  before the repeats (its start, and its first call with cold workers, are reported on
  their own; the repeats run on warm workers);
- ``ray direct``: what a Ray user writes without our wrapper, ``ray.get([ray.remote(
  pruneopt.solve).remote(TransposableNM(|W|, 4, 8)) for W in weights])`` on the same cluster
  (the wrapper's overhead is its ratio to ``ray``).

The machine ceiling is what the load lets ``--workers`` Ray workers gain right now on
pure CPU work (``2 * workers`` equal pure-Python loops, in turn in this process vs at once on
Ray): on a shared machine it is well below ``workers``. The floor is the ideal parallel
time, ``max(in process / workers, slowest layer)``: no executor of ``--workers`` workers can
beat it. Speedups are in-process time over the peer's,
within a repeat (same load); median and range over ``--repeats``.

**solve_many batch.** ``--batch`` random transposable 4:8 problems of 512x512 plus as many
layer-budget problems (40 layers x 8 levels), ``solve_many`` in process, in processes and
on Ray; answers compared with the in-process ones.

Per-worker throughput (matrix entries masked per second by one worker) is printed for the
README's cluster estimate. Prints markdown; ``--out FILE`` also writes it to a new file.
"""

from __future__ import annotations

import argparse
import sys
import time

import _common
import numpy as np
import torch

import pruneopt
from pruneopt.adapters.models import load_minilm
from pruneopt.adapters.nm import compute_nm_masks
from pruneopt.formulations import LayerBudget, TransposableNM


def ray_direct(weights: list[torch.Tensor], n: int, m: int,
               solver: str | None) -> list[np.ndarray]:
    """A Ray user's own loop: one remote ``pruneopt.solve`` per weight matrix."""
    import ray

    solve = ray.remote(pruneopt.solve)
    refs = [solve.remote(TransposableNM(w.abs().double().numpy(), n, m), solver)
            for w in weights]
    return [np.asarray(s.decision, dtype=bool) for s in ray.get(refs)]


def spin(count: int) -> int:
    """Pure-Python CPU work (no memory traffic, no locks): the machine's parallelism probe."""
    return sum(i * i for i in range(count))


def parallelism(workers: int, repeats: int, count: int = 3_000_000) -> list[float]:
    """How much faster ``workers`` Ray workers run ``2 * workers`` equal CPU tasks than this
    process runs them one after another, now: the speedup the machine's load allows."""
    import ray

    task = ray.remote(spin)
    ray.get([task.remote(1000) for _ in range(workers)])  # warm
    out = []
    for _ in range(repeats):
        t_seq, _ = _common.timed(lambda: [spin(count) for _ in range(2 * workers)])
        t_par, _ = _common.timed(lambda: ray.get([task.remote(count)
                                                  for _ in range(2 * workers)]))
        out.append(t_seq / t_par)
    return out


def batch_problems(count: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        out.append(TransposableNM(np.abs(rng.normal(size=(512, 512))), 4, 8))
        costs = np.sort(rng.random((40, 8)), axis=1)
        errors = -np.sort(-rng.random((40, 8)), axis=1)
        out.append(LayerBudget(costs, errors, float(costs.sum()) / 8 * 3))
    return out


def same(a: list, b: list) -> bool:
    return all(np.array_equal(np.asarray(x.decision), np.asarray(y.decision))
               and x.status == y.status for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nm", default="4:8")
    ap.add_argument("--batch", type=int, default=16, help="problems of each kind (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--solver", default=None, help="mask solver (default: pruneopt's)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--out": args.out})
    n, m = (int(x) for x in args.nm.split(":"))
    w = args.workers
    import ray

    model = load_minilm()
    lines = [f"# Executors: MiniLM transposable {n}:{m} masks, {w} workers", "",
             _common.machine(), ""]
    t0 = time.perf_counter()
    ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - t0
    try:
        opts = {"solver": args.solver}
        ref = compute_nm_masks(model, n, m, progress=False, **opts)  # warm: numba, imports
        t_cold, _ = _common.timed(lambda: compute_nm_masks(model, n, m, progress=False,
                                                           executor="ray", **opts))
        names = list(ref.masks)
        mods = dict(model.named_modules())
        weights = [mods[k].weight.detach() for k in names]
        entries = sum(x.numel() for x in weights)
        peers = ["in process", "processes", "ray", "ray direct"]
        times = {p: [] for p in peers}
        floors, identical = [], True
        for _ in range(args.repeats):
            for p in peers:
                if p == "ray direct":
                    t, got = _common.timed(ray_direct, weights, n, m, args.solver)
                    identical &= all(np.array_equal(g, ref.masks[k].numpy())
                                     for g, k in zip(got, names, strict=True))
                else:
                    ex = {"in process": None}.get(p, p)
                    t, plan = _common.timed(lambda ex=ex: compute_nm_masks(
                        model, n, m, progress=False, executor=ex, workers=w, **opts))
                    identical &= all(torch.equal(plan.masks[k], ref.masks[k]) for k in names)
                    if p == "in process":
                        slowest = max(r.seconds for r in plan.report)
                times[p].append(t)
            floors.append(max(times["in process"][-1] / w, slowest))
        lines += [f"{len(names)} matrices, {entries / 1e6:.2f} M entries; Ray cluster start "
                  f"{ray_start:.2f} s and its first call (cold workers: imports, numba load) "
                  f"{t_cold:.2f} s, both once and not in the times; solver "
                  f"{ref.report[0].solver!r}; masks identical to in process: "
                  f"{'yes' if identical else 'NO'}", "",
                  "| peer | seconds, median [range] | speedup over in process |",
                  "|---|---|---|"]
        base = np.array(times["in process"])
        for p in peers:
            lines.append(f"| {p} | {_common.fmt_seconds(times[p])} | "
                         f"{_common.fmt_ratio(list(base / np.array(times[p])))} |")
        lines.append(f"| floor (ideal {w}-way split) | {_common.fmt_seconds(floors)} | "
                     f"{_common.fmt_ratio(list(base / np.array(floors)))} |")
        ceiling = parallelism(w, args.repeats)
        lines.append(f"| machine ceiling ({w} Ray workers on pure-Python CPU tasks, now) | | "
                     f"{_common.fmt_ratio(ceiling)} |")
        per_worker = entries / float(np.median(base))
        lines += ["", f"Per-worker throughput (in process): {per_worker / 1e6:.2f} M entries/s; "
                  f"on Ray with {w} workers: "
                  f"{entries / float(np.median(times['ray'])) / w / 1e6:.2f} M entries/s "
                  f"per worker.", ""]
        if args.batch:
            probs = batch_problems(args.batch, args.seed)
            bt = {p: [] for p in ("in process", "processes", "ray")}
            ok = True
            ref_sols = pruneopt.solve_many(probs, progress=False)
            for _ in range(args.repeats):
                for p in bt:
                    ex = {"in process": None}.get(p, p)
                    t, sols = _common.timed(lambda ex=ex: pruneopt.solve_many(
                        probs, executor=ex, workers=w, progress=False))
                    ok &= same(sols, ref_sols)
                    bt[p].append(t)
            b0 = np.array(bt["in process"])
            lines += [f"## solve_many: {len(probs)} problems ({args.batch} TransposableNM "
                      f"512x512 4:8, {args.batch} LayerBudget 40x8); answers "
                      f"identical: {'yes' if ok else 'NO'}", "",
                      "| executor | seconds, median [range] | speedup over in process |",
                      "|---|---|---|"]
            for p, v in bt.items():
                lines.append(f"| {p} | {_common.fmt_seconds(v)} | "
                             f"{_common.fmt_ratio(list(b0 / np.array(v)))} |")
    finally:
        ray.shutdown()
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        _common.write_text(args.out, text)


if __name__ == "__main__":
    main()
