"""The training loop's pieces: an epoch's batches, one epoch of steps, early stopping.

`training.train_adversarial` composes them with evaluation and checkpoints; a notebook
can call them one by one (see `colabs/custom_adversary.ipynb`).
"""

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Iterator

import jax
import numpy as np
import scipy.sparse as sp

from arm_jax import gda
from arm_jax.learners import DENSE_LEARNER, Learner
from arm_jax.products import SparseBatch, make_batch


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


@functools.cache
def _jitted_penalty(penalty: Callable) -> Callable:
    return jax.jit(penalty)  # fused: no n×n temporary


def learner_penalty(state: gda.TrainState, C: float, learner: Learner = DENSE_LEARNER) -> float:
    """(C/2)‖W̃‖² of the state's learner (`learner.penalty`): the regulariser the steps
    leave out of their data loss (computing it reads all of W, see `gda_step`)."""
    return 0.5 * C * float(_jitted_penalty(learner.penalty)(state.params))


def _epoch_record(step_metrics: list[dict], penalty: float) -> dict:
    """The epoch's means; the learner loss is the steps' mean data loss plus the
    regulariser of the epoch's last learner."""
    host = jax.device_get(step_metrics)
    stacked = {k: np.asarray([s[k] for s in host], np.float64) for k in host[0]}
    active = stacked["adversary_active"] > 0
    obj = stacked["adversary_objective"][active]
    data_loss = float(stacked["data_loss"].mean())
    return {
        "learner_loss": data_loss + penalty,
        "data_loss": data_loss,
        "adversary_objective": float(obj.mean()) if active.any() else None,
        "adversary_steps": int(active.sum()),
        "weight_min": float(stacked["weight_min"].min()),
        "weight_max": float(stacked["weight_max"].max()),
        "weight_entropy": float(stacked["weight_entropy"].mean()),
        "weight_ess": float(stacked["weight_ess"].mean()),
    }


@dataclasses.dataclass(frozen=True)
class EpochBatches:
    """One epoch's mini-batches, built on the host one at a time as they are iterated.

    Attributes:
      x: `[m, n]` CSR training matrix.
      users: `[steps, b]` the users of each batch.
      nnz_caps: `[steps]` each batch's coordinate length; it only grows.
    """

    x: sp.csr_matrix
    users: np.ndarray
    nnz_caps: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[SparseBatch]:
        for users, cap in zip(self.users, self.nnz_caps):
            yield make_batch(self.x, users, int(cap))

    @property
    def nnz_cap(self) -> int:
        """The cap after this epoch (the next epoch starts from it)."""
        return int(self.nnz_caps[-1])


def epoch_batches(
    x: sp.csr_matrix, *, seed: int, epoch: int, batch_size: int, nnz_cap: int
) -> EpochBatches:
    """Epoch `epoch`'s (0-based) floor(m / b) batches of a permutation of the users.

    The permutation comes from `np.random.default_rng([seed, epoch])`, so a resumed run
    draws the same batches; the remainder is dropped. A batch with more nonzeros than
    the cap grows it to 1.1× its count, rounded up to 512 (one retrace, same numbers).
    """
    m = x.shape[0]
    steps = m // batch_size
    perm = np.random.default_rng([seed, epoch]).permutation(m)
    users = perm[: steps * batch_size].reshape(steps, batch_size)
    counts = np.diff(x.indptr)[users].sum(axis=1)
    caps = np.empty(steps, np.int64)
    cap = nnz_cap
    for i, nnz in enumerate(counts):  # one entry per batch, not per user
        if nnz > cap:
            cap = int(np.ceil(nnz * 1.1 / 512) * 512)
        caps[i] = cap
    return EpochBatches(x, users, caps)


def train_epoch(
    step_fn: Callable,
    state: gda.TrainState,
    batches: Iterable[SparseBatch],
    *,
    step_root: jax.Array,
    epoch: int,
    C: float,
    learner: Learner = DENSE_LEARNER,
    progress: bool = False,
) -> tuple[gda.TrainState, dict]:
    """One epoch of `step_fn(state, batch, key)` (e.g. `gda.make_step`'s).

    Args:
      step_fn: the jitted step (it donates the state).
      state: the train state at the epoch's start.
      batches: the epoch's batches (`epoch_batches`); a sized iterable.
      step_root: root key of the steps; step i of epoch e gets
        `fold_in(step_root, e · len(batches) + i)`.
      epoch: 0-based epoch index.
      C: learner L2 weight (the record's `learner_loss` adds the regulariser).
      learner: the state's learner (its `penalty` is read once, after the steps).
      progress: show a tqdm bar over the steps.

    Returns:
      (state, record): the record holds `epoch` (1-based), the losses, the adversary's
      mean objective, weight statistics and `step_seconds`.
    """
    start = time.perf_counter()
    steps_per_epoch = len(batches)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"epoch {epoch + 1}", leave=False)
    step_metrics = []
    for i, batch in enumerate(batches):
        key = jax.random.fold_in(step_root, epoch * steps_per_epoch + i)
        state, step_out = step_fn(state, batch, key)
        step_metrics.append(step_out)
    # Waits for the steps.
    record = {"epoch": epoch + 1, **_epoch_record(step_metrics, learner_penalty(state, C, learner))}
    record["step_seconds"] = time.perf_counter() - start
    return state, record


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Early stopping on a metric to maximise; `update` returns a new one.

    Attributes:
      patience: stop after this many epochs without a better metric.
      best_metric: the best so far (-inf before any).
      best_epoch: its 1-based epoch (0 before any).
      bad_epochs: epochs since the best.
      has_improved: whether the last `update` gave a new best.
    """

    patience: int
    best_metric: float = -np.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    has_improved: bool = False

    def update(self, metric: float, *, epoch: int) -> "EarlyStopping":
        """The state after `epoch`'s metric (a NaN never improves)."""
        if metric > self.best_metric:
            return dataclasses.replace(
                self, best_metric=metric, best_epoch=epoch, bad_epochs=0, has_improved=True
            )
        return dataclasses.replace(self, bad_epochs=self.bad_epochs + 1, has_improved=False)

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience
