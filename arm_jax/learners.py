"""Learners: the part of an adversarial model that recommends, as pure functions.

A learner is a `Learner` (`arm_jax.learner_interface`, re-exported here with
`unit_squared_errors` and `l2_norm_sq`): how to start its parameters, its scores `x_u W̃`
and its weighted loss Σ_u w_u ‖x_u − x_u W̃‖² + (C/2)‖W̃‖². This module holds the dense
ones, the registry `--learner` names and the files of a trained one:

- `DENSE_LEARNER`: W̃ a dense `[n, n]` matrix with a zero diagonal (the paper's); its
  fused `update` on the sparse CPU path of `products` keeps an `[n, n]` gradient buffer
  up to `BUFFER_MAX_ITEMS` items and above them holds W and its two Adam moments only
  (`_sparse_update`), the same numbers either way.
- `LOW_RANK_LEARNER` (`arm_jax.low_rank`, re-exported): W̃ = P Qᵀ − diag(P Qᵀ),
  `P, Q: [n, r]` (ELSA-style): memory linear in n, never an n×n array.
- `edlae_learner(p)`: the dense W̃ descending EDLAE's loss (Steck 2020), the squared error
  in expectation over dropout of the inputs with probability p (docs/models.md).
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from arm_jax import io
from arm_jax.closed_form import fit_edlae
from arm_jax.ease import fit_ease, predict
from arm_jax.ease import save_model as ease_save_model
from arm_jax.errors import ConfigError
from arm_jax.learner_interface import (  # noqa: F401 (the interface, re-exported)
    Learner,
    Params,
    l2_norm_sq,
    unit_squared_errors,
)
from arm_jax.low_rank import (  # noqa: F401 (the low-rank learner, re-exported)
    LOW_RANK_LEARNER,
    low_rank_predict,
)
from arm_jax.products import (
    SparseBatch,
    batch_product,
    densify,
    entries_by_item,
    predict_sparse,
    resolve_product,
    scatter_rows,
    sparse_residual,
)


def _diagonal(shape) -> jax.Array:
    """`[n, n]` bool, True on the diagonal (an iota compare, fused into its consumer)."""
    return jax.lax.broadcasted_iota(jnp.int32, shape, 0) == jax.lax.broadcasted_iota(
        jnp.int32, shape, 1
    )


# ---------------------------------------------------------------------- dense W
def init_learner(key: jax.Array, n_items: int, *, dtype=jnp.float32) -> Params:
    """Glorot-normal `W: [n, n]` with a zero diagonal, as `{"W": W}`."""
    w = jax.nn.initializers.glorot_normal()(key, (n_items, n_items), dtype)
    return {"W": zero_diagonal(w)}


def zero_diagonal(w: jax.Array) -> jax.Array:
    """`w` with its diagonal set to 0 (in place when `w` is not used elsewhere)."""
    idx = jnp.arange(w.shape[0])
    return w.at[idx, idx].set(0.0)


def learner_matrix(params: Params) -> jax.Array:
    """The dense learner's `W: [n, n]` from its params `{"W": W}`, diagonal masked to 0
    (what predicts `x W`)."""
    return zero_diagonal(params["W"])


def learner_loss(
    params: Params,
    batch: SparseBatch,
    x: jax.Array,
    weights: jax.Array,
    *,
    C: float,
    product: str,
    zero_diagonal: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """The weighted EASE loss Σ_u w_u ‖x_u − x_u W̃‖² + (C/2)‖W̃‖² (eq. 6 and 9).

    Args:
      params: `{"W": [n, n]}`.
      batch, x: the users' rows, sparse and dense `[b, n]`.
      weights: `[b]` user weights (sum to 1 for the paper's models), or `[1, n]` item
        or `[b, n]` entry weights (`unit_squared_errors`).
      C: L2 weight of W.
      product: "dense", "sparse" or "segment".
      zero_diagonal: promise that W's diagonal is already 0 (a `TrainState`'s W always
        is): no mask, so the gradient is a product plus C·W with no diagonal scatter.
        Its diagonal is then the unmasked one: mask it before a step.

    Returns:
      (loss scalar, squared errors per unit of the weights, per user `[b]` for `[b]`).
    """
    w = params["W"]
    xw = batch_product(w, batch, x, product=product, zero_diagonal=zero_diagonal)
    per_unit = unit_squared_errors(jnp.square(x - xw), weights)
    reg = jnp.sum(jnp.square(w))
    if not zero_diagonal:
        reg = reg - jnp.sum(jnp.square(jnp.diagonal(w)))
    return jnp.sum(weights * per_unit) + 0.5 * C * reg, per_unit


def _dense_init(key, n_items, config, *, dtype=jnp.float32, x=None):
    if x is not None:  # C/2: the stationary point of the loss with uniform weights
        # The scatter also copies W into a buffer JAX owns: on the CPU fit_ease's W
        # aliases a NumPy one, which a donating step would not reuse (a second W).
        return {"W": zero_diagonal(fit_ease(x, C=config.C / 2, dtype=dtype))}
    init = jax.jit(init_learner, static_argnums=(1,), static_argnames="dtype")
    return init(key, n_items, dtype=dtype)


def _dense_scores(params, batch, x, *, product):
    # A state's W has a zero diagonal (init and every update keep it): no mask.
    return batch_product(params["W"], batch, x, product=product, zero_diagonal=True)


def _dense_loss(params, batch, x, weights, *, C, product):
    return learner_loss(params, batch, x, weights, C=C, product=product)


def _dense_update(params, opt_state, scratch, batch, x, weights, *, optimizer, C, product):
    """The dense learner's Adam step: `_sparse_update` on the sparse product, else autodiff."""
    if product == "sparse" and scratch is not None:
        return _buffered_update(params, opt_state, scratch, batch, weights, optimizer, C)
    if product == "sparse":
        return (*_sparse_update(params, opt_state, batch, weights, optimizer, C), scratch)
    x = densify(batch, params["W"].dtype) if x is None else x
    (_, per_user), grads = jax.value_and_grad(learner_loss, has_aux=True)(
        params, batch, x, weights, C=C, product=product, zero_diagonal=True
    )
    # W's diagonal never moves: its gradient is masked in Adam's elementwise pass (a
    # scatter there would make the n×n gradient a separate array, written and read).
    grads = {**grads, "W": jnp.where(_diagonal(grads["W"].shape), 0.0, grads["W"])}
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return jnp.sum(weights * per_user), optax.apply_updates(params, updates), opt_state, scratch


