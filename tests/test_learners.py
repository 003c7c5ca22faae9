"""Learners: the dense learner's sparse Adam step and the low-rank learner against float64
NumPy, every model trained with the low-rank one, a learner written here trained by
`train_adversarial`, and the learner flags' errors."""

import dataclasses
import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from test_worst_case_cli import train_batch  # train.py's command lines, one interpreter

import arm_jax
from arm_jax import configs, gda, learners, metrics, training
from arm_jax.errors import ConfigError
from arm_jax.products import densify, make_batch


def _random_x(rng, m, n, density=0.3):
    x = (rng.random((m, n)) < density).astype(np.float32)
    x[np.arange(m), rng.integers(0, n, m)] = 1.0  # nobody empty
    return sp.csr_matrix(x)


def _factors(rng, n, r):
    return {k: jnp.asarray(rng.normal(size=(n, r)) * 0.3, jnp.float32) for k in ("P", "Q")}


def _w_tilde(params):
    """float64 P Qᵀ with its diagonal removed."""
    w = np.asarray(params["P"], np.float64) @ np.asarray(params["Q"], np.float64).T
    np.fill_diagonal(w, 0.0)
    return w


def _keras_adam_np(W, mu, nu, g, t, *, lr, eps, b1=0.9, b2=0.999):
    """TensorFlow's Adam step t (1-based) in float64: ε on √v before the corrections."""
    mu, nu = b1 * mu + (1 - b1) * g, b2 * nu + (1 - b2) * g * g
    return W - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * mu / (np.sqrt(nu) + eps), mu, nu


