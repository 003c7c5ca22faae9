"""Mini-batches of users' rows as padded sparse coordinates, and the product `x_u W`.

`x_u W` is computed one of three ways (`product=`):
- "sparse": a loop over the batch's nonzeros that adds row `W[i]` into user `u`'s row
  (the gradient scatters the residual rows back into `W`'s rows, in place). Work ∝ nnz·n.
- "dense": the batch is made dense on the device and multiplied, `[b, n] @ [n, n]`
  (tensor cores on a GPU). Work ∝ b·n².
- "segment": the rows `W[i]` of the nonzeros gathered, scaled and scatter-added into
  their users' rows, thousands of nonzeros per kernel (the gradient is the transposed
  scatter-add into W's rows): work ∝ nnz·n in a few wide kernels, for accelerators.
  Chunks keep the gathered `[chunk, n]` rows within 2²⁸ elements should the compiler
  materialise them.
"auto" picks sparse on CPU and dense on accelerators, the faster of the two on each
(measurements in docs/performance.md).

The coordinate arrays have a fixed length per run (`nnz_cap`, padding entries have value
0), so every batch reuses one compiled step.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp


@flax.struct.dataclass
class SparseBatch:
    """A mini-batch of users' rows as padded coordinates (fixed length, so no retrace).

    Attributes:
      rows: `[nnz_cap]` int32 user position in the batch, 0 ≤ rows < n_users.
      cols: `[nnz_cap]` int32 item index.
      vals: `[nnz_cap]` float values; padding entries have value 0 (row 0, col 0).
      nnz: int32 scalar, the real entries: `[0, nnz)`, padding after them. The scans
        over entries stop there (a traced bound: no retrace, no work on padding).
      n_users: b, users in the batch (static).
      n_items: n (static).
    """

    rows: jax.Array
    cols: jax.Array
    vals: jax.Array
    nnz: jax.Array
    n_users: int = flax.struct.field(pytree_node=False)
    n_items: int = flax.struct.field(pytree_node=False)


def make_batch(x: sp.csr_matrix, users: np.ndarray, nnz_cap: int, dtype=np.float32) -> SparseBatch:
    """Host-side: the rows `users` of `x` as a `SparseBatch` padded to `nnz_cap` entries.

    Args:
      x: `[m, n]` CSR matrix.
      users: `[b]` row indices.
      nnz_cap: length of the coordinate arrays; must be ≥ the rows' nonzeros.
      dtype: dtype of `vals`.
    """
    sub = x[np.asarray(users)]
    nnz = sub.nnz
    if nnz > nnz_cap:
        raise ValueError(f"batch has {nnz} nonzeros, more than nnz_cap={nnz_cap}")
    rows = np.zeros(nnz_cap, np.int32)
    cols = np.zeros(nnz_cap, np.int32)
    vals = np.zeros(nnz_cap, dtype)
    rows[:nnz] = np.repeat(np.arange(sub.shape[0], dtype=np.int32), np.diff(sub.indptr))
    cols[:nnz] = sub.indices
    vals[:nnz] = sub.data
    return SparseBatch(rows, cols, vals, np.int32(nnz), n_users=sub.shape[0], n_items=x.shape[1])


def add_batch(acc: jax.Array, batch: SparseBatch) -> jax.Array:
    """`acc + x_batch` for a `[b, n]` array, without a dense copy of the batch."""
    return acc.at[batch.rows, batch.cols].add(jnp.asarray(batch.vals).astype(acc.dtype))


def densify(batch: SparseBatch, dtype=jnp.float32) -> jax.Array:
    """The batch as a dense `[b, n]` array (built on the device)."""
    return add_batch(jnp.zeros((batch.n_users, batch.n_items), dtype), batch)


def sparse_matmul(batch: SparseBatch, m: jax.Array) -> jax.Array:
    """`x_batch @ m` for a narrow `m: [n, k]` (adversaries); `[b, k]`."""
    rows = m[batch.cols] * batch.vals[:, None].astype(m.dtype)
    return jax.ops.segment_sum(rows, batch.rows, num_segments=batch.n_users)


def _coordinates(rows, cols, vals, dtype):
    # Host (NumPy) batches too: the loops index these with traced positions.
    return jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(vals, dtype)


# Nonzeros read per iteration of the x·W loop. Entries of one user are consecutive (as
# `make_batch` writes them), so each iteration adds up to this many of a user's rows of W
# at once: several row reads in flight instead of one. 4 was fastest on a CPU
# (docs/performance.md).
_ROWS_PER_STEP = 4


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _scan_rows_product(w, rows, cols, vals, nnz, n_users):
    """`Σ_e vals[e] · w[cols[e]]` added into row `rows[e]`, e < nnz: `[n_users, n]`."""
    rows, cols, vals = _coordinates(rows, cols, vals, w.dtype)
    k = _ROWS_PER_STEP
    rows, cols, vals = jnp.pad(rows, (0, k)), jnp.pad(cols, (0, k)), jnp.pad(vals, (0, k))

    def add_rows(carry):
        e, acc = carry
        r = rows[e]
        window = e + jnp.arange(k)
        # The run of entries of user r starting at e (any order of rows stays correct).
        take = jnp.cumprod((rows[window] == r) & (window < nnz)).astype(bool)
        cur = jax.lax.dynamic_slice_in_dim(acc, r, 1, 0)
        for j in range(k):
            scale = jnp.where(take[j], vals[e + j], 0.0)
            cur = cur + jax.lax.dynamic_slice_in_dim(w, cols[e + j], 1, 0) * scale
        acc = jax.lax.dynamic_update_slice_in_dim(acc, cur, r, 0)
        return e + jnp.sum(take, dtype=jnp.int32), acc

    init = (jnp.zeros((), jnp.int32), jnp.zeros((n_users, w.shape[1]), w.dtype))
    return jax.lax.while_loop(lambda carry: carry[0] < nnz, add_rows, init)[1]


def _scan_rows_fwd(w, rows, cols, vals, nnz, n_users):
    out = _scan_rows_product(w, rows, cols, vals, nnz, n_users)
    return out, (w.shape, rows, cols, vals, nnz)


def scatter_rows(
    acc: jax.Array, batch: SparseBatch, g: jax.Array, scale: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """`x_batchᵀ diag(scale) g` written into the batch's items' rows of `acc`, in place.

    A loop over the nonzeros that touches only the batch's items' rows and never clears
    `acc`: the first entry that reaches a row overwrites it, later ones add to it. Rows
    of items not in the batch keep whatever they held, so read `acc` only where
    `touched`.

    Args:
      acc: `[n, k]` buffer (donate it); its contents on entry are ignored.
      batch: the users' rows.
      g: `[b, k]`.
      scale: `[b]` per-user factors applied as the rows are read (no scaled `[b, k]`
        copy of `g`), or None for 1.

    Returns:
      (acc, touched `[n]` bool: the rows that now hold the product; the others are
      zero in it).
    """
    rows, cols, vals = _coordinates(batch.rows, batch.cols, batch.vals, g.dtype)
    if scale is not None:
        vals = vals * scale.astype(g.dtype)[rows]

    def set_add_row(e, carry):
        acc, touched = carry
        r, c = rows[e], cols[e]
        row = jax.lax.dynamic_slice_in_dim(g, r, 1, 0) * vals[e]
        cur = jax.lax.dynamic_slice_in_dim(acc, c, 1, 0)
        cur = jnp.where(touched[c], cur, jnp.zeros_like(cur))
        acc = jax.lax.dynamic_update_slice_in_dim(acc, cur + row, c, 0)
        return acc, touched.at[c].set(True)

    touched = jnp.zeros((acc.shape[0],), bool)
    return jax.lax.fori_loop(0, batch.nnz, set_add_row, (acc, touched))


def sparse_residual(w: jax.Array, batch: SparseBatch) -> jax.Array:
    """`x − x W` for a `w` with zero diagonal, with no dense `x`: `[b, n]`.

    The batch's values are added into `−x W` in place, so a step's only `[b, n]` array
    is this one (a CPU then page-faults one fresh `[b, n]` temporary a step, not three).
    """
    rows, cols, vals = _coordinates(batch.rows, batch.cols, batch.vals, w.dtype)
    return add_batch(_scan_rows_product(w, rows, cols, -vals, batch.nnz, batch.n_users), batch)


def entries_by_item(batch: SparseBatch, dtype) -> tuple:
    """The batch's entries sorted by item, padding last.

    Stable: an item's entries keep the batch's order, so sums over them add in the
    order `scatter_rows` adds them.

    Returns:
      (rows, items, vals): `[nnz_cap]` each; `items` ascending, n for padding.
    """
    rows, cols, vals = _coordinates(batch.rows, batch.cols, batch.vals, dtype)
    items = jnp.where(jnp.arange(cols.shape[0]) < batch.nnz, cols, batch.n_items)
    order = jnp.argsort(items, stable=True)
    return rows[order], items[order], vals[order]


def _scan_rows_bwd(n_users, res, g):
    # d/dW of Σ_e v_e ⟨g[r_e], W[c_e]⟩ = x_batchᵀ g.
    shape, rows, cols, vals, nnz = res
    batch = SparseBatch(rows, cols, vals, nnz, n_users=n_users, n_items=shape[0])
    # Into zeros, rows outside the batch stay 0: no need for the touched mask.
    grad = scatter_rows(jnp.zeros(shape, g.dtype), batch, g)[0]
    return grad, None, None, None, None


_scan_rows_product.defvjp(_scan_rows_fwd, _scan_rows_bwd)


PRODUCTS = ("auto", "dense", "sparse", "segment")
"""The `product=` choices (see the module docstring)."""


GATHERED_ELEMENTS = 2**28
"""Budget of a `[chunk, n]` block of gathered rows (1 GiB of float32, should the compiler
materialise it): the chunk size of the segment product and, on accelerators, of the rank
loss's comparisons."""


