"""Closed-form item-item models beside EASE: CVaR-EASE (worst-case users) and EDLAE.

**CVaR-EASE** reweights the worst α of the training users, with no learned adversary.
With X the `[m, n]` training matrix and λ = C·m (the EASE scaling of `arm_jax.ease`):

  round 0:  w⁽⁰⁾ = 1 (every user), W₀ = weighted EASE with D = diag(w⁽⁰⁾), i.e. EASE;
  round t = 1..R:
    (b) each training user's loss under W_{t−1}: ℓ_u = ‖x_u − x_u W_{t−1}‖² (`loss=
        "squared"`, the EASE loss on the user's own row) or 1 − NDCG@100 of ranking all
        items by x_u W_{t−1} against x_u (`loss="rank"`, R-LARM's rank loss);
    (c) q⁽ᵗ⁾ = the CVaR_α best response to ℓ: the maximiser of Σ_u q_u ℓ_u over
        {0 <= q_u <= 1/α, mean(q) = 1} (the dual of CVaR_α: weight 1/α on the ⌊αm⌋
        largest losses, the remainder αm − ⌊αm⌋ of 1/α on the next, 0 elsewhere; equal
        losses are taken in user order);
    (a) w⁽ᵗ⁾ = (1 + q⁽¹⁾ + … + q⁽ᵗ⁾) / (t + 1), the average of the responses so far
        with the uniform start (fictitious play: a single best response would swing
        between user sets), and W_t = EASE with D = diag(w⁽ᵗ⁾): P = (XᵀDX + λI)⁻¹,
        W = I − P·diag(1/diag P). Every w⁽ᵗ⁾ averages 1, as EASE-IPW's weights do.
  The model is W_R. α = 1 gives q = 1, so W_R is EASE.

**EDLAE** (Steck, "Autoencoders that don't overfit towards the identity", NeurIPS 2020),
the full-rank emphasized denoising linear autoencoder in closed form. Training a linear
autoencoder with dropout probability p on the inputs is, in expectation, the
L2-regularised problem min_B ‖X − XB‖² + ‖Λ^{1/2} B‖² with

    Λ = p/(1−p) · diagMat(diag(XᵀX)) + λI,

whose solution is B = (XᵀX + Λ)⁻¹ XᵀX (denoising alone; `zero_diagonal=False`). With
full emphasis on the dropped-out inputs the learned diagonal is 0 (the identity is not
learned), and the full-rank solution is, with P = (XᵀX + Λ)⁻¹,

    B = I − P · diagMat(1 ⊘ diag(P))        (`zero_diagonal=True`, the default)

— the paper's Eqs. 8 and 9, as its authors' notebook `learn_EDLAE_fullrank` (github
hasteck/EDLAE_NeurIPS2020) computes them. The paper's own text was not at hand here: the
formulas above are the published ones as that notebook implements them. p = 0 is EASE.

`fit_closed_form` fits any closed-form model of a run (EASE and EASE-IPW of
`arm_jax.ease` too) on a split, on one device or over a mesh.
"""

import functools
import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax import ease, ease_mesh, sharding
from arm_jax.ease import ease_from_gram, gram_matrix, interactions, predict
from arm_jax.errors import ConfigError
from arm_jax.metrics import ndcg_at_k
from arm_jax.products import predict_sparse, resolve_product

if TYPE_CHECKING:  # configs (and data, through it) import the learners, which import this
    from arm_jax.configs import ModelConfig
    from arm_jax.data import Split

LOSSES = ("squared", "rank")


def check_cvar(alpha: float, rounds: int, loss: str = "squared") -> None:
    """Raises ConfigError naming the flag for α outside (0, 1], rounds < 1, a bad loss."""
    if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
        raise ConfigError(f"--alpha (CVaR level) must be in (0, 1], got {alpha}")
    if int(rounds) != rounds or rounds < 1:
        raise ConfigError(f"--rounds must be an integer >= 1, got {rounds}")
    if loss not in LOSSES:
        raise ConfigError(f"CVaR-EASE loss must be one of {', '.join(LOSSES)}, got {loss!r}")


