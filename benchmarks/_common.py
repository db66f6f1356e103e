"""Shared by the benchmark scripts: measure the checkout they sit in, write outputs safely.

Importing this module puts the repository root first on ``sys.path``, so that
``python benchmarks/X.py`` measures the code next to the script, whatever pruneopt is
installed. Benchmarks print to stdout; a file is written only where a path is given, never
over an input of the run nor over a file the repository tracks (committed results, figures),
and whole or not at all.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def tracked(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file git tracks in its repository. Without git (or outside a
    repository) every existing file inside this checkout counts as tracked."""
    p = Path(path).resolve()
    try:
        r = subprocess.run(["git", "-C", str(p.parent), "ls-files", "--error-unmatch", p.name],
                           capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return p.exists() and ROOT in p.parents
    if r.returncode == 0:
        return True
    inside = subprocess.run(["git", "-C", str(p.parent), "rev-parse", "--is-inside-work-tree"],
                            capture_output=True, timeout=30) if p.parent.is_dir() else None
    if inside is None or inside.returncode != 0:  # not a git folder: be conservative
        return p.exists() and ROOT in p.parents
    return False


def refuse_overwrite(error, outputs: dict[str, str | os.PathLike | None],
                     inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Stop (``error(message)``, e.g. ``ArgumentParser.error``) if an output path equals an
    input or another output, or names a file the repository tracks. ``None`` paths are
    skipped (not written)."""
    ins = {Path(i).resolve(): str(i) for i in inputs if i is not None}
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        p = Path(path).resolve()
        if p in ins:
            error(f"{flag} {path} is also an input of this run ({ins[p]}); refusing to write "
                  f"over it: give a new path")
        if p in seen:
            error(f"{flag} {path} is also the path of {seen[p]}; give different paths")
        seen[p] = flag
        if p.is_dir():
            error(f"{flag} {path} is a folder; give a file path")
        if tracked(p):
            error(f"{flag} {path} is a file tracked in the repository (a committed result); "
                  f"refusing to write over it: give a new path (e.g. under /tmp)")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file, then a rename)."""
    write_bytes(path, text.encode())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig, path: str | os.PathLike, **kwargs) -> None:
    """``fig.savefig`` to ``path`` whole or not at all (format from the suffix)."""
    import io

    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".") or "png"
    fig.savefig(buf, format=fmt, **kwargs)
    write_bytes(path, buf.getvalue())


class Tee:
    """Print lines to stdout and keep them, to write the same text to ``--out`` at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def save(self, path: str | os.PathLike | None) -> None:
        if path is not None:
            write_text(path, "\n".join(self.lines) + "\n")


def machine() -> str:
    """One line on where and under what load a benchmark ran."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu = platform.processor() or platform.machine()
    ld = "" if load is None else f", load average {load[0]:.2f} at start"
    return f"{os.cpu_count()} logical CPUs ({cpu}), Python {platform.python_version()}{ld}"


# ------------------------------------------------------------ shared by the recovery scripts


def sentiment_accuracy(model, texts: list[str], labels, seed: int = 0) -> float:
    """5-fold accuracy of a logistic regression on the model's sentence embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from pruneopt.adapters.calibration import embed, make_batches

    E = embed(model, make_batches(model, texts, 64)).numpy()
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(cross_val_score(LogisticRegression(max_iter=2000, C=1.0), E, labels,
                                 cv=folds).mean())


class SmallCNN(torch.nn.Module):
    """Three 3x3 convolutions (16, 32, 64 channels, each ReLU + 2x2 max-pool), a 576 -> 128
    linear layer and a 128 -> 10 head: an MNIST classifier of 0.1 M weights."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.c3 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = torch.nn.Linear(64 * 3 * 3, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        f = torch.nn.functional
        x = f.max_pool2d(f.relu(self.c1(x)), 2)
        x = f.max_pool2d(f.relu(self.c2(x)), 2)
        x = f.max_pool2d(f.relu(self.c3(x)), 2)
        return self.fc2(f.relu(self.fc1(x.flatten(1))))


def digits_mlp(seed: int) -> torch.nn.Sequential:
    """The 64-64-32-10 MLP of the digits benchmarks, initialised from ``seed``."""
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 10))


def train_digits_mlp(X, y, seed: int, steps: int = 200) -> torch.nn.Sequential:
    """Full-batch Adam (lr 1e-2, weight decay 1e-4) of :func:`digits_mlp` on X (scaled)."""
    net = digits_mlp(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
    xb = torch.as_tensor(X, dtype=torch.float32)
    yb = torch.as_tensor(y, dtype=torch.long)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
    return net.eval()


def timed(f, *args):
    """``(seconds, f(*args))``, wall-clock."""
    t0 = time.perf_counter()
    out = f(*args)
    return time.perf_counter() - t0, out


def fmt_seconds(v: list[float], small: int = 4) -> str:
    """``median [min, max]`` of times in seconds (3 decimals from 0.1 s, ``small`` below)."""
    def f(t):
        return f"{t:.3f}" if t >= 0.1 else f"{t:.{small}f}"

    return f"{f(np.median(v))} [{f(min(v))}, {f(max(v))}]"


def fmt_ratio(v: list[float]) -> str:
    """``median [min, max]`` of ratios, as ``1.23x [1.10, 1.40]``."""
    return f"{np.median(v):.2f}x [{min(v):.2f}, {max(v):.2f}]"
