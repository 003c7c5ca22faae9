"""One run: train a model on a split, evaluate it, and write the run's files.

`run_experiment` is the single entry point behind `launch/train.py`, `launch/sweep.py`,
`launch/reproduce.py` and the notebooks. A workdir gets:

- `config.json`: every setting the model uses, the dataset statistics and the package
  version;
- `results.json`: `{"dataset", "model", "hyperparameters", "valid", "test", "seconds"}`
  with means, standard errors and `n_users` of NDCG@100, Recall@20 and Recall@50;
- `per_user_valid.npz`, `per_user_test.npz`: `user_ids`, the three metrics, `best_rank`
  (rank of the best-placed held-out item; absent in older workdirs), `n_fold_in`,
  `n_heldout`, `sq_loss` (‖x − xW‖² over the user's whole row) and, on synthetic data,
  `group`; one entry per evaluated user;
- `model.npz`: W and the item ids (`arm_jax.load_model`), or the low-rank learner's
  factors P and Q and the item ids (`learners.load_learned`); adversarial models also write
  `adversary.npz` and `adversary_scores.npz` (score of every training user; an
  item-level adversary has none), the item and user–item adversaries `item_scores.npz`
  (logit t_i of every item), plus the training files of `arm_jax.training`
  (`metrics.jsonl`, `checkpoints/`); `results.json` then holds `niche_item_auc` on
  synthetic data (`analysis.item_auc`).
"""

import contextlib
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax import (
    adversarial,
    configs,
    group_dro,
    identity,
    io,
    learners,
    metrics,
    sharding,
    training,
    warm_start,
)
from arm_jax.closed_form import fit_closed_form
from arm_jax.data import Split, split_stats
from arm_jax.errors import ConfigError


def _groups(split: Split, part: str) -> np.ndarray | None:
    return getattr(split, f"{part}_groups", None)


def evaluate_model(
    w, split: Split, part: str, *, predict: Callable | None = None, mesh=None
) -> dict[str, np.ndarray]:
    """Per-user metrics of the item-item model `w: [n, n]` on `part` ("valid" or "test").

    Another learner's model (e.g. the low-rank `{"P", "Q"}`) is evaluated with its
    `predict(w, x)` (`Learner.predictor`, `TrainResult.learner_predict`).

    Returns the arrays of the `per_user_*.npz` file, each `[n_users]` (users with nothing
    held out are excluded, as in Liang et al.). The scores `x W` come from the fold-in
    rows' nonzeros on a CPU (`products.predict_sparse`, far faster there than a dense
    product: docs/performance.md), from a dense product elsewhere. With a `mesh` (W split
    by columns over its `items` axis) the top-k is taken per item shard
    (`metrics.evaluate`).
    """
    fold_in, heldout = getattr(split, f"{part}_tr"), getattr(split, f"{part}_te")
    predict = predict or training.scoring_function("auto")
    out = metrics.evaluate(predict, w, fold_in, heldout, with_loss=True, mesh=mesh)
    index = out.pop("index")
    out["user_ids"] = np.asarray(getattr(split, f"{part}_user_ids"))[index]
    groups = _groups(split, part)
    if groups is not None:
        out["group"] = np.asarray(groups)[index]
    return out


def hyperparameters(model: str, config: configs.ModelConfig) -> dict:
    """The hyperparameters that `model` actually uses, for results and tables."""
    return configs.model_hyperparameters(model, config)


def check_workdir(workdir: str, expected: dict) -> dict:
    """Refuses a workdir whose `config.json` records a different run.

    Args:
      workdir: a model workdir (it need not exist).
      expected: the new run's `config.json` entries, or some of them: those of
        `identity.RUN_IDENTITY` that it holds are compared with the recorded ones
        (`identity.identity_differences`).

    Returns:
      The recorded `config.json` ({} where there is none).

    Raises:
      ConfigError: naming the workdir and the first entries that differ, so that a run
        never mixes its files with another's (or reuses another's results).
    """
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        return {}
    try:
        recorded = io.read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable config.json ({e}); use a new workdir") from e
    diffs = identity.identity_differences(recorded, expected)
    if diffs:
        shown = "; ".join(diffs[:3]) + ("; …" if len(diffs) > 3 else "")
        raise ConfigError(f"{workdir} holds another run ({shown}); use a new workdir")
    return recorded


def run_record(
    split: Split, model: str, config: configs.ModelConfig, *, seed: int = 0, dtype=jnp.float32
) -> dict:
    """The `config.json` content of a run (without extra settings)."""
    from arm_jax import __version__

    record = identity.run_identity(
        dataset=split.dataset,
        model=model,
        config=config,
        seed=seed,
        dtype=dtype,
        data=split_stats(split),
    )
    # A closed-form model's record names only what it uses, not adversarial defaults.
    model_config = (
        configs.config_record(config)
        if model in configs.ADVERSARIAL_MODELS
        else configs.model_hyperparameters(model, config)
    )
    record.update(backend=jax.default_backend(), model_config=model_config)
    return {**record, "version": __version__}


