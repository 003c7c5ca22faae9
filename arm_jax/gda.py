"""The descent–ascent step of the adversarial models (Algorithms 1–2) and its state.

`gda_step(state, batch, key) -> (state, metrics)`: one Adam descent step on the learner
with its adversary-weighted loss, then, once the warm-up steps are done, one Adam ascent
step on the adversary's objective computed with the updated learner's scores. The model
is whatever `adversarial.Model` (adversary, objective and `learners.Learner`) is bound
in; the step knows only those interfaces. `make_step` jits it with the state donated.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import optax

from arm_jax import sharding
from arm_jax.adversarial import Adversary, Model, Params, adversary_weights
from arm_jax.learners import DENSE_LEARNER, Learner, zero_diagonal
from arm_jax.products import SparseBatch, densify, resolve_product


@flax.struct.dataclass
class TrainState:
    """Learner and adversary parameters, their Adam states and the step count.

    Attributes:
      params: the learner's parameters (the dense learner's `{"W": [n, n]}`).
      adversary_params: the adversary's parameters.
      opt_state, adversary_opt_state: optax states of the two optimizers.
      step: int32 scalar, steps taken so far.
      learner_scratch: the learner's per-step scratch (`Learner.scratch`: the dense
        learner's `[n, n]` gradient buffer on the sparse product, up to
        `learners.BUFFER_MAX_ITEMS` items), or None; not saved.
      optimizer, adversary_optimizer: optax transformations (static).
    """

    params: Params
    adversary_params: Params
    opt_state: optax.OptState
    adversary_opt_state: optax.OptState
    step: jax.Array
    learner_scratch: Params | None
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
    learner: Learner = DENSE_LEARNER,
    x=None,
    mesh=None,
) -> TrainState:
    """A fresh `TrainState`: the learner's `init` (or the dense `W0`) and the adversary's.

    Args:
      key: PRNG key of the initialisation.
      n_items: n.
      adversary: the adversary's (init, apply).
      config: a `ModelConfig` (learning_rate, adversary_learning_rate, adam_eps,
        hidden_dim, rank are read).
      W0: `[n, n]` starting dense learner (its diagonal is zeroed), e.g. EASE, or None.
      dtype: dtype of the learner's parameters.
      product: the product the steps will use (default `config.product`); the
        learner's scratch, if it keeps one, is made for it.
      learner: the learner (default the dense W).
      x: `[m, n]` CSR training rows for the learner's warm start, or None.
      mesh: a `sharding.make_mesh` mesh, or None for one device: the state is laid out
        by `sharding.state_shardings` (a random start is created in shards; a warm
        start or `W0` is built whole on the host and device, then placed).
    """
    optimizer, adversary_optimizer = _optimizers(config)

    def arrays(key):
        nonlocal W0
        k_w, k_a = jax.random.split(key)
        if W0 is None:
            params = learner.init(k_w, n_items, config, dtype=dtype, x=x)
        else:
            params = {"W": zero_diagonal(jnp.asarray(W0, dtype))}
            # The given W freed before the moments are made: at 40,981 items a W and
            # two moments take 20.1 of this machine's 24 GB (docs/performance.md).
            jax.block_until_ready(params)
            W0 = None
        adversary_params = adversary.init(k_a, n_items, config)
        scratch = learner.scratch(params, product or config.product) if learner.scratch else None
        return dict(
            params=params,
            adversary_params=adversary_params,
            opt_state=jax.jit(optimizer.init)(params),
            adversary_opt_state=adversary_optimizer.init(adversary_params),
            step=jnp.zeros((), jnp.int32),
            learner_scratch=scratch,
        )

    fields = _laid_out(arrays, key, mesh, random_start=W0 is None and x is None)
    return TrainState(**fields, optimizer=optimizer, adversary_optimizer=adversary_optimizer)


def _optimizers(config):
    """The learner's and the adversary's Adam (`keras_adam`)."""
    optimizer = keras_adam(config.learning_rate, eps=config.adam_eps)
    # The paper's one step size unless the config gives the adversary its own.
    adversary_lr = getattr(config, "adversary_learning_rate", None) or config.learning_rate
    return optimizer, keras_adam(adversary_lr, eps=config.adam_eps)


def _laid_out(arrays, key, mesh, *, random_start: bool) -> dict:
    """The state's fields `arrays(key)` on one device (`mesh` None) or over `mesh`: a
    random start created in shards, a warm start built whole, then placed."""
    if mesh is None:
        return arrays(key)
    if random_start:
        layout = functools.partial(sharding.field_shardings, mesh)
        return sharding.build_sharded(arrays, layout, key)
    fields = arrays(key)
    return sharding.put(fields, sharding.field_shardings(mesh, fields))


def _weight_stats(w: jax.Array) -> dict[str, jax.Array]:
    entropy = -jnp.sum(w * jnp.log(jnp.maximum(w, 1e-30)))
    return {
        "weight_min": jnp.min(w),
        "weight_max": jnp.max(w),
        "weight_entropy": entropy,
        "weight_ess": 1.0 / jnp.sum(jnp.square(w)),  # effective sample size, b when uniform
    }


def _descend(state, batch, x, weights, *, learner: Learner, C, product):
    """The learner's Adam descent step: (weighted loss, params, opt_state, scratch)."""
    if learner.update is not None:
        return learner.update(
            state.params,
            state.opt_state,
            state.learner_scratch,
            batch,
            x,
            weights,
            optimizer=state.optimizer,
            C=C,
            product=product,
        )
    (_, per_user), grads = jax.value_and_grad(learner.loss, has_aux=True)(
        state.params, batch, x, weights, C=C, product=product
    )
    loss = jnp.sum(weights * per_user)
    updates, opt_state = state.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return loss, params, opt_state, state.learner_scratch


