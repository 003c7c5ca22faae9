"""Training loop of the adversarial models: epochs of `gda_step`, early stopping, resume.

Every epoch is a fresh permutation of the training users cut into floor(m / b) batches
(the remainder is dropped). The permutation of epoch e comes from
`np.random.default_rng([seed, e])`, so a resumed run draws the same batches as an
uninterrupted one; the step keys are `fold_in(root, step)` of one root key.

With a `workdir`, after every epoch:
- `metrics.jsonl` gets one JSON line (losses: `data_loss`, the steps' mean weighted
  squared error, and `learner_loss`, that plus (C/2)‖W‖² of the epoch's last W; the
  adversary's mean objective; adversary weight statistics; validation metrics; and
  seconds: `step_seconds` for the epoch's steps, `valid_seconds` for the
  validation, `seconds` for both plus the best checkpoint's write);
- `latest.npz` holds the full train state (W, adversary, both Adam states, step) and the
  loop's bookkeeping (epoch, best metric, patience counter, history, fingerprint);
- `best.npz` holds the best masked W and adversary so far.
All three are written atomically; `resume=True` continues from `latest.npz`.
"""

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax import adversarial, gda, identity, io, learners, metrics
from arm_jax.configs import ADVERSARIAL_MODELS, ModelConfig, config_record
from arm_jax.data import Split, split_stats
from arm_jax.errors import ConfigError
from arm_jax.products import make_batch


@dataclasses.dataclass
class TrainResult:
    """What `train_adversarial` returns.

    Attributes:
      learner: the best learner as its `Learner.export` gives it: the dense learner's
        `[n, n]` masked W (jax array), the low-rank learner's `{"P", "Q"}`.
      learner_predict: `predict(learner, x: [users, n]) -> [users, n]` scores of it
        (`metrics.evaluate`'s predict).
      adversary: the best adversary's parameters.
      adversary_apply: `apply(params, batch) -> [b]` raw scores of the model's adversary.
      history: one record per epoch (what `metrics.jsonl` holds).
      best_epoch: 1-based epoch of the best validation NDCG@100 (0: never evaluated).
      best_ndcg: that NDCG@100.
      stop_reason: why training stopped ("patience", "max_epochs", "non-finite ...").
    """

    learner: Any
    learner_predict: Callable
    adversary: Any
    adversary_apply: Callable
    history: list[dict]
    best_epoch: int
    best_ndcg: float
    stop_reason: str


def adversary_scores(result: TrainResult, x: sp.csr_matrix, *, chunk_size: int = 4096):
    """Raw adversary score of every row of `x` (e.g. `split.train`); `[m]` NumPy array."""
    return adversarial.adversary_scores(
        result.adversary_apply, result.adversary, x, chunk_size=chunk_size
    )


def scoring_function(product: str):
    """The dense learner's `metrics.evaluate` predict function for `product`
    (`learners.dense_predictor`)."""
    return learners.dense_predictor(product)


def nnz_cap(x: sp.csr_matrix, batch_size: int) -> int:
    """A fixed per-run length for the batches' coordinate arrays.

    Mean nonzeros per batch plus 8 standard deviations (sampling without replacement),
    rounded up to 512 and never above the sum of the `batch_size` longest rows; a batch
    over it grows it (one retrace; the numbers do not change, padding adds exact zeros).
    """
    counts = np.diff(x.indptr).astype(np.float64)
    m = len(counts)
    mean = batch_size * counts.mean()
    fpc = max(m - batch_size, 0) / max(m - 1, 1)
    std = np.sqrt(batch_size * counts.var() * fpc)
    hard = int(np.sort(counts)[::-1][:batch_size].sum())
    return max(1, min(hard, int(np.ceil((mean + 8 * std + 1) / 512) * 512)))


