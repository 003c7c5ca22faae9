"""Smoke runs of launch/prepare_data.py as a subprocess."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("ARM_JAX_TEST_DATA")


def _run(*flags, cache):
    env = dict(os.environ, PYTHONPATH=ROOT, ARM_JAX_CACHE=str(cache))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "prepare_data.py"), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA is unset")
def test_prepare_data_ml100k(tmp_path):
    result = _run("--dataset=ml-100k", f"--data_dir={DATA}/ml-100k", cache=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert (stats["n_train_users"], stats["n_items"], stats["nnz_train"]) == (738, 1415, 43606)
    assert len(os.listdir(tmp_path / "splits")) == 1


def test_prepare_data_user_error_is_one_line(tmp_path):
    result = _run("--dataset=ml-100k", f"--data_dir={tmp_path}/none", cache=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
