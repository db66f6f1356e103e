"""``pruneopt select KIND ...``: data selection; one module ``select_KIND.py`` per kind."""

from __future__ import annotations

import importlib
import pkgutil

from pruneopt import commands


def register(sub) -> None:
    p = sub.add_parser("select", help="select a subset of data points (write kept indices)")
    kinds = p.add_subparsers(dest="kind", metavar="KIND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if mod.name.startswith("select_"):
            importlib.import_module(f"{commands.__name__}.{mod.name}").register(kinds)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
