"""Benchmark: the joint choice of pattern per unit on all-MiniLM-L6-v2, against single patterns.

Calibration = the first ``--calib`` standard-library sentences (one batch), held-out = the
next ``--heldout`` (as ``benchmarks/spdy_minilm.py``). For each ``--modes`` (``inference``:
forward; ``training``: forward + backward) the joint table of the 12 units (every block's
attention and FFN; levels dense, widths 25/50/75%, 2:4, 4:8, transposable 2:4 / 4:8, and in
inference unstructured 90/95% with the CSR kernel) is measured on this CPU
(:func:`~pruneopt.adapters.joint_patterns.joint_table`, medians of ``--repeats``, 1 thread).

Hardware (the timing table the budget is measured in):

- ``gpu-synthetic`` (SYNTHETIC, no GPU here): dense and width times as measured on this CPU;
  N:M GEMMs ``--gemm-speedup`` times faster than dense (default 2:4 and t2:4 at 1.6x, the
  ~1.5-1.7x of NVIDIA's sparse tensor cores on large GEMMs; 4:8 at 1.0x: no production
  kernel), through the time model of :func:`~pruneopt.adapters.joint_patterns.modelled_nm_times`
  (training: plain N:M speeds up only the forward GEMM, transposable N:M also the input
  gradient); unstructured at the dense time. The table goes through a CSV file and
  ``read_timing_rows`` (the import a user with a real GPU table would use).
- ``cpu`` (inference only): the measured CPU table itself (N:M at the dense time: it can
  only cost error here, so it is never chosen; CSR where it wins).

For every target ``--targets`` the exact choice (``pruneopt.solve``, ``dp``) over all levels
("joint") and over dense plus one family (widths, 2:4, ...) at the same budget; per row the
predicted speedup, the patterns used, the predicted error (the sum of the units' errors,
what the choice minimises), and the embedding cosine to the dense model on the
calibration and held-out sentences (the choice applied to a copy; N:M and unstructured as
zeroed weights). Predicted speedups only: N:M cannot be measured on this CPU.

Run:  nice python benchmarks/joint_patterns.py [--targets 1.15,1.3,1.5] [--modes inference,training]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import _common
import torch

from pruneopt.adapters import joint_patterns as jp
from pruneopt.adapters.calibration import cosine_to, embed, make_batches
from pruneopt.adapters.models import load_minilm, stdlib_sentences
from pruneopt.adapters.timing_tables import TimingTable, read_timing_rows


def write_rows(table: TimingTable, path: Path) -> None:
    """``table``'s times as the CSV rows format of ``read_timing_rows``."""
    lines = ["# synthetic GPU timing table (see benchmarks/joint_patterns.py)",
             f"# dense_time = {table.dense_time!r}", f"# base_time = {table.base_time!r}",
             "layer,pattern,sparsity,seconds"]
    for n, ps, ss, ts in zip(table.names, table.patterns, table.sparsities, table.times,
                             strict=True):
        lines += [f"{n},{p},{s!r},{t!r}" for p, s, t in zip(ps, ss.tolist(), ts.tolist(),
                                                            strict=True)]
    _common.write_text(path, "\n".join(lines) + "\n")


