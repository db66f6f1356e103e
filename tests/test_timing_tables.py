"""Timing tables: the SPDY reference's text format, rows (CSV/JSON), JSON round trip, budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pruneopt
from pruneopt.adapters.timing_tables import TimingTable, read_spdy_timings, read_timing_rows

# three layers in the reference's format (made-up numbers, the layout of its timings/*.txt)
SPDY_TEXT = """base
0.0100
prunable
0.0090
conv1
0.003000 0.0000
0.002500 0.4000
0.002000 0.7000
layer1.0.conv1
0.004000 0.0000
0.003000 0.4000
0.001500 0.7000
fc
0.002000 0.0000
0.001900 0.4000
0.001000 0.7000
"""


def write(tmp_path, text, name="db.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_spdy_format_reads(tmp_path):
    t = read_spdy_timings(write(tmp_path, SPDY_TEXT))
    assert t.names == ["conv1", "layer1.0.conv1", "fc"]
    assert t.dense_time == pytest.approx(0.01)
    assert t.base_time == pytest.approx(0.001)
    assert t.patterns[0] == ["dense", "unstructured", "unstructured"]
    np.testing.assert_allclose(t.sparsities[1], [0, 0.4, 0.7])
    np.testing.assert_allclose(t.times[1], [0.004, 0.003, 0.0015])
    assert t.max_speedup() == pytest.approx(0.01 / (0.001 + 0.002 + 0.0015 + 0.001))
    assert t.budget(2) == pytest.approx(0.005 - 0.001)
    assert t.labels(0) == ["dense", "unstructured@0.4", "unstructured@0.7"]


@pytest.mark.parametrize(("edit", "match"), [
    (lambda s: s.replace("0.002500 0.4000", "0.002500 0.4000 x"), r"db.txt:7: expected"),
    (lambda s: s.replace("0.002500 0.4000", "-0.0025 0.4000"), r"db.txt:7: time .* > 0"),
    (lambda s: s.replace("0.002500 0.4000", "0 0.4000"), r"db.txt:7: time .* > 0"),
    (lambda s: s.replace("0.002500 0.4000", "nan 0.4000"), r"db.txt:7: time .* finite"),
    (lambda s: s.replace("0.002500 0.4000", "abc 0.4000"), r"db.txt:7: 'abc' is not a number"),
    (lambda s: s.replace("0.002500 0.4000", "0.0025 1.5"), r"db.txt:7: sparsity .* \[0, 1\)"),
    (lambda s: s.replace("0.003000 0.0000\n", "", 1), r"db.txt:6: layer 'conv1' has no dense"),
    (lambda s: s.replace("0.001900 0.4000\n", ""), r"layer 'fc' misses level unstructured@0.4"),
    (lambda s: s.replace("fc\n", "conv1\n"), r"db.txt:13: layer 'conv1' appears twice"),
    (lambda s: s.replace("0.002500 0.4000", "0.002500 0.0000"), r"db.txt:7: .*dense twice"),
    (lambda s: s + "extra\n", r"db.txt:17: layer 'extra' has no levels"),
    (lambda s: s.replace("prunable", "prunabl"), r"starts with the lines"),
    (lambda s: s.replace("0.0090", "0.0200"), r"db.txt:4: prunable time"),
    (lambda s: s.replace("conv1\n", "0.5\n", 1), r"db.txt:5: a lone number"),
])
def test_spdy_format_bad_input(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        read_spdy_timings(write(tmp_path, edit(SPDY_TEXT)))


def test_spdy_repair_mode_lists_each_repair(tmp_path):
    text = SPDY_TEXT.replace("0.001900 0.4000\n", "") + "skipped.weight\n"
    text = text.replace("0.003000 0.0000\n", "0.003000 0.0000\n0.003200 0.0000\n", 1)
    with pytest.raises(ValueError):
        read_spdy_timings(write(tmp_path, text))
    t = read_spdy_timings(write(tmp_path, text), repair=True)
    assert t.names == ["conv1", "layer1.0.conv1", "fc"]
    assert t.times[0][0] == pytest.approx(0.0032)  # the last line wins, as in the reference
    assert [x.size for x in t.times] == [3, 3, 2]
    rep = "\n".join(t.meta["repairs"])
    assert "db.txt:7: level dense of 'conv1' given again" in rep
    assert "'skipped.weight' has no levels; dropped" in rep
    assert "'fc' has 2 levels" in rep
    with pytest.raises(ValueError, match="is not a number"):  # still strict on numbers
        read_spdy_timings(write(tmp_path, text.replace("0.001000", "zz")), repair=True)


CSV_TEXT = """# measured on a GPU with 2:4 sparse tensor cores
# dense_time = 0.010
# base_time = 0.002
layer,pattern,sparsity,seconds
q,dense,0,0.002
q,2:4,0.5,0.0013
k,dense,0,0.003
k,2:4,0.5,0.002
"""


def test_rows_csv_and_json_agree(tmp_path):
    a = read_timing_rows(write(tmp_path, CSV_TEXT, "t.csv"))
    rows = [dict(zip(("layer", "pattern", "sparsity", "seconds"), r.split(","), strict=True))
            for r in CSV_TEXT.splitlines()[4:]]
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"dense_time": 0.01, "base_time": 0.002, "rows": rows}))
    b = read_timing_rows(p)
    for t in (a, b):
        assert t.names == ["q", "k"]
        assert t.dense_time == pytest.approx(0.01) and t.base_time == pytest.approx(0.002)
        assert t.labels(1) == ["dense", "2:4@0.5"]
        np.testing.assert_allclose(t.times[1], [0.003, 0.002])
    # no dense_time: the layers plus base_time
    c = read_timing_rows(write(tmp_path, CSV_TEXT.replace("# dense_time = 0.010\n", ""),
                               "u.csv"))
    assert c.dense_time == pytest.approx(0.002 + 0.005)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda s: s.replace("q,2:4,0.5,0.0013", "q,2:4,0.5,-1"), r"t.csv:6: time .* > 0"),
    (lambda s: s.replace("q,2:4,0.5,0.0013", "q,2:4,0.5"), r"t.csv:6: expected 4 fields"),
    (lambda s: s.replace("k,dense,0,0.003\n", ""), r"t.csv:7: layer 'k' has no dense"),
    (lambda s: s.replace("k,2:4,0.5,0.002", "k,4:8,0.5,0.002"), r"layer 'q' misses level 4:8"),
    (lambda s: s.replace("q,2:4,0.5,0.0013", "q,dense,0.5,0.0013"), r"t.csv:6: the dense level"),
    (lambda s: s.replace("k,2:4,0.5,0.002", "k,dense,0,0.002"), r"t.csv:8: .*dense twice"),
    (lambda s: s.replace("layer,pattern", "name,pattern"), r"t.csv:4: the header"),
    (lambda s: s.replace("0.010", "ten"), r"t.csv:2: dense_time 'ten'"),
])
def test_rows_bad_input(tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        read_timing_rows(write(tmp_path, edit(CSV_TEXT), "t.csv"))


def test_rows_ragged_levels_when_asked(tmp_path):
    text = CSV_TEXT.replace("k,2:4,0.5,0.002", "k,neurons,0.25,0.002")
    t = read_timing_rows(write(tmp_path, text, "t.csv"), same_levels=False)
    assert t.patterns == [["dense", "2:4"], ["dense", "neurons"]]


def test_json_round_trip_and_bad_json(tmp_path):
    t = read_spdy_timings(write(tmp_path, SPDY_TEXT))
    t.errors = [np.array([0.0, 0.1, 0.5]), np.array([0.0, 0.2, 0.3]), np.array([0, 0.05, 0.6])]
    t.save(tmp_path / "t.json")
    u = TimingTable.load(tmp_path / "t.json")
    assert u.names == t.names and u.patterns == t.patterns and u.meta == t.meta
    for a, b in zip(t.times + t.errors + t.sparsities, u.times + u.errors + u.sparsities,
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert (u.dense_time, u.base_time) == (t.dense_time, t.base_time)
    d = json.loads((tmp_path / "t.json").read_text())
    del d["layers"][0]["levels"][0]["seconds"]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="missing or bad field 'seconds'"):
        TimingTable.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a timing table"):
        TimingTable.load(tmp_path / "other.json")


def test_problem_budget_and_out_of_reach(tmp_path):
    t = read_spdy_timings(write(tmp_path, SPDY_TEXT))
    errs = [np.array([0.0, 0.1, 0.5]), np.array([0.0, 0.2, 0.3]), np.array([0.0, 0.05, 0.6])]
    p = t.problem(1.5, errs)
    assert p.budget == pytest.approx(0.01 / 1.5 - 0.001)
    sol = pruneopt.solve(p, solver="dp")
    assert sol.status == "optimal"
    assert t.predicted_speedup(sol.decision) >= 1.5 * (1 - 1e-9)
    with pytest.raises(ValueError, match=r"out of reach: the table allows at most 1.8182x"):
        t.problem(2.0, errs)
    with pytest.raises(ValueError, match="has no errors"):
        t.problem(1.5)


def test_table_validation():
    ok = dict(names=["a"], patterns=[["dense", "2:4"]], sparsities=[[0, 0.5]],
              times=[[1.0, 0.5]], dense_time=2.0, base_time=0.5)
    TimingTable(**ok)
    for change, match in [({"times": [[1.0, 0.0]]}, "> 0 seconds"),
                          ({"patterns": [["2:4", "dense"]]}, "level 0 must be the dense"),
                          ({"base_time": 2.0}, "base_time must be in"),
                          ({"names": ["a", "a"], "patterns": [["dense"]] * 2,
                            "sparsities": [[0]] * 2, "times": [[1.0]] * 2}, "appears twice"),
                          ({"sparsities": [[0, 1.0]]}, r"in \[0, 1\)")]:
        with pytest.raises(ValueError, match=match):
            TimingTable(**{**ok, **change})


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), factor=st.floats(1e-4, 1e4), target=st.floats(1.05, 1.6))
def test_scaling_times_keeps_levels(seed, factor, target):
    """Multiplying every time (and so the budget) by a positive factor changes nothing."""
    rng = np.random.default_rng(seed)
    L, K = 6, 5
    s = np.linspace(0, 0.8, K)
    times = [rng.uniform(1, 3) * (1 - s * rng.uniform(0.3, 0.9)) for _ in range(L)]
    errs = [rng.uniform(0, 1) * s ** 2 for _ in range(L)]
    pats = [["dense"] + ["unstructured"] * (K - 1)] * L
    mk = [TimingTable([f"l{i}" for i in range(L)], pats, [s] * L, [t * f for t in times],
                      (sum(t[0] for t in times) + 1.0) * f, 1.0 * f, errors=errs)
          for f in (1.0, factor)]
    if target >= mk[0].max_speedup():
        return
    a, b = (pruneopt.solve(t.problem(target), solver="dp") for t in mk)
    assert a.status == b.status == "optimal"
    assert a.objective == pytest.approx(b.objective, rel=1e-9, abs=1e-12)
    assert mk[0].predicted_speedup(a.decision) >= target * (1 - 1e-9)


def test_from_the_spdy_unit_table_same_budget_and_answer():
    """The committed MiniLM SPDY table, as a TimingTable: same budget, same exact answer."""
    from pathlib import Path

    from pruneopt.adapters.spdy_table import SpdyTable
    from pruneopt.adapters.timing_tables import from_unit_table

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "spdy_minilm_table.json"
    st_table = SpdyTable.load(path)
    t = from_unit_table(st_table)
    assert t.names[:2] == ["block0.attention", "block0.ffn"]
    assert t.patterns[0][1] == "heads" and t.patterns[1][1] == "neurons"
    assert t.sparsities[0][1] == pytest.approx(1 / 12)
    for s in (1.25, 1.5, 2.0):
        a = pruneopt.solve(st_table.problem(s), solver="dp")
        b = pruneopt.solve(t.problem(s), solver="dp")
        assert t.budget(s) == pytest.approx(st_table.budget(s))
        np.testing.assert_array_equal(a.decision, b.decision)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), L=st.integers(1, 6), K=st.integers(1, 6))
def test_reference_format_round_trip(tmp_path_factory, seed, L, K):
    """Any table written in the reference's format reads back exactly (times and levels)."""
    rng = np.random.default_rng(seed)
    spars = np.concatenate([[0.0], np.sort(rng.choice(np.arange(1, 99), K - 1, replace=False))
                            / 100])
    times = rng.uniform(1e-5, 1e-1, (L, K))
    base = float(times[:, 0].sum()) + 0.01
    lines = ["base", repr(base), "prunable", repr(float(times[:, 0].sum()))]
    for i in range(L):
        lines.append(f"layer{i}.conv")
        lines += [f"{float(t)!r} {s:.4f}" for t, s in zip(times[i], spars, strict=True)]
    p = tmp_path_factory.mktemp("db") / "t.txt"
    p.write_text("\n".join(lines) + "\n")
    t = read_spdy_timings(p)
    assert t.names == [f"layer{i}.conv" for i in range(L)]
    for i in range(L):
        np.testing.assert_array_equal(t.times[i], times[i])
        np.testing.assert_allclose(t.sparsities[i], spars)
    assert t.dense_time == base and t.base_time == pytest.approx(0.01)
