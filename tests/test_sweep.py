"""Tests of the pure sweep helpers in arm_jax.sweep."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _cli_batch import finish_cases, start_cases  # launch scripts, one interpreter a batch

from arm_jax import configs, grids, report, sweep
from arm_jax.configs import model_config
from arm_jax.data import load_split, synthetic_split
from arm_jax.errors import ConfigError, DataError
from arm_jax.io import write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("ARM_JAX_TEST_DATA")


@pytest.mark.parametrize("model", ["ease", "ease_ipw", "arm", "rlarm", "rlarm_nn"])
def test_default_grid_contains_published_values(model):
    grid = grids.default_grid("ml-20m", model)
    config = model_config("ml-20m", model)
    assert set(grid) == set(grids.swept_parameters(model))
    for name, values in grid.items():
        assert getattr(config, name) in values, name
        assert values == sorted(values) and len(set(values)) == len(values)
        assert all(v > 0 for v in values) or name == "beta"
    if "learning_rate" in grid:
        assert grid["learning_rate"] == [1e-5, 2e-5, 5e-5, 1e-4]


def test_expand_grid_and_cell_names_are_unique():
    grid = grids.default_grid("netflix", "rlarm_nn")
    cells = grids.expand_grid(grid)
    assert len(cells) == int(np.prod([len(v) for v in grid.values()]))
    names = [grids.cell_name(c) for c in cells]
    assert len(set(names)) == len(names)
    assert all("/" not in n and " " not in n for n in names)
    assert grids.cell_name({"C": 0.005, "B": 2000.0}) == "B=2000,C=0.005"


def test_load_grid_overrides_and_rejects(tmp_path):
    path = str(tmp_path / "grid.json")
    write_json(path, {"rlarm": {"B": [100.0, 200.0]}, "ease": {"C": [1.0]}})
    grid = grids.load_grid(path, "ml-20m", "rlarm")
    assert grid["B"] == [100.0, 200.0] and grid["C"] == grids.default_grid("ml-20m", "rlarm")["C"]
    write_json(path, {"Q": [1]})
    with pytest.raises(ConfigError, match="Q"):
        grids.load_grid(path, "ml-20m", "rlarm")
    write_json(path, {"C": []})
    with pytest.raises(ConfigError, match="non-empty"):
        grids.load_grid(path, "ml-20m", "ease")


@pytest.mark.parametrize(
    "model, grid, message",
    [
        ("ease", '{"C": [0.2, 0.4, -0.1]}', "C must be finite and > 0.0, got -0.1"),
        ("ease", '{"C": [0, 0.2]}', "C must be finite and > 0.0, got 0"),
        ("ease", '{"C": [NaN, 0.2]}', "C must be finite"),
        ("ease", '{"C": [0.2, Infinity]}', "C must be finite"),
        ("ease", '{"C": [true]}', "C takes a number, got True"),
        ("ease", '{"C": ["0.2"]}', "C takes a number, got '0.2'"),
        ("ease", '{"C": [null]}', "C takes a number, got None"),
        ("rlarm_nn", '{"hidden_dim": [2.5]}', "hidden_dim takes an integer, got 2.5"),
        ("rlarm", '{"batch_size": [64, 0]}', "batch_size must be finite and >= 1"),
        ("rlarm", '{"warm_start": [1]}', "warm_start takes true or false"),
        ("ease", '{"C": [0.2, 0.2, 0.1]}', "C=0.2 repeats C=0.2"),
        ("ease", '{"C": [0.2, 0.20000001]}', r"C=0.20000001 shares the folder of C=0.2 \(C=0.2\)"),
        ("ease", '{"C": [0.2], "B": [1, 2]}', "ease has no hyperparameter 'B'; it has C"),
        ("ease", '{"max_epochs": [5]}', "ease has no hyperparameter 'max_epochs'"),
        ("rlarm", '{"hidden_dim": [2]}', "rlarm has no hyperparameter 'hidden_dim'"),
        ("ease", '{"C": [0.1], "rlarm": {"C": [0.5]}}', "mixes per-model entries with lists"),
        ("ease", '{"eas": {"C": [0.5]}}', r"unknown model\(s\) \['eas'\]"),
        ("ease", '["C"]', "expected a JSON object"),
    ],
)
def test_load_grid_checks_every_value_before_training(tmp_path, model, grid, message):
    # These used to train some cells first and fail late, train NaN or True as C, end in
    # a traceback, or run identical cells (a repeated value, a B for EASE).
    path = tmp_path / "grid.json"
    path.write_text(grid)
    for given in (str(path), grid):  # a file, or the JSON text itself
        if not given.startswith("{") and given == grid:
            continue
        with pytest.raises(ConfigError, match=r"--grid=.*: " + message):
            grids.load_grid(given, "synthetic", model)


def test_grids_sweep_what_the_model_uses_and_the_small_data_defaults():
    grid = grids.load_grid('{"batch_size": [64, 128], "learning_rate": [1e-3]}', "ml-100k", "rlarm")
    assert grid["batch_size"] == [64, 128] and grid["learning_rate"] == [1e-3]
    assert all(isinstance(v, int) for v in grid["batch_size"])
    grid = grids.load_grid('{"rlarm": {"B": [1]}}', "ml-100k", "ease")  # no entry: defaults
    assert grid == grids.default_grid("ml-100k", "ease")
    for dataset in configs.SMALL_DATASETS:  # their defaults are above the paper's range
        for model in ("arm", "rlarm", "rlarm_nn"):
            lr = model_config(dataset, model).learning_rate
            assert grids.default_grid(dataset, model)["learning_rate"] == [lr / 2, lr, 2 * lr]


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).parent.parent.glob("docs/results/grids_*.json")), ids=str
)
def test_committed_grids_load_for_every_model_they_name(path):
    """The grids the README's tables were swept over (`launch/tables.sh`) stay valid."""
    spec = json.loads(path.read_text())
    assert spec and set(spec) <= set(configs.MODELS)
    dataset = path.stem.removeprefix("grids_")
    dataset = "lines" if dataset in ("amazon-book", "gowalla") else dataset
    for model, lists in spec.items():
        grid = grids.load_grid(str(path), dataset, model)
        assert {k: grid[k] for k in lists} == lists  # the file's lists, not the defaults
        assert len(grids.expand_grid(grid)) >= 1


