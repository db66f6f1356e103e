"""Benchmark: transposable N:M mask solvers against plain OR-Tools, in the same run, as ratios.

    python benchmarks/nm_masks.py                       # 1024^2; m = 4, 8, 16, 32; both modes
    python benchmarks/nm_masks.py --sizes 4096 --nm 4:8 8:16 --repeats 3
    python benchmarks/nm_masks.py --sizes 512 1024 2048 --nm 8:16 --repeats 3  # size exponent
    python benchmarks/nm_masks.py --compile             # numba: first call, cold and cached
    python benchmarks/nm_masks.py --references          # + highs, scipy, pyomo, networkx
    python benchmarks/nm_masks.py --chunks              # OR-Tools time against graph size

Scores ``s = |W|`` for W with i.i.d. standard normal entries (``--seed``), for each n:m
"at most n" (the default of :class:`TransposableNM`) and ``exactly=True``. Peers, each timed
from the score matrix to the mask, all in one process, in turn within each repeat:

- ``floor``: ``np.abs(W).sum()``, one read of the matrix (no mask solver can beat it);
- ``ortools plain``: OR-Tools' ``SimpleMinCostFlow`` called directly as a user would, one
  graph holding every block (source -> row capacity n, row -> column capacity 1 and cost
  ``-rint(s * 1e6)``, column -> sink capacity n; "at most" adds a source -> sink arc for the
  unkept slots), vectorized ``add_arcs_with_capacity_and_unit_cost``, ``set_nodes_supplies``,
  ``solve``, ``flows``;
- ``ortools plain, small graphs``: the same direct calls with the graph layout of the
  ``ortools`` solver (a source and sink per block for "at most", none for exactly) on
  graphs of ``ORTOOLS_CHUNK_ELEMS`` block entries: the best we know how to get from
  OR-Tools, without the certificate;
- the pruneopt solvers through ``pruneopt.solve`` (building the problem included): the
  default (``enumerate`` for m <= 4, else ``flow``), ``flow``, ``ortools`` (the wrapper: the
  same OR-Tools graphs plus the float certificate behind its "optimal"), ``greedy``, and
  ``entropic`` if that solver is registered.

Times: median and range over ``--repeats``; ratios are taken within a repeat (same load)
and their median is reported. With several m (or sizes) the script fits the scaling
exponent of each peer's median time: ``t ~ m^a`` at a fixed matrix size, ``t ~ entries^b``
at a fixed m (least squares on the logs). ``--compile`` times, in fresh processes, the
first ``flow`` and ``greedy`` solve with an empty numba cache (compilation) and with the
cache filled (loading), against the second solve in the same process. Kept score is over
the exact optimum (``flow``'s answer, proven optimal); the default's peak memory is the
tracemalloc peak of one more run (NumPy memory, the input and output included).
``--references`` adds the slow exact solvers once each, on the first block rows only,
their time scaled to the whole matrix (marked ~).
Prints markdown; ``--out FILE`` also writes it to a new file (never over a committed one).
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc

import _common
import numpy as np

import pruneopt
from pruneopt.formulations import TransposableNM
from pruneopt.solvers.nm_flow import ORTOOLS_CHUNK_ELEMS

# largest number of blocks each reference solver is run on in full; beyond it, a slice
FULL_LIMIT = {"networkx": 2048, "pyomo": 2048, "highs": 8192, "scipy": 8192}
REFERENCES = ("highs", "scipy", "pyomo", "networkx")
COST_SCALE = 1e6  # integer costs rint(s * 1e6), as a user would write them


def blocks_of(s: np.ndarray, m: int) -> np.ndarray:
    """(R, C) -> (R/m * C/m, m, m) blocks."""
    R, C = s.shape
    return s.reshape(R // m, m, C // m, m).transpose(0, 2, 1, 3).reshape(-1, m, m)


def unblock(x: np.ndarray, shape: tuple[int, int], m: int) -> np.ndarray:
    R, C = shape
    return x.reshape(R // m, C // m, m, m).transpose(0, 2, 1, 3).reshape(R, C)


def _mcf(tail, head, cap, cost, supplies, k):
    """Plain SimpleMinCostFlow; the flows of the first ``k`` arcs."""
    from ortools.graph.python import min_cost_flow

    smcf = min_cost_flow.SimpleMinCostFlow()
    arcs = smcf.add_arcs_with_capacity_and_unit_cost(tail, head, cap, cost)
    smcf.set_nodes_supplies(np.arange(supplies.size), supplies)
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise RuntimeError(f"OR-Tools: {status}")
    return smcf.flows(arcs[:k])


def ortools_one_graph(s: np.ndarray, n: int, m: int, exactly: bool) -> np.ndarray:
    """The textbook graph, one for every block: source 0, sink 1, rows, columns."""
    b = blocks_of(s, m)
    nb = b.shape[0]
    r = nb * m
    rows = 2 + np.arange(r)
    cols = 2 + r + np.arange(r).reshape(nb, m)
    tail = [np.repeat(rows, m), np.zeros(r, np.int64), cols.ravel()]
    head = [np.broadcast_to(cols[:, None, :], (nb, m, m)).ravel(), rows, np.ones(r, np.int64)]
    cap = [np.ones(r * m, np.int64), np.full(2 * r, n)]
    cost = [-np.rint(b * COST_SCALE).astype(np.int64).ravel(), np.zeros(2 * r, np.int64)]
    if not exactly:  # the unkept slots go straight from source to sink
        tail.append([0])
        head.append([1])
        cap.append([n * r])
        cost.append([0])
    supplies = np.zeros(2 + 2 * r, np.int64)
    supplies[0], supplies[1] = n * r, -n * r
    flows = _mcf(*(np.concatenate(a).astype(np.int64) for a in (tail, head, cap, cost)),
                 supplies, r * m)
    x = flows.reshape(nb, m, m) > 0
    return unblock(x, s.shape, m)


def ortools_small_graphs(s: np.ndarray, n: int, m: int, exactly: bool,
                         elems: int = ORTOOLS_CHUNK_ELEMS) -> np.ndarray:
    """The same direct calls on graphs of ``elems`` block entries, terminals per block."""
    b = blocks_of(s, m)
    x = np.empty(b.shape, dtype=bool)
    step = max(1, elems // (m * m))
    topo = {}
    for lo in range(0, b.shape[0], step):
        w = b[lo: lo + step]
        nb = w.shape[0]
        if nb not in topo:
            r = nb * m
            rows = np.arange(r)
            cols = r + np.arange(r).reshape(nb, m)
            tail = [np.repeat(rows, m)]
            head = [np.broadcast_to(cols[:, None, :], (nb, m, m)).ravel()]
            cap = [np.ones(r * m, np.int64)]
            if exactly:  # rows supply n, columns take n
                supplies = np.concatenate([np.full(r, n), np.full(r, -n)]).astype(np.int64)
            else:  # block b: source 2r + b, sink 2r + nb + b
                src = 2 * r + np.arange(nb)
                tail += [np.repeat(src, m), cols.ravel(), src]
                head += [rows, np.repeat(src + nb, m), src + nb]
                cap += [np.full(2 * r, n), np.full(nb, n * m)]
                supplies = np.zeros(2 * r + 2 * nb, np.int64)
                supplies[src], supplies[src + nb] = n * m, -n * m
            t, h, c = (np.concatenate(a).astype(np.int64) for a in (tail, head, cap))
            topo[nb] = (t, h, c, supplies)
        t, h, c, supplies = topo[nb]
        cost = np.zeros(t.size, np.int64)
        cost[: w.size] = -np.rint(w * COST_SCALE).astype(np.int64).ravel()
        x[lo: lo + nb] = _mcf(t, h, c, cost, supplies, w.size).reshape(w.shape) > 0
    return unblock(x, s.shape, m)


timed, fmt_r = _common.timed, _common.fmt_ratio


def fmt_t(v: list[float]) -> str:
    return _common.fmt_seconds(v, 5)


def bench_case(out, s, n, m, exactly, repeats, references):
    """One (matrix, n:m, mode): every peer ``repeats`` times in turn."""
    size = s.shape[0]
    probe = TransposableNM(s[:m, :m], n, m, exactly=exactly)
    default = pruneopt.solvers.get_solver(probe, None).name
    names = [default, "flow", "ortools", "greedy"]
    if "entropic" in pruneopt.available(probe):
        names.append("entropic")
    pruneopt_solvers = list(dict.fromkeys(names))
    peers = {"floor": lambda: np.abs(s).sum(),
             "ortools plain": lambda: ortools_one_graph(s, n, m, exactly),
             "ortools plain, small graphs": lambda: ortools_small_graphs(s, n, m, exactly)}
    for name in pruneopt_solvers:
        peers[name] = (lambda name=name: pruneopt.solve(
            TransposableNM(s, n, m, exactly=exactly), solver=name))
    times = {k: [] for k in peers}
    answers = {}
    small = s[: 4 * m, : 4 * m]  # warm-up (imports, first calls), not timed
    ortools_one_graph(small, n, m, exactly)
    for name in pruneopt_solvers:
        pruneopt.solve(TransposableNM(small, n, m, exactly=exactly), solver=name)
    for _ in range(repeats):
        for k, f in peers.items():
            t, a = timed(f)
            times[k].append(t)
            answers.setdefault(k, a)
    tracemalloc.start()  # one more, untimed run of the default: its peak of NumPy memory
    pruneopt.solve(TransposableNM(s, n, m, exactly=exactly), solver=default)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    problem = TransposableNM(s, n, m, exactly=exactly)
    opt_sol = answers["flow"]
    assert opt_sol.status == "optimal"
    opt = opt_sol.objective
    base = times["ortools plain"]
    mode = "exactly" if exactly else "at most"
    kept_of = {}
    for k in peers:
        a = answers[k]
        if k == "floor":
            kept, status = "-", "-"
        elif isinstance(a, np.ndarray):
            problem.check(a)
            kept, status = f"{problem.objective(a) / opt:.9f}", "(no proof)"
        else:
            kept, status = f"{a.objective / opt:.9f}", a.status
            kept_of[k] = f"{100 * a.objective / opt:.2f} %"
        ratio = [t / b for t, b in zip(times[k], base, strict=True)]
        floor = [t / f for t, f in zip(times[k], times["floor"], strict=True)]
        note = f"default; peak {peak:.0f} MiB (tracemalloc)" if k == default else ""
        if k == "ortools":
            note = (f"certificate {a.info['check_seconds']:.3f} s, passed: "
                    f"{a.info['float_check_passed']}")
        out(f"| {size}^2 | {n}:{m} | {mode} | {k} | {fmt_t(times[k])} | {fmt_r(ratio)} | "
            f"{np.median(floor):.0f}x | {kept} | {status} | {note} |")
    if references:
        for name in REFERENCES:
            full = TransposableNM(s, n, m, exactly=exactly)
            if name not in pruneopt.available(full):
                continue
            limit = FULL_LIMIT[name]
            part, scaled = full, ""
            if full.num_blocks > limit:
                block_rows = max(1, limit // (size // m))
                part = TransposableNM(s[: block_rows * m], n, m, exactly=exactly)
                scaled = "~"
            t, sol = timed(lambda p=part, name=name: pruneopt.solve(p, solver=name))
            ref = pruneopt.solve(part, solver="flow").objective
            t *= full.num_blocks / part.num_blocks
            note = f"1 run on {part.num_blocks} blocks, time scaled" if scaled else "1 run"
            out(f"| {size}^2 | {n}:{m} | {mode} | {name} | {scaled}{t:.2f} | "
                f"{scaled}{t / np.median(base):.2f}x | {t / np.median(times['floor']):.0f}x | "
                f"{sol.objective / ref:.9f} | {sol.status} | {note} |")
    times["default"] = times[default]
    times["default_name"] = default
    return times, kept_of


def summarize(out, summary):
    """Per case, ratios taken within each repeat: median [min, max]."""
    def r(t, a, b):
        return fmt_r([x / y for x, y in zip(t[a], t[b], strict=True)])

    out("\nRatios of times within each repeat, median [min, max]; a speed-up of A vs B is "
        "B's time / A's time:\n")
    has_ent = any("entropic" in t for *_, t, _k in summary)
    out("| matrix | n:m | mode | default | speed-up of default vs ortools plain | vs plain, "
        "small graphs | vs ortools (wrapper) | speed-up of flow vs ortools plain | speed-up "
        "of greedy vs default (kept) | " + ("entropic vs default (kept) | " if has_ent else "")
        + "default / floor |")
    out("|---|---|---|---|---|---|---|---|---|" + ("---|" if has_ent else "") + "---|")
    for size, nm, mode, t, kept in summary:
        ent = ""
        if has_ent:
            ent = (f"{r(t, 'default', 'entropic')} ({kept['entropic']}) | " if "entropic" in t
                   else "- | ")
        out(f"| {size}^2 | {nm} | {mode} | {t['default_name']} | "
            f"{r(t, 'ortools plain', 'default')} | "
            f"{r(t, 'ortools plain, small graphs', 'default')} | {r(t, 'ortools', 'default')} | "
            f"{r(t, 'ortools plain', 'flow')} | {r(t, 'default', 'greedy')} "
            f"({kept['greedy']}) | {ent}{r(t, 'default', 'floor')} |")


EXPONENT_PEERS = ("floor", "ortools plain", "ortools plain, small graphs", "ortools", "flow",
                  "greedy", "entropic")


def exponents(out, summary):
    """Least-squares slopes of log(median time): against log m at each matrix size and
    mode, against log(entries) at each n:m and mode (where there are >= 2 points)."""
    def slope(xs, ys):
        return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])

    rows = []
    for key, xname in ((lambda c: (c[0], c[2]), "m"), (lambda c: (c[1], c[2]), "entries")):
        groups: dict = {}
        for case in summary:
            groups.setdefault(key(case), []).append(case)
        for k, cases in groups.items():
            if len(cases) < 2:
                continue
            xs = [int(c[1].split(":")[1]) if xname == "m" else c[0] ** 2 for c in cases]
            if len(set(xs)) < 2:
                continue
            cells = []
            for peer in EXPONENT_PEERS:
                if all(peer in c[3] for c in cases):
                    cells.append(f"{slope(xs, [np.median(c[3][peer]) for c in cases]):+.2f}")
                else:
                    cells.append("-")
            what = (f"{k[0]}^2, m = {', '.join(map(str, xs))}" if xname == "m"
                    else f"{k[0]}, sizes {', '.join(str(c[0]) for c in cases)}")
            rows.append(f"| time ~ {xname}^a | {what} | {k[1]} | " + " | ".join(cells) + " |")
    if rows:
        out("\nScaling exponents of the median times (least squares on the logs):\n")
        out("| fit | cases | mode | " + " | ".join(EXPONENT_PEERS) + " |")
        out("|---|---|---|" + "---:|" * len(EXPONENT_PEERS))
        for row in rows:
            out(row)


COMPILE_SNIPPET = """
import time, numpy as np
t0 = time.perf_counter()
import pruneopt
from pruneopt.formulations import TransposableNM
t1 = time.perf_counter()
s = np.abs(np.random.default_rng(0).standard_normal((64, 64)))
out = [t1 - t0]
for name in ("flow", "greedy"):
    for ex in (False, True):
        a = time.perf_counter()
        pruneopt.solve(TransposableNM(s, 4, 8, exactly=ex), solver=name)
        b = time.perf_counter()
        pruneopt.solve(TransposableNM(s, 4, 8, exactly=ex), solver=name)
        out += [b - a, time.perf_counter() - b]
