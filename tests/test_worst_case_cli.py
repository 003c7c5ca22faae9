"""launch/train.py with the worst-case baselines (CVaR-EASE, EDLAE, group DRO): the run's
files as for EASE, and every bad flag refused in one line before anything is written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _cli_batch import train_rows  # refused command lines, one interpreter for all

from arm_jax import configs, grids, report
from arm_jax.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(tmp_path, *args):
    env = dict(os.environ, ARM_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "launch", "train.py"), *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip


def _check_run(workdir, model, low=0.2, **hyperparameters):
    results = json.loads((workdir / "results.json").read_text())
    assert results["model"] == model
    for name, value in hyperparameters.items():
        assert results["hyperparameters"][name] == value
    for part in ("valid", "test"):
        per_user = np.load(workdir / f"per_user_{part}.npz")
        assert results[part]["ndcg@100"] == pytest.approx(per_user["ndcg@100"].mean(), rel=1e-6)
        assert low < results[part]["ndcg@100"] < 1  # EASE gets 0.37-0.38 here
        assert np.all(per_user["best_rank"] >= 0)
    w = np.load(workdir / "model.npz")["W"]
    assert np.all(np.diag(w) == 0)


def test_closed_form_baselines_train_and_analyse(tmp_path):
    for model, args in (
        ("ease", []),
        ("edlae", ["--dropout_p=0.3"]),
        ("cvar_ease", ["--alpha=0.3", "--rounds=2"]),
    ):
        proc = _train(tmp_path, f"--model={model}", f"--workdir=runs/{model}", *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(tmp_path / "runs" / "edlae", "edlae", dropout_p=0.3)
    _check_run(tmp_path / "runs" / "cvar_ease", "cvar_ease", alpha=0.3, rounds=2, cvar_loss="rank")
    result = report.analyze_workdirs([str(tmp_path / "runs")], n_boot=100)
    assert set(result.worst_off["model"]) == {"ease", "edlae", "cvar_ease"}
    assert set(result.groups["label"]) == {"EASE", "EDLAE", "CVaR-EASE"}


def test_group_dro_trains(tmp_path):
    proc = _train(
        tmp_path, "--model=group_dro", "--workdir=run", "--groups=4", "--max_epochs=2",
        "--batch_size=256",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(tmp_path / "run", "group_dro", low=0.05, groups=4)  # 2 epochs from Glorot
    logits = np.load(tmp_path / "run" / "adversary.npz")["logits"]
    assert logits.shape == (4,) and np.any(logits != 0)
    scores = np.load(tmp_path / "run" / "adversary_scores.npz")["score"]
    assert set(np.unique(scores)) <= set(logits)  # every user gets its group's logit


REFUSED = [
    (["--model=cvar_ease", "--alpha=0"], "--alpha"),
    (["--model=cvar_ease", "--alpha=1.5"], "--alpha"),
    (["--model=cvar_ease", "--rounds=0"], "--rounds"),
    (["--model=edlae", "--dropout_p=1"], "--dropout_p"),
    (["--model=group_dro", "--groups=1"], "--groups"),
    (["--model=group_dro", "--groups=100000"], "--groups"),
    (["--model=ease", "--alpha=0.1"], "--alpha"),  # a flag EASE does not use
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    return train_rows(tmp_path_factory, REFUSED)


@pytest.mark.parametrize("args,match", REFUSED)
def test_bad_flags_are_refused_before_writing(refused, args, match):
    proc = refused[tuple(args)]
    assert proc.returncode == 1 and proc.stderr.startswith("error:"), proc.stderr[-2000:]
    assert match in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(proc.cwd, "run"))


def test_new_models_are_in_every_table():
    for model in ("cvar_ease", "edlae", "group_dro"):
        assert model in configs.MODELS and model in configs.HYPERPARAMETERS
        configs.model_config("synthetic", model)  # defaults valid
    assert "group_dro" in configs.ADVERSARIAL_MODELS
    grid = grids.default_grid("synthetic", "cvar_ease")
    assert set(grid) == {"C", "alpha"} and 0.2 in grid["alpha"]
    assert set(grids.default_grid("synthetic", "edlae")) == {"C", "dropout_p"}
    assert grids.load_grid('{"cvar_loss": ["rank"]}', "synthetic", "cvar_ease")["cvar_loss"] == [
        "rank"
    ]
    for bad in ('{"cvar_loss": ["hinge"]}', '{"alpha": [0]}', '{"groups": [1]}'):
        model = "group_dro" if "groups" in bad else "cvar_ease"
        with pytest.raises(ConfigError):
            grids.load_grid(bad, "synthetic", model)
