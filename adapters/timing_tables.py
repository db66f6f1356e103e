"""Timing tables: per layer, the measured seconds of every (pattern, sparsity) level.

A :class:`TimingTable` holds, for every prunable layer ``l``, its levels ``k`` (a pattern
name such as ``"dense"``, ``"unstructured"``, ``"2:4"``, ``"t2:4"`` or ``"neurons"``, and a
sparsity in [0, 1): the fraction of weights or elements removed), the seconds ``t[l][k] > 0``
the layer takes at that level, optional errors ``e[l][k]``, the model's dense end-to-end
seconds ``T`` and the seconds ``T_out`` spent outside the prunable layers. Level 0 of
every layer is its dense level (pattern ``"dense"``, sparsity 0). A speedup target ``s``
is the budget on the layers' summed time::

    sum_l t[l][k_l] <= T / s - T_out,

the :class:`~pruneopt.formulations.LayerBudget` of :meth:`TimingTable.problem`. The largest
reachable speedup is ``T / (T_out + sum_l min_k t[l][k])``.

Readers (every one strict: a malformed line, a non-positive or non-finite time, a layer
without its dense level, a duplicate layer or level, or a layer missing a level the others
have is a ``ValueError`` naming the line):

- :func:`read_spdy_timings`: the plain text databases of the SPDY reference code
  (Frantar & Alistarh 2022, IST-DASLab/spdy ``timings/*.txt``): a line ``base``, the dense
  end-to-end seconds ``T``; a line ``prunable``, the seconds of the prunable layers (so
  ``T_out = T - prunable``); then per layer a line with its name and lines
  ``<seconds> <sparsity>``. Sparsity 0 is the dense level, any other is ``"unstructured"``.
- :func:`read_timing_rows`: tables measured elsewhere (e.g. on a GPU with 2:4 kernels), as
  CSV with the header ``layer,pattern,sparsity,seconds`` (comment lines ``# dense_time =
  X`` and ``# base_time = Y`` give ``T`` and ``T_out``) or JSON ``{"dense_time": X,
  "base_time": Y, "rows": [{"layer", "pattern", "sparsity", "seconds"}, ...]}``. Without
  ``dense_time`` the model is taken to be its layers plus ``base_time`` (default 0).

Tables save as JSON (:meth:`TimingTable.save`, whole or not at all) and load back
(:meth:`TimingTable.load`) with the same checks.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pruneopt.adapters.files import atomic_write
from pruneopt.adapters.speedup_budget import SpeedupBudget

__all__ = ["TimingTable", "from_unit_table", "read_spdy_timings", "read_timing_rows"]

DENSE = "dense"
FORMAT = "pruneopt.timing_table"


def level_label(pattern: str, sparsity: float) -> str:
    """``"dense"`` for the dense level, else ``"<pattern>@<sparsity>"`` (e.g. ``"2:4@0.5"``)."""
    return DENSE if pattern == DENSE else f"{pattern}@{sparsity:.4g}"


@dataclass
class TimingTable(SpeedupBudget):
    """Per-layer levels ``(patterns[l][k], sparsities[l][k])`` and seconds ``times[l][k]``.

    ``errors[l][k]``: the error with only layer ``l`` at level ``k`` (None until known);
    ``dense_time``: the dense model's end-to-end seconds ``T``; ``base_time``: the seconds
    outside the prunable layers ``T_out`` (``0 <= T_out < T``); ``meta``: free JSON-ready
    notes (source, hardware, repairs). ``ValueError`` on inconsistent data.
    """

    names: list[str]
    patterns: list[list[str]]
    sparsities: list[np.ndarray]
    times: list[np.ndarray]
    dense_time: float
    base_time: float = 0.0
    errors: list[np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    NO_ERRORS = "pass errors= (one array per layer) or fill table.errors"

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0:
            raise ValueError("a timing table needs at least one layer")
        if len(set(self.names)) != n:
            dup = next(x for x in self.names if self.names.count(x) > 1)
            raise ValueError(f"layer {dup!r} appears twice; every layer needs a unique name")
        self.patterns = [[str(p) for p in ps] for ps in self.patterns]
        self.sparsities = [np.asarray(s, dtype=float) for s in self.sparsities]
        self.times = [np.asarray(t, dtype=float) for t in self.times]
        if self.errors is not None:
            self.errors = [np.asarray(e, dtype=float) for e in self.errors]
        rows = [self.patterns, self.sparsities, self.times] + (
            [self.errors] if self.errors is not None else [])
        if any(len(r) != n for r in rows):
            raise ValueError(f"names, patterns, sparsities, times (and errors) need one entry "
                             f"per layer ({n})")
        for i, name in enumerate(self.names):
            sizes = {len(r[i]) for r in rows}
            if len(sizes) != 1 or 0 in sizes:
                raise ValueError(f"layer {name!r}: patterns, sparsities, times (and errors) "
                                 "need the same, non-zero number of levels")
            t, s = self.times[i], self.sparsities[i]
            if not (np.isfinite(t).all() and (t > 0).all()):
                raise ValueError(f"layer {name!r}: times must be finite and > 0 seconds, got "
                                 f"min {t.min():g}")
            if not (np.isfinite(s).all() and (s >= 0).all() and (s < 1).all()):
                raise ValueError(f"layer {name!r}: sparsities must be in [0, 1)")
            if self.patterns[i][0] != DENSE or s[0] != 0:
                raise ValueError(f"layer {name!r}: level 0 must be the dense level (pattern "
                                 f"'dense', sparsity 0), got {self.patterns[i][0]!r} at "
                                 f"{s[0]:g}")
            keys = list(zip(self.patterns[i], s.tolist(), strict=True))
            if len(set(keys)) != len(keys):
                raise ValueError(f"layer {name!r}: a (pattern, sparsity) level appears twice")
            if self.errors is not None and not np.isfinite(self.errors[i]).all():
                raise ValueError(f"layer {name!r}: errors must be finite")
        self.dense_time = float(self.dense_time)
        self.base_time = float(self.base_time)
        if not (math.isfinite(self.dense_time) and self.dense_time > 0):
            raise ValueError(f"dense_time must be finite and > 0 seconds, got {self.dense_time}")
        if not (math.isfinite(self.base_time) and 0 <= self.base_time < self.dense_time):
            raise ValueError(f"base_time must be in [0, dense_time = {self.dense_time:g}) "
                             f"seconds, got {self.base_time}")

    # -- levels and budgets ---------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.names)

    @property
    def layer_names(self) -> list[str]:
        return list(self.names)

    def labels(self, layer: int) -> list[str]:
        """The level labels of layer ``layer`` (:func:`level_label`)."""
        return [level_label(p, float(s))
                for p, s in zip(self.patterns[layer], self.sparsities[layer], strict=True)]

    # -- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The table as a JSON-ready dict."""
        layers = []
        for i, name in enumerate(self.names):
            lv = [{"pattern": p, "sparsity": float(s), "seconds": float(t)}
                  for p, s, t in zip(self.patterns[i], self.sparsities[i], self.times[i],
                                     strict=True)]
            if self.errors is not None:
                for d, e in zip(lv, self.errors[i], strict=True):
                    d["error"] = float(e)
            layers.append({"name": name, "levels": lv})
        return {"format": FORMAT, "version": 1, "dense_time": self.dense_time,
                "base_time": self.base_time, "layers": layers, "meta": self.meta}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TimingTable:
        """The table from :meth:`to_json`'s dict; ``ValueError`` on a missing or bad field."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a timing table: expected a JSON object with format {FORMAT!r}")
        try:
            layers = d["layers"]
            with_err = bool(layers) and all("error" in lv for x in layers for lv in x["levels"])
            return cls(names=[str(x["name"]) for x in layers],
                       patterns=[[str(lv["pattern"]) for lv in x["levels"]] for x in layers],
                       sparsities=[[float(lv["sparsity"]) for lv in x["levels"]] for x in layers],
                       times=[[float(lv["seconds"]) for lv in x["levels"]] for x in layers],
                       errors=[[float(lv["error"]) for lv in x["levels"]] for x in layers]
                       if with_err else None,
                       dense_time=float(d["dense_time"]), base_time=float(d["base_time"]),
                       meta=dict(d.get("meta", {})))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a timing table: missing or bad field {exc}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON, whole or not at all."""
        text = json.dumps(self.to_json(), indent=1).encode()
        atomic_write(path, lambda f: f.write(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TimingTable:
        """Read a table written by :meth:`save` (``ValueError`` if it is not one)."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read timing table {str(path)!r}: {exc}") from None
        return cls.from_json(d)


#: pattern names of structured unit kinds (BERT's ``Unit.kind``); other kinds keep their name
UNIT_PATTERNS = {"attention": "heads", "ffn": "neurons"}


def from_unit_table(table: Any) -> TimingTable:
    """A :class:`TimingTable` from a table of structured units (the SPDY table of
    :mod:`pruneopt.adapters.spdy_table`: ``units`` with ``name``/``kind``/``size``,
    ``removed[l][k]`` elements removed, ``times``, ``errors``, ``dense_time``,
    ``base_time``): level ``k`` of unit ``l`` is pattern ``heads`` / ``neurons`` (or the
    unit's kind) at sparsity ``removed[l][k] / size``."""
    names, pats, sps = [], [], []
    for u, r in zip(table.units, table.removed, strict=True):
        r = np.asarray(r)
        names.append(str(u.name))
        pats.append([DENSE if k == 0 else UNIT_PATTERNS.get(u.kind, str(u.kind)) for k in r])
        sps.append(r / float(u.size))
    return TimingTable(names, pats, sps, [np.asarray(t, dtype=float) for t in table.times],
                       float(table.dense_time), float(table.base_time),
                       errors=None if table.errors is None else list(table.errors),
                       meta={**dict(getattr(table, "meta", {}) or {}), "from": "unit table"})


# -- readers ------------------------------------------------------------------------------
def positive_seconds(text: str, where: str) -> float:
    """``text`` as a finite time > 0, or ``ValueError`` naming ``where``."""
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{where}: time {text!r} must be finite and > 0 seconds")
    return v


def assemble(rows: dict[str, list[tuple[str, float, float, str]]], dense_time: float | None,
             base_time: float, same_levels: bool, meta: dict[str, Any],
             repairs: list[str] | None = None) -> TimingTable:
    """A table from ``rows[layer] = [(pattern, sparsity, seconds, where), ...]``: the dense
    level first, then the file's order; ``same_levels``: every layer must have the union of
    all layers' levels (``ValueError`` naming the first layer that misses one).

    ``repairs`` (a list, to be filled with what was repaired): instead of raising, a level
    given twice keeps its last line (as the SPDY reference's dictionaries do)."""
    if not rows:
        raise ValueError("the timing file has no layers")
    grid: dict[tuple[str, float], None] = {}
    for name in list(rows):
        lv = rows[name]
        dense = [r for r in lv if r[0] == DENSE]
        if not dense:
            raise ValueError(f"{lv[0][3] if lv else 'layer ' + repr(name)}: layer {name!r} has "
                             "no dense level (sparsity 0)")
        seen: dict[tuple[str, float], int] = {}
        kept: list[tuple[str, float, float, str]] = []
        for r in lv:
            p, s, _, where = r
            if (p, s) in seen:
                if repairs is None:
                    raise ValueError(f"{where}: layer {name!r} has level {level_label(p, s)} "
                                     f"twice (first at {kept[seen[(p, s)]][3]})")
                repairs.append(f"{where}: level {level_label(p, s)} of {name!r} given again; "
                               f"this line replaces {kept[seen[(p, s)]][3]}")
                kept[seen[(p, s)]] = r
                continue
            seen[(p, s)] = len(kept)
            kept.append(r)
            grid.setdefault((p, s), None)
        rows[name] = kept
    if same_levels:
        for name, lv in rows.items():
            missing = set(grid) - {(p, s) for p, s, _, _ in lv}
            if missing:
                p, s = sorted(missing)[0]
                raise ValueError(f"{lv[0][3]}: layer {name!r} misses level "
                                 f"{level_label(p, s)} that other layers have "
                                 f"({len(missing)} missing in all)")
    names, pats, sps, times = [], [], [], []
    for name, lv in rows.items():
        lv = sorted(lv, key=lambda r: r[0] != DENSE)  # stable: the dense level first
        names.append(name)
        pats.append([r[0] for r in lv])
        sps.append([r[1] for r in lv])
        times.append([r[2] for r in lv])
    if dense_time is None:
        dense_time = base_time + sum(t[0] for t in times)
    return TimingTable(names, pats, sps, times, dense_time, base_time, meta=meta)


def read_spdy_timings(path: str | os.PathLike, *, repair: bool = False) -> TimingTable:
    """Read an SPDY reference timing database (plain text; see the module docstring).

    ``T`` is the ``base`` value and ``T_out = base - prunable``. Level sparsities are the
    file's numbers; sparsity 0 is ``"dense"``, the others ``"unstructured"``. Strict:
    ``ValueError`` with the line number for a malformed line, a time that is not finite and
    positive, a sparsity outside [0, 1), a duplicate layer or level, a layer without the
    dense level or missing a level the other layers have.

    ``repair=True`` reads the files the reference itself reads leniently (three of its eight
    databases): a level given twice keeps its last line (the reference's dictionaries do the
    same), a layer name with no level lines is dropped (the reference keeps only the layers of
    its weight database) and a layer with fewer levels keeps its own (a ragged table). Every
    repair is listed, with its line, in ``table.meta["repairs"]``; malformed lines and bad
    numbers are still errors."""
    p = Path(path)
    repairs: list[str] | None = [] if repair else None
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read SPDY timing file {str(path)!r}: {exc}") from None
    src = p.name
    head = [(i, ln.strip()) for i, ln in enumerate(lines, 1)][:4]
    if len(head) < 4 or head[0][1] != "base" or head[2][1] != "prunable":
        raise ValueError(f"{src}: an SPDY timing file starts with the lines 'base', <seconds>, "
                         "'prunable', <seconds>")
    total = positive_seconds(head[1][1], f"{src}:2")
    prunable = positive_seconds(head[3][1], f"{src}:4")
    if prunable > total:
        raise ValueError(f"{src}:4: prunable time {prunable:g} exceeds the model's {total:g}")
    rows: dict[str, list[tuple[str, float, float, str]]] = {}
    first: dict[str, int] = {}
    cur: str | None = None
    for i, raw in enumerate(lines[4:], 5):
        line = raw.strip()
        if not line:
            continue
        where = f"{src}:{i}"
        parts = line.split()
        if len(parts) == 1:
            try:
                float(parts[0])
            except ValueError:
                pass
            else:
                raise ValueError(f"{where}: a lone number; level lines are '<seconds> "
                                 "<sparsity>'")
            if cur is not None and not rows[cur] and repairs is None:
                raise ValueError(f"{src}:{first[cur]}: layer {cur!r} has no levels")
            cur = parts[0]
            if cur in rows:
                raise ValueError(f"{where}: layer {cur!r} appears twice (first at line "
                                 f"{first[cur]})")
            rows[cur], first[cur] = [], i
            continue
        if len(parts) != 2:
            raise ValueError(f"{where}: expected '<seconds> <sparsity>' or a layer name, got "
                             f"{line!r}")
        if cur is None:
            raise ValueError(f"{where}: a level line before the first layer name")
        t = positive_seconds(parts[0], where)
        try:
            s = float(parts[1])
        except ValueError:
            raise ValueError(f"{where}: sparsity {parts[1]!r} is not a number") from None
        if not (math.isfinite(s) and 0 <= s < 1):
            raise ValueError(f"{where}: sparsity {parts[1]!r} must be in [0, 1)")
        rows[cur].append((DENSE if s == 0 else "unstructured", s, t, where))
    if cur is not None and not rows[cur] and repairs is None:
        raise ValueError(f"{src}:{first[cur]}: layer {cur!r} has no levels")
    if repairs is not None:
        for name in [n for n, lv in rows.items() if not lv]:
            repairs.append(f"{src}:{first[name]}: layer {name!r} has no levels; dropped")
            del rows[name]
    meta = {"source": str(p), "format": "spdy-timings", "prunable": prunable}
    table = assemble(rows, total, total - prunable, repairs is None, meta, repairs)
    if repairs is not None:
        counts = [t.size for t in table.times]
        most = max(set(counts), key=counts.count)
        repairs.extend(f"layer {n!r} has {c} levels, the others {most}; kept as it is"
                       for n, c in zip(table.names, counts, strict=True) if c != most)
        table.meta["repairs"] = repairs
    return table


ROW_FIELDS = ("layer", "pattern", "sparsity", "seconds")


def read_timing_rows(path: str | os.PathLike, *, same_levels: bool = True,
                     dense_time: float | None = None, base_time: float | None = None
                     ) -> TimingTable:
    """Read a timing table measured elsewhere: CSV or JSON rows (layer, pattern, sparsity,
    seconds), see the module docstring. The dense level of a layer is pattern ``"dense"``
    (sparsity 0). ``same_levels``: every layer must have every level (set False when layers
    of different kinds have different patterns). ``dense_time`` / ``base_time`` override the
    file's. Strict: ``ValueError`` naming the line (CSV) or row (JSON)."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read timing file {str(path)!r}: {exc}") from None
    meta: dict[str, Any] = {"source": str(p), "format": "rows"}
    items: list[tuple[str, dict[str, Any]]] = []
    file_dense = file_base = None
    if p.suffix.lower() == ".json":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p.name}: not JSON: {exc}") from None
        if not isinstance(d, dict) or not isinstance(d.get("rows"), list):
            raise ValueError(f"{p.name}: expected an object with a 'rows' list")
        file_dense, file_base = d.get("dense_time"), d.get("base_time")
        meta.update({k: v for k, v in d.items() if k not in ("rows", "dense_time", "base_time")})
        for j, r in enumerate(d["rows"]):
            if not isinstance(r, dict):
                raise ValueError(f"{p.name}: row {j} is not an object")
            items.append((f"{p.name}: row {j}", r))
    else:
        body = []
        for i, raw in enumerate(text.splitlines(), 1):
            s = raw.strip()
            if s.startswith("#"):
                key, _, val = s[1:].partition("=")
                if key.strip() in ("dense_time", "base_time"):
                    try:
                        v = float(val)
                    except ValueError:
                        raise ValueError(f"{p.name}:{i}: {key.strip()} {val.strip()!r} is not "
                                         "a number") from None
                    if key.strip() == "dense_time":
                        file_dense = v
                    else:
                        file_base = v
            elif s:
                body.append((i, raw))
        if not body:
            raise ValueError(f"{p.name}: no rows")
        reader = csv.reader(io.StringIO("\n".join(r for _, r in body)))
        header = [h.strip() for h in next(reader)]
        if tuple(header) != ROW_FIELDS:
            raise ValueError(f"{p.name}:{body[0][0]}: the header must be "
                             f"{','.join(ROW_FIELDS)}, got {','.join(header)}")
        for (i, _), r in zip(body[1:], reader, strict=True):
            if len(r) != len(ROW_FIELDS):
                raise ValueError(f"{p.name}:{i}: expected {len(ROW_FIELDS)} fields, got {len(r)}")
            items.append((f"{p.name}:{i}", dict(zip(ROW_FIELDS, (x.strip() for x in r),
                                                    strict=True))))
    rows: dict[str, list[tuple[str, float, float, str]]] = {}
    for where, r in items:
        missing = [f for f in ROW_FIELDS if f not in r]
        if missing:
            raise ValueError(f"{where}: missing field {missing[0]!r}")
        name, pat = str(r["layer"]).strip(), str(r["pattern"]).strip()
        if not name or not pat:
            raise ValueError(f"{where}: empty layer or pattern")
        try:
            s = float(r["sparsity"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: sparsity {r['sparsity']!r} is not a number") from None
        if not (math.isfinite(s) and 0 <= s < 1):
            raise ValueError(f"{where}: sparsity {r['sparsity']!r} must be in [0, 1)")
        if (pat == DENSE) != (s == 0):
            raise ValueError(f"{where}: the dense level is pattern 'dense' at sparsity 0 (got "
                             f"{pat!r} at {s:g})")
        t = positive_seconds(str(r["seconds"]), where)
        rows.setdefault(name, []).append((pat, s, t, where))
    dt = dense_time if dense_time is not None else file_dense
    bt = base_time if base_time is not None else (file_base if file_base is not None else 0.0)
    try:
        bt = float(bt)
        dt = None if dt is None else float(dt)
    except (TypeError, ValueError):
        raise ValueError(f"{p.name}: dense_time and base_time must be numbers") from None
    return assemble(rows, dt, bt, same_levels, meta)
