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

import concurrent.futures
import dataclasses
import itertools
import math
import multiprocessing
import os
from collections.abc import Callable

import pandas as pd

from arm_jax.configs import (
    ADVERSARIAL_MODELS,
    MODELS,
    ModelConfig,
    model_config,
)
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


def ranked_view(table: pd.DataFrame) -> pd.DataFrame:
    """`table` sorted best first, with only the cell, its parameters and main metrics."""
    keep = [
        c
        for c in table.columns
        if not c.startswith(("valid_", "test_"))
        or c in (SELECTION_METRIC, "valid_recall@20", "valid_recall@50", "test_ndcg@100")
    ]
    return table.sort_values(SELECTION_METRIC, ascending=False)[keep]


def best_cell(table: pd.DataFrame, *, metric: str = SELECTION_METRIC) -> dict:
    """The row of `table` with the highest finite `metric` (first on ties), as a dict."""
    if metric not in table or table[metric].isna().all():
        raise DataError(f"no finished cell reports {metric}")
    values = table[metric].astype(float)
    values = values.where(values.map(math.isfinite))
    return table.loc[values.idxmax()].to_dict()


# --------------------------------------------------------------------------- running
def _reusable(workdir: str, *, model: str, config: ModelConfig, seed: int, dataset) -> bool:
    """Whether `workdir` holds this run finished; raises if it holds another run."""
    if not is_finished(workdir):
        return False
    from arm_jax.experiment import check_workdir, hyperparameters

    expected = {"model": model, "seed": seed, "dtype": "float32"}
    expected["hyperparameters"] = hyperparameters(model, config)
    if dataset is not None:
        expected["dataset"] = dataset
    check_workdir(workdir, expected)
    return True


def train_cell(
    load_split: Callable[[], object],
    *,
    model: str,
    config: ModelConfig,
    workdir: str,
    seed: int = 0,
    dataset: str | None = None,
) -> str:
    """Trains one cell with `arm_jax.experiment.run_experiment` unless it has finished.

    Args:
      load_split: returns the `Split` (picklable, e.g. a `functools.partial` of
        `arm_jax.load_split`, so that worker processes can call it).
      model, config, seed: as `run_experiment`.
      workdir: the cell's folder; an unfinished existing one is resumed.
      dataset: the split's name; a finished cell is reused only if it records the same
        dataset (and model, seed and hyperparameters). None: not compared.

    Returns:
      `workdir`.

    Raises:
      ConfigError: `workdir` holds another run (`experiment.check_workdir`).
    """
    if _reusable(workdir, model=model, config=config, seed=seed, dataset=dataset):
        return workdir
    from arm_jax.experiment import run_experiment  # JAX only where training happens

    resume = os.path.isdir(workdir) and model in ADVERSARIAL_MODELS
    run_experiment(
        load_split(), model=model, config=config, workdir=workdir, seed=seed, resume=resume
    )
    return workdir


def run_sweep(
    load_split: Callable[[], object],
    *,
    model: str,
    base_config: ModelConfig,
    cells: list[dict],
    sweep_dir: str,
    num_workers: int = 1,
    seed: int = 0,
    dataset: str | None = None,
) -> list[str]:
    """Trains every unfinished cell of a grid, in this process or in `num_workers` ones.

    Args:
      load_split: see `train_cell`; called once here, or once per cell in a worker.
      model: the model swept.
      base_config: the settings every cell starts from; a cell replaces its parameters.
      cells: `expand_grid` output.
      sweep_dir: one sub-folder per cell (`cell_name`).
      num_workers: > 1 runs cells in that many spawned processes.
      seed: every cell's seed.
      dataset: the split's name, checked against finished cells (see `train_cell`).

    Returns:
      The cell folders, in `cells` order.
    """
    jobs = [
        dict(
            model=model,
            config=dataclasses.replace(base_config, **params),
            workdir=os.path.join(sweep_dir, cell_name(params)),
            seed=seed,
            dataset=dataset,
        )
        for params in cells
    ]
    todo = [job for job in jobs if not _reusable(**job)]
    if num_workers <= 1 or len(todo) <= 1:
        if todo:
            split = load_split()
            for job in todo:
                train_cell(lambda: split, **job)
    else:
        context = multiprocessing.get_context("spawn")  # JAX does not survive fork
        with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
            for future in [pool.submit(train_cell, load_split, **job) for job in todo]:
                future.result()
    return [job["workdir"] for job in jobs]


def sweep_report(table: pd.DataFrame, best: dict, *, dataset: str, model: str) -> dict:
    """The best.json content: the winning cell's swept parameters and its metrics."""
    params = {k: best[k] for k in swept_parameters(model) if k in best}
    return {
        "dataset": dataset,
        "model": model,
        "selection": SELECTION_METRIC,
        "cell": best["cell"],
        "hyperparameters": params,
        "metrics": {k: v for k, v in best.items() if k.startswith(("valid_", "test_"))},
        "n_cells_finished": int(len(table)),
    }


def best_overrides(paths: list[str], *, dataset: str | None = None) -> dict[str, dict]:
    """{model: hyperparameters} of the best.json files at `paths` (one per model).

    Raises:
      ConfigError: a file that is not a best.json, two for one model, or (with
        `dataset`) one from a sweep on another dataset.
    """
    overrides = {}
    for path in paths:
        try:
            best = read_json(path)
            model, params, swept = best["model"], dict(best["hyperparameters"]), best["dataset"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: not a sweep's best.json ({e})") from e
        if dataset is not None and swept != dataset:
            raise ConfigError(f"{path}: a sweep on {swept!r}, not on --dataset={dataset!r}")
        if model in overrides:
            raise ConfigError(f"{path}: a second best.json for {model!r}")
        overrides[model] = params
    return overrides


def reproduce_models(
    load_split: Callable[[], object],
    *,
    dataset: str,
    workdir: str,
    models: tuple[str, ...] = MODELS,
    best: dict[str, dict] | None = None,
    overrides: dict | None = None,
    seed: int = 0,
) -> list[str]:
    """Trains (or reuses, when results.json exists) each model into `<workdir>/<model>/`.

    Args:
      load_split: see `train_cell`; called at most once.
      dataset: picks the `model_config` defaults; finished runs of another dataset in
        `workdir` are refused, not reused.
      workdir: the parent folder.
      models: which models.
      best: {model: hyperparameters} from sweeps (`best_overrides`); else the defaults.
      overrides: settings applied to every model before `best` (e.g. max_epochs).
      seed: every run's seed.

    Returns:
      The model workdirs, in `models` order.
    """
    loaded = []

    def load_once():
        if not loaded:
            loaded.append(load_split())
        return loaded[0]

    workdirs = []
    for model in models:
        given = {**(overrides or {}), **(best or {}).get(model, {})}
        config = model_config(dataset, model, **given)
        path = os.path.join(workdir, model)
        workdirs.append(
            train_cell(
                load_once, model=model, config=config, workdir=path, seed=seed, dataset=dataset
            )
        )
    return workdirs
