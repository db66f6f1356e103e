"""Models as folders: load a sentence-transformers or Hugging Face model from disk (or the
bundled MiniLM), and save a pruned one so that it loads back the same way, whole or not at
all. Nothing is downloaded.

- :func:`load_model`: ``"minilm"`` (the bundled all-MiniLM-L6-v2), a sentence-transformers
  folder (``modules.json``), or a Hugging Face folder (``config.json``: ``AutoModel`` with
  its tokenizer). Returns a :class:`LoadedModel` (the model, how to tokenize, its kind).
- :func:`save_model`: writes the model into a new folder: a temporary folder next to it,
  renamed into place at the end (an existing, non-empty folder, or one inside the input
  folder, is refused before any work by :func:`check_output_folder`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

KINDS = ("sentence-transformers", "huggingface")


@dataclass
class LoadedModel:
    """A model read from disk: ``model``, ``kind`` (one of :data:`KINDS`), ``source`` (the
    folder, or ``"minilm"``) and ``tokenize(sentences) -> batch`` for calibration."""

    model: nn.Module
    kind: str
    source: str
    tokenize: Callable[[Sequence[str]], dict]
    tokenizer: Any = None  # a Hugging Face model's tokenizer (saved with it)

    def batches(self, sentences: Sequence[str], batch_size: int = 32) -> list[dict]:
        """Tokenized calibration batches of ``sentences``."""
        if not sentences:
            raise ValueError("no calibration sentences")
        return [self.tokenize(list(sentences[i:i + batch_size]))
                for i in range(0, len(sentences), batch_size)]


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _pruned_bert(path: Path) -> bool:
    """Whether ``path`` holds a SPDY-pruned BERT (``pruneopt.adapters.spdy.save_pruned``),
    whose per-layer shapes load through the modeling file saved beside it."""
    import json

    try:
        return json.loads((path / "config.json").read_text()).get("model_type") == "pruned_bert"
    except (OSError, ValueError):
        return False


def load_model(spec: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """The model named by ``spec`` (see the module docstring); ``ValueError`` for a folder
    that holds no supported model."""
    _offline()
    if str(spec) == "minilm":
        from pruneopt.adapters.calibration import make_batches
        from pruneopt.adapters.models import load_minilm

        model = load_minilm(device)
        return LoadedModel(model, "sentence-transformers", "minilm",
                           lambda s: make_batches(model, s, batch_size=len(s))[0])
    path = Path(spec)
    if not path.is_dir():
        raise ValueError(f"model {str(spec)!r} is neither 'minilm' nor a folder")
    if (path / "modules.json").is_file():
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ValueError("a sentence-transformers folder needs the extra: pip install "
                             "'pruneopt[minilm]'") from None
        from pruneopt.adapters.calibration import make_batches

        # a structurally pruned BERT (SPDY) ships its own small modeling file
        model = SentenceTransformer(str(path), device=device, local_files_only=True,
                                    trust_remote_code=_pruned_bert(path))
        model.eval()
        return LoadedModel(model, "sentence-transformers", str(path),
                           lambda s: make_batches(model, s, batch_size=len(s))[0])
    if (path / "config.json").is_file():
        from transformers import AutoModel, AutoTokenizer

        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True,
                                              trust_remote_code=_pruned_bert(path))
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a loadable Hugging Face model folder: "
                             f"{str(exc).splitlines()[0]}") from None
        model.eval()

        def tokenize(s: Sequence[str]) -> dict:
            enc = tok(list(s), padding=True, truncation=True, return_tensors="pt")
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

        return LoadedModel(model, "huggingface", str(path), tokenize, tok)
    raise ValueError(f"{path} holds no supported model: expected a sentence-transformers "
                     f"folder (modules.json) or a Hugging Face folder (config.json)")


def check_output_folder(out: str | os.PathLike, source: str | None = None) -> Path:
    """``out`` as a Path, if a model can be written there: it does not exist or is an empty
    folder, its parent exists, and it is not (inside) the ``source`` folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {str(out)!r} exists and is not an empty folder; choose a "
                         f"new folder")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"the folder {str(parent)!r} for the output does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"the folder {str(parent)!r} is not writable")
    if source not in (None, "minilm") and Path(source).is_dir():
        src = Path(source).resolve()
        if out.resolve() == src or src in out.resolve().parents:
            raise ValueError(f"output {str(out)!r} names the input model's folder; choose "
                             f"another folder")
    return out


def save_model(loaded: LoadedModel, model: nn.Module, out: str | os.PathLike,
               extra: dict[str, bytes] | None = None) -> Path:
    """Save ``model`` (of ``loaded``'s kind) into the new folder ``out``, with ``extra``
    files (name -> bytes, e.g. a JSON report), whole or not at all."""
    out = check_output_folder(out, loaded.source)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp",
                                dir=out.resolve().parent))
    try:
        if loaded.kind == "sentence-transformers":
            model.save(str(tmp))
        else:
            model.save_pretrained(str(tmp))
            if loaded.tokenizer is not None:
                loaded.tokenizer.save_pretrained(str(tmp))
        for name, data in (extra or {}).items():
            (tmp / name).write_bytes(data)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
