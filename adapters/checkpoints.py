"""Saved state_dicts (``.pt``/``.pth``/``.bin`` and ``.safetensors``): read, mask, write.

- :func:`load_state_dict` -- a flat ``{name: tensor}`` from a file (``torch.load`` with
  ``weights_only=True``, or safetensors); bad files raise ``ValueError``.
- :func:`select_tensors` -- which tensors get N:M masks: by default every floating
  ``*.weight`` with >= 2 dimensions whose name matches no pattern of
  :data:`pruneopt.adapters.nm.DEFAULT_EXCLUDE` (embeddings, pooler, output heads), or the
  tensors named by ``patterns``; the default-excluded ones come back with the reason.
- :func:`mask_state_dict` -- a masked copy (the input is not modified) and one
  :class:`~pruneopt.adapters.nm.LayerReport` per candidate tensor.
- :func:`save_state_dict` / :func:`state_dict_writer` -- write a state_dict whole or not at
  all (:mod:`pruneopt.adapters.files`), in the format chosen by the file's suffix.
- :func:`shared_tensors` -- groups of tensors sharing memory (tied weights), which
  ``.safetensors`` cannot store.

A 4-D convolution weight [out, in, kh, kw] is masked as the matrix [out, in * kh * kw].
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pruneopt.adapters.files import Writer, atomic_write

#: Suffixes read and written with ``torch.load`` / ``torch.save``.
TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin")
#: Suffixes read and written with safetensors.
SAFE_SUFFIXES: tuple[str, ...] = (".safetensors",)
#: Every suffix a state_dict file may have.
SUFFIXES: tuple[str, ...] = TORCH_SUFFIXES + SAFE_SUFFIXES


def checkpoint_format(path: str | os.PathLike, what: str = "state_dict file") -> str:
    """``"torch"`` or ``"safetensors"``, by the suffix of ``path`` (case-insensitive);
    ``ValueError`` naming ``what`` for any other suffix."""
    path = Path(path)
    suf = path.suffix.lower()
    if suf in TORCH_SUFFIXES:
        return "torch"
    if suf in SAFE_SUFFIXES:
        return "safetensors"
    raise ValueError(f"{what} {str(path)!r} must end in one of {', '.join(SUFFIXES)}")


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A flat ``{name: tensor}`` from a ``.pt``/``.pth``/``.bin`` file (``torch.load`` with
    ``weights_only=True``, on the CPU) or a ``.safetensors`` file.

    ``ValueError`` for a missing or unreadable file, an unknown suffix, or a file that is not
    a non-empty flat mapping of names to tensors (a training checkpoint holding the
    state_dict under a key is named as such).
    """
    import torch

    path = Path(path)
    fmt = checkpoint_format(path, "MODEL")
    if not path.is_file():
        raise ValueError(f"MODEL file {str(path)!r} does not exist")
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad input file
        msg = " ".join(str(e).split())
        raise ValueError(f"cannot read {str(path)!r} as a {fmt} state_dict: {msg}") from None
    if not isinstance(sd, Mapping) or not sd:
        raise ValueError(f"{str(path)!r} does not hold a state_dict (a non-empty mapping of "
                         f"names to tensors); save one with torch.save(model.state_dict(), ...)")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        hint = (f"; it looks like a checkpoint: save its {bad[0]!r} entry on its own"
                if isinstance(sd.get(bad[0]), Mapping) else "")
        raise ValueError(f"{str(path)!r} is not a flat state_dict: entries {bad[:3]} are not "
                         f"name -> tensor{hint}")
    return dict(sd)


def shared_tensors(sd: Mapping[str, Any]) -> list[list[str]]:
    """Groups (sorted names, two or more) of tensors of ``sd`` whose memory overlaps: tied
    weights, or views of one another. Tensors on the meta device and empty ones never share.
    """
    by_storage: dict[tuple, list[tuple[int, int, str]]] = defaultdict(list)
    for name, t in sd.items():
        if t.device.type == "meta" or t.numel() == 0:
            continue
        start = t.data_ptr()
        extent = sum((s - 1) * st for s, st in zip(t.shape, t.stride(), strict=True)) + 1
        stop = start + extent * t.element_size()
        by_storage[(t.device, t.untyped_storage().data_ptr())].append((start, stop, name))
    groups: list[list[str]] = []
    for areas in by_storage.values():
        areas.sort()
        current, last_stop = [areas[0][2]], areas[0][1]
        for start, stop, name in areas[1:]:
            if start < last_stop:
                current.append(name)
            else:
                if len(current) > 1:
                    groups.append(sorted(current))
                current = [name]
            last_stop = max(last_stop, stop)
        if len(current) > 1:
            groups.append(sorted(current))
    return sorted(groups)


