"""A training run's workdir: which run its checkpoint holds, and resuming from it.

`check_workdir` says whether `train_adversarial` would resume from a workdir and refuses
another run's checkpoint (its `run_fingerprint`: model, data, seed, dtype and every
setting but max_epochs and patience); `open_workdir` opens the workdir's checkpointer
and metric writer and restores the latest state and `LoopState`; `state_tree` is the
part of a `gda.TrainState` a checkpoint holds.
"""

import dataclasses
import hashlib
import os
from typing import Any

import jax
import numpy as np

from arm_jax import checkpoints, gda, identity, io, sharding
from arm_jax.configs import ModelConfig, config_record
from arm_jax.data import Split, split_stats
from arm_jax.errors import ConfigError
from arm_jax.learner_interface import Learner
from arm_jax.loop import EarlyStopping


def run_fingerprint(split, model: str, config: ModelConfig, seed: int, dtype) -> dict:
    """What identifies a run in its checkpoints' meta (`check_workdir` compares it)."""
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


def state_tree(state: gda.TrainState) -> dict:
    """The part of a `TrainState` the latest checkpoint holds."""
    # learner_scratch is scratch (each step overwrites the rows it reads): not saved.
    return {
        "params": state.params,
        "adversary_params": state.adversary_params,
        "opt_state": state.opt_state,
        "adversary_opt_state": state.adversary_opt_state,
        "step": state.step,
    }


def check_workdir(
    split, workdir: str | None, *, model: str, config: ModelConfig, seed: int, dtype, resume: bool
) -> bool:
    """Whether `train_adversarial` would resume from `workdir`; raises where it would refuse.

    Raises:
      ConfigError: the workdir holds a checkpoint and `resume` is False, a checkpoint
        of a different run (another model, data, seed, dtype or setting other than
        max_epochs and patience), one past `config.max_epochs` (its best epoch could
        lie beyond the budget), a damaged one, or one of arm_jax 0.1.0 (`.npz`).
    """
    meta = checkpoints.latest_meta(workdir) if workdir else None
    if meta is None:
        return False
    if not resume:
        raise ConfigError(
            f"{workdir} already holds a run: resume it (--resume, resume=True) or use a new workdir"
        )
    if meta["fingerprint"] != io.to_json_value(run_fingerprint(split, model, config, seed, dtype)):
        raise ConfigError(f"{workdir} holds a checkpoint of a different run; use a new workdir")
    if meta["epoch"] > config.max_epochs:
        raise ConfigError(
            f"{workdir} has trained {meta['epoch']} epochs, more than --max_epochs="
            f"{config.max_epochs}: give at least {meta['epoch']} or use a new workdir"
        )
    return True


@dataclasses.dataclass
class LoopState:
    """The loop's bookkeeping between epochs (what `latest`'s meta holds)."""

    epoch: int
    stopping: EarlyStopping
    history: list
    nnz_cap: int
    best: Any = None  # host copy of the best learner and adversary (no workdir)

    def meta(self, fingerprint: dict, seed: int) -> dict:
        s = self.stopping
        return dict(
            fingerprint=fingerprint,
            epoch=self.epoch,
            best_ndcg=s.best_metric if s.best_epoch else None,
            best_epoch=s.best_epoch,
            bad_epochs=s.bad_epochs,
            history=self.history,
            nnz_cap=self.nnz_cap,
            rng=f"np.random.default_rng([{seed}, epoch])",
        )


def _resume(ckpt: checkpoints.Checkpointer, state, config: ModelConfig, learner: Learner):
    """(state, loop) restored from the latest checkpoint."""
    tree, meta = ckpt.restore_latest(state_tree(state))
    state = state.replace(**tree)
    stopping = EarlyStopping(
        patience=config.patience,  # may differ from the killed run's
        best_metric=meta["best_ndcg"] if meta["best_epoch"] else -np.inf,
        best_epoch=meta["best_epoch"],
        bad_epochs=meta["bad_epochs"],
    )
    loop = LoopState(meta["epoch"], stopping, meta["history"], meta["nnz_cap"])
    if stopping.best_epoch:  # read to check it now; it stays on disk till the end
        like = {"learner": jax.eval_shape(learner.export, state.params)}
        ckpt.restore_best(stopping.best_epoch, {**like, "adversary": state.adversary_params})
    ckpt.start_from(loop.epoch, stopping.best_epoch)
    return state, loop


def open_workdir(stack, workdir, k, state, loop, config, learner, *, resuming):
    """The workdir's checkpointer and metric writer, the state and loop resumed if asked."""
    os.makedirs(workdir, exist_ok=True)
    ckpt = stack.enter_context(checkpoints.Checkpointer(workdir, checkpoint_every=k))
    writer = checkpoints.MetricWriter(workdir) if sharding.is_primary() else None
    if resuming:
        state, loop = _resume(ckpt, state, config, learner)
    else:
        ckpt.start_from(0, 0)
    if writer:
        writer.reset(loop.history)
    return ckpt, writer, state, loop
