"""Adversarial recommender models on EASE: ARM (eq. 9), R-LARM (eq. 10), R-LARM(NN) (eq. 12).

A model is a learner `W: [n, n]` (diagonal held at 0), an adversary given as a pair of
pure functions `(init, apply)` whose `apply(params, batch) -> [b]` gives one raw score
`s_u` per user, and an adversary objective that the adversary ascends. The learner always
descends the weighted EASE loss (eq. 6)

    L(W, A) = Σ_u w_u ‖x_u − x_u W‖² + (C/2) ‖W‖²,   w_u = σ(s_u) / Σ_batch σ(s_v),

with the normalisation per mini-batch as in the paper's §5.1. ARM's adversary ascends the
same weighted loss; R-LARM's ascends the rank objective Σ_u w_u (1 − NDCG@100_u) · n (the
factor n is the authors' code's), both minus (B/2)‖A‖².

Which model runs is only a matter of which `Adversary` and which objective `gda_step` is
given (`make_model` maps the paper's names); a researcher passes their own the same way.

The product `x_u W` (sparse scan or dense matmul) lives in `arm_jax.products`.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

from arm_jax.errors import ConfigError
from arm_jax.metrics import ndcg_at_k
from arm_jax.products import (
    SparseBatch,
    batch_product,
    densify,
    make_batch,
    resolve_product,
    scatter_rows_add,
    sparse_matmul,
    zero_rows,
)

Params = Any


# ------------------------------------------------------------------------- learner
def init_learner(key: jax.Array, n_items: int, *, dtype=jnp.float32) -> Params:
    """Glorot-normal `W: [n, n]` with a zero diagonal, as `{"W": W}`."""
    w = jax.nn.initializers.glorot_normal()(key, (n_items, n_items), dtype)
    return {"W": _zero_diagonal(w)}


def _zero_diagonal(w: jax.Array) -> jax.Array:
    idx = jnp.arange(w.shape[0])
    return w.at[idx, idx].set(0.0)


def learner_matrix(params: Params) -> jax.Array:
    """The learner's `W: [n, n]` with the diagonal masked to 0 (what predicts `x W`)."""
    return _zero_diagonal(params["W"])


def learner_loss(
    params: Params,
    batch: SparseBatch,
    x: jax.Array,
    weights: jax.Array,
    *,
    C: float,
    product: str,
) -> tuple[jax.Array, jax.Array]:
    """The weighted EASE loss Σ_u w_u ‖x_u − x_u W̃‖² + (C/2)‖W̃‖² (eq. 6 and 9).

    Args:
      params: `{"W": [n, n]}`.
      batch, x: the users' rows, sparse and dense `[b, n]`.
      weights: `[b]` user weights (sum to 1 for the paper's models).
      C: L2 weight of W.
      product: "dense" or "sparse".

    Returns:
      (loss scalar, per-user squared errors `[b]`).
    """
    w = params["W"]
    per_user = jnp.sum(jnp.square(x - batch_product(w, batch, x, product=product)), axis=-1)
    reg = jnp.sum(jnp.square(w)) - jnp.sum(jnp.square(jnp.diagonal(w)))
    return jnp.sum(weights * per_user) + 0.5 * C * reg, per_user


# ------------------------------------------------------------------------ adversary
class Adversary(NamedTuple):
    """An adversary: `init(key, n_items, config) -> params`, `apply(params, batch) -> [b]`.

    `apply` returns raw scores `s_u` (before the sigmoid) for the batch's users.
    """

    init: Callable[[jax.Array, int, Any], Params]
    apply: Callable[[Params, SparseBatch], jax.Array]


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
    """Per-batch normalised weights `σ(s_u) / Σ_v σ(s_v)`; `[b] -> [b]`, sum 1."""
    sig = jax.nn.sigmoid(scores)
    return sig / jnp.sum(sig)


def l2_norm_sq(params: Params) -> jax.Array:
    """Σ of squares over every leaf of a pytree."""
    return sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))


def arm_objective(adversary_params, apply, batch, x, scores, *, B):
    """ARM's adversary objective (eq. 9): Σ_u w_u ‖x_u − x_u W‖² − (B/2)‖A‖².

    Args:
      adversary_params: the adversary's parameters (differentiated).
      apply: the adversary's apply function.
      batch: the users' rows, sparse.
      x: `[b, n]` the same rows, dense.
      scores: `[b, n]` predictions `x_u W` of the (updated) learner; treated as constant.
      B: adversary L2 weight.
    """
    loss_u = jax.lax.stop_gradient(jnp.sum(jnp.square(x - scores), axis=-1))
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