def test_collect_results_and_best_cell(tmp_path):
    rng = np.random.default_rng(0)
    cells = grids.expand_grid({"C": [0.1, 0.2, 0.3], "beta": [0.0, 0.5]})
    scores = rng.random(len(cells))
    for cell, score in zip(cells[:-1], scores[:-1]):  # the last cell is unfinished
        write_json(
            os.path.join(tmp_path, grids.cell_name(cell), "results.json"),
            {"valid": {"ndcg@100": float(score)}, "test": {"ndcg@100": float(score) / 2}},
        )
    table = sweep.collect_results(str(tmp_path), cells)
    assert len(table) == len(cells) - 1
    best = sweep.best_cell(table)
    k = int(np.argmax(scores[:-1]))
    assert best["cell"] == grids.cell_name(cells[k])
    assert not any(c.startswith("test_") for c in table)  # test users: once, after selection
    assert json.loads(json.dumps({k: best[k] for k in ("C", "beta")})) == cells[k]
    with pytest.raises(DataError):
        sweep.best_cell(sweep.collect_results(str(tmp_path / "none"), cells))


# ------------------------------------------------------- reproduce reuses the best cell
def _sweep_best(split, sweep_dir, model, grid, **budget):
    """A sweep of `model` on `split` with `grid` and the budget; its best.json path."""
    cells = grids.expand_grid(grid)
    base = model_config("synthetic", model, **budget)
    sweep.run_sweep(lambda: split, model=model, base_config=base, cells=cells,
                    sweep_dir=str(sweep_dir), dataset="synthetic")  # fmt: skip
    table = sweep.collect_results(str(sweep_dir), cells)
    best = sweep.sweep_report(table, sweep.best_cell(table), dataset="synthetic", model=model,
                              cells=cells, sweep_dir=str(sweep_dir))  # fmt: skip
    path = str(sweep_dir / "best.json")
    write_json(path, best)
    return path


