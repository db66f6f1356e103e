"""``pruneopt select mmd`` with classes: --labels with --class-keep or --class-mix.

The selections must keep the asked number of points of every class; every bad input exits 2
with one stderr line that names the class or the file, and writes nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from pruneopt.adapters.domain_shift import estimate_class_mix
from pruneopt.cli import main
from pruneopt.formulations.mmd import apportion

SIZES = (40, 40, 20)  # source points of classes 0, 1, 2
TARGET = (30, 5, 15)  # target points of the same three clusters (labels never given)


@pytest.fixture
def files(tmp_path):
    """Three well-separated Gaussian clusters (one per class) in 3-D; the target has another
    class mix (60 / 10 / 30 %) than the source (40 / 40 / 20 %)."""
    rng = np.random.default_rng(0)
    centres = (np.zeros(3), np.full(3, 4.0), np.full(3, -4.0))
    S = np.vstack([rng.normal(c, 1.0, (k, 3)) for c, k in zip(centres, SIZES, strict=True)])
    T = np.vstack([rng.normal(c, 1.0, (k, 3)) for c, k in zip(centres, TARGET, strict=True)])
    y = np.repeat(np.arange(3), SIZES)
    np.save(tmp_path / "S.npy", S)
    np.save(tmp_path / "T.npy", T)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "ys.npy", np.array(["cat", "dog", "eel"])[y])
    return tmp_path


def run(folder, *extra, labels="y.npy"):
    argv = ["select", "mmd", "--source", str(folder / "S.npy"), "--target",
            str(folder / "T.npy"), "-o", str(folder / "kept.npy")]
    if labels is not None:
        argv += ["--labels", str(folder / labels)]
    return main(argv + [str(folder / a) if a.endswith((".json", ".npy")) else a
                        for a in extra])


def per_class(folder, labels="y.npy"):
    kept = np.load(folder / "kept.npy")
    y = np.load(folder / labels)
    assert len(np.unique(kept)) == len(kept)
    values, counts = np.unique(y[kept], return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def write_json(folder, name, data):
    (folder / name).write_text(json.dumps(data))


def test_class_keep_is_respected_with_or_without_keep(files, capsys):
    write_json(files, "k.json", {"0": 2, "1": 7, "2": 3})
    assert run(files, "--class-keep", "k.json", "--keep", "12") == 0
    assert per_class(files) == {0: 2, 1: 7, 2: 3}
    out = capsys.readouterr().out
    assert out.startswith("kept 12 of 100 (per class: 0: 2, 1: 7, 2: 3)")
    (files / "kept.npy").unlink()
    assert run(files, "--class-keep", "k.json") == 0  # --keep = the counts' sum
    assert per_class(files) == {0: 2, 1: 7, 2: 3}


def test_class_keep_zero_keeps_none_of_a_class(files):
    write_json(files, "k.json", {"0": 0, "1": 5, "2": 20})  # class 2 kept whole
    assert run(files, "--class-keep", "k.json", "--mask") == 0
    mask = np.load(files / "kept.npy")
    y = np.load(files / "y.npy")
    assert mask.dtype == bool and mask.sum() == 25
    assert np.bincount(y[mask], minlength=3).tolist() == [0, 5, 20]
    assert mask[y == 2].all()


def test_class_mix_file_is_apportioned(files):
    write_json(files, "mix.json", {"0": 0.5, "1": 0.25, "2": 0.25})
    assert run(files, "--class-mix", "mix.json", "--keep", "0.2") == 0  # 20 points
    assert per_class(files) == {0: 10, 1: 5, 2: 5}


def test_class_mix_source_is_stratified(files):
    assert run(files, "--class-mix", "source", "--keep", "20") == 0
    assert per_class(files) == {0: 8, 1: 8, 2: 4}


@pytest.mark.parametrize("method", ["em", "pseudo"])
def test_class_mix_estimated_from_the_target(files, method):
    S, T, y = (np.load(files / f) for f in ("S.npy", "T.npy", "y.npy"))
    mix = estimate_class_mix(S, y, T, method=method)
    # the clusters are separated: either estimate finds the target's 60 / 10 / 30 %
    assert np.allclose([mix[c] for c in range(3)], [0.6, 0.1, 0.3], atol=0.03)
    want = apportion(np.array([mix[c] for c in range(3)]), np.array(SIZES), 20)
    assert run(files, "--class-mix", method, "--keep", "20") == 0
    assert per_class(files) == dict(enumerate(want.tolist()))
    assert want.tolist() == [12, 2, 6]


def test_integral_float_labels_are_integers(files):
    np.save(files / "yf.npy", np.load(files / "y.npy").astype(np.float64))
    write_json(files, "k.json", {"0": 4, "1": 0, "2": 1})
    assert run(files, "--class-keep", "k.json", labels="yf.npy") == 0
    assert per_class(files, "yf.npy") == {0.0: 4, 2.0: 1}


def test_string_labels(files):
    write_json(files, "k.json", {"cat": 1, "dog": 2, "eel": 3})
    assert run(files, "--class-keep", "k.json", labels="ys.npy") == 0
    assert per_class(files, "ys.npy") == {"cat": 1, "dog": 2, "eel": 3}
    (files / "kept.npy").unlink()
    assert run(files, "--class-mix", "em", "--keep", "10", labels="ys.npy") == 0
    assert per_class(files, "ys.npy") == {"cat": 6, "dog": 1, "eel": 3}


def test_em_counts_match_the_target_better_than_stratified(files, capsys):
    """Counts from the target's estimated mix (12 / 2 / 6) give a lower MMD^2 to the target
    than the source's own mix (8 / 8 / 4): the stratified set over-represents class 1."""
    assert run(files, "--class-mix", "em", "--keep", "20") == 0
    em = float(capsys.readouterr().out.split("MMD^2 = ")[1].split(",")[0])
    (files / "kept.npy").unlink()
    assert run(files, "--class-mix", "source", "--keep", "20") == 0
    source = float(capsys.readouterr().out.split("MMD^2 = ")[1].split(",")[0])
    assert em < source


