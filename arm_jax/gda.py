"""The descent–ascent step of the adversarial models (Algorithms 1–2) and its state.

`gda_step(state, batch, key) -> (state, metrics)`: one Adam descent step on the learner
W with the adversary-weighted EASE loss, then, once the warm-up steps are done, one Adam
ascent step on the adversary's objective computed with the updated W. The model is
whatever `adversarial.Model` (adversary and objective) is bound in; `make_step` jits it
with the state donated.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import optax

from arm_jax.adversarial import (
    Adversary,
    Model,
    Params,
    adversary_weights,
    init_learner,
    learner_loss,
    zero_diagonal,
)
from arm_jax.products import (
    SparseBatch,
    batch_product,
    densify,
    resolve_product,
    scatter_rows,
    sparse_residual,
)


@flax.struct.dataclass
class TrainState:
    """Learner and adversary parameters, their Adam states and the step count.

    Attributes:
      params: learner `{"W": [n, n]}`.
      adversary_params: the adversary's parameters.
      opt_state, adversary_opt_state: optax states of the two optimizers.
      step: int32 scalar, steps taken so far.
      grad_buffer: `[n, n]` scratch for the sparse product's data gradient, or None.
        Each step writes the batch's items' rows and reads only those
        (`products.scatter_rows`): a persistent, donated buffer instead of a fresh n×n
        temporary every step (on a CPU a fresh 2.5 GB buffer costs ≈0.6 s of page
        faults per step at n≈25k), and never cleared.
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


def keras_adam(learning_rate: float, *, eps: float = 1e-7, b1: float = 0.9, b2: float = 0.999):
    """Adam as the authors' `tf.optimizers.Adam` computes it.

    TensorFlow adds ε to √v before the bias corrections (Kingma & Ba's "ε̂"):
    `θ -= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`. That is optax's Adam with ε/√(1−β₂ᵗ) in
    place of ε, so ε is given as a schedule of the step. The two differ where √v̂ is
    not far above ε: at step 1 TensorFlow's ε counts as 3.2e-6, not 1e-7.
    """

    def eps_hat(count):  # count: updates done so far; this update is step count + 1
        return eps / jnp.sqrt(1.0 - b2 ** (count + 1.0))

    return optax.inject_hyperparams(optax.adam)(
        learning_rate=learning_rate, b1=b1, b2=b2, eps=eps_hat
    )


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
        params = {"W": zero_diagonal(jnp.asarray(W0, dtype))}
    adversary_params = adversary.init(k_a, n_items, config)
    optimizer = keras_adam(config.learning_rate, eps=config.adam_eps)
    adversary_optimizer = keras_adam(config.learning_rate, eps=config.adam_eps)
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
    """One descent–ascent step (Algorithms 1–2, in the order of the authors' code).

    One Adam descent step on W with the weighted learner loss; then (the authors' code's
    order; the paper's algorithm boxes list the adversary's update first), once
    `state.step >= warmup_steps` (a traced check: no retrace when the adversary starts),
    one Adam ascent step on the adversary's objective, computed with the updated W.
    Jit this function (with the keyword options bound) with `donate_argnums=0`.

    Args:
      state: the train state (donated): `W: [n, n]`, the adversary's parameters (e.g.
        `a: [n, 1]`) and both Adam states.
      batch: the mini-batch's b users' rows (`[b, n]` as padded coordinates).
      key: this step's PRNG key (the paper's models are deterministic given the batch;
        it is there for adversaries or objectives that sample).
      model: (adversary, objective).
      C, B: learner and adversary L2 weights.
      product: "dense", "sparse" or "segment" (see `resolve_product`).
      warmup_steps: learner-only steps before the adversary moves (K epochs).

    Returns:
      (new state, metrics dict of scalars: data_loss, adversary_objective,
      adversary_active, weight_min/max/entropy/ess). `data_loss` is the learner loss
      without its regulariser, Σ_u w_u ‖x_u − x_u W‖² at the W the step started from:
      (C/2)‖W‖² is a read of all n² entries, 7% of a CPU step at n ≈ 25k, and its
      gradient C·W needs no value, so `training` adds it once per epoch instead.
    """
    del key
    apply = model.adversary.apply
    dtype = state.params["W"].dtype
    weights = adversary_weights(apply(state.adversary_params, batch))
    buffer = state.grad_buffer
    sparse = product == "sparse" and buffer is not None
    # The sparse path needs no dense x: it is built only for an objective that reads it
    # (the compiler drops it otherwise).
    x = None if sparse else densify(batch, dtype)
    if sparse:
        loss, params, opt_state, buffer = _sparse_learner_update(state, batch, weights, C)
    else:
        (_, per_user), grads = jax.value_and_grad(learner_loss, has_aux=True)(
            state.params, batch, x, weights, C=C, product=product, zero_diagonal=True
        )
        loss = jnp.sum(weights * per_user)
        # W's diagonal never moves: its gradient is masked in Adam's elementwise pass (a
        # scatter there would make the n×n gradient a separate array, written and read).
        grads = {**grads, "W": jnp.where(_diagonal(grads["W"].shape), 0.0, grads["W"])}
        updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

    def ascend(operand):
        adv_params, adv_opt_state = operand
        x_dense = densify(batch, dtype) if x is None else x
        scores = batch_product(params["W"], batch, x_dense, product=product, zero_diagonal=True)
        scores = jax.lax.stop_gradient(scores)
        value, g = jax.value_and_grad(model.objective)(
            adv_params, apply, batch, x_dense, scores, B=B
        )
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
        "data_loss": loss,
        "adversary_objective": objective,
        "adversary_active": active.astype(loss.dtype),
        **_weight_stats(weights),
    }
    return new_state, metrics