def test_reproduce_reuses_the_best_cell_of_the_same_run(tmp_path, monkeypatch):
    split = synthetic_split(seed=0, n_users=300, n_items=120)
    budget = dict(max_epochs=2, patience=1)
    paths = [
        _sweep_best(split, tmp_path / "sweep_ease", "ease", {"C": [0.1, 0.4]}),
        _sweep_best(split, tmp_path / "sweep_rlarm", "rlarm", {"B": [10.0]}, **budget),
    ]
    best = sweep.best_overrides(paths, dataset="synthetic")
    cells = sweep.best_cells(paths)
    assert set(cells) == {"ease", "rlarm"} and all(os.path.isdir(c) for c in cells.values())

    def no_training(*args, **kwargs):
        raise AssertionError("retrained a cell that holds the same run")

    monkeypatch.setattr(sweep, "run_experiment", no_training)
    reused = []
    work = tmp_path / "repro"
    workdirs = sweep.reproduce_models(
        lambda: split, dataset="synthetic", workdir=str(work), models=("ease", "rlarm"),
        best=best, overrides=budget, cells=cells, on_reuse=lambda *a: reused.append(a),
    )  # fmt: skip
    assert reused == [("ease", cells["ease"]), ("rlarm", cells["rlarm"])]
    for model, workdir in zip(("ease", "rlarm"), workdirs):
        for name in ("config.json", "results.json", "per_user_test.npz", "model.npz"):
            src = os.stat(os.path.join(cells[model], name))
            assert os.stat(os.path.join(workdir, name)).st_ino == src.st_ino, name  # a link
        assert not os.path.exists(os.path.join(workdir, "checkpoints"))
    metrics = (work / "rlarm" / "metrics.jsonl").read_text()  # appended on resume: a copy
    assert metrics == open(os.path.join(cells["rlarm"], "metrics.jsonl")).read()
    assert (
        os.stat(work / "rlarm" / "metrics.jsonl").st_ino
        != os.stat(os.path.join(cells["rlarm"], "metrics.jsonl")).st_ino
    )
    analysis = report.analyze_workdirs(workdirs)  # the analysis reads the linked files
    assert list(analysis.workdirs) == ["ease", "rlarm"] and analysis.adversary_auc is not None
    assert not [n for n in os.listdir(work) if "linking" in n]  # no temp folder left

    # Another budget is another run: trained as before, nothing linked.
    with pytest.raises(AssertionError, match="retrained"):
        sweep.reproduce_models(
            lambda: split, dataset="synthetic", workdir=str(tmp_path / "longer"),
            models=("rlarm",), best=best, overrides=dict(max_epochs=3, patience=1),
            cells=cells, on_reuse=lambda *a: reused.append(a),
        )  # fmt: skip
    assert len(reused) == 2 and not os.path.exists(tmp_path / "longer" / "rlarm")
    monkeypatch.undo()
    sweep.reproduce_models(
        lambda: split, dataset="synthetic", workdir=str(tmp_path / "longer"), models=("rlarm",),
        best=best, overrides=dict(max_epochs=3, patience=1), cells=cells,
    )  # fmt: skip
    config = json.loads((tmp_path / "longer" / "rlarm" / "config.json").read_text())
    assert config["model_config"]["max_epochs"] == 3
    assert (
        os.stat(tmp_path / "longer" / "rlarm" / "model.npz").st_ino
        != os.stat(os.path.join(cells["rlarm"], "model.npz")).st_ino
    )
    # Other hyperparameters than the cell's: not reused either.
    assert not sweep.reuse_cell(
        cells["rlarm"], str(tmp_path / "other"), model="rlarm", seed=0, dataset="synthetic",
        config=model_config("synthetic", "rlarm", B=20.0, **budget), data=None,
    )  # fmt: skip
    assert not os.path.exists(tmp_path / "other")


# ------------------------------------------------------------------ launch smoke runs
# The sweep.py command lines of this file run in one interpreter and, beside them, the
# reproduce.py ones that read no sweep in another; then those that read a sweep's
# best.json (_cli_batch), all with the session's data and compilation cache.
def _own_clicks(path) -> None:
    rng = np.random.default_rng(3)
    rows = [(u, i) for u in range(200) for i in rng.choice(60, rng.integers(8, 20), False)]
    path.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in rows))