def _fingerprint(split, model: str, config: ModelConfig, seed: int, dtype) -> dict:
    # max_epochs and patience only say when to stop: a resumed run may change them.
    trajectory = config_record(config)
    del trajectory["max_epochs"], trajectory["patience"]
    train = split.train
    data = split_stats(split) if isinstance(split, Split) else {}
    run = dict(dataset=getattr(split, "dataset", ""), model=model, config=config, seed=seed)
    return {
        **identity.run_identity(**run, dtype=dtype, data=data),  # the data's checksums too
        "config": trajectory,
        "train_shape": list(train.shape),
        "train_nnz": int(train.nnz),
        "train_checksum": hashlib.sha256(train.indices.tobytes()).hexdigest()[:16],
        "optimizer": "keras_adam",  # checkpoints of optax.adam states (before) differ
    }


def _flatten(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def _unflatten(like, arrays: dict) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(arrays[jax.tree_util.keystr(p)]) for p, _ in leaves]
    )


def _save(path: str, tree, meta: dict) -> None:
    arrays = {"tree" + k: v for k, v in _flatten(tree).items()}
    io.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)


def _load_meta(path: str) -> dict:
    with np.load(path) as f:  # reads the one entry, not the arrays
        return json.loads(str(f["__meta__"]))


def _load(path: str) -> tuple[dict, dict]:
    with np.load(path) as f:
        meta = json.loads(str(f["__meta__"]))
        arrays = {k[len("tree") :]: f[k] for k in f.files if k.startswith("tree")}
    return meta, arrays


def check_config(split, model: str, config: ModelConfig) -> None:
    """Raises ConfigError for a model that is not adversarial or a batch larger than the
    training users (before anything is written)."""
    if model not in ADVERSARIAL_MODELS:
        raise ConfigError(f"unknown adversarial model {model!r}; expected {ADVERSARIAL_MODELS}")
    m = split.train.shape[0]
    if config.batch_size > m:
        raise ConfigError(f"--batch_size={config.batch_size} is larger than the {m} training users")
    learners.check_learner(config, split.train.shape[1])


def _epoch_record(step_metrics: list[dict], penalty: jax.Array, C: float) -> dict:
    """The epoch's means; the learner loss is the steps' mean data loss plus (C/2)‖W̃‖²
    (`penalty`) of the epoch's last learner (the steps do not read all of W for it, see
    `gda_step`)."""
    host = jax.device_get(step_metrics)
    stacked = {k: np.asarray([s[k] for s in host], np.float64) for k in host[0]}
    active = stacked["adversary_active"] > 0
    obj = stacked["adversary_objective"][active]
    data_loss = float(stacked["data_loss"].mean())
    return {
        "learner_loss": data_loss + 0.5 * C * float(penalty),
        "data_loss": data_loss,
        "adversary_objective": float(obj.mean()) if active.any() else None,
        "adversary_steps": int(active.sum()),
        "weight_min": float(stacked["weight_min"].min()),
        "weight_max": float(stacked["weight_max"].max()),
        "weight_entropy": float(stacked["weight_entropy"].mean()),
        "weight_ess": float(stacked["weight_ess"].mean()),
    }


def _nulled(record: dict) -> dict:
    return {
        k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in record.items()
    }


def _finite(record: dict) -> bool:
    return all(np.isfinite(v) for v in record.values() if isinstance(v, float))


def check_workdir(
    split, workdir: str | None, *, model: str, config: ModelConfig, seed: int, dtype, resume: bool
) -> bool:
    """Whether `train_adversarial` would resume from `workdir`; raises where it would refuse.

    Raises:
      ConfigError: the workdir holds a checkpoint and `resume` is False, a checkpoint
        of a different run (another model, data, seed, dtype or setting other than
        max_epochs and patience), or one past `config.max_epochs` (its best epoch could
        lie beyond the budget).
    """
    latest = os.path.join(workdir, "latest.npz") if workdir else None
    if not (latest and os.path.exists(latest)):
        return False
    if not resume:
        raise ConfigError(
            f"{workdir} already holds a run: resume it (--resume, resume=True) or use a new workdir"
        )
    meta = _load_meta(latest)
    if meta["fingerprint"] != _fingerprint(split, model, config, seed, dtype):
        raise ConfigError(f"{workdir} holds a checkpoint of a different run; use a new workdir")
    if meta["epoch"] > config.max_epochs:
        raise ConfigError(
            f"{workdir} has trained {meta['epoch']} epochs, more than --max_epochs="
            f"{config.max_epochs}: give at least {meta['epoch']} or use a new workdir"
        )
    return True


