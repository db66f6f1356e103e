"""Files written whole or not at all (atomic writes) and `.npy` input/output, for the
adapters and the commands."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Run ``write(file_object)`` on a temporary file next to ``path``, then ``os.replace``.

    The file appears whole or not at all: on any error the temporary file is removed and
    ``path`` is left untouched. The written file gets the usual permissions (umask).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"output folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_npy(path: str, what: str) -> np.ndarray:
    """``np.load`` of a ``.npy`` file (no pickles), with a ``ValueError`` naming ``what``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} file {path!r} does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot read {what} file {path!r} as a .npy array: {exc}") from None


def save_npy(path: str, array: np.ndarray) -> None:
    """``np.save`` ``array`` to the ``.npy`` file ``path`` atomically."""
    if Path(path).suffix != ".npy":
        raise ValueError(f"the output must be a .npy file, got {path!r}")
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
