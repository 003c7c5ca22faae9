"""Training loop of the adversarial models, in pieces a notebook can call one by one.

- `epoch_batches`: epoch e's floor(m / b) batches of a permutation of the training users
  from `np.random.default_rng([seed, e])` (the remainder is dropped), so a resumed run
  draws the same batches as an uninterrupted one;
- `train_epoch`: one epoch of `step(state, batch, key)`, keys `fold_in(root, step)` of
  one root key; returns the state and the epoch's record;
- `evaluate_learner`: validation NDCG@100 and Recall@20/50 of the learner;
- `EarlyStopping`: the best epoch and patience, updated functionally;
- `checkpoints.Checkpointer` (orbax: latest state and best learner and adversary) and
  `checkpoints.MetricWriter` (`metrics.jsonl`).
`train_adversarial` composes them. With a `workdir`, every epoch's record is one JSON
line of `metrics.jsonl` (losses: `data_loss`, the steps' mean weighted squared error,
and `learner_loss`, that plus (C/2)‖W‖² of the epoch's last W; the adversary's mean
objective; adversary weight statistics; validation metrics; and seconds: `step_seconds`
for the epoch's steps, `valid_seconds` for the validation, `seconds` for both plus
starting the best checkpoint's write); `resume=True` continues from the latest checkpoint
(`arm_jax.resume`: which run a workdir's checkpoint holds, and restoring it).
"""

import contextlib
import dataclasses
import inspect
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax import adversarial, gda, learners, metrics, sharding
from arm_jax.configs import ADVERSARIAL_MODELS, ModelConfig
from arm_jax.errors import ConfigError
from arm_jax.learners import DENSE_LEARNER, Learner
from arm_jax.loop import EarlyStopping, epoch_batches, nnz_cap, train_epoch
from arm_jax.resume import (
    LoopState,
    check_workdir,
    open_workdir,
    run_fingerprint,
    state_tree,
)

CHECKPOINT_EVERY = 5
"""Default epochs between writes of the latest checkpoint: a killed run redoes at most
four epochs, and a run writes a fifth of the state (W and both Adam moments) it would
every epoch; the best learner is written whenever it improves, whatever this is."""


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


def check_config(
    split, model: str, config: ModelConfig, *, checkpoint_every: int = CHECKPOINT_EVERY
) -> None:
    """Raises ConfigError for a model that is not adversarial, a batch larger than the
    training users or a `checkpoint_every` below 1 (before anything is written)."""
    k = checkpoint_every
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"--checkpoint_every must be an integer >= 1, got {k!r}")
    if model not in ADVERSARIAL_MODELS:
        raise ConfigError(f"unknown adversarial model {model!r}; expected {ADVERSARIAL_MODELS}")
    m = split.train.shape[0]
    if config.batch_size > m:
        raise ConfigError(f"--batch_size={config.batch_size} is larger than the {m} training users")
    learners.check_learner(config, split.train.shape[1])


def _finite(record: dict) -> bool:
    return all(np.isfinite(v) for v in record.values() if isinstance(v, float))


def learner_of(state: gda.TrainState, learner: Learner = DENSE_LEARNER) -> Any:
    """The learner to evaluate and keep (`learner.export`): e.g. the `[n, n]` W (its
    diagonal is 0). It may be the state's own array (the dense W): copy it to keep it
    past the next step, which donates the state."""
    return learner.export(state.params)


def evaluate_learner(
    exported, split, *, product: str = "auto", predict: Callable | None = None, mesh=None
) -> dict:
    """`valid_ndcg@100`, `valid_recall@20`, `valid_recall@50` of an exported learner on
    the split's validation users (means over users with something held out); `predict`
    is its `Learner.predictor` (default: the dense learner's for `product`); `mesh` the
    one its scores are split over (`metrics.evaluate`)."""
    predict = predict or scoring_function(product)
    per_user = metrics.evaluate(predict, exported, split.valid_tr, split.valid_te, mesh=mesh)
    summary = metrics.summarize(per_user)
    return {f"valid_{k}": summary[k] for k in metrics.METRICS}


def _init_state(
    key, x, spec, config, *, dtype, warm_start: bool, mesh, warm_start_w=None
) -> gda.TrainState:
    # The learner's warm start reads the training rows (the dense one: EASE at C/2), or
    # is `warm_start_w()`, read here so that no caller keeps the [n, n] host copy.
    given = warm_start and warm_start_w is not None
    return gda.init_state(
        key,
        x.shape[1],
        adversary=spec.adversary,
        config=config,
        W0=warm_start_w() if given else None,
        dtype=dtype,
        learner=spec.learner,
        x=x if warm_start and not given else None,
        mesh=mesh,
    )


