"""GreeDi (distributed max coverage over shards) against the single-machine greedy.

Data: ``coverage_scale.mixture`` (a seeded 64-D Gaussian mixture, 1,000 clusters of 8-D
intrinsic dimension), n points in float32, randomly partitioned into ``--shards`` .npy
files under a fresh temporary folder in /tmp (deleted at the end, also on error). keep
k = n / 10, radius ``default_radius`` of the whole data for k (as coverage_scale).

Per size, in one process and one repeat (``--repeats``: median with the range):

- floor: one read of every shard from disk (a sum over the memory map);
- single machine: ``CoverageSelection(X, keep=k, radius=r, graph_method="ivf")`` solved by
  ``greedy`` on the whole data, coverage re-scored on the exact radius
  (``info["exact_objective"]``);
- GreeDi (``greedi_coverage``: per-shard IVF graph + greedy, IVF incidence of all points to
  the m k candidates, merge greedy, exact re-scoring shard by shard) on each
  ``--executors`` (None = in process, "processes", "ray": a local cluster of
  ``--workers`` CPUs started here), with the peak RSS of each worker task and of this
  driver process;
- ratios GreeDi / single machine (time, coverage) and the scaling exponent of the time
  (least squares of log time on log n), which extrapolates to ``--extrapolate`` points.

    nice python benchmarks/coverage_distributed.py --sizes 200000 1000000

``--big N`` (e.g. 10,000,000): instead, GreeDi at a size one array would not hold: the
``--shards`` files are drawn one by one (each an i.i.d. sample of the same mixture, so the
files are a random partition of one N-point sample; never all in memory), keep k = N / 10,
``--local-keep`` candidates per shard (default 2 k / shards: the candidates' memory is
bounded; GreeDi's worst-case ratio is then not claimed), on each ``--executors``, at the
radius of the whole data (``default_radius``'s quantile rule on a ``--subsample`` of rows
drawn evenly from the shards, with the pair fraction of N points and k = N / 10). The
single-machine greedy cannot hold N points, so coverage is compared on that 1M subsample:
GreeDi (the subsample split into the same number of shards, the same local keep rule)
against the single-machine greedy, both with keep = subsample / 10 at the subsample's own
``default_radius``. Per stage: time and the peak RSS of every worker task:

    nice python benchmarks/coverage_distributed.py --big 10000000 --shards 10 --executors ray

``--mmd N``: instead, MMD selection by shards (``mmd_by_shards``, ``lowrank`` per shard)
against the single-machine ``lowrank`` on ``mmd_scale.instance(N)`` (source N(0, I_64),
target N(0.3, 0.8^2 I_64), keep = min(N/10, 10,000)), both MMD^2 on the exact kernel with
the same bandwidth, with the shards' share-weighted average MMD^2 (the union's bound):

    nice python benchmarks/coverage_distributed.py --mmd 100000 --executors ray
"""

from __future__ import annotations

import argparse
import io
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401 - measure the checkout this script sits in
import numpy as np  # noqa: E402
from coverage_scale import mixture  # noqa: E402
from mmd_scale import instance  # noqa: E402

import pruneopt  # noqa: E402
from pruneopt.formulations.coverage import CoverageSelection  # noqa: E402
from pruneopt.formulations.geometry import default_radius  # noqa: E402
from pruneopt.formulations.mmd import MMDSelection  # noqa: E402
from pruneopt.solvers.coverage_distributed import greedi_coverage  # noqa: E402
from pruneopt.solvers.mmd_distributed import mmd_by_shards  # noqa: E402
from pruneopt.solvers.shards import peak_rss_mib  # noqa: E402


def med(v: list[float]) -> str:
    return f"{np.median(v):.3g}" if len(v) == 1 else (
        f"{np.median(v):.3g} ({min(v):.3g}-{max(v):.3g})")