def _diagonal(shape) -> jax.Array:
    """`[n, n]` bool, True on the diagonal (an iota compare, fused into its consumer)."""
    return jax.lax.broadcasted_iota(jnp.int32, shape, 0) == jax.lax.broadcasted_iota(
        jnp.int32, shape, 1
    )


def _sparse_learner_update(state, batch, weights, C):
    """The learner's Adam step with the data gradient scattered into `grad_buffer`.

    Same numbers as differentiating `learner_loss`, with no n×n temporary: the data
    gradient −2 Σ_u w_u x_uᵀ r_u is written into the batch's items' rows of the buffer
    (`scatter_rows`: never cleared, the other rows are masked), and the regulariser's
    C·W and the diagonal mask are applied inside Adam's elementwise pass. W's diagonal
    is 0 in every `TrainState` (`init_state` zeroes it, every step keeps it, masked in
    the same pass), so the products skip the mask. The residual is the step's one
    `[b, n]` temporary (`sparse_residual`; the gradient's per-user factors are applied
    inside the scatter): each fresh temporary costs page faults on a CPU, 0.25 s a step
    for the three `[b, n]` arrays this used to make at amazon-book size (measured: 75k
    minor faults a step, now 27k).
    """
    W = state.params["W"]
    residual = sparse_residual(W, batch)
    loss = jnp.sum(weights * jnp.sum(jnp.square(residual), axis=-1))
    buffer, touched = scatter_rows(state.grad_buffer, batch, residual, scale=-2.0 * weights)
    diagonal = _diagonal(W.shape)
    data = touched[:, None] & ~diagonal
    grads = {"W": jnp.where(data, buffer, 0.0) + C * W}
    updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = {**params, "W": jnp.where(diagonal, 0.0, params["W"])}
    return loss, params, opt_state, buffer


def make_step(model: Model, config, *, warmup_steps: int, product: str | None = None):
    """`gda_step` with the model and hyperparameters bound, jitted, state donated.

    Args:
      model: (adversary, objective), e.g. `adversarial.make_model("rlarm")`.
      config: a `ModelConfig` (C, B and product are read).
      warmup_steps: learner-only steps before the adversary moves.
      product: overrides `config.product`.

    Returns:
      `step(state, batch, key) -> (state, metrics)`; one compilation per batch shape
      (`SparseBatch` coordinates of one length, `[nnz_cap]`).
    """
    step = functools.partial(
        gda_step,
        model=model,
        C=config.C,
        B=config.B,
        product=resolve_product(product or config.product),
        warmup_steps=warmup_steps,
    )
    return jax.jit(step, donate_argnums=0)
