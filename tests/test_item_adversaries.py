"""Item-level and user–item adversaries: weights normalise, the entry-weighted learner loss
and its fused sparse step against float64 references, hit rates, ascent increases each
objective, planted items and entries gain weight, and the models run in gda_step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse as sp
import scipy.stats

from arm_jax import adversarial, analysis, configs, gda, learners
from arm_jax import item_adversaries as ia
from arm_jax.products import densify, make_batch

MODELS = ("item_arm", "item_rlarm", "ui_arm", "ui_rlarm")


def _x(seed, m=30, n=150, density=0.1):
    rng = np.random.default_rng(seed)
    x = (rng.random((m, n)) < density).astype(np.float32)
    x[np.arange(m), rng.integers(0, n, m)] = 1.0  # no empty user
    return sp.csr_matrix(x)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_weights_normalise_over_the_catalogue_and_the_batch_entries():
    x = _x(0)
    batch = make_batch(x, np.arange(12), x.nnz)
    rng = np.random.default_rng(1)
    t = rng.normal(size=150).astype(np.float32)
    a = rng.normal(size=(150, 1)).astype(np.float32)
    item = ia.ITEM_ADVERSARY.apply({"t": jnp.asarray(t)}, batch)
    w = np.asarray(adversarial.adversary_weights(item), np.float64)
    assert w.shape == (1, 150) and w.sum() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(w[0], _sigmoid(t) / _sigmoid(t).sum(), rtol=1e-5)
    params = {"a": jnp.asarray(a), "t": jnp.asarray(t)}
    ui = ia.USER_ITEM_ADVERSARY.apply(params, batch)
    s = x[:12].toarray() @ a[:, 0]
    ref = _sigmoid(s[:, None] + t[None, :])
    w = np.asarray(adversarial.adversary_weights(ui), np.float64)
    assert w.shape == (12, 150) and w.sum() == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(w, ref / ref.sum(), rtol=1e-4)
    np.testing.assert_allclose(ia.USER_ITEM_ADVERSARY.user_scores(params, batch), s, rtol=1e-5)


@pytest.mark.parametrize("shape", [(12,), (1, 150), (12, 150)])
def test_unit_squared_errors_spread_the_weights_over_the_entries(shape):
    rng = np.random.default_rng(2)
    squares = rng.random((12, 150))
    weights = rng.random(shape)
    weights /= weights.sum()
    with jax.enable_x64(True):
        per_unit = learners.unit_squared_errors(jnp.asarray(squares), jnp.asarray(weights))
        got = float(jnp.sum(jnp.asarray(weights) * per_unit))
        uniform = jnp.full(shape, 1.0 / np.prod(shape))
        flat = float(jnp.sum(uniform * learners.unit_squared_errors(jnp.asarray(squares), uniform)))
    full = np.broadcast_to(weights if len(shape) == 2 else weights[:, None], squares.shape)
    omega = full / full.sum()  # ω_ui: the weights spread over the b·n entries
    assert got == pytest.approx(150 * np.sum(omega * squares), rel=1e-12)
    assert flat == pytest.approx(squares.sum() / 12, rel=1e-12)  # the paper's uniform loss


@pytest.mark.parametrize("shape", [(1, 150), (16, 150)])
def test_fused_sparse_step_matches_the_float64_gradient(shape):
    # The dense learner's sparse path scatters −2 Xᵀ(c ω ⊙ R) into its buffer; with SGD
    # the update is the gradient, checked against the reference n Σ ω_ui r_ui².
    x = _x(3, m=16, n=150)
    rng = np.random.default_rng(4)
    w0 = rng.normal(0, 0.05, (150, 150)).astype(np.float32)
    np.fill_diagonal(w0, 0.0)
    weights = rng.random(shape).astype(np.float32)
    weights /= weights.sum()
    params = {"W": jnp.asarray(w0)}
    sgd = optax.sgd(1.0)
    batch = make_batch(x, np.arange(16), x.nnz)
    buffer = jnp.zeros((150, 150), jnp.float32)
    loss, new, _, _ = learners.DENSE_LEARNER.update(
        params, sgd.init(params), buffer, batch, None, jnp.asarray(weights), optimizer=sgd,
        C=0.5, product="sparse",
    )  # fmt: skip
    xd = x.toarray().astype(np.float64)
    r = xd - xd @ w0.astype(np.float64)
    full = np.broadcast_to(weights, r.shape).astype(np.float64)
    omega = full / full.sum()
    grad = -2 * 150 * xd.T @ (omega * r) + 0.5 * w0
    np.fill_diagonal(grad, 0.0)
    np.testing.assert_allclose(np.asarray(new["W"]), w0 - grad, atol=2e-5)
    assert float(loss) == pytest.approx(150 * np.sum(omega * r**2), rel=1e-5)


def test_item_hit_rate_matches_numpy():
    x = _x(5, m=20, n=150, density=0.15)
    rng = np.random.default_rng(6)
    scores = rng.normal(size=(20, 150)).astype(np.float32)
    batch = make_batch(x, np.arange(20), x.nnz + 7)  # padding must not count
    rate, holders = ia.item_hit_rate(jnp.asarray(scores), batch, k=20)
    xd = x.toarray() > 0
    ranks = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)  # 0 is the top
    hits = ((ranks < 20) & xd).sum(0)
    np.testing.assert_array_equal(np.asarray(holders), xd.sum(0))
    ref = np.where(xd.sum(0) > 0, hits / np.maximum(xd.sum(0), 1), 0.0)
    np.testing.assert_allclose(np.asarray(rate), ref, rtol=1e-6)


def _planted(seed, model):
    """A batch and learner scores far off on items 0-9 (squared error) or ranking the
    held items 0-9 last (rank): the items the adversary should weight up."""
    x = _x(seed, m=40, n=150, density=0.12)
    x = x.toarray()
    x[:, :10] = np.random.default_rng(seed).random((40, 10)) < 0.5  # the planted items
    x = sp.csr_matrix(x)
    xd = x.toarray()
    rng = np.random.default_rng(seed + 1)
    if model.endswith("rlarm"):
        scores = xd + 0.5 * rng.random(xd.shape)  # held items ranked first...
        scores[:, :10] = -1.0 - rng.random((40, 10))  # ...except the planted ones
    else:
        scores = 0.9 * xd
        scores[:, :10] = 2.0 + rng.random((40, 10))
    return x, make_batch(x, np.arange(40), x.nnz), jnp.asarray(scores, jnp.float32)


@pytest.mark.parametrize("name", MODELS)
def test_ascent_increases_the_objective_and_planted_items_gain_weight(name):
    spec = configs.REGISTRY[name]
    x, batch, scores = _planted(7, name)
    with jax.enable_x64(True):
        params = spec.adversary.init(jax.random.PRNGKey(0), 150, None)
        params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float64), params)
        scores, xd = jnp.asarray(scores, jnp.float64), densify(batch, jnp.float64)

        @jax.jit
        def objective(p):
            return spec.objective(p, spec.adversary.apply, batch, xd, scores, B=0.01)

        gradient = jax.jit(jax.grad(objective))  # one program for the 30 steps
        lr = 0.05 if name.startswith("item") else 0.005  # x_u a moves with all of u's items
        before = float(objective(params))
        for _ in range(30):
            grad = gradient(params)
            params = jax.tree_util.tree_map(lambda p, g: p + lr * g, params, grad)
            after = float(objective(params))
            assert after > before  # every small ascent step increases it
            before = after
        t = np.asarray(params["t"])
        weights = np.asarray(adversarial.adversary_weights(spec.adversary.apply(params, batch)))
    assert t[:10].min() > np.delete(t, np.arange(10)).max()  # planted items on top
    per_item = weights.reshape(-1, 150).mean(0)
    assert per_item[:10].mean() > 1.05 * np.delete(per_item, np.arange(10)).mean()


def test_entry_arm_objective_with_user_weights_is_arms():
    x = _x(8)
    batch = make_batch(x, np.arange(20), x.nnz)
    params = adversarial.LINEAR_ADVERSARY.init(jax.random.PRNGKey(1), 150)
    scores = jnp.asarray(np.random.default_rng(9).random((20, 150)), jnp.float32)
    args = (params, adversarial.LINEAR_ADVERSARY.apply, batch, densify(batch), scores)
    got = ia.entry_arm_objective(*args, B=3.0)
    assert float(got) == pytest.approx(float(adversarial.arm_objective(*args, B=3.0)), rel=1e-6)


@pytest.mark.parametrize("product", ["dense", "sparse"])
@pytest.mark.parametrize("name", MODELS)
def test_models_run_in_gda_step(name, product):
    x = _x(10, m=48, n=150)
    config = configs.model_config("synthetic", name, batch_size=16, learning_rate=1e-2)
    model = adversarial.make_model(name, learners.make_learner(config))
    state = gda.init_state(
        jax.random.PRNGKey(0), 150, adversary=model.adversary, config=config, product=product
    )
    step = gda.make_step(model, config, warmup_steps=0, product=product)
    for i in range(3):
        batch = make_batch(x, np.arange(16 * i, 16 * i + 16), x.nnz)
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
    t = np.asarray(state.adversary_params["t"])
    assert np.all(np.isfinite(t)) and np.abs(t).max() > 0  # it moved
    assert np.all(np.diag(np.asarray(state.params["W"])) == 0)
    assert float(metrics["weight_max"]) > float(metrics["weight_min"])
    assert np.isfinite(float(metrics["data_loss"]))


def test_item_auc_is_the_mann_whitney_statistic_for_niche_items():
    rng = np.random.default_rng(11)
    scores = np.round(rng.normal(size=200), 1)  # ties count one half
    groups = rng.integers(0, 3, 200)
    niche, main = scores[groups != 0], scores[groups == 0]
    u = scipy.stats.mannwhitneyu(niche, main).statistic
    assert analysis.item_auc(scores, groups) == pytest.approx(u / (niche.size * main.size))
    table = analysis.item_auc_table({"item_rlarm": {"score": scores, "group": groups}})
    sig = 1 / (1 + np.exp(-scores))
    assert table["weight_ratio"].iloc[0] == pytest.approx(
        sig[groups != 0].mean() / sig[groups == 0].mean()
    )