def rank_loss_sparse(scores: jax.Array, batch: SparseBatch, *, k: int = 100) -> jax.Array:
    """`rank_loss(scores, densify(batch))` from the ranks of each user's own items.

    NDCG@k with binary relevance needs only the rank of each relevant item, rank_i =
    #{j: s_j > s_i} + #{j < i: s_j = s_i} (the tie order of `lax.top_k`): a count over
    `[nnz, n]` comparisons, which is several times cheaper than a top-k over `[b, n]`
    on a CPU and gives the same numbers.

    Args:
      scores: `[b, n]` predictions; batch: the users' rows (values > 0 are relevant).
      k: cut-off.

    Returns:
      `[b]` 1 − NDCG@k, 1 for a user with no items; gradient stopped.
    """
    scores = jax.lax.stop_gradient(scores)
    chunk = min(512, batch.rows.shape[0])
    pad = -batch.rows.shape[0] % chunk
    rows, cols = jnp.pad(batch.rows, (0, pad)), jnp.pad(batch.cols, (0, pad))
    rel = jnp.pad(batch.vals > 0, (0, pad))
    item = jnp.arange(scores.shape[1])

    def ranks(entries):
        r, c = entries
        row = scores[r]  # [chunk, n]
        mine = jnp.take_along_axis(row, c[:, None], axis=1)
        ahead = (row > mine) | ((row == mine) & (item[None, :] < c[:, None]))
        return jnp.sum(ahead, axis=1)

    rank = jax.lax.map(ranks, (rows.reshape(-1, chunk), cols.reshape(-1, chunk))).reshape(-1)
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
    """Which adversary and which adversary objective make a model."""

    adversary: Adversary
    objective: Callable[..., jax.Array]


MODELS: dict[str, Model] = {
    "arm": Model(LINEAR_ADVERSARY, arm_objective),
    "rlarm": Model(LINEAR_ADVERSARY, rank_objective),
    "rlarm_nn": Model(NN_ADVERSARY, rank_objective),
}


def make_model(name: str) -> Model:
    """The paper's model `name` ("arm", "rlarm", "rlarm_nn") as (adversary, objective)."""
    if name not in MODELS:
        raise ConfigError(f"unknown adversarial model {name!r}; expected {', '.join(MODELS)}")
    return MODELS[name]


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


# ------------------------------------------------------------------- descent–ascent
@flax.struct.dataclass
class TrainState:
    """Learner and adversary parameters, their Adam states and the step count.

    Attributes:
      params: learner `{"W": [n, n]}`.
      adversary_params: the adversary's parameters.
      opt_state, adversary_opt_state: optax states of the two optimizers.
      step: int32 scalar, steps taken so far.
      grad_buffer: `[n, n]` zeros between steps, or None. With the sparse product the
        data gradient is scattered into it in place and cleared after Adam reads it:
        a persistent, donated buffer instead of a fresh n×n temporary every step
        (on a CPU a fresh 2.5 GB buffer costs ≈0.6 s of page faults per step at n≈25k).
      optimizer, adversary_optimizer: optax transformations (static).
    """

    params: Params
    adversary_params: Params
    opt_state: optax.OptState
    adversary_opt_state: optax.OptState
    step: jax.Array
    grad_buffer: jax.Array | None
    optimizer: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    adversary_optimizer: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def init_state(
    key: jax.Array,
    n_items: int,
    *,
    adversary: Adversary,
    config,
    W0: jax.Array | None = None,
    dtype=jnp.float32,
    product: str | None = None,
) -> TrainState:
    """A fresh `TrainState`: Glorot-normal W (or `W0`, e.g. EASE) and adversary.

    Args:
      key: PRNG key of the initialisation.
      n_items: n.
      adversary: the adversary's (init, apply).
      config: a `ModelConfig` (learning_rate, adam_eps, hidden_dim are read).
      W0: `[n, n]` starting learner (its diagonal is zeroed), or None.
      dtype: dtype of W.
      product: the product the steps will use (default `config.product`); "sparse"
        allocates `grad_buffer`.
    """
    k_w, k_a = jax.random.split(key)
    if W0 is None:
        params = jax.jit(init_learner, static_argnums=(1,), static_argnames="dtype")(
            k_w, n_items, dtype=dtype
        )
    else:
        params = {"W": _zero_diagonal(jnp.asarray(W0, dtype))}
    adversary_params = adversary.init(k_a, n_items, config)
    optimizer = optax.adam(config.learning_rate, eps=config.adam_eps)
    adversary_optimizer = optax.adam(config.learning_rate, eps=config.adam_eps)
    return TrainState(
        params=params,
        adversary_params=adversary_params,
        opt_state=jax.jit(optimizer.init)(params),
        adversary_opt_state=adversary_optimizer.init(adversary_params),
        step=jnp.zeros((), jnp.int32),
        grad_buffer=(
            jnp.zeros((n_items, n_items), dtype)
            if resolve_product(product or config.product) == "sparse"
            else None
        ),
        optimizer=optimizer,
        adversary_optimizer=adversary_optimizer,
    )


