"""Reads model workdirs, runs the analysis of `arm_jax.analysis`, writes its report.

`load_run` / `align_runs` check the files of the training runs (see the workdir contract
in `arm_jax.analysis`); `analyze` is a pure function of the aligned runs; `write_report`
writes every table (CSV and Markdown), both figures (PNG) and `analysis.json`
atomically.
"""

import dataclasses
import math
import os

import numpy as np
import pandas as pd

from arm_jax import plots
from arm_jax.analysis import (
    METRICS,
    MODEL_LABELS,
    MODEL_ORDER,
    PERCENTS,
    adversary_auc_table,
    group_table,
    loss_by_fold_in,
    overall_table,
    worst_users_improvement,
)
from arm_jax.errors import ArmJaxError, DataError
from arm_jax.io import read_json, write_json, write_text

PER_USER_KEYS = ("user_ids", *METRICS, "n_fold_in", "n_heldout", "sq_loss")


@dataclasses.dataclass(frozen=True)
class ModelRun:
    """One model's evaluation files.

    Attributes:
      workdir: the folder the files came from.
      dataset: dataset name from config.json.
      model: one of MODEL_ORDER.
      hyperparameters: the model's hyperparameters from config.json.
      per_user: arrays of the split, each [n_users]: PER_USER_KEYS and maybe `group`.
      adversary: `user_ids`, `score` (and maybe `group`), each [n_train_users], or None.
    """

    workdir: str
    dataset: str
    model: str
    hyperparameters: dict
    per_user: dict
    adversary: dict | None


# ----------------------------------------------------------------------------- loading
def _load_npz(path: str, required: tuple[str, ...]) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    sizes = {k: v.shape for k, v in arrays.items()}
    n = arrays[required[0]].shape
    if any(v.ndim != 1 or v.shape != n for v in arrays.values()):
        raise DataError(f"{path}: arrays must be 1-D of one length, got {sizes}")
    return arrays


def load_run(workdir: str, *, split: str = "test") -> ModelRun:
    """Reads one model's workdir.

    Args:
      workdir: folder with config.json and per_user_<split>.npz (and, for adversarial
        models, adversary_scores.npz).
      split: "test" or "valid".

    Returns:
      The ModelRun. Raises DataError naming the file when one is missing or malformed.
    """
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise DataError(f"{config_path}: not found (is {workdir!r} a model workdir?)")
    config = read_json(config_path)
    model = config.get("model")
    if model not in MODEL_ORDER:
        raise DataError(f"{config_path}: model {model!r} not one of {', '.join(MODEL_ORDER)}")
    per_user_path = os.path.join(workdir, f"per_user_{split}.npz")
    if not os.path.isfile(per_user_path):
        raise DataError(f"{per_user_path}: not found (has the run finished?)")
    per_user = _load_npz(per_user_path, PER_USER_KEYS)
    adversary_path = os.path.join(workdir, "adversary_scores.npz")
    adversary = None
    if os.path.isfile(adversary_path):
        adversary = _load_npz(adversary_path, ("user_ids", "score"))
    return ModelRun(
        workdir=workdir,
        dataset=str(config.get("dataset", "")),
        model=model,
        hyperparameters=dict(config.get("hyperparameters", {})),
        per_user=per_user,
        adversary=adversary,
    )


def find_workdirs(paths: list[str]) -> list[str]:
    """Expands each path: a model workdir itself, or a folder of model workdirs.

    A path with config.json is a workdir; otherwise its sub-folders holding config.json
    are taken in name order. Raises DataError for a path that is neither.
    """
    found = []
    for path in paths:
        if os.path.isfile(os.path.join(path, "config.json")):
            found.append(path)
            continue
        subs = []
        if os.path.isdir(path):
            subs = [
                os.path.join(path, name)
                for name in sorted(os.listdir(path))
                if os.path.isfile(os.path.join(path, name, "config.json"))
            ]
        if not subs:
            raise DataError(f"{path}: no config.json in it or in its sub-folders")
        found.extend(subs)
    return found


def align_runs(runs: list[ModelRun]) -> dict[str, ModelRun]:
    """Checks the runs are one dataset's distinct models on the same users; aligns them.

    Args:
      runs: loaded runs, any order.

    Returns:
      {model: run} in MODEL_ORDER, every per-user array reordered to the user order of
      the first run in that order. Raises DataError when datasets differ, a model repeats
      or the user sets differ.
    """
    if not runs:
        raise ArmJaxError("no model workdirs given")
    datasets = sorted({r.dataset for r in runs})
    if len(datasets) > 1:
        raise DataError(f"workdirs hold different datasets: {', '.join(datasets)}")
    by_model: dict[str, ModelRun] = {}
    for run in runs:
        if run.model in by_model:
            raise DataError(
                f"model {run.model!r} given twice: {by_model[run.model].workdir}, {run.workdir}"
            )
        by_model[run.model] = run
    ordered = [by_model[m] for m in MODEL_ORDER if m in by_model]
    ref = ordered[0]
    ref_ids = ref.per_user["user_ids"]
    if np.unique(ref_ids).size != ref_ids.size:
        raise DataError(f"{ref.workdir}: repeated user_ids in the per-user file")
    ref_sort = np.argsort(ref_ids, kind="stable")
    aligned = {}
    for run in ordered:
        ids = run.per_user["user_ids"]
        run_sort = np.argsort(ids, kind="stable")
        if ids.size != ref_ids.size or not np.array_equal(ids[run_sort], ref_ids[ref_sort]):
            n_common = np.intersect1d(ids, ref_ids).size
            raise DataError(
                f"{run.workdir} ({run.model}) evaluates {ids.size} users and {ref.workdir} "
                f"({ref.model}) {ref_ids.size}, {n_common} in common: the per-user files "
                "must hold the same users"
            )
        perm = np.empty_like(run_sort)
        perm[ref_sort] = run_sort
        per_user = {k: v[perm] for k, v in run.per_user.items()}
        if "group" in per_user and "group" in ref.per_user:
            if not np.array_equal(per_user["group"], ref.per_user["group"]):
                raise DataError(f"{run.workdir}: per-user groups differ from {ref.workdir}")
        aligned[run.model] = dataclasses.replace(run, per_user=per_user)
    return aligned