def check_safetensors_storable(sd: Mapping[str, Any], path: str | os.PathLike,
                               names: Iterable[str] | None = None) -> None:
    """``ValueError`` if tensors of ``sd`` (only those in ``names``, if given) share memory:
    ``.safetensors`` stores every tensor separately and refuses tied weights."""
    if names is not None:
        keep = set(names)
        sd = {k: v for k, v in sd.items() if k in keep}
    groups = shared_tensors(sd)
    if groups:
        shown = "; ".join(", ".join(g) for g in groups[:3])
        more = f" (and {len(groups) - 3} more groups)" if len(groups) > 3 else ""
        raise ValueError(f"tensors share memory (tied weights: {shown}{more}); "
                         f"{str(path)!r} is .safetensors, which cannot store shared tensors: "
                         "write a .pt output instead")


def state_dict_writer(sd: Mapping[str, Any], path: str | os.PathLike) -> Writer:
    """A writer (for :class:`pruneopt.adapters.files.OutputSet`) of ``sd`` in the format of
    ``path``'s suffix. For ``.safetensors`` the file's bytes are built here, so shared
    tensors and other refusals raise ``ValueError`` before any file is touched."""
    import torch

    if checkpoint_format(path, "output") == "safetensors":
        from safetensors.torch import save

        tensors = {k: v.contiguous() for k, v in sd.items()}
        check_safetensors_storable(tensors, path)
        try:
            data = save(tensors)
        except (RuntimeError, ValueError) as e:
            msg = " ".join(str(e).split())
            raise ValueError(f"cannot write {str(path)!r} as safetensors: {msg}") from None
        return lambda f: f.write(data)
    plain = dict(sd)

    def write(f) -> None:
        rec = _WriteErrors(f)
        try:
            torch.save(plain, rec)
        except RuntimeError:
            if rec.error is not None:  # torch reports a failed write as a RuntimeError
                raise rec.error from None
            raise

    return write


class _WriteErrors:
    """A binary file that remembers the ``OSError`` of a failed write (disk full, file too
    large), which ``torch.save`` would otherwise turn into an unhelpful ``RuntimeError``."""

    def __init__(self, f) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()


def save_state_dict(sd: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``sd`` whole or not at all as ``.pt``/``.pth``/``.bin`` or ``.safetensors``
    (chosen by the suffix); ``ValueError`` for an unknown suffix, a missing folder, or tied
    tensors written to ``.safetensors``."""
    atomic_write(path, state_dict_writer(sd, path))


def _matches(name: str, patterns: Sequence[str], regex: bool) -> str | None:
    for p in patterns:
        if re.search(p, name) if regex else fnmatch.fnmatchcase(name, p):
            return p
    return None


def select_tensors(
    sd: Mapping[str, Any],
    patterns: Sequence[str] | None = None,
    *,
    regex: bool = False,
    exclude: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Which tensors of ``sd`` to mask: ``(names, skipped)``, in ``sd``'s order.

    Only floating tensors with >= 2 dimensions are candidates. Without ``patterns``: those
    named ``weight`` or ``*.weight``, minus any whose name matches an ``exclude`` pattern
    (default :data:`pruneopt.adapters.nm.DEFAULT_EXCLUDE`); ``skipped`` maps each excluded
    name to the reason. With ``patterns`` (fnmatch, or regular expressions searched in the
    name when ``regex=True``): exactly the candidates matching one of them, and ``exclude``
    is not applied. ``ValueError`` for an invalid regular expression or when nothing matches.
    """
    from pruneopt.adapters.nm import DEFAULT_EXCLUDE

    if regex:
        for p in patterns or []:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"invalid regular expression {p!r}: {e}") from None
    exclude = DEFAULT_EXCLUDE if exclude is None else tuple(exclude)
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name, t in sd.items():
        if t.dim() < 2 or not t.is_floating_point():
            continue
        if patterns:
            if _matches(name, patterns, regex):
                names.append(name)
            continue
        if not (name == "weight" or name.endswith(".weight")):
            continue
        hit = _matches(name, exclude, False)
        if hit:
            skipped[name] = (f"matches the default exclusion {hit!r} (embeddings, pooler and "
                             "heads stay dense); name it with --pattern to mask it")
        else:
            names.append(name)
    if not names:
        what = f"patterns {list(patterns)}" if patterns else "the default (*.weight, >= 2-D)"
        excluded = f"; excluded by default: {list(skipped)[:5]}" if skipped else ""
        raise ValueError(f"no floating tensor with >= 2 dimensions matches {what}{excluded}; "
                         f"keys look like {list(sd)[:5]}")
    return names, skipped