BAD = [
    # (extra argv, labels file, json files to write, words the one error line must hold)
    (["--class-keep", "k.json", "--keep", "10"], "short.npy", {"k.json": {"0": 10}},
     ["short.npy", "99 labels", "100 rows"]),
    (["--class-keep", "k.json", "--keep", "10"], "y.npy",
     {"k.json": {"0": 5, "1": 3, "2": 3}}, ["k.json", "adds up to 11", "keep=10"]),
    (["--class-keep", "k.json"], "y.npy", {"k.json": {"0": 5, "1": 3, "2": 25}},
     ["k.json", "class 2 has 20 source points", "25"]),
    (["--class-keep", "k.json"], "y.npy", {"k.json": {"0": 5, "1": 5}},
     ["k.json", "class 2", "missing"]),
    (["--class-keep", "k.json"], "y.npy", {"k.json": {"0": 1, "1": 1, "2": 1, "7": 1}},
     ["k.json", "class 7", "not in the source labels"]),
    (["--class-keep", "k.json"], "y.npy", {"k.json": {"0": 1, "one": 1, "2": 1}},
     ["k.json", "class 'one'", "not an integer"]),
    (["--class-keep", "k.json"], "y.npy", {"k.json": {"0": 1, "1": 1.5, "2": 1}},
     ["k.json", "class_keep[1]", "integer"]),
    (["--class-keep", "k.json"], "y.npy", {"k.json": [1, 2, 3]}, ["k.json", "JSON object"]),
    (["--class-keep", "nothere.json"], "y.npy", {}, ["nothere.json", "cannot read"]),
    (["--class-mix", "mix.json", "--keep", "10"], "y.npy",
     {"mix.json": {"0": 0.5, "1": -0.1, "2": 0.6}}, ["mix.json", "class_mix[1]", ">= 0"]),
    (["--class-mix", "mix.json", "--keep", "10"], "y.npy", {"mix.json": {"0": 1.0}},
     ["mix.json", "class 1", "missing"]),
    (["--class-mix", "median", "--keep", "10"], "y.npy", {}, ["--class-mix", "'median'"]),
    (["--class-mix", "source", "--class-keep", "k.json", "--keep", "10"], "y.npy",
     {"k.json": {"0": 10, "1": 0, "2": 0}}, ["exactly one of --class-keep"]),
    (["--keep", "10"], "y.npy", {}, ["exactly one of --class-keep"]),
    (["--class-mix", "source"], "y.npy", {}, ["--keep is required"]),
    (["--class-mix", "em", "--keep", "10"], "one.npy", {}, ["--class-mix em", "2 source classes"]),
    (["--class-mix", "source", "--keep", "10"], "y2d.npy", {}, ["y2d.npy", "1-D"]),
    (["--class-mix", "source", "--keep", "10"], "yfloat.npy", {}, ["--labels", "yfloat.npy",
                                                                   "integers or strings"]),
    (["--class-keep", "k.json"], "yfloat.npy", {"k.json": {"0": 1}},
     ["--labels", "yfloat.npy", "integers or strings"]),
    (["--class-mix", "source", "--keep", "10"], "missing.npy", {}, ["missing.npy",
                                                                   "does not exist"]),
]


@pytest.mark.parametrize(("extra", "labels", "jsons", "words"), BAD,
                         ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_class_input_exits_2_with_one_line(files, capsys, extra, labels, jsons, words):
    y = np.load(files / "y.npy")
    np.save(files / "short.npy", y[:-1])
    np.save(files / "one.npy", np.zeros(100, dtype=np.int64))
    np.save(files / "y2d.npy", y.reshape(50, 2))
    np.save(files / "yfloat.npy", y + 0.5)
    for name, data in jsons.items():
        write_json(files, name, data)
    before = sorted(p.name for p in files.iterdir())
    assert run(files, *extra, labels=labels) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert captured.out == ""
    assert err.startswith("pruneopt select mmd: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    assert sorted(p.name for p in files.iterdir()) == before  # nothing written


def test_class_options_need_labels(files, capsys):
    write_json(files, "k.json", {"0": 10})
    assert run(files, "--class-keep", "k.json", labels=None) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "need --labels" in err
    assert not (files / "kept.npy").exists()


def test_help_text(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["select", "mmd", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--labels FILE.npy", "--class-keep FILE.json",
                 "--class-mix source|pseudo|em|FILE.json"):
        assert flag in text


def test_estimate_class_mix_keys_and_refusals(files):
    S, T = np.load(files / "S.npy"), np.load(files / "T.npy")
    ys = np.load(files / "ys.npy")
    mix = estimate_class_mix(S, ys, T, method="pseudo")
    assert list(mix) == ["cat", "dog", "eel"] and abs(sum(mix.values()) - 1) < 1e-12
    with pytest.raises(ValueError, match="'em' or 'pseudo'"):
        estimate_class_mix(S, ys, T, method="source")
    with pytest.raises(ValueError, match="feature dimensions"):
        estimate_class_mix(S, ys, T[:, :2])
    with pytest.raises(ValueError, match="one entry per source point"):
        estimate_class_mix(S, ys[:-1], T)
