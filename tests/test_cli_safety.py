"""The command line never destroys an input or half-writes an output.

Every case runs ``pruneopt.cli.main`` on real files in a temporary folder and checks the exit
code, that stderr is one line ``pruneopt CMD: error: ...``, and that the folder afterwards
holds exactly the files (byte for byte) it held before: inputs untouched, no partial output,
no temporary left behind.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pruneopt.adapters.files import TEMP_PATTERN, OutputSet, atomic_write
from pruneopt.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEAD_PID = 99_999_999  # above the kernel's PID_MAX_LIMIT (2**22): never a live process


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def one_error_line(err: str, command: str) -> str:
    assert err.startswith(f"pruneopt {command}: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8))
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture
def files(tmp_path):
    """A folder with one input of every kind the commands read."""
    rng = np.random.default_rng(0)
    torch.save(state(), tmp_path / "m.pt")
    np.save(tmp_path / "X.npy", rng.normal(size=(40, 3)))
    np.save(tmp_path / "W.npy", rng.uniform(0.5, 1.0, size=40))
    np.save(tmp_path / "S.npy", rng.normal(size=(30, 3)))
    np.save(tmp_path / "T.npy", rng.normal(size=(10, 3)))
    np.save(tmp_path / "y.npy", np.arange(30) % 3)  # class labels of S.npy
    (tmp_path / "t.json").write_text(json.dumps(
        {"costs": [[3, 2, 1], [2, 1]], "errors": [[0, 1, 3], [0, 2]], "budget": 4}))
    return tmp_path


COVERAGE = ["select", "coverage", "--features", "{d}/X.npy", "--keep", "5", "--radius", "1"]
MMD = ["select", "mmd", "--source", "{d}/S.npy", "--target", "{d}/T.npy", "--keep", "5"]
NM = ["nm", "{d}/m.pt", "--no-progress"]


def run(argv: list[str], folder: Path, capsys) -> tuple[int, str, str]:
    code = main([a.format(d=folder) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "command"), [
    (NM + ["-o", "{d}/o.pt", "--report", "{d}/m.pt"], "nm"),
    (NM + ["-o", "{d}/m.pt"], "nm"),
    (NM + ["-o", "{d}/../{b}/m.pt"], "nm"),           # the same path spelled differently
    (NM + ["-o", "{d}/link.pt"], "nm"),                # a hard link to the input
    (COVERAGE + ["-o", "{d}/X.npy"], "select coverage"),
    (COVERAGE + ["--weights", "{d}/W.npy", "-o", "{d}/W.npy"], "select coverage"),
    (MMD + ["-o", "{d}/T.npy"], "select mmd"),
    (MMD + ["-o", "{d}/S.npy"], "select mmd"),
    (MMD + ["--labels", "{d}/y.npy", "--class-mix", "source", "-o", "{d}/y.npy"], "select mmd"),
    (["budget", "{d}/t.json", "-o", "{d}/t.json"], "budget"),
])
def test_an_output_that_names_an_input_is_refused(files, capsys, argv, command):
    os.link(files / "m.pt", files / "link.pt")
    before = snapshot(files)
    argv = [a.replace("{b}", files.name) for a in argv]
    code, out, err = run(argv, files, capsys)
    assert code == 2 and out == ""
    assert "is the input" in one_error_line(err, command)
    assert snapshot(files) == before


@pytest.mark.parametrize(("argv", "command"), [
    (NM + ["-o", "{d}/o.pt", "--report", "{d}/o.pt"], "nm"),
    (["budget", "--minilm", "--speedup", "1.5", "-o", "{d}/a.json", "--save-table",
      "{d}/a.json"], "budget"),
])
def test_outputs_must_differ_from_each_other(files, capsys, argv, command):
    before = snapshot(files)
    code, _, err = run(argv, files, capsys)
    assert code == 2 and "must differ" in one_error_line(err, command)
    assert snapshot(files) == before


def test_every_output_is_checked_before_any_work(files, capsys):
    # a missing report folder: refused before the model is read (its NaN is never seen) ...
    sd = state()
    sd["0.weight"][0, 0] = float("nan")
    torch.save(sd, files / "nan.pt")
    before = snapshot(files)
    code, _, err = run(["nm", "{d}/nan.pt", "-o", "{d}/out.pt", "--report", "{d}/nodir/r.json"],
                       files, capsys)
    assert code == 2 and "output folder" in one_error_line(err, "nm") and "nodir" in err
    assert snapshot(files) == before
    # ... and with a good model no out.pt is written either
    code, _, err = run(NM + ["-o", "{d}/out.pt", "--report", "{d}/nodir/r.json"], files, capsys)
    assert code == 2 and "output folder" in one_error_line(err, "nm")
    assert snapshot(files) == before


@pytest.mark.parametrize(("argv", "command", "message"), [
    (NM + ["-o", "{d}/dir.pt"], "nm", "is a directory"),
    (NM + ["-o", "{d}/o.pt", "--report", "{d}/dir.pt"], "nm", "is a directory"),
    (COVERAGE + ["-o", "{d}/dir.npy"], "select coverage", "is a directory"),
    (MMD + ["-o", "{d}/dir.npy"], "select mmd", "is a directory"),
    (["budget", "{d}/t.json", "-o", "{d}/dir.pt"], "budget", "is a directory"),
    (COVERAGE + ["-o", "{d}/X.npy/k.npy"], "select coverage", "does not exist"),
    (COVERAGE + ["-o", "{d}/k.txt"], "select coverage", "must end in one of .npy"),
])
def test_unwritable_output_paths(files, capsys, argv, command, message):
    (files / "dir.pt").mkdir()
    (files / "dir.npy").mkdir()
    before = snapshot(files)
    code, _, err = run(argv, files, capsys)
    assert code == 2 and message in one_error_line(err, command)
    assert snapshot(files) == before
    assert (files / "dir.pt").is_dir() and (files / "dir.npy").is_dir()


def test_read_only_folder(files, capsys):
    ro = files / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes here")
        code, _, err = run(COVERAGE + ["-o", "{d}/ro/k.npy"], files, capsys)
        assert code == 2 and "not writable" in one_error_line(err, "select coverage")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_a_failed_write_leaves_no_output_and_no_temporary(tmp_path, capsys):
    torch.manual_seed(0)
    big = {"0.weight": torch.randn(64, 512), "1.weight": torch.randn(8, 8)}  # ~130 kB on disk
    torch.save(big, tmp_path / "m.pt")
    (tmp_path / "old.pt.json").write_text("old report")
    before = snapshot(tmp_path)
    # writes beyond 64 KiB fail with EFBIG (File too large), as on a full disk; this works as
    # root too, and Python ignores SIGXFSZ, so the write raises OSError
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        code, _, err = run(["nm", "{d}/m.pt", "-o", "{d}/old.pt", "--no-progress"], tmp_path,
                           capsys)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 2 and "File too large" in one_error_line(err, "nm")
    assert snapshot(tmp_path) == before  # no old.pt, old report untouched, no temporaries
    for sfx in (".pt", ".safetensors"):  # and it works without the limit
        assert main(["nm", str(tmp_path / "m.pt"), "-o", str(tmp_path / f"ok{sfx}"),
                     "--no-progress"]) == 0


def test_outputs_appear_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.json"
    a.write_bytes(b"old a")
    out = OutputSet({"a": a, "b": b})
    with pytest.raises(RuntimeError, match="boom"), out:
        out.write("a", lambda f: f.write(b"new a"))
        raise RuntimeError("boom")  # the work fails after one output is written
    assert snapshot(tmp_path) == {"a.npy": b"old a"}
    # the last rename fails (b became a directory): a is put back as it was
    out = OutputSet({"a": a, "b": b})
    with pytest.raises(ValueError, match="no output was changed"), out:
        out.write("a", lambda f: f.write(b"new a"))
        out.write("b", lambda f: f.write(b"new b"))
        b.mkdir()
    assert a.read_bytes() == b"old a" and b.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.json"]
    b.rmdir()
    a.unlink()  # a new a is removed again when b fails
    out = OutputSet({"a": a, "b": b})
    with pytest.raises(ValueError), out:
        out.write("a", lambda f: f.write(b"new a"))
        out.write("b", lambda f: f.write(b"new b"))
        b.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
    b.rmdir()
    with OutputSet({"a": a, "b": b}) as out:
        out.write("a", lambda f: f.write(b"new a"))
        out.write("b", lambda f: f.write(b"new b"))
    assert snapshot(tmp_path) == {"a.npy": b"new a", "b.json": b"new b"}


def test_temporaries_are_named_by_pid_and_stale_ones_removed(files, capsys):
    seen = []
    atomic_write(files / "x.bin", lambda f: seen.extend(
        p for p in os.listdir(files) if p.endswith(".tmp")))
    assert len(seen) == 1 and seen[0].startswith(f".x.bin.{os.getpid()}.")
    assert TEMP_PATTERN.match(seen[0])
    stale = files / f".kept.npy.{DEAD_PID}.abcd_123.tmp"
    alive = files / f".kept.npy.{os.getpid()}.abcd_123.tmp"  # a writer that is still running
    other = files / ".kept.npy.tmp"  # not of our naming
    for p in (stale, alive, other):
        p.write_bytes(b"partial")
    code, _, _ = run(COVERAGE + ["-o", "{d}/kept.npy"], files, capsys)
    assert code == 0 and (files / "kept.npy").is_file()
    assert not stale.exists() and alive.exists() and other.exists()


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    script = ("import sys, time\n"
              "from pruneopt.adapters.files import atomic_write\n"
              "def slow(f):\n"
              "    f.write(b'x' * 4096); f.flush(); print('writing', flush=True); time.sleep(60)\n"
              "atomic_write(sys.argv[1], slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "big.pt")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "writing\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".big.pt.{proc.pid}.")  # what SIGKILL leaves
    atomic_write(tmp_path / "other.json", lambda f: f.write(b"{}"))
    assert [p.name for p in tmp_path.iterdir()] == ["other.json"]


def test_tied_tensors_to_safetensors(tmp_path, capsys):
    torch.manual_seed(0)
    emb = torch.randn(16, 8)
    sd = {"embed.weight": emb, "lm_head.weight": emb, "0.weight": torch.randn(8, 8)}
    torch.save(sd, tmp_path / "tied.pt")
    before = snapshot(tmp_path)
    code, _, err = run(["nm", "{d}/tied.pt", "-o", "{d}/o.safetensors", "--no-progress"],
                       tmp_path, capsys)
    assert code == 2
    assert "share memory" in one_error_line(err, "nm") and "embed.weight, lm_head.weight" in err
    assert snapshot(tmp_path) == before
    # .pt keeps the tie; masking one of the two breaks it, and then safetensors can store them
    assert main(["nm", str(tmp_path / "tied.pt"), "-o", str(tmp_path / "o.pt"),
                 "--no-progress"]) == 0
    assert main(["nm", str(tmp_path / "tied.pt"), "-o", str(tmp_path / "o.safetensors"),
                 "--pattern", "lm_head.*", "--no-progress"]) == 0


@pytest.mark.parametrize(("make", "which", "message"), [
    (lambda: np.zeros((0, 3)), "X", "is empty"),
    (lambda: np.ones(5), "X", "must hold a 2-D array"),
    (lambda: np.float64(3.0), "X", "must hold a 2-D array"),
    (lambda: np.ones((40, 3)) + 1j, "X", "complex"),
    (lambda: np.array([["a", "b"]]), "X", "not numbers"),
    (lambda: np.zeros(0), "W", "is empty"),
    (lambda: np.ones((40, 1)), "W", "must hold a 1-D array"),
    (lambda: np.ones(40) + 0j, "W", "complex"),
    (lambda: np.ones(5), "S", "must hold a 2-D array"),
    (lambda: np.ones((30, 3)) * 1j, "S", "complex"),
    (lambda: np.zeros((0, 3)), "T", "is empty"),
    (lambda: b"\x93NUMPY truncated", "X", "cannot read"),
])
def test_bad_npy_inputs(files, capsys, make, which, message):
    value = make()
    if isinstance(value, bytes):
        (files / f"{which}.npy").write_bytes(value)
    else:
        np.save(files / f"{which}.npy", value)
    before = snapshot(files)
    if which in "XW":
        argv, command = COVERAGE + ["--weights", "{d}/W.npy", "-o", "{d}/k.npy"], "select coverage"
    else:
        argv, command = MMD + ["-o", "{d}/k.npy"], "select mmd"
    code, _, err = run(argv, files, capsys)
    assert code == 2 and message in one_error_line(err, command)
    assert f"{which}.npy" in err
    assert snapshot(files) == before


def test_os_errors_become_one_line(monkeypatch, files, capsys):
    from pruneopt.commands import select_coverage

    def denied(args):
        raise PermissionError(13, "Permission denied", str(files / "k.npy"))

    monkeypatch.setattr(select_coverage, "run", denied)  # an OSError from any command
    code, _, err = run(COVERAGE + ["-o", "{d}/k.npy"], files, capsys)
    assert code == 2 and "Permission denied" in one_error_line(err, "select coverage")