def _best_tree(learner, state: gda.TrainState) -> dict:
    # Host copies: the next step donates the state.
    return sharding.host_tree({"learner": learner, "adversary": state.adversary_params})


def _call(callback: Callable | None, record: dict, state) -> None:
    if callback is None:
        return
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): the old form
        params = ()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    many = any(p.kind == p.VAR_POSITIONAL for p in params) or len(positional) >= 2
    # A callback of one argument (arm_jax 0.1.0's form) gets the record only.
    callback(record, state) if many else callback(record)


def _result(loop, state, spec, config, stop_reason, mesh) -> TrainResult:
    """The `TrainResult` of a finished loop: its best learner and adversary."""
    if loop.best is None:  # diverged before the first evaluation: keep what there is
        loop.best = _best_tree(learner_of(state, spec.learner), state)
    s = loop.stopping
    return TrainResult(
        learner=sharding.place_learner(loop.best["learner"], mesh),
        learner_predict=spec.learner.predictor(config.product),
        adversary=jax.tree_util.tree_map(jnp.asarray, loop.best["adversary"]),
        adversary_apply=spec.adversary.apply,
        history=loop.history,
        best_epoch=s.best_epoch,
        best_ndcg=float(s.best_metric) if s.best_epoch else float("nan"),
        stop_reason=stop_reason,
    )


def train_adversarial(
    split,
    *,
    model: str,
    config: ModelConfig,
    seed: int = 0,
    workdir: str | None = None,
    resume: bool = False,
    progress: bool = False,
    callback: Callable | None = None,
    dtype=jnp.float32,
    adversarial_model: adversarial.Model | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
    mesh=None,
    warm_start_w: Callable[[], jax.Array] | None = None,
) -> TrainResult:
    """Trains ARM / R-LARM / R-LARM(NN) with early stopping on validation NDCG@100.

    Args:
      split: a `Split` (train, valid_tr, valid_te CSR matrices are used).
      model: "arm", "rlarm" or "rlarm_nn" (names the run; picks the adversary and
        objective unless `adversarial_model` is given).
      config: hyperparameters (C, B, learning_rate, batch_size, max_epochs, patience,
        warmup_epochs, adam_eps, warm_start, product, hidden_dim).
      seed: root seed of initialisation and shuffling.
      workdir: folder for `metrics.jsonl` and `checkpoints/`; None keeps nothing.
      resume: continue from the workdir's latest checkpoint (a fresh start if none).
      progress: show a tqdm bar over each epoch's steps.
      callback: called after each epoch with `(record, state)` (or `(record)` if it
        takes one argument); the next step donates `state`: copy what you keep.
      dtype: dtype of W and its Adam state.
      adversarial_model: a custom `adversarial.Model` (adversary, objective, learner);
        by default the paper's `model` with the learner `config.learner` names.
      checkpoint_every: write the latest checkpoint every this many epochs (and at the
        last); the best one is written whenever validation NDCG@100 improves.
      mesh: a `sharding.make_mesh` mesh to shard the learner over, or None (one device).
      warm_start_w: returns the dense learner's warm start `[n, n]` in place of the
        EASE fit at C/2 (`warm_start.ease_warm_start` reads that W from an EASE run);
        needs `config.warm_start` and the dense learner; unused when resuming.

    Returns:
      A `TrainResult` with the best learner (exported, e.g. `[n, n]`) and adversary.

    Raises:
      ConfigError: a bad model, batch size or `checkpoint_every`, a workdir holding
        another run, or a damaged checkpoint.
    """
    check_config(split, model, config, checkpoint_every=checkpoint_every)
    sharding.check_items(mesh, split.train.shape[1])
    if warm_start_w is not None and not (config.warm_start and config.learner == "dense"):
        raise ConfigError(
            "warm_start_w is the dense learner's warm start: it needs warm_start=True and "
            f"learner='dense' (got warm_start={config.warm_start}, learner={config.learner!r})"
        )
    spec = adversarial_model or adversarial.make_model(model, learners.make_learner(config))
    resuming = check_workdir(
        split, workdir, model=model, config=config, seed=seed, dtype=dtype, resume=resume
    )
    return _train(
        split, spec, model=model, config=config, seed=seed, dtype=dtype, workdir=workdir,
        resuming=resuming, checkpoint_every=int(checkpoint_every), progress=progress,
        callback=callback, mesh=mesh, warm_start_w=warm_start_w,
    )  # fmt: skip