def cvar_weights(losses: np.ndarray, alpha: float) -> np.ndarray:
    """The CVaR_α best response to `losses: [m]`: `[m]` weights in [0, 1/α], mean 1.

    1/α on the ⌊αm⌋ largest losses, (αm − ⌊αm⌋)/α on the next, 0 on the rest; equal
    losses in user order (a stable sort).
    """
    check_cvar(alpha, 1)
    losses = np.asarray(losses, dtype=np.float64)
    m = losses.size
    order = np.argsort(-losses, kind="stable")
    mass = np.clip(alpha * m - np.arange(m), 0.0, 1.0)  # how much of each rank is taken
    w = np.empty(m)
    w[order] = mass / alpha
    return w


@functools.partial(jax.jit, static_argnames=("predict_fn", "loss"))
def _chunk_losses(predict_fn, w, x, *, loss):
    scores = predict_fn(w, x)
    if loss == "squared":
        return jnp.sum(jnp.square(x - scores), axis=-1)
    return 1.0 - ndcg_at_k(scores, x, None, k=100)


def user_losses(
    w: jax.Array, x: sp.csr_matrix, *, loss: str = "squared", chunk_size: int = 1024
) -> np.ndarray:
    """Each row's loss under `w: [n, n]`: ‖x_u − x_u W‖² or 1 − NDCG@100 (own row).

    Rows go in chunks of `chunk_size` (the last zero-padded: one compiled program);
    `x W` from the chunk's nonzeros on a CPU (`predict_sparse`), a matmul elsewhere.

    Returns:
      `[m]` float64 NumPy array.
    """
    x = interactions(x)
    m = x.shape[0]
    fn = predict_sparse if resolve_product("auto") == "sparse" else predict
    dtype = w.dtype
    out = []
    for start in range(0, m, chunk_size):  # chunks of users, each one device call
        rows = x[start : start + chunk_size].toarray().astype(dtype)
        pad = chunk_size - rows.shape[0] if m > chunk_size else 0
        rows = np.pad(rows, ((0, pad), (0, 0)))
        value = _chunk_losses(fn, w, jnp.asarray(rows), loss=loss)
        out.append(np.asarray(value, np.float64)[: min(chunk_size, m - start)])
    return np.concatenate(out) if out else np.zeros(0)


def _l2(x, C, l2) -> float:
    if (C is None) == (l2 is None):
        raise ConfigError("give exactly one of C (authors' scaling) or l2 (Steck's λ = C·m)")
    value = C * x.shape[0] if l2 is None else l2
    if not value > 0:
        raise ConfigError(f"the regulariser must be > 0, got C·m = {value}")
    return float(value)


def fit_cvar_ease(
    x: sp.csr_matrix,
    *,
    alpha: float,
    rounds: int,
    C: float | None = None,
    l2: float | None = None,
    loss: str = "squared",
    dtype=jnp.float32,
    return_weights: bool = False,
):
    """CVaR-EASE (module docstring): R rounds of CVaR_α reweighting of weighted EASE.

    Args:
      x: `[m, n]` 0/1 training matrix (CSR).
      alpha: α in (0, 1], the share of worst users the responses weight.
      rounds: R >= 1 reweighted fits after the first (EASE) one.
      C, l2: the EASE regulariser (give one; λ = C·m).
      loss: "squared" or "rank", the per-user loss of step (b).
      dtype: float32 or float64 (with x64 enabled).
      return_weights: also return the last weights w⁽ᴿ⁾, `[m]`.

    Returns:
      `[n, n]` W with zero diagonal (and the weights if asked).
    """
    check_cvar(alpha, rounds, loss)
    lam = _l2(x, C, l2)
    x = interactions(x)
    weights = np.ones(x.shape[0])
    total = weights.copy()
    w = ease_from_gram(gram_matrix(x, None, dtype=dtype), jnp.asarray(lam, dtype))
    for t in range(1, rounds + 1):  # a few closed-form solves, not a loop over users
        total += cvar_weights(user_losses(w, x, loss=loss), alpha)
        weights = total / (t + 1)
        gram = gram_matrix(x, weights, dtype=dtype)
        w = ease_from_gram(gram, jnp.asarray(lam, dtype))
    return (w, weights) if return_weights else w


