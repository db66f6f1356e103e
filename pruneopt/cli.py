"""The command line: ``pruneopt COMMAND ...``; one module per command in ``pruneopt.commands``.

Each module of :mod:`pruneopt.commands` defines ``register(subparsers)``, which adds its
sub-command and sets ``func`` on it; ``func(args) -> int`` is the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from pruneopt import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pruneopt",
        description="Pruning decisions as optimization models, solved with swappable backends.",
    )
    parser.add_argument("--version", action="version", version=f"pruneopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith(("_", "select_")):  # select_KIND: under `pruneopt select`
            continue
        module = importlib.import_module(f"{commands.__name__}.{mod.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = " -> ".join(repr(str(f)) for f in (exc.filename, exc.filename2) if f)
        text = f"{exc.strerror}: {where}" if where else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run ``pruneopt ARGV``; returns the exit code.

    0: done. 2: bad usage or input, or a file that cannot be read or written; then nothing
    was written and stderr holds one line, ``pruneopt COMMAND: error: ...`` (no traceback).
    1: a worker of ``--executor`` died mid-run (nothing written either; one line,
    ``pruneopt COMMAND: failed: ...``); rerun it.
    """
    from pruneopt.solvers.executors import WorkerDied

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    name = " ".join(x for x in (args.command, getattr(args, "kind", None)) if x)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        print(f"pruneopt {name}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except WorkerDied as exc:
        print(f"pruneopt {name}: failed: {_one_line(exc)}; nothing was written, run it again",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
