"""Safetensors checkpoints of any size, read and written tensor by tensor.

A checkpoint is a ``.safetensors`` file, a folder holding ``model.safetensors`` or a sharded
``model.safetensors.index.json`` (``{"weight_map": {tensor name: shard file}}``), or that
index file itself. :func:`open_checkpoint` checks it before any work -- every shard exists,
its header parses, the file holds all the bytes its header promises (a truncated shard is
refused), and every tensor the index names is in its shard -- and returns a
:class:`Checkpoint`: names, shapes and dtypes from the headers, no tensor data read.

A safetensors file is ``u64 little-endian header length | JSON header | data``, the header
giving each tensor's ``dtype``, ``shape`` and ``data_offsets`` ``[begin, end)`` in the data.
:class:`ShardWriter` writes one such file as it goes: the header (known from the input's
headers, masking changes no shape or dtype) first, then each tensor's bytes in header order,
so only the tensor being written is in memory.

:func:`read_tensor` opens a shard memory-mapped (``safetensors.safe_open``) and copies out one
tensor; worker processes call it themselves, so only a tensor's name travels to a worker and
only its packed mask (1 bit per weight) comes back.

:class:`StagedOutput` makes the run's outputs appear whole or not at all: the shards are
written into a hidden temporary folder next to the output, renamed into place (with the
report) only when everything is written; any failure removes the folder and leaves nothing
at the output path. A stage left by a killed process is removed by the next run writing
into the same folder (:func:`remove_stale_stages`).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pruneopt.adapters.files import check_outputs, pid_alive

#: The index file of a sharded checkpoint (the Hugging Face name).
INDEX_NAME = "model.safetensors.index.json"
#: The file of an unsharded checkpoint folder.
SINGLE_NAME = "model.safetensors"
#: Bytes per element of each safetensors dtype.
ITEM_SIZE: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
#: safetensors dtype -> torch dtype name (for a meta tensor that stands for the real one).
TORCH_DTYPE: dict[str, str] = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn", "I16": "int16", "U16": "uint16", "F16": "float16",
    "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32", "I64": "int64",
    "U64": "uint64", "F64": "float64",
}
MAX_HEADER = 100_000_000  # bytes; safetensors' own limit
#: A stage folder of :class:`StagedOutput` (or its report beside it), by writer process id.
STAGE_PATTERN = re.compile(r"^\..+\.(?P<pid>[1-9][0-9]*)\.[0-9a-f]{8}\.partial(\.report)?$")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a checkpoint: its shard file, dtype (safetensors name), shape, bytes."""

    name: str
    shard: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


@dataclass
class Checkpoint:
    """A checked safetensors checkpoint (see :func:`open_checkpoint`).

    ``folder`` holds the shard files; ``shards`` maps each shard file name to its tensor names
    in file order; ``tensors`` maps a name to its :class:`TensorInfo` (index order for a
    sharded checkpoint, file order otherwise); ``metadata`` is each shard's
    ``__metadata__``; ``sharded`` says whether an index file describes it.
    """

    folder: Path
    shards: dict[str, list[str]]
    tensors: dict[str, TensorInfo]
    metadata: dict[str, dict[str, str]]
    sharded: bool

    def path(self, name: str) -> str:
        """The shard file holding tensor ``name``."""
        return str(self.folder / self.tensors[name].shard)

    def meta_tensors(self) -> dict[str, Any]:
        """``{name: tensor on the meta device}`` of the right shape and dtype (no data), for
        selection rules that look at ``dim()`` and ``is_floating_point()``."""
        import torch

        return {k: torch.empty(t.shape, dtype=getattr(torch, TORCH_DTYPE[t.dtype]),
                               device="meta") for k, t in self.tensors.items()}

    @property
    def total_size(self) -> int:
        """Bytes of tensor data over all shards (the index's ``metadata.total_size``)."""
        return sum(t.nbytes for t in self.tensors.values())


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """``(header dict, data start offset)`` of a safetensors file; ``ValueError`` when the
    file is missing, its header is malformed, or the file is shorter than its header says
    (truncated)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"shard {str(path)!r} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"shard {str(path)!r} is truncated ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise ValueError(f"shard {str(path)!r} is truncated or not safetensors (header "
                             f"of {n} bytes in a file of {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"shard {str(path)!r} has a malformed header: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError(f"shard {str(path)!r} has a malformed header (not a JSON object)")
    end = 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            b, e = (int(x) for x in v["data_offsets"])
            dtype, shape = v["dtype"], tuple(int(s) for s in v["shape"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"shard {str(path)!r}: entry {k!r} of the header is malformed") \
                from None
        if dtype not in ITEM_SIZE:
            raise ValueError(f"shard {str(path)!r}: tensor {k!r} has dtype {dtype!r}, which "
                             f"this reader does not know ({', '.join(ITEM_SIZE)})")
        if e - b != math.prod(shape) * ITEM_SIZE[dtype] or b < 0:
            raise ValueError(f"shard {str(path)!r}: tensor {k!r} has offsets {[b, e]} that do "
                             f"not fit its shape {list(shape)} and dtype {dtype}")
        end = max(end, e)
    if 8 + n + end > size:
        raise ValueError(f"shard {str(path)!r} is truncated: its header needs "
                         f"{8 + n + end} bytes, the file has {size}")
    return header, 8 + n


def is_checkpoint_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a safetensors checkpoint (a ``.safetensors`` file, an index
    json, or a folder) rather than a ``.pt``-style file."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() == ".safetensors" or p.name.endswith(".index.json")


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The checked checkpoint at ``path`` (module docstring); ``ValueError`` naming the
    problem for a missing path, a missing or truncated shard, a malformed index, or an index
    naming tensors absent from their shard."""
    p = Path(path)
    if p.is_dir():
        if (p / INDEX_NAME).is_file():
            index = p / INDEX_NAME
        elif (p / SINGLE_NAME).is_file():
            return _from_files(p, [SINGLE_NAME], None)
        else:
            raise ValueError(f"folder {str(p)!r} holds neither {INDEX_NAME} nor {SINGLE_NAME}")
    elif p.name.endswith(".index.json"):
        index = p
    elif p.suffix.lower() == ".safetensors":
        if not p.is_file():
            raise ValueError(f"MODEL file {str(p)!r} does not exist")
        return _from_files(p.parent, [p.name], None)
    else:
        raise ValueError(f"MODEL {str(p)!r} is not a .safetensors file, an index json or a "
                         "checkpoint folder")
    if not index.is_file():
        raise ValueError(f"index file {str(index)!r} does not exist")
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"index file {str(index)!r} is not a safetensors index (a JSON object "
                         "with a non-empty 'weight_map' of tensor name -> shard file)") from None
    for shard in set(weight_map.values()):
        if Path(shard).name != shard:
            raise ValueError(f"index file {str(index)!r} names shard {shard!r} outside its "
                             "folder; shards must sit next to the index")
    return _from_files(index.parent, list(dict.fromkeys(weight_map.values())), weight_map)


