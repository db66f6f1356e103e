"""``pruneopt nm MODEL -o OUT``: N:M (optionally transposable) masks on a saved state_dict.

Reads ``MODEL`` (``.pt``/``.pth``/``.bin`` through ``torch.load(weights_only=True)``, or
``.safetensors``), masks every matched weight tensor with >= 2 dimensions (4-D convolution
weights viewed as [out, in*kh*kw]) and writes the masked state_dict (zeros in place, the
same keys) in the format given by OUT's suffix, plus a JSON report (per tensor: shape,
solver, status, seconds, kept-score ratio ``sum|W| kept / sum|W|``, ratio to the best
known bound). Both files are written atomically (a temporary file in the same folder,
then ``os.replace``): they appear whole or not at all.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pruneopt.adapters.files import atomic_write

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFE_SUFFIXES = (".safetensors",)


def _format(path: Path, what: str) -> str:
    suf = path.suffix.lower()
    if suf in TORCH_SUFFIXES:
        return "torch"
    if suf in SAFE_SUFFIXES:
        return "safetensors"
    raise ValueError(f"{what} {str(path)!r} must end in one of "
                     f"{', '.join(TORCH_SUFFIXES + SAFE_SUFFIXES)}")


def load_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """A flat ``{name: tensor}`` from a ``.pt`` (``weights_only=True``) or ``.safetensors``
    file. ``ValueError`` for a missing or unreadable file or one that is not a state_dict."""
    import torch

    path = Path(path)
    fmt = _format(path, "MODEL")
    if not path.is_file():
        raise ValueError(f"MODEL file {str(path)!r} does not exist")
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad input file
        raise ValueError(f"cannot read {str(path)!r} as a {fmt} state_dict: {e}") from None
    if not isinstance(sd, Mapping) or not sd:
        raise ValueError(f"{str(path)!r} does not hold a state_dict (a non-empty mapping of "
                         f"names to tensors); save one with torch.save(model.state_dict(), ...)")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        hint = (f"; it looks like a checkpoint: save its {bad[0]!r} entry on its own"
                if isinstance(sd.get(bad[0]), Mapping) else "")
        raise ValueError(f"{str(path)!r} is not a flat state_dict: entries {bad[:3]} are not "
                         f"name -> tensor{hint}")
    return dict(sd)


def save_state_dict(sd: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write ``sd`` atomically as ``.pt`` or ``.safetensors`` (chosen by the suffix)."""
    import torch

    path = Path(path)
    fmt = _format(path, "output")
    if fmt == "safetensors":
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in sd.items()})
        atomic_write(path, lambda f: f.write(data))
    else:
        atomic_write(path, lambda f: torch.save(dict(sd), f))


def _selected(name: str, tensor, patterns: list[str] | None, regex: bool) -> bool:
    if tensor.dim() < 2 or not tensor.is_floating_point():
        return False
    if not patterns:
        return name == "weight" or name.endswith(".weight")
    if regex:
        return any(re.search(p, name) for p in patterns)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def mask_state_dict(
    sd: Mapping[str, Any],
    n: int = 2,
    m: int = 4,
    *,
    transposable: bool = False,
    solver: str | None = None,
    time_limit: float | None = None,
    patterns: list[str] | None = None,
    regex: bool = False,
    pad: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], list]:
    """Masked copy of ``sd`` (the input is not modified) and the per-tensor report rows
    (:class:`pruneopt.adapters.nm.LayerReport`). Tensors matched by ``patterns`` (default:
    every floating ``*.weight`` with >= 2 dimensions) are masked; the others are copied."""
    from tqdm import tqdm

    from pruneopt.adapters.nm import nm_mask

    if regex:
        for p in patterns or []:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"invalid regular expression {p!r}: {e}") from None
    names = [k for k, v in sd.items() if _selected(k, v, patterns, regex)]
    if not names:
        what = f"patterns {patterns}" if patterns else "the default (*.weight, >= 2-D)"
        raise ValueError(f"no floating tensor with >= 2 dimensions matches {what}; "
                         f"keys look like {list(sd)[:5]}")
    out = dict(sd)
    rows = []
    for name in tqdm(names, desc=f"{n}:{m} masks", unit="tensor", disable=not progress,
                     leave=False):
        w = sd[name]
        mask, rep = nm_mask(w, n, m, transposable=transposable, solver=solver,
                            time_limit=time_limit, pad=pad, name=name)
        rows.append(rep)
        if mask is not None:
            out[name] = w * mask.to(w.device)  # a new tensor: the input stays as it was
    return out, rows


