"""EASE's Gram matrix XᵀDX built on the device (`ease.gram_matrix`'s "device" and "pairs").

- "device": users in chunks (`chunk_layout`), each chunk densified on the device and
  multiplied by itself (`_scan_gram`: 0/1 X in bfloat16 on tensor cores, exact);
- "pairs": each user's k² item pairs added into G (`pair_layout`, `_scan_pairs`), no
  dense chunk at all (float32 counts of 0/1 X are exact).

Only index arrays (and values where X is not 0/1) cross to the device.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from arm_jax.errors import ConfigError


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


def gram_on_device(x: sp.csr_matrix, weights, binary: bool, *, dtype, chunk_size: int):
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


def max_items(x: sp.csr_matrix) -> int:
    """The most items of one user (row) of `x`."""
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


def gram_from_pairs(x: sp.csr_matrix, weights, binary: bool, *, dtype, pairs_per_chunk: int):
    """XᵀDX on the device as each user's k² item pairs added into G (`pair_layout`)."""
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