def _from_files(folder: Path, files: Sequence[str], weight_map: Mapping[str, str] | None
                ) -> Checkpoint:
    shards: dict[str, list[str]] = {}
    infos: dict[str, TensorInfo] = {}
    metadata: dict[str, dict[str, str]] = {}
    for shard in files:
        header, _ = read_header(folder / shard)
        metadata[shard] = dict(header.pop("__metadata__", None) or {})
        order = sorted(header, key=lambda k: header[k]["data_offsets"][0])
        shards[shard] = order
        for k in order:
            v = header[k]
            shape = tuple(int(s) for s in v["shape"])
            infos[k] = TensorInfo(k, shard, v["dtype"], shape,
                                  math.prod(shape) * ITEM_SIZE[v["dtype"]])
    if weight_map is not None:
        absent = [k for k, s in weight_map.items() if k not in shards[s]]
        if absent:
            more = f" (and {len(absent) - 3} more)" if len(absent) > 3 else ""
            raise ValueError(f"the index names tensors absent from their shard: "
                             f"{', '.join(f'{k} in {weight_map[k]}' for k in absent[:3])}{more}")
        shards = {s: [k for k in names if weight_map.get(k) == s] for s, names in shards.items()}
        infos = {k: infos[k] for k in weight_map}
    if not infos:
        raise ValueError(f"checkpoint {str(folder / files[0])!r} holds no tensor")
    return Checkpoint(folder, shards, infos, metadata, weight_map is not None)


