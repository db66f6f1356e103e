"""Shared test set-up: non-interactive plotting, deterministic seeds, offline model hubs."""

import os
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# models saved with their own modeling file (trust_remote_code) are copied into this cache:
# keep it out of the home folder
os.environ.setdefault("HF_MODULES_CACHE", os.path.join(tempfile.mkdtemp(prefix="pruneopt-hf-")))
