"""Runs that used to succeed silently wrong (issue 16): non-finite hyperparameters, two
runs in one workdir, a diverged run, edited data in a reused workdir, unwritable
workdirs."""

import dataclasses
import errno
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from _cli_batch import run_cases  # train.py's command lines, one interpreter for all

from arm_jax import configs, experiment, io, load_split, report, run_experiment, training
from arm_jax.errors import ArmJaxError, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BAD = (math.nan, math.inf, -math.inf, 0, -1, 1e300, 10**12)


@pytest.fixture(scope="module")
def split():
    return load_split("synthetic", n_users=300, n_items=80, use_cache=False)


def _outcome(model, name, value):
    """ConfigError's message, or None where the config is accepted."""
    try:
        configs.model_config("synthetic", model, **{name: value})
    except ConfigError as e:
        assert "\n" not in str(e) and f"{name}" in str(e), str(e)
        return str(e)
    return None


def test_a_grid_of_bad_hyperparameters_is_refused_or_trains_a_finite_model(tmp_path, split):
    accepted = {}
    for model in configs.MODELS:
        names = [n for n in configs.HYPERPARAMETERS[model] if n != "warm_start"]
        if model in configs.ADVERSARIAL_MODELS:
            names += ["max_epochs", "patience"]
        for name, value in itertools.product(names, BAD):
            message = _outcome(model, name, value)
            if isinstance(value, float) and not math.isfinite(value):
                assert message, (model, name, value)  # never accepted
            if message is None:
                accepted.setdefault(model, {})[name] = value
    # What stays is in range; each model trains on all of it at once to a finite model,
    # or a run that says it diverged.
    adversarial = {"C": 10**12, "B": 10**12, "learning_rate": 10**12, "warmup_epochs": 0}
    assert accepted == {
        "ease": {"C": 10**12},
        "ease_ipw": {"C": 10**12, "beta": 0},
        "cvar_ease": {"C": 10**12},
        "edlae": {"C": 10**12, "dropout_p": 0},
        **{m: adversarial for m in configs.ADVERSARIAL_MODELS},
        "rlarm_edlae": {**adversarial, "dropout_p": 0},  # p = 0 is EASE's loss
    }
    for model in ("ease", "ease_ipw", "cvar_ease", "edlae", "arm", "rlarm_nn"):
        extra = dict(max_epochs=1, batch_size=64) if model in adversarial_models() else {}
        config = configs.model_config("synthetic", model, **accepted[model], **extra)
        workdir = tmp_path / model
        results = run_experiment(split, model=model, config=config, workdir=str(workdir))
        w = np.load(workdir / "model.npz")["W"]
        assert np.isfinite(w).all() or experiment.divergence(results), model


def adversarial_models():
    return configs.ADVERSARIAL_MODELS


def test_a_closed_form_that_is_not_finite_writes_nothing(tmp_path, split, monkeypatch):
    def nan_w(split, model, config, *, dtype, mesh=None):
        w, seconds = fit(split, model, config, dtype=dtype)
        return w * np.nan, seconds

    fit = experiment.fit_closed_form
    monkeypatch.setattr(experiment, "fit_closed_form", nan_w)
    config = configs.model_config("synthetic", "ease")
    with pytest.raises(ConfigError, match=r"gives a non-finite W .* \(nothing was written\)"):
        run_experiment(split, model="ease", config=config, workdir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_warmup_at_least_max_epochs_is_warned_of():
    config = configs.model_config("synthetic", "arm", warmup_epochs=3, max_epochs=3)
    (warning,) = configs.config_warnings(config, "arm")
    assert "the adversary never trains" in warning
    assert configs.config_warnings(dataclasses.replace(config, max_epochs=4), "arm") == []


def test_a_workdir_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, split):
    config = configs.model_config("synthetic", "ease")
    workdir = tmp_path / "run"
    workdir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (workdir / io.LOCK_NAME).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        with pytest.raises(ConfigError, match=f"run is in use by process {sleeper.pid} on "):
            run_experiment(split, model="ease", config=config, workdir=str(workdir))
        assert os.listdir(workdir) == [io.LOCK_NAME]  # nothing written
    finally:
        sleeper.kill()
        sleeper.wait()
    # The process is gone (a killed run): its lock is taken over, and released after.
    run_experiment(split, model="ease", config=config, workdir=str(workdir))
    assert (workdir / "results.json").exists() and not (workdir / io.LOCK_NAME).exists()


def test_a_workdir_that_cannot_be_written_is_a_one_line_error(tmp_path, split, monkeypatch):
    config = configs.model_config("synthetic", "ease")
    (tmp_path / "file").write_text("x")
    for workdir, match in (
        (tmp_path / "file", "file: File exists .* a file stands where a folder is needed"),
        (tmp_path / "file" / "run", "Not a directory"),
        ("/proc/arm_jax_run", "/proc/arm_jax_run: No such file"),
    ):
        with pytest.raises(ConfigError, match=match) as info:
            run_experiment(split, model="ease", config=config, workdir=str(workdir))
        assert "\n" not in str(info.value)

    def full(path, **arrays):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(io, "savez", full)
    with pytest.raises(ConfigError, match=r"model.npz: No space left on device .* free space"):
        run_experiment(split, model="ease", config=config, workdir=str(tmp_path / "full"))
    assert not (tmp_path / "full" / io.LOCK_NAME).exists()


