"""Group DRO adversary: activity groups, normalised weights, ascent, a planted worst group."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import adversarial as adv
from arm_jax import configs, gda, group_dro
from arm_jax.errors import ConfigError
from arm_jax.products import densify, make_batch


def _x(seed, m=60, n=30):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, n, m)  # activity from 1 to n − 1 items
    x = np.zeros((m, n), np.float32)
    for u, c in enumerate(counts):
        x[u, rng.choice(n, c, replace=False)] = 1.0
    return sp.csr_matrix(x), counts


def test_groups_are_activity_quantiles_and_apply_maps_rows():
    x, counts = _x(0)
    edges = group_dro.activity_edges(x, 4)
    np.testing.assert_allclose(edges, np.quantile(counts.astype(np.float64), [0.25, 0.5, 0.75]))
    ref = np.array([sum(e <= c for e in edges) for c in counts])  # #{k: e_k <= θ_u}
    np.testing.assert_array_equal(group_dro.activity_groups(counts, edges), ref)
    adversary = group_dro.group_adversary(edges)
    params = {"logits": jnp.asarray([0.5, -1.0, 2.0, 0.25])}
    users = np.random.default_rng(1).permutation(60)[:20]
    batch = make_batch(x, users, x.nnz)  # padded: padding entries must not count
    scores = np.asarray(adversary.apply(params, batch))
    np.testing.assert_allclose(scores, np.asarray(params["logits"])[ref[users]])
    w = np.asarray(adv.adversary_weights(adversary.apply(params, batch)))
    assert w.sum() == pytest.approx(1.0, rel=1e-6)
    sig = 1 / (1 + np.exp(-np.asarray(params["logits"])[ref[users]]))
    np.testing.assert_allclose(w, sig / sig.sum(), rtol=1e-6)


def _objective(model, params, batch, scores, B):
    return float(model.objective(params, model.adversary.apply, batch, densify(batch), scores, B=B))


def test_ascent_increases_objective_and_planted_group_gets_most_weight():
    x, counts = _x(2)
    model = group_dro.group_dro_model(x, 3)
    groups = group_dro.activity_groups(counts, group_dro.activity_edges(x, 3))
    batch = make_batch(x, np.arange(60), x.nnz)
    # Planted: the learner's predictions are far off for the lightest group only.
    rng = np.random.default_rng(3)
    scores = np.where(groups[:, None] == 0, 3.0 + rng.random((60, 30)), 0.9 * densify(batch))
    scores = jnp.asarray(scores, jnp.float32)
    params = model.adversary.init(jax.random.PRNGKey(0), 30, None)
    before = _objective(model, params, batch, scores, B=0.1)
    for _ in range(20):
        grad = jax.grad(model.objective)(
            params, model.adversary.apply, batch, densify(batch), scores, B=0.1
        )
        params = jax.tree_util.tree_map(lambda p, g: p + 0.5 * g, params, grad)
        after = _objective(model, params, batch, scores, B=0.1)
        assert after > before  # every ascent step increases the objective
        before = after
    logits = np.asarray(params["logits"])
    assert np.argmax(logits) == 0 and logits[0] > logits[1:].max() + 0.5


def test_group_dro_runs_in_gda_step():
    x, _ = _x(4)
    config = configs.ModelConfig(C=0.01, B=0.1, learning_rate=1e-2, batch_size=20)
    model = group_dro.group_dro_model(x, 3)
    state = gda.init_state(jax.random.PRNGKey(0), 30, adversary=model.adversary, config=config)
    step = gda.make_step(model, config, warmup_steps=0, product="dense")
    for i in range(3):
        batch = make_batch(x, np.arange(i * 20, i * 20 + 20), x.nnz)
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
    assert state.adversary_params["logits"].shape == (3,)
    assert np.all(np.isfinite(np.asarray(state.adversary_params["logits"])))
    assert float(jnp.abs(state.adversary_params["logits"]).sum()) > 0  # it moved
    assert float(metrics["weight_max"]) >= float(metrics["weight_min"])


@pytest.mark.parametrize("groups", [1, 0, 61, 2.5])
def test_bad_groups(groups):
    x, _ = _x(5)
    with pytest.raises(ConfigError, match="--groups") as e:
        group_dro.group_dro_model(x, groups)
    assert "\n" not in str(e.value)
