"""Item-level and user–item adversaries (the paper's §6 directions) for `gda_step`.

The paper's adversary weights users; its eq. 5 form weights every (user, item) entry of
the loss, `σ([g(X; A)]_ui) / z`. Two adversaries here weight items and entries instead,
in the same `adversarial.Model(adversary, objective, learner)` seam: `apply` returns
`[1, n]` (item) or `[b, n]` (entry) raw scores, `adversarial.adversary_weights`
normalises them over all their entries, and the learner descends

    L(W, A) = n Σ_u Σ_i ω_ui (x_ui − x_u W̃_:i)² + (C/2)‖W̃‖²,

ω_ui = w_i / b for item weights w_i = σ(t_i) / Σ_j σ(t_j) (over the catalogue), ω_ui =
σ(s_u + t_i) / Σ_{v ∈ batch, j} σ(s_v + t_j) for entry weights
(`learners.unit_squared_errors`; uniform weights give the paper's learner loss).

- `ITEM_ADVERSARY`: a free logit t_i per item, `{"t": [n]}`, zeros at the start. Free
  logits, not item features: an item's weight may then follow its own loss alone, and
  its learned t_i says directly which items the adversary found hard (the AUC of t for
  the planted niche items of `synthetic`, `analysis.item_auc`); features of the Gram
  matrix would tie an item's weight to its co-occurrences, which the learner already
  models.
- `USER_ITEM_ADVERSARY`: s_u + t_i with s_u = x_u a (ARM's linear user score) and a free
  t_i, `{"a": [n, 1], "t": [n]}` (a Glorot-normal as ARM's, t zeros).

Objectives, each minus (B/2)‖A‖² (the adversary ascends them):
- `entry_arm_objective` (ARM-style): the learner's data loss above, the same squared
  errors; for user weights it is ARM's objective.
- `item_rank_objective` (rank-style, items): n Σ_{i ∈ I_b} w̃_i (1 − hit_i), hit_i the
  share of the batch users holding i who get i in their top 100 (ranking all items by
  x_u W̃), I_b the items some batch user holds, w̃_i = σ(t_i) / Σ_{j ∈ I_b} σ(t_j): the
  weights over the items whose hit rate the batch measures (an absent item's logit is
  not pushed down for being absent).
- `entry_rank_objective` (rank-style, entries): n Σ_{(u,i): x_ui = 1} w̃_ui (1 − hit_ui),
  hit_ui = 1[i is in u's top 100], w̃_ui = σ(s_u + t_i) over the batch's nonzeros.
The factor n is R-LARM's (the authors' code's), so B has the same scale.
"""

import jax
import jax.numpy as jnp

from arm_jax.adversarial import Adversary, adversary_weights, nonzero_ranks
from arm_jax.learner_interface import l2_norm_sq, unit_squared_errors
from arm_jax.products import SparseBatch, add_batch, sparse_matmul


# ------------------------------------------------------------------------ adversaries
def _item_init(key, n_items, config=None):
    del key, config  # uniform weights at the start, as EASE's
    return {"t": jnp.zeros((n_items,), jnp.float32)}


def _item_apply(params, batch: SparseBatch) -> jax.Array:
    del batch  # the same item scores for every batch
    return params["t"][None, :]


def _item_logits(params) -> jax.Array:
    return params["t"]


def _user_item_init(key, n_items, config=None):
    a = jax.nn.initializers.glorot_normal()(key, (n_items, 1), jnp.float32)
    return {"a": a, "t": jnp.zeros((n_items,), jnp.float32)}


def _user_part(params, batch: SparseBatch) -> jax.Array:
    return sparse_matmul(batch, params["a"])[:, 0]


def _user_item_apply(params, batch: SparseBatch) -> jax.Array:
    return _user_part(params, batch)[:, None] + params["t"][None, :]


ITEM_ADVERSARY = Adversary(_item_init, _item_apply, item_scores=_item_logits)
"""A free logit per item, `{"t": [n]}`; `apply -> [1, n]`."""
USER_ITEM_ADVERSARY = Adversary(
    _user_item_init, _user_item_apply, user_scores=_user_part, item_scores=_item_logits
)
"""s_u + t_i, s_u = x_u a; `{"a": [n, 1], "t": [n]}`; `apply -> [b, n]`."""


# ------------------------------------------------------------------------- objectives
def entry_arm_objective(adversary_params, apply, batch, x, scores, *, B):
    """n Σ_ui ω_ui (x_ui − x̂_ui)² − (B/2)‖A‖² (module docstring); arguments as in
    `adversarial.arm_objective` (`scores` constant, `x` not read)."""
    del x
    squares = jax.lax.stop_gradient(jnp.square(add_batch(-scores, batch)))
    w = adversary_weights(apply(adversary_params, batch))
    loss = jnp.sum(w * unit_squared_errors(squares, w))
    return loss - 0.5 * B * l2_norm_sq(adversary_params)


def _hits(scores, batch, k):
    """(hit [nnz_pad] float, rows, cols, rel) of each nonzero: 1 if in its user's top k."""
    rank, rows, cols, rel = nonzero_ranks(scores, batch)
    return jnp.where(rel & (rank < k), 1.0, 0.0), rows, cols, rel


def item_hit_rate(
    scores: jax.Array, batch: SparseBatch, *, k: int = 100
) -> tuple[jax.Array, jax.Array]:
    """Each item's hit rate@k among the batch users holding it.

    Args:
      scores: `[b, n]` the learner's scores; batch: the users' rows.
      k: cut-off.

    Returns:
      (hit rate `[n]`, holders `[n]`): the share of the users holding item i whose top
      k (all items ranked by their scores) contains i, 0 where no user holds it; and
      how many hold it. Gradients stopped.
    """
    hit, _, cols, rel = _hits(scores, batch, k)
    n = scores.shape[1]
    hits = jax.ops.segment_sum(hit, cols, num_segments=n)
    holders = jax.ops.segment_sum(rel.astype(hits.dtype), cols, num_segments=n)
    return hits / jnp.maximum(holders, 1.0), holders


def _normalised(logits, mask):
    sig = jnp.where(mask, jax.nn.sigmoid(logits), 0.0)
    return sig / jnp.maximum(jnp.sum(sig), 1e-30)  # no entry: all weights 0, not NaN


def item_rank_objective(adversary_params, apply, batch, x, scores, *, B, k=100):
    """n Σ_{i ∈ I_b} w̃_i (1 − hit_i@k) − (B/2)‖A‖² (module docstring), for an adversary
    whose `apply` gives `[1, n]` item scores."""
    rate, holders = item_hit_rate(scores, batch, k=k)
    w = _normalised(apply(adversary_params, batch)[0], holders > 0)
    loss = jnp.sum(w * (1.0 - rate)) * x.shape[-1]
    return loss - 0.5 * B * l2_norm_sq(adversary_params)


def entry_rank_objective(adversary_params, apply, batch, x, scores, *, B, k=100):
    """n Σ_{x_ui = 1} w̃_ui (1 − hit_ui@k) − (B/2)‖A‖² (module docstring)."""
    hit, rows, cols, rel = _hits(scores, batch, k)
    shape = (batch.n_users, x.shape[-1])
    logits = jnp.broadcast_to(apply(adversary_params, batch), shape)[rows, cols]  # [nnz_pad]
    w = _normalised(logits, rel)
    loss = jnp.sum(w * (1.0 - hit)) * x.shape[-1]
    return loss - 0.5 * B * l2_norm_sq(adversary_params)
