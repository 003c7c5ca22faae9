"""Whole descent–ascent steps against a float64 NumPy transcription of the authors' loop.

The reference follows the authors' TensorFlow code (`r-larm.py`, `arm.py`,
`r-larm-nn.py`) line for line on dense arrays: weights σ(s_u)/Σσ(s_v) from the adversary,
the learner's Adam step on Σ_u w_u ‖x_u − x_u W̃‖² + C·l2_loss(W), then, after the
warm-up, the adversary's Adam ascent on its objective with the updated W (ranks by
`tf.math.top_k`: ties to the lower item index), both with `tf.optimizers.Adam` (ε added
to √v before the bias corrections). Gradients are written out by hand, not taken by
autodiff. Only the off-diagonal of W is compared: the authors' U keeps a diagonal that
predictions mask and only the regulariser moves; ours holds it at 0.
"""

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import adversarial as adv
from arm_jax import configs, gda
from arm_jax.products import make_batch

LR, EPS, B1, B2 = 1e-2, 1e-7, 0.9, 0.999


class _Adam:
    """`tf.optimizers.Adam` on one float64 array."""

    def __init__(self, theta):
        self.m, self.v, self.t = np.zeros_like(theta), np.zeros_like(theta), 0

    def descend(self, theta, g):
        self.t += 1
        self.m += (g - self.m) * (1 - B1)
        self.v += (g**2 - self.v) * (1 - B2)
        alpha = LR * np.sqrt(1 - B2**self.t) / (1 - B1**self.t)
        return theta - alpha * self.m / (np.sqrt(self.v) + EPS)


def _ndcg100(scores, x):
    """The authors' `get_dcg` per user: top 100 by score, ties to the lower index."""
    disc = 1.0 / np.log2(np.arange(2, 102))
    out = []
    for s, rel in zip(scores, x):
        top = np.argsort(-s, kind="stable")[:100]
        ideal = np.sort(rel)[::-1][:100]
        out.append((rel[top] * disc[: len(top)]).sum() / (ideal * disc[: len(ideal)]).sum())
    return np.asarray(out)


def _scores_and_grad(name, params, x):
    """Adversary scores s = x·a (or tanh(x A0) A1) and a function g_s ↦ ∂/∂params."""
    if name == "rlarm_nn":
        h = np.tanh(x @ params["A0"])
        s = (h @ params["A1"])[:, 0]

        def back(g_s):
            g_h = g_s[:, None] @ params["A1"].T
            return {"A0": x.T @ (g_h * (1 - h**2)), "A1": h.T @ g_s[:, None]}

        return s, back
    return (x @ params["a"])[:, 0], lambda g_s: {"a": x.T @ g_s[:, None]}


def _reference(name, W, adversary, batches, *, C, B, warmup_steps):
    """The authors' loop, float64: returns (W, adversary params) after the batches."""
    W = W.copy()
    learner_opt = _Adam(W)
    adv_opts = {k: _Adam(v) for k, v in adversary.items()}
    n = W.shape[0]
    for step, x in enumerate(batches):
        s, _ = _scores_and_grad(name, adversary, x)
        sig = 1 / (1 + np.exp(-s))
        w = sig / sig.sum()
        Wt = W - np.diag(np.diag(W))  # tf.linalg.set_diag(U, 0)
        grad = -2 * x.T @ (w[:, None] * (x - x @ Wt))
        np.fill_diagonal(grad, 0.0)  # the mask: no data gradient on the diagonal
        W = learner_opt.descend(W, grad + C * W)  # C·l2_loss(U) = (C/2)‖U‖²
        if step < warmup_steps:
            continue
        pred = x @ (W - np.diag(np.diag(W)))
        if name == "arm":
            loss = np.sum((x - pred) ** 2, axis=1)
        else:
            loss = (1 - _ndcg100(pred, x)) * n
        s, back = _scores_and_grad(name, adversary, x)
        sig = 1 / (1 + np.exp(-s))
        w = sig / sig.sum()
        g_s = (1 - sig) * w * (loss - np.sum(w * loss))  # ∂ Σ_u w_u loss_u / ∂ s_v
        ascent = back(g_s)
        adversary = {k: adv_opts[k].descend(v, -(ascent[k] - B * v)) for k, v in adversary.items()}
    return W, adversary


@pytest.mark.parametrize("product", ["sparse", "dense"])
@pytest.mark.parametrize("name", ["arm", "rlarm", "rlarm_nn"])
def test_steps_match_the_authors_loop_in_float64(name, product):
    rng = np.random.default_rng(21)
    m, n, b = 24, 30, 8
    x = (rng.random((m, n)) < 0.2).astype(np.float32)
    x[np.arange(m), rng.integers(0, n, m)] = 1.0  # nobody empty
    x_csr = sp.csr_matrix(x)
    C, B = 0.05, 0.5
    config = configs.model_config(
        "synthetic", name, C=C, B=B, learning_rate=LR, adam_eps=EPS, hidden_dim=3, batch_size=b
    )
    model = adv.make_model(name)
    state = gda.init_state(
        jax.random.PRNGKey(3), n, adversary=model.adversary, config=config, product=product
    )
    W0 = np.asarray(state.params["W"], np.float64)
    adversary0 = {k: np.asarray(v, np.float64) for k, v in state.adversary_params.items()}
    users = [rng.permutation(m)[:b] for _ in range(4)]
    step = gda.make_step(model, config, warmup_steps=1, product=product)
    with jax.default_matmul_precision("highest"):  # full float32 products on a GPU too
        for i, u in enumerate(users):
            state, _ = step(state, make_batch(x_csr, u, 96), jax.random.PRNGKey(i))
    W_ref, adversary_ref = _reference(
        name, W0, adversary0, [x[u].astype(np.float64) for u in users],
        C=C, B=B, warmup_steps=1,
    )  # fmt: skip
    W = np.asarray(state.params["W"], np.float64)
    off = ~np.eye(n, dtype=bool)
    assert np.all(np.diag(W) == 0.0)
    # Each Adam step moves an entry by about LR: a wrong gradient sign or ε shows at 1e-2.
    np.testing.assert_allclose(W[off], W_ref[off], rtol=0, atol=2e-5)
    for k, ref in adversary_ref.items():
        assert np.abs(ref - adversary0[k]).max() > 1e-3  # the adversary did move
        np.testing.assert_allclose(np.asarray(state.adversary_params[k]), ref, rtol=0, atol=2e-5)