def _weight_stats(w: jax.Array) -> dict[str, jax.Array]:
    entropy = -jnp.sum(w * jnp.log(jnp.maximum(w, 1e-30)))
    return {
        "weight_min": jnp.min(w),
        "weight_max": jnp.max(w),
        "weight_entropy": entropy,
        "weight_ess": 1.0 / jnp.sum(jnp.square(w)),  # effective sample size, b when uniform
    }


def gda_step(
    state: TrainState,
    batch: SparseBatch,
    key: jax.Array,
    *,
    model: Model,
    C: float,
    B: float,
    product: str,
    warmup_steps: int,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One descent–ascent step (Algorithms 1–2 with the paper's step order).

    One Adam descent step on W with the weighted learner loss; then, once
    `state.step >= warmup_steps` (a traced check: no retrace when the adversary starts),
    one Adam ascent step on the adversary's objective, computed with the updated W.
    Jit this function (with the keyword options bound) with `donate_argnums=0`.

    Args:
      state: the train state (donated).
      batch: the mini-batch's users' rows.
      key: this step's PRNG key (the paper's models are deterministic given the batch;
        it is there for adversaries or objectives that sample).
      model: (adversary, objective).
      C, B: learner and adversary L2 weights.
      product: "dense" or "sparse" (see `resolve_product`).
      warmup_steps: learner-only steps before the adversary moves (K epochs).

    Returns:
      (new state, metrics dict of scalars: learner_loss, adversary_objective,
      adversary_active, weight_min/max/entropy/ess).
    """
    del key
    apply = model.adversary.apply
    x = densify(batch, state.params["W"].dtype)
    weights = adversary_weights(apply(state.adversary_params, batch))
    buffer = state.grad_buffer
    if product == "sparse" and buffer is not None:
        loss, params, opt_state, buffer = _sparse_learner_update(state, batch, x, weights, C)
    else:
        (loss, _), grads = jax.value_and_grad(learner_loss, has_aux=True)(
            state.params, batch, x, weights, C=C, product=product
        )
        grads = {**grads, "W": _zero_diagonal(grads["W"])}  # W's diagonal never moves
        updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

    def ascend(operand):
        adv_params, adv_opt_state = operand
        scores = jax.lax.stop_gradient(batch_product(params["W"], batch, x, product=product))
        value, g = jax.value_and_grad(model.objective)(adv_params, apply, batch, x, scores, B=B)
        neg = jax.tree_util.tree_map(jnp.negative, g)  # ascend
        adv_updates, adv_opt_state = state.adversary_optimizer.update(
            neg, adv_opt_state, adv_params
        )
        return optax.apply_updates(adv_params, adv_updates), adv_opt_state, value

    def hold(operand):
        return *operand, jnp.zeros((), loss.dtype)

    active = state.step >= warmup_steps
    adv_params, adv_opt_state, objective = jax.lax.cond(
        active, ascend, hold, (state.adversary_params, state.adversary_opt_state)
    )
    new_state = state.replace(
        params=params,
        adversary_params=adv_params,
        opt_state=opt_state,
        adversary_opt_state=adv_opt_state,
        step=state.step + 1,
        grad_buffer=buffer,
    )
    metrics = {
        "learner_loss": loss,
        "adversary_objective": objective,
        "adversary_active": active.astype(loss.dtype),
        **_weight_stats(weights),
    }
    return new_state, metrics


def _sparse_learner_update(state, batch, x, weights, C):
    """The learner's Adam step with the data gradient scattered into `grad_buffer`.

    Same numbers as differentiating `learner_loss`, with no n×n temporary: the data
    gradient −2 Σ_u w_u x_uᵀ r_u goes into the batch's items' rows of the (zero) buffer,
    the regulariser's C·W is added inside Adam's elementwise pass, and the rows are
    cleared afterwards. W's diagonal is 0 at init and gets a zero gradient, so it stays 0.
    """
    W = state.params["W"]
    residual = x - batch_product(W, batch, x, product="sparse")
    per_user = jnp.sum(jnp.square(residual), axis=-1)
    reg = jnp.sum(jnp.square(W)) - jnp.sum(jnp.square(jnp.diagonal(W)))
    loss = jnp.sum(weights * per_user) + 0.5 * C * reg
    buffer = scatter_rows_add(state.grad_buffer, batch, -2.0 * weights[:, None] * residual)
    buffer = _zero_diagonal(buffer)
    grads = {"W": buffer + C * W}
    updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # Clear the rows only once Adam has read them.
    params, opt_state, buffer = jax.lax.optimization_barrier((params, opt_state, buffer))
    return loss, params, opt_state, zero_rows(buffer, batch)


def make_step(model: Model, config, *, warmup_steps: int, product: str | None = None):
    """`gda_step` with the model and hyperparameters bound, jitted, state donated."""
    step = functools.partial(
        gda_step,
        model=model,
        C=config.C,
        B=config.B,
        product=resolve_product(product or config.product),
        warmup_steps=warmup_steps,
    )
    return jax.jit(step, donate_argnums=0)
