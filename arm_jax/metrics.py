"""Per-user ranking metrics of Liang et al. (2018), as EASE and the paper compute them.

For one user with scores `s: [n_items]`, held-out items `h: [n_items]` (0/1) and fold-in
items `f: [n_items]` (0/1):
- fold-in items are removed from the ranking (their score set to -inf);
- the top-k list is `lax.top_k` of the scores (ties: the lower item index first);
- NDCG@k = Σ_{r<k} h[top_r] / log2(r + 2), divided by the ideal DCG over
  min(#held-out, k) items;
- Recall@k = (held-out items in the top k) / min(k, #held-out).
A user with nothing held out gets 0 (never NaN); `evaluate` excludes and counts them.

The per-user math is written for one user and `jax.vmap`-ed over `[users, items]`.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.sharding import PartitionSpec

from arm_jax import sharding
from arm_jax.ease import interactions


def _discounts(k: int) -> jax.Array:
    return 1.0 / jnp.log2(jnp.arange(2, k + 2, dtype=jnp.float32))


def _ranked_hits(scores: jax.Array, heldout: jax.Array, fold_in: jax.Array | None, k: int):
    """Relevance of the top-k items of one user, `[k]` in rank order."""
    # top_k orders -0.0 below +0.0; a sort by value (the reference) treats them as equal.
    scores = jnp.where(scores == 0, 0.0, scores)
    if fold_in is not None:
        scores = jnp.where(fold_in > 0, -jnp.inf, scores)
    _, top = jax.lax.top_k(scores, k)
    hits = heldout[top] > 0
    if fold_in is not None:  # k ≥ the unmasked items would reach the masked ones
        hits = hits & (fold_in[top] <= 0)
    return hits.astype(jnp.float32)


def _ndcg_from_hits(hits, n_rel, *, k):
    """NDCG@k of one user from the relevance of its top-k items, `hits: [k]`."""
    disc = _discounts(k)
    dcg = jnp.sum(hits * disc)
    idcg = jnp.sum(jnp.where(jnp.arange(k) < n_rel, disc, 0.0))
    return jnp.where(n_rel > 0, dcg / jnp.where(n_rel > 0, idcg, 1.0), 0.0)


def _recall_from_hits(hits, n_rel, *, k):
    """Recall@k of one user from the relevance of its top-min(k, n) items."""
    denom = jnp.minimum(n_rel, k).astype(jnp.float32)
    return jnp.where(n_rel > 0, jnp.sum(hits) / jnp.maximum(denom, 1.0), 0.0)


def _ndcg_one(scores, heldout, fold_in, *, k):
    k = min(k, scores.shape[-1])
    hits = _ranked_hits(scores, heldout, fold_in, k)
    return _ndcg_from_hits(hits, jnp.sum(heldout > 0), k=k)


def _recall_one(scores, heldout, fold_in, *, k):
    hits = _ranked_hits(scores, heldout, fold_in, min(k, scores.shape[-1]))
    return _recall_from_hits(hits, jnp.sum(heldout > 0), k=k)


def _best_rank_one(scores, heldout, fold_in):
    """0-based rank of the user's best-placed held-out item, in `lax.top_k`'s order."""
    scores = jnp.where(scores == 0, 0.0, scores)
    if fold_in is not None:
        scores = jnp.where(fold_in > 0, -jnp.inf, scores)
    rel = heldout > 0
    best = jnp.max(jnp.where(rel, scores, -jnp.inf))
    item = jnp.arange(scores.shape[-1])
    first = jnp.min(jnp.where(rel & (scores == best), item, scores.shape[-1]))
    ahead = (scores > best) | ((scores == best) & (item < first))
    return jnp.where(jnp.any(rel), jnp.sum(ahead), -1).astype(jnp.int32)


def best_rank(scores: jax.Array, heldout: jax.Array, fold_in: jax.Array | None = None) -> jax.Array:
    """Per user, the 0-based rank of the best-placed held-out item among the ranked items.

    Ranks follow the top-k order of `ndcg_at_k` (fold-in items excluded, ties: the lower
    item index first), so NDCG@k = 0 exactly when best_rank >= k; a finer signal than
    NDCG@k for users with no hit in the top k. -1 for a user with nothing held out.

    Args:
      scores, heldout, fold_in: as in `ndcg_at_k`, `[n_users, n_items]` or `[n_items]`.

    Returns:
      `[n_users]` (or a scalar) int32.
    """
    if scores.ndim == 1:
        return _best_rank_one(scores, heldout, fold_in)
    axes = (0, 0, None if fold_in is None else 0)
    return jax.vmap(_best_rank_one, in_axes=axes)(scores, heldout, fold_in)


def _check_k(k) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def ndcg_at_k(
    scores: jax.Array, heldout: jax.Array, fold_in: jax.Array | None = None, *, k: int = 100
) -> jax.Array:
    """NDCG@k per user.

    Args:
      scores: `[n_users, n_items]` (or `[n_items]` for one user) model scores.
      heldout: same shape, 1 where the item is relevant (held out), else 0.
      fold_in: same shape or None; items with 1 are excluded from the ranking.
      k: cut-off.

    Returns:
      `[n_users]` (or a scalar) NDCG@k; 0 for users with nothing held out.
    """
    fn = functools.partial(_ndcg_one, k=_check_k(k))
    if scores.ndim == 1:
        return fn(scores, heldout, fold_in)
    return jax.vmap(fn, in_axes=(0, 0, None if fold_in is None else 0))(scores, heldout, fold_in)


def recall_at_k(
    scores: jax.Array, heldout: jax.Array, fold_in: jax.Array | None = None, *, k: int = 20
) -> jax.Array:
    """Recall@k per user: hits in the top k over min(k, #held-out); 0 if nothing held out.

    Shapes as in `ndcg_at_k`.
    """
    fn = functools.partial(_recall_one, k=_check_k(k))
    if scores.ndim == 1:
        return fn(scores, heldout, fold_in)
    return jax.vmap(fn, in_axes=(0, 0, None if fold_in is None else 0))(scores, heldout, fold_in)


METRICS = ("ndcg@100", "recall@20", "recall@50")


@functools.partial(jax.jit, static_argnames=("predict", "with_loss"))
def _evaluate_chunk(predict, params, fold_in, heldout, *, with_loss):
    scores = predict(params, fold_in)
    out = {
        "ndcg@100": ndcg_at_k(scores, heldout, fold_in, k=100),
        "recall@20": recall_at_k(scores, heldout, fold_in, k=20),
        "recall@50": recall_at_k(scores, heldout, fold_in, k=50),
        "best_rank": best_rank(scores, heldout, fold_in),
    }
    if with_loss:
        full = fold_in + heldout
        out["sq_loss"] = jnp.sum(jnp.square(full - predict(params, full)), axis=-1)
    return out


def _shard_top_hits(scores, heldout, fold_in, *, k: int, offset):
    """One item shard's top-k candidates of each user: scores, global item indices and
    relevance, each `[users, k]`, gathered over the `items` axis to `[users, d·k]`."""
    scores = jnp.where(scores == 0, 0.0, scores)  # as `_ranked_hits`
    scores = jnp.where(fold_in > 0, -jnp.inf, scores)
    values, top = jax.lax.top_k(scores, k)
    hits = (jnp.take_along_axis(heldout, top, -1) > 0) & (
        jnp.take_along_axis(fold_in, top, -1) <= 0
    )
    candidates = (values, top + offset, hits)
    return jax.lax.all_gather(candidates, "items", axis=1, tiled=True, to="invarying")


def _sharded_ranked_hits(scores, heldout, fold_in, *, mesh, k: int):
    """`_ranked_hits` of every user, `[users, k]`, for `[users, n]` inputs split by
    columns over the mesh's `items` axis: a top-k per shard, then a top-k of the d·k
    candidates; no `[users, n]` array is gathered on one device."""
    d = mesh.shape["items"]
    n_local = scores.shape[-1] // d

    def local(s, h, f):
        offset = jax.lax.axis_index("items") * n_local
        return _shard_top_hits(s, h, f, k=min(k, n_local), offset=offset)

    columns = PartitionSpec(None, "items")
    values, _, hits = jax.shard_map(
        local, mesh=mesh, in_specs=(columns,) * 3, out_specs=PartitionSpec()
    )(scores, heldout, fold_in)
    # The candidates lie in item order among equal scores (shard by shard, each shard's
    # in index order), so top_k's lower position first is `_ranked_hits`' lower item first.
    _, order = jax.lax.top_k(values, k)
    return jnp.take_along_axis(hits, order, -1).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("predict", "with_loss", "mesh"))
def _evaluate_chunk_sharded(predict, params, fold_in, heldout, *, with_loss, mesh):
    scores = predict(params, fold_in)
    k = min(100, scores.shape[-1])
    hits = _sharded_ranked_hits(scores, heldout, fold_in, mesh=mesh, k=k)
    n_rel = jax.vmap(lambda h: jnp.sum(h > 0))(heldout)

    def recall(top):  # the top-20 and top-50 lists are the top-100's first items
        fn = functools.partial(_recall_from_hits, k=top)
        return jax.vmap(fn)(hits[:, : min(top, k)], n_rel)

    out = {
        "ndcg@100": jax.vmap(functools.partial(_ndcg_from_hits, k=k))(hits, n_rel),
        "recall@20": recall(20),
        "recall@50": recall(50),
        "best_rank": best_rank(scores, heldout, fold_in),  # reductions over items only
    }
    replicated = sharding.replicated(mesh)
    if with_loss:  # `full` replicated as the inputs are: a sparse predict reads all of it
        full = jax.lax.with_sharding_constraint(fold_in + heldout, replicated)
        out["sq_loss"] = jnp.sum(jnp.square(full - predict(params, full)), axis=-1)
    # `[users]` vectors, whole on every process (several hosts read their own copy).
    return jax.lax.with_sharding_constraint(out, replicated)


def evaluate(
    predict: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    fold_in: sp.csr_matrix,
    heldout: sp.csr_matrix,
    *,
    chunk_size: int = 1024,
    with_loss: bool = False,
    mesh=None,
) -> dict[str, np.ndarray]:
    """Per-user NDCG@100, Recall@20 and Recall@50 of a model on fold-in/held-out users.

    Users are scored in chunks of `chunk_size` (the last chunk is zero-padded so one
    compiled program serves all chunks); only one dense chunk is on the device at a time.

    Args:
      predict: `predict(params, x) -> scores`, `x: [users, n_items]` fold-in rows. Must be
        a hashable function (a module-level function, not a fresh lambda per call) so the
        compiled evaluation is reused across calls.
      params: the model parameters passed to `predict` (e.g. the EASE matrix `W`).
      fold_in, heldout: `[n_users, n_items]` 0/1 sparse matrices (CSR, or converted to
        it); explicitly stored zeros are not items.
      chunk_size: users per device batch.
      with_loss: also return `sq_loss`, ‖x − predict(x)‖² with x = fold-in + held-out.
      mesh: a `sharding.make_mesh` mesh whose `items` axis splits `params`' scores by
        columns: each chunk's top-100 is taken per item shard, then over the shards'
        candidates (the same metrics as without a mesh, ties included); None: one device.

    Returns:
      Dict of `[n_evaluated]` arrays (`ndcg@100`, `recall@20`, `recall@50`,
      `best_rank` (see `best_rank`), maybe `sq_loss`, `n_fold_in`, `n_heldout`) plus
      `index`, the row of each evaluated user in the input. Users with nothing held
      out are excluded.

    Raises:
      ValueError: fold-in and held-out matrices of different shapes.
      ConfigError: a `mesh` whose `items` axis does not divide the n items.
    """
    fold_in, heldout = interactions(fold_in), interactions(heldout)
    if heldout.shape != fold_in.shape:
        raise ValueError(f"fold_in {fold_in.shape} and heldout {heldout.shape} differ")
    sharding.check_items(mesh, fold_in.shape[1])
    n_heldout = np.diff(heldout.indptr)
    index = np.flatnonzero(n_heldout > 0)
    chunks = _evaluate_chunks(
        predict, params, fold_in, heldout, index, chunk_size=chunk_size, with_loss=with_loss,
        mesh=mesh,
    )  # fmt: skip
    names = [*METRICS, "best_rank"] + (["sq_loss"] if with_loss else [])
    result = {
        name: np.concatenate([c[name] for c in chunks]) if chunks else np.zeros(0, np.float32)
        for name in names
    }
    result["n_fold_in"] = np.diff(fold_in.indptr)[index]
    result["n_heldout"] = n_heldout[index]
    result["index"] = index
    return result


def _evaluate_chunks(predict, params, fold_in, heldout, index, *, chunk_size, with_loss, mesh):
    """The metrics of the users `index`, `chunk_size` at a time (the last chunk padded
    when there are several, so one program serves all), as host arrays per chunk."""
    dtype = jax.dtypes.canonicalize_dtype(jnp.float32)
    chunks = []
    for start in range(0, len(index), chunk_size):
        rows = index[start : start + chunk_size]
        pad = chunk_size - len(rows) if len(index) > chunk_size else 0
        x = _dense_rows(fold_in, rows, pad, dtype)
        y = _dense_rows(heldout, rows, pad, dtype)
        if mesh is None:
            out = _evaluate_chunk(predict, params, x, y, with_loss=with_loss)
        else:  # replicated, placed before the call: XLA would split them and re-gather
            x, y = sharding.put((x, y), (sharding.replicated(mesh),) * 2)
            out = _evaluate_chunk_sharded(predict, params, x, y, with_loss=with_loss, mesh=mesh)
        chunks.append({name: np.asarray(v)[: len(rows)] for name, v in out.items()})
    return chunks


def _dense_rows(x: sp.csr_matrix, rows: np.ndarray, pad: int, dtype) -> np.ndarray:
    dense = x[rows].toarray().astype(dtype, copy=False)
    if pad:
        dense = np.concatenate([dense, np.zeros((pad, x.shape[1]), dtype)])
    return dense


def summarize(per_user: dict[str, np.ndarray], names: Sequence[str] = METRICS) -> dict:
    """Means and standard errors (std with ddof=1 over √n) of per-user metrics.

    Args:
      per_user: `{name: [n_users]}` (e.g. `evaluate`'s output).
      names: which entries to summarize.

    Returns:
      `{name: mean, name + "_se": standard error, "n_users": n}`; 0 for no users.
    """
    out = {}
    for name in names:
        values = np.asarray(per_user[name], dtype=np.float64)
        n = len(values)
        out[name] = float(values.mean()) if n else 0.0
        out[name + "_se"] = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    out["n_users"] = int(len(per_user[names[0]]))
    return out