# One block; blocks of 7 rows and a tail; the [n, n] gradient buffer of small n.
@pytest.mark.parametrize("block", [None, 7 * 23, "buffer"])
def test_dense_sparse_step_is_adam_on_the_loss_gradient(monkeypatch, block):
    if isinstance(block, int):
        monkeypatch.setattr(learners, "_BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(8)
    m, n, b, C, lr = 40, 23, 12, 0.3, 1e-2
    x_csr = _random_x(rng, m, n, density=0.15)
    W = rng.normal(size=(n, n)) * 0.1
    np.fill_diagonal(W, 0.0)
    optimizer = gda.keras_adam(lr)
    params = {"W": jnp.asarray(W, jnp.float32)}
    state = optimizer.init(params)
    scratch = learners.DENSE_LEARNER.scratch(params, "sparse") if block == "buffer" else None
    update = jax.jit(
        lambda p, s, batch, w: learners.DENSE_LEARNER.update(
            p, s, scratch, batch, None, w, optimizer=optimizer, C=C, product="sparse"
        )
    )
    mu, nu = np.zeros((n, n)), np.zeros((n, n))
    for t in (1, 2, 3):  # moments and counts away from zero after the first
        users = rng.choice(m, b, replace=False)
        weights = rng.random(b) + 0.1
        weights /= weights.sum()
        x = np.asarray(x_csr[users].todense(), np.float64)
        loss, params, state, _ = update(
            params, state, make_batch(x_csr, users, 256), jnp.asarray(weights, jnp.float32)
        )
        r = x - x @ W
        np.testing.assert_allclose(float(loss), np.sum(weights * np.sum(r * r, 1)), rtol=1e-5)
        g = -2 * x.T @ (weights[:, None] * r)  # the data gradient: only the batch's items' rows
        np.fill_diagonal(g, 0.0)
        W, mu, nu = _keras_adam_np(W, mu, nu, g + C * W, t, lr=lr, eps=1e-7)
        np.fill_diagonal(W, 0.0)
        moments = state.inner_state[0]
        np.testing.assert_allclose(np.asarray(params["W"]), W, rtol=0, atol=2e-6)
        np.testing.assert_allclose(np.asarray(moments.mu["W"]), mu, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(np.asarray(moments.nu["W"]), nu, rtol=1e-4, atol=1e-9)
        assert int(state.count) == t and np.all(np.diag(np.asarray(params["W"])) == 0.0)
    assert np.abs(W - np.asarray(params["W"])).max() < 2e-6 < np.abs(mu).max()


def test_dense_sparse_step_holds_no_n_by_n_temporary(monkeypatch):
    # W and its two moments are updated in place (donated); a step's temporaries are
    # the [b, n] residual and blocks of rows, never an [n, n] gradient or copy.
    n, b = 600, 32
    monkeypatch.setattr(learners, "_BLOCK_ELEMENTS", 20 * n)
    monkeypatch.setattr(learners, "BUFFER_MAX_ITEMS", n - 1)  # no buffer at this n
    x_csr = _random_x(np.random.default_rng(0), 200, n, density=0.02)
    config = configs.model_config("synthetic", "rlarm", batch_size=b)
    model = arm_jax.adversarial.make_model("rlarm")
    state = gda.init_state(
        jax.random.PRNGKey(0), n, adversary=model.adversary, config=config, product="sparse"
    )
    step = gda.make_step(model, config, warmup_steps=0, product="sparse")
    batch = make_batch(x_csr, np.arange(b), 1024)
    memory = step.lower(state, batch, jax.random.PRNGKey(1)).compile().memory_analysis()
    assert memory.alias_size_in_bytes >= 3 * n * n * 4  # W and both moments in place
    assert memory.argument_size_in_bytes < 4 * n * n * 4  # and no [n, n] buffer beside
    assert memory.temp_size_in_bytes < n * n * 4


def test_low_rank_scores_and_predict_match_numpy():
    rng = np.random.default_rng(0)
    x_csr = _random_x(rng, 9, 17)
    params = _factors(rng, 17, 5)
    batch = make_batch(x_csr, np.arange(9), x_csr.nnz + 7)
    expected = x_csr.toarray().astype(np.float64) @ _w_tilde(params)
    with jax.default_matmul_precision("highest"):
        got = learners.LOW_RANK_LEARNER.scores(params, batch, None, product="auto")
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    predicted = learners.low_rank_predict(params, jnp.asarray(x_csr.toarray()))
    np.testing.assert_allclose(np.asarray(predicted), expected, rtol=1e-5, atol=1e-5)


def test_low_rank_loss_and_gradient_match_numpy():
    rng = np.random.default_rng(1)
    m, n, r, C = 11, 14, 4, 0.3
    x_csr = _random_x(rng, m, n)
    params = _factors(rng, n, r)
    weights = rng.random(m)
    weights /= weights.sum()
    batch = make_batch(x_csr, np.arange(m), x_csr.nnz)

    def loss(p):
        x = densify(batch)
        return learners.LOW_RANK_LEARNER.loss(
            p, batch, x, jnp.asarray(weights), C=C, product="auto"
        )

    with jax.default_matmul_precision("highest"):
        (value, per_user), grads = jax.value_and_grad(loss, has_aux=True)(params)
    # float64 reference: L = Σ_u w_u ‖x_u − x_u W̃‖² + (C/2)‖W̃‖², W̃ = (1 − I) ∘ P Qᵀ, so
    # ∂L/∂(P Qᵀ) = (1 − I) ∘ (−2 Xᵀ diag(w) R + C W̃).
    x = x_csr.toarray().astype(np.float64)
    w = _w_tilde(params)
    residual = x - x @ w
    ref_per_user = np.sum(residual**2, axis=1)
    ref_loss = weights @ ref_per_user + 0.5 * C * np.sum(w**2)
    g = -2 * x.T @ (weights[:, None] * residual) + C * w
    np.fill_diagonal(g, 0.0)
    P, Q = (np.asarray(params[k], np.float64) for k in ("P", "Q"))
    np.testing.assert_allclose(float(value), ref_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(per_user), ref_per_user, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grads["P"]), g @ Q, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grads["Q"]), g.T @ P, rtol=1e-4, atol=1e-5)
    penalty = learners.LOW_RANK_LEARNER.penalty(params)
    np.testing.assert_allclose(float(penalty), np.sum(w**2), rtol=1e-5)


