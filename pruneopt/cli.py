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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"pruneopt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
