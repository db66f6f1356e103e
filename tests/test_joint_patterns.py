"""The joint choice of pattern per unit: exact against brute force, budgets, the time model,
the table of a (tiny, random) BERT, and the choice applied to a copy."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pruneopt.adapters import joint_patterns as jp
from pruneopt.adapters.calibration import cosine_to, embed
from pruneopt.adapters.nm import is_nm
from pruneopt.adapters.timing_tables import TimingTable, read_timing_rows

PATTERNS = ["dense", "heads", "2:4", "t2:4", "unstructured"]
SPARS = [0.0, 0.5, 0.5, 0.5, 0.9]


def random_table(seed: int, L: int, scale: float = 1.0) -> TimingTable:
    rng = np.random.default_rng(seed)
    times, errs = [], []
    for _ in range(L):
        dense = rng.uniform(0.5, 2.0)
        times.append(dense * np.concatenate([[1.0], rng.uniform(0.3, 1.1, len(PATTERNS) - 1)]))
        errs.append(np.concatenate([[0.0], rng.uniform(0, 1, len(PATTERNS) - 1)]))
    dense_time = sum(t[0] for t in times) + 0.5
    return TimingTable([f"u{i}" for i in range(L)], [PATTERNS] * L, [SPARS] * L,
                       [t * scale for t in times], dense_time * scale, 0.5 * scale, errors=errs)


def brute(table: TimingTable, speedup: float, allowed=None):
    """(best error, levels) over every choice of levels within the budget (the
    formulation's: its budget, up to its float tolerance of the cost scale)."""
    p = table.problem(speedup)
    b = p.budget + p.tolerance
    best = (np.inf, None)
    ranges = [[k for k, p in enumerate(ps) if allowed is None or p in allowed or p == "dense"]
              for ps in table.patterns]
    for lv in itertools.product(*ranges):
        t = sum(table.times[i][k] for i, k in enumerate(lv))
        if t <= b:
            e = sum(table.errors[i][k] for i, k in enumerate(lv))
            if e < best[0]:
                best = (e, np.array(lv))
    return best


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), L=st.integers(1, 4), frac=st.floats(0.0, 1.0),
       family=st.sampled_from([None, "widths", "2:4", "t2:4", "unstructured"]))
def test_exact_equals_brute_force_and_within_budget(seed, L, frac, family):
    table = random_table(seed, L)
    allowed = None if family is None else jp.FAMILIES[family]
    sub = table if allowed is None else jp.restrict(table, allowed)[0]
    top = sub.max_speedup()
    target = 1.0 + frac * (top - 1.0) * 0.999
    want, _ = brute(table, target, allowed)
    lv, sol = jp.choose(table, target, patterns=allowed)
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert table.predicted_speedup(lv) >= target * (1 - 1e-9)  # never over budget
    if allowed is not None:
        assert all(table.patterns[i][k] in allowed + ("dense",) for i, k in enumerate(lv))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), factor=st.floats(1e-5, 1e5), frac=st.floats(0.05, 0.95))
def test_scaling_all_times_gives_the_same_levels(seed, factor, frac):
    a, b = random_table(seed, 4), random_table(seed, 4, scale=factor)
    target = 1.0 + frac * (a.max_speedup() - 1.0)
    la, sa = jp.choose(a, target)
    lb, sb = jp.choose(b, target)
    assert sa.status == sb.status == "optimal"
    np.testing.assert_array_equal(la, lb)


def test_out_of_reach_names_the_best_speedup():
    table = random_table(0, 3)
    sub, _ = jp.restrict(table, jp.FAMILIES["2:4"])
    with pytest.raises(ValueError, match=f"at most {sub.max_speedup():.4f}x"):
        jp.choose(table, sub.max_speedup() * 1.01, patterns=jp.FAMILIES["2:4"])


