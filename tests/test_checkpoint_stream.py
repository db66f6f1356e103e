"""``pruneopt nm`` on safetensors checkpoints read and written tensor by tensor
(:mod:`pruneopt.adapters.streaming`): the same masks as the in-memory path, a consistent
index, all-or-nothing output, and the bad inputs (missing / truncated shard, index naming
absent tensors) refused before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from net import free_port
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pruneopt.adapters.checkpoints import MaskJob, mask_checkpoint, mask_state_dict
from pruneopt.adapters.nm import is_nm, nm_mask
from pruneopt.adapters.streaming import (
    INDEX_NAME,
    StagedOutput,
    open_checkpoint,
    read_header,
    remove_stale_stages,
)
from pruneopt.cli import main


def llm_like(seed: int = 0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, dtype=torch.float16):
        return (scale * torch.randn(*shape, generator=g)).to(dtype)

    return {
        "model.embed_tokens.weight": r(32, 8),
        "model.layers.0.self_attn.q_proj.weight": r(8, 8),
        "model.layers.0.self_attn.q_proj.bias": r(8),
        "model.layers.0.mlp.up_proj.weight": r(24, 8),
        "model.layers.0.mlp.down_proj.weight": r(8, 24, dtype=torch.bfloat16),
        "model.layers.1.self_attn.q_proj.weight": r(8, 8, dtype=torch.float32),
        "model.layers.1.input_layernorm.weight": torch.ones(8),
        "model.layers.1.odd.weight": r(6, 8),  # rows not divisible by 4: skipped
        "lm_head.weight": r(32, 8),
    }


def write_sharded(sd: dict, folder: Path, shards: int = 2) -> Path:
    """``sd`` as ``shards`` safetensors files plus the index, in ``folder``."""
    folder.mkdir()
    names = list(sd)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: sd[k] for k in part}, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in part})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total},
                                                 "weight_map": weight_map}))
    return folder


def load_folder(folder: Path) -> dict[str, torch.Tensor]:
    index = json.loads((folder / INDEX_NAME).read_text())
    out = {}
    for shard in set(index["weight_map"].values()):
        out.update(load_file(str(folder / shard)))
    return out


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_sharded_round_trip_matches_the_in_memory_path(tmp_path):
    sd = llm_like()
    src = write_sharded(sd, tmp_path / "ckpt", shards=3)
    before = digest(src)
    out = tmp_path / "masked"
    assert main(["nm", str(src), "-o", str(out), "--no-progress"]) == 0
    assert digest(src) == before  # the input is never modified
    ref, ref_rows = mask_state_dict(sd, 2, 4, progress=False)
    got = load_folder(out)
    assert sorted(got) == sorted(sd)
    for k in sd:
        assert got[k].dtype == sd[k].dtype and torch.equal(got[k], ref[k]), k
    # masked tensors are transposable 2:4, the rest untouched
    rep = json.loads((tmp_path / "masked.json").read_text())
    masked = [r["name"] for r in rep["tensors"] if r["skipped"] is None]
    assert sorted(masked) == sorted(r.name for r in ref_rows if r.skipped is None)
    assert "model.layers.1.odd.weight" not in masked and "lm_head.weight" not in masked
    for k in masked:
        assert is_nm(got[k] != 0, 2, 4, transposable=True), k
    assert {r["name"]: r["kept_score"] for r in rep["tensors"]} == \
        {r.name: r.kept_score for r in ref_rows}  # rows in the index's order
    # the index: the same shards as the input, each holding exactly the tensors it names
    index = json.loads((out / INDEX_NAME).read_text())
    in_index = json.loads((src / INDEX_NAME).read_text())
    assert index["weight_map"] == in_index["weight_map"]
    assert index["metadata"]["total_size"] == in_index["metadata"]["total_size"]
    for shard in set(index["weight_map"].values()):
        with safe_open(str(out / shard), "pt") as f:
            assert set(f.keys()) == {k for k, s in index["weight_map"].items() if s == shard}
            assert f.metadata() == {"format": "pt"}
    assert sorted(p.name for p in out.iterdir()) == sorted(digest(src))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_one_file_in_one_file_out_and_sharded_to_one_file(tmp_path):
    sd = llm_like(1)
    src = tmp_path / "m.safetensors"
    save_file(sd, str(src))
    ref, _ = mask_state_dict(sd, 1, 4, transposable=False, progress=False)
    for model, out in ((src, tmp_path / "o.safetensors"),
                       (write_sharded(sd, tmp_path / "ck"), tmp_path / "all.safetensors")):
        assert main(["nm", str(model), "-o", str(out), "--n", "1", "--no-transposable",
                     "--no-progress"]) == 0
        got = load_file(str(out))
        assert sorted(got) == sorted(sd)
        assert all(torch.equal(got[k], ref[k]) for k in sd)
        read_header(out)  # a well-formed, complete file


def test_process_pool_gives_the_same_bytes(tmp_path):
    src = write_sharded(llm_like(2), tmp_path / "ckpt")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["nm", str(src), "-o", str(a), "--no-progress"]) == 0
    assert main(["nm", str(src), "-o", str(b), "--no-progress", "--executor", "processes",
                 "--workers", "2"]) == 0
    assert digest(a) == digest(b)


def test_ray_gives_the_same_bytes(tmp_path):
    pytest.importorskip("ray")
    src = write_sharded(llm_like(4), tmp_path / "ckpt")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["nm", str(src), "-o", str(a), "--no-progress"]) == 0
    assert main(["nm", str(src), "-o", str(b), "--no-progress", "--executor", "ray",
                 "--workers", "2"]) == 0  # a local 2-CPU cluster, started and stopped
    assert digest(a) == digest(b)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10**6), shards=st.integers(1, 4),
       scale=st.sampled_from([1e-3, 0.5, 7.0, 300.0]))
def test_streamed_masks_equal_in_memory_ones_at_any_scale(tmp_path_factory, seed, shards,
                                                          scale):
    tmp = tmp_path_factory.mktemp("h")
    sd = {k: v.float() for k, v in llm_like(seed).items()}
    base, _ = mask_state_dict(sd, 2, 4, progress=False)
    scaled = {k: v * scale for k, v in sd.items()}
    ckpt = open_checkpoint(write_sharded(scaled, tmp / "c", shards=shards))
    with StagedOutput(tmp / "out", tmp / "r.json") as stage:
        rows = mask_checkpoint(ckpt, stage, 2, 4, progress=False)
        stage.commit(b"{}")
    got = load_folder(tmp / "out")
    for k in sd:  # multiplying every weight by a positive factor keeps the same masks
        assert torch.equal(got[k] != 0, base[k] != 0), k
    assert all(r.status in ("optimal", "skipped") for r in rows)


def test_failure_mid_run_leaves_nothing(tmp_path, capsys):
    sd = llm_like(3)
    sd["model.layers.1.self_attn.q_proj.weight"][0, 0] = float("nan")  # a late tensor fails
    src = write_sharded(sd, tmp_path / "ckpt")
    before = digest(src)
    for out in (tmp_path / "out", tmp_path / "out.safetensors"):
        assert main(["nm", str(src), "-o", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "NaN" in err and len(err.splitlines()) == 1
        assert not out.exists() and not Path(str(out) + ".json").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporaries
    assert digest(src) == before


def _bad(tmp_path, capsys, model, *extra) -> str:
    out = tmp_path / "out"
    assert main(["nm", str(model), "-o", str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pruneopt nm: error: ")
    assert not out.exists() and not (tmp_path / "out.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    return err


def test_missing_shard(tmp_path, capsys):
    src = write_sharded(llm_like(), tmp_path / "ckpt")
    os.unlink(src / "model-00002-of-00002.safetensors")
    assert "does not exist" in _bad(tmp_path, capsys, src)


def test_truncated_shard(tmp_path, capsys):
    src = write_sharded(llm_like(), tmp_path / "ckpt")
    shard = src / "model-00001-of-00002.safetensors"
    os.truncate(shard, shard.stat().st_size - 10)
    assert "truncated" in _bad(tmp_path, capsys, src)
    os.truncate(shard, 4)
    assert "truncated" in _bad(tmp_path, capsys, src / INDEX_NAME)


def test_index_naming_absent_tensors(tmp_path, capsys):
    src = write_sharded(llm_like(), tmp_path / "ckpt")
    index = json.loads((src / INDEX_NAME).read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    (src / INDEX_NAME).write_text(json.dumps(index))
    err = _bad(tmp_path, capsys, src)
    assert "absent" in err and "model.layers.9.mlp.up_proj.weight" in err
    (src / INDEX_NAME).write_text("{not json")
    assert "not a safetensors index" in _bad(tmp_path, capsys, src)
    (src / INDEX_NAME).unlink()
    assert "neither" in _bad(tmp_path, capsys, src)


def test_output_rules(tmp_path, capsys):
    src = write_sharded(llm_like(), tmp_path / "ckpt")
    (tmp_path / "out").mkdir()
    assert main(["nm", str(src), "-o", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "out").rmdir()
    assert main(["nm", str(src), "-o", str(src / "inside"), "--no-progress"]) == 2
    assert "input" in capsys.readouterr().err
    assert main(["nm", str(src), "-o", str(tmp_path / "x.pt"), "--no-progress"]) == 2
    assert ".safetensors file or a new folder" in capsys.readouterr().err


@pytest.mark.parametrize("transposable, pad, shape", [(True, False, (40, 16)),
                                                      (False, False, (38, 12)),
                                                      (True, True, (38, 14))])
def test_row_bands_give_the_whole_tensors_mask(tmp_path, transposable, pad, shape):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(*shape, generator=g)
    save_file({"w": w}, str(tmp_path / "w.safetensors"))
    whole, ref = nm_mask(w, 2, 4, transposable=transposable, pad=pad, name="w")
    job = MaskJob(2, 4, transposable, pad=pad, band_weights=8 * shape[1])  # bands of 8 rows
    bits, rep = job((str(tmp_path / "w.safetensors"), "w"))
    mask = np.unpackbits(bits, count=w.numel()).astype(bool).reshape(shape)
    assert rep.info["bands"] == 5 and rep.status == ref.status == "optimal"
    assert is_nm(mask, 2, 4, transposable=transposable)
    # blocks share no variable: the bands' optimum is the tensor's optimum
    assert rep.kept_score == pytest.approx(ref.kept_score, rel=1e-12)
    assert rep.total_score == pytest.approx(ref.total_score, rel=1e-12)
    assert rep.bound >= rep.kept_score and rep.shape == tuple(shape)
    assert np.array_equal(mask, whole.numpy())  # the enumerate solver breaks ties per block


def test_a_tensor_that_cannot_be_banded_is_reported_whole(tmp_path):
    w = torch.randn(40, 10)  # 10 columns: not divisible by 4
    save_file({"w": w}, str(tmp_path / "w.safetensors"))
    bits, rep = MaskJob(2, 4, band_weights=80)((str(tmp_path / "w.safetensors"), "w"))
    assert bits is None and "40x10" in rep.skipped


def test_a_stage_left_by_a_killed_run_is_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".out.{dead}.0123abcd.partial"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".other.{os.getpid()}.0123abcd.partial"  # a running writer's: kept
    live.mkdir()
    src = write_sharded(llm_like(), tmp_path / "ckpt")
    assert main(["nm", str(src), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert not stale.exists() and live.exists()
    assert remove_stale_stages(tmp_path) == []


def test_unreachable_ray_address_is_refused_before_any_work(tmp_path, capsys):
    src = write_sharded(llm_like(), tmp_path / "ckpt")
    err = _bad(tmp_path, capsys, src, "--executor", "ray", "--address",
               f"127.0.0.1:{free_port()}")
    assert "cannot reach a Ray cluster" in err
    assert "--executor ray" in _bad(tmp_path, capsys, src, "--address", "127.0.0.1:6379")


def _pool_workers(pid: int) -> list[int]:
    """The spawn-pool worker processes of ``pid`` (not its resource tracker)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmd:
                out.append(int(child))
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_worker_killed_mid_run_fails_cleanly_and_a_rerun_succeeds(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    src = write_sharded(llm_like(5), tmp_path / "ckpt")
    before = digest(src)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pruneopt", "nm", str(src), "-o", str(out), "--no-progress",
           "--executor", "processes", "--workers", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while not workers and proc.poll() is None and time.monotonic() < deadline:
        workers = _pool_workers(proc.pid)
        time.sleep(0.02)
    assert workers, "the run never started a worker"
    os.kill(workers[0], signal.SIGKILL)  # while the workers still start: work is pending
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "failed" in lines[0] and "died" in lines[0], err
    assert not out.exists() and not Path(str(out) + ".json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the stage is gone
    assert digest(src) == before
    assert main(["nm", str(src), "-o", str(out), "--no-progress"]) == 0  # a rerun restarts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out", "out.json"]


def test_resume_keeps_the_finished_shards_of_a_failed_run(tmp_path, capsys):
    sd = llm_like(6)
    bad = "model.layers.1.self_attn.q_proj.weight"  # in the second shard
    good = sd[bad].clone()
    sd[bad][0, 0] = float("nan")
    src = write_sharded(sd, tmp_path / "ckpt")
    out = tmp_path / "out"
    stage = tmp_path / ".out.resume.partial"
    assert main(["nm", str(src), "-o", str(out), "--no-progress", "--resume"]) == 2
    assert "NaN" in capsys.readouterr().err and not out.exists()
    kept = json.loads((stage / "resume.json").read_text())["done"]
    assert list(kept) == ["model-00001-of-00002.safetensors"]
    first = (stage / "model-00001-of-00002.safetensors").read_bytes()
    sd[bad] = good  # the input mended in place: same headers, same sizes, same job
    save_file({k: sd[k] for k in list(sd)[1::2]}, str(src / "model-00002-of-00002.safetensors"),
              metadata={"format": "pt"})
    assert main(["nm", str(src), "-o", str(out), "--no-progress", "--resume"]) == 0
    report = json.loads(Path(str(out) + ".json").read_text())
    assert report["resumed_shards"] == ["model-00001-of-00002.safetensors"]
    assert (out / "model-00001-of-00002.safetensors").read_bytes() == first
    fresh = tmp_path / "fresh"
    assert main(["nm", str(src), "-o", str(fresh), "--no-progress"]) == 0
    assert digest(out) == digest(fresh)  # resuming gives the bytes of a whole run
    assert not stage.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt", "fresh", "fresh.json", "out", "out.json"]


def test_resume_starts_over_for_another_job_and_refuses_a_live_writer(tmp_path, capsys):
    import subprocess

    sd = llm_like(7)
    sd["model.layers.1.self_attn.q_proj.weight"][0, 0] = float("nan")
    src = write_sharded(sd, tmp_path / "ckpt")
    out = tmp_path / "out"
    stage = tmp_path / ".out.resume.partial"
    assert main(["nm", str(src), "-o", str(out), "--no-progress", "--resume"]) == 2
    first = json.loads((stage / "resume.json").read_text())["key"]
    (stage / "model-00001-of-00002.safetensors").write_bytes(b"of the first job")
    assert main(["nm", str(src), "-o", str(out), "--no-progress", "--resume", "--m", "8",
                 "--n", "4"]) == 2  # another job: the first run's stage is removed
    capsys.readouterr()
    assert json.loads((stage / "resume.json").read_text())["key"] != first
    assert (stage / "model-00001-of-00002.safetensors").read_bytes() != b"of the first job"
    live = subprocess.Popen(["sleep", "30"])
    try:
        (stage / "writer.pid").write_text(str(live.pid))
        assert main(["nm", str(src), "-o", str(out), "--no-progress", "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"another run (process {live.pid})" in err and len(err.strip().splitlines()) == 1
    finally:
        live.kill()
        live.wait()
    assert not out.exists()