def run_experiment(
    split: Split,
    *,
    model: str,
    config: configs.ModelConfig,
    workdir: str,
    seed: int = 0,
    dtype=jnp.float32,
    resume: bool = False,
    progress: bool = False,
    callback: Callable | None = None,
    extra_config: dict | None = None,
    checkpoint_every: int = training.CHECKPOINT_EVERY,
    mesh=None,
    warm_start_from: Sequence[str] = (),
) -> dict:
    """Trains `model` on `split`, evaluates it and writes the workdir (module docstring).

    Args:
      split: the data split (`arm_jax.load_split`).
      model: one of `configs.MODELS`.
      config: its hyperparameters (`configs.model_config`).
      workdir: output folder (created).
      seed: root seed of the adversarial models' initialisation and shuffling.
      dtype: float32, or float64 with x64 enabled.
      resume: continue an adversarial run from the workdir's latest checkpoint.
      progress: show a progress bar over training steps.
      callback: called with each epoch's record (and state, if it takes two
        arguments) of an adversarial run.
      extra_config: more settings to record in `config.json` (e.g. data flags).
      checkpoint_every: epochs between an adversarial run's latest checkpoints.
      mesh: a `sharding.make_mesh` mesh: an adversarial model's learner is trained
        sharded over it, a closed form's W (solved on one device) is evaluated sharded.
        With several processes all of them call this; process 0 writes the files.
      warm_start_from: finished EASE workdirs, or folders of them (a sweep's), where a
        dense learner's warm start may be read instead of refit
        (`warm_start.ease_warm_start`);
        `results.json` then names the one read as `warm_start_from`.

    Returns:
      The content of `results.json`.

    Raises:
      ConfigError: a bad model or configuration, a workdir holding another run
        (`check_workdir`), an adversarial run there without `resume`, or a closed form
        with a non-finite W, raised before anything is written; a workdir in use by
        another process (`io.workdir_lock`); a workdir that cannot be written (a file,
        read-only, a full disk).
    """
    record = _checked_record(split, model, config, seed, dtype, extra_config, mesh)
    # One lock per run: process 0's (the others write only their checkpoint shards).
    lock = io.workdir_lock(workdir) if sharding.is_primary() else contextlib.nullcontext()
    try:
        with lock:  # refuses a second run into `workdir` at once
            check_workdir(workdir, record)
            return _run_locked(
                split, model, config, workdir, record, seed, dtype, resume, progress, callback,
                checkpoint_every, mesh, warm_start_from,
            )  # fmt: skip
    except OSError as e:  # a file in the way, a read-only folder, a full disk
        raise ConfigError(io.os_error_message(e, f"the run's files in {workdir}")) from None


def _checked_record(split, model, config, seed, dtype, extra_config, mesh) -> dict:
    """The run's `config.json` content, once the model, its configuration, group DRO's
    groups and the mesh are checked (ConfigError before anything is written)."""
    if model not in configs.MODELS:
        raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(configs.MODELS)}")
    configs.validate_model_config(config, model)
    record = {**run_record(split, model, config, seed=seed, dtype=dtype), **(extra_config or {})}
    if model == "group_dro":
        group_dro.check_groups(config.groups, split.train.shape[0])
    sharding.check_items(mesh, split.train.shape[1])
    return record


def _train_in_workdir(
    split, model, config, workdir, record, seed, dtype, resume, progress, callback,
    checkpoint_every, mesh, warm_start_from, *, start,
):  # fmt: skip
    """An adversarial model trained in `workdir`: (W, predict, seconds, training info)."""
    training.check_config(split, model, config, checkpoint_every=checkpoint_every)
    training.check_workdir(
        split, workdir, model=model, config=config, seed=seed, dtype=dtype, resume=resume
    )
    ease_run = warm_start.ease_warm_start(split, config, warm_start_from, dtype=dtype)
    if sharding.is_primary():
        io.write_json(os.path.join(workdir, "config.json"), record)
    result = training.train_adversarial(
        split,
        model=model,
        config=config,
        seed=seed,
        workdir=workdir,
        resume=resume,
        progress=progress,
        callback=callback,
        dtype=dtype,
        adversarial_model=(
            group_dro.group_dro_model(split.train, config.groups)._replace(
                learner=learners.make_learner(config)
            )
            if model == "group_dro"
            else None
        ),
        checkpoint_every=checkpoint_every,
        mesh=mesh,
        warm_start_w=warm_start.loader(ease_run, split),
    )
    w = result.learner
    predict = learners.make_learner(config).predictor("auto")
    seconds = {"train": time.perf_counter() - start}
    adversary = configs.REGISTRY[model].adversary  # None: group DRO's, per user
    item_auc = _save_adversary(workdir, result, split, adversary)
    training_info = {"best_epoch": result.best_epoch, "stop_reason": result.stop_reason}
    if ease_run is not None:
        training_info["warm_start_from"] = ease_run
    if item_auc is not None:
        training_info["niche_item_auc"] = item_auc
    return w, predict, seconds, training_info