def nm_table(mode: str) -> TimingTable:
    pats = ["dense", "neurons", "2:4", "t2:4", "4:8"]
    return TimingTable(["u0", "u1"], [pats, pats], [[0, 0.5, 0.5, 0.5, 0.5]] * 2,
                       [[1.0, 0.6, 1.0, 1.0, 1.0], [2.0, 1.2, 2.0, 2.0, 2.0]], 4.0, 0.5,
                       meta={"mode": mode, "gemm_seconds": [0.8, 3.0]})


def test_time_model_inference_and_training():
    a = 1.6
    inf = jp.modelled_nm_times(nm_table("inference"), {"2:4": a, "t2:4": a})
    # inference: both save g (1 - 1/a); 4:8 has no entry and keeps its time
    np.testing.assert_allclose(inf.times[0], [1.0, 0.6, 1 - 0.8 * (1 - 1 / a),
                                              1 - 0.8 * (1 - 1 / a), 1.0])
    tr = jp.modelled_nm_times(nm_table("training"), {"2:4": a, "t2:4": a})
    # training: plain N:M a third of the GEMM time, transposable two thirds
    np.testing.assert_allclose(tr.times[0][2:4], [1 - 0.8 / 3 * (1 - 1 / a),
                                                  1 - 0.8 * 2 / 3 * (1 - 1 / a)])
    # GEMM seconds above the unit's time (noise) are clipped to it: times stay > 0
    assert tr.times[1][3] == pytest.approx(2 - 2 * 2 / 3 * (1 - 1 / a))
    with pytest.raises(ValueError, match="speedup >= 1"):
        jp.modelled_nm_times(nm_table("inference"), {"2:4": 0.5})
    with pytest.raises(ValueError, match="gemm_seconds"):
        jp.modelled_nm_times(TimingTable(["u"], [["dense"]], [[0]], [[1.0]], 2.0,
                                         meta={"mode": "inference"}), {"2:4": 1.5})


def test_times_from_another_table_through_the_rows_import(tmp_path):
    table = nm_table("inference")
    table.errors = [np.array([0, 0.1, 0.2, 0.3, 0.1])] * 2
    lines = ["# dense_time = 3.0", "# base_time = 0.25", "layer,pattern,sparsity,seconds"]
    for n, ps, ss in zip(table.names, table.patterns, table.sparsities, strict=True):
        lines += [f"{n},{p},{s:g},{0.5 + 0.1 * k}" for k, (p, s) in enumerate(zip(ps, ss,
                                                                                   strict=True))]
    (tmp_path / "gpu.csv").write_text("\n".join(lines))
    gpu = jp.with_times(table, read_timing_rows(tmp_path / "gpu.csv"))
    np.testing.assert_allclose(gpu.times[1], [0.5, 0.6, 0.7, 0.8, 0.9])
    assert (gpu.dense_time, gpu.base_time) == (3.0, 0.25)
    for a, b in zip(gpu.errors, table.errors, strict=True):
        np.testing.assert_array_equal(a, b)
    (tmp_path / "short.csv").write_text("\n".join(lines[:-1]))
    with pytest.raises(ValueError, match="has no level 4:8@0.5"):
        jp.with_times(table, read_timing_rows(tmp_path / "short.csv", same_levels=False))


# -- a tiny random BERT: the measured table and the choice applied -------------------------

@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)
    model = BertModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 50, (4, 12), generator=g),
                "attention_mask": torch.ones(4, 12, dtype=torch.long)}]
    return model, batches


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_joint_table_of_a_bert(tiny_bert, mode):
    model, batches = tiny_bert
    before = copy.deepcopy(model.state_dict())
    table = jp.joint_table(model, batches, mode=mode, repeats=1, progress=False)
    assert table.names == ["block0.attention", "block0.ffn", "block1.attention", "block1.ffn"]
    assert table.labels(0)[:4] == ["dense", "heads@0.25", "heads@0.5", "heads@0.75"]
    assert ("unstructured" in table.patterns[1]) == (mode == "inference")
    for t, e, ps in zip(table.times, table.errors, table.patterns, strict=True):
        assert e[0] == 0 and (e >= 0).all() and (t > 0).all()
        nm = [k for k, p in enumerate(ps) if p in ("2:4", "4:8", "t2:4", "t4:8")]
        np.testing.assert_array_equal(t[nm], t[0])  # no fast N:M kernel here: dense time
    assert len(table.meta["gemm_seconds"]) == 4 and table.meta["mode"] == mode
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the model is not modified


