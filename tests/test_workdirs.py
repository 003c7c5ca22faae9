"""A workdir holds one run: refusals write nothing, reuse needs the same run, files are
readable as the umask says."""

import dataclasses
import os
import shutil
import stat

import numpy as np
import pytest

from arm_jax import configs, grids, io, load_split, run_experiment, split_stats, sweep
from arm_jax.errors import ConfigError


@pytest.fixture(scope="module")
def split():
    return load_split("synthetic", n_users=300, n_items=80, use_cache=False)


def _adversarial(**kw):
    base = dict(batch_size=32, max_epochs=1, learning_rate=1e-3)
    return configs.model_config("synthetic", "arm", **{**base, **kw})


def _snapshot(workdir):
    return {
        name: (workdir / name).read_bytes()
        for name in sorted(os.listdir(workdir))
        if (workdir / name).is_file()
    }


def test_a_refused_run_leaves_the_workdir_as_it_was(tmp_path, split):
    ease_dir = tmp_path / "ease"
    ease = configs.model_config("synthetic", "ease", C=0.01)
    run_experiment(split, model="ease", config=ease, workdir=str(ease_dir))
    before = _snapshot(ease_dir)
    with pytest.raises(ConfigError, match=r"holds another run \(hyperparameters.C 0.01, not 0.05"):
        run_experiment(
            split,
            model="ease",
            config=dataclasses.replace(ease, C=0.05),
            workdir=str(ease_dir),
        )
    with pytest.raises(ConfigError, match="model 'ease', not 'arm'"):
        run_experiment(
            split, model="arm", config=_adversarial(), workdir=str(ease_dir), resume=True
        )
    with pytest.raises(ConfigError, match="seed 0, not 1"):
        run_experiment(split, model="ease", config=ease, workdir=str(ease_dir), seed=1)
    assert _snapshot(ease_dir) == before
    # The same run again is allowed (and gives the same files but for timings).
    run_experiment(split, model="ease", config=ease, workdir=str(ease_dir))
    assert (ease_dir / "config.json").read_bytes() == before["config.json"]

    arm_dir = tmp_path / "arm"
    run_experiment(split, model="arm", config=_adversarial(), workdir=str(arm_dir))
    before = _snapshot(arm_dir)
    with pytest.raises(ConfigError, match=r"already holds a run: resume it \(--resume"):
        run_experiment(split, model="arm", config=_adversarial(), workdir=str(arm_dir))
    # Same hyperparameters, another product: the checkpoint check refuses it.
    other = _adversarial(product="segment")
    with pytest.raises(ConfigError, match="checkpoint of a different run"):
        run_experiment(split, model="arm", config=other, workdir=str(arm_dir), resume=True)
    assert _snapshot(arm_dir) == before
    more = run_experiment(
        split, model="arm", config=_adversarial(max_epochs=2), workdir=str(arm_dir), resume=True
    )
    assert more["model"] == "arm"  # max_epochs may change on a resume


def test_sweeps_and_reproductions_reuse_only_the_same_runs(tmp_path, split):
    cells = grids.expand_grid({"C": [0.01]})
    base = configs.model_config("synthetic", "ease")
    kw = dict(model="ease", base_config=base, cells=cells, sweep_dir=str(tmp_path / "sweep"))
    (cell,) = sweep.run_sweep(lambda: split, dataset="synthetic", **kw)
    stamp = os.path.getmtime(os.path.join(cell, "results.json"))
    sweep.run_sweep(lambda: split, dataset="synthetic", **kw)  # reused
    assert os.path.getmtime(os.path.join(cell, "results.json")) == stamp
    with pytest.raises(ConfigError, match="dataset 'synthetic', not 'ml-100k'"):
        sweep.run_sweep(lambda: split, dataset="ml-100k", **kw)
    with pytest.raises(ConfigError, match="seed 0, not 3"):
        sweep.run_sweep(lambda: split, dataset="synthetic", seed=3, **kw)

    # reproduce_models: a finished EASE of other hyperparameters is not taken for this one.
    shutil.copytree(cell, tmp_path / "repro" / "ease")
    with pytest.raises(ConfigError, match="hyperparameters.C 0.01, not 0.5"):
        sweep.reproduce_models(
            lambda: split, dataset="synthetic", workdir=str(tmp_path / "repro"),
            models=("ease",), best={"ease": {"C": 0.5}},
        )  # fmt: skip


def test_sweeps_reuse_cells_of_the_same_split_and_budget_only(tmp_path, split):
    # Another split of the same dataset used to reuse every finished cell silently.
    other = load_split("synthetic", n_users=300, n_items=80, n_heldout_users=40, use_cache=False)
    kw = dict(
        model="ease", base_config=configs.model_config("synthetic", "ease"),
        cells=grids.expand_grid({"C": [0.01]}), sweep_dir=str(tmp_path / "ease"),
        dataset="synthetic",
    )  # fmt: skip
    (cell,) = sweep.run_sweep(lambda: split, **kw)
    another_split = r"holds another run \(data.n_train_users 240, not 220"
    with pytest.raises(ConfigError, match=another_split):
        sweep.run_sweep(lambda: other, **kw)
    shutil.copytree(cell, tmp_path / "repro" / "ease")
    with pytest.raises(ConfigError, match=another_split):
        sweep.reproduce_models(
            lambda: other, dataset="synthetic", workdir=str(tmp_path / "repro"),
            models=("ease",), best={"ease": {"C": 0.01}},
        )  # fmt: skip
    with pytest.raises(ConfigError, match="--num_workers must be >= 1"):
        sweep.run_sweep(lambda: split, num_workers=0, **kw)

    # An adversarial cell trained for 1 epoch stands for neither 2 epochs (it is resumed)
    # nor, once it has 2, for 1 again (refused).
    kw = dict(
        model="arm", cells=grids.expand_grid({"batch_size": [32]}),
        sweep_dir=str(tmp_path / "arm"), dataset="synthetic",
    )  # fmt: skip
    (cell,) = sweep.run_sweep(lambda: split, base_config=_adversarial(), **kw)
    sweep.run_sweep(lambda: split, base_config=_adversarial(max_epochs=2), **kw)
    with open(os.path.join(cell, "metrics.jsonl")) as f:
        assert len(f.read().splitlines()) == 2  # resumed for its second epoch
    with pytest.raises(ConfigError, match="trained with max_epochs=2, .* cannot stand for max"):
        sweep.run_sweep(lambda: split, base_config=_adversarial(), **kw)

    # best.json: every parameter the grid set (batch_size too), the cell's settings and
    # split, validation metrics only.
    table = sweep.collect_results(kw["sweep_dir"], kw["cells"])
    best = sweep.sweep_report(
        table, sweep.best_cell(table), dataset="synthetic", model="arm",
        cells=kw["cells"], sweep_dir=kw["sweep_dir"],
    )  # fmt: skip
    assert best["hyperparameters"] == {"batch_size": 32}
    assert best["settings"]["max_epochs"] == 2 and best["data"]["n_test_users"] > 0
    assert best["workdir"] == os.path.abspath(cell) and best["seed"] == 0
    assert best["metrics"] and all(k.startswith("valid_") for k in best["metrics"])
    path = str(tmp_path / "best.json")
    io.write_json(path, best)
    data = split_stats(split)
    assert sweep.best_overrides([path], data=data) == {"arm": {"batch_size": 32}}
    with pytest.raises(ConfigError, match="a sweep on another split"):
        sweep.best_overrides([path], data=split_stats(other))
    with pytest.raises(ConfigError, match="a sweep of 'arm', which --models does not train"):
        sweep.best_overrides([path], models=("ease", "rlarm"))


def test_finished_cells_outside_the_grid_are_named(tmp_path, split):
    # A rerun with one new cell ranks that cell alone: the sweep says which it left out.
    kw = dict(
        model="ease", base_config=configs.model_config("synthetic", "ease"),
        sweep_dir=str(tmp_path), dataset="synthetic",
    )  # fmt: skip
    both = grids.expand_grid({"C": [0.01, 0.05]})
    sweep.run_sweep(lambda: split, cells=both, **kw)
    os.makedirs(tmp_path / "C=0.2")  # unfinished: not a result
    assert sweep.finished_outside(str(tmp_path), both) == []
    assert sweep.finished_outside(str(tmp_path), both[1:]) == ["C=0.01"]
    assert sweep.finished_outside(str(tmp_path / "absent"), both) == []


def test_best_json_must_come_from_the_same_dataset(tmp_path):
    def best(name, dataset, model="rlarm"):
        path = str(tmp_path / name)
        io.write_json(path, {"dataset": dataset, "model": model, "hyperparameters": {"B": 2.0}})
        return path

    ok, other = best("a.json", "ml-100k"), best("b.json", "synthetic")
    assert sweep.best_overrides([ok], dataset="ml-100k") == {"rlarm": {"B": 2.0}}
    with pytest.raises(ConfigError, match="b.json: a sweep on 'synthetic', not on --dataset"):
        sweep.best_overrides([ok, other], dataset="ml-100k")
    with pytest.raises(ConfigError, match="a second best.json for 'rlarm'"):
        sweep.best_overrides([ok, best("c.json", "ml-100k")])


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_get_the_umask_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        io.write_text(tmp_path / "a.txt", "x")
        io.savez(tmp_path / "b.npz", x=np.zeros(2))
    finally:
        os.umask(old)
    for name in ("a.txt", "b.npz"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.npz"]  # no temporary left