def _buffered_update(params, opt_state, buffer, batch, weights, optimizer, C):
    """`_sparse_update` with the data gradient scattered into `buffer` (`[n, n]`
    scratch, never cleared; rows outside the batch's items are masked) and C·W and the
    diagonal mask applied inside Adam's elementwise pass over all of W: the same
    numbers, about 30% less CPU a step, one more `[n, n]` array held."""
    W = params["W"]
    residual = sparse_residual(W, batch)
    if weights.ndim == 1:
        loss = jnp.sum(weights * jnp.sum(jnp.square(residual), axis=-1))
        buffer, touched = scatter_rows(buffer, batch, residual, scale=-2.0 * weights)
    else:  # item or entry weights: the data gradient is −2 Xᵀ(c·ω ⊙ R)
        loss = jnp.sum(weights * unit_squared_errors(jnp.square(residual), weights))
        scaled = residual * weights * (-2.0 * weights.size / residual.shape[0])
        buffer, touched = scatter_rows(buffer, batch, scaled)
    diagonal = _diagonal(W.shape)
    data = touched[:, None] & ~diagonal
    grads = {"W": jnp.where(data, buffer, 0.0) + C * W}
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    params = {**params, "W": jnp.where(diagonal, 0.0, params["W"])}
    return loss, params, opt_state, buffer


BUFFER_MAX_ITEMS = 32_768
"""Up to this many items the dense learner's sparse step keeps an `[n, n]` gradient
buffer (`_buffered_update`, 4 GiB at the bound); above it, none (`_sparse_update`):
W and two moments only, so 41k items (gowalla) fit in 24 GiB (docs/performance.md)."""


def _dense_scratch(params, product):
    w = params["W"]
    buffered = resolve_product(product) == "sparse" and w.shape[0] <= BUFFER_MAX_ITEMS
    return jnp.zeros(w.shape, w.dtype) if buffered else None


_BLOCK_ELEMENTS = 2**20
"""Elements of W per block of `_sparse_update`'s pass (4 MiB of float32 per array)."""