def used(table: TimingTable, lv) -> str:
    c = Counter(table.patterns[i][k] for i, k in enumerate(lv))
    return ", ".join(f"{p} {n}" for p, n in sorted(c.items(), key=lambda x: -x[1]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="1.15,1.3,1.5")
    ap.add_argument("--modes", default="inference,training")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--heldout", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--gemm-speedup", default="2:4=1.6,t2:4=1.6,4:8=1.0,t4:8=1.0",
                    help="N:M GEMM speedups of the synthetic GPU table")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    ap.add_argument("--save-tables", default=None, metavar="DIR",
                    help="also save the measured CPU tables (JSON) into this new folder")
    args = ap.parse_args(argv)
    _common.refuse_overwrite(ap.error, {"--out": args.out})
    if args.save_tables and Path(args.save_tables).exists():
        ap.error(f"--save-tables {args.save_tables} exists; give a new folder")
    speed = {k: float(v) for k, v in (x.split("=") for x in args.gemm_speedup.split(","))}
    targets = [float(x) for x in args.targets.split(",")]
    torch.manual_seed(0)
    t_start = time.time()
    model = load_minilm()
    sents = stdlib_sentences(args.calib + args.heldout)
    calib = make_batches(model, sents[: args.calib], batch_size=args.calib)
    held = make_batches(model, sents[args.calib:], batch_size=64)
    ref_c, ref_h = embed(model, calib), embed(model, held)
    out = [f"all-MiniLM-L6-v2, calibration {args.calib} sentences, held-out {args.heldout}; "
           f"synthetic GPU N:M GEMM speedups {speed}. {_common.machine()}", "",
           "| mode | hardware | target | choice | predicted speedup | levels used | "
           "predicted error | calib cos | held-out cos |", "|---|---|---|---|---|---|---|---|---|"]
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            cpu = jp.joint_table(model, calib, mode=mode, repeats=args.repeats,
                                 progress=args.progress)
            if args.save_tables:
                Path(args.save_tables).mkdir(parents=True, exist_ok=True)
                cpu.save(Path(args.save_tables) / f"cpu_{mode}.json")
            csv = Path(tmp) / f"gpu_{mode}.csv"
            write_rows(jp.modelled_nm_times(cpu, speed), csv)
            gpu = jp.with_times(cpu, read_timing_rows(csv, same_levels=False))
            notes.append(f"{mode}: dense {cpu.dense_time * 1e3:.1f} ms per calibration batch, "
                         f"outside the units {cpu.base_time * 1e3:.1f} ms; max speedup "
                         f"{gpu.max_speedup():.2f}x (gpu-synthetic), {cpu.max_speedup():.2f}x "
                         "(cpu)")
            hws = [("gpu-synthetic", gpu)] + ([("cpu", cpu)] if mode == "inference" else [])
            for hw, table in hws:
                fams, idle = ["joint"], []
                for f in jp.FAMILIES:
                    if not any(p in jp.FAMILIES[f] for ps in table.patterns for p in ps):
                        continue
                    top = jp.restrict(table, jp.FAMILIES[f])[0].max_speedup()
                    (fams if top > 1.0 + 1e-6 else idle).append(f)
                if idle:
                    notes.append(f"{mode}, {hw}: {', '.join(idle)} save no time on this "
                                 "table (no kernel): not shown")
                for tg in targets:
                    for fam in fams:
                        pats = None if fam == "joint" else jp.FAMILIES[fam]
                        try:
                            lv, sol = jp.choose(table, tg, patterns=pats)
                        except ValueError as exc:
                            if "out of reach" not in str(exc):
                                raise
                            top = jp.restrict(table, pats)[0].max_speedup()
                            out.append(f"| {mode} | {hw} | {tg:g} | {fam} | out of reach (max "
                                       f"{top:.2f}x) | | | | |")
                            continue
                        pm = jp.apply_levels(model, table, lv)
                        cc = cosine_to(ref_c, embed(pm, calib))
                        ch = cosine_to(ref_h, embed(pm, held))
                        name = f"**{fam}**" if fam == "joint" else fam
                        out.append(f"| {mode} | {hw} | {tg:g} | {name} ({sol.status}) | "
                                   f"{table.predicted_speedup(lv):.3f}x | {used(table, lv)} | "
                                   f"{sol.objective:.4f} | {cc:.4f} | {ch:.4f} |")
    out += [""] + [f"- {n}" for n in notes] + [f"- total {time.time() - t_start:.0f} s"]
    text = "\n".join(out)
    print(text)
    if args.out:
        _common.write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
