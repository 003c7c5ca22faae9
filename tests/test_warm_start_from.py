"""A dense warm start read from a finished EASE run (`--warm_start_from`) is the same
W the learner would fit, so the run it starts is the same run, bit for bit; only the
EASE run at C/2 on the same data and dtype is taken."""

import dataclasses
import json
import os

import numpy as np
import pytest
from _cli_batch import run_cases

from arm_jax import configs, load_split, run_experiment, sweep, training, warm_start
from arm_jax.errors import ConfigError


@pytest.fixture(scope="module")
def split():
    return load_split("synthetic", n_users=300, n_items=80, use_cache=False)


def _rlarm(**kw):
    base = dict(
        batch_size=32, max_epochs=2, patience=2, learning_rate=1e-3, warm_start=True, C=0.02
    )
    return configs.model_config("synthetic", "rlarm", **{**base, **kw})


@pytest.fixture(scope="module")
def ease_runs(split, tmp_path_factory):
    """A sweep folder of EASE runs at C = 0.01 (the R-LARM warm start's) and 0.05."""
    root = tmp_path_factory.mktemp("sweep_ease")
    for c in (0.05, 0.01):
        config = configs.model_config("synthetic", "ease", C=c)
        run_experiment(split, model="ease", config=config, workdir=str(root / f"C={c}"))
    return root


def _npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_the_run_started_from_an_ease_run_is_the_refit_one(split, ease_runs, tmp_path):
    config = _rlarm()
    run_experiment(split, model="rlarm", config=config, workdir=str(tmp_path / "fit"))
    results = run_experiment(
        split,
        model="rlarm",
        config=config,
        workdir=str(tmp_path / "read"),
        warm_start_from=[str(ease_runs)],
    )
    assert results["warm_start_from"] == str(ease_runs / "C=0.01")
    fit, read = _npz(tmp_path / "fit" / "model.npz"), _npz(tmp_path / "read" / "model.npz")
    np.testing.assert_array_equal(read["W"], fit["W"])
    for part in ("valid", "test"):
        a = _npz(tmp_path / "fit" / f"per_user_{part}.npz")
        b = _npz(tmp_path / "read" / f"per_user_{part}.npz")
        for key in a:
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"{part} {key}")
    losses = [
        [json.loads(line)["learner_loss"] for line in open(tmp_path / d / "metrics.jsonl")]
        for d in ("fit", "read")
    ]
    assert losses[0] == losses[1]


def test_only_the_ease_run_at_half_c_on_the_same_data_is_taken(split, ease_runs):
    find = warm_start.ease_warm_start
    assert find(split, _rlarm(), [str(ease_runs)]) == str(ease_runs / "C=0.01")
    # A workdir itself is a source too.
    assert find(split, _rlarm(C=0.1), [str(ease_runs / "C=0.05")]) == str(ease_runs / "C=0.05")
    assert find(split, _rlarm(C=0.04), [str(ease_runs)]) is None  # no EASE at C = 0.02
    assert find(split, _rlarm(warm_start=False), [str(ease_runs)]) is None
    other = load_split("synthetic", n_users=300, n_items=80, seed=1, use_cache=False)
    assert find(other, _rlarm(), [str(ease_runs)]) is None  # other data
    assert find(split, _rlarm(), [str(ease_runs)], dtype=np.float64) is None
    with pytest.raises(ConfigError, match="is not a folder"):
        find(split, _rlarm(), [str(ease_runs / "C=0.01" / "model.npz")])


def test_an_unfinished_ease_run_is_not_taken(split, ease_runs, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("config.json", "model.npz"):  # results.json not written yet
        os.link(ease_runs / "C=0.01" / name, partial / name)
    assert warm_start.ease_warm_start(split, _rlarm(), [str(partial)]) is None


def test_a_warm_start_w_needs_a_dense_warm_start(split):
    with pytest.raises(ConfigError, match="needs warm_start=True"):
        training.train_adversarial(
            split,
            model="rlarm",
            config=_rlarm(warm_start=False),
            warm_start_w=lambda: np.zeros((80, 80), np.float32),
        )


def test_reproduce_starts_the_adversarial_models_from_its_own_ease(split, tmp_path):
    best = {"ease": {"C": 0.01}, "rlarm": dataclasses.asdict(_rlarm())}
    keep = ("C", "B", "batch_size", "learning_rate", "warm_start", "max_epochs", "patience")
    best["rlarm"] = {k: v for k, v in best["rlarm"].items() if k in keep}
    workdirs = sweep.reproduce_models(
        lambda: split,
        dataset="synthetic",
        workdir=str(tmp_path),
        models=("ease", "rlarm"),
        best=best,
    )
    with open(os.path.join(workdirs[1], "results.json")) as f:
        assert json.load(f)["warm_start_from"] == str(tmp_path / "ease")


def test_a_sweep_reads_each_cells_warm_start_where_there_is_one(tmp_path):
    ease = str(tmp_path / "ease")
    out = run_cases(
        "sweep.py",
        [
            ["--model=ease", '--grid={"C": [0.005]}', f"--sweep_dir={ease}"],
            ["--model=rlarm", "--max_epochs=1", "--sweep_dir=rlarm", f"--warm_start_from={ease}",
             '--grid={"C": [0.01, 0.02], "B": [100], "learning_rate": [0.001], '
             '"warm_start": [true], "batch_size": [32]}'],
        ],
        tmp_path,
    )  # fmt: skip
    for case in out:
        assert case.returncode == 0, case.stderr[-2000:]
    rlarm = os.path.join(out[1].cwd, "rlarm")
    read = {}
    for c in ("0.01", "0.02"):
        cell = f"B=100,C={c},batch_size=32,learning_rate=0.001,warm_start=True"
        with open(os.path.join(rlarm, cell, "results.json")) as f:
            read[c] = json.load(f).get("warm_start_from")
    # Only C = 0.01 has its EASE (C/2 = 0.005) there; C = 0.02 fits its own.
    assert read == {"0.01": os.path.join(ease, "C=0.005"), "0.02": None}