def test_low_rank_warm_start_is_the_truncated_ridge_solution():
    rng = np.random.default_rng(2)
    m, n, r, C = 40, 12, 4, 0.2
    x_csr = _random_x(rng, m, n)
    config = dataclasses.replace(configs.ModelConfig(), C=C, learner="low_rank", rank=r)
    params = learners.LOW_RANK_LEARNER.init(jax.random.PRNGKey(0), n, config, x=x_csr)
    x = x_csr.toarray().astype(np.float64)
    s, v = np.linalg.eigh(x.T @ x / m)
    s, v = s[::-1][:r], v[:, ::-1][:, :r]
    expected = v @ np.diag(s / (s + C / 2)) @ v.T
    got = np.asarray(params["P"], np.float64) @ np.asarray(params["Q"], np.float64).T
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _clustered_split(seed=0, m=240, n=40, h=40, clusters=4):
    """Users who each like one cluster's items (and a few others): a structure a
    low-rank item–item model can learn."""
    rng = np.random.default_rng(seed)

    def rows(k):
        own = rng.integers(0, clusters, k)
        cluster = np.arange(n) % clusters
        p = np.where(cluster[None, :] == own[:, None], 0.45, 0.03)
        x = (rng.random((k, n)) < p).astype(np.float32)
        x[np.arange(k), rng.integers(0, n, k)] = 1.0
        return x

    valid = rows(h)
    mask = rng.random(valid.shape) < 0.6
    return types.SimpleNamespace(
        train=sp.csr_matrix(rows(m)),
        valid_tr=sp.csr_matrix(valid * mask),
        valid_te=sp.csr_matrix(valid * ~mask),
        dataset="clustered",
    )


def _config(model, **kw):
    base = dict(C=0.1, B=1.0, learning_rate=1e-2, batch_size=40, max_epochs=8, patience=8)
    return configs.model_config("synthetic", model, **{**base, **kw})


def _ndcg(predict, model, split):
    return float(
        np.mean(metrics.evaluate(predict, model, split.valid_tr, split.valid_te)["ndcg@100"])
    )