def check_dropout(p: float) -> None:
    """Raises ConfigError naming the flag for a dropout probability outside [0, 1)."""
    if not (isinstance(p, (int, float)) and 0 <= p < 1):
        raise ConfigError(f"--dropout_p must be in [0, 1), got {p}")


@jax.jit
def _dlae_from_gram(gram: jax.Array, lam_diag: jax.Array) -> jax.Array:
    # B = (G + Λ)⁻¹G needs no diagonal of an inverse: a Cholesky solve.
    factor = jax.scipy.linalg.cho_factor(gram + jnp.diag(lam_diag), lower=True)
    return jax.scipy.linalg.cho_solve(factor, gram)


def fit_edlae(
    x: sp.csr_matrix,
    *,
    dropout_p: float,
    C: float | None = None,
    l2: float | None = None,
    zero_diagonal: bool = True,
    dtype=jnp.float32,
    gram_method: str = "auto",
) -> jax.Array:
    """Full-rank EDLAE (module docstring; Steck 2020, Eqs. 8–9) in closed form.

    Args:
      x: `[m, n]` 0/1 training matrix (CSR).
      dropout_p: p in [0, 1), the dropout probability the penalty Λ stands for.
      C, l2: λ of Λ's constant part (give one; λ = C·m as for EASE).
      zero_diagonal: full emphasis, B = I − P·diagMat(1 ⊘ diag P) (EDLAE); False gives
        the denoising autoencoder without emphasis, B = (XᵀX + Λ)⁻¹XᵀX.
      dtype, gram_method: as in `ease.fit_ease`.

    Returns:
      `[n, n]` B (zero diagonal with `zero_diagonal`).
    """
    check_dropout(dropout_p)
    lam = _l2(x, C, l2)
    gram = gram_matrix(x, None, dtype=dtype, method=gram_method)
    diag = jnp.diagonal(gram) * (dropout_p / (1.0 - dropout_p))
    if not zero_diagonal:
        return _dlae_from_gram(gram, diag + lam)
    # P = (G + Λ)⁻¹ = (G + diagMat(p/(1−p)·diag G) + λI)⁻¹: EASE's solve on a shifted G.
    gram = gram + jnp.diag(diag)
    return ease_from_gram(gram, jnp.asarray(lam, gram.dtype))


def _timed(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` once its arrays are ready, and the seconds it took."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - start


def fit_closed_form(
    split: "Split", model: str, config: "ModelConfig", *, dtype=jnp.float32, mesh=None
) -> tuple[jax.Array, dict[str, float]]:
    """EASE, EASE-IPW, CVaR-EASE or EDLAE on `split.train`; returns W and seconds (Gram
    and solve for EASE and EASE-IPW, the whole fit for the others).

    With a `mesh`, W is returned split by columns over it: EASE's and EASE-IPW's Gram
    matrix is built so too (the inverse on one device, `ease_mesh.ease_by_columns`); the
    worst-case baselines are fitted on one device, then placed.
    """
    if model in ("cvar_ease", "edlae"):
        w, seconds = _fit_worst_case(split, model, config, dtype=dtype)
        return (w if mesh is None else sharding.by_columns(w, mesh)), seconds
    weights = ease.ipw_weights(split.train, beta=config.beta) if model == "ease_ipw" else None
    if mesh is None:  # on the CPU a NumPy Gram matrix, solved in place (ease_host)
        build, solve = ease.gram_for_solve, ease.ease_from_gram
    else:
        build = functools.partial(ease.gram_matrix, mesh=mesh)
        solve = functools.partial(ease_mesh.ease_by_columns, mesh=mesh)
    gram, t_gram = _timed(build, split.train, weights, dtype=dtype)
    w, t_solve = _timed(solve, gram, jnp.asarray(config.C * split.train.shape[0], dtype))
    return w, {"gram": t_gram, "solve": t_solve}


def _fit_worst_case(split: "Split", model: str, config: "ModelConfig", *, dtype):
    if model == "cvar_ease":
        fit = functools.partial(
            fit_cvar_ease,
            alpha=config.alpha,
            rounds=config.rounds,
            loss=config.cvar_loss,
        )
    else:
        fit = functools.partial(fit_edlae, dropout_p=config.dropout_p)
    w, seconds = _timed(fit, split.train, C=config.C, dtype=dtype)
    return w, {"fit": seconds}