def _gather_scatter(src, take, put, vals, nnz, acc):
    """`acc[put[e]] += vals[e] · src[take[e]]` for e < nnz, in chunks of nonzeros."""
    chunk = max(1, min(GATHERED_ELEMENTS // max(src.shape[1], 1), take.shape[0]))
    pad = -take.shape[0] % chunk
    take, put, vals = jnp.pad(take, (0, pad)), jnp.pad(put, (0, pad)), jnp.pad(vals, (0, pad))

    def add_chunk(i, acc):
        t, p, v = (jax.lax.dynamic_slice_in_dim(a, i * chunk, chunk) for a in (take, put, vals))
        v = jnp.where(i * chunk + jnp.arange(chunk) < nnz, v, 0.0)  # padding adds nothing
        return acc.at[p].add(src[t] * v[:, None])

    # Chunks past the real entries are skipped.
    return jax.lax.fori_loop(0, (nnz + chunk - 1) // chunk, add_chunk, acc)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _segment_product(w, rows, cols, vals, nnz, n_users):
    """`x_batch @ w` by gather and scatter-add: `[n_users, n]`."""
    rows, cols, vals = _coordinates(rows, cols, vals, w.dtype)
    return _gather_scatter(w, cols, rows, vals, nnz, jnp.zeros((n_users, w.shape[1]), w.dtype))


def _segment_fwd(w, rows, cols, vals, nnz, n_users):
    return _segment_product(w, rows, cols, vals, nnz, n_users), (w.shape, rows, cols, vals, nnz)


def _segment_bwd(n_users, res, g):
    shape, rows, cols, vals, nnz = res  # d/dW = x_batchᵀ g: g's rows into the items' rows
    rows, cols, vals = _coordinates(rows, cols, vals, g.dtype)
    grad = _gather_scatter(g, rows, cols, vals, nnz, jnp.zeros(shape, g.dtype))
    return grad, None, None, None, None


_segment_product.defvjp(_segment_fwd, _segment_bwd)


def resolve_product(product: str) -> str:
    """ "auto" → "sparse" on CPU, "dense" on GPU/TPU; the others unchanged."""
    if product == "auto":
        return "sparse" if jax.default_backend() == "cpu" else "dense"
    if product not in PRODUCTS:
        raise ValueError(f"product must be one of {', '.join(PRODUCTS)}, got {product!r}")
    return product


def batch_product(
    w: jax.Array, batch: SparseBatch, x: jax.Array, *, product: str, zero_diagonal: bool = False
) -> jax.Array:
    """Predictions `x_u W̃` with W̃ = W with its diagonal masked to 0.

    Args:
      w: `[n, n]` learner matrix (its diagonal is ignored).
      batch: the users' rows, sparse.
      x: `[b, n]` the same rows, dense (used by the dense product and the mask).
      product: "dense", "sparse" or "segment" (resolved, see `resolve_product`).
      zero_diagonal: promise that `w`'s diagonal is already 0 (a `TrainState`'s W
        always is): skips the mask.

    Returns:
      `[b, n]` scores.
    """
    if product == "dense":
        xw = x @ w
    elif product == "segment":
        xw = _segment_product(w, batch.rows, batch.cols, batch.vals, batch.nnz, batch.n_users)
    else:
        xw = _scan_rows_product(w, batch.rows, batch.cols, batch.vals, batch.nnz, batch.n_users)
    if zero_diagonal:
        return xw
    # x W̃ = x W − x ⊙ diag(W): the mask costs an n-vector, not an [n, n] copy.
    return xw - x * jnp.diagonal(w)[None, :]


def predict_sparse(w: jax.Array, x: jax.Array) -> jax.Array:
    """`x @ W` (= `ease.predict`) from the nonzeros of `x: [users, n]` where that pays.

    For `metrics.evaluate` on a CPU, where the sparse scan is far cheaper than a dense
    `[1024, n] @ [n, n]` chunk (docs/performance.md). Up to 32 nonzeros per
    user on average go through the scan; a denser chunk falls back to the matmul.
    """
    users, n = x.shape
    size = users * 32
    count = jnp.sum(x != 0)

    def sparse(_):
        rows, cols = jnp.nonzero(x, size=size, fill_value=0)
        vals = jnp.where(jnp.arange(size) < count, x[rows, cols], 0.0)
        rows, cols = rows.astype(jnp.int32), cols.astype(jnp.int32)
        batch = SparseBatch(rows, cols, vals, count.astype(jnp.int32), users, n)
        return batch_product(w, batch, jnp.zeros_like(x), product="sparse")

    return jax.lax.cond(count <= size, sparse, lambda _: x @ w, None)
