"""Hyperparameter sweeps on validation NDCG@100: cells trained, results, the best cell.

A sweep is one folder per grid cell (`arm_jax.grids`), `<sweep_dir>/<cell_name>/`, each
a model workdir; a cell is finished once its `results.json` exists, and is reused only
if it holds the same run: dataset, split, model, seed, hyperparameters and, for the
adversarial models, the training budget (a larger max_epochs or patience resumes it, a
smaller one is refused). The best cell is the one with the highest validation
NDCG@100, the first in grid order on ties. Test metrics are computed by every cell (its
`results.json`) but are not shown by a sweep: the paper evaluates the test users once,
on the model selected (§5.1).

`reproduce_models` reuses the best cell (best.json's `workdir`) instead of retraining it
when it holds the very run reproduce would train, the same budget included: its files
are hard-linked (copied where links fail) into the new model workdir (`reuse_cell`, in
`arm_jax.reuse` with `is_finished`; both re-exported here).
"""

import concurrent.futures
import dataclasses
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence

import pandas as pd

from arm_jax.configs import ADVERSARIAL_MODELS, MODELS, ModelConfig, model_config
from arm_jax.data import split_stats
from arm_jax.errors import ConfigError, DataError
from arm_jax.experiment import check_workdir, run_experiment
from arm_jax.grids import cell_name
from arm_jax.identity import identity_differences, run_identity
from arm_jax.io import read_json
from arm_jax.reuse import is_finished, reuse_cell

SELECTION_METRIC = "valid_ndcg@100"