def _run_locked(
    split, model, config, workdir, record, seed, dtype, resume, progress, callback,
    checkpoint_every, mesh, warm_start_from,
):  # fmt: skip
    start = time.perf_counter()
    if model in configs.ADVERSARIAL_MODELS:
        w, predict, seconds, training_info = _train_in_workdir(
            split, model, config, workdir, record, seed, dtype, resume, progress, callback,
            checkpoint_every, mesh, warm_start_from, start=start,
        )  # fmt: skip
    else:
        w, seconds = fit_closed_form(split, model, config, dtype=dtype, mesh=mesh)
        if not bool(jnp.isfinite(w).all()):
            raise ConfigError(
                f"{model} with {hyperparameters(model, config)} gives a non-finite W on "
                f"{split.dataset} ({split.train.shape[0]} training users); choose other "
                "hyperparameters (nothing was written)"
            )
        if sharding.is_primary():
            io.write_json(os.path.join(workdir, "config.json"), record)
        predict = None
        training_info = {}
    primary = sharding.is_primary()
    host_w = sharding.gather(w)  # every process takes part; process 0 writes
    if primary:
        learners.save_model(os.path.join(workdir, "model.npz"), host_w, item_ids=split.item_ids)
    del host_w

    eval_start = time.perf_counter()
    summaries = {}
    for part in ("valid", "test"):
        per_user = evaluate_model(w, split, part, predict=predict, mesh=mesh)
        if primary:
            io.savez(os.path.join(workdir, f"per_user_{part}.npz"), **per_user)
        summaries[part] = metrics.summarize(per_user)
    seconds["evaluate"] = time.perf_counter() - eval_start
    seconds["total"] = time.perf_counter() - start
    results = {
        "dataset": split.dataset,
        "model": model,
        "hyperparameters": hyperparameters(model, config),
        "valid": summaries["valid"],
        "test": summaries["test"],
        "seconds": seconds,
        **training_info,
    }
    if primary:
        io.write_json(os.path.join(workdir, "results.json"), results)
    return results


def _save_adversary(workdir: str, result: training.TrainResult, split: Split, adversary):
    """Writes `adversary.npz`, the per-user scores (`adversary_scores.npz`) where the
    adversary has them, and an item-level adversary's logits (`item_scores.npz`: item_ids,
    score and, on synthetic data, `group`, the planted region); returns the AUC of those
    logits for the niche items (`analysis.item_auc`) where the regions are known. Only
    process 0 writes (the adversary is replicated on every process)."""
    per_user = result.adversary_apply if adversary is None else adversary.per_user()
    scores = None
    if per_user is not None:
        scores = adversarial.adversary_scores(per_user, result.adversary, split.train)
    if not sharding.is_primary():
        return None
    if scores is not None:
        extra = {} if split.train_groups is None else {"group": split.train_groups}
        io.savez(
            os.path.join(workdir, "adversary_scores.npz"),
            user_ids=np.asarray(split.train_user_ids),
            score=np.asarray(scores),
            **extra,
        )
    leaves = jax.tree_util.tree_leaves_with_path(result.adversary)
    io.savez(
        os.path.join(workdir, "adversary.npz"),
        **{jax.tree_util.keystr(p).strip("[]'\""): np.asarray(v) for p, v in leaves},
    )
    if adversary is None or adversary.item_scores is None:
        return None
    logits = np.asarray(adversary.item_scores(result.adversary))
    regions = split.item_groups
    extra = {} if regions is None else {"group": regions}
    io.savez(
        os.path.join(workdir, "item_scores.npz"),
        item_ids=np.asarray(split.item_ids),
        score=logits,
        **extra,
    )
    if regions is None:
        return None
    from arm_jax.analysis import item_auc  # pandas and scipy.stats only where needed

    return item_auc(logits, regions)


def divergence(results: dict) -> str | None:
    """Why a run's training stopped at a non-finite loss, as a sentence; None if it did
    not. Such a run is not a success: its model is the last finite epoch's best."""
    reason = str(results.get("stop_reason", ""))
    if not reason.startswith("non-finite"):
        return None
    best = results.get("best_epoch")
    kept = (
        f"the model is epoch {best}'s"
        if best
        else "no epoch was evaluated: the model is not finite"
    )
    return f"training diverged ({reason}); {kept}: retrain with a smaller --learning_rate"


def results_table(results: dict) -> str:
    """A short Markdown table of a `results.json` dict (valid and test rows)."""
    names = metrics.METRICS
    lines = [
        f"{results['dataset']} / {results['model']} {results['hyperparameters']}",
        "| users | n | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for part in ("valid", "test"):
        s = results[part]
        cells = " | ".join(f"{s[n]:.4f} ± {s[n + '_se']:.4f}" for n in names)
        lines.append(f"| {part} | {s['n_users']} | {cells} |")
    return "\n".join(lines)