@pytest.fixture(scope="module")
def launched(tmp_path_factory, cli_cache):
    """`{name: result}` of the launch scripts' runs below; `root`: their folder."""
    root = tmp_path_factory.mktemp("launch")
    grid = str(root / "grid.json")
    write_json(grid, {"C": [0.002, 0.01]})
    synthetic = ["--dataset=synthetic", "--model=ease", f"--sweep_dir={root / 'sweep'}",
                 f"--grid={grid}"]  # fmt: skip
    clicks = root / "clicks.csv"
    _own_clicks(clicks)
    own = [f"--data_path={clicks}", "--n_heldout_users=20", "--no_cache"]
    own_grid = '{"B": [100.0], "C": [0.01], "learning_rate": [5e-05]}'  # one cell
    sweeps = {
        "sweep": synthetic,
        "sweep/again": synthetic,  # resumes: nothing retrained
        "own/sweep": ["--dataset=interactions", *own, "--model=rlarm",
                      f"--sweep_dir={root / 'own_sweep'}", f"--grid={own_grid}",
                      "--max_epochs=1", "--patience=1"],
    }  # fmt: skip
    (root / "no_ease").mkdir()
    # Reproductions that read no sweep's files run beside the sweeps (two cores).
    alone = {
        "adversarial": ["--dataset=synthetic", f"--workdir={root / 'adversarial'}",
                        "--max_epochs=2", "--patience=1"],
        "no_ease": ["--dataset=synthetic", f"--workdir={root / 'no_ease'}", "--models=arm"],
    }  # fmt: skip
    if DATA:
        alone["ml-100k"] = [
            "--dataset=ml-100k", f"--data_dir={os.path.join(DATA, 'ml-100k')}",
            f"--workdir={root / 'ml100k'}", "--max_epochs=2", "--patience=1",
            "--models=ease,ease_ipw,arm,rlarm,rlarm_nn",  # the paper's five; all 13: synthetic
        ]  # fmt: skip
    after_sweeps = {
        "reproduce": ["--dataset=synthetic", f"--workdir={root / 'repro'}",
                      "--models=ease,ease_ipw", f"--best={root / 'sweep' / 'best.json'}"],
        "own/reproduce": ["--dataset=interactions", *own, f"--workdir={root / 'own_repro'}",
                          "--models=ease,rlarm", f"--best={root / 'own_sweep' / 'best.json'}",
                          "--max_epochs=1", "--patience=1"],
    }  # fmt: skip
    out = {"root": root, "clicks": clicks}
    sweeping = _start(root, "sweep.py", sweeps, cli_cache, folder="sweep")
    alone_running = _start(root, "reproduce.py", alone, cli_cache, folder="reproduce")
    out.update(zip(sweeps, finish_cases(sweeping)))
    after = _start(root, "reproduce.py", after_sweeps, cli_cache, folder="reproduce_after")
    out.update(zip(alone, finish_cases(alone_running)))
    out.update(zip(after_sweeps, finish_cases(after)))
    return out


def _start(root, script, table, cache, *, folder):
    """`start_cases` of `script` on the command lines of `table`, in `root / folder`."""
    folder = root / folder
    folder.mkdir()
    return start_cases(script, list(table.values()), folder, ARM_JAX_CACHE=cache)


