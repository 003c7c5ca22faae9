"""The EDLAE learner: its loss against a float64 reference (and the exact expectation over
dropout masks), the closed form as its stationary point, and R-LARM over it."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import adversarial, closed_form, configs, gda, learners
from arm_jax.errors import ConfigError
from arm_jax.products import make_batch


def _x(seed, m=40, n=12, density=0.3):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((m, n)) < density).astype(np.float64))


def _reference_loss(x, w, weights, C, p):
    """Σ_u w_u (‖x_u − x_u W̃‖² + q Σ_j x_uj² ‖W̃_j‖²) + (C/2)‖W̃‖², or with [b, n]
    entry weights n Σ_ui ω_ui ((x − xW̃)²_ui + q Σ_j x_uj² W̃_ji²)."""
    w = w.copy()
    np.fill_diagonal(w, 0.0)
    q = p / (1 - p)
    expected_sq = (x - x @ w) ** 2 + q * (x**2) @ (w**2)  # [b, n] per entry
    if weights.ndim == 1:
        data = np.sum(weights * expected_sq.sum(1))
    else:
        omega = np.broadcast_to(weights, x.shape) / np.broadcast_to(weights, x.shape).sum()
        data = x.shape[1] * np.sum(omega * expected_sq)
    return data + 0.5 * C * np.sum(w**2)


@pytest.mark.parametrize("product", ["dense", "sparse", "segment"])
@pytest.mark.parametrize("shape", ["user", "item", "entry"])
def test_loss_matches_float64_reference(product, shape):
    x = _x(0)
    b, n = x.shape
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, (n, n))  # the diagonal is nonzero: the loss must ignore it
    raw = rng.random({"user": (b,), "item": (1, n), "entry": (b, n)}[shape])
    weights = raw / raw.sum()
    with jax.enable_x64(True):
        learner = learners.edlae_learner(0.4)
        batch = make_batch(x, np.arange(b), x.nnz, dtype=np.float64)
        got, per_unit = learner.loss(
            {"W": jnp.asarray(w)}, batch, jnp.asarray(x.toarray()), jnp.asarray(weights),
            C=0.7, product=product,
        )  # fmt: skip
    ref = _reference_loss(x.toarray(), w, weights, 0.7, 0.4)
    np.testing.assert_allclose(float(got), ref, rtol=1e-10)
    assert per_unit.shape == weights.shape


def test_penalty_is_the_exact_expectation_over_dropout_masks():
    # Every mask δ ∈ {0, 1}^n of a tiny problem, with its probability: the expected
    # squared error of x_u (δ ⊙ ·)/(1 − p) W̃ is the loss's data term.
    n, p = 5, 0.3
    x = _x(2, m=4, n=n, density=0.5).toarray()
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, (n, n))
    np.fill_diagonal(w, 0.0)
    weights = rng.random(4)
    weights /= weights.sum()
    expected = 0.0
    for mask in itertools.product((0.0, 1.0), repeat=n):
        d = np.asarray(mask)
        prob = np.prod(np.where(d == 1.0, 1 - p, p))
        pred = (x * d / (1 - p)) @ w
        expected += prob * np.sum(weights * np.sum((x - pred) ** 2, axis=1))
    with jax.enable_x64(True):
        batch = make_batch(sp.csr_matrix(x), np.arange(4), 20, dtype=np.float64)
        got, _ = learners.edlae_learner(p).loss(
            {"W": jnp.asarray(w)}, batch, jnp.asarray(x), jnp.asarray(weights), C=0.0,
            product="dense",
        )  # fmt: skip
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


@pytest.mark.parametrize("product", ["dense", "sparse"])
def test_closed_form_is_stationary_with_uniform_weights(product):
    x = _x(4, m=80, n=30, density=0.25)
    m = x.shape[0]
    C, p = 0.3, 0.4
    with jax.enable_x64(True):
        w = closed_form.fit_edlae(x, dropout_p=p, C=C / 2, dtype=jnp.float64)
        batch = make_batch(x, np.arange(m), x.nnz, dtype=np.float64)
        learner = learners.edlae_learner(p)

        def loss(params):
            xd = jnp.asarray(x.toarray())
            return learner.loss(params, batch, xd, jnp.full(m, 1 / m), C=C, product=product)[0]

        grad = np.asarray(jax.grad(loss)({"W": w})["W"])
        other = np.asarray(jax.grad(loss)({"W": w + 0.01})["W"])  # a point that is not
    assert np.abs(np.asarray(w)).max() > 0.05  # a nontrivial W
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)
    assert np.abs(other).max() > 1e-3


def test_warm_start_is_the_closed_form_and_the_step_keeps_the_diagonal_zero():
    x = _x(5, m=64, n=20).astype(np.float32)
    config = configs.model_config("synthetic", "rlarm_edlae", batch_size=16, dropout_p=0.3)
    assert config.learner == "edlae"
    model = adversarial.make_model("rlarm_edlae", learners.make_learner(config))
    state = gda.init_state(
        jax.random.PRNGKey(0), 20, adversary=model.adversary, config=config,
        learner=model.learner, x=x,
    )  # fmt: skip
    ref = closed_form.fit_edlae(x, dropout_p=0.3, C=config.C / 2)
    np.testing.assert_allclose(np.asarray(state.params["W"]), np.asarray(ref), atol=1e-6)
    step = gda.make_step(model, config, warmup_steps=0, product="sparse")
    for i in range(3):
        state, metrics = step(
            state, make_batch(x, np.arange(16 * i, 16 * i + 16), 200), jax.random.PRNGKey(i)
        )
    w = np.asarray(state.params["W"])
    assert np.all(np.diag(w) == 0) and np.all(np.isfinite(w))
    assert np.abs(w - np.asarray(ref)).max() > 0  # it moved
    assert float(metrics["adversary_active"]) == 1.0


def test_learner_choice_is_checked():
    with pytest.raises(ConfigError, match="rlarm_edlae's learner is always edlae"):
        configs.model_config("synthetic", "rlarm_edlae", learner="low_rank")
    with pytest.raises(ConfigError, match="--dropout_p"):
        configs.model_config("synthetic", "rlarm", learner="edlae", dropout_p=1.0)
    config = configs.model_config("synthetic", "rlarm", learner="edlae", dropout_p=0.2)
    hyper = configs.model_hyperparameters("rlarm", config)
    assert hyper["learner"] == "edlae" and hyper["dropout_p"] == 0.2 and "rank" not in hyper
    low = configs.model_config("synthetic", "rlarm", learner="low_rank", rank=8)
    assert configs.model_hyperparameters("rlarm", low)["rank"] == 8  # as before
