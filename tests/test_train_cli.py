"""End-to-end smoke runs of launch/train.py for the closed-form models, and its errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _cli_batch import train_rows  # refused command lines, one interpreter for all

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("ARM_JAX_TEST_DATA")


def _train(tmp_path, *args, check=True):
    env = dict(os.environ, ARM_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "train.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def _check_workdir(workdir, model):
    results = json.load(open(workdir / "results.json"))
    config = json.load(open(workdir / "config.json"))
    assert results["model"] == model and config["model"] == model
    assert config["version"] and config["data"]["n_items"] > 0
    for part in ("valid", "test"):
        summary = results[part]
        per_user = np.load(workdir / f"per_user_{part}.npz")
        for name in ("ndcg@100", "recall@20", "recall@50"):
            values = per_user[name]
            assert len(values) == summary["n_users"] == len(per_user["user_ids"])
            assert summary[name] == pytest.approx(values.mean(), rel=1e-6)
            assert summary[name + "_se"] == pytest.approx(
                values.std(ddof=1) / np.sqrt(len(values)), rel=1e-5
            )
            assert 0 < summary[name] < 1
        assert np.all(per_user["n_heldout"] > 0)
    return results


@pytest.mark.parametrize("model,extra", [("ease", ["--C=0.01"]), ("ease_ipw", ["--beta=0.5"])])
def test_closed_form_models_on_synthetic(tmp_path, model, extra):
    out = _train(tmp_path, f"--model={model}", "--workdir=run", *extra)
    assert "| test |" in out.stdout
    results = _check_workdir(tmp_path / "run", model)
    assert set(results["seconds"]) >= {"gram", "solve", "evaluate"}
    w = np.load(tmp_path / "run" / "model.npz")["W"]
    assert np.all(np.diag(w) == 0)
    # The synthetic data carries its planted groups into the per-user files.
    assert set(np.unique(np.load(tmp_path / "run" / "per_user_test.npz")["group"])) >= {0, 1}


def test_l2_spelling_and_float64(tmp_path):
    _train(tmp_path, "--workdir=a", "--C=0.01")
    n_train = json.load(open(tmp_path / "a" / "config.json"))["data"]["n_train_users"]
    _train(tmp_path, "--workdir=b", f"--l2={0.01 * n_train}", "--float64")
    a = json.load(open(tmp_path / "a" / "results.json"))["test"]
    b = json.load(open(tmp_path / "b" / "results.json"))["test"]
    assert json.load(open(tmp_path / "b" / "config.json"))["dtype"] == "float64"
    assert b["ndcg@100"] == pytest.approx(a["ndcg@100"], abs=1e-4)


BAD_INPUT = [
    (["--model=svd"], "unknown model"),
    (["--C=0"], "--C must be > 0"),
    (["--model=ease_ipw", "--beta=-1"], "--beta must be >= 0"),
    (["--C=0.1", "--l2=3"], "not both"),
    # These used to run (the flag ignored) or, for the batch, to leave a config.json
    # that refused the corrected rerun.
    (["--warm_start"], "--warm_start: not used by --model=ease"),
    (["--model=ease_ipw", "--B=-1", "--max_epochs=0"], "--B, --max_epochs: not used by"),
    (["--model=rlarm", "--hidden_dim=3"], "--hidden_dim: not used by --model=rlarm"),
    (["--model=rlarm", "--batch_size=5000"], "--batch_size=5000 is larger than the 2800"),
    (["--min_uc=-1"], "--min_uc must be >= 0"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    return train_rows(tmp_path_factory, BAD_INPUT)


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_is_one_line_error(refused, args, message):
    out = refused[tuple(args)]
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not os.path.exists(os.path.join(out.cwd, "run"))  # nothing written


@pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA unset")
@pytest.mark.parametrize("dataset", ["ml-100k", "ml-latest-small"])
def test_ease_on_real_data(tmp_path, dataset):
    _train(tmp_path, f"--dataset={dataset}", f"--data_dir={DATA}/{dataset}", "--workdir=run")
    results = _check_workdir(tmp_path / "run", "ease")
    assert results["test"]["ndcg@100"] > 0.2


@pytest.mark.parametrize("model", ["rlarm_nn"])  # ARM's resume: tests/test_training.py
def test_adversarial_models_train_and_resume_from_the_cli(tmp_path, model):
    out = _train(tmp_path, f"--model={model}", "--max_epochs=2", "--workdir=run")
    assert "epoch=2" in out.stdout
    _train(tmp_path, f"--model={model}", "--max_epochs=3", "--workdir=run", "--resume")
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    results = json.load(open(tmp_path / "run" / "results.json"))
    assert results["model"] == model and results["test"]["n_users"] > 0
    scores = np.load(tmp_path / "run" / "adversary_scores.npz")
    n_train = json.load(open(tmp_path / "run" / "config.json"))["data"]["n_train_users"]
    assert len(scores["score"]) == n_train and np.all(np.isfinite(scores["score"]))


@pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA unset")
def test_rlarm_on_ml100k_from_the_cli(tmp_path):
    _train(
        tmp_path, "--dataset=ml-100k", f"--data_dir={DATA}/ml-100k", "--model=rlarm",
        "--max_epochs=2", "--workdir=run",
    )  # fmt: skip
    _check_workdir(tmp_path / "run", "rlarm")
