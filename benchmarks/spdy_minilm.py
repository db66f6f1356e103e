"""SPDY on the real all-MiniLM-L6-v2: measured speedup and embedding quality vs uniform pruning.

Steps: calibration = the first ``--calib`` standard-library sentences (one batch); held-out =
the next ``--heldout`` sentences. Build the timing database (structured levels of every
attention and FFN unit, medians of ``--repeats`` on this CPU, 1 torch thread) and the error
database; then for every speedup target run SPDY (coefficient search + exact DP, applied to a
copy, end-to-end speedup measured on the calibration batch, levels re-solved until the
measured speedup meets the target) and uniform pruning (the same fraction of heads and
neurons removed in every block, measured end to end at fractions 0.05..0.75; the smallest
fraction whose measured speedup, smoothed by an isotonic fit, reaches the SPDY model's
*measured* speedup). Reports the cosine similarity of the held-out sentence embeddings to the dense
model's. Prints markdown tables; ``--table FILE`` / ``--out FILE`` also write the measured
table and the results as JSON, to new files only (never over an input or a committed file
such as ``benchmarks/spdy_minilm_table.json`` and ``benchmarks/spdy_minilm_results.json``,
which came from the run in the README).

Run:  nice python benchmarks/spdy_minilm.py [--targets 1.25,1.5,2] [--quick] [--out r.json]
      nice python benchmarks/spdy_minilm.py --reconstruct-from benchmarks/spdy_minilm_results.json
          [--out r_recon.json]    (reads RESULTS, prints; writes the results with the
                                   reconstructed cosines only to a new --out)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common
import torch

from pruneopt.adapters import spdy
from pruneopt.adapters.models import load_minilm, stdlib_sentences


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="1.25,1.5,2")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--random-starts", type=int, default=16)
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    ap.add_argument("--table", help="also write the measured SPDY table to this new JSON file")
    ap.add_argument("-o", "--out", help="also write the results to this new JSON file")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--reconstruct-from", metavar="RESULTS",
                    help="instead of a new run: take the pruned shapes in RESULTS (a results "
                         "JSON of this script) and report the held-out cosine after layer-wise "
                         "reconstruction (spdy.reconstruct) of SPDY and uniform models")
    ap.add_argument("--recon-sentences", type=int, default=128)
    ap.add_argument("--ridge", type=float, default=0.1)
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--table": args.table, "--out": args.out},
                             inputs=[args.reconstruct_from])
    if args.reconstruct_from:
        return reconstruct_report(args)
    if args.quick:
        args.calib, args.heldout, args.repeats = 8, 16, 2
        args.random_starts, args.steps = 2, 2
    torch.manual_seed(args.seed)
    t_start = time.time()
    model = load_minilm()
    sents = stdlib_sentences(args.calib + args.heldout)
    calib = spdy.make_batches(model, sents[: args.calib], batch_size=args.calib)
    held = spdy.make_batches(model, sents[args.calib:], batch_size=64)
    ref = spdy.embed(model, held)
    table = spdy.timing_database(model, calib, repeats=args.repeats, progress=args.progress)
    spdy.error_database(model, table, calib, progress=args.progress)
    table.meta["calibration_sentences"] = args.calib
    table.meta["calibration_tokens"] = int(calib[0]["attention_mask"].sum())
    if args.table:
        table.save(args.table)
    rows, results = [], {"targets": [], "table": args.table,
                         "dense_time": table.dense_time, "base_time": table.base_time,
                         "csr": spdy.csr_linear_timing(repeats=max(3, args.repeats))}
    curve = spdy.uniform_curve(model, calib, repeats=args.repeats, progress=args.progress)
    units = spdy.units_of(model)
    for row in curve:
        upr = spdy.prune_units(model, units, spdy.uniform_removed(units, row["fraction"]))
        row["heldout_cosine"] = spdy.cosine_to(ref, spdy.embed(upr, held))
    results["uniform_curve"] = curve
    for target in (float(t) for t in args.targets.split(",")):
        pruned, rep = spdy.spdy_prune(model, table, target, calib, seed=args.seed,
                                      random_starts=args.random_starts, steps=args.steps,
                                      repeats=args.repeats, progress=args.progress)
        cos_spdy = spdy.cosine_to(ref, spdy.embed(pruned, held))
        # uniform at the same measured speedup: the smallest fraction whose (isotonic-fitted)
        # measured speedup reaches SPDY's measured speedup
        ok = [r for r in curve if r["speedup_fit"] >= rep["measured_speedup"]]
        uni = ok[0] if ok else curve[-1]
        below = [r for r in curve if r["speedup_fit"] < rep["measured_speedup"]]
        uni_lo = below[-1] if below else None  # the next smaller fraction: brackets uniform
        rep.update({"heldout_cosine": cos_spdy, "uniform": uni, "uniform_below": uni_lo})
        results["targets"].append(rep)
        rows.append((target, rep["measured_speedup"], rep["met"], len(rep["rounds"]), cos_spdy,
                     uni["fraction"], uni["speedup"], uni["speedup_fit"], uni["heldout_cosine"],
                     uni_lo, rep["removed"]))
    results["seconds"] = time.time() - t_start
    if args.out:
        _common.write_text(args.out, json.dumps(results, indent=1))
    print(f"all-MiniLM-L6-v2, calibration {args.calib} sentences "
          f"({table.meta['calibration_tokens']} tokens), held-out {args.heldout}; dense "
          f"{table.dense_time * 1000:.0f} ms per calibration batch, 1 thread\n")
    print("| target | SPDY measured speedup | met | rounds | SPDY held-out cos | uniform fraction "
          "| uniform measured (fit) speedup | uniform held-out cos | (next smaller fraction: "
          "fit speedup, cos) | SPDY removed (heads/neurons per block) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---|---|")
    for t, ms, met, nr, cs, uf, um, uft, cu, lo, rem in rows:
        los = "-" if lo is None else f"{lo['speedup_fit']:.3f}x, {lo['heldout_cosine']:.4f}"
        pairs = ", ".join(f"{rem[i]}/{rem[i + 1]}" for i in range(0, len(rem), 2))
        print(f"| {t:g}x | {ms:.3f}x | {'yes' if met else 'no'} | {nr} | {cs:.4f} | {uf:.2f} | "
              f"{um:.3f}x ({uft:.3f}x) | {cu:.4f} | {los} | {pairs} |")
    print("\nUniform pruning (same fraction of heads and neurons in every block):\n")
    print("| fraction | measured speedup | isotonic fit | held-out cos |\n|---:|---:|---:|---:|")
    for r in curve:
        print(f"| {r['fraction']:.2f} | {r['speedup']:.3f}x | {r['speedup_fit']:.3f}x | "
              f"{r['heldout_cosine']:.4f} |")
    print("\nUnstructured sparsity, one 384x1536 linear layer on 1024 tokens, torch CSR vs dense:")
    print("\n| sparsity | dense ms | CSR ms | CSR speedup |\n|---:|---:|---:|---:|")
    for r in results["csr"]:
        print(f"| {r['sparsity']:.2f} | {r['dense_seconds'] * 1e3:.2f} | "
              f"{r['csr_seconds'] * 1e3:.2f} | {r['speedup']:.2f}x |")


def reconstruct_report(args) -> None:
    """Held-out cosine of the saved SPDY/uniform shapes, before and after reconstruction.

    Reconstruction data: the ``--recon-sentences`` sentences after the calibration and
    held-out ones (disjoint from both). Shapes, hence measured speedups, are unchanged."""
    res = json.loads(Path(args.reconstruct_from).read_text())
    model = load_minilm()
    n0 = args.calib + args.heldout
    sents = stdlib_sentences(n0 + args.recon_sentences)
    held = spdy.make_batches(model, sents[args.calib:n0], batch_size=64)
    recon = spdy.make_batches(model, sents[n0:], batch_size=64)
    ref = spdy.embed(model, held)
    units = spdy.units_of(model)

    def both(removed):
        pr = spdy.prune_units(model, units, removed)
        rc = spdy.reconstruct(pr, model, recon, ridge=args.ridge)
        return spdy.cosine_to(ref, spdy.embed(pr, held)), spdy.cosine_to(ref, spdy.embed(rc, held))

    rows = []
    for t in res["targets"]:
        s0, s1 = both(t["removed"])
        u = t["uniform"]
        u0, u1 = both(spdy.uniform_removed(units, u["fraction"]))
        lo = t.get("uniform_below")
        lo1 = both(spdy.uniform_removed(units, lo["fraction"]))[1] if lo else None
        t["reconstructed"] = {"ridge": args.ridge, "spdy": s1, "uniform": u1,
                              "uniform_below": lo1}
        rows.append((t["target"], t["measured_speedup"], s0, s1, u["fraction"], u0, u1, lo1))
    if args.out:
        _common.write_text(args.out, json.dumps(res, indent=1))
    print(f"Layer-wise reconstruction (ridge {args.ridge:g}, {args.recon_sentences} further "
          f"sentences); held-out cosine to dense, before -> after:\n")
    print("| target | SPDY measured speedup | SPDY | SPDY reconstructed | uniform fraction | "
          "uniform | uniform reconstructed | (next smaller fraction, reconstructed) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t, ms, s0, s1, uf, u0, u1, lo1 in rows:
        los = "-" if lo1 is None else f"{lo1:.4f}"
        print(f"| {t:g}x | {ms:.3f}x | {s0:.4f} | {s1:.4f} | {uf:.2f} | {u0:.4f} | {u1:.4f} "
              f"| {los} |")


if __name__ == "__main__":
    main()