def _sparse_update(params, opt_state, batch, weights, optimizer, C):
    """The Adam step of differentiating `learner_loss`, with no `[n, n]` gradient.

    One pass over W and its moments, a block of rows at a time (in place: the step
    donates them): each block's gradient is C·W plus the data gradient
    −2 Σ_u w_u x_uᵀ r_u, whose nonzero rows are the batch's items (summed from the
    batch's entries sorted by item), the diagonal masked. The residual `[b, n]` and a
    block are the step's temporaries. The optimizer must be elementwise (Adam is).
    Returns (data loss, params, opt_state).
    """
    W = params["W"]
    n = W.shape[0]
    residual = sparse_residual(W, batch)
    loss = jnp.sum(weights * jnp.sum(jnp.square(residual), axis=-1))
    rows, items, vals = entries_by_item(batch, W.dtype)
    vals = vals * (-2.0 * weights).astype(W.dtype)[rows]
    step = functools.partial(_step_rows, (residual, rows, items, vals), optimizer, C)
    size = max(1, min(n, _BLOCK_ELEMENTS // n))
    blocks = n // size
    W_new, state = jax.lax.fori_loop(
        0, blocks, lambda i, carry: step(i * size, size, carry), (W, opt_state)
    )
    if n % size:  # the last rows, a block of their own size
        W_new, state = step(blocks * size, n % size, (W_new, state))
    # The optimizer's other leaves (its step count) advance once, as in one update.
    row = {"W": jnp.zeros((1, n), W.dtype)}  # (no read of W or its moments)
    zeros = _on_moments(W.shape, lambda m: jnp.zeros((1, n), m.dtype), opt_state)
    _, counted = optimizer.update(row, zeros, row)
    state = jax.tree_util.tree_map(
        lambda full, once: full if jnp.shape(full) == W.shape else once, state, counted
    )
    return loss, {"W": W_new}, state


def _step_rows(runs, optimizer, C, start, size, carry):
    """Adam's step on rows [start, start + size) of W and of its moments."""
    residual, rows, items, vals = runs
    W, opt_state = carry
    n = W.shape[1]
    lo, hi = jnp.searchsorted(items, jnp.stack([start, start + size]))  # their entries

    def add(e, data):
        at = items[e] - start
        cur = jax.lax.dynamic_slice_in_dim(data, at, 1, 0)
        cur = cur + jax.lax.dynamic_slice_in_dim(residual, rows[e], 1, 0) * vals[e]
        return jax.lax.dynamic_update_slice_in_dim(data, cur, at, 0)

    take = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=start, slice_size=size)

    def adam(with_data, W, opt_state):
        data = jnp.zeros((size, n), W.dtype)
        if with_data:
            data = jax.lax.fori_loop(lo, hi, add, data)
        own = start + jnp.arange(size)[:, None] == jnp.arange(n)[None, :]
        block = take(W)
        grads = {"W": jnp.where(own, 0.0, data) + C * block}
        updates, block_state = optimizer.update(
            grads, _on_moments(W.shape, take, opt_state), {"W": block}
        )
        return jnp.where(own, 0.0, optax.apply_updates({"W": block}, updates)["W"]), block_state

    # A branch (the block has entries or not) reads the whole arrays and returns the new
    # rows as arrays of their own; fused into the writes below, the reads made XLA copy
    # W and both moments.
    block, block_state = jax.lax.cond(
        hi > lo, functools.partial(adam, True), functools.partial(adam, False), W, opt_state
    )
    put = functools.partial(jax.lax.dynamic_update_slice_in_dim, start_index=start, axis=0)
    return put(W, block), _on_moments(W.shape, put, opt_state, block_state)


def _on_moments(shape, fn, tree, *rest):
    """`fn` mapped over the leaves of `tree` (and the same leaves of `rest`) that have
    W's `shape`: Adam's moments of W; the other leaves (counts, scalars) of `tree` kept."""
    return jax.tree_util.tree_map(
        lambda leaf, *more: fn(leaf, *more) if jnp.shape(leaf) == shape else leaf, tree, *rest
    )


def dense_predictor(product: str):
    """`predict(W, x)` for `metrics.evaluate`: `products.predict_sparse` where `product`
    resolves to sparse (CPUs), `ease.predict` (dense) elsewhere."""
    return predict_sparse if resolve_product(product) == "sparse" else predict


def _state_matrix(params: Params) -> jax.Array:
    # A state's W has a zero diagonal (init and every update keep it): the export is W
    # itself, no [n, n] copy (a copy of a 41k-item W is 6.3 GiB).
    return params["W"]


DENSE_LEARNER = Learner(
    init=_dense_init,
    scores=_dense_scores,
    loss=_dense_loss,
    penalty=l2_norm_sq,
    export=_state_matrix,
    scratch=_dense_scratch,
    predictor=dense_predictor,
    update=_dense_update,
)
"""The paper's learner: a dense `W: [n, n]`, `{"W": W}`, diagonal held at 0."""


# ------------------------------------------------------------------------- EDLAE
def _edlae_init(key, n_items, config, *, dtype=jnp.float32, x=None):
    if x is not None:  # C/2, as the dense warm start: the stationary point (docs/models.md)
        w = fit_edlae(x, dropout_p=config.dropout_p, C=config.C / 2, dtype=dtype)
        return {"W": zero_diagonal(w)}
    return _dense_init(key, n_items, config, dtype=dtype)


def _edlae_loss(params, batch, x, weights, *, C, product, dropout_p):
    """EDLAE's weighted loss: the squared error in expectation over input dropout.

    E_δ (x_ui − Σ_j x_uj δ_j W̃_ji / (1 − p))² = (x_ui − x_u W̃_:i)² + q Σ_j x_uj² W̃_ji²,
    q = p/(1−p), δ_j ~ Bernoulli(1 − p); per user the extra term is q Σ_j x_uj² ‖W̃_j,:‖²,
    so Σ_u w_u of it is Σ_j Λ_jj ‖W̃_j,:‖² with Λ_jj = q Σ_u w_u x_uj² (the weighted
    Gram diagonal). Plus (C/2)‖W̃‖².
    """
    w = jnp.where(_diagonal(params["W"].shape), 0.0, params["W"])
    squares = jnp.square(x - batch_product(w, batch, x, product=product, zero_diagonal=True))
    q = dropout_p / (1.0 - dropout_p)
    if weights.ndim == 1:  # per user: row norms of W̃, no [b, n] x [n, n] product
        per_unit = jnp.sum(squares, axis=-1) + q * (jnp.square(x) @ jnp.sum(jnp.square(w), 1))
    else:
        per_unit = unit_squared_errors(squares + q * (jnp.square(x) @ jnp.square(w)), weights)
    return jnp.sum(weights * per_unit) + 0.5 * C * jnp.sum(jnp.square(w)), per_unit


def edlae_learner(dropout_p: float) -> Learner:
    """The dense `{"W": [n, n]}` (diagonal held at 0) descending EDLAE's loss with
    dropout probability `dropout_p` (`_edlae_loss`); its warm start is
    `closed_form.fit_edlae` at C/2, the loss's stationary point with uniform weights."""
    return Learner(
        init=_edlae_init,
        scores=_dense_scores,
        loss=functools.partial(_edlae_loss, dropout_p=float(dropout_p)),
        penalty=l2_norm_sq,
        export=learner_matrix,
        predictor=dense_predictor,
    )


LEARNERS: dict[str, Learner] = {
    "dense": DENSE_LEARNER,
    "low_rank": LOW_RANK_LEARNER,
    "edlae": edlae_learner(0.25),  # `make_learner` builds it with the config's p
}
"""The learners `ModelConfig.learner` (`--learner`) names."""


def make_learner(config) -> Learner:
    """The learner `config.learner` names ("dense", "low_rank", or "edlae" with
    `config.dropout_p`)."""
    name = getattr(config, "learner", "dense")
    return edlae_learner(config.dropout_p) if name == "edlae" else LEARNERS[name]


def check_learner(config, n_items: int) -> None:
    """Raises ConfigError for an unknown learner or a rank outside [1, n_items]."""
    name = getattr(config, "learner", "dense")
    if name not in LEARNERS:
        raise ConfigError(f"--learner must be one of {', '.join(LEARNERS)}, got {name!r}")
    if name == "low_rank" and not 1 <= config.rank <= n_items:
        raise ConfigError(f"--rank must be in [1, {n_items}] (the items), got {config.rank}")


def save_model(path: str, model, **meta) -> None:
    """Writes an exported learner to an `.npz` atomically: a dense `W: [n, n]` as
    `ease.save_model` does, the low-rank `{"P", "Q"}` as its two factors."""
    if isinstance(model, dict):
        io.savez(path, **{k: np.asarray(v) for k, v in {**model, **meta}.items()})
    else:
        ease_save_model(path, model, **meta)


def load_learned(path: str) -> tuple[Any, Callable, dict[str, np.ndarray]]:
    """Reads `save_model`'s file: (model on the device, its `predict(model, x)` for
    `metrics.evaluate`, the other arrays such as `item_ids`)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if "W" in arrays:
        return jnp.asarray(arrays.pop("W")), dense_predictor("auto"), arrays
    factors = {k: jnp.asarray(arrays.pop(k)) for k in ("P", "Q")}
    return factors, low_rank_predict, arrays
