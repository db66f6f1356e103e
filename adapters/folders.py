"""Model folders written whole or not at all (the folder counterpart of :mod:`.files`).

:func:`write_folder` fills a hidden temporary folder beside the target
(``.{name}.{pid}.{random}.tmp``), flushes every file and folder to disk, gives it the usual
permissions (umask) and renames it into place: the target appears complete or not at all.
An existing non-empty target is refused before any work (:func:`check_model_folder`);
temporary folders left by a killed process are removed on the next write into the same
parent folder. Used by :func:`~pruneopt.adapters.pruned_models.save_pruned` and
:func:`~pruneopt.adapters.structured_models.save_structured`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pruneopt.adapters.files import pid_alive

__all__ = ["check_model_folder", "remove_stale_folders", "sync_tree", "write_folder"]


def check_model_folder(path: str | os.PathLike) -> None:
    """``ValueError`` unless ``path`` can receive a saved model: a new folder (or an empty
    one) in an existing, writable parent folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{str(path)!r} exists and is not a folder; give a new folder")
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{str(path)!r} exists and is not empty; give a new (or empty) "
                         "folder, nothing is written over an existing model")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"the parent folder {str(parent)!r} of {str(path)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"the parent folder {str(parent)!r} is not writable")


def remove_stale_folders(parent: Path, name: str) -> None:
    """Remove the temporary folders ``.{name}.{pid}.*.tmp`` in ``parent`` whose process is
    gone (best effort)."""
    pattern = re.compile(rf"^\.{re.escape(name)}\.(?P<pid>[1-9][0-9]*)\.[a-z0-9_]{{8}}\.tmp$")
    for entry in parent.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and \
                not pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def sync_tree(folder: Path) -> None:
    """fsync every file under ``folder``, then the folders themselves."""
    for root, _dirs, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                os.fsync(fh.fileno())
    for root, _dirs, _files in os.walk(folder):
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_folder(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Create the folder ``path`` whole or not at all: ``fill(tmp)`` writes the files into a
    temporary folder beside it, which is then renamed to ``path``. Any exception in ``fill``
    (or in the rename) removes the temporary folder and leaves ``path`` as it was. Returns
    ``path``; ``ValueError`` as :func:`check_model_folder`, or when the rename fails."""
    target = Path(path)
    check_model_folder(target)
    remove_stale_folders(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp",
                                dir=target.parent))
    try:
        fill(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700
        sync_tree(tmp)
        try:
            os.rename(tmp, target)  # atomic; replaces an empty folder
        except OSError as exc:
            raise ValueError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