def train_adversarial(
    split,
    *,
    model: str,
    config: ModelConfig,
    seed: int = 0,
    workdir: str | None = None,
    resume: bool = False,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    dtype=jnp.float32,
    adversarial_model: adversarial.Model | None = None,
) -> TrainResult:
    """Trains ARM / R-LARM / R-LARM(NN) with early stopping on validation NDCG@100.

    Args:
      split: a `Split` (train, valid_tr, valid_te CSR matrices are used).
      model: "arm", "rlarm" or "rlarm_nn" (names the run; picks the adversary and
        objective unless `adversarial_model` is given).
      config: hyperparameters (C, B, learning_rate, batch_size, max_epochs, patience,
        warmup_epochs, adam_eps, warm_start, product, hidden_dim).
      seed: root seed of initialisation and shuffling.
      workdir: folder for `metrics.jsonl`, `latest.npz`, `best.npz`; None keeps nothing.
      resume: continue from `workdir/latest.npz` (a fresh start if there is none).
      progress: show a tqdm bar over each epoch's steps.
      callback: called with each epoch's record.
      dtype: dtype of W and its Adam state.
      adversarial_model: a custom `adversarial.Model` (adversary, objective, learner);
        by default the paper's `model` with the learner `config.learner` names.

    Returns:
      A `TrainResult` with the best learner (exported, e.g. `[n, n]`) and adversary.

    Raises:
      ConfigError: a bad model or batch size, or a workdir holding another run.
    """
    check_config(split, model, config)
    spec = adversarial_model or adversarial.make_model(model, learners.make_learner(config))
    x = split.train.tocsr().astype(np.float32)
    m, n = x.shape
    b = config.batch_size
    steps_per_epoch = m // b
    fingerprint = _fingerprint(split, model, config, seed, dtype)
    cap = nnz_cap(x, b)

    root = jax.random.PRNGKey(seed)
    init_key, step_root = jax.random.split(root)
    latest = os.path.join(workdir, "latest.npz") if workdir else None
    best_path = os.path.join(workdir, "best.npz") if workdir else None
    resuming = check_workdir(
        split, workdir, model=model, config=config, seed=seed, dtype=dtype, resume=resume
    )
    state = gda.init_state(
        init_key,
        n,
        adversary=spec.adversary,
        config=config,
        dtype=dtype,
        learner=spec.learner,
        x=x if config.warm_start and not resuming else None,  # a restored state replaces it
    )
    step_fn = gda.make_step(spec, config, warmup_steps=config.warmup_epochs * steps_per_epoch)

    epoch, best_ndcg, best_epoch, bad_epochs, history = 0, -np.inf, 0, 0, []
    best_W = best_adv = None
    if resuming:
        meta, arrays = _load(latest)
        state = _restore_state(state, arrays)
        epoch, best_ndcg, best_epoch = meta["epoch"], meta["best_ndcg"], meta["best_epoch"]
        bad_epochs, history, cap = meta["bad_epochs"], meta["history"], meta["nnz_cap"]
        if best_epoch:
            _, best_arrays = _load(best_path)
            like = jax.eval_shape(spec.learner.export, state.params)
            best = _unflatten({"W": like, "adversary": state.adversary_params}, best_arrays)
            best_W, best_adv = best["W"], best["adversary"]
        _rewrite_metrics(workdir, history)
    elif workdir:
        os.makedirs(workdir, exist_ok=True)
        _rewrite_metrics(workdir, [])

    score = spec.learner.predictor(config.product)
    penalty = jax.jit(spec.learner.penalty)  # fused: no n×n temporary
    # Initialisation runs asynchronously (Glorot-normal W: ≈15 s at n ≈ 25k on 2 CPU
    # cores); wait for it so that epoch 1's step_seconds time the steps only.
    jax.block_until_ready(state)
    stop_reason = "max_epochs"
    while epoch < config.max_epochs and bad_epochs < config.patience:
        start = time.perf_counter()
        perm = np.random.default_rng([seed, epoch]).permutation(m)
        step_metrics = []
        steps = range(steps_per_epoch)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"epoch {epoch + 1}", leave=False)
        for i in steps:
            users = perm[i * b : (i + 1) * b]
            nnz = int(x.indptr[users + 1].sum() - x.indptr[users].sum())
            if nnz > cap:
                cap = int(np.ceil(nnz * 1.1 / 512) * 512)
            batch = make_batch(x, users, cap)
            key = jax.random.fold_in(step_root, epoch * steps_per_epoch + i)
            state, step_out = step_fn(state, batch, key)
            step_metrics.append(step_out)
        # Waits for the steps.
        record = _epoch_record(step_metrics, penalty(state.params), config.C)
        record = {"epoch": epoch + 1, **record}
        record["step_seconds"] = time.perf_counter() - start
        epoch += 1
        if not _finite(record):
            stop_reason = (
                f"non-finite loss in epoch {epoch} (learner_loss={record['learner_loss']})"
            )
            record["stop_reason"] = stop_reason
            history.append(record)
            if workdir:
                io.append_jsonl(os.path.join(workdir, "metrics.jsonl"), _nulled(record))
            if callback:
                callback(record)
            break
        valid_start = time.perf_counter()
        W = spec.learner.export(state.params)  # what evaluation scores with
        per_user = metrics.evaluate(score, W, split.valid_tr, split.valid_te)
        summary = metrics.summarize(per_user)
        record.update({f"valid_{k}": summary[k] for k in metrics.METRICS})
        record["valid_seconds"] = time.perf_counter() - valid_start
        if summary["ndcg@100"] > best_ndcg:
            best_ndcg, best_epoch, bad_epochs = summary["ndcg@100"], epoch, 0
            best_W, best_adv = jax.device_get(W), jax.device_get(state.adversary_params)
            if workdir:
                _save(best_path, {"W": best_W, "adversary": best_adv}, {"epoch": epoch})
        else:
            bad_epochs += 1
        del W
        record.update(best_epoch=best_epoch, seconds=time.perf_counter() - start)
        history.append(record)
        if workdir:
            meta = dict(
                fingerprint=fingerprint,
                epoch=epoch,
                best_ndcg=best_ndcg,
                best_epoch=best_epoch,
                bad_epochs=bad_epochs,
                history=history,
                nnz_cap=cap,
                rng=f"np.random.default_rng([{seed}, epoch])",
            )
            _save(latest, _state_tree(state), meta)
            io.append_jsonl(os.path.join(workdir, "metrics.jsonl"), record)
        if callback:
            callback(record)
    else:
        stop_reason = "patience" if bad_epochs >= config.patience else "max_epochs"

    if best_W is None:  # diverged before the first evaluation: keep what there is
        best_W = jax.device_get(spec.learner.export(state.params))
        best_adv = jax.device_get(state.adversary_params)
    return TrainResult(
        learner=jax.tree_util.tree_map(jnp.asarray, best_W),
        learner_predict=score,
        adversary=jax.tree_util.tree_map(jnp.asarray, best_adv),
        adversary_apply=spec.adversary.apply,
        history=history,
        best_epoch=best_epoch,
        best_ndcg=float(best_ndcg) if best_epoch else float("nan"),
        stop_reason=stop_reason,
    )


def _state_tree(state: gda.TrainState) -> dict:
    # learner_scratch is scratch (each step overwrites the rows it reads): not saved.
    return {
        "params": state.params,
        "adversary_params": state.adversary_params,
        "opt_state": state.opt_state,
        "adversary_opt_state": state.adversary_opt_state,
        "step": state.step,
    }


def _restore_state(state: gda.TrainState, arrays: dict) -> gda.TrainState:
    return state.replace(**_unflatten(_state_tree(state), arrays))


def _rewrite_metrics(workdir: str, history: list[dict]) -> None:
    # metrics.jsonl may hold epochs past the checkpoint of a killed run: keep what it saved.
    lines = "".join(json.dumps(r, allow_nan=False) + "\n" for r in history)
    io.write_text(os.path.join(workdir, "metrics.jsonl"), lines)
