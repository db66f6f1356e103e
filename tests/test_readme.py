"""Every Python block of the README runs as written, in order, in one namespace (the way a
new user pastes them into one session), in a fresh folder."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)

pytestmark = pytest.mark.slow


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


def test_readme_python_blocks_run_in_order(tmp_path):
    script = "\n\n".join(f"# ---- README block {i}\n{b}" for i, b in enumerate(BLOCKS))
    (tmp_path / "readme_blocks.py").write_text(script)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "readme_blocks.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
