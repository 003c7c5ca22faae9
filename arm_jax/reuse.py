"""Reusing a finished run's folder: the best sweep cell as reproduce's model workdir.

`is_finished` says whether a run's folder holds its `results.json`; `reuse_cell` fills a
new model workdir from a finished sweep cell when the cell holds the very run
(`_holds_run`: dataset, split, model, seed, hyperparameters and, for the adversarial
models, the training budget), its files hard-linked (copied where links fail).
"""

import os
import shutil

from arm_jax.configs import ADVERSARIAL_MODELS, ModelConfig
from arm_jax.identity import RUN_IDENTITY, identity_differences, run_identity
from arm_jax.io import LOCK_NAME, read_json


def is_finished(cell_dir: str) -> bool:
    """Whether the cell in `cell_dir` has written its results.json."""
    return os.path.isfile(os.path.join(cell_dir, "results.json"))


def _holds_run(cell_dir: str, *, model: str, config: ModelConfig, seed: int, dataset, data) -> bool:
    """Whether `cell_dir` holds this run finished: the identity `_reusable` checks
    (dataset, data statistics, model, seed, hyperparameters) and, for the adversarial
    models, the same max_epochs and patience. Another run is False, never an error."""
    if not is_finished(cell_dir):
        return False
    try:
        recorded = read_json(os.path.join(cell_dir, "config.json"))
    except (OSError, ValueError):
        return False
    keys = ("dataset", "model", "seed", "hyperparameters", "data")
    if not isinstance(recorded, dict) or any(k not in recorded for k in keys):
        return False
    expected = run_identity(
        dataset=dataset, model=model, config=config, seed=seed, dtype="float32", data=data
    )
    expected = {k: expected[k] for k in RUN_IDENTITY if expected.get(k) is not None}
    if identity_differences(recorded, expected):
        return False
    budget = recorded.get("model_config") or {}
    old = (budget.get("max_epochs"), budget.get("patience"))
    # A closed form has no budget; an adversarial run of another budget is another run.
    return model not in ADVERSARIAL_MODELS or old == (config.max_epochs, config.patience)


def _link_files(source: str, target: str) -> None:
    """A new folder `target` holding hard links to (or copies of) the files directly in
    `source`; folders (checkpoints/) and the lock are left out. Built beside `target` and
    renamed, so `target` never exists half-filled."""
    tmp = f"{os.path.abspath(target)}.linking-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run of this pid
    os.makedirs(tmp)
    try:
        for entry in os.scandir(source):
            if entry.name == LOCK_NAME or not entry.is_file(follow_symlinks=False):
                continue
            dest = os.path.join(tmp, entry.name)
            if entry.name.endswith(".jsonl"):  # appended in place: a copy, not a link
                shutil.copy2(entry.path, dest)
                continue
            try:
                os.link(entry.path, dest)
            except OSError:  # another file system, or no hard links there
                shutil.copy2(entry.path, dest)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def reuse_cell(
    cell_dir: str, workdir: str, *, model: str, config: ModelConfig, seed: int, dataset, data
) -> bool:
    """Fills a new `workdir` from the finished sweep cell `cell_dir` if it holds this run.

    Returns:
      True if `workdir` did not exist and `cell_dir` holds the run (`_holds_run`): its
      files (config.json, results.json, per_user_*.npz, model.npz, adversary files,
      metrics.jsonl) are now in `workdir`, hard-linked where the file system allows.
      False otherwise, with nothing written.
    """
    if os.path.lexists(workdir):
        return False
    held = _holds_run(cell_dir, model=model, config=config, seed=seed, dataset=dataset, data=data)
    if held:
        os.makedirs(os.path.dirname(os.path.abspath(workdir)), exist_ok=True)
        _link_files(cell_dir, workdir)
    return held
