"""Files written whole or not at all, and ``.npy`` input/output, for the adapters and commands.

- :class:`OutputSet` -- the two-phase writer: every output path is checked before any work
  (its folder exists and is writable, it is not a directory, its suffix is one the caller
  supports, it names no input file and no other output), each output is written to a hidden
  temporary file next to its target, and only when all of them are written are they renamed
  over their targets. On any failure every temporary file is removed and the targets are left
  as they were: the outputs appear all together or not at all.
- :func:`write_all` / :func:`atomic_write` -- the same for outputs whose contents are ready.
- :func:`check_outputs` -- the checks alone.
- :func:`load_npy` / :func:`save_npy` / :func:`npy_writer` -- ``.npy`` arrays (never pickles).

Temporary files are named ``.{name}.{pid}.{random}.tmp`` (the target's name, the writing
process's id). A process killed during a write (SIGKILL, power loss) leaves its temporary file
behind; the next write into the same folder removes the temporaries of that naming whose
process is no longer alive (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

PathLike = str | os.PathLike
Writer = Callable[[IO[bytes]], Any]

#: The temporaries this module writes: ``.{target name}.{pid}.{8 random characters}.tmp``.
TEMP_PATTERN = re.compile(r"^\..+\.(?P<pid>[1-9][0-9]*)\.[a-z0-9_]{8}\.tmp$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile's, so TEMP_PATTERN matches both


def _folder(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (this one, or one we may not signal, counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: no signal, only the existence check
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: PathLike) -> list[Path]:
    """Remove the temporaries of this module's naming (:data:`TEMP_PATTERN`) in ``folder``
    whose writing process is no longer alive; returns the removed paths.

    Best effort: files that cannot be inspected or removed are left alone. Only regular files
    are touched. On Windows (no cheap liveness check) nothing is removed.
    """
    if os.name == "nt":
        return []
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = TEMP_PATTERN.match(entry.name)
        if not match or pid_alive(int(match["pid"])):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _temp_name(path: Path) -> str:
    token = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    return str(_folder(path) / f".{path.name}.{os.getpid()}.{token}.tmp")


def _link_backup(path: Path) -> str | None:
    """A hard link (named like a temporary) to the file at ``path``, or ``None`` when the file
    system has no hard links (then that target cannot be restored after a later failure)."""
    for _ in range(100):
        name = _temp_name(path)
        try:
            os.link(path, name)
            return name
        except FileExistsError:
            continue
        except OSError:
            return None
    return None


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Mapping[str, PathLike],
    *,
    inputs: Mapping[str, PathLike | None] | None = None,
    suffixes: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Path]:
    """Check output paths before any work; returns them as ``{label: Path}``.

    ``outputs`` and ``inputs`` map a label used in the messages (``"output -o"``,
    ``"--features"``) to a path (``None`` inputs are ignored). ``suffixes[label]`` lists the
    accepted suffixes of that output (case-insensitive; absent: any). Raises ``ValueError``
    when an output's folder does not exist or is not writable, the output is an existing
    directory, its suffix is not accepted, it is the same file as an input (same resolved
    path, or the same file through a link), or two outputs are the same file.
    """
    suffixes = suffixes or {}
    ins = {k: Path(v) for k, v in (inputs or {}).items() if v is not None}
    outs = {k: Path(v) for k, v in outputs.items()}
    for label, path in outs.items():
        allowed = tuple(s.lower() for s in suffixes.get(label, ()))
        if allowed and path.suffix.lower() not in allowed:
            raise ValueError(f"{label} {str(path)!r} must end in one of {', '.join(allowed)}")
        if path.is_dir():
            raise ValueError(f"{label} {str(path)!r} is a directory; give a file name")
        folder = _folder(path)
        if not folder.is_dir():
            raise ValueError(f"output folder {str(folder)!r} of {label} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"output folder {str(folder)!r} of {label} is not writable")
        for in_label, in_path in ins.items():
            if _same_file(path, in_path):
                raise ValueError(f"{label} {str(path)!r} is the input {in_label}; writing it "
                                 "would destroy the input: choose another output path")
    labels = list(outs)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if _same_file(outs[a], outs[b]):
                raise ValueError(f"{a} and {b} are the same file {str(outs[a])!r}; the "
                                 "outputs must differ")
    return outs


class OutputSet:
    """Two-phase writer of several output files: all of them, or none.

    ``OutputSet(outputs, inputs=..., suffixes=...)`` runs :func:`check_outputs` at once (so
    construct it before any work). As a context manager it creates one temporary file per
    output on entry (which proves the folders writable), :meth:`write` fills them, and a
    normal exit renames every temporary over its target (``os.replace``); an exception, or an
    output left unwritten, removes all temporaries and leaves every target untouched.

    >>> with OutputSet({"output": "kept.npy", "report": "r.json"}) as out:  # doctest: +SKIP
    ...     out.write("output", npy_writer(kept))
    ...     out.write("report", lambda f: f.write(text.encode()))
    """

    def __init__(
        self,
        outputs: Mapping[str, PathLike],
        *,
        inputs: Mapping[str, PathLike | None] | None = None,
        suffixes: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.paths: dict[str, Path] = check_outputs(outputs, inputs=inputs, suffixes=suffixes)
        self._tmp: dict[str, str] = {}
        self._written: set[str] = set()

    def open(self) -> None:
        """Remove stale temporaries in the output folders and create the temporary files."""
        for folder in {_folder(p).resolve() for p in self.paths.values()}:
            remove_stale_temporaries(folder)
        try:
            for label, path in self.paths.items():
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                           dir=_folder(path))
                os.close(fd)
                self._tmp[label] = tmp
        except OSError as exc:
            self.discard()
            raise ValueError(f"cannot write {label} {str(path)!r}: "
                             f"{exc.strerror or exc}") from None

    def write(self, label: str, write: Writer) -> None:
        """Run ``write(binary_file)`` on the temporary file of output ``label``."""
        if label not in self._tmp:
            raise KeyError(f"{label!r} is not an open output of this OutputSet")
        try:
            with open(self._tmp[label], "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise ValueError(f"cannot write {label} {str(self.paths[label])!r}: "
                             f"{exc.strerror or exc}") from None
        self._written.add(label)

    def commit(self) -> None:
        """Give the temporaries the usual permissions (umask) and rename them all over their
        targets. Each rename is atomic; if one fails, the targets renamed before it are put
        back as they were (the old files are kept as hard links until the end)."""
        missing = [k for k in self.paths if k not in self._written]
        if missing:
            self.discard()
            raise RuntimeError(f"outputs {missing} were never written; nothing was written")
        umask = os.umask(0)
        os.umask(umask)
        labels = list(self.paths)
        # (target, hard link to its old file or None, whether it existed before)
        done: list[tuple[Path, str | None, bool]] = []
        path = None
        try:
            for i, label in enumerate(labels):
                path = self.paths[label]
                tmp = self._tmp[label]
                os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
                existed = path.exists()
                backup = None
                if existed and i < len(labels) - 1:  # the last rename needs no undo
                    backup = _link_backup(path)
                os.replace(tmp, path)
                del self._tmp[label]
                done.append((path, backup, existed))
        except OSError as exc:
            kept = []
            for target, backup, existed in reversed(done):
                try:
                    if backup is not None:
                        os.replace(backup, target)
                    elif not existed:
                        os.unlink(target)
                    else:
                        kept.append(str(target))  # no hard links here: the old file is gone
                except OSError:
                    kept.append(str(target))
            self.discard()
            changed = f"already replaced: {kept}" if kept else "no output was changed"
            raise ValueError(f"cannot write {str(path)!r}: {exc.strerror or exc}; "
                             f"{changed}") from None
        for _, backup, _ in done:
            if backup is not None:
                try:
                    os.unlink(backup)
                except OSError:
                    pass

    def discard(self) -> None:
        """Remove every temporary file (the targets are not touched)."""
        for tmp in self._tmp.values():
            try:
                os.unlink(tmp)
            except OSError:
                pass
        self._tmp.clear()

    def __enter__(self) -> OutputSet:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
        else:
            self.commit()


def write_all(
    outputs: Mapping[PathLike, Writer],
    *,
    inputs: Mapping[str, PathLike | None] | None = None,
) -> None:
    """Write every ``path: write`` pair of ``outputs`` whole, all or none (:class:`OutputSet`).

    ``write(binary_file)`` produces the contents. Checks (:func:`check_outputs`) raise
    ``ValueError``; so does a failed write, after which no target has changed.
    """
    items = list(outputs.items())
    paths = {f"output {str(p)!r}": p for p, _ in items}
    with OutputSet(paths, inputs=inputs) as out:
        for label, (_, write) in zip(paths, items, strict=True):
            out.write(label, write)


def atomic_write(path: PathLike, write: Writer) -> None:
    """Run ``write(file_object)`` on a temporary file next to ``path``, then ``os.replace``.

    The file appears whole or not at all: on any error the temporary file is removed and
    ``path`` is left untouched. The written file gets the usual permissions (umask).
    Exceptions raised by ``write`` propagate unchanged.
    """
    out = OutputSet({"output": path})
    out.open()
    try:
        out.write("output", write)
        out.commit()
    except BaseException:
        out.discard()
        raise


def npy_writer(array: np.ndarray) -> Writer:
    """A writer (for :class:`OutputSet`) of ``array`` as ``.npy`` (no pickles)."""
    return lambda f: np.save(f, array, allow_pickle=False)


def load_npy(path: PathLike, what: str, *, ndim: int | None = None) -> np.ndarray:
    """``np.load`` of a ``.npy`` file (no pickles), with a ``ValueError`` naming ``what``.

    Refused with a ``ValueError``: a missing or unreadable file, a non-numeric array (strings,
    objects, records), complex values, an empty array (0 elements) and, when ``ndim`` is given,
    an array with another number of dimensions.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        msg = " ".join(str(exc).split())
        raise ValueError(f"cannot read {what} file {str(path)!r} as a .npy array: {msg}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise ValueError(f"{what} file {str(path)!r} is not a single .npy array")
    if arr.dtype.kind == "c":
        raise ValueError(f"{what} file {str(path)!r} holds complex values; pass real numbers "
                         "(e.g. the magnitude np.abs, or the real and imaginary parts as "
                         "separate features)")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} file {str(path)!r} holds {arr.dtype} values, not numbers")
    if ndim is not None and arr.ndim != ndim:
        shape = {1: "(n,)", 2: "(n, d): points x features"}.get(ndim, f"{ndim}-D")
        raise ValueError(f"{what} file {str(path)!r} must hold a {ndim}-D array {shape}, got "
                         f"shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} file {str(path)!r} is empty (shape {arr.shape})")
    return arr


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """``np.save`` ``array`` to the ``.npy`` file ``path`` atomically."""
    if Path(path).suffix != ".npy":
        raise ValueError(f"the output must be a .npy file, got {str(path)!r}")
    atomic_write(path, npy_writer(array))
