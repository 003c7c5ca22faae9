"""Hyperparameter grids on validation NDCG@100: expansion, cell names, results, best.

A sweep is one folder per grid cell, `<sweep_dir>/<cell_name>/`, each a model workdir;
a cell is finished once its `results.json` exists. The default grid of a model is the
paper's learning rates and a neighbourhood of the published values of `configs.py`:

  * learning_rate (adversarial models): {1e-5, 2e-5, 5e-5, 1e-4} (§5.1);
  * C: ×{0.2, 0.5, 1, 2, 5} for EASE and EASE-IPW (closed form, cheap), ×{0.5, 1, 2} for
    the adversarial models;
  * B: ×{0.2, 0.5, 1, 2, 5};
  * β: the published value ± 0.2 and ± 0.4, kept >= 0;
  * d (hidden_dim): {d/2, d, 2d}, rounded, >= 1.

A grid file (JSON) overrides any of these: `{"C": [...], "B": [...]}` for every model, or
`{"<model>": {"C": [...]}}` per model.
"""

import dataclasses
import itertools
import math
import os

import pandas as pd

from arm_jax.configs import ADVERSARIAL_MODELS, MODELS, ModelConfig, model_config
from arm_jax.errors import ConfigError, DataError
from arm_jax.io import read_json

LEARNING_RATES = (1e-5, 2e-5, 5e-5, 1e-4)
SELECTION_METRIC = "valid_ndcg@100"
_WIDE = (0.2, 0.5, 1.0, 2.0, 5.0)
_NARROW = (0.5, 1.0, 2.0)


def swept_parameters(model: str) -> tuple[str, ...]:
    """The hyperparameters a sweep of `model` searches, as ModelConfig field names."""
    if model == "ease":
        return ("C",)
    if model == "ease_ipw":
        return ("C", "beta")
    if model == "rlarm_nn":
        return ("learning_rate", "C", "B", "hidden_dim")
    if model in ADVERSARIAL_MODELS:
        return ("learning_rate", "C", "B")
    raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")


def _neighbourhood(value: float, factors: tuple[float, ...]) -> list[float]:
    return sorted({float(f"{value * f:.6g}") for f in factors})


def default_grid(dataset: str, model: str) -> dict[str, list]:
    """The default grid of `model` on `dataset` around its `model_config` defaults."""
    config = model_config(dataset, model)
    grid: dict[str, list] = {}
    for name in swept_parameters(model):
        if name == "learning_rate":
            grid[name] = list(LEARNING_RATES)
        elif name == "C":
            factors = _NARROW if model in ADVERSARIAL_MODELS else _WIDE
            grid[name] = _neighbourhood(config.C, factors)
        elif name == "B":
            grid[name] = _neighbourhood(config.B, _WIDE)
        elif name == "beta":
            offsets = (-0.4, -0.2, 0.0, 0.2, 0.4)
            grid[name] = sorted(
                {round(config.beta + o, 6) for o in offsets if config.beta + o >= 0}
            )
        elif name == "hidden_dim":
            d = config.hidden_dim
            grid[name] = sorted({max(1, round(d / 2)), d, 2 * d})
    return grid


def load_grid(path: str | None, dataset: str, model: str) -> dict[str, list]:
    """`default_grid` with the lists of the JSON grid file at `path` (if any) replacing it.

    Raises ConfigError for an unknown hyperparameter or a value that is not a non-empty
    list.
    """
    grid = default_grid(dataset, model)
    if path is None:
        return grid
    try:
        spec = read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable JSON grid file ({e})") from e
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a JSON object of lists")
    if any(isinstance(v, dict) for v in spec.values()):
        spec = spec.get(model, {})
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for name, values in spec.items():
        if name not in fields:
            raise ConfigError(f"{path}: unknown hyperparameter {name!r}")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: {name!r} must be a non-empty list, got {values!r}")
        grid[name] = list(values)
    return grid


def expand_grid(grid: dict[str, list]) -> list[dict]:
    """Every combination of `grid`'s lists, keys in sorted order, last key fastest."""
    names = sorted(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cell_name(params: dict) -> str:
    """A folder name for one cell, e.g. `B=2000,C=0.005,learning_rate=5e-05`."""
    return ",".join(f"{k}={_format_value(params[k])}" for k in sorted(params))


def is_finished(cell_dir: str) -> bool:
    """Whether the cell in `cell_dir` has written its results.json."""
    return os.path.isfile(os.path.join(cell_dir, "results.json"))


def collect_results(sweep_dir: str, cells: list[dict]) -> pd.DataFrame:
    """One row per finished cell: its parameters, valid_/test_ metrics, and its folder.

    Args:
      sweep_dir: the folder holding one sub-folder per cell (named by `cell_name`).
      cells: the grid's cells; unfinished ones are left out.
    """
    rows = []
    for params in cells:
        cell_dir = os.path.join(sweep_dir, cell_name(params))
        if not is_finished(cell_dir):
            continue
        try:
            results = read_json(os.path.join(cell_dir, "results.json"))
        except (OSError, ValueError) as e:
            raise DataError(f"{cell_dir}/results.json: unreadable ({e})") from e
        row = {"cell": cell_name(params), **params}
        for split in ("valid", "test"):
            for metric, value in results.get(split, {}).items():
                row[f"{split}_{metric}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def best_cell(table: pd.DataFrame, *, metric: str = SELECTION_METRIC) -> dict:
    """The row of `table` with the highest finite `metric` (first on ties), as a dict."""
    if metric not in table or table[metric].isna().all():
        raise DataError(f"no finished cell reports {metric}")
    values = table[metric].astype(float)
    values = values.where(values.map(math.isfinite))
    return table.loc[values.idxmax()].to_dict()
