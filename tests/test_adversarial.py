"""Adversarial models: gradients, weights, the EASE fixed point, ascent, products, retrace."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp

from arm_jax import adversarial as adv
from arm_jax import configs, gda
from arm_jax.errors import ConfigError
from arm_jax.products import (
    SparseBatch,
    batch_product,
    densify,
    make_batch,
    scatter_rows,
    sparse_residual,
)


def _random_x(rng, m, n, density=0.3, min_items=1):
    x = (rng.random((m, n)) < density).astype(np.float32)
    x[np.arange(m), rng.integers(0, n, m)] = 1.0  # nobody empty
    if min_items > 1:
        for u in range(m):
            x[u, rng.choice(n, min_items, replace=False)] = 1.0
    return sp.csr_matrix(x)


def _config(**kw):
    base = dict(C=0.01, B=1.0, learning_rate=1e-2, hidden_dim=3, batch_size=8)
    return configs.model_config("synthetic", "rlarm", **{**base, **kw})


def _ease_np(x, lam):
    """Closed-form EASE, float64, authors' scaling P = (XᵀX/m + λI)⁻¹."""
    x = np.asarray(x.todense(), np.float64)
    m, n = x.shape
    p = np.linalg.inv(x.T @ x / m + lam * np.eye(n))
    w = np.eye(n) - p / np.diag(p)[None, :]
    np.fill_diagonal(w, 0.0)
    return w


def _learner_grad(W, x_csr, weights, C, product, zero_diagonal=False):
    batch = make_batch(x_csr, np.arange(x_csr.shape[0]), x_csr.nnz + 3)
    x = densify(batch)

    def loss(p):
        return adv.learner_loss(
            p, batch, x, weights, C=C, product=product, zero_diagonal=zero_diagonal
        )[0]

    return jax.grad(loss)({"W": jnp.asarray(W, jnp.float32)})["W"]


