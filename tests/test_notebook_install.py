"""Each notebook's first cell installs arm_jax the way Colab runs it.

The cell runs in a fresh interpreter where arm_jax is not importable (the editable
install's finder removed, the repository off the path, the working directory outside it)
with ARM_JAX_REPO set to a local path: pip installs it with --no-deps into a temporary
--target (Colab has JAX and the rest already) without touching the network. The wheel
pip builds from a copy of the repository (what it does for a git URL) is built once and
given to the three notebooks, which keeps the test to one build.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart.ipynb", "reproduce_paper.ipynb", "custom_adversary.ipynb")

# Prepended to the cell: a runtime without arm_jax, as Colab's is before the install.
_FRESH = """
import importlib.util, sys
sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith("__editable__")]
if importlib.util.find_spec("arm_jax") is not None:
    sys.exit(3)  # installed in site-packages: no fresh runtime to simulate
"""


def _first_cell(name: str) -> str:
    with open(os.path.join(ROOT, "colabs", name), encoding="utf-8") as f:
        cells = [c for c in json.load(f)["cells"] if c["cell_type"] == "code"]
    return "".join(cells[0]["source"])


def _with_repo(source: str, repo: str) -> str:
    lines = source.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("ARM_JAX_REPO = ")]
    assert len(at) == 1, "the cell sets ARM_JAX_REPO on one line of its own"
    lines[at[0]] = f"ARM_JAX_REPO = {repo!r}"
    return "\n".join(lines)


def _run_cell(source: str, cwd, **env):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env  # repo off the path
    script = _FRESH + source + "\nprint('FROM', arm_jax.__file__)\n"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, env=env,
        timeout=120,
    )  # fmt: skip
    if out.returncode == 3:
        pytest.skip("arm_jax is installed in site-packages: no runtime without it to test")
    return out


def _can_build_offline() -> bool:
    """Without build isolation pip builds with this interpreter's setuptools, which
    makes wheels itself from 70.1 on and with the `wheel` package before."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _copy_repo(dest) -> str:
    os.makedirs(dest)
    shutil.copy(os.path.join(ROOT, "setup.py"), dest)
    shutil.copy(os.path.join(ROOT, "README.md"), dest)
    shutil.copytree(
        os.path.join(ROOT, "arm_jax"),
        os.path.join(dest, "arm_jax"),
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return str(dest)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """arm_jax's wheel, built by pip from a copy of the repository's sources."""
    if not _can_build_offline():
        pytest.skip("pip cannot build arm_jax offline here: needs setuptools>=70.1 or wheel")
    root = tmp_path_factory.mktemp("build")
    repo = _copy_repo(root / "arm_jax_copy")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", "-w", str(root / "dist"), repo],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (found,) = (root / "dist").glob("arm_jax-*.whl")
    return str(found)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_installs_from_the_repository_variable(tmp_path, name, wheel):
    target = tmp_path / "site"
    target.mkdir()
    out = _run_cell(
        _with_repo(_first_cell(name), wheel),
        tmp_path,
        PYTHONPATH=str(target),  # Colab's site-packages: on the path, empty before the install
        PIP_TARGET=str(target),
        PIP_NO_DEPS="1",
        PIP_NO_INDEX="1",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"FROM {target}{os.sep}arm_jax{os.sep}__init__.py" in out.stdout
    assert "arm_jax 0." in out.stdout


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_cell_asks_for_the_repository_url_first(tmp_path, name):
    out = _run_cell(_first_cell(name), tmp_path)
    assert out.returncode == 1
    assert "set ARM_JAX_REPO in this cell" in out.stderr.splitlines()[-1]


def test_install_cell_uses_the_checkout_it_is_opened_from():
    out = _run_cell(_first_cell("quickstart.ipynb"), os.path.join(ROOT, "colabs"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"FROM {os.path.join(ROOT, 'arm_jax', '__init__.py')}" in out.stdout
