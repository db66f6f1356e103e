"""Benchmark: the ``ortools`` N:M solver of a checkout against plain OR-Tools, as a ratio.

    python benchmarks/nm_ortools_vs_plain.py                  # this checkout
    git archive 290e035 | tar -x -C /tmp/old && \\
        python benchmarks/nm_ortools_vs_plain.py --root /tmp/old   # an older version

Times ``pruneopt.solve(TransposableNM(s, n, m, exactly), solver="ortools")`` of the pruneopt
found at ``--root`` (the checkout of this script by default) and the plain one-graph
OR-Tools call of ``nm_masks.py`` (``ortools_one_graph``), in turn, ``--repeats`` times in one
process, and prints the median [min, max] of the per-repeat ratio. Scores ``|N(0, 1)|``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(HERE.parent), help="checkout whose pruneopt to time")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--nm", nargs="+", default=["2:4", "4:8", "8:16", "16:32"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root = str(Path(args.root).resolve())
    sys.path.insert(0, root)  # before anything imports pruneopt
    import numpy as np

    import pruneopt
    from pruneopt.formulations import TransposableNM

    if not pruneopt.__file__.startswith(root):
        ap.error(f"pruneopt was imported from {pruneopt.__file__}, not from --root {root}")
    # the plain call, from this script's folder (not from --root)
    src = (HERE / "nm_masks.py").read_text()
    ns: dict = {"np": np}
    exec(src[src.index("COST_SCALE = "):src.index("def ortools_small_graphs")], ns)
    plain = ns["ortools_one_graph"]
    s = np.abs(np.random.default_rng(args.seed).standard_normal((args.size, args.size)))
    print(f"pruneopt from {pruneopt.__file__}; {args.size}^2, {args.repeats} repeats\n")
    print("| n:m | mode | ortools / plain: median [min, max] | ortools s | plain s |")
    print("|---|---|---|---:|---:|")
    for nm in args.nm:
        n, m = map(int, nm.split(":"))
        for exactly in (False, True):
            pruneopt.solve(TransposableNM(s[: 4 * m, : 4 * m], n, m, exactly=exactly),
                           solver="ortools")  # warm-up
            r, tw, tp = [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                plain(s, n, m, exactly)
                tp.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                sol = pruneopt.solve(TransposableNM(s, n, m, exactly=exactly), solver="ortools")
                tw.append(time.perf_counter() - t0)
                assert sol.status == "optimal", sol.status
                r.append(tw[-1] / tp[-1])
            print(f"| {nm} | {'exactly' if exactly else 'at most'} | {np.median(r):.2f}x "
                  f"[{min(r):.2f}, {max(r):.2f}] | {np.median(tw):.3f} | {np.median(tp):.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
