"""The low-rank learner: W̃ = P Qᵀ − diag(P Qᵀ), `P, Q: [n, r]` (ELSA-style).

Memory linear in n: scores `(x P) Qᵀ − x ⊙ diag(P Qᵀ)`, never an n×n array; a warm start
by a randomized SVD of the sparse training matrix (`_ridge_factors`). Chosen with
`--learner=low_rank --rank=r` (`learners.make_learner`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax.learner_interface import Learner, Params, unit_squared_errors
from arm_jax.products import add_batch, sparse_matmul


def _rowdot(params) -> jax.Array:
    """`diag(P Qᵀ)`: `[n]`, each item's weight on itself (removed from the scores)."""
    return jnp.sum(params["P"] * params["Q"], axis=-1)


def _low_rank_init(key, n_items, config, *, dtype=jnp.float32, x=None):
    rank = config.rank
    if x is not None:
        return _ridge_factors(key, x, rank, C=config.C, dtype=dtype)
    k_p, k_q = jax.random.split(key)
    glorot = jax.nn.initializers.glorot_normal()
    return {"P": glorot(k_p, (n_items, rank), dtype), "Q": glorot(k_q, (n_items, rank), dtype)}


def _ridge_factors(key, x: sp.csr_matrix, rank: int, *, C: float, dtype) -> Params:
    """Warm start: the rank-r minimiser of the uniform-weight loss without the diagonal
    constraint, W = V diag(s/(s + C/2)) Vᵀ, s the top eigenvalues of XᵀX/m.

    V and s by a randomized SVD of the sparse X (Halko et al. 2011, 4 power iterations):
    memory O((m + n)·r), no n×n array. P = Q = V diag(√(s/(s + C/2))).
    """
    m, n = x.shape
    x = x.astype(np.float64)
    k = min(rank + 10, m, n)
    omega = np.asarray(jax.random.normal(key, (n, k)), np.float64)
    y = np.linalg.qr(x @ omega)[0]
    for _ in range(4):  # power iterations: sharper top subspace of a flat spectrum
        y = np.linalg.qr(x @ np.linalg.qr(x.T @ y)[0])[0]
    _, sigma, vt = np.linalg.svd(np.asarray((x.T @ y).T), full_matrices=False)
    s = np.square(sigma[:rank]) / m
    factor = np.zeros((n, rank))
    factor[:, : len(s)] = vt[: len(s)].T * np.sqrt(s / (s + C / 2))[None, :]
    # Two arrays, not one twice: the step donates every buffer of the state.
    return {"P": jnp.asarray(factor, dtype), "Q": jnp.array(factor, dtype)}


def _low_rank_scores(params, batch, x, *, product):
    """`(x P) Qᵀ − x ⊙ diag(P Qᵀ)` from the batch's coordinates: `[b, n]`."""
    del x, product
    scores = sparse_matmul(batch, params["P"]) @ params["Q"].T
    own = jnp.asarray(batch.vals).astype(scores.dtype) * _rowdot(params)[batch.cols]
    return scores.at[batch.rows, batch.cols].add(-own)


def _low_rank_penalty(params) -> jax.Array:
    """‖W̃‖² = tr(PᵀP QᵀQ) − ‖diag(P Qᵀ)‖², from `[r, r]` Gram matrices."""
    p, q = params["P"], params["Q"]
    return jnp.sum((p.T @ p) * (q.T @ q)) - jnp.sum(jnp.square(_rowdot(params)))


def _low_rank_loss(params, batch, x, weights, *, C, product):
    residual = add_batch(-_low_rank_scores(params, batch, x, product=product), batch)
    per_unit = unit_squared_errors(jnp.square(residual), weights)
    return jnp.sum(weights * per_unit) + 0.5 * C * _low_rank_penalty(params), per_unit


def low_rank_predict(params: Params, x: jax.Array) -> jax.Array:
    """Scores `(x P) Qᵀ − x ⊙ diag(P Qᵀ)` of users' rows `x: [users, n]`: `[users, n]`."""
    hi = jax.lax.Precision.HIGHEST  # as `ease.predict`: TF32 reorders near-ties on GPUs
    xp = jnp.matmul(x, params["P"], precision=hi)
    return jnp.matmul(xp, params["Q"].T, precision=hi) - x * _rowdot(params)[None, :]


def _factors(params):
    return params  # evaluated and saved as the factors: never an n×n W


def _low_rank_predictor(product):
    del product  # (x P) Qᵀ is two narrow matmuls whatever the dense learner's product
    return low_rank_predict


LOW_RANK_LEARNER = Learner(
    init=_low_rank_init,
    scores=_low_rank_scores,
    loss=_low_rank_loss,
    penalty=_low_rank_penalty,
    export=_factors,
    predictor=_low_rank_predictor,
)
"""W̃ = P Qᵀ with its diagonal's contribution removed (ELSA-style), `{"P", "Q"}` of
`[n, config.rank]`: Glorot-normal, or with a warm start `_ridge_factors`."""