def mask_state_dict(
    sd: Mapping[str, Any],
    n: int = 2,
    m: int = 4,
    *,
    transposable: bool = True,
    solver: str | None = None,
    time_limit: float | None = None,
    patterns: Sequence[str] | None = None,
    regex: bool = False,
    exclude: Sequence[str] | None = None,
    pad: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], list]:
    """Masked copy of ``sd`` (the input is not modified) and the per-tensor report rows.

    The tensors chosen by :func:`select_tensors` (``patterns``, ``regex``, ``exclude``) get
    N:M masks, transposable by default (as :func:`pruneopt.adapters.nm.compute_nm_masks`):
    each masked tensor is a new tensor ``w * mask`` with zeros in place; every other tensor is
    the input's own object. ``solver`` (``None``: the registry's default) and ``time_limit``
    (seconds, per tensor) go to :func:`pruneopt.solve`; ``pad`` pads shapes not divisible by
    ``m`` instead of skipping them. The rows (:class:`pruneopt.adapters.nm.LayerReport`, one
    per selected tensor, then one per default-excluded tensor, ``status="skipped"`` with the
    reason) are in the order of ``sd``.
    """
    from tqdm import tqdm

    from pruneopt.adapters.nm import LayerReport, nm_mask
    from pruneopt.formulations.nm import validate_nm

    n, m = validate_nm(n, m)
    names, excluded = select_tensors(sd, patterns, regex=regex, exclude=exclude)
    out = dict(sd)
    rows = {}
    for name in tqdm(names, desc=f"{n}:{m} masks", unit="tensor", disable=not progress,
                     leave=False):
        w = sd[name]
        mask, rep = nm_mask(w, n, m, transposable=transposable, solver=solver,
                            time_limit=time_limit, pad=pad, name=name)
        rows[name] = rep
        if mask is not None:
            out[name] = w * mask.to(w.device)  # a new tensor: the input stays as it was
    for name, reason in excluded.items():
        w = sd[name]
        rows[name] = LayerReport(name=name, shape=tuple(w.shape),
                                 matrix_shape=(int(w.shape[0]), math.prod(w.shape[1:])),
                                 n=n, m=m, transposable=bool(transposable), skipped=reason)
    return out, [rows[k] for k in sd if k in rows]


# ------------------------------------------------------------------ streaming checkpoints

#: Weights per window of parallel solves (their packed masks, 1 bit each, are held until the
#: window is written): 2**31 bits = 256 MB, a few LLM matrices' worth of fp16 weights ~ 4 GB.
WINDOW_WEIGHTS = 2**31


#: Weights per band of rows solved at once by :class:`MaskJob` (2**22: a 4096 x 1024 band;
#: the solve's float64 copies of it take tens of MB, not the GBs of a whole LLM matrix).
BAND_WEIGHTS = 2**22


def merge_reports(parts: Sequence[Any], whole: Any) -> Any:
    """One :class:`~pruneopt.adapters.nm.LayerReport` for a tensor solved in row bands:
    ``whole`` (its name and shapes) with the bands' kept score, total score, bound and
    seconds summed (each is a sum over the m x m blocks, or rows, that the bands split),
    density weighted by band size, status ``"optimal"`` only if every band's is."""
    kept = sum(r.kept_score for r in parts)
    total = sum(r.total_score for r in parts)
    bound = sum(r.bound for r in parts)
    statuses = [r.status for r in parts]
    whole.solver = ",".join(dict.fromkeys(r.solver for r in parts))
    whole.status = "optimal" if all(s == "optimal" for s in statuses) else next(
        s for s in statuses if s != "optimal")
    whole.seconds = sum(r.seconds for r in parts)
    whole.kept_score, whole.total_score, whole.bound = kept, total, max(bound, kept)
    whole.kept_ratio = kept / total if total > 0 else None
    whole.bound_ratio = kept / whole.bound if whole.bound > 0 else 1.0
    sizes = [math.prod(r.shape) for r in parts]
    whole.density = sum(r.density * k for r, k in zip(parts, sizes, strict=True)) / sum(sizes)
    whole.padded = any(r.padded for r in parts)
    whole.info = dict(parts[0].info, bands=len(parts))
    return whole