print(" ".join(f"{v:.4f}" for v in out))
"""


def compile_study(out):
    """First-call cost of the numba kernels, in fresh processes: empty cache, then filled."""
    import subprocess
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(_common.ROOT))
    out("\nnumba kernels, first solve in a fresh process (64x64, 4:8; seconds):\n")
    out("| cache | import pruneopt | flow, at most: 1st / 2nd call | flow, exactly | greedy, "
        "at most | greedy, exactly |")
    out("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        for label in ("empty (compiles)", "filled (loads)"):
            r = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET], env=env, check=True,
                               capture_output=True, text=True, timeout=600, cwd=cache)
            v = [float(x) for x in r.stdout.split()]
            pairs = [f"{v[k]:.4f} / {v[k + 1]:.4f}" for k in range(1, 9, 2)]
            out(f"| {label} | {v[0]:.3f} | " + " | ".join(pairs) + " |")


def chunk_study(out, s, nm_list, repeats):
    """OR-Tools time (direct calls, layout of the solver) against the entries per graph."""
    out("\nOR-Tools alone against the size of each graph (direct calls, blocks split into "
        "graphs of 2^k entries, terminals per block; median seconds):\n")
    ks = [12, 14, 15, 16, 18, 20]
    out("| matrix | n:m | mode | one graph, shared terminals | "
        + " | ".join(f"2^{k}" for k in ks) + " |")
    out("|---|---|---|---:|" + "---:|" * len(ks))
    for nm in nm_list:
        n, m = map(int, nm.split(":"))
        for exactly in (False, True):
            t1 = [timed(lambda n=n, m=m, ex=exactly: ortools_one_graph(s, n, m, ex))[0]
                  for _ in range(repeats)]
            row = []
            for k in ks:
                row.append(np.median([timed(lambda k=k, n=n, m=m, ex=exactly: ortools_small_graphs(
                    s, n, m, ex, elems=1 << k))[0] for _ in range(repeats)]))
            out(f"| {s.shape[0]}^2 | {nm} | {'exactly' if exactly else 'at most'} | "
                f"{np.median(t1):.3f} | " + " | ".join(f"{v:.3f}" for v in row) + " |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024])
    ap.add_argument("--nm", nargs="+", default=["2:4", "4:8", "8:16", "16:32"])
    ap.add_argument("--modes", nargs="+", choices=["at-most", "exactly"],
                    default=["at-most", "exactly"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--references", action="store_true",
                    help="also highs, scipy, pyomo, networkx (once each, on a slice)")
    ap.add_argument("--chunks", action="store_true",
                    help="only: OR-Tools time against the entries per graph")
    ap.add_argument("--compile", action="store_true",
                    help="only: the numba kernels' first-call time, empty and filled cache")
    ap.add_argument("-o", "--out", help="also write the markdown to this new file")
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--out": args.out})
    out = _common.Tee()
    import ortools

    out(f"{_common.machine()}; numpy {np.__version__}, ortools {ortools.__version__}; "
        f"pruneopt from {pruneopt.__file__}; scores |N(0,1)|, seed {args.seed}; "
        f"{args.repeats} repeats")
    if args.compile:
        compile_study(out)
        out.save(args.out)
        return
    everything = []
    for size in args.sizes:
        w = np.random.default_rng(args.seed).standard_normal((size, size))
        s = np.abs(w)
        if args.chunks:
            chunk_study(out, s, args.nm, args.repeats)
            continue
        out("\n| matrix | n:m | mode | solver | seconds: median [min, max] | time / ortools "
            "plain: median [min, max] | time / floor | kept score / optimum | status | note |")
        out("|---|---|---|---|---|---|---:|---|---|---|")
        summary = []
        for nm in args.nm:
            n, m = map(int, nm.split(":"))
            for mode in args.modes:
                t, kept = bench_case(out, s, n, m, mode == "exactly", args.repeats,
                                     args.references)
                summary.append((size, nm, mode.replace("-", " "), t, kept))
        if summary:
            summarize(out, summary)
            everything.extend(summary)
    if len(everything) > 1:
        exponents(out, everything)
    if hasattr(os, "getloadavg"):
        out(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    out.save(args.out)


if __name__ == "__main__":
    main()
