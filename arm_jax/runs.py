"""The training runs an analysis reads: one model's workdir each, checked and aligned.

`load_run` reads a workdir's `config.json`, `results.json` (where there is one),
`per_user_<split>.npz` and `adversary_scores.npz`; `find_workdirs` expands folders of
workdirs; `align_runs` checks that the runs are distinct models of one split of one
dataset and orders every per-user array alike. Every refusal is a one-line `DataError`
naming the file or workdir.
"""

import dataclasses
import json
import os
import zipfile

import numpy as np

from arm_jax.analysis import METRICS, MODEL_ORDER
from arm_jax.errors import ArmJaxError, DataError
from arm_jax.io import read_json

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
      data: config.json's statistics of the split the run used (None if absent).
      stop_reason: why training stopped, from results.json (None for closed forms).
      item_adversary: an item-level adversary's `item_ids`, `score` (its logits t_i)
        and maybe `group` (planted region), each [n_items], from `item_scores.npz`, or
        None.
    """

    workdir: str
    dataset: str
    model: str
    hyperparameters: dict
    per_user: dict
    adversary: dict | None
    data: dict | None = None
    stop_reason: str | None = None
    item_adversary: dict | None = None


def _load_npz(path: str, required: tuple[str, ...]) -> dict:
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file (expected arrays {', '.join(required)})")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.asarray(f[k]) for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: cannot read ({e})".replace("\n", " ")) from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    sizes = {k: v.shape for k, v in arrays.items()}
    n = arrays[required[0]].shape
    if any(v.ndim != 1 or v.shape != n for v in arrays.values()):
        raise DataError(f"{path}: arrays must be 1-D of one length, got {sizes}")
    return arrays


def _read_object(path: str) -> dict:
    try:
        value = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def load_run(workdir: str, *, split: str = "test") -> ModelRun:
    """Reads one model's workdir.

    Args:
      workdir: folder with config.json and per_user_<split>.npz (and, for adversarial
        models, adversary_scores.npz).
      split: "test" or "valid".

    Returns:
      The ModelRun. Raises DataError naming the file when one is missing or malformed,
      when a metric is not finite, or when `results.json` says training diverged before
      its first evaluation (its model is the diverged W: nothing to compare).
    """
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise DataError(f"{config_path}: not found (is {workdir!r} a model workdir?)")
    config = _read_object(config_path)
    model = config.get("model")
    if model not in MODEL_ORDER:
        raise DataError(f"{config_path}: model {model!r} not one of {', '.join(MODEL_ORDER)}")
    reason = _stop_reason(os.path.join(workdir, "results.json"))
    per_user = _load_per_user(os.path.join(workdir, f"per_user_{split}.npz"))
    adversary_path = os.path.join(workdir, "adversary_scores.npz")
    adversary = None
    if os.path.isfile(adversary_path):
        adversary = _load_npz(adversary_path, ("user_ids", "score"))
    items_path = os.path.join(workdir, "item_scores.npz")
    items = _load_npz(items_path, ("item_ids", "score")) if os.path.isfile(items_path) else None
    data = config.get("data")
    return ModelRun(
        workdir=workdir,
        dataset=str(config.get("dataset", "")),
        model=model,
        hyperparameters=dict(config.get("hyperparameters", {})),
        per_user=per_user,
        adversary=adversary,
        data=data if isinstance(data, dict) else None,
        stop_reason=reason,
        item_adversary=items,
    )


def _stop_reason(results_path: str) -> str | None:
    """Why training stopped, from `results.json` (None: a closed form, or no file);
    a DataError where it diverged before its first evaluation."""
    reason = None
    if os.path.isfile(results_path):
        results = _read_object(results_path)
        reason = results.get("stop_reason")
        reason = None if reason is None else str(reason)
        if str(reason).startswith("non-finite") and results.get("best_epoch"):
            reason += f" (the model is epoch {results['best_epoch']}'s)"
        if str(reason).startswith("non-finite") and not results.get("best_epoch"):
            raise DataError(
                f"{results_path}: training diverged before its first evaluation ({reason}); "
                "retrain with a smaller learning rate"
            )
    return reason


def _load_per_user(per_user_path: str) -> dict:
    """The per-user arrays of `per_user_<split>.npz`; a DataError for a missing file or
    a metric that is not finite."""
    if not os.path.isfile(per_user_path):
        raise DataError(f"{per_user_path}: not found (has the run finished?)")
    per_user = _load_npz(per_user_path, PER_USER_KEYS)
    for key in METRICS:
        bad = ~np.isfinite(per_user[key].astype(np.float64))
        if bad.any():
            raise DataError(
                f"{per_user_path}: {key} is not finite for {int(bad.sum())} of {bad.size} "
                f"users (first: user {per_user['user_ids'][np.argmax(bad)]})"
            )
    return per_user


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


def _one_dataset_in_model_order(runs: list[ModelRun]) -> list[ModelRun]:
    """`runs` in MODEL_ORDER; DataError for none, several datasets or a repeated model."""
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
    return [by_model[m] for m in MODEL_ORDER if m in by_model]


def align_runs(runs: list[ModelRun]) -> dict[str, ModelRun]:
    """Checks the runs are one split's distinct models on the same users; aligns them.

    Args:
      runs: loaded runs, any order.

    Returns:
      {model: run} in MODEL_ORDER, every per-user array reordered to the user order of
      the first run in that order. Raises DataError when datasets differ, a model repeats,
      the user sets differ, or the runs used different splits (config.json's split
      statistics, or a user's fold-in, held-out or group, differ).
    """
    ordered = _one_dataset_in_model_order(runs)
    ref = ordered[0]
    ref_ids = ref.per_user["user_ids"]
    if np.unique(ref_ids).size != ref_ids.size:
        raise DataError(f"{ref.workdir}: repeated user_ids in the per-user file")
    ref_sort = np.argsort(ref_ids, kind="stable")
    aligned = {}
    for run in ordered:
        # Keys both record (runs of other arm_jax versions may record more or fewer).
        common = set(run.data or {}) & set(ref.data or {})
        keys = sorted(k for k in common if run.data[k] != ref.data[k])
        if keys:
            raise DataError(
                f"{run.workdir} ({run.model}) and {ref.workdir} ({ref.model}) used different "
                f"splits: config.json's data differs in {', '.join(keys)}"
            )
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
        for key in ("n_fold_in", "n_heldout", "group"):
            if key in per_user and key in ref.per_user:
                differ = per_user[key] != ref.per_user[key]
                if differ.any():
                    raise DataError(
                        f"{run.workdir}: per-user {key} differs from {ref.workdir} for "
                        f"{int(differ.sum())} users: the runs used different splits"
                    )
        aligned[run.model] = dataclasses.replace(run, per_user=per_user)
    return aligned
