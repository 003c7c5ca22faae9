"""CVaR-EASE and EDLAE against float64 NumPy references written from their definitions."""

import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import closed_form, ease
from arm_jax.errors import ConfigError


def _rel_err(a, b):
    return np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max()


def _random_x(seed, m=70, n=45, density=0.2):
    rng = np.random.default_rng(seed)
    x = (rng.random((m, n)) < density).astype(np.float64)
    x[np.arange(m), rng.integers(0, n, m)] = 1.0  # no empty user
    return x


def _ref_weighted_ease(x, weights, lam, extra_diag=None):
    g = x.T @ (weights[:, None] * x)
    if extra_diag is not None:
        g = g + np.diag(extra_diag)
    p = np.linalg.inv(g + lam * np.eye(g.shape[0]))
    w = -p / np.diag(p)[None, :]
    np.fill_diagonal(w, 0.0)
    return w


def _ref_cvar_response(losses, alpha):
    m = losses.size
    order = sorted(range(m), key=lambda u: -losses[u])  # stable: ties in user order
    q = np.zeros(m)
    k = int(np.floor(alpha * m))
    q[order[:k]] = 1.0 / alpha
    if k < m:
        q[order[k]] = (alpha * m - k) / alpha
    return q


def _ref_cvar_ease(x, *, C, alpha, rounds):
    m = x.shape[0]
    lam = C * m
    w = _ref_weighted_ease(x, np.ones(m), lam)
    total = np.ones(m)
    for t in range(1, rounds + 1):
        losses = ((x - x @ w) ** 2).sum(1)
        total += _ref_cvar_response(losses, alpha)
        w = _ref_weighted_ease(x, total / (t + 1), lam)
    return w, total / (rounds + 1)


@pytest.mark.parametrize("alpha", [0.1, 0.37, 1.0])
def test_cvar_weights_match_reference(alpha):
    rng = np.random.default_rng(1)
    losses = np.round(rng.random(53), 1)  # ties
    w = closed_form.cvar_weights(losses, alpha)
    np.testing.assert_allclose(w, _ref_cvar_response(losses, alpha), rtol=1e-12)
    assert w.mean() == pytest.approx(1.0) and w.max() <= 1 / alpha + 1e-12
    top = np.argsort(-losses, kind="stable")[: int(alpha * 53)]
    assert np.all(w[top] == pytest.approx(1 / alpha))  # the worst α get the most


@pytest.mark.parametrize("seed,alpha,rounds", [(0, 0.2, 3), (1, 0.5, 1)])
def test_fit_cvar_ease_matches_float64_reference(seed, alpha, rounds):
    x = _random_x(seed)
    ref_w, ref_weights = _ref_cvar_ease(x, C=0.05, alpha=alpha, rounds=rounds)
    w, weights = closed_form.fit_cvar_ease(
        sp.csr_matrix(x), C=0.05, alpha=alpha, rounds=rounds, return_weights=True
    )
    np.testing.assert_allclose(weights, ref_weights, rtol=1e-12)  # the same users picked
    assert _rel_err(w, ref_w) < 1e-4
    assert not np.allclose(ref_w, _ref_weighted_ease(x, np.ones(len(x)), 0.05 * len(x)))


def test_cvar_ease_alpha_one_is_ease_and_losses_match():
    x = sp.csr_matrix(_random_x(2))
    base = ease.fit_ease(x, C=0.05)
    for loss in ("squared", "rank"):
        w = closed_form.fit_cvar_ease(x, C=0.05, alpha=1.0, rounds=2, loss=loss)
        np.testing.assert_allclose(np.asarray(w), np.asarray(base), rtol=1e-6, atol=1e-7)
    dense, wn = x.toarray(), np.asarray(base, np.float64)
    sq = closed_form.user_losses(base, x, chunk_size=32)
    np.testing.assert_allclose(sq, ((dense - dense @ wn) ** 2).sum(1), rtol=1e-5)
    rank = closed_form.user_losses(base, x, loss="rank", chunk_size=32)
    # 1 − NDCG over all n items (n < 100) against the user's own row
    scores = dense @ wn
    disc = 1 / np.log2(np.arange(2, x.shape[1] + 2))
    for u in range(x.shape[0]):
        order = np.lexsort((np.arange(x.shape[1]), -scores[u]))
        dcg = (dense[u, order] * disc).sum()
        idcg = disc[: int(dense[u].sum())].sum()
        assert rank[u] == pytest.approx(1 - dcg / idcg, abs=1e-6)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.6])
def test_fit_edlae_matches_paper_closed_form(p):
    x = _random_x(3, m=90, n=50)
    lam = 0.02 * len(x)
    g = x.T @ x
    big_lambda = p / (1 - p) * np.diag(g) + lam  # Λ = p/(1−p)·diagMat(diag(XᵀX)) + λI
    ref_full = np.linalg.solve(g + np.diag(big_lambda), g)  # B = (XᵀX + Λ)⁻¹XᵀX
    p_mat = np.linalg.inv(g + np.diag(big_lambda))
    ref_edlae = np.eye(50) - p_mat / np.diag(p_mat)[None, :]  # B = I − P diagMat(1 ⊘ diag P)
    # float32 against the float64 reference (float64 through a `jax.enable_x64` context
    # is not used: EASE's CPU inverse is a host callback, run on a thread without it).
    xs = sp.csr_matrix(x)
    b = np.asarray(closed_form.fit_edlae(xs, C=0.02, dropout_p=p))
    b_free = np.asarray(closed_form.fit_edlae(xs, l2=lam, dropout_p=p, zero_diagonal=False))
    base = np.asarray(ease.fit_ease(xs, C=0.02))
    assert _rel_err(b, ref_edlae) < 1e-5 and np.all(np.diag(b) == 0)
    assert _rel_err(b_free, ref_full) < 1e-5
    if p == 0:
        np.testing.assert_array_equal(b, base)
    else:
        assert _rel_err(base, ref_edlae) > 1e-2  # the dropout penalty changes the model


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(alpha=0.0, rounds=2), "--alpha"),
        (dict(alpha=1.5, rounds=2), "--alpha"),
        (dict(alpha=0.1, rounds=0), "--rounds"),
        (dict(alpha=0.1, rounds=1.5), "--rounds"),
        (dict(alpha=0.1, rounds=1, loss="hinge"), "loss"),
    ],
)
def test_cvar_ease_bad_input(kwargs, match):
    with pytest.raises(ConfigError, match=match) as e:
        closed_form.fit_cvar_ease(sp.csr_matrix(_random_x(4)), C=0.1, **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("p", [1.0, -0.1, 2.0])
def test_edlae_bad_dropout(p):
    with pytest.raises(ConfigError, match="--dropout_p"):
        closed_form.fit_edlae(sp.csr_matrix(_random_x(4)), C=0.1, dropout_p=p)
