"""A streamed checkpoint output that a rerun resumes instead of restarting.

:class:`ResumableStage` is a :class:`~pruneopt.adapters.streaming.StagedOutput` whose stage
folder is kept when a run fails or is killed, so that the next run of the *same job* keeps
the output shards already written and masks only the others. The stage is
``.{OUT name}.resume.partial`` next to OUT (a fixed name, so the rerun finds it), holding:

- the output shards, each listed in ``resume.json`` only after it was written, closed and
  flushed to disk (``fsync``) -- a shard cut short by a kill is not listed and is rewritten;
- ``resume.json``: the job's key and, per finished shard, its byte size and report rows;
- ``writer.pid``: the process writing it; a second run while that process lives is refused.

The job key is a SHA-256 of everything the output depends on: the input shards' headers
(names, dtypes, shapes, offsets: any change of the input changes it) and byte sizes, and the
options (N:M, solver, patterns, ...). A stage with another key (other input or options) is
removed and the run starts over. Commit works as for the plain stage (everything renamed
into place at once; the bookkeeping files are removed first), after which the stage is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from pruneopt.adapters.files import atomic_write, pid_alive
from pruneopt.adapters.streaming import StagedOutput, read_header, remove_stale_stages

__all__ = ["ResumableStage", "job_key"]

MANIFEST = "resume.json"
PID_FILE = "writer.pid"


def job_key(ckpt, options: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the checkpoint's shard headers and sizes and the JSON ``options``."""
    h = hashlib.sha256()
    for shard in sorted(ckpt.shards):
        path = ckpt.folder / shard
        header, _ = read_header(path)
        h.update(shard.encode())
        h.update(json.dumps(header, sort_keys=True).encode())
        h.update(str(path.stat().st_size).encode())
    h.update(json.dumps(dict(options), sort_keys=True, default=str).encode())
    return h.hexdigest()


class ResumableStage(StagedOutput):
    """A stage kept across failed runs of one job (module docstring). ``key``: from
    :func:`job_key`."""

    def __init__(self, out: str | os.PathLike, report: str | os.PathLike | None, key: str,
                 inputs: Sequence[str | os.PathLike] = ()) -> None:
        super().__init__(out, report, inputs)
        self.key = key
        self.stage = self.out.parent / f".{self.out.name}.resume.partial"
        self.done: dict[str, dict[str, Any]] = {}
        self.resumed: list[str] = []

    def __enter__(self) -> ResumableStage:
        remove_stale_stages(self.out.parent)  # plain stages of dead runs, as StagedOutput
        manifest = self.stage / MANIFEST
        if self.stage.exists():
            pid = self._writer()
            if pid is not None and pid != os.getpid() and pid_alive(pid):
                raise ValueError(f"another run (process {pid}) is writing {str(self.out)!r}; "
                                 "wait for it or stop it")
            try:
                saved = json.loads(manifest.read_text())
                same = saved.get("key") == self.key
            except (OSError, ValueError, AttributeError):
                same = False
            if not same:  # another job's (or an unreadable) stage: start over
                shutil.rmtree(self.stage)
            else:
                for shard, entry in saved.get("done", {}).items():
                    p = self.stage / shard
                    if p.is_file() and p.stat().st_size == entry.get("bytes"):
                        self.done[shard] = entry
                for p in list(self.stage.iterdir()):  # anything else is rewritten
                    if p.name not in self.done and p.name not in (MANIFEST, PID_FILE):
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                self.resumed = sorted(self.done)
        self.stage.mkdir(exist_ok=True)
        (self.stage / PID_FILE).write_text(str(os.getpid()))
        self._save()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """On failure the stage stays for the rerun (its writer.pid names a dead process)."""

    def finished_rows(self, shard: str) -> list[dict[str, Any]] | None:
        entry = self.done.get(shard)
        return None if entry is None else list(entry["rows"])

    def shard_finished(self, shard: str, rows: list[dict[str, Any]]) -> None:
        p = self.data_path(shard)
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        self.done[shard] = {"bytes": p.stat().st_size, "rows": rows}
        self._save()

    def commit(self, report: bytes | None = None) -> None:
        for name in (MANIFEST, PID_FILE):
            (self.stage / name).unlink(missing_ok=True)
        super().commit(report)

    def _writer(self) -> int | None:
        try:
            return int((self.stage / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None

    def _save(self) -> None:
        """``resume.json`` replaced atomically (a kill leaves the old or the new one)."""
        data = json.dumps({"key": self.key, "done": self.done}).encode()
        atomic_write(self.stage / MANIFEST, lambda f: f.write(data))

