"""End-to-end smoke runs of launch/train.py for the closed-form models, and its errors."""

import json
import os

import numpy as np
import pytest
from _cli_batch import run_cases  # every command line of this file, one interpreter

from arm_jax.data import load_split

DATA = os.environ.get("ARM_JAX_TEST_DATA")


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


CLOSED_FORM = [("ease", ["--C=0.01"]), ("ease_ipw", ["--beta=0.5"])]


@pytest.mark.parametrize("model,extra", CLOSED_FORM)
def test_closed_form_models_on_synthetic(runs, model, extra):
    out, run = runs[model]
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| test |" in out.stdout
    results = _check_workdir(run, model)
    assert set(results["seconds"]) >= {"gram", "solve", "evaluate"}
    w = np.load(run / "model.npz")["W"]
    assert np.all(np.diag(w) == 0)
    # The synthetic data carries its planted groups into the per-user files.
    assert set(np.unique(np.load(run / "per_user_test.npz")["group"])) >= {0, 1}


def test_l2_spelling_and_float64(runs):
    # a: `--model=ease --C=0.01` of the test above (the default model, the same run).
    (out_a, a), (out_b, b) = runs["ease"], runs["l2"]
    assert out_a.returncode == 0 and out_b.returncode == 0, out_b.stderr[-3000:]
    n_train = json.load(open(a / "config.json"))["data"]["n_train_users"]
    assert runs["l2_n_train"] == n_train  # b's --l2 is 0.01 times a's training users
    assert json.load(open(b / "config.json"))["dtype"] == "float64"
    a = json.load(open(a / "results.json"))["test"]
    b = json.load(open(b / "results.json"))["test"]
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


REAL = ["ml-100k", "ml-latest-small"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cli_cache):
    """train.py on every command line of this file, in one interpreter (_cli_batch) with
    the session's data and compilation cache: `{name: (result, workdir)}`, and for each
    row of BAD_INPUT `{tuple(args): result}` (run with `--workdir=run` in a folder of
    its own)."""
    root = tmp_path_factory.mktemp("train")
    n_train = load_split("synthetic", use_cache=False).train.shape[0]
    named = {model: [f"--model={model}", *extra] for model, extra in CLOSED_FORM}
    named["l2"] = [f"--l2={0.01 * n_train}", "--float64"]
    named["rlarm_nn"] = ["--model=rlarm_nn", "--max_epochs=2"]
    named["rlarm_nn/resume"] = ["--model=rlarm_nn", "--max_epochs=3", "--resume"]
    if DATA:
        for dataset in REAL:
            named[dataset] = [f"--dataset={dataset}", f"--data_dir={DATA}/{dataset}"]
        named["rlarm/ml-100k"] = [
            "--dataset=ml-100k", f"--data_dir={DATA}/ml-100k", "--model=rlarm", "--max_epochs=2",
        ]  # fmt: skip
    workdirs = {name: root / "runs" / name.split("/")[0].replace("-", "_") for name in named}
    workdirs["rlarm/ml-100k"] = root / "runs" / "rlarm_ml100k"
    argvs = [[*args, f"--workdir={workdirs[name]}"] for name, args in named.items()]
    argvs += [[*args, "--workdir=run"] for args, _ in BAD_INPUT]
    outs = run_cases("train.py", argvs, root, ARM_JAX_CACHE=cli_cache)
    result = {name: (out, workdirs[name]) for name, out in zip(named, outs)}
    result.update({tuple(args): out for (args, _), out in zip(BAD_INPUT, outs[len(named) :])})
    return {**result, "l2_n_train": n_train}


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_input_is_one_line_error(runs, args, message):
    out = runs[tuple(args)]
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not os.path.exists(os.path.join(out.cwd, "run"))  # nothing written


@pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA unset")
@pytest.mark.parametrize("dataset", REAL)
def test_ease_on_real_data(runs, dataset):
    out, run = runs[dataset]
    assert out.returncode == 0, out.stderr[-3000:]
    results = _check_workdir(run, "ease")
    assert results["test"]["ndcg@100"] > 0.2


@pytest.mark.parametrize("model", ["rlarm_nn"])  # ARM's resume: tests/test_training.py
def test_adversarial_models_train_and_resume_from_the_cli(runs, model):
    (out, run), (resumed, _) = runs[model], runs[f"{model}/resume"]
    assert out.returncode == 0, out.stderr[-3000:]
    assert "epoch=2" in out.stdout
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    results = json.load(open(run / "results.json"))
    assert results["model"] == model and results["test"]["n_users"] > 0
    scores = np.load(run / "adversary_scores.npz")
    n_train = json.load(open(run / "config.json"))["data"]["n_train_users"]
    assert len(scores["score"]) == n_train and np.all(np.isfinite(scores["score"]))


@pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA unset")
def test_rlarm_on_ml100k_from_the_cli(runs):
    out, run = runs["rlarm/ml-100k"]
    assert out.returncode == 0, out.stderr[-3000:]
    _check_workdir(run, "rlarm")
