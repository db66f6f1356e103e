"""Benchmark: ``pruneopt nm`` on a synthetic LLM checkpoint far larger than its memory budget.

    python benchmarks/checkpoint_stream.py                      # 8 GB, in process + 2 workers
    python benchmarks/checkpoint_stream.py --size-gb 0.5 --runs inprocess   # a quick look

Writes a sharded safetensors checkpoint (``--shard-gb`` per shard, plus
``model.safetensors.index.json``) of random float16 matrices of Llama-7B shapes -- per
layer q/k/v/o 4096x4096, gate/up 11008x4096, down 4096x11008 -- into a temporary folder
under ``--tmp`` (deleted afterwards, outputs too; each shard is built in this process's
memory, then written whole), until ``--size-gb`` GB of weights, then
runs ``python -m pruneopt nm CKPT -o OUT`` (transposable 2:4, the default solver) in a
subprocess, as a user would, once per ``--runs`` entry: ``inprocess`` (the default path) and
``processes`` (``--executor processes --workers W``) and ``ray`` (``--executor ray
--workers W``: a local Ray cluster started by the command, its start-up included). For
each run: wall time, peak resident memory -- of the largest process (``ru_maxrss`` of the
waited-for children, read in a wrapper process per run) and of the whole process tree (the
sum of ``VmRSS`` over the child and its descendants, sampled every 0.2 s from ``/proc``) --
and the sum of the per-tensor solve
seconds from the report. The floor is one copy of the checkpoint's shards
(``shutil.copyfile``, then ``os.sync``): no run that reads and writes every weight beats it.
Ratios are to the in-process run of the same invocation. Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common  # puts this checkout first on sys.path
import torch
from safetensors.torch import save

from pruneopt.adapters.streaming import INDEX_NAME, TensorInfo

LAYER = (("self_attn.q_proj", 4096, 4096), ("self_attn.k_proj", 4096, 4096),
         ("self_attn.v_proj", 4096, 4096), ("self_attn.o_proj", 4096, 4096),
         ("mlp.gate_proj", 11008, 4096), ("mlp.up_proj", 11008, 4096),
         ("mlp.down_proj", 4096, 11008))

WRAP = """import json, resource, subprocess, sys
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps({"rc": rc, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def tensors(size_bytes: int) -> list[tuple[str, tuple[int, int]]]:
    """Names and shapes of whole layers until ``size_bytes`` of float16 weights."""
    out, used, layer = [], 0, 0
    while used < size_bytes:
        for name, r, c in LAYER:
            out.append((f"model.layers.{layer}.{name}.weight", (r, c)))
            used += 2 * r * c
        layer += 1
    return out


def write_checkpoint(folder: Path, size_gb: float, shard_gb: float, seed: int) -> int:
    """The synthetic sharded checkpoint; returns its bytes of weights."""
    g = torch.Generator().manual_seed(seed)
    shards: list[list[TensorInfo]] = [[]]
    used = 0
    for name, shape in tensors(int(size_gb * 1e9)):
        nbytes = 2 * shape[0] * shape[1]
        if shards[-1] and used + nbytes > shard_gb * 1e9:
            shards.append([])
            used = 0
        shards[-1].append(TensorInfo(name, "", "F16", shape, nbytes))
        used += nbytes
    weight_map, total = {}, 0
    for i, infos in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        part = {t.name: torch.randn(t.shape, generator=g).half() for t in infos}
        _common.write_bytes(folder / fname, save(part, metadata={"format": "pt"}))
        del part
        weight_map.update({t.name: fname for t in infos})
        total += sum(t.nbytes for t in infos)
    _common.write_text(folder / INDEX_NAME, json.dumps({"metadata": {"total_size": total},
                                                        "weight_map": weight_map}))
    return total


def tree_rss_kb(pid: int) -> int:
    """Sum of VmRSS (kB) of ``pid`` and its descendants (0 for vanished processes)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def run(cmd: list[str]) -> dict:
    """Wall seconds, largest-process and whole-tree peak RSS (GB) of ``cmd``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WRAP, *cmd], stdout=subprocess.PIPE,
                            text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_kb(proc.pid))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    th.join()
    res = json.loads(out.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {res['rc']}")
    return {"wall": wall, "maxrss": res["maxrss_kb"] / 1e6, "tree": peak[0] / 1e6}


def copy_floor(src: Path, dst: Path) -> float:
    """Seconds to copy every shard from ``src`` to ``dst`` (``shutil.copyfile``: the kernel's
    copy, no Python buffers), then ``os.sync``: the bytes read and written, nothing else."""
    dst.mkdir()
    t0 = time.perf_counter()
    for p in sorted(src.glob("*.safetensors")):
        shutil.copyfile(p, dst / p.name)
    os.sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gb", type=float, default=8.0)
    ap.add_argument("--shard-gb", type=float, default=2.0)
    ap.add_argument("--runs", nargs="+", default=["inprocess", "processes"],
                    choices=["inprocess", "processes", "ray"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"# `pruneopt nm` on a synthetic {args.size_gb:g} GB checkpoint\n")
    print(f"Machine: {_common.machine()}\n")
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="pruneopt-stream-") as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "ckpt"
        ckpt.mkdir()
        t0 = time.perf_counter()
        total = write_checkpoint(ckpt, args.size_gb, args.shard_gb, args.seed)
        n_t = len(json.loads((ckpt / INDEX_NAME).read_text())["weight_map"])
        n_s = len(list(ckpt.glob("*.safetensors")))
        print(f"Checkpoint: {total / 1e9:.2f} GB of float16 weights, {n_t} matrices "
              f"(4096x4096, 11008x4096, 4096x11008) in {n_s} shards, written in "
              f"{time.perf_counter() - t0:.0f} s.\n")
        floor = copy_floor(ckpt, tmp / "copy")
        shutil.rmtree(tmp / "copy")
        rows, base = [], None
        for kind in args.runs:
            out = tmp / f"out-{kind}"
            cmd = [sys.executable, "-m", "pruneopt", "nm", str(ckpt), "-o", str(out),
                   "--no-progress"]
            if kind != "inprocess":
                cmd += ["--executor", kind, "--workers", str(args.workers)]
            r = run(cmd)
            rep = json.loads(Path(str(out) + ".json").read_text())
            r["solve"] = rep["summary"]["seconds"]
            r["masked"] = rep["summary"]["masked"]
            shutil.rmtree(out)
            base = base or r
            label = "in process" if kind == "inprocess" else \
                f"--executor {kind} --workers {args.workers}"
            rows.append(f"| {label} | {r['masked']} | {r['wall']:.0f} | "
                        f"{base['wall'] / r['wall']:.2f}x | {r['wall'] / floor:.1f}x | "
                        f"{r['solve']:.0f} | {r['maxrss']:.2f} | {r['tree']:.2f} |")
    print(f"Floor (a copy of the {total / 1e9:.2f} GB): {floor:.0f} s.\n")
    print("| run | tensors | wall s | speedup vs in process | wall / copy floor | "
          "solve s (sum over tensors) | peak RSS, largest process GB | "
          "peak RSS, process tree GB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for line in rows:
        print(line)


if __name__ == "__main__":
    main()