def collect_results(sweep_dir: str, cells: list[dict]) -> pd.DataFrame:
    """One row per finished cell, in grid order: its name, parameters and valid_ metrics.

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
        for metric, value in results.get("valid", {}).items():
            row[f"valid_{metric}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def finished_outside(sweep_dir: str, cells: list[dict]) -> list[str]:
    """The finished cell folders of `sweep_dir` that `cells` does not name, sorted:
    `collect_results` (so best.json and sweep.md) leaves them out."""
    if not os.path.isdir(sweep_dir):
        return []
    named = {cell_name(params) for params in cells}
    return sorted(
        d
        for d in os.listdir(sweep_dir)
        if d not in named and is_finished(os.path.join(sweep_dir, d))
    )


def ranked_view(table: pd.DataFrame) -> pd.DataFrame:
    """`table` sorted best first (stable: grid order on ties), with the main metrics."""
    keep = [
        c
        for c in table.columns
        if not c.startswith("valid_")
        or c in (SELECTION_METRIC, "valid_recall@20", "valid_recall@50")
    ]
    return table.sort_values(SELECTION_METRIC, ascending=False, kind="stable")[keep]


def best_cell(table: pd.DataFrame, *, metric: str = SELECTION_METRIC) -> dict:
    """The row of `table` with the highest finite `metric` (first on ties), as a dict."""
    if metric not in table or table[metric].isna().all():
        raise DataError(f"no finished cell reports {metric}")
    values = table[metric].astype(float)
    values = values.where(values.map(math.isfinite))
    return table.loc[values.idxmax()].to_dict()


# --------------------------------------------------------------------------- running
def _reusable(
    workdir: str, *, model: str, config: ModelConfig, seed: int, dataset, data=None
) -> bool:
    """Whether `workdir` holds this run finished; raises if it holds another run.

    False for a finished adversarial run with a smaller max_epochs or patience than
    `config`'s (resuming it extends it); ConfigError for one with a larger budget.
    """
    if not is_finished(workdir):
        return False
    expected = run_identity(
        dataset=dataset, model=model, config=config, seed=seed, dtype="float32", data=data
    )
    expected = {k: v for k, v in expected.items() if v is not None}  # unknown: not compared
    recorded = check_workdir(workdir, expected).get("model_config", {})
    if model not in ADVERSARIAL_MODELS:
        return True
    old = (recorded.get("max_epochs"), recorded.get("patience"))
    new = (config.max_epochs, config.patience)
    if old == new:
        return True
    if None in old or new[0] < old[0] or new[1] < old[1]:
        raise ConfigError(
            f"{workdir} was trained with max_epochs={old[0]}, patience={old[1]}: it cannot "
            f"stand for max_epochs={new[0]}, patience={new[1]}; use a new folder"
        )
    return False


def train_cell(
    load_split: Callable[[], object],
    *,
    model: str,
    config: ModelConfig,
    workdir: str,
    seed: int = 0,
    dataset: str | None = None,
    data: dict | None = None,
    warm_start_from: Sequence[str] = (),
) -> str:
    """Trains one cell with `arm_jax.experiment.run_experiment` unless it has finished.

    Args:
      load_split: returns the `Split` (picklable, e.g. a `functools.partial` of
        `arm_jax.load_split`, so that worker processes can call it).
      model, config, seed: as `run_experiment`.
      workdir: the cell's folder; an unfinished existing one is resumed, and so is a
        finished adversarial one whose max_epochs or patience was smaller.
      dataset, data: the split's name and `split_stats`; a finished cell is reused only
        if it records the same (and model, seed and hyperparameters). None: not compared.
      warm_start_from: EASE runs to read a warm start from (`run_experiment`).

    Returns:
      `workdir`.

    Raises:
      ConfigError: `workdir` holds another run (`experiment.check_workdir`).
    """
    if _reusable(workdir, model=model, config=config, seed=seed, dataset=dataset, data=data):
        return workdir
    resume = os.path.isdir(workdir) and model in ADVERSARIAL_MODELS
    run_experiment(
        load_split(), model=model, config=config, workdir=workdir, seed=seed, resume=resume,
        warm_start_from=warm_start_from,
    )  # fmt: skip
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
    warm_start_from: Sequence[str] = (),
) -> list[str]:
    """Trains every unfinished cell of a grid, in this process or in `num_workers` ones.

    Args:
      load_split: see `train_cell`; called once here (finished cells are checked
        against the split), and once per cell in a worker.
      model: the model swept.
      base_config: the settings every cell starts from; a cell replaces its parameters.
      cells: `expand_grid` output.
      sweep_dir: one sub-folder per cell (`cell_name`).
      num_workers: > 1 runs cells in that many spawned processes.
      seed: every cell's seed.
      dataset: the split's name, checked against finished cells (see `train_cell`).
      warm_start_from: EASE runs each cell may read its warm start from
        (`warm_start.ease_warm_start`: the one at the cell's C/2).

    Returns:
      The cell folders, in `cells` order.
    """
    if num_workers < 1:
        raise ConfigError(f"--num_workers must be >= 1, got {num_workers}")
    split = load_split()
    data = split_stats(split)
    jobs = [
        dict(
            model=model,
            config=dataclasses.replace(base_config, **params),
            workdir=os.path.join(sweep_dir, cell_name(params)),
            seed=seed,
            dataset=dataset,
            data=data,
        )
        for params in cells
    ]
    todo = [job for job in jobs if not _reusable(**job)]
    warm = dict(warm_start_from=tuple(warm_start_from))
    if num_workers == 1 or len(todo) <= 1:
        for job in todo:
            train_cell(lambda: split, **job, **warm)
    else:
        del split  # the workers load their own
        context = multiprocessing.get_context("spawn")  # JAX does not survive fork
        with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
            for future in [pool.submit(train_cell, load_split, **job, **warm) for job in todo]:
                future.result()
    return [job["workdir"] for job in jobs]


def sweep_report(
    table: pd.DataFrame, best: dict, *, dataset: str, model: str, cells: list[dict], sweep_dir: str
) -> dict:
    """The best.json content: the winning cell's parameters, settings, split and metrics.

    `hyperparameters` holds every parameter the grid varied or set (what `best_overrides`
    hands to `reproduce_models`); `settings` the cell's whole `ModelConfig` and `data` its
    split's statistics, from its config.json; `metrics` its validation metrics only.
    """
    params = next(c for c in cells if cell_name(c) == best["cell"])
    workdir = os.path.join(sweep_dir, best["cell"])
    record = read_json(os.path.join(workdir, "config.json"))
    return {
        "dataset": dataset,
        "model": model,
        "selection": SELECTION_METRIC + " (first in grid order on ties)",
        "cell": best["cell"],
        "workdir": os.path.abspath(workdir),
        "hyperparameters": dict(params),
        "seed": record.get("seed"),
        "settings": record.get("model_config"),
        "data": record.get("data"),
        "metrics": {k: v for k, v in best.items() if k.startswith("valid_")},
        "n_cells_finished": int(len(table)),
    }


def best_overrides(
    paths: list[str],
    *,
    dataset: str | None = None,
    data: dict | None = None,
    models: tuple[str, ...] | None = None,
) -> dict[str, dict]:
    """{model: hyperparameters} of the best.json files at `paths` (one per model).

    Raises:
      ConfigError: a file that is not a best.json, two for one model, or one from a
        sweep on another dataset (`dataset`), another split (`data`, the split's
        `split_stats`), or of a model `models` does not hold.
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
        recorded = {"data": best.get("data")} if isinstance(best.get("data"), dict) else {}
        if data is not None and identity_differences(recorded, {"data": data}):
            raise ConfigError(f"{path}: a sweep on another split of {swept!r} (data differ)")
        if models is not None and model not in models:
            raise ConfigError(f"{path}: a sweep of {model!r}, which --models does not train")
        if model in overrides:
            raise ConfigError(f"{path}: a second best.json for {model!r}")
        overrides[model] = params
    return overrides


def best_cells(paths: list[str]) -> dict[str, str]:
    """{model: the best cell's folder} of the best.json files at `paths` that record one
    (`sweep_report`'s `workdir`; older files do not). Check them with `best_overrides`."""
    cells = {}
    for path in paths:
        try:
            best = read_json(path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a sweep's best.json ({e})") from e
        if isinstance(best, dict) and isinstance(best.get("workdir"), str):
            cells[best.get("model")] = best["workdir"]
    return cells


def reproduce_models(
    load_split: Callable[[], object],
    *,
    dataset: str,
    workdir: str,
    models: tuple[str, ...] = MODELS,
    best: dict[str, dict] | None = None,
    overrides: dict | None = None,
    seed: int = 0,
    cells: dict[str, str] | None = None,
    on_reuse: Callable[[str, str], None] | None = None,
    warm_start_from: Sequence[str] = (),
) -> list[str]:
    """Trains (or reuses, when it holds the same run finished) each model into
    `<workdir>/<model>/`.

    Args:
      load_split: see `train_cell`; called once.
      dataset: picks the `model_config` defaults (with the split's training users, for
        `configs.own_data_defaults`); finished runs of another dataset or split in
        `workdir` are refused, not reused.
      workdir: the parent folder.
      models: which models.
      best: {model: hyperparameters} from sweeps (`best_overrides`); else the defaults.
      overrides: settings applied to every model before `best` (e.g. max_epochs).
      seed: every run's seed.
      cells: {model: its sweep's best cell folder} (`best_cells`): a model whose
        workdir does not exist yet is filled from it when it holds the same run
        (`reuse_cell`) instead of being retrained.
      on_reuse: called with (model, cell folder) for each model so filled.
      warm_start_from: EASE runs to read warm starts from (`run_experiment`); the
        EASE model trained here is searched first.

    Returns:
      The model workdirs, in `models` order.
    """
    split = load_split()
    data = split_stats(split)
    n_train_users = split.train.shape[0]
    workdirs = []
    for model in models:
        given = {**(overrides or {}), **(best or {}).get(model, {})}
        config = model_config(dataset, model, n_train_users=n_train_users, **given)
        path = os.path.join(workdir, model)
        run = dict(model=model, config=config, seed=seed, dataset=dataset, data=data)
        cell = (cells or {}).get(model)
        if cell is not None and reuse_cell(cell, path, **run):
            if on_reuse is not None:
                on_reuse(model, cell)
            workdirs.append(path)
            continue
        # EASE (first in MODELS) may be the warm start of the adversarial models after it.
        warm = (os.path.join(workdir, "ease"), *warm_start_from)
        warm = tuple(w for w in warm if os.path.isdir(w))
        workdirs.append(train_cell(lambda: split, workdir=path, warm_start_from=warm, **run))
    return workdirs
