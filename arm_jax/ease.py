"""EASE and EASE-IPW in closed form (Steck 2019; paper eq. 7–8).

With X the `[m, n]` 0/1 training matrix and D a diagonal of user weights (all 1 for EASE):

    P = (XᵀDX / m + C·I)⁻¹,        W = I − P·diag(1 / diag P)   (so diag W = 0).

This is the scaling of the paper authors' code, so their published C values carry over;
Steck's λ is C·m (`l2` below). W is invariant to scaling P, so only λ/m-vs-C matters.

The Gram matrix is built from the sparse X without densifying X: on the CPU with SciPy's
sparse product (and there solved in place in one host buffer: `ease_host`), on an
accelerator by adding each user's item pairs into it on the device (X is 0/1, so float32
counts are exact), or, on request, from user chunks densified and multiplied on the
device (those two in `arm_jax.ease_device`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax import ease_host, io
from arm_jax.ease_device import (  # noqa: F401 (chunk_layout, pair_layout re-exported)
    chunk_layout,
    gram_from_pairs,
    gram_on_device,
    max_items,
    pair_layout,
)
from arm_jax.errors import ConfigError


def interactions(x) -> sp.csr_matrix:
    """`x` as a CSR matrix without explicitly stored zeros (a copy only if it has any).

    A stored 0 is not an interaction: every Gram method, θ_u and the metrics then see
    the same matrix.
    """
    x = sp.csr_matrix(x)
    if x.nnz and not np.all(x.data != 0):
        x = x.copy()
        x.eliminate_zeros()
    return x


def ipw_weights(x: sp.csr_matrix, *, beta: float) -> np.ndarray:
    """EASE-IPW user weights θ_u^-β, rescaled to sum to m.

    Args:
      x: `[m, n]` training matrix; θ_u is the number of items of user u.
      beta: exponent β ≥ 0 (β = 0 gives all ones, i.e. plain EASE).

    Returns:
      `[m]` float64 weights, positive, summing to m. A user with no items (whose row
      adds nothing to the Gram matrix) counts as θ = 1, so β = 0 is exactly EASE.
    """
    if beta < 0:
        raise ConfigError(f"--beta must be >= 0, got {beta}")
    theta = np.maximum(np.diff(interactions(x).indptr), 1).astype(np.float64)
    w = theta**-beta
    return w * (len(w) / w.sum())


def _check_dtype(dtype) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if jax.dtypes.canonicalize_dtype(dtype) != dtype:
        raise ConfigError(
            f"{dtype} requested but JAX is not configured for it: set jax_enable_x64 "
            "(launch scripts do so with --float64)"
        )
    return dtype


def gram_matrix(
    x: sp.csr_matrix,
    weights: np.ndarray | None = None,
    *,
    dtype=jnp.float32,
    method: str = "auto",
    chunk_size: int = 8192,
    pairs_per_chunk: int = 2**26,
    mesh=None,
) -> jax.Array:
    """XᵀDX as a dense `[n, n]` device array (split by columns over a `mesh`).

    Args:
      x: `[m, n]` CSR matrix, 0/1 for EASE (its values are used by every method;
        explicitly stored zeros are dropped).
      weights: `[m]` user weights (the diagonal of D) or None for all ones.
      dtype: result dtype (float32 or, with x64 enabled, float64).
      method: "sparse" (SciPy sparse product on the host), "device" (user chunks
        densified and multiplied on the default device), "pairs" (each user's k² item
        pairs added into G on the device: Σ_u k_u² updates against m·n² multiply-adds
        for "device", e.g. 3.2·10⁹ against 1.6·10¹⁵ at the MSD shape), or "auto":
        "pairs" on an accelerator for unweighted X (integer counts, so the order of the
        device's atomic adds does not matter), "device" for weighted or non-0/1 X (float
        sums in a fixed order) or a user with more than 46,340 items, "sparse" on the
        CPU (each the fastest where it is picked: docs/performance.md).
      chunk_size: users per "device" chunk.
      pairs_per_chunk: item pairs per "pairs" chunk.
      mesh: a `sharding.make_mesh` mesh: G built split by columns over its `items`
        axis (`P(None, "items")`), each device its n/d columns from the user chunks
        ("device"; "auto" off CPUs), or the host's product placed so ("sparse"; "auto"
        on CPUs): `ease_mesh.gram_by_columns`; None: one device.
    """
    dtype = _check_dtype(dtype)
    x = interactions(x)
    if mesh is not None:
        from arm_jax import ease_mesh  # which builds on this module

        kw = dict(dtype=dtype, method=method, chunk_size=chunk_size)
        return ease_mesh.gram_by_columns(x, weights, mesh=mesh, **kw)
    binary = bool(np.all(x.data == 1))
    if method == "auto":
        if jax.default_backend() == "cpu":
            method = "sparse"
        elif weights is None and binary and max_items(x) ** 2 < 2**31:
            method = "pairs"
        else:
            method = "device"
    if method == "sparse":
        return jnp.asarray(ease_host.gram(x, weights, dtype=dtype))
    if method == "device":
        return gram_on_device(x, weights, binary, dtype=dtype, chunk_size=chunk_size)
    if method == "pairs":
        return gram_from_pairs(x, weights, binary, dtype=dtype, pairs_per_chunk=pairs_per_chunk)
    raise ConfigError(f"gram method must be auto, sparse, device or pairs, got {method!r}")


def _spd_inverse(a: jax.Array) -> jax.Array:
    """Inverse of a symmetric positive definite matrix.

    EASE needs the full inverse, not a solve: W depends on every entry of P and on its
    diagonal. On the CPU LAPACK's potrf/potri does it in n³ flops (a host callback); on
    accelerators a Cholesky factorisation and a triangular solve against I.
    """

    def on_cpu(a):
        shape = jax.ShapeDtypeStruct(a.shape, a.dtype)
        return jax.pure_callback(lambda m: ease_host.spd_inverse(np.asarray(m)), shape, a)

    return jax.lax.platform_dependent(a, cpu=on_cpu, default=_cholesky_inverse)


def _cholesky_inverse(a: jax.Array) -> jax.Array:
    # The accelerators' inverse (`_spd_inverse`), apart so a CPU can compile it too.
    factor = jax.scipy.linalg.cho_factor(a, lower=True)
    return jax.scipy.linalg.cho_solve(factor, jnp.eye(a.shape[0], dtype=a.dtype))


def _ease_weights(gram: jax.Array, l2: jax.Array, inverse=_spd_inverse) -> jax.Array:
    n = gram.shape[0]
    p = inverse(gram + l2 * jnp.eye(n, dtype=gram.dtype))
    w = -p / jnp.diag(p)[None, :]
    return w.at[jnp.diag_indices(n)].set(0.0)


def host_solve(method: str = "auto") -> bool:
    """Whether EASE's Gram matrix is built and solved on the host, in one NumPy buffer:
    on the CPU backend with the "sparse" (or "auto") Gram method."""
    return jax.default_backend() == "cpu" and method in ("auto", "sparse")


def gram_for_solve(
    x: sp.csr_matrix, weights: np.ndarray | None = None, *, dtype=jnp.float32, method="auto"
) -> jax.Array | np.ndarray:
    """XᵀDX in the form `ease_from_gram` solves with the least memory: where `host_solve`,
    an aligned NumPy array (the numbers of `gram_matrix`'s "sparse" method), else
    `gram_matrix`'s device array."""
    if host_solve(method):
        return ease_host.gram(interactions(x), weights, dtype=_check_dtype(dtype))
    return gram_matrix(x, weights, dtype=dtype, method=method)


def ease_from_gram(gram: jax.Array | np.ndarray, l2) -> jax.Array:
    """EASE weights from a Gram matrix: W = I − P·diag(1/diag P), P = (G + l2·I)⁻¹.

    Args:
      gram: `[n, n]` XᵀDX: a device array (donated: its buffer is reused) or, on the
        CPU backend, `gram_for_solve`'s NumPy array, overwritten by W (`ease_host`: the
        same numbers in one buffer, which the result aliases).
      l2: Steck's λ on this Gram matrix's scale.

    Returns:
      `[n, n]` W with a zero diagonal.
    """
    if isinstance(gram, np.ndarray) and jax.default_backend() == "cpu":
        return ease_host.to_device(ease_host.ease_in_place(gram, l2))
    return _ease_from_gram(gram, l2)


@functools.partial(jax.jit, donate_argnums=0)
def _ease_from_gram(gram: jax.Array, l2: jax.Array) -> jax.Array:
    return _ease_weights(gram, l2)


def fit_ease(
    x: sp.csr_matrix,
    *,
    C: float | None = None,
    l2: float | None = None,
    weights: np.ndarray | None = None,
    dtype=jnp.float32,
    gram_method: str = "auto",
    mesh=None,
) -> jax.Array:
    """Closed-form EASE (weights None) or EASE-IPW (weights from `ipw_weights`).

    Args:
      x: `[m, n]` 0/1 training matrix (CSR).
      C: regulariser in the authors' scaling, P = (XᵀDX/m + C·I)⁻¹. Give C or l2.
      l2: Steck's λ = C·m, P = (XᵀDX + λI)⁻¹.
      weights: `[m]` user weights (D), or None for plain EASE.
      dtype: float32 or float64 (float64 needs jax_enable_x64).
      gram_method: see `gram_matrix`.
      mesh: a `sharding.make_mesh` mesh: G built split by columns, the inverse on one
        device, W split by columns (`ease_mesh.ease_by_columns`); None: one device.

    Returns:
      `[n, n]` W with zero diagonal; scores are `predict(W, x)`.
    """
    if (C is None) == (l2 is None):
        raise ConfigError("give exactly one of C (authors' scaling) or l2 (Steck's λ = C·m)")
    m = x.shape[0]
    l2 = C * m if l2 is None else l2
    if l2 <= 0:
        raise ConfigError(f"the EASE regulariser must be > 0, got C·m = {l2}")
    if mesh is not None:
        from arm_jax import ease_mesh

        gram = gram_matrix(x, weights, dtype=dtype, method=gram_method, mesh=mesh)
        return ease_mesh.ease_by_columns(gram, l2, mesh=mesh)
    gram = gram_for_solve(x, weights, dtype=dtype, method=gram_method)
    return ease_from_gram(gram, jnp.asarray(l2, gram.dtype))


def predict(w: jax.Array, x: jax.Array) -> jax.Array:
    """Item scores `x @ W` for users' rows `x: [users, n]`; `[users, n]`.

    Full float32 precision: GPUs otherwise multiply float32 in TF32 (10-bit mantissa),
    which reorders near-tied items and moves NDCG in the fourth decimal.
    """
    return jnp.matmul(x, w, precision=jax.lax.Precision.HIGHEST)


def save_model(path: str, w: jax.Array, **meta) -> None:
    """Writes `w: [n, n]` and arrays `meta` (e.g. `item_ids: [n]`) to an `.npz` atomically."""
    io.savez(path, W=np.asarray(w), **{k: np.asarray(v) for k, v in meta.items()})


def load_model(path: str) -> tuple[jax.Array, dict[str, np.ndarray]]:
    """Reads a model written by `save_model`: (`W: [n, n]` on the device, other arrays)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return jnp.asarray(arrays.pop("W")), arrays