def test_the_workdir_identity_includes_the_data_files(tmp_path):
    path = tmp_path / "x.csv"
    rows = [(u, i) for u in range(1, 41) for i in range(1, 9)]
    path.write_text("u,i,r\n" + "".join(f"{u},{i},4\n" for u, i in rows))
    kw = dict(data_path=str(path), columns="u,i,r", n_heldout_users=4, use_cache=False)
    split = load_split("interactions", **kw)
    config = configs.model_config("interactions", "ease", C=0.1)
    run_experiment(split, model="ease", config=config, workdir=str(tmp_path / "run"))
    recorded = json.load(open(tmp_path / "run" / "config.json"))["data"]["sha256"]
    assert recorded == {"x.csv": split.checksums[0][1]}
    # The same counts, another file (a rating edited): not the same run.
    path.write_text(path.read_text().replace("1,1,4", "1,1,5"))
    edited = load_split("interactions", **kw)
    assert experiment.run_record(edited, "ease", config)["data"] != {
        **experiment.run_record(split, "ease", config)["data"]
    }
    with pytest.raises(ConfigError, match=r"holds another run \(data.sha256.x.csv '"):
        run_experiment(edited, model="ease", config=config, workdir=str(tmp_path / "run"))
    # Training's checkpoint check is the same identity.
    arm = configs.model_config("interactions", "arm", batch_size=8, max_epochs=1)
    run_experiment(split, model="arm", config=arm, workdir=str(tmp_path / "arm"))
    with pytest.raises(ConfigError, match="holds a checkpoint of a different run"):
        training.check_workdir(
            edited, str(tmp_path / "arm"), model="arm", config=arm, seed=0,
            dtype=np.float32, resume=True,
        )  # fmt: skip


def test_a_diverged_run_is_flagged_by_the_analysis(tmp_path, split):
    ease = configs.model_config("synthetic", "ease")
    arm = configs.model_config("synthetic", "arm", batch_size=32, max_epochs=1)
    run_experiment(split, model="ease", config=ease, workdir=str(tmp_path / "ease"))
    results = run_experiment(split, model="arm", config=arm, workdir=str(tmp_path / "arm"))
    assert experiment.divergence(results) is None
    diverged = {**results, "stop_reason": "non-finite loss in epoch 2", "best_epoch": 1}
    io.write_json(tmp_path / "arm" / "results.json", diverged)
    assert "training diverged (non-finite loss in epoch 2); the model is epoch 1's" in (
        experiment.divergence(diverged)
    )
    analysis = report.analyze_workdirs([str(tmp_path / "ease"), str(tmp_path / "arm")])
    (warning,) = analysis.warnings
    assert warning.startswith("arm (") and "training diverged: non-finite loss in epoch 2" in (
        warning
    )
    assert "**Warning:** arm" in report.summary_markdown(analysis)
    assert report.summary(analysis)["warnings"] == [warning]


# ------------------------------------------------------------------------ train.py
BAD_VALUES = [
    (["--C=nan"], "--C must be finite"),
    (["--model=ease_ipw", "--beta=inf"], "--beta must be finite"),
    (["--l2=-inf"], "--l2 must be finite, > 0"),
    (["--model=rlarm_nn", "--hidden_dim=1000000000"], "--hidden_dim (d) must be in [1"),
]
DIVERGED = ["--model=arm", "--learning_rate=1e30", "--max_epochs=2", "--warmup_epochs=2",
            "--workdir=run"]  # fmt: skip


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory, cli_cache):
    """train.py on each command line of BAD_VALUES and on DIVERGED, all in one
    interpreter (_cli_batch); for BAD_VALUES the data file is missing: the flag is
    refused first."""
    root = tmp_path_factory.mktemp("refused")
    missing = ["--dataset=interactions", f"--data_path={root / 'none.csv'}"]
    argvs = [["--workdir=run", *missing, *args] for args, _ in BAD_VALUES] + [DIVERGED]
    outs = run_cases("train.py", argvs, root, ARM_JAX_CACHE=cli_cache)
    return {"diverged": outs[-1], **{tuple(a): out for (a, _), out in zip(BAD_VALUES, outs)}}


@pytest.mark.parametrize("args,message", BAD_VALUES)
def test_train_py_refuses_bad_values_before_reading_the_data(train_runs, args, message):
    out = train_runs[tuple(args)]
    assert out.returncode != 0 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert message in line
    assert not os.path.exists(os.path.join(out.cwd, "run"))


def test_train_py_says_last_that_a_diverged_run_failed(train_runs):
    out = train_runs["diverged"]
    assert out.returncode == 1 and "| test |" in out.stdout
    assert "--warmup_epochs=2 >= --max_epochs=2: the adversary never trains" in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run: training diverged (non-finite loss in epoch 1")
    run = os.path.join(out.cwd, "run")
    results = json.load(open(os.path.join(run, "results.json")))
    assert results["stop_reason"].startswith("non-finite loss in epoch 1")
    with pytest.raises(ArmJaxError, match="diverged before its first evaluation"):
        report.load_run(run)