@pytest.mark.parametrize("model,warm_start", [("arm", False), ("rlarm", True), ("rlarm_nn", False)])
def test_every_adversarial_model_trains_the_low_rank_learner(model, warm_start):
    split = _clustered_split()
    config = _config(model, learner="low_rank", rank=6, warm_start=warm_start)
    result = training.train_adversarial(split, model=model, config=config, seed=0)
    assert result.stop_reason == "max_epochs"
    assert set(result.learner) == {"P", "Q"}
    assert result.learner["P"].shape == (40, 6)
    losses = [r["learner_loss"] for r in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # Its random start ranks the held-out items no better than chance; trained, far better.
    start = learners.LOW_RANK_LEARNER.init(jax.random.PRNGKey(5), 40, config)
    before = _ndcg(learners.low_rank_predict, start, split)
    assert result.best_ndcg > before + 0.15
    assert _ndcg(result.learner_predict, result.learner, split) == pytest.approx(result.best_ndcg)


# A learner written against the public API only: item embeddings E, scores x E Eᵀ with
# each item's own term removed, plus an item bias b (popularity); loss as the paper's.
def _embedding_init(key, n_items, config, *, dtype=jnp.float32, x=None):
    del x  # no warm start
    return {"E": 0.1 * jax.random.normal(key, (n_items, 3), dtype), "b": jnp.zeros(n_items, dtype)}


def _embedding_predict(params, x):
    e = params["E"]
    return (x @ e) @ e.T - x * jnp.sum(e * e, axis=1) + params["b"]


def _embedding_scores(params, batch, x, *, product):
    return _embedding_predict(params, x)


def _embedding_loss(params, batch, x, weights, *, C, product):
    per_user = jnp.sum(jnp.square(x - _embedding_predict(params, x)), axis=-1)
    return jnp.sum(weights * per_user) + 0.5 * C * jnp.sum(jnp.square(params["E"])), per_user


EMBEDDING_LEARNER = arm_jax.Learner(
    init=_embedding_init,
    scores=_embedding_scores,
    loss=_embedding_loss,
    penalty=lambda params: jnp.sum(jnp.square(params["E"])),
    export=lambda params: params,
    predictor=lambda product: _embedding_predict,
)


def test_a_learner_written_here_trains_with_train_adversarial():
    split = _clustered_split(seed=3)
    config = _config("rlarm")
    model = arm_jax.Model(arm_jax.LINEAR_ADVERSARY, arm_jax.rank_objective, EMBEDDING_LEARNER)
    result = arm_jax.train_adversarial(
        split, model="rlarm", config=config, seed=0, adversarial_model=model
    )
    assert set(result.learner) == {"E", "b"}
    assert all(r["adversary_steps"] > 0 for r in result.history[1:])  # the adversary moved
    start = _embedding_init(jax.random.PRNGKey(1), 40, config)
    before = _ndcg(_embedding_predict, start, split)
    assert result.best_ndcg > before + 0.15


def test_learner_options_are_checked():
    split = _clustered_split(m=60)
    with pytest.raises(ConfigError, match="--rank must be in \\[1, 40\\]"):
        training.train_adversarial(
            split, model="rlarm", config=_config("rlarm", learner="low_rank", rank=41)
        )
    with pytest.raises(ConfigError, match="--rank must be >= 1"):
        configs.model_config("synthetic", "rlarm", learner="low_rank", rank=0)
    with pytest.raises(ConfigError, match="--learner must be one of dense, low_rank"):
        configs.model_config("synthetic", "arm", learner="sparse")
    with pytest.raises(ConfigError, match="--learner"):
        configs.model_config("synthetic", "ease", learner="low_rank")


LOW_RANK = ["--model=rlarm", "--learner=low_rank", "--rank=8", "--max_epochs=2"]


def test_low_rank_rlarm_from_the_cli_saves_and_evaluates_its_factors(train_runs, cli_cache):
    out = train_runs["low_rank"]
    assert out.returncode == 0, out.stderr[-3000:]
    run = out.workdir
    results = json.load(open(run / "results.json"))
    assert results["hyperparameters"]["learner"] == "low_rank"
    assert results["hyperparameters"]["rank"] == 8
    assert set(np.load(run / "model.npz").files) == {"P", "Q", "item_ids"}
    model, predict, meta = arm_jax.load_learned(str(run / "model.npz"))
    assert model["P"].shape == (1000, 8) and len(meta["item_ids"]) == 1000
    split = arm_jax.load_split("synthetic", cache_dir=cli_cache)  # the run's split
    per_user = arm_jax.evaluate_model(model, split, "test", predict=predict)
    saved = np.load(run / "per_user_test.npz")
    np.testing.assert_allclose(per_user["ndcg@100"], saved["ndcg@100"], rtol=1e-6)
    assert 0.1 < results["test"]["ndcg@100"] < 1


LEARNER_FLAGS = [
    (["--learner=low_rank"], "--learner: not used by --model=ease"),
    (["--model=ease_ipw", "--learner=dense"], "--learner: not used by --model=ease_ipw"),
    (["--model=rlarm", "--rank=8"], "--rank=8 is for --learner=low_rank"),
    (["--model=arm", "--learner=low_rank", "--rank=0"], "--rank must be >= 1, got 0"),
    (["--model=rlarm_nn", "--learner=low_rank", "--rank=1001"], "--rank must be in [1, 1000]"),
]


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory, cli_cache):
    """train.py on LOW_RANK and each row of LEARNER_FLAGS, in one interpreter."""
    return train_batch(tmp_path_factory, cli_cache, {"low_rank": LOW_RANK}, LEARNER_FLAGS)


@pytest.mark.parametrize("args,message", LEARNER_FLAGS)
def test_learner_flags_give_one_line_errors(train_runs, args, message):
    out = train_runs[tuple(args)]
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not os.path.exists(os.path.join(out.cwd, "run"))  # nothing written
