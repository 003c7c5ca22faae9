"""EASE over a device mesh: the Gram matrix built by columns, the inverse on one device.

`ease.gram_matrix(mesh=...)` and `ease.fit_ease(mesh=...)` come here. Each device builds
its n/d columns of XᵀDX from the dense user chunks (`jax.shard_map`: the columns never
meet on one device); EASE's inverse is not sharded: G is gathered to one device,
inverted there (`ease.ease_from_gram`) and W handed back split by columns over the
`items` axis (`P(None, "items")`), as the adversarial models' learner is.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from arm_jax import ease, sharding
from arm_jax.ease_device import chunk_layout
from arm_jax.errors import ConfigError


def gram_by_columns(x, weights, *, mesh, dtype=jnp.float32, method="auto", chunk_size=8192):
    """XᵀDX `[n, n]` split by columns over `mesh`'s `items` axis (`ease.gram_matrix`'s
    arguments): "device", each device its columns from the dense user chunks; "sparse",
    the host's SciPy product placed so; "auto", "sparse" on CPUs (as without a mesh:
    m·n² multiply-adds of dense chunks would take a CPU minutes), else "device".

    Raises:
      ConfigError: another method ("pairs" has no sharded form here), or an `items`
        axis that does not divide the n items.
    """
    sharding.check_items(mesh, x.shape[1])
    x = ease.interactions(x)
    binary = bool(np.all(x.data == 1))
    columns = NamedSharding(mesh, PartitionSpec(None, "items"))
    if method == "auto":
        method = "sparse" if jax.default_backend() == "cpu" else "device"
    if method == "sparse":
        return sharding.put(ease.gram_matrix(x, weights, dtype=dtype, method="sparse"), columns)
    if method != "device":
        raise ConfigError(f"gram method with a mesh must be auto, device or sparse, got {method!r}")
    chunk_size = max(1, min(chunk_size, x.shape[0]))
    layout = chunk_layout(x, weights, chunk_size=chunk_size, dtype=np.dtype(dtype))
    rows, cols, vals = sharding.put(layout, (sharding.replicated(mesh),) * 3)
    exact = weights is None and dtype == jnp.float32 and binary
    g = _scan_gram_columns(
        rows, cols, vals, n=x.shape[1], chunk_size=chunk_size, exact_binary=exact, mesh=mesh
    )
    return g.astype(dtype)


@functools.partial(jax.jit, static_argnames=("n", "chunk_size", "exact_binary", "mesh"))
def _scan_gram_columns(rows, cols, vals, *, n, chunk_size, exact_binary, mesh):
    # `ease_device._scan_gram`'s chunks, each device multiplying a whole dense chunk by its own
    # n/d columns of it: G's columns never meet on one device.
    in_dtype = jnp.bfloat16 if exact_binary else vals.dtype  # exact: `ease_device._scan_gram`
    acc_dtype = jnp.float32 if exact_binary else vals.dtype
    precision = None if exact_binary else jax.lax.Precision.HIGHEST
    size = n // mesh.shape["items"]

    def local(rows, cols, vals):
        start = jax.lax.axis_index("items") * size

        def body(acc, chunk):
            r, c, v = chunk
            dense = (
                jnp.zeros((chunk_size, n), in_dtype).at[r, c].set(v.astype(in_dtype), mode="drop")
            )
            mine = jax.lax.dynamic_slice_in_dim(dense, start, size, axis=1)
            product = jax.lax.dot_general(
                dense, mine, (((0,), (0,)), ((), ())),
                precision=precision, preferred_element_type=acc_dtype,
            )  # fmt: skip
            return acc + product, None

        acc0 = jax.lax.pcast(jnp.zeros((n, size), acc_dtype), "items", to="varying")
        return jax.lax.scan(body, acc0, (rows, cols, vals))[0]

    replicated = PartitionSpec()
    return jax.shard_map(
        local, mesh=mesh, in_specs=(replicated,) * 3, out_specs=PartitionSpec(None, "items")
    )(rows, cols, vals)


def ease_by_columns(gram: jax.Array, l2, *, mesh) -> jax.Array:
    """`ease.ease_from_gram` of a Gram matrix split over `mesh` (`ease.gram_matrix(mesh=
    ...)`): the inverse on one device (`sharding.on_one_device`), W handed back split by
    columns over the `items` axis (`P(None, "items")`). `gram` is consumed (deleted once
    copied), as `ease.ease_from_gram` donates its own.

    There is no sharded SPD inverse here: the one device holds G, its factor and the
    inverse at once, about 12·n² bytes of float32 in XLA's account of the accelerators'
    program, more on a CPU (LAPACK's copies on the host): README, "More than one device".
    """
    whole = sharding.on_one_device(gram)
    if whole is not gram:
        gram.delete()  # its columns are copied: free them before the inverse
    w = ease.ease_from_gram(whole, jnp.asarray(l2, whole.dtype))
    return sharding.by_columns(w, mesh)