@pytest.mark.parametrize("product", ["dense", "sparse", "segment"])
@pytest.mark.parametrize("zero_diagonal", [False, True])
def test_learner_gradient_matches_numpy(product, zero_diagonal):
    rng = np.random.default_rng(0)
    x_csr = _random_x(rng, 9, 7)
    W = rng.normal(size=(7, 7)) * 0.3
    if zero_diagonal:  # the promise: W's diagonal is 0 (the gradient's is then unmasked)
        np.fill_diagonal(W, 0.0)
    w = rng.random(9)
    w /= w.sum()
    C = 0.3
    # Hand-written: ∇ = −2 Xᵀ diag(w) (X − X W̃) + C W̃, off the diagonal; 0 on it.
    x = np.asarray(x_csr.todense(), np.float64)
    Wm = W.copy()
    np.fill_diagonal(Wm, 0.0)
    ref = -2.0 * x.T @ (w[:, None] * (x - x @ Wm)) + C * Wm
    np.fill_diagonal(ref, 0.0)
    # Full float32 products: on GPUs float32 matmuls default to TF32 (a speed choice of
    # the training step), which this float64 comparison of the math is not about.
    with jax.default_matmul_precision("highest"):
        got = np.array(
            _learner_grad(W, x_csr, jnp.asarray(w, jnp.float32), C, product, zero_diagonal)
        )
    if zero_diagonal:
        np.fill_diagonal(got, 0.0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_adversary_weights_sum_to_one():
    scores = jnp.asarray(np.random.default_rng(1).normal(size=(5, 33)) * 3)
    w = jax.vmap(adv.adversary_weights)(scores)
    chex.assert_shape(w, (5, 33))
    np.testing.assert_allclose(np.asarray(w.sum(-1)), 1.0, rtol=1e-6)
    assert (np.asarray(w) > 0).all()


def test_uniform_weights_fixed_point_is_ease_at_half_C():
    # Σ_u (1/m)‖x_u − x_u W‖² + (C/2)‖W‖² has gradient −(2/m)XᵀX(I − W) + C W: the EASE
    # stationarity condition with (XᵀX/m + (C/2)·I), i.e. the authors' C/2.
    rng = np.random.default_rng(2)
    x_csr = _random_x(rng, 40, 12, density=0.3)
    m = x_csr.shape[0]
    C = 0.2
    uniform = jnp.full((m,), 1.0 / m)
    with jax.default_matmul_precision("highest"):  # GPUs default to TF32 products
        at_half = np.asarray(_learner_grad(_ease_np(x_csr, C / 2), x_csr, uniform, C, "dense"))
        at_full = np.asarray(_learner_grad(_ease_np(x_csr, C), x_csr, uniform, C, "dense"))
    assert np.abs(at_half).max() < 1e-5
    assert np.abs(at_full).max() > 1e-2

    # And full-batch Adam steps (adversary frozen) converge there.
    config = _config(C=C, learning_rate=3e-3, batch_size=m)
    model = adv.make_model("arm")
    state = gda.init_state(jax.random.PRNGKey(0), 12, adversary=model.adversary, config=config)
    state = state.replace(adversary_params={"a": jnp.zeros((12, 1))})  # uniform weights
    step = gda.make_step(model, config, warmup_steps=10**9)
    batch = make_batch(x_csr, np.arange(m), x_csr.nnz)
    for i in range(3000):
        state, _ = step(state, batch, jax.random.PRNGKey(i))
    got = np.asarray(adv.learner_matrix(state.params))
    np.testing.assert_allclose(got, _ease_np(x_csr, C / 2), atol=2e-2)


def test_arm_adversary_favours_users_with_more_items():
    # Paper §5.3: the squared loss grows with a user's number of items, so ARM's
    # adversary learns to up-weight heavy users.
    rng = np.random.default_rng(3)
    m, n = 64, 30
    counts = rng.integers(1, 20, m)
    dense = np.zeros((m, n), np.float32)
    for u, c in enumerate(counts):
        dense[u, rng.choice(n, c, replace=False)] = 1.0
    x_csr = sp.csr_matrix(dense)
    config = _config(C=0.05, B=0.01, learning_rate=1e-2, batch_size=m)
    model = adv.make_model("arm")
    state = gda.init_state(jax.random.PRNGKey(0), n, adversary=model.adversary, config=config)
    step = gda.make_step(model, config, warmup_steps=0)
    batch = make_batch(x_csr, np.arange(m), x_csr.nnz)
    for i in range(200):
        state, _ = step(state, batch, jax.random.PRNGKey(i))
    scores = adv.adversary_scores(model.adversary.apply, state.adversary_params, x_csr)
    assert np.corrcoef(scores, counts)[0, 1] > 0.5


@pytest.mark.parametrize("name", ["arm", "rlarm", "rlarm_nn"])
def test_ascent_step_increases_adversary_objective(name):
    rng = np.random.default_rng(4)
    x_csr = _random_x(rng, 16, 20, density=0.2)
    config = _config(B=0.1, learning_rate=1e-3, batch_size=16)
    model = adv.make_model(name)
    state = gda.init_state(jax.random.PRNGKey(1), 20, adversary=model.adversary, config=config)
    batch = make_batch(x_csr, np.arange(16), x_csr.nnz)
    before = jax.device_get(state.adversary_params)  # the step donates the state
    new, metrics = gda.make_step(model, config, warmup_steps=0)(state, batch, jax.random.PRNGKey(0))
    x = densify(batch)
    scores = batch_product(new.params["W"], batch, x, product="dense")

    def objective(p):
        return float(model.objective(p, model.adversary.apply, batch, x, scores, B=config.B))

    np.testing.assert_allclose(float(metrics["adversary_objective"]), objective(before), rtol=1e-5)
    assert objective(new.adversary_params) > objective(before)


def test_rank_loss_matches_numpy_ndcg():
    rng = np.random.default_rng(5)
    x = (rng.random((6, 150)) < 0.1).astype(np.float32)
    x[0] = 0.0  # no relevant item: NDCG 0, never NaN
    scores = rng.normal(size=(6, 150)).astype(np.float32)
    disc = 1.0 / np.log2(np.arange(2, 102))
    ref = []
    for s, rel in zip(scores, x):
        top = np.argsort(-s, kind="stable")[:100]
        n_rel = int(rel.sum())
        idcg = disc[: min(n_rel, 100)].sum()
        ref.append(1.0 - ((rel[top] * disc).sum() / idcg if n_rel else 0.0))
    got = adv.rank_loss(jnp.asarray(scores), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["arm", "rlarm_nn"])
@pytest.mark.parametrize("product", ["sparse", "segment"])
def test_sparse_and_dense_products_give_the_same_step(name, product):
    rng = np.random.default_rng(6)
    x_csr = _random_x(rng, 24, 40, density=0.1)
    config = _config(batch_size=12)
    model = adv.make_model(name)
    # Different users per step: the sparse path's gradient buffer keeps the first
    # batch's rows, which the second step must not read.
    batches = [make_batch(x_csr, users, 256) for users in rng.permutation(24).reshape(2, 12)]
    out = {}
    # Full float32 products: a GPU's default (TF32) dense product alone moves W by ~4e-4.
    with jax.default_matmul_precision("highest"):
        for p in ("dense", product):
            state = gda.init_state(
                jax.random.PRNGKey(2), 40, adversary=model.adversary, config=config, product=p
            )
            step = gda.make_step(model, config, warmup_steps=0, product=p)
            for i, batch in enumerate(batches * 2):
                state, metrics = step(state, batch, jax.random.PRNGKey(i))
            out[p] = (jax.device_get(state.params), jax.device_get(state.adversary_params))
    chex.assert_trees_all_close(out["dense"], out[product], atol=1e-5, rtol=1e-5)


def test_step_compiles_once_across_batches_and_warmup():
    rng = np.random.default_rng(7)
    x_csr = _random_x(rng, 30, 25, density=0.15)
    config = _config(batch_size=10)
    model = adv.make_model("rlarm")
    state = gda.init_state(jax.random.PRNGKey(0), 25, adversary=model.adversary, config=config)
    traced = chex.assert_max_traces(gda.gda_step, n=1)
    step = jax.jit(
        lambda s, b, k: traced(
            s, b, k, model=model, C=config.C, B=config.B, product="sparse", warmup_steps=2
        ),
        donate_argnums=0,
    )
    actives = []
    for i in range(4):  # steps 0–1 learner only, 2–3 with the adversary
        batch = make_batch(x_csr, np.arange(i * 5, i * 5 + 10), 128)
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
        actives.append(float(metrics["adversary_active"]))
    assert actives == [0.0, 0.0, 1.0, 1.0]
    assert int(state.step) == 4


def test_learner_matrix_has_zero_diagonal_and_init_shapes():
    config = _config(hidden_dim=4)
    state = gda.init_state(jax.random.PRNGKey(0), 50, adversary=adv.NN_ADVERSARY, config=config)
    W = adv.learner_matrix(state.params)
    chex.assert_shape(W, (50, 50))
    assert np.all(np.diag(np.asarray(W)) == 0)
    chex.assert_shape(state.adversary_params["A0"], (50, 4))
    chex.assert_shape(state.adversary_params["A1"], (4, 1))
    a = adv.LINEAR_ADVERSARY.init(jax.random.PRNGKey(1), 5000, config)["a"]
    assert abs(float(jnp.std(a)) - np.sqrt(2 / 5001)) < 0.2 * np.sqrt(2 / 5001)


def test_custom_adversary_sees_item_counts():
    # A researcher's adversary: linear in the items plus a weight on log(#items).
    def init(key, n_items, config):
        return {"a": jnp.zeros((n_items, 1)), "c": jnp.zeros(())}

    def apply(params, batch):
        counts = jax.ops.segment_sum(batch.vals, batch.rows, num_segments=batch.n_users)
        return adv.sparse_matmul(batch, params["a"])[:, 0] + params["c"] * jnp.log1p(counts)

    model = adv.Model(adv.Adversary(init, apply), adv.arm_objective)
    rng = np.random.default_rng(8)
    x_csr = _random_x(rng, 32, 20, density=0.3)
    config = _config(B=0.01, batch_size=32)
    state = gda.init_state(jax.random.PRNGKey(0), 20, adversary=model.adversary, config=config)
    step = gda.make_step(model, config, warmup_steps=0)
    batch = make_batch(x_csr, np.arange(32), x_csr.nnz)
    for i in range(20):
        state, _ = step(state, batch, jax.random.PRNGKey(i))
    assert float(state.adversary_params["c"]) > 0  # heavier users have larger ARM losses


def test_make_model_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown adversarial model"):
        adv.make_model("gan")
    with pytest.raises(ValueError, match="product"):
        gda.make_step(adv.make_model("arm"), _config(), warmup_steps=0, product="blocked")


def test_make_batch_rejects_overflow_and_pads_with_zeros():
    x_csr = _random_x(np.random.default_rng(9), 6, 10, density=0.5)
    with pytest.raises(ValueError, match="nnz_cap"):
        make_batch(x_csr, np.arange(6), 3)
    batch = make_batch(x_csr, np.array([4, 1]), 64)
    np.testing.assert_array_equal(np.asarray(densify(batch)), x_csr[[4, 1]].toarray())


def test_sparse_rank_loss_equals_top_k_ndcg_with_ties():
    rng = np.random.default_rng(10)
    x_csr = _random_x(rng, 20, 300, density=0.05)
    batch = make_batch(x_csr, np.arange(20), x_csr.nnz + 37)
    scores = np.round(rng.normal(size=(20, 300)), 1).astype(np.float32)  # many ties
    scores[3] = 0.0  # all tied: the lower index ranks first
    dense = adv.rank_loss(jnp.asarray(scores), densify(batch))
    for chunk in (None, 7, 512):  # chunks that do and do not divide the nonzeros
        sparse = adv.rank_loss_sparse(jnp.asarray(scores), batch, chunk=chunk)
        np.testing.assert_allclose(np.asarray(sparse), np.asarray(dense), rtol=1e-6, atol=1e-6)


def test_scatter_rows_ignores_stale_rows():
    rng = np.random.default_rng(11)
    x_csr = _random_x(rng, 9, 30, density=0.1)
    users = np.array([5, 2, 7, 0])
    batch = make_batch(x_csr, users, x_csr.nnz + 5)  # padding entries too
    g = rng.normal(size=(4, 6)).astype(np.float32)
    stale = rng.normal(size=(30, 6)).astype(np.float32) * 1e3
    acc, touched = scatter_rows(jnp.asarray(stale), batch, jnp.asarray(g))
    expected = x_csr[users].toarray().astype(np.float64).T @ g.astype(np.float64)
    got = np.where(np.asarray(touched)[:, None], np.asarray(acc), 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    items = np.unique(x_csr[users].indices)
    assert set(items) <= set(np.flatnonzero(np.asarray(touched)))
    untouched = ~np.asarray(touched)
    np.testing.assert_array_equal(np.asarray(acc)[untouched], stale[untouched])


def test_scatter_rows_scale_is_per_user():
    rng = np.random.default_rng(12)
    x_csr = _random_x(rng, 9, 30, density=0.2)
    users = np.array([3, 8, 1])
    batch = make_batch(x_csr, users, x_csr.nnz + 2)
    g = rng.normal(size=(3, 5)).astype(np.float32)
    scale = rng.normal(size=3).astype(np.float32)
    acc, touched = scatter_rows(jnp.zeros((30, 5)), batch, jnp.asarray(g), jnp.asarray(scale))
    x = x_csr[users].toarray().astype(np.float64)
    expected = x.T @ (scale.astype(np.float64)[:, None] * g.astype(np.float64))
    np.testing.assert_allclose(np.asarray(acc), expected, rtol=1e-5, atol=1e-5)


def test_sparse_residual_and_product_in_any_entry_order():
    # The x·W loop adds a run of one user's consecutive entries per iteration: entries
    # of a user split into several runs (any order a caller may build) give the same.
    rng = np.random.default_rng(13)
    x_csr = _random_x(rng, 7, 40, density=0.25)
    W = rng.normal(size=(40, 40)).astype(np.float32)
    np.fill_diagonal(W, 0.0)
    x = x_csr.toarray().astype(np.float64)
    expected = x - x @ W.astype(np.float64)
    batch = make_batch(x_csr, np.arange(7), x_csr.nnz + 9)
    got = sparse_residual(jnp.asarray(W), batch)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)
    order = rng.permutation(x_csr.nnz)  # users interleaved, padding after the entries
    pad = batch.rows.shape[0] - x_csr.nnz
    shuffled = SparseBatch(
        *(
            np.concatenate([a[: x_csr.nnz][order], a[x_csr.nnz :]])
            for a in (batch.rows, batch.cols, batch.vals)
        ),
        batch.nnz,
        n_users=7,
        n_items=40,
    )
    assert pad > 0
    got = batch_product(jnp.asarray(W), shuffled, densify(shuffled), product="sparse")
    np.testing.assert_allclose(np.asarray(got), x @ W, rtol=1e-5, atol=1e-4)
    got = sparse_residual(jnp.asarray(W), shuffled)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("elements", [40 * 3, 40 * 64, 2**28])  # chunks of 3, 64, all
def test_segment_product_and_gradient_match_numpy(monkeypatch, elements):
    from arm_jax import products

    monkeypatch.setattr(products, "GATHERED_ELEMENTS", elements)
    rng = np.random.default_rng(15)
    x_csr = _random_x(rng, 9, 40, density=0.2)
    W = rng.normal(size=(40, 40))
    g = rng.normal(size=(9, 40))
    x = x_csr.toarray().astype(np.float64)
    batch = make_batch(x_csr, np.arange(9), x_csr.nnz + 11)  # padding: never read
    batch = batch.replace(vals=np.where(np.arange(batch.vals.size) < x_csr.nnz, batch.vals, 9.0))

    def f(w):  # ⟨g, x W⟩, whose gradient is xᵀ g
        xw = batch_product(w, batch, None, product="segment", zero_diagonal=True)
        return jnp.sum(xw * jnp.asarray(g, jnp.float32)), xw

    with jax.default_matmul_precision("highest"):
        grad, xw = jax.grad(f, has_aux=True)(jnp.asarray(W, jnp.float32))
    np.testing.assert_allclose(np.asarray(xw), x @ W, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(grad), x.T @ g, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("product", ["dense", "sparse", "segment"])
def test_step_reports_the_weighted_data_loss(product):
    rng = np.random.default_rng(14)
    x_csr = _random_x(rng, 8, 12)
    config = _config(batch_size=8)
    spec = adv.make_model("rlarm")
    key = jax.random.PRNGKey(3)
    state = gda.init_state(key, 12, adversary=spec.adversary, config=config, product=product)
    batch = make_batch(x_csr, np.arange(8), x_csr.nnz + 4)
    W = np.asarray(state.params["W"], np.float64)
    s = np.asarray(spec.adversary.apply(state.adversary_params, batch), np.float64)
    w = 1.0 / (1.0 + np.exp(-s))
    w /= w.sum()
    x = x_csr.toarray().astype(np.float64)
    expected = np.sum(w * np.sum((x - x @ W) ** 2, axis=1))
    step = gda.make_step(spec, config, warmup_steps=0, product=product)
    _, out = step(state, batch, key)
    np.testing.assert_allclose(float(out["data_loss"]), expected, rtol=1e-5)


def test_arm_objective_matches_numpy():
    rng = np.random.default_rng(15)
    x_csr = _random_x(rng, 6, 20, density=0.2)
    batch = make_batch(x_csr, np.arange(6), x_csr.nnz + 3)  # padding entries too
    scores = rng.normal(size=(6, 20)).astype(np.float32)
    model = adv.make_model("arm")
    params = model.adversary.init(jax.random.PRNGKey(0), 20, _config())
    got = adv.arm_objective(
        params, model.adversary.apply, batch, densify(batch), jnp.asarray(scores), B=3.0
    )
    x = x_csr.toarray().astype(np.float64)
    a = np.asarray(params["a"], np.float64)
    s = x @ a.reshape(-1)
    w = 1.0 / (1.0 + np.exp(-s))
    w /= w.sum()
    expected = np.sum(w * np.sum((x - scores) ** 2, axis=1)) - 1.5 * np.sum(a**2)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_adam_adds_epsilon_as_tensorflow_does():
    """The authors' `tf.optimizers.Adam`: θ -= lr·√(1−β₂ᵗ)/(1−β₁ᵗ)·m/(√v + ε), float64."""
    rng = np.random.default_rng(12)
    theta0 = rng.normal(size=40).astype(np.float32)
    # Gradients from 1e-8 to 1e-3: where √v is near ε the two ways of adding ε differ.
    grads = [
        (rng.normal(size=40) * 10.0 ** rng.uniform(-8, -3, 40)).astype(np.float32) for _ in range(6)
    ]
    lr, eps, b1, b2 = 1e-3, 1e-7, 0.9, 0.999
    theta, m, v = theta0.astype(np.float64), np.zeros(40), np.zeros(40)
    for t, g in enumerate(grads, start=1):
        m = m + (g - m) * (1 - b1)
        v = v + (g.astype(np.float64) ** 2 - v) * (1 - b2)
        theta = theta - m * lr * np.sqrt(1 - b2**t) / (1 - b1**t) / (np.sqrt(v) + eps)

    def run(optimizer):
        p = jnp.asarray(theta0)
        state = optimizer.init(p)
        update = jax.jit(optimizer.update)
        for g in grads:
            u, state = update(jnp.asarray(g), state, p)
            p = p + u
        return np.asarray(p)

    np.testing.assert_allclose(run(gda.keras_adam(lr, eps=eps)), theta, rtol=0, atol=2e-6)
    # optax's own Adam adds ε after the bias corrections: not the authors' numbers.
    assert np.abs(run(optax.adam(lr, eps=eps)) - theta).max() > 1e-4
    config = configs.model_config("synthetic", "rlarm")
    state = gda.init_state(jax.random.PRNGKey(0), 8, adversary=adv.LINEAR_ADVERSARY, config=config)
    assert np.allclose(run(state.optimizer), run(gda.keras_adam(config.learning_rate)))