def _ascend(model: Model, optimizer, batch, x, dtype, params, operand, *, B, product):
    """The adversary's Adam ascent step on its objective, given the learner `params`.

    Returns (adversary params, adversary opt_state, objective value).
    """
    adv_params, adv_opt_state = operand
    x_dense = densify(batch, dtype) if x is None else x
    scores = model.learner.scores(params, batch, x_dense, product=product)
    scores = jax.lax.stop_gradient(scores)
    value, g = jax.value_and_grad(model.objective)(
        adv_params, model.adversary.apply, batch, x_dense, scores, B=B
    )
    neg = jax.tree_util.tree_map(jnp.negative, g)  # ascend
    adv_updates, adv_opt_state = optimizer.update(neg, adv_opt_state, adv_params)
    return optax.apply_updates(adv_params, adv_updates), adv_opt_state, value


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

    One Adam descent step on the learner with its weighted loss (`model.learner.update`
    where the learner has a fused one, else the gradient of `model.learner.loss`); then
    (the authors' code's order; the paper's algorithm boxes list the adversary's update
    first), once `state.step >= warmup_steps` (a traced check: no retrace when the
    adversary starts), one Adam ascent step on the adversary's objective, given the
    updated learner's scores `[b, n]`. Jit this function (with the keyword options
    bound) with `donate_argnums=0`.

    Args:
      state: the train state (donated): the learner's and the adversary's parameters
        and both Adam states.
      batch: the mini-batch's b users' rows (`[b, n]` as padded coordinates).
      key: this step's PRNG key (the paper's models are deterministic given the batch;
        it is there for adversaries or objectives that sample).
      model: (adversary, objective, learner).
      C, B: learner and adversary L2 weights.
      product: "dense", "sparse" or "segment" (see `resolve_product`).
      warmup_steps: learner-only steps before the adversary moves (K epochs).

    Returns:
      (new state, metrics dict of scalars: data_loss, adversary_objective,
      adversary_active, weight_min/max/entropy/ess). `data_loss` is the learner loss
      without its regulariser, Σ_u w_u ‖x_u − x_u W̃‖² at the learner the step started
      from: the regulariser is a read of all of W (a measurable share of a CPU step:
      docs/performance.md), so `training` adds it once per epoch instead.
    """
    del key
    apply = model.adversary.apply
    dtype = jax.tree_util.tree_leaves(state.params)[0].dtype
    weights = adversary_weights(apply(state.adversary_params, batch))
    x = _dense_batch(model, batch, dtype, product)
    loss, params, opt_state, scratch = _descend(
        state, batch, x, weights, learner=model.learner, C=C, product=product
    )
    active = state.step >= warmup_steps
    adv_params, adv_opt_state, objective = _ascend_after_warmup(
        model, state, batch, x, dtype, params, active, loss.dtype, B=B, product=product
    )
    new_state = state.replace(
        params=params,
        adversary_params=adv_params,
        opt_state=opt_state,
        adversary_opt_state=adv_opt_state,
        step=state.step + 1,
        learner_scratch=scratch,
    )
    return new_state, _step_metrics(loss, objective, active, weights)


def _dense_batch(model: Model, batch: SparseBatch, dtype, product: str):
    """The batch's dense rows `[b, n]`, or None for a fused update on the sparse product,
    which needs none (it is built only for an objective that reads it: the compiler
    drops it otherwise)."""
    if model.learner.update is not None and product == "sparse":
        return None
    return sharding.constrain_batch(densify(batch, dtype))


def _step_metrics(loss, objective, active, weights) -> dict[str, jax.Array]:
    """The step's scalars: data loss, adversary objective and activity, weight stats."""
    return {
        "data_loss": loss,
        "adversary_objective": objective,
        "adversary_active": active.astype(loss.dtype),
        **_weight_stats(weights),
    }


def _ascend_after_warmup(model, state, batch, x, dtype, params, active, loss_dtype, *, B, product):
    """`_ascend` where `active` (the warm-up is done: a traced check), else the
    adversary held with objective 0; (adversary params, opt_state, objective)."""
    ascend = functools.partial(
        _ascend, model, state.adversary_optimizer, batch, x, dtype, params, B=B, product=product
    )

    def hold(operand):
        return *operand, jnp.zeros((), loss_dtype)

    return jax.lax.cond(active, ascend, hold, (state.adversary_params, state.adversary_opt_state))


def make_step(model: Model, config, *, warmup_steps: int, product: str | None = None, mesh=None):
    """`gda_step` with the model and hyperparameters bound, jitted, state donated.

    Args:
      model: (adversary, objective, learner), e.g. `adversarial.make_model("rlarm")`.
      config: a `ModelConfig` (C, B and product are read).
      warmup_steps: learner-only steps before the adversary moves.
      product: overrides `config.product`.
      mesh: a `sharding.make_mesh` mesh, or None for one device: the state's shardings
        in and out (`sharding.jit_step`), collectives placed by XLA.

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
    if mesh is not None:
        return sharding.jit_step(step, mesh)
    return jax.jit(step, donate_argnums=0)
