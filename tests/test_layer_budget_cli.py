"""``pruneopt budget``: plain and SPDY tables to levels (JSON), clean errors on bad input."""

from __future__ import annotations

import json

import pytest
from cases_layer_budget import brute_layer_budget

from pruneopt.cli import main
from pruneopt.formulations import LayerBudget


def _run(capsys, *argv):
    code = main(["budget", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_plain_table(tmp_path, capsys):
    t = {"costs": [[3, 2, 1], [2, 1], [5]], "errors": [[0, 1, 3], [0, 2], [1]], "budget": 9,
         "names": ["a", "b", "c"]}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(t))
    code, out, _ = _run(capsys, path)
    assert code == 0
    res = json.loads(out)
    p = LayerBudget(t["costs"], t["errors"], 9)
    assert res["status"] == "optimal" and res["objective"] == brute_layer_budget(p)
    assert res["cost"] <= 9 and res["names"] == ["a", "b", "c"]
    # --budget overrides; --out writes the file; other solvers by name
    out_path = tmp_path / "levels.json"
    code, out, _ = _run(capsys, path, "--budget", 8, "--solver", "greedy", "--out", out_path)
    assert code == 0 and out == ""
    res = json.loads(out_path.read_text())
    assert res["solver"] == "greedy" and res["cost"] <= 8


def test_spdy_table(tmp_path, capsys):
    table = {"units": [{"block": 0, "kind": "attention", "size": 4},
                       {"block": 0, "kind": "ffn", "size": 8}],
             "removed": [[0, 1, 2], [0, 4]], "times": [[4.0, 3.0, 2.0], [6.0, 3.0]],
             "errors": [[0.0, 0.1, 0.5], [0.0, 0.2]], "dense_time": 12.0, "base_time": 2.0}
    path = tmp_path / "spdy.json"
    path.write_text(json.dumps(table))
    code, out, _ = _run(capsys, path, "--speedup", 1.2)
    assert code == 0
    res = json.loads(out)
    # unit budget 12 / 1.2 - 2 = 8: (0, 1) costs 7 and errs 0.2, the least of all that fit
    assert res["levels"] == [0, 1] and res["removed"] == [0, 4]
    assert res["predicted_speedup"] >= 1.2
    code, _, err = _run(capsys, path)
    assert code == 2 and "--speedup" in err
    code, _, err = _run(capsys, path, "--speedup", 5)
    assert code == 2 and "out of reach" in err


@pytest.mark.parametrize(("content", "match"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"costs": [[1, 2]]}', "needs 'costs' and 'errors'"),
    ('{"costs": [[1, 2]], "errors": [[1, 2]]}', "no budget"),
    ('{"costs": [[1, 2]], "errors": [[1]], "budget": 3}', "levels but errors has"),
    ('{"costs": [[1, -2]], "errors": [[1, 2]], "budget": 3}', ">= 0"),
    ('{"costs": [[1, 2]], "errors": [[1, NaN]], "budget": 3}', "NaN"),
    ('{"costs": [[1, 2], []], "errors": [[1, 2], []], "budget": 3}', "empty"),
    ('{"costs": [[2, 3]], "errors": [[1, 2]], "budget": 1}', "minimum achievable cost"),
])
def test_bad_tables(tmp_path, capsys, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = _run(capsys, path)
    assert code == 2 and match in err and out == ""


def test_missing_file_and_no_table(tmp_path, capsys):
    code, _, err = _run(capsys, tmp_path / "nope.json")
    assert code == 2 and "cannot read" in err
    code, _, err = _run(capsys)
    assert code == 2 and "TABLE" in err