def read_tensor(path: str, name: str):
    """Tensor ``name`` of the safetensors file ``path`` (memory-mapped; only it is read)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return f.get_tensor(name)


def tensor_bytes(t) -> memoryview:
    """The raw little-endian bytes of tensor ``t`` (any dtype, made contiguous)."""
    import torch

    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


class ShardWriter:
    """Writes one safetensors file tensor by tensor: ``ShardWriter(f, infos, metadata)``
    writes the header for ``infos`` (in that order) to the binary file ``f``; then
    :meth:`add` each tensor in the same order; :meth:`close` checks all were written."""

    def __init__(self, f: IO[bytes], infos: Sequence[TensorInfo],
                 metadata: Mapping[str, str] | None = None) -> None:
        header: dict[str, Any] = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        for t in infos:
            header[t.name] = {"dtype": t.dtype, "shape": list(t.shape),
                              "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        self._f, self._todo, self._next = f, list(infos), 0

    def add(self, name: str, tensor) -> None:
        """Write tensor ``name`` (the next one of the header, same shape and byte size)."""
        want = self._todo[self._next]
        data = tensor_bytes(tensor)
        if name != want.name or data.nbytes != want.nbytes:
            raise ValueError(f"shard writer expected {want.name!r} ({want.nbytes} bytes), got "
                             f"{name!r} ({data.nbytes} bytes)")
        self._f.write(data)
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._todo):
            raise ValueError(f"shard closed after {self._next} of {len(self._todo)} tensors")


def index_json(shards: Mapping[str, Sequence[TensorInfo]]) -> bytes:
    """The ``model.safetensors.index.json`` of output ``shards`` (file name -> tensors)."""
    weight_map = {t.name: s for s, infos in shards.items() for t in infos}
    total = sum(t.nbytes for infos in shards.values() for t in infos)
    return json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                      indent=2).encode()


def remove_stale_stages(folder: str | os.PathLike) -> list[Path]:
    """Remove the stage folders (and reports) in ``folder`` left by :class:`StagedOutput`
    writers that are no longer running (killed mid-run); returns what was removed."""
    removed = []
    for p in Path(folder).iterdir():
        hit = STAGE_PATTERN.match(p.name)
        if not hit:
            continue
        if pid_alive(int(hit["pid"])):
            continue  # still running (or not ours to signal): leave it
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


class StagedOutput:
    """A checkpoint output (a ``.safetensors`` file or a folder) and a report file, written
    into temporaries next to them and renamed into place together by :meth:`commit`.

    ``StagedOutput(out, report)``: ``out`` must not exist if it is a folder (a file is
    replaced); :attr:`stage` is the hidden temporary folder next to ``out`` (named
    ``.{out name}.{pid}.{random}.partial``) where the caller writes the shards
    (:meth:`data_path`); as a context manager any exception removes everything written.
    ``report=None``: no report file beside the output (a folder output that carries its own
    report inside, written by the caller like any other file of the stage).
    """

    def __init__(self, out: str | os.PathLike, report: str | os.PathLike | None,
                 inputs: Sequence[str | os.PathLike] = ()) -> None:
        self.out = Path(out)
        self.report = None if report is None else Path(report)
        self.is_file = self.out.suffix.lower() == ".safetensors"
        if self.out.exists() and (not self.is_file or self.out.is_dir()):
            raise ValueError(f"output -o {str(self.out)!r} already exists; a checkpoint folder "
                             "is written only to a new path")
        if self.report is None and self.is_file:
            raise ValueError("a .safetensors output needs a report path beside it")
        # folders exist and are writable, the report is a file, no output is an input or the
        # other output
        paths = {"output -o": self.out, "--report": self.report}
        paths = {k: v for k, v in paths.items() if v is not None}
        check_outputs(paths, inputs={f"input {str(i)!r}": i for i in inputs})
        for i in inputs:
            ip = Path(i).resolve()
            for label, p in paths.items():
                if p.resolve() == ip or ip in p.resolve().parents:
                    raise ValueError(f"{label} {str(p)!r} is (inside) the input {str(i)!r}; "
                                     "the input is never modified: choose another path")
                if p.resolve() in ip.parents and not self.is_file:
                    raise ValueError(f"{label} {str(p)!r} contains the input {str(i)!r}")
        self.stage = self.out.parent / f".{self.out.name}.{os.getpid()}." \
                                       f"{secrets.token_hex(4)}.partial"

    def data_path(self, shard: str) -> Path:
        """Where to write output shard ``shard`` inside the stage."""
        return self.stage / shard

    def finished_rows(self, shard: str) -> list[dict[str, Any]] | None:
        """The report rows of ``shard`` if an earlier run already wrote it into this stage
        (None: write it; a plain stage never resumes)."""
        return None

    def shard_finished(self, shard: str, rows: list[dict[str, Any]]) -> None:
        """Called once output shard ``shard`` is written and closed, with its report rows
        (a plain stage keeps nothing)."""

    def __enter__(self) -> StagedOutput:
        remove_stale_stages(self.out.parent)
        self.stage.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.stage, ignore_errors=True)

    def commit(self, report: bytes | None = None) -> None:
        """Write the report, then rename the output and the report into place; on failure
        nothing is left at either path (an existing report/file target stays as it was).
        Without a report path (``report=None`` at construction) only the output is renamed."""
        if self.report is None:
            self._commit_folder()
            return
        rep_tmp = self.stage / ".report.json"
        try:
            with open(rep_tmp, "wb") as f:
                f.write(report or b"")
            self._sync()
            if self.is_file:
                os.replace(self.stage / self.out.name, self.out)
            else:
                os.rename(rep_tmp, self.stage.parent / f"{self.stage.name}.report")
                rep_tmp = self.stage.parent / f"{self.stage.name}.report"
                os.rename(self.stage, self.out)
            try:
                os.replace(rep_tmp, self.report)
            except OSError:
                if self.is_file:
                    self.out.unlink(missing_ok=True)
                else:
                    shutil.rmtree(self.out, ignore_errors=True)
                raise
        except OSError as exc:
            Path(rep_tmp).unlink(missing_ok=True)
            raise ValueError(f"cannot write {str(self.out)!r}: {exc.strerror or exc}; nothing "
                             "was written") from None
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)

    def _sync(self) -> None:
        """Every file of the stage flushed to disk, with the umask's permissions."""
        umask = os.umask(0)
        os.umask(umask)
        for p in sorted(self.stage.rglob("*")):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
                os.chmod(p, 0o666 & ~umask)

    def _commit_folder(self) -> None:
        """The stage renamed to the output folder (no report beside it)."""
        try:
            self._sync()
            os.rename(self.stage, self.out)
        except OSError as exc:
            raise ValueError(f"cannot write {str(self.out)!r}: {exc.strerror or exc}; nothing "
                             "was written") from None
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)
