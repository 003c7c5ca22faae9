"""launch/train.py with the item-level adversary and the EDLAE learner: the run's files,
the niche-item AUC in results.json and the analysis, and bad flags refused in one line."""

import json
import os

import numpy as np
import pytest
from test_worst_case_cli import train_batch  # train.py's command lines, one interpreter

from arm_jax import analysis, configs, grids, report

TRAINED = {
    "ease": ["--model=ease"],
    "item_rlarm": ["--model=item_rlarm", "--max_epochs=2", "--batch_size=256", "--B=0.1"],
    "rlarm": ["--model=rlarm", "--learner=edlae", "--dropout_p=0.3", "--warm_start",
              "--max_epochs=1", "--batch_size=256"],
}  # fmt: skip


def test_item_adversary_and_edlae_learner_train_and_analyse(trained):
    for name in TRAINED:
        assert trained[name].returncode == 0, trained[name].stderr[-3000:]
    runs = trained["ease"].workdir.parent  # the three workdirs and nothing else
    results = json.loads((runs / "item_rlarm" / "results.json").read_text())
    items = np.load(runs / "item_rlarm" / "item_scores.npz")
    assert items["score"].shape == items["group"].shape == (1000,)
    assert np.any(items["score"] != 0)  # the logits moved
    expected = analysis.item_auc(items["score"], items["group"])
    assert results["niche_item_auc"] == pytest.approx(expected)
    assert not (runs / "item_rlarm" / "adversary_scores.npz").exists()  # no user scores
    edlae = json.loads((runs / "rlarm" / "results.json").read_text())
    assert edlae["hyperparameters"]["learner"] == "edlae"
    assert edlae["hyperparameters"]["dropout_p"] == 0.3
    assert 0.3 < edlae["valid"]["ndcg@100"] < 1  # the warm start is EDLAE's closed form
    assert np.all(np.diag(np.load(runs / "rlarm" / "model.npz")["W"]) == 0)
    result = report.analyze_workdirs([str(runs)], n_boot=50)
    row = result.item_auc.set_index("model").loc["item_rlarm"]
    assert row["auc"] == pytest.approx(expected) and row["n_niche"] == 400


REFUSED = [
    (["--model=rlarm_edlae", "--learner=low_rank"], "--learner"),
    (["--model=rlarm", "--dropout_p=0.3"], "--dropout_p"),  # the dense learner
    (["--model=rlarm", "--learner=edlae", "--dropout_p=1"], "--dropout_p"),
    (["--model=ease", "--learner=edlae"], "--learner"),
    (["--model=item_arm", "--B=0"], "--B"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli_cache):
    return train_batch(tmp_path_factory, cli_cache, TRAINED, REFUSED)


@pytest.mark.parametrize("args,match", REFUSED)
def test_bad_flags_are_refused_before_writing(trained, args, match):
    proc = trained[tuple(args)]
    assert proc.returncode == 1 and proc.stderr.startswith("error:"), proc.stderr[-2000:]
    assert match in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(proc.cwd, "run"))


@pytest.mark.parametrize("model", ["rlarm_edlae", "item_arm", "item_rlarm", "ui_arm", "ui_rlarm"])
def test_new_models_have_defaults_and_grids(model):
    for dataset in ("synthetic", "ml-100k", "ml-latest-small", "ml-20m"):
        config = configs.model_config(dataset, model)
        grid = grids.default_grid(dataset, model)
        assert set(grid) == {"learning_rate", "C", "B"} and all(grid.values())
    assert configs.REGISTRY[model].kind == "adversarial"
    assert (config.learner == "edlae") == (model == "rlarm_edlae")