def _train(
    split, spec: adversarial.Model, *, model, config, seed, dtype, workdir, resuming,
    checkpoint_every, progress, callback, mesh, warm_start_w=None,
) -> TrainResult:  # fmt: skip
    """`train_adversarial` once its inputs are checked: the composition of
    `epoch_batches`, `train_epoch`, `evaluate_learner`, `EarlyStopping`,
    `checkpoints.Checkpointer` and `checkpoints.MetricWriter` (the epochs in
    `_run_epochs`, the workdir in `resume.open_workdir`)."""
    x = split.train.tocsr().astype(np.float32)
    init_key, step_root = jax.random.split(jax.random.PRNGKey(seed))
    warm_start = config.warm_start and not resuming
    state = _init_state(
        init_key, x, spec, config, dtype=dtype, warm_start=warm_start, mesh=mesh,
        warm_start_w=warm_start_w,
    )  # fmt: skip
    steps_per_epoch = x.shape[0] // config.batch_size
    warmup = config.warmup_epochs * steps_per_epoch
    step_fn = gda.make_step(spec, config, warmup_steps=warmup, mesh=mesh)
    loop = LoopState(0, EarlyStopping(config.patience), [], nnz_cap(x, config.batch_size))
    fingerprint = run_fingerprint(split, model, config, seed, dtype)
    with contextlib.ExitStack() as stack:
        ckpt = writer = None
        if workdir:
            ckpt, writer, state, loop = open_workdir(
                stack, workdir, checkpoint_every, state, loop, config, spec.learner,
                resuming=resuming,
            )  # fmt: skip
        # Initialisation runs asynchronously (slow for a large W: docs/performance.md);
        # wait for it so that epoch 1's step_seconds time the steps only.
        jax.block_until_ready(state)
        state, stop_reason = _run_epochs(
            step_fn, state, loop, spec.learner, split=split, x=x, config=config, seed=seed,
            step_root=step_root, ckpt=ckpt, writer=writer, fingerprint=fingerprint,
            progress=progress, callback=callback, mesh=mesh,
        )  # fmt: skip
        if ckpt and loop.best is None and loop.stopping.best_epoch:
            like = {
                "learner": jax.eval_shape(spec.learner.export, state.params),
                "adversary": state.adversary_params,
            }
            state = None  # frees W and its moments before the best is read back
            loop.best = ckpt.restore_best(loop.stopping.best_epoch, like)
    return _result(loop, state, spec, config, stop_reason, mesh)


def _run_epochs(
    step_fn, state, loop: LoopState, learner: Learner, *, split, x, config, seed, step_root, ckpt,
    writer,
    fingerprint, progress, callback, mesh,
):  # fmt: skip
    """Epochs until the budget, patience or a non-finite loss; returns (state, reason)."""
    while loop.epoch < config.max_epochs and not loop.stopping.should_stop:
        start = time.perf_counter()
        batches = epoch_batches(
            x, seed=seed, epoch=loop.epoch, batch_size=config.batch_size, nnz_cap=loop.nnz_cap
        )
        loop.nnz_cap = batches.nnz_cap
        state, record = train_epoch(
            step_fn, state, batches, step_root=step_root, epoch=loop.epoch, C=config.C,
            learner=learner, progress=progress,
        )  # fmt: skip
        loop.epoch += 1
        if not _finite(record):
            loss = record["learner_loss"]
            reason = f"non-finite loss in epoch {loop.epoch} (learner_loss={loss})"
            record["stop_reason"] = reason
            loop.history.append(record)
            if writer:
                writer.write(record)
            _call(callback, record, state)
            return state, reason
        valid_start = time.perf_counter()
        exported = learner_of(state, learner)
        predict = learner.predictor(config.product)
        record.update(
            evaluate_learner(exported, split, product=config.product, predict=predict, mesh=mesh)
        )
        record["valid_seconds"] = time.perf_counter() - valid_start
        loop.stopping = loop.stopping.update(record["valid_ndcg@100"], epoch=loop.epoch)
        if loop.stopping.has_improved:
            # With a workdir the best is kept on disk only, written from the device
            # arrays: a host copy of a large W would not fit beside the train state.
            loop.best = None
            if ckpt:
                ckpt.save_best(
                    loop.epoch, {"learner": exported, "adversary": state.adversary_params}
                )
            else:
                loop.best = _best_tree(exported, state)
        del exported
        record.update(best_epoch=loop.stopping.best_epoch, seconds=time.perf_counter() - start)
        loop.history.append(record)
        last = loop.epoch >= config.max_epochs or loop.stopping.should_stop
        if ckpt and ckpt.should_save(loop.epoch, last=last):
            ckpt.save_latest(loop.epoch, state_tree(state), loop.meta(fingerprint, seed))
        if writer:
            writer.write(record)
        _call(callback, record, state)
    return state, "patience" if loop.stopping.should_stop else "max_epochs"