def write_shards(X: np.ndarray, m: int, folder: Path, seed: int) -> list[str]:
    """A random partition of X into m float32 .npy files."""
    perm = np.random.default_rng(seed).permutation(len(X))
    paths = []
    for i, part in enumerate(np.array_split(perm, m)):
        p = folder / f"shard{i:03d}.npy"
        buf = io.BytesIO()
        np.lib.format.write_array(buf, X[np.sort(part)].astype(np.float32))
        _common.write_bytes(p, buf.getvalue())  # whole or not at all
        paths.append(str(p))
    return paths


def read_floor(paths: list[str]) -> float:
    t = time.perf_counter()
    for p in paths:
        float(np.load(p, mmap_mode="r").sum(dtype=np.float64))
    return time.perf_counter() - t


def run_size(n: int, args, folder: Path) -> dict:
    X = mixture(n, seed=args.seed)
    k = n // 10
    r = default_radius(X, k, seed=args.seed)
    paths = write_shards(X, args.shards, folder, args.seed)
    out: dict = {"n": n, "k": k, "r": r, "runs": {}}
    for rep in range(args.repeats):
        out.setdefault("floor", []).append(read_floor(paths))
        t = time.perf_counter()
        p = CoverageSelection(X, keep=k, radius=r, graph_method="ivf")
        sol = pruneopt.solve(p, solver="greedy")
        out.setdefault("single", []).append(time.perf_counter() - t)
        out["single_cov"] = sol.info["exact_objective"] / n
        del p, sol
        for ex in args.executors:
            e = None if ex == "none" else ex
            t = time.perf_counter()
            res = greedi_coverage(paths, k, r, executor=e, workers=args.workers,
                                  graph_method="ivf", cross="ivf", seed=args.seed)
            dt = time.perf_counter() - t
            run = out["runs"].setdefault(ex, {"t": [], "ratio": []})
            run["t"].append(dt)
            run["ratio"].append(dt / out["single"][-1])
            run["cov"] = res.fraction
            run["res"] = res
            if rep == args.repeats - 1:
                out["driver_rss"] = peak_rss_mib()
                print_row(out, ex)
    for p in paths:
        Path(p).unlink()
    return out


def run_mmd(n: int, args, folder: Path) -> None:
    """MMD by shards against the single-machine lowrank solve (see the module docstring)."""
    source, target, keep = instance(n, seed=args.seed)
    paths = write_shards(source, args.shards, folder, args.seed)
    shards = [np.load(p).astype(np.float64) for p in paths]
    whole = np.vstack(shards)  # the shards' order: global indices match
    print(f"{_common.machine()}; n = {n:,}, keep = {keep:,}, shards = {args.shards}, "
          f"workers = {args.workers}\n")
    print("| solve | MMD^2 | MMD^2 / single | time (s) | time / single | peak RSS per "
          "worker task (MiB) |\n|---|---:|---:|---:|---:|---|")
    t = time.perf_counter()
    res0 = mmd_by_shards(paths, target, keep, seed=args.seed)  # bandwidth as the shards see it
    bw = res0.bandwidth
    problem = MMDSelection(whole, target, keep=keep, bandwidth=bw)
    t = time.perf_counter()
    sol = pruneopt.solve(problem, solver="lowrank", seed=args.seed)
    single = time.perf_counter() - t
    print(f"| single machine lowrank | {sol.objective:.6g} | 1 | {single:.3g} | 1 | "
          f"{peak_rss_mib():.0f} (this process) |")
    for ex in args.executors:
        e = None if ex == "none" else ex
        t = time.perf_counter()
        res = mmd_by_shards(paths, target, keep, executor=e, workers=args.workers,
                            seed=args.seed)
        dt = time.perf_counter() - t
        assert np.array_equal(res.indices, res0.indices)
        print(f"| by shards, {ex} | {res.objective:.6g} | {res.objective / sol.objective:.4f} "
              f"| {dt:.3g} | {dt / single:.3g} | "
              f"{', '.join(f'{v:.0f}' for v in res.peak_rss_mib)} |")
    print(f"\nshares {res0.shares}; shards' MMD^2 "
          f"{', '.join(f'{v:.6g}' for v in res0.shard_objectives)}; share-weighted average "
          f"{res0.average_bound:.6g} >= union {res0.objective:.6g}; bandwidth {bw:.4g}")


