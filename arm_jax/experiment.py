"""One run: train a model on a split, evaluate it, and write the run's files.

`run_experiment` is the single entry point behind `launch/train.py`, `launch/sweep.py`,
`launch/reproduce.py` and the notebooks. A workdir gets:

- `config.json`: every setting the model uses, the dataset statistics and the package
  version;
- `results.json`: `{"dataset", "model", "hyperparameters", "valid", "test", "seconds"}`
  with means, standard errors and `n_users` of NDCG@100, Recall@20 and Recall@50;
- `per_user_valid.npz`, `per_user_test.npz`: `user_ids`, the three metrics, `n_fold_in`,
  `n_heldout`, `sq_loss` (‖x − xW‖² over the user's whole row) and, on synthetic data,
  `group`; one entry per evaluated user;
- `model.npz`: W and the item ids (`arm_jax.load_model`); adversarial models also write
  `adversary.npz` and `adversary_scores.npz` (score of every training user), plus the
  training files of `arm_jax.training` (`metrics.jsonl`, checkpoints).
"""

import dataclasses
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax import configs, ease, io, metrics, training
from arm_jax.data import Split, split_stats
from arm_jax.errors import ConfigError


def _groups(split: Split, part: str) -> np.ndarray | None:
    return getattr(split, f"{part}_groups", None)


def evaluate_model(w: jax.Array, split: Split, part: str) -> dict[str, np.ndarray]:
    """Per-user metrics of the item-item model `w: [n, n]` on `part` ("valid" or "test").

    Returns the arrays of the `per_user_*.npz` file, each `[n_users]` (users with nothing
    held out are excluded, as in Liang et al.). The scores `x W` come from the fold-in
    rows' nonzeros on a CPU (`products.predict_sparse`: at amazon-book size the dense
    product took ≈130 s for 7,059 users on 2 cores), from a dense product elsewhere.
    """
    fold_in, heldout = getattr(split, f"{part}_tr"), getattr(split, f"{part}_te")
    predict = training.scoring_function("auto")
    out = metrics.evaluate(predict, w, fold_in, heldout, with_loss=True)
    index = out.pop("index")
    out["user_ids"] = np.asarray(getattr(split, f"{part}_user_ids"))[index]
    groups = _groups(split, part)
    if groups is not None:
        out["group"] = np.asarray(groups)[index]
    return out


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - start


def fit_closed_form(
    split: Split, model: str, config: configs.ModelConfig, *, dtype=jnp.float32
) -> tuple[jax.Array, dict[str, float]]:
    """EASE or EASE-IPW on `split.train`; returns W and the seconds of Gram and solve."""
    weights = ease.ipw_weights(split.train, beta=config.beta) if model == "ease_ipw" else None
    gram, t_gram = _timed(ease.gram_matrix, split.train, weights, dtype=dtype)
    l2 = jnp.asarray(config.C * split.train.shape[0], dtype)
    w, t_solve = _timed(ease.ease_from_gram, gram, l2)
    return w, {"gram": t_gram, "solve": t_solve}


def hyperparameters(model: str, config: configs.ModelConfig) -> dict:
    """The hyperparameters that `model` actually uses, for results and tables."""
    return {name: getattr(config, name) for name in configs.HYPERPARAMETERS[model]}


RUN_IDENTITY = ("dataset", "model", "seed", "dtype", "hyperparameters", "data")
"""The `config.json` entries that make two runs the same run. The others (max_epochs,
patience, the product, data flags, the backend) may change when a run is resumed or
redone."""


def _differences(old, new, name: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(new) + [k for k in old if k not in new]
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{name}.{k}")]
    return [] if old == new else [f"{name} {old!r}, not {new!r}"]


def check_workdir(workdir: str, expected: dict) -> dict:
    """Refuses a workdir whose `config.json` records a different run.

    Args:
      workdir: a model workdir (it need not exist).
      expected: the new run's `config.json` entries, or some of them: those of
        `RUN_IDENTITY` that it holds are compared with the recorded ones.

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
    new = io.to_json_value({k: expected[k] for k in RUN_IDENTITY if k in expected})
    diffs = [d for k in new if k in recorded for d in _differences(recorded[k], new[k], k)]
    if diffs:
        shown = "; ".join(diffs[:3]) + ("; …" if len(diffs) > 3 else "")
        raise ConfigError(f"{workdir} holds another run ({shown}); use a new workdir")
    return recorded


def run_record(
    split: Split, model: str, config: configs.ModelConfig, *, seed: int = 0, dtype=jnp.float32
) -> dict:
    """The `config.json` content of a run (without extra settings)."""
    from arm_jax import __version__

    return {
        "dataset": split.dataset,
        "model": model,
        "seed": seed,
        "dtype": jnp.dtype(dtype).name,
        "backend": jax.default_backend(),
        "hyperparameters": hyperparameters(model, config),
        # A closed-form model's file names only what it uses, not adversarial defaults.
        "model_config": (
            dataclasses.asdict(config)
            if model in configs.ADVERSARIAL_MODELS
            else hyperparameters(model, config)
        ),
        "data": split_stats(split),
        "version": __version__,
    }


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
    callback: Callable[[dict], None] | None = None,
    extra_config: dict | None = None,
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
      callback: called with each epoch's record of an adversarial run.
      extra_config: more settings to record in `config.json` (e.g. data flags).

    Returns:
      The content of `results.json`.

    Raises:
      ConfigError: a bad model or configuration, or a workdir holding another run
        (`check_workdir`), or an adversarial run there without `resume`; raised before
        anything is written.
    """
    if model not in configs.MODELS:
        raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(configs.MODELS)}")
    configs.validate_model_config(config, model)
    record = {**run_record(split, model, config, seed=seed, dtype=dtype), **(extra_config or {})}
    check_workdir(workdir, record)
    if model in configs.ADVERSARIAL_MODELS:
        training.check_config(split, model, config)
        training.check_workdir(
            split, workdir, model=model, config=config, seed=seed, dtype=dtype, resume=resume
        )
    os.makedirs(workdir, exist_ok=True)
    io.write_json(os.path.join(workdir, "config.json"), record)

    start = time.perf_counter()
    if model in configs.ADVERSARIAL_MODELS:
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
        )
        w = result.learner
        seconds = {"train": time.perf_counter() - start}
        scores = training.adversary_scores(result, split.train)
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
        training_info = {"best_epoch": result.best_epoch, "stop_reason": result.stop_reason}
    else:
        w, seconds = fit_closed_form(split, model, config, dtype=dtype)
        training_info = {}
    ease.save_model(os.path.join(workdir, "model.npz"), w, item_ids=split.item_ids)

    eval_start = time.perf_counter()
    summaries = {}
    for part in ("valid", "test"):
        per_user = evaluate_model(w, split, part)
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
    io.write_json(os.path.join(workdir, "results.json"), results)
    return results


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
