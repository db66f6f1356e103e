"""Pieces the commands share: one spelling per flag (with hidden old spellings), keep counts.

The vocabulary, the same in every command:

- ``-o/--output PATH``: the main output file (``--out`` is a deprecated alias);
- ``--no-progress``: turn off the progress bars that long work shows by default
  (``--progress`` is accepted and changes nothing);
- ``--solver NAME``: default ``None``, the registry's choice (:mod:`pruneopt.solvers.defaults`);
- ``--keep K``: a number of kept items, or a fraction in (0, 1);
- ``--time-limit SECONDS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

SOLVER_HELP = "solver name (default: the registry's choice for the instance size)"


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: stores into the new option's ``dest`` and prints
    one warning line on stderr naming the new spelling."""

    def __init__(self, option_strings, dest, *, new: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_output(p: argparse.ArgumentParser, *, required: bool, help: str,
               old: str | None = None, metavar: str = "OUT") -> None:
    """``-o/--output`` (dest ``output``), and the hidden deprecated spelling ``old``."""
    p.add_argument("-o", "--output", required=required, default=None, metavar=metavar,
                   help=help)
    if old:
        p.add_argument(old, dest="output", action=DeprecatedAlias, new="-o/--output",
                       metavar=metavar)


def add_progress(p: argparse.ArgumentParser, what: str = "no progress bars") -> None:
    """``--no-progress`` (dest ``no_progress``); ``--progress`` is accepted (the default)."""
    p.add_argument("--no-progress", action="store_true", help=what)
    p.add_argument("--progress", dest="no_progress", action="store_false",
                   help=argparse.SUPPRESS)


def add_time_limit(p: argparse.ArgumentParser, what: str = "seconds") -> None:
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS", help=what)


def check_time_limit(value: float | None) -> None:
    """``ValueError`` unless ``value`` is ``None`` or > 0 seconds."""
    if value is not None and not value > 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {value}")


def parse_keep(text: str | None) -> int | float | None:
    """``--keep``: a whole count (``"500"``) or a fraction in (0, 1) (``"0.3"``)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--keep must be a count or a fraction in (0, 1), got {text!r}") from None
    if 0 < value < 1:
        return value
    if not value.is_integer():
        raise ValueError(f"--keep must be a whole count or a fraction in (0, 1), got {text!r}")
    return int(value)


def keep_count(keep: int | float, n: int) -> int:
    """The count of ``keep`` for ``n`` items: a fraction in (0, 1) is rounded (at least 1)."""
    if isinstance(keep, float):
        return max(1, int(round(keep * n)))
    return keep