def run_big(n: int, args, folder: Path) -> None:
    """GreeDi on ``n`` points written shard by shard (see the module docstring)."""
    m = args.shards
    sizes = [len(a) for a in np.array_split(np.arange(n), m)]
    rng = np.random.default_rng(args.seed)
    paths, sub = [], []
    t = time.perf_counter()
    for i, ni in enumerate(sizes):
        X = mixture(ni, seed=args.seed, sample_seed=i).astype(np.float32)
        sub.append(X[np.sort(rng.choice(ni, args.subsample // m, replace=False))])
        p = folder / f"shard{i:03d}.npy"
        buf = io.BytesIO()
        np.lib.format.write_array(buf, X)
        del X
        _common.write_bytes(p, buf.getvalue())
        del buf
        paths.append(str(p))
    gen = time.perf_counter() - t
    S = np.vstack(sub).astype(np.float64)
    del sub
    k, ns = n // 10, len(S)
    ks = ns // 10
    # default_radius's rule at N points: the pair fraction (N/k - 1)/(N - 1), on the subsample
    keep_eq = max(1, round(ns / (1.0 + (n / k - 1.0) * (ns - 1.0) / (n - 1.0))))
    r = default_radius(S, keep_eq, seed=args.seed)
    rs = default_radius(S, ks, seed=args.seed)
    lk = args.local_keep or (2 * k) // m
    print(f"{_common.machine()}; N = {n:,} in {m} shards of {sizes[0]:,} (written in "
          f"{gen:.0f} s), keep = {k:,}, local keep = {lk:,}, radius = {r:.4g}; subsample "
          f"{ns:,} points, keep {ks:,}, radius {rs:.4g}; workers = {args.workers}\n",
          flush=True)
    floor = read_floor(paths)
    print(f"floor (one read of the {n:,} points from disk): {floor:.1f} s\n")
    print("| data | executor | GreeDi (s) | stages: shards + cross + merge + re-score (s) "
          "| candidates | incidence recall | covered | single machine: covered, time (s) "
          "| coverage ratio | peak RSS per worker task, max (MiB) | this process peak RSS "
          "(MiB) |")
    print("|---|---|---:|---|---:|---:|---:|---|---:|---|---:|", flush=True)
    t = time.perf_counter()
    sol = pruneopt.solve(CoverageSelection(S, keep=ks, radius=rs, graph_method="ivf"),
                         solver="greedy")
    single = (sol.info["exact_objective"] / ns, time.perf_counter() - t)
    del sol
    sub_shards = np.array_split(S, m)
    for is_sub, data, kk, rr in ((True, sub_shards, ks, rs), (False, paths, k, r)):
        label = f"{ns:,} subsample" if is_sub else f"{n:,} (N)"
        for ex in args.executors:
            e = None if ex == "none" else ex
            t = time.perf_counter()
            res = greedi_coverage(data, kk, rr, local_keep=(2 * kk) // m, executor=e,
                                  workers=args.workers, graph_method="ivf", cross="ivf",
                                  seed=args.seed)
            dt = time.perf_counter() - t
            sec = res.seconds
            stages = " + ".join(f"{sec.get(x, 0.0):.0f}" for x in ("shards", "cross",
                                                                   "merge", "rescore"))
            rss = ", ".join(f"{st} {max(v):.0f}" for st, v in res.peak_rss_mib.items())
            ref = f"{100 * single[0]:.2f} %, {single[1]:.0f}" if is_sub else "not run"
            ratio = f"{res.fraction / single[0]:.4f}" if is_sub else "-"
            print(f"| {label} | {ex} | {dt:.0f} | {stages} | {res.candidates:,} "
                  f"| {res.cross.get('recall', 1.0):.4f} | {100 * res.fraction:.2f} % "
                  f"| {ref} | {ratio} | {rss} | {peak_rss_mib():.0f} |", flush=True)
        del data
        if is_sub:
            del sub_shards, S


def print_row(o: dict, ex: str) -> None:
    """The table row of one size and executor (printed as soon as it is measured)."""
    run = o["runs"][ex]
    res = run["res"]
    s = res.seconds
    stages = " + ".join(f"{s.get(x, 0.0):.3g}" for x in ("shards", "cross", "merge", "rescore"))
    rss = max(max(v) for v in res.peak_rss_mib.values())
    print(f"| {o['n']:,} | {o['k']:,} | {ex} | {med(o['floor'])} | {med(o['single'])} "
          f"| {med(run['t'])} | {med(run['ratio'])} | {stages} | {res.candidates:,} "
          f"| {res.cross.get('recall', 1.0):.4f} | {100 * run['cov']:.2f}% / "
          f"{100 * o['single_cov']:.2f}% | {run['cov'] / o['single_cov']:.4f} "
          f"| {res.source} | {rss:.0f} | {o['driver_rss']:.0f} |", flush=True)


def slope(ns: list[int], ts: list[float]) -> float:
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0]) if len(ns) > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000])
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--executors", nargs="+", default=["ray", "processes"],
                    choices=["none", "processes", "ray"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--extrapolate", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mmd", type=int, default=None, metavar="N")
    ap.add_argument("--big", type=int, default=None, metavar="N")
    ap.add_argument("--local-keep", type=int, default=None)
    ap.add_argument("--subsample", type=int, default=1_000_000)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a kill still removes the shards
    folder = Path(tempfile.mkdtemp(prefix="greedi_bench_", dir="/tmp"))
    if args.mmd is not None or args.big is not None:
        try:
            if args.big is not None:
                run_big(args.big, args, folder)
            else:
                run_mmd(args.mmd, args, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        warm = mixture(4000, seed=1)  # numba's and faiss's first-call costs, not measured
        pruneopt.solve(CoverageSelection(warm, keep=400, radius=3.0, graph_method="ivf"),
                       solver="greedy")
        greedi_coverage([warm[:2000], warm[2000:]], 400, 3.0, graph_method="ivf", cross="ivf")
        print(f"{_common.machine()}; shards = {args.shards}, workers = {args.workers}, "
              f"repeats = {args.repeats}\n")
        print("| n | keep | executor | floor: read shards (s) | single machine (s) "
              "| GreeDi (s) | GreeDi / single | stages: shards + cross + merge + re-score (s) "
              "| candidates | incidence recall | covered: GreeDi / single | coverage ratio "
              "| source | peak RSS per worker task (MiB) | this process peak RSS (MiB) |")
        print("|---:|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|---:|",
              flush=True)
        rows = []
        for n in args.sizes:
            rows.append(run_size(n, args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ns = [o["n"] for o in rows]
    print("\n| scaling exponent (time ~ n^a) | a | extrapolated to "
          f"{args.extrapolate:,} points (s) |\n|---|---:|---:|")
    single = [float(np.median(o["single"])) for o in rows]
    a = slope(ns, single)
    print(f"| single machine | {a:.2f} | {single[-1] * (args.extrapolate / ns[-1]) ** a:.3g} |")
    for ex in rows[-1]["runs"]:
        ts = [float(np.median(o["runs"][ex]["t"])) for o in rows]
        a = slope(ns, ts)
        print(f"| GreeDi, {ex} | {a:.2f} | {ts[-1] * (args.extrapolate / ns[-1]) ** a:.3g} |")
    last = rows[-1]["runs"]
    for ex, run in last.items():
        res = run["res"]
        print(f"\nGreeDi ({ex}, n = {rows[-1]['n']:,}): guarantee ratio {res.ratio:.4f}, "
              f"worst-case bound {res.worst_case_bound:,.0f}, merge bound "
              f"{res.merge_bound:,.0f} (best k among the candidates), shard bounds "
              f"{', '.join(f'{b:,.0f}' for b in res.shard_bounds)} (own points only)")


if __name__ == "__main__":
    main()
