"""launch/train.py with the worst-case baselines (CVaR-EASE, EDLAE, group DRO): the run's
files as for EASE, and every bad flag refused in one line before anything is written."""

import json
import os

import numpy as np
import pytest
from _cli_batch import run_cases

from arm_jax import configs, grids, report
from arm_jax.errors import ConfigError


def train_batch(tmp_path_factory, cache, named, refused) -> dict:
    """train.py in one interpreter (_cli_batch) with the session's data and compilation
    cache: `{name: result}` for each `named` command line, run with
    `--workdir=<root>/runs/<name>` (the result's `workdir`), and `{tuple(args): result}`
    for each `(args, expected)` row of `refused`, run with `--workdir=run` in a folder of
    its own (the result's `cwd`)."""
    root = tmp_path_factory.mktemp("train")
    workdirs = {name: root / "runs" / name for name in named}
    argvs = [[*args, f"--workdir={workdirs[name]}"] for name, args in named.items()]
    argvs += [[*args, "--workdir=run"] for args, _ in refused]
    outs = run_cases("train.py", argvs, root, ARM_JAX_CACHE=cache)
    for name, out in zip(named, outs):
        out.workdir = workdirs[name]
    result = dict(zip(named, outs))
    result.update({tuple(args): out for (args, _), out in zip(refused, outs[len(named) :])})
    return result


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


CLOSED_FORM = {
    "ease": ["--model=ease"],
    "edlae": ["--model=edlae", "--dropout_p=0.3"],
    "cvar_ease": ["--model=cvar_ease", "--alpha=0.3", "--rounds=2"],
}
GROUP_DRO = ["--model=group_dro", "--groups=4", "--max_epochs=2", "--batch_size=256"]


def test_closed_form_baselines_train_and_analyse(runs):
    for model in CLOSED_FORM:
        assert runs[model].returncode == 0, runs[model].stderr[-3000:]
    _check_run(runs["edlae"].workdir, "edlae", dropout_p=0.3)
    _check_run(runs["cvar_ease"].workdir, "cvar_ease", alpha=0.3, rounds=2, cvar_loss="rank")
    workdirs = [str(runs[model].workdir) for model in CLOSED_FORM]
    result = report.analyze_workdirs(workdirs, n_boot=100)
    assert set(result.worst_off["model"]) == {"ease", "edlae", "cvar_ease"}
    assert set(result.groups["label"]) == {"EASE", "EDLAE", "CVaR-EASE"}


def test_group_dro_trains(runs):
    proc = runs["group_dro"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = proc.workdir
    _check_run(run, "group_dro", low=0.05, groups=4)  # 2 epochs from Glorot
    logits = np.load(run / "adversary.npz")["logits"]
    assert logits.shape == (4,) and np.any(logits != 0)
    scores = np.load(run / "adversary_scores.npz")["score"]
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
def runs(tmp_path_factory, cli_cache):
    named = {**CLOSED_FORM, "group_dro": GROUP_DRO}
    return train_batch(tmp_path_factory, cli_cache, named, REFUSED)


@pytest.mark.parametrize("args,match", REFUSED)
def test_bad_flags_are_refused_before_writing(runs, args, match):
    proc = runs[tuple(args)]
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