def test_sweep_and_reproduce_apply_the_own_data_batch_cap(tmp_path, launched):
    # launch/train.py caps the batch at an eighth of the training users on a user's own
    # file; sweep.py and reproduce.py used the ML-20M batch of 1024 and were refused.
    root, clicks = launched["root"], launched["clicks"]
    proc = launched["own/sweep"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    best = json.loads((root / "own_sweep" / "best.json").read_text())
    n_train = best["data"]["n_train_users"]
    cap = model_config("interactions", "rlarm", n_train_users=n_train).batch_size
    assert n_train == 160 and cap == 16 and best["settings"]["batch_size"] == cap
    proc = launched["own/reproduce"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"rlarm: reused the sweep's best cell {best['workdir']}" in proc.stdout
    assert "ease: reused" not in proc.stdout  # no sweep of EASE given: trained
    split = load_split("interactions", data_path=str(clicks), n_heldout_users=20, use_cache=False)
    (workdir,) = sweep.reproduce_models(
        lambda: split, dataset="interactions", workdir=str(tmp_path / "defaults"),
        models=("rlarm",), overrides=dict(max_epochs=1, patience=1),
    )  # fmt: skip
    config = json.loads(open(os.path.join(workdir, "config.json")).read())
    assert config["model_config"]["batch_size"] == cap


def _launch(script, *args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("JAX_PLATFORMS", "cpu")
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "launch", script), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def test_sweep_then_reproduce_smoke(launched):
    proc, sweep_dir = launched["sweep"], launched["root"] / "sweep"
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("sweep.csv", "sweep.md", "best.json", "C=0.002/results.json"):
        assert (sweep_dir / name).exists(), name
    best = json.loads((sweep_dir / "best.json").read_text())
    table = pd.read_csv(sweep_dir / "sweep.csv")
    assert len(table) == 2 and best["metrics"]["valid_ndcg@100"] == table["valid_ndcg@100"].max()
    again = launched["sweep/again"]
    assert again.returncode == 0, again.stderr[-2000:]
    # Resumed: the cell's results are the first run's, written before the second began.
    assert os.path.getmtime(sweep_dir / "C=0.01" / "results.json") < again.started

    work, proc = launched["root"] / "repro", launched["reproduce"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((work / "ease" / "config.json").read_text())
    assert config["hyperparameters"]["C"] == best["hyperparameters"]["C"]
    assert f"ease: reused the sweep's best cell {best['workdir']}" in proc.stdout
    assert (
        os.stat(work / "ease" / "model.npz").st_ino
        == os.stat(os.path.join(best["workdir"], "model.npz")).st_ino
    )
    for name in ("table2.md", "fig1_loss_by_fold_in.png", "fig2_worst_users.png", "groups.csv"):
        assert (work / "analysis" / name).exists(), name


def test_reproduce_adversarial_smoke(launched):
    pytest.importorskip("arm_jax.training")
    proc, work = launched["adversarial"], launched["root"] / "adversarial"
    assert proc.returncode == 0, proc.stderr[-2000:]
    for model in ("ease", "ease_ipw", "arm", "rlarm", "rlarm_nn"):
        assert (work / model / "per_user_test.npz").exists(), model
    for name in ("table2.csv", "fig2_worst_users.csv", "adversary_auc.csv", "analysis.json"):
        assert (work / "analysis" / name).exists(), name


def test_reproduce_without_ease_stops_before_training(launched):
    proc = launched["no_ease"]
    assert proc.returncode != 0 and "--models must include ease" in proc.stderr
    assert "Traceback" not in proc.stderr and not os.listdir(launched["root"] / "no_ease")


@pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA unset")
def test_reproduce_and_analyze_ml100k_are_consistent(tmp_path, launched):
    proc, work = launched["ml-100k"], launched["root"] / "ml100k"
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "again"  # recomputed from the per-user files alone
    proc = _launch("analyze.py", f"--workdirs={work}", f"--outdir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(out / "table2.csv").set_index("model")
    fig2 = pd.read_csv(out / "fig2_worst_users.csv")
    ease = np.load(work / "ease" / "per_user_test.npz")["ndcg@100"].astype(np.float64)
    assert table.loc["ease", "ndcg@100"] == pytest.approx(ease.mean())
    for model in ("ease_ipw", "arm", "rlarm", "rlarm_nn"):
        other = np.load(work / model / "per_user_test.npz")["ndcg@100"].astype(np.float64)
        assert table.loc[model, "ndcg@100"] == pytest.approx(other.mean())
        row = fig2[(fig2.model == model) & (fig2.percent == 100)].iloc[0]
        assert row.n_users == len(ease) == len(other)
        assert row.diff_mean == pytest.approx(other.mean() - ease.mean())
        assert row.improvement_pct == pytest.approx(100 * (other.mean() / ease.mean() - 1))
        sizes = fig2[fig2.model == model].sort_values("percent").n_users.to_numpy()
        assert np.all(np.diff(sizes) >= 0)


def test_model_config_overrides_published_values():
    config = model_config("ml-20m", "rlarm", C=0.123, B=None, max_epochs=3)
    assert config.C == 0.123 and config.max_epochs == 3
    assert config.B == model_config("ml-20m", "rlarm").B
    with pytest.raises(ConfigError):
        model_config("ml-20m", "rlarm", B=-1.0)
    with pytest.raises(ConfigError):
        model_config("ml-20m", "rlarm", nonsense=1)
