"""Adversarial recommender models on EASE: ARM (eq. 9), R-LARM (eq. 10), R-LARM(NN) (eq. 12).

A model is a learner (`arm_jax.learners`: the paper's dense `W: [n, n]` with its
diagonal held at 0, or another `Learner`), an adversary given as a pair of pure
functions `(init, apply)` whose `apply(params, batch) -> [b]` gives one raw score `s_u`
per user, and an adversary objective that the adversary ascends. The learner always
descends the weighted EASE loss (eq. 6)

    L(W, A) = Σ_u w_u ‖x_u − x_u W‖² + (C/2) ‖W‖²,   w_u = σ(s_u) / Σ_batch σ(s_v),

with the normalisation per mini-batch as in the paper's §5.1. ARM's adversary ascends the
same weighted loss; R-LARM's ascends the rank objective Σ_u w_u (1 − NDCG@100_u) · n (the
factor n is the authors' code's), both minus (B/2)‖A‖².

Which model runs is only a matter of which `Learner`, `Adversary` and objective
`gda_step` is given (`make_model` maps the paper's names through `configs.REGISTRY`); a
researcher passes their own the same way. The descent–ascent step and its train state
are in `arm_jax.gda`.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax.errors import ConfigError
from arm_jax.learners import (  # noqa: F401 (the learner's functions, re-exported)
    DENSE_LEARNER,
    Learner,
    init_learner,
    l2_norm_sq,
    learner_loss,
    learner_matrix,
    zero_diagonal,
)
from arm_jax.metrics import ndcg_at_k
from arm_jax.products import GATHERED_ELEMENTS, SparseBatch, add_batch, make_batch, sparse_matmul

Params = Any


# ------------------------------------------------------------------------ adversary
class Adversary(NamedTuple):
    """An adversary: `init(key, n_items, config) -> params`, `apply(params, batch) -> [b]`.

    `apply` returns raw scores `s_u` (before the sigmoid) for the batch's users, or for
    an item-level adversary `[1, n]` scores of the items and for a user–item one `[b, n]`
    scores of the entries (`arm_jax.item_adversaries`; the learner's loss takes all
    three, `learners.unit_squared_errors`). Such an adversary also gives:

    Attributes:
      user_scores: `user_scores(params, batch) -> [b]`, its per-user part (None: none;
        what `adversary_scores.npz` holds), for an adversary whose `apply` is not [b].
      item_scores: `item_scores(params) -> [n]`, its per-item logits, or None.
    """

    init: Callable[[jax.Array, int, Any], Params]
    apply: Callable[[Params, SparseBatch], jax.Array]
    user_scores: Callable[[Params, SparseBatch], jax.Array] | None = None
    item_scores: Callable[[Params], jax.Array] | None = None

    def per_user(self) -> Callable[[Params, SparseBatch], jax.Array] | None:
        """The function of per-user scores `[b]`: `apply` for a user-level adversary,
        `user_scores` otherwise (None for an item-level one)."""
        return self.apply if self.item_scores is None else self.user_scores


def _linear_init(key, n_items, config=None):
    return {"a": jax.nn.initializers.glorot_normal()(key, (n_items, 1), jnp.float32)}


def _linear_apply(params, batch):
    return sparse_matmul(batch, params["a"])[:, 0]


def _nn_init(key, n_items, config):
    k0, k1 = jax.random.split(key)
    glorot = jax.nn.initializers.glorot_normal()
    d = config.hidden_dim
    return {"A0": glorot(k0, (n_items, d), jnp.float32), "A1": glorot(k1, (d, 1), jnp.float32)}


def _nn_apply(params, batch):
    return (jnp.tanh(sparse_matmul(batch, params["A0"])) @ params["A1"])[:, 0]


LINEAR_ADVERSARY = Adversary(_linear_init, _linear_apply)
"""Linear adversary `s_u = x_u a`, `a: [n, 1]` (ARM, R-LARM)."""
NN_ADVERSARY = Adversary(_nn_init, _nn_apply)
"""One tanh layer `s_u = tanh(x_u A0) A1`, `A0: [n, d]`, `A1: [d, 1]` (R-LARM(NN))."""


def adversary_weights(scores: jax.Array) -> jax.Array:
    """Per-batch normalised weights `σ(s_u) / Σ_v σ(s_v)`; `[b] -> [b]`, sum 1 (any
    shape: `[1, n]` item or `[b, n]` entry scores are normalised over all entries)."""
    sig = jax.nn.sigmoid(scores)
    return sig / jnp.sum(sig)


def arm_objective(adversary_params, apply, batch, x, scores, *, B):
    """ARM's adversary objective (eq. 9): Σ_u w_u ‖x_u − x_u W‖² − (B/2)‖A‖².

    Args:
      adversary_params: the adversary's parameters (differentiated).
      apply: the adversary's apply function.
      batch: the users' rows, sparse.
      x: `[b, n]` the same rows, dense (not read: x − scores is built from `batch`, so
        the step needs no dense copy of the batch).
      scores: `[b, n]` predictions `x_u W` of the (updated) learner; treated as constant.
      B: adversary L2 weight.
    """
    del x
    residual = add_batch(-scores, batch)
    loss_u = jax.lax.stop_gradient(jnp.sum(jnp.square(residual), axis=-1))
    w = adversary_weights(apply(adversary_params, batch))
    return jnp.sum(w * loss_u) - 0.5 * B * l2_norm_sq(adversary_params)


def rank_loss(scores: jax.Array, x: jax.Array, *, k: int = 100) -> jax.Array:
    """Per-user rank loss 1 − NDCG@k of ranking all items by `scores` against `x`.

    Args:
      scores: `[b, n]` predictions; x: `[b, n]` the users' own 0/1 rows (relevance).

    Returns:
      `[b]`; not differentiable in `scores` (ranks), so its gradient is stopped.
    """
    ndcg = ndcg_at_k(jax.lax.stop_gradient(scores), x, None, k=k)
    return jax.lax.stop_gradient(1.0 - ndcg)


def nonzero_ranks(
    scores: jax.Array, batch: SparseBatch, *, chunk: int | None = None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Rank of each nonzero (u, i) of `batch` among all items by u's `scores`: [nnz_pad].

    rank_ui = #{j: s_uj > s_ui} + #{j < i: s_uj = s_ui} (0 is the top; the tie order of
    `lax.top_k`). `chunk` as in `rank_loss_sparse`.

    Returns:
      (rank, rows, cols, rel), each `[nnz_pad]` (the coordinates padded to a multiple of
      the chunk): int32 ranks, the entries' rows and columns, and whether the entry is
      relevant (a real nonzero; padding is not). Gradients are stopped.
    """
    scores = jax.lax.stop_gradient(scores)
    if chunk is None:
        cpu = jax.default_backend() == "cpu"
        chunk = 32 if cpu else max(512, GATHERED_ELEMENTS // scores.shape[1])
    chunk = min(chunk, batch.rows.shape[0])
    pad = -batch.rows.shape[0] % chunk
    rows, cols = jnp.pad(batch.rows, (0, pad)), jnp.pad(batch.cols, (0, pad))
    rel = jnp.pad(batch.vals > 0, (0, pad))
    item = jnp.arange(scores.shape[1])
    count_dtype = jnp.float32 if scores.shape[1] < 2**24 else jnp.int32

    def ranks(i, rank):
        r = jax.lax.dynamic_slice_in_dim(rows, i * chunk, chunk)
        c = jax.lax.dynamic_slice_in_dim(cols, i * chunk, chunk)
        row = scores[r]  # [chunk, n]
        mine = jnp.take_along_axis(row, c[:, None], axis=1)
        ahead = (row > mine) | ((row == mine) & (item[None, :] < c[:, None]))
        # Counted in float32, exact below 2^24 items: XLA's CPU reduction of int32 is
        # slower (docs/performance.md).
        count = jnp.sum(ahead.astype(count_dtype), axis=1).astype(jnp.int32)
        return jax.lax.dynamic_update_slice_in_dim(rank, count, i * chunk, 0)

    # Chunks past the real entries are skipped: their ranks stay 0, and they are padding
    # (value 0, not relevant).
    n_chunks = (batch.nnz + chunk - 1) // chunk
    rank = jax.lax.fori_loop(0, n_chunks, ranks, jnp.zeros(rows.shape, jnp.int32))
    return rank, rows, cols, rel


def rank_loss_sparse(
    scores: jax.Array, batch: SparseBatch, *, k: int = 100, chunk: int | None = None
) -> jax.Array:
    """`rank_loss(scores, densify(batch))` from the ranks of each user's own items.

    NDCG@k with binary relevance needs only the rank of each relevant item, rank_i =
    #{j: s_j > s_i} + #{j < i: s_j = s_i} (the tie order of `lax.top_k`): a count over
    `[nnz, n]` comparisons, which is several times cheaper than a top-k over `[b, n]`
    on a CPU and gives the same numbers.

    Args:
      scores: `[b, n]` predictions; batch: the users' rows (values > 0 are relevant).
      k: cut-off.
      chunk: nonzeros compared per loop iteration; None: 32 on a CPU, where a
        `[chunk, n]` block then stays in cache (docs/performance.md); on accelerators
        as many as keep `[chunk, n]` within `GATHERED_ELEMENTS`
        (13,349 at n = 20,108: 6 iterations for an ML-20M batch instead of 137 at 512),
        since each iteration there costs kernel launches and a loop-condition check
        whatever its size.

    Returns:
      `[b]` 1 − NDCG@k, 1 for a user with no items; gradient stopped.
    """
    scores = jax.lax.stop_gradient(scores)
    rank, rows, _, rel = nonzero_ranks(scores, batch, chunk=chunk)
    gain = jnp.where(rel & (rank < k), 1.0 / jnp.log2(rank + 2.0), 0.0)
    dcg = jax.ops.segment_sum(gain, rows, num_segments=batch.n_users)
    n_rel = jax.ops.segment_sum(rel.astype(jnp.int32), rows, num_segments=batch.n_users)
    disc = 1.0 / jnp.log2(jnp.arange(2, k + 2, dtype=scores.dtype))
    idcg = jnp.sum(jnp.where(jnp.arange(k)[None, :] < n_rel[:, None], disc[None, :], 0.0), 1)
    ndcg = jnp.where(n_rel > 0, dcg / jnp.where(n_rel > 0, idcg, 1.0), 0.0)
    return 1.0 - ndcg


def rank_objective(adversary_params, apply, batch, x, scores, *, B):
    """R-LARM's adversary objective (eq. 10, 12): Σ_u w_u (1 − NDCG@100_u)·n − (B/2)‖A‖².

    Arguments as in `arm_objective`. NDCG@100 ranks all n items by `scores` against the
    user's own row (`rank_loss_sparse`). The factor n (items) is the authors' code's.
    """
    loss_u = rank_loss_sparse(scores, batch) * x.shape[-1]
    w = adversary_weights(apply(adversary_params, batch))
    return jnp.sum(w * loss_u) - 0.5 * B * l2_norm_sq(adversary_params)


class Model(NamedTuple):
    """What makes a model: the adversary, the objective it ascends, and the learner.

    The learner comes last (and defaults to the paper's dense W) so that
    `Model(adversary, objective)` keeps meaning the paper's learner.
    """

    adversary: Adversary
    objective: Callable[..., jax.Array]
    learner: Learner = DENSE_LEARNER


def make_model(name: str, learner: Learner = DENSE_LEARNER) -> Model:
    """The paper's model `name` ("arm", "rlarm", "rlarm_nn") with `learner`, from the
    model registry (`configs.REGISTRY`)."""
    from arm_jax.configs import REGISTRY  # the registry is built from this module

    spec = REGISTRY.get(name)
    if spec is None or spec.kind != "adversarial":
        names = [n for n, s in REGISTRY.items() if s.kind == "adversarial"]
        raise ConfigError(f"unknown adversarial model {name!r}; expected {', '.join(names)}")
    if spec.adversary is None:  # e.g. group DRO: its adversary is built from the data
        raise ConfigError(f"{name}'s adversary is built from the split; see its module")
    return Model(spec.adversary, spec.objective, learner)


def adversary_scores(
    apply: Callable[[Params, SparseBatch], jax.Array],
    adversary_params: Params,
    x: sp.csr_matrix,
    *,
    chunk_size: int = 4096,
) -> np.ndarray:
    """Raw adversary score `s_u` of every row of `x`; `[m]` NumPy array."""
    m = x.shape[0]
    if m == 0:
        return np.zeros(0, np.float32)
    chunk = min(chunk_size, m)
    cap = max(int(np.max(np.add.reduceat(np.diff(x.indptr), np.arange(0, m, chunk)))), 1)
    # Row m is empty: it pads the last chunk so one compiled program serves every chunk.
    padded_x = sp.vstack([x, sp.csr_matrix((1, x.shape[1]), dtype=x.dtype)], format="csr")
    fn = jax.jit(apply)
    out = []
    for start in range(0, m, chunk):
        users = np.arange(start, min(start + chunk, m))
        users = np.concatenate([users, np.full(chunk - len(users), m)])
        batch = make_batch(padded_x, users, cap)
        out.append(np.asarray(fn(adversary_params, batch))[: min(chunk, m - start)])
    return np.concatenate(out)
