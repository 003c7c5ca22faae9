"""Tests of the pure sweep helpers in arm_jax.sweep."""

import json
import os

import numpy as np
import pytest

from arm_jax import sweep
from arm_jax.configs import model_config
from arm_jax.errors import ConfigError, DataError
from arm_jax.io import write_json


@pytest.mark.parametrize("model", ["ease", "ease_ipw", "arm", "rlarm", "rlarm_nn"])
def test_default_grid_contains_published_values(model):
    grid = sweep.default_grid("ml-20m", model)
    config = model_config("ml-20m", model)
    assert set(grid) == set(sweep.swept_parameters(model))
    for name, values in grid.items():
        assert getattr(config, name) in values, name
        assert values == sorted(values) and len(set(values)) == len(values)
        assert all(v > 0 for v in values) or name == "beta"
    if "learning_rate" in grid:
        assert grid["learning_rate"] == [1e-5, 2e-5, 5e-5, 1e-4]


def test_expand_grid_and_cell_names_are_unique():
    grid = sweep.default_grid("netflix", "rlarm_nn")
    cells = sweep.expand_grid(grid)
    assert len(cells) == int(np.prod([len(v) for v in grid.values()]))
    names = [sweep.cell_name(c) for c in cells]
    assert len(set(names)) == len(names)
    assert all("/" not in n and " " not in n for n in names)
    assert sweep.cell_name({"C": 0.005, "B": 2000.0}) == "B=2000,C=0.005"


def test_load_grid_overrides_and_rejects(tmp_path):
    path = str(tmp_path / "grid.json")
    write_json(path, {"rlarm": {"B": [100.0, 200.0]}, "ease": {"C": [1.0]}})
    grid = sweep.load_grid(path, "ml-20m", "rlarm")
    assert grid["B"] == [100.0, 200.0] and grid["C"] == sweep.default_grid("ml-20m", "rlarm")["C"]
    write_json(path, {"Q": [1]})
    with pytest.raises(ConfigError, match="Q"):
        sweep.load_grid(path, "ml-20m", "rlarm")
    write_json(path, {"C": []})
    with pytest.raises(ConfigError, match="non-empty"):
        sweep.load_grid(path, "ml-20m", "ease")


def test_collect_results_and_best_cell(tmp_path):
    rng = np.random.default_rng(0)
    cells = sweep.expand_grid({"C": [0.1, 0.2, 0.3], "beta": [0.0, 0.5]})
    scores = rng.random(len(cells))
    for cell, score in zip(cells[:-1], scores[:-1]):  # the last cell is unfinished
        write_json(
            os.path.join(tmp_path, sweep.cell_name(cell), "results.json"),
            {"valid": {"ndcg@100": float(score)}, "test": {"ndcg@100": float(score) / 2}},
        )
    table = sweep.collect_results(str(tmp_path), cells)
    assert len(table) == len(cells) - 1
    best = sweep.best_cell(table)
    k = int(np.argmax(scores[:-1]))
    assert best["cell"] == sweep.cell_name(cells[k])
    assert best["test_ndcg@100"] == pytest.approx(scores[k] / 2)
    assert json.loads(json.dumps({k: best[k] for k in ("C", "beta")})) == cells[k]
    with pytest.raises(DataError):
        sweep.best_cell(sweep.collect_results(str(tmp_path / "none"), cells))