def run(args) -> int:
    """The handler of ``pruneopt nm``; returns the exit code."""
    if args.time_limit is not None and not args.time_limit > 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    from pruneopt.formulations.nm import validate_nm

    validate_nm(args.n, args.m)
    out = Path(args.output)
    _format(out, "output -o")
    report_path = Path(args.report) if args.report else Path(str(out) + ".json")
    if out.resolve() == report_path.resolve():
        raise ValueError("the report path must differ from the output path")
    sd = load_state_dict(args.model)
    masked, rows = mask_state_dict(
        sd, args.n, args.m, transposable=args.transposable, solver=args.solver,
        time_limit=args.time_limit, patterns=args.pattern, regex=args.regex, pad=args.pad,
        progress=not args.no_progress)
    done = [r for r in rows if r.skipped is None]
    kept = sum(r.kept_score for r in done)
    total = sum(r.total_score for r in done)
    report = {
        "model": str(args.model),
        "output": str(out),
        "n": args.n,
        "m": args.m,
        "transposable": bool(args.transposable),
        "solver": args.solver,
        "summary": {
            "masked": len(done),
            "skipped": len(rows) - len(done),
            "kept_score": kept,
            "total_score": total,
            "kept_ratio": kept / total if total > 0 else None,
            "seconds": sum(r.seconds for r in done),
        },
        "tensors": [r.as_dict() for r in rows],
    }
    text = json.dumps(report, indent=2).encode()
    save_state_dict(masked, out)
    atomic_write(report_path, lambda f: f.write(text))
    ratio = report["summary"]["kept_ratio"]
    print(f"masked {len(done)} tensors ({len(rows) - len(done)} skipped) with "
          f"{'transposable ' if args.transposable else ''}{args.n}:{args.m}; kept "
          f"{'-' if ratio is None else f'{100 * ratio:.2f}%'} of the score; wrote {out} and "
          f"{report_path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "nm", help="N:M (transposable) masks on a saved state_dict (.pt or .safetensors)",
        description="Mask the weight tensors of a saved state_dict with N:M (optionally "
                    "transposable) masks; write the masked state_dict (format by OUT's suffix) "
                    "and a JSON report, both atomically. 4-D convolution weights are viewed as "
                    "[out, in*kh*kw].",
    )
    p.add_argument("model", metavar="MODEL", help="state_dict file: .pt/.pth/.bin or .safetensors")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="masked state_dict to write; format by suffix (.pt or .safetensors)")
    p.add_argument("--n", type=int, default=2, help="weights kept per group (default 2)")
    p.add_argument("--m", type=int, default=4, help="group size (default 4)")
    p.add_argument("--transposable", action="store_true",
                   help="also N:M along the output dimension (W^T), per m x m block")
    p.add_argument("--solver", default=None,
                   help="solver name (default: the best exact one; see pruneopt.available)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per tensor")
    p.add_argument("--pattern", action="append", default=None, metavar="GLOB",
                   help="tensor names to mask (fnmatch, repeatable; default all *.weight "
                        "with >= 2 dims)")
    p.add_argument("--regex", action="store_true", help="--pattern values are regular expressions")
    p.add_argument("--pad", action="store_true",
                   help="pad tensors whose shape is not divisible by m (default: skip them)")
    p.add_argument("--report", default=None, metavar="PATH",
                   help="JSON report path (default OUT.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
