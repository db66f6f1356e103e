"""The package imports from a regular (non-editable) install, from a checkout and from
anywhere else: the layout keeps formulations/, solvers/ and adapters/ at the top level of
the repository and maps them into ``pruneopt`` (a fresh venv, a wheel-style install)."""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _copy_checkout(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv holding a non-editable install, a copy of the checkout)."""
    base = tmp_path_factory.mktemp("install")
    src = _copy_checkout(base / "src")
    env_dir = base / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    py = env_dir / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    out = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return py, src


CHECK = ("import pruneopt, pruneopt.formulations as f, pruneopt.adapters.nm, numpy as np; "
         "from pruneopt.formulations import TransposableNM; "
         "s = pruneopt.solve(TransposableNM(np.arange(16.).reshape(4, 4), 2, 4)); "
         "print(pruneopt.__file__); print(f.__file__); print(s.status)")


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_non_editable_install_imports(installed, where, tmp_path):
    py, src = installed
    cwd = src if where == "checkout" else tmp_path
    out = subprocess.run([str(py), "-c", CHECK], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    pkg, form, status = out.stdout.split()
    assert status == "optimal"
    if where == "checkout":  # the checkout's own code, consistently
        assert Path(pkg).parent.parent == src.resolve()
        assert Path(form).parent.parent == src.resolve()
    else:  # the installed copy
        assert "site-packages" in pkg and "site-packages" in form
    help_ = subprocess.run([str(py), "-m", "pruneopt", "--help"], cwd=cwd, capture_output=True,
                           text=True)
    assert help_.returncode == 0 and "usage: pruneopt" in help_.stdout, help_.stderr[-2000:]