@dataclass(frozen=True)
class MaskJob:
    """The N:M mask of one tensor of a safetensors file, as a picklable task:
    ``job((path, name))`` opens ``path`` memory-mapped, reads only ``name``, and returns
    ``(packed mask bits or None, LayerReport)`` (``numpy.packbits`` of the flat boolean
    mask; ``None`` when the tensor is skipped).

    A tensor of more than ``band_weights`` weights is solved in bands of whole rows (a
    multiple of ``m`` rows each, so every m x m block of a transposable mask, and every
    group of a plain one, lies in one band): the N:M problems of distinct blocks share no
    variable, so the bands' optimal masks together are an optimal mask of the tensor, and
    the memory of a solve is that of one band. ``time_limit`` (seconds per tensor) is
    shared among the bands by their size. A tensor that any band would skip is passed
    whole to :func:`~pruneopt.adapters.nm.nm_mask`, whose report then says why.
    """

    n: int
    m: int
    transposable: bool = True
    solver: str | None = None
    time_limit: float | None = None
    pad: bool = False
    band_weights: int = BAND_WEIGHTS

    def solve(self, w, name: str, time_limit: float | None):
        from pruneopt.adapters.nm import nm_mask

        return nm_mask(w, self.n, self.m, transposable=self.transposable, solver=self.solver,
                       time_limit=time_limit, pad=self.pad, name=name)

    def __call__(self, item: tuple[str, str]) -> tuple[Any, Any]:
        import numpy as np

        from pruneopt.adapters.nm import LayerReport
        from pruneopt.adapters.streaming import read_tensor

        path, name = item
        w = read_tensor(path, name)
        rows = int(w.shape[0]) if w.dim() >= 2 else 0
        per_row = max(1, w.numel() // max(rows, 1))
        band = max(self.m, self.band_weights // per_row // self.m * self.m)
        if rows <= band:
            mask, rep = self.solve(w, name, self.time_limit)
            return (None if mask is None else np.packbits(mask.numpy().reshape(-1))), rep
        masks, parts = [], []
        for a in range(0, rows, band):
            share = None if self.time_limit is None else \
                self.time_limit * min(band, rows - a) / rows
            mask, rep = self.solve(w[a:a + band], f"{name}[{a}:{a + band}]", share)
            if mask is None:  # the whole tensor's own report says why
                mask, rep = self.solve(w, name, self.time_limit)
                return (None if mask is None else np.packbits(mask.numpy().reshape(-1))), rep
            masks.append(mask.numpy())
            parts.append(rep)
        whole = LayerReport(name=name, shape=tuple(w.shape),
                            matrix_shape=(rows, math.prod(w.shape[1:])), n=self.n, m=self.m,
                            transposable=bool(self.transposable), skipped=None)
        bits = np.packbits(np.concatenate([k.reshape(-1) for k in masks]))
        return bits, merge_reports(parts, whole)


def output_shards(ckpt, out: str | os.PathLike) -> dict[str, list]:
    """The output's shard files -> :class:`~pruneopt.adapters.streaming.TensorInfo` lists:
    one file named like ``out`` for a ``.safetensors`` output; for a folder, the input's
    shards (same names and contents) or ``model.safetensors`` for an unsharded input."""
    from pruneopt.adapters.streaming import SINGLE_NAME

    out = Path(out)
    if out.suffix.lower() in SAFE_SUFFIXES:
        return {out.name: list(ckpt.tensors.values())}
    if not ckpt.sharded:
        return {SINGLE_NAME: list(ckpt.tensors.values())}
    return {s: [ckpt.tensors[k] for k in names] for s, names in ckpt.shards.items()}


def _windows(names: Sequence[str], sizes: Mapping[str, int], parallel: bool) -> list[list[str]]:
    if not parallel:
        return [[k] for k in names]
    out: list[list[str]] = [[]]
    used = 0
    for k in names:
        if out[-1] and used + sizes[k] > WINDOW_WEIGHTS:
            out.append([])
            used = 0
        out[-1].append(k)
        used += sizes[k]
    return [w for w in out if w]


def mask_checkpoint(
    ckpt,
    stage,
    n: int = 2,
    m: int = 4,
    *,
    transposable: bool = True,
    solver: str | None = None,
    time_limit: float | None = None,
    patterns: Sequence[str] | None = None,
    regex: bool = False,
    exclude: Sequence[str] | None = None,
    pad: bool = False,
    executor: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
) -> list:
    """Mask a checked safetensors checkpoint (:func:`pruneopt.adapters.streaming.open_checkpoint`)
    tensor by tensor into ``stage`` (a :class:`~pruneopt.adapters.streaming.StagedOutput`,
    entered); returns the report rows, as :func:`mask_state_dict` does for a state_dict.

    Selection and masks are those of :func:`mask_state_dict` (the same tensors, masks and
    ``w * mask`` values). The solves run through
    :func:`pruneopt.solvers.executors.map_tasks` on ``executor`` (``None``: one tensor at a
    time in this process; ``"processes"``/``"ray"``: windows of at most
    :data:`WINDOW_WEIGHTS` weights, each task opening the file itself, so a tensor's name
    goes out and only its packed mask comes back; on Ray every node must see the input path).
    Memory: the tensor being masked and written, its solve, plus one window of packed masks.
    One pool or Ray session serves all the windows
    (:func:`~pruneopt.solvers.executors.executor_session`).
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from pruneopt.adapters.nm import LayerReport
    from pruneopt.adapters.streaming import INDEX_NAME, ShardWriter, index_json, read_tensor
    from pruneopt.formulations.nm import validate_nm
    from pruneopt.solvers.executors import check_executor, executor_session, map_tasks

    n, m = validate_nm(n, m)
    check_executor(executor)
    metas = ckpt.meta_tensors()
    names, excluded = select_tensors(metas, patterns, regex=regex, exclude=exclude)
    shards = output_shards(ckpt, stage.out)
    chosen = set(names)
    resumed = {sh: stage.finished_rows(sh) for sh in shards}
    resumed = {sh: r for sh, r in resumed.items() if r is not None}
    todo = [k for sh, infos in shards.items() if sh not in resumed
            for k in (t.name for t in infos) if k in chosen]
    sizes = {k: math.prod(ckpt.tensors[k].shape) for k in todo}
    job = MaskJob(n, m, transposable, solver, time_limit, pad)
    windows = iter(_windows(todo, sizes, executor is not None))
    ready: dict[str, tuple[Any, Any]] = {}
    rows: dict[str, Any] = {}

    def result(name: str) -> tuple[Any, Any]:
        while name not in ready:
            window = next(windows)
            got = map_tasks(job, [(ckpt.path(k), k) for k in window], executor=executor,
                            workers=workers, address=address)
            ready.update(zip(window, got, strict=True))
        return ready.pop(name)

    metadata = next(iter(ckpt.metadata.values()), {}) if len(shards) == 1 else {}
    with executor_session(executor, workers, address), \
            tqdm(total=len(chosen), desc=f"{n}:{m} masks", unit="tensor", disable=not progress,
                 leave=False) as bar:
        for shard, infos in shards.items():
            if shard in resumed:  # written whole by an earlier run of the same job
                for d in resumed[shard]:
                    rows[d["name"]] = LayerReport.from_dict(d)
                bar.update(len(resumed[shard]))
                continue
            meta = ckpt.metadata.get(shard, metadata)
            with open(stage.data_path(shard), "wb") as f:
                writer = ShardWriter(f, infos, meta)
                for info in infos:
                    w = read_tensor(ckpt.path(info.name), info.name)
                    if info.name in chosen:
                        packed, rep = result(info.name)
                        rows[info.name] = rep
                        if packed is not None:
                            bits = np.unpackbits(packed, count=w.numel()).astype(bool)
                            w = w * torch.from_numpy(bits.reshape(w.shape))
                        bar.update()
                    writer.add(info.name, w)
                    del w
                writer.close()
            stage.shard_finished(shard, [rows[t.name].as_dict() for t in infos
                                         if t.name in chosen])
    if ckpt.sharded and not stage.is_file:
        stage.data_path(INDEX_NAME).write_bytes(index_json(shards))
    for name, reason in excluded.items():
        t = metas[name]
        rows[name] = LayerReport(name=name, shape=tuple(t.shape),
                                 matrix_shape=(int(t.shape[0]), math.prod(t.shape[1:])),
                                 n=n, m=m, transposable=bool(transposable), skipped=reason)
    return [rows[k] for k in ckpt.tensors if k in rows]
