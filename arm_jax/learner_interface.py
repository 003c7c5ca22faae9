"""The learner interface: what the descent–ascent step knows of the model it trains.

A `Learner` is how to start its parameters, its scores `x_u W̃` for a batch (what the
adversary's objective reads), and its loss Σ_u w_u ‖x_u − x_u W̃‖² + (C/2)‖W̃‖² (what the
step differentiates). W̃ is an item–item matrix with its diagonal removed (a user's own
items never predict themselves). The learners themselves are in `arm_jax.learners` (the
dense W̃, EDLAE's) and `arm_jax.low_rank`.

The weights are per user (`[b]`, the paper's), per item (`[1, n]`) or per user–item
entry (`[b, n]`), summing to 1 (`unit_squared_errors`); the item and user–item
adversaries (`arm_jax.item_adversaries`) give the last two.

A learner of one's own is a `Learner` of functions with the same signatures.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Params = Any


class Learner(NamedTuple):
    """A learner as pure functions (the step and the loop know only these).

    Attributes:
      init: `init(key, n_items, config, *, dtype, x=None) -> params`; `x` is the
        `[m, n]` CSR training matrix to warm-start from (given when `config.warm_start`),
        or None for a random start.
      scores: `scores(params, batch, x, *, product) -> [b, n]` predictions `x_u W̃`;
        `x` is the batch dense `[b, n]` (a learner may use the sparse `batch` instead).
      loss: `loss(params, batch, x, weights, *, C, product) -> (loss, per_unit)`:
        Σ_u w_u ‖x_u − x_u W̃‖² + (C/2)·penalty, and the squared errors per unit of the
        weights (`unit_squared_errors`: per user `[b]` for the paper's weights).
      penalty: `penalty(params) -> ‖W̃‖²` (the loop adds (C/2)· it to the epoch's loss).
      export: `export(params) -> model`: what evaluation scores with and
        `TrainResult.learner` holds.
      predictor: `predictor(product) -> predict(model, x: [users, n]) -> [users, n]`, a
        module-level function (`metrics.evaluate` compiles once per function).
      update: optional fused descent step `update(params, opt_state, scratch, batch, x,
        weights, *, optimizer, C, product) -> (data loss, params, opt_state, scratch)`
        for a learner with a faster path than differentiating `loss`; `x` is None on
        the sparse product (build it from `batch` if needed).
      scratch: optional `scratch(params, product) -> pytree or None`, persistent
        per-step scratch of `update` kept (and donated) in the train state.
    """

    init: Callable[..., Params]
    scores: Callable[..., jax.Array]
    loss: Callable[..., tuple[jax.Array, jax.Array]]
    penalty: Callable[[Params], jax.Array]
    export: Callable[[Params], Any]
    predictor: Callable[[str], Callable[[Any, jax.Array], jax.Array]]
    update: Callable[..., tuple] | None = None
    scratch: Callable[[Params, str], Any] | None = None


def l2_norm_sq(params: Params) -> jax.Array:
    """Σ of squares over every leaf of a pytree."""
    return sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))


def unit_squared_errors(squares: jax.Array, weights: jax.Array) -> jax.Array:
    """Per-entry squared errors summed to the units of user, item or entry weights.

    The data loss is Σ weights ⊙ unit_squared_errors(squares, weights), with weights
    summing to 1: `[b]` per user (the paper's), Σ_u w_u Σ_i s_ui; `[1, n]` per item or
    `[b, n]` per entry, n Σ_ui ω_ui s_ui with ω_ui = w_i / b or w_ui (the weights spread
    over the batch's b·n entries, the paper's eq. 5 normalisation, times n as for
    users). Uniform weights give the same (1/b) Σ_ui s_ui in all three.

    Args:
      squares: `[b, n]` squared errors s_ui = (x_ui − x̂_ui)².
      weights: `[b]`, `[1, n]` or `[b, n]`.

    Returns:
      The weights' shape: per-user sums `[b]`, (n/b) Σ_u s_ui `[1, n]`, or n·s `[b, n]`.
    """
    if weights.ndim == 1:
        return jnp.sum(squares, axis=-1)
    # [1, n] (items) or [b, n] (entries): the same for b = 1
    per_unit = squares if weights.shape[0] > 1 else jnp.sum(squares, 0, keepdims=True)
    return per_unit * (weights.size / squares.shape[0])
