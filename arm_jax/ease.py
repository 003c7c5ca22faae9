"""EASE and EASE-IPW in closed form (Steck 2019; paper eq. 7–8).

With X the `[m, n]` 0/1 training matrix and D a diagonal of user weights (all 1 for EASE):

    P = (XᵀDX / m + C·I)⁻¹,        W = I − P·diag(1 / diag P)   (so diag W = 0).

This is the scaling of the paper authors' code, so their published C values carry over;
Steck's λ is C·m (`l2` below). W is invariant to scaling P, so only λ/m-vs-C matters.

The Gram matrix is built from the sparse X without densifying X: on the CPU with SciPy's
sparse product (and there solved in place in one host buffer: `ease_host`), on an
accelerator by adding each user's item pairs into it on the device (X is 0/1, so float32
counts are exact), or, on request, from user chunks densified and multiplied on the
device.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax import ease_host, io
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
        elif weights is None and binary and _max_items(x) ** 2 < 2**31:
            method = "pairs"
        else:
            method = "device"
    if method == "sparse":
        return jnp.asarray(ease_host.gram(x, weights, dtype=dtype))
    if method == "device":
        return _gram_on_device(x, weights, binary, dtype=dtype, chunk_size=chunk_size)
    if method == "pairs":
        return _gram_from_pairs(x, weights, binary, dtype=dtype, pairs_per_chunk=pairs_per_chunk)
    raise ConfigError(f"gram method must be auto, sparse, device or pairs, got {method!r}")


def chunk_layout(x: sp.csr_matrix, weights, *, chunk_size: int, dtype=np.float32):
    """Host-side layout of X for `_scan_gram`: per user chunk, padded coordinate arrays.

    Returns `(rows, cols, vals)`, each `[n_chunks, width]`: the chunk-local row, the
    column and value·√weight (in `dtype`) of every nonzero; padding points at row
    `chunk_size`, which the device scatter drops. CSR rows are contiguous, so each
    chunk is one slice.
    """
    x = x.tocsr()
    m = x.shape[0]
    n_chunks = -(-m // chunk_size)
    bounds = x.indptr[np.minimum(np.arange(n_chunks + 1) * chunk_size, m)]
    width = max(int(np.diff(bounds).max()), 1)
    nnz_per_row = np.diff(x.indptr)
    local_rows = np.repeat((np.arange(m) % chunk_size).astype(np.int32), nnz_per_row)
    values = x.data.astype(np.float64)
    if weights is not None:
        values = values * np.repeat(np.sqrt(np.asarray(weights, np.float64)), nnz_per_row)
    rows = np.full((n_chunks, width), chunk_size, np.int32)
    cols = np.zeros((n_chunks, width), np.int32)
    vals = np.zeros((n_chunks, width), dtype)
    for k in range(n_chunks):  # a loop over chunks of users, each a slice copy
        lo, hi = bounds[k], bounds[k + 1]
        rows[k, : hi - lo] = local_rows[lo:hi]
        cols[k, : hi - lo] = x.indices[lo:hi]
        vals[k, : hi - lo] = values[lo:hi]
    return rows, cols, vals


def _gram_on_device(x: sp.csr_matrix, weights, binary: bool, *, dtype, chunk_size: int):
    """Chunked XᵀDX on the device from CSR index arrays (only indices cross to the device)."""
    m, n = x.shape
    chunk_size = max(1, min(chunk_size, m))
    rows, cols, vals = chunk_layout(x, weights, chunk_size=chunk_size, dtype=np.dtype(dtype))
    exact = weights is None and dtype == jnp.float32 and binary
    n_blocks = 4 if n >= 4096 else 1
    return _scan_gram(
        jnp.asarray(rows),
        jnp.asarray(cols),
        jnp.asarray(vals, dtype),
        n=n,
        chunk_size=chunk_size,
        exact_binary=exact,
        n_blocks=n_blocks,
    ).astype(dtype)


@functools.partial(jax.jit, static_argnames=("n", "chunk_size", "exact_binary", "n_blocks"))
def _scan_gram(rows, cols, vals, *, n, chunk_size, exact_binary, n_blocks=1):
    # 0/1 entries are exact in bfloat16 and their products sum exactly in float32
    # (below 2**24), so the unweighted Gram matrix runs on tensor cores at no loss.
    in_dtype = jnp.bfloat16 if exact_binary else vals.dtype
    acc_dtype = jnp.float32 if exact_binary else vals.dtype
    precision = None if exact_binary else jax.lax.Precision.HIGHEST
    # G is symmetric: with the items cut into k blocks, only the k(k+1)/2 blocks on and
    # above the diagonal are multiplied (10/16 of the work for k = 4), then mirrored.
    size = -(-n // n_blocks)
    pairs = [(i, j) for i in range(n_blocks) for j in range(i, n_blocks)]

    def body(acc, chunk):
        r, c, v = chunk
        dense = jnp.zeros((chunk_size, size * n_blocks), in_dtype)
        dense = dense.at[r, c].set(v.astype(in_dtype), mode="drop")
        blocks = [dense[:, i * size : (i + 1) * size] for i in range(n_blocks)]
        acc = tuple(
            a
            + jax.lax.dot_general(
                blocks[i], blocks[j], (((0,), (0,)), ((), ())),
                precision=precision, preferred_element_type=acc_dtype,
            )
            for a, (i, j) in zip(acc, pairs, strict=True)
        )  # fmt: skip
        return acc, None

    acc0 = tuple(jnp.zeros((size, size), acc_dtype) for _ in pairs)
    acc, _ = jax.lax.scan(body, acc0, (rows, cols, vals))
    upper = dict(zip(pairs, acc, strict=True))
    g = jnp.block(
        [
            [upper[(i, j)] if i <= j else upper[(j, i)].T for j in range(n_blocks)]
            for i in range(n_blocks)
        ]
    )
    return g[:n, :n]


def _max_items(x: sp.csr_matrix) -> int:
    return int(np.diff(x.tocsr().indptr).max(initial=0))


def pair_layout(x: sp.csr_matrix, *, pairs_per_chunk: int):
    """Host-side layout of the users' item pairs for `_scan_pairs`, in fixed-size chunks.

    User u owns the pairs [cum_u, cum_u + k_u²) of one global numbering (k_u its items);
    chunk c holds the pairs [c·P, (c+1)·P), so a heavy user may span chunks. Per chunk:
    `offsets` (the first pair of each user that touches it, relative to the chunk's
    start; ascending, padded with P) and `users` (their rows), each `[n_chunks, width]`.
    """
    k = np.diff(x.indptr).astype(np.int64)
    if k.max(initial=0) ** 2 >= 2**31:  # pair positions are int32 on the device
        raise ConfigError(f"a user with {k.max()} items is too many for gram method 'pairs'")
    cum = np.concatenate([[0], np.cumsum(k * k)])
    total, P = int(cum[-1]), pairs_per_chunk
    starts = np.arange(max(1, -(-total // P)), dtype=np.int64) * P
    first = np.searchsorted(cum, starts, side="right") - 1  # user holding pair `start`
    last = np.searchsorted(cum, np.minimum(starts + P, total), side="left")
    width = max(int((last - first).max()), 1)
    slots = first[:, None] + np.arange(width)[None, :]
    inside = slots < last[:, None]
    offsets = np.where(inside, cum[np.clip(slots, 0, len(k))] - starts[:, None], P)
    users = np.where(inside, slots, 0)
    return offsets.astype(np.int32), users.astype(np.int32)


def _gram_from_pairs(x: sp.csr_matrix, weights, binary: bool, *, dtype, pairs_per_chunk: int):
    if x.nnz == 0:
        return jnp.zeros((x.shape[1], x.shape[1]), dtype)
    offsets, users = pair_layout(x, pairs_per_chunk=pairs_per_chunk)
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights)
    return _scan_pairs(  # 0/1 X: each pair adds w_u, with no value reads
        jnp.asarray(x.indptr, jnp.int32),
        jnp.asarray(x.indices, jnp.int32),
        None if binary else jnp.asarray(x.data, dtype),
        jnp.asarray(w, dtype),
        jnp.asarray(offsets),
        jnp.asarray(users),
        n=x.shape[1],
        pairs_per_chunk=pairs_per_chunk,
    )


@functools.partial(jax.jit, static_argnames=("n", "pairs_per_chunk"))
def _scan_pairs(indptr, indices, data, weights, offsets, users, *, n, pairs_per_chunk):
    k = indptr[1:] - indptr[:-1]
    pair = jnp.arange(pairs_per_chunk, dtype=jnp.int32)

    def body(g, chunk):
        off, usr = chunk
        slot = jnp.searchsorted(off, pair, side="right") - 1  # whose pairs hold `pair`
        u = usr[slot]
        q, ku = pair - off[slot], jnp.maximum(k[u], 1)
        i, j = q // ku, q % ku  # the pair (i-th item, j-th item) of user u
        valid = (q >= 0) & (q < k[u] * k[u])  # not past the last user's pairs
        pos_a = jnp.minimum(indptr[u] + i, indices.shape[0] - 1)
        pos_b = jnp.minimum(indptr[u] + j, indices.shape[0] - 1)
        a, b = jnp.where(valid, indices[pos_a], n), indices[pos_b]
        # Counts of 0/1 data are exact in float32 below 2**24; row n is dropped.
        add = weights[u] if data is None else weights[u] * data[pos_a] * data[pos_b]
        return g.at[a, b].add(add, mode="drop"), None

    g0 = jnp.zeros((n, n), weights.dtype)
    return jax.lax.scan(body, g0, (offsets, users))[0]


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