def test_choice_applied_to_a_copy(tiny_bert):
    model, batches = tiny_bert
    table = jp.joint_table(model, batches, repeats=1, progress=False)
    want = {"block0.attention": "t2:4", "block0.ffn": "neurons", "block1.attention": "heads",
            "block1.ffn": "2:4"}
    lv = [table.patterns[i].index(want[n]) for i, n in enumerate(table.names)]
    before = copy.deepcopy(model.state_dict())
    pruned = jp.apply_levels(model, table, lv)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    L0, L1 = pruned.encoder.layer
    for lin in (L0.attention.self.query, L0.attention.self.key, L0.attention.self.value,
                L0.attention.output.dense):
        assert is_nm(lin.weight != 0, 2, 4, transposable=True)
    assert L0.intermediate.dense.out_features == 64 - 16  # neurons@0.25
    assert L1.attention.self.query.out_features == 32 - 8  # heads@0.25: 1 of 4 heads
    assert is_nm(L1.intermediate.dense.weight != 0, 2, 4, transposable=False)
    # the unit errors were measured one unit at a time: a single unit's change reproduces it
    one = [lv[0], 0, 0, 0]
    cos = cosine_to(embed(model, batches), embed(jp.apply_levels(model, table, one), batches))
    assert 1 - cos == pytest.approx(table.errors[0][lv[0]], abs=1e-5)
    with pytest.raises(ValueError, match="outside"):
        jp.apply_levels(model, table, [99, 0, 0, 0])


def test_unstructured_choice_applied_as_csr_in_inference_mode(tiny_bert):
    from pruneopt.adapters.pattern_variants import CsrLinear

    model, batches = tiny_bert
    table = jp.joint_table(model, batches, repeats=1, progress=False)  # inference mode
    lv = [0, table.patterns[1].index("unstructured"), 0, 0]  # block0.ffn unstructured
    csr = jp.apply_levels(model, table, lv)
    dense = jp.apply_levels(model, table, lv, csr=False)
    ffn = csr.encoder.layer[0]
    assert isinstance(ffn.intermediate.dense, CsrLinear)
    assert isinstance(ffn.output.dense, CsrLinear)
    assert not isinstance(dense.encoder.layer[0].intermediate.dense, CsrLinear)
    torch.testing.assert_close(embed(csr, batches), embed(dense, batches), rtol=1e-5,
                               atol=1e-5)


def test_csr_level_computes_what_the_zeroed_weights_compute(tiny_bert):
    from pruneopt.adapters.bert_surgery import units_of
    from pruneopt.adapters.pattern_variants import CsrLinear, level_modules

    model, _ = tiny_bert
    blk = model.encoder.layer[0]
    ffn = units_of(model)[1]
    dense_mods = level_modules(blk, ffn, "unstructured", 0.9)
    csr_mods = level_modules(blk, ffn, "unstructured", 0.9, csr=True)
    assert isinstance(csr_mods[0].dense, CsrLinear) and isinstance(csr_mods[1].dense, CsrLinear)
    w = dense_mods[0].dense.weight
    assert float((w == 0).float().mean()) == pytest.approx(0.9, abs=0.01)
    x = torch.randn(3, 5, 32)
    with torch.no_grad():
        a = dense_mods[1](dense_mods[0](x), x)
        b = csr_mods[1](csr_mods[0](x), x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not apply"):
        level_modules(blk, ffn, "heads", 0.25)
    with pytest.raises(ValueError, match="unknown pattern"):
        level_modules(blk, ffn, "3:7", 0.5)
