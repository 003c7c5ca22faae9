"""Training past one device: a device mesh, the train state's shardings, several hosts.

A mesh has two axes, `users` and `items` (`parse_mesh("users:2,items:4")`; an axis not
named has size 1). The learner's `[n, n]` W, its two Adam moments and the sparse path's
gradient buffer are sharded over `items` by columns (`P(None, "items")`: EASE's columns
are independent problems), the low-rank learner's P and Q by rows (the items); the
adversary, its Adam state and the step count are replicated. A batch is replicated;
the `[b, n]` scores and residuals it gives are split over `items` by columns (and over
`users` by rows on the dense product, see `constrain_batch`). Everything else in the
step is XLA's (GSPMD): the step is jitted with these shardings in and out, and the
compiler places the collectives. Per device that is 16·n²/d bytes of float32 learner
state (d = the `items` size) against 16·n² on one device.

Two per-shard algorithms are written out with `jax.shard_map`, where XLA alone would
gather an `[users, n]` or `[n, n]` array: evaluation's top-100 (`metrics.evaluate`:
a top-k per item shard, then a top-k of the d·k candidates) and EASE's Gram matrix
(`ease_mesh.gram_by_columns`: each device its n/d columns of XᵀX). EASE's inverse is
not sharded: `on_one_device` gathers G to one device and `by_columns` hands W back.

With `mesh=None` every function of arm_jax runs its single-device code, unchanged.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from arm_jax.errors import ConfigError

AXES = ("users", "items")
"""The mesh axes arm_jax knows, in the mesh's order."""

_ROW_SHARDED = ("P", "Q")  # the low-rank learner's factors: `[n, r]`, items by rows


def parse_mesh(spec: str) -> dict[str, int]:
    """`"users:2,items:4"` -> `{"users": 2, "items": 4}` (an axis not given has size 1).

    Raises:
      ConfigError: an axis name other than `users`/`items`, one given twice, or a size
        that is not a positive integer.
    """
    sizes = dict.fromkeys(AXES, 1)
    seen = set()
    for part in str(spec).split(","):
        name, sep, size = part.strip().partition(":")
        if name not in AXES:
            raise ConfigError(
                f"--mesh={spec}: unknown axis {name!r}; expected {' and/or '.join(AXES)} "
                "as NAME:SIZE, e.g. items:8 or users:2,items:4"
            )
        if name in seen or not sep or not size.isdigit() or int(size) < 1:
            raise ConfigError(
                f"--mesh={spec}: {part.strip()!r} must be NAME:SIZE with a size >= 1, once per axis"
            )
        seen.add(name)
        sizes[name] = int(size)
    return sizes


def make_mesh(spec: str | None, *, devices=None) -> Mesh | None:
    """The `(users, items)` mesh `spec` names over `devices` (default: every device of
    every process), or None for no `spec`.

    Raises:
      ConfigError: a bad `spec` (`parse_mesh`) or one whose size is not the number of
        devices.
    """
    if not spec:
        return None
    sizes = parse_mesh(spec)
    devices = jax.devices() if devices is None else list(devices)
    total = int(np.prod(list(sizes.values())))
    if total != len(devices):
        raise ConfigError(
            f"--mesh={spec} has {total} devices but there are {len(devices)} "
            f"({devices[0].platform}); give a mesh of {len(devices)}"
        )
    shape = tuple(sizes[a] for a in AXES)
    # Auto axes: XLA (GSPMD) propagates the shardings and places the collectives.
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def check_items(mesh: Mesh | None, n_items: int) -> None:
    """Raises ConfigError where the `items` axis does not divide the n items (jax
    arrays shard evenly); says which sizes would."""
    if mesh is None:
        return
    d = mesh.shape["items"]
    if n_items % d:
        fits = [k for k in range(2, min(n_items, 64) + 1) if n_items % k == 0][:6]
        raise ConfigError(
            f"--mesh: the items axis ({d}) must divide the {n_items} items; "
            f"sizes that do: {', '.join(map(str, fits)) or 'none up to 64'}"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device of `mesh` holds the whole array."""
    return NamedSharding(mesh, P())


def _learner_leaf(mesh: Mesh, path, leaf) -> NamedSharding:
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    if np.ndim(leaf) == 2 and keys and keys[-1] in _ROW_SHARDED:
        return NamedSharding(mesh, P("items", None))
    if np.ndim(leaf) == 2 and leaf.shape[0] == leaf.shape[1]:
        return NamedSharding(mesh, P(None, "items"))  # W, its moments, its scratch
    return replicated(mesh)


def learner_shardings(mesh: Mesh, tree):
    """Shardings of a learner's pytree (params, their optax state, its scratch): square
    `[n, n]` leaves by columns, the leaves named P or Q by rows, the rest replicated."""
    return jax.tree_util.tree_map_with_path(functools.partial(_learner_leaf, mesh), tree)


def field_shardings(mesh: Mesh, fields: dict) -> dict:
    """Shardings of a train state's array fields (`gda.TrainState`'s names as keys): the
    learner's params, Adam state and scratch by `learner_shardings`, the rest replicated."""
    rep = replicated(mesh)
    learner = ("params", "opt_state", "learner_scratch")
    return {
        k: learner_shardings(mesh, v) if k in learner else jax.tree_util.tree_map(lambda _: rep, v)
        for k, v in fields.items()
    }


def state_shardings(mesh: Mesh, state):
    """A `gda.TrainState` of `NamedSharding`s for `state` (arrays or shapes)."""
    names = ("params", "adversary_params", "opt_state", "adversary_opt_state", "step")
    return state.replace(
        **field_shardings(mesh, {k: getattr(state, k) for k in names + ("learner_scratch",)})
    )


def build_sharded(init, shardings_of, *args):
    """`init(*args)` compiled with its outputs placed by `shardings_of(shapes)`: a large
    W is created in shards on its devices, never whole on one."""
    shapes = jax.eval_shape(init, *args)
    return jax.jit(init, out_shardings=shardings_of(shapes))(*args)


def put(tree, shardings):
    """`tree` (host or device arrays) placed by `shardings`. Each process gives the
    whole array and keeps its shards; an array already spread over several processes
    (`host_tree`'s copies) is kept as it is."""

    def one(x, s):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x
        return jax.make_array_from_callback(np.shape(x), s, lambda i: np.asarray(x)[i])

    return jax.tree_util.tree_map(one, tree, shardings)


def on_one_device(x: jax.Array) -> jax.Array:
    """`x` whole on this process's first device (`x` itself where it is there): a
    device-to-device copy of its shards, or over several processes an all-gather to
    each host first (each process then holds its own whole copy)."""
    device = jax.local_devices()[0]
    if x.is_fully_addressable:
        return x if x.sharding.device_set == {device} else jax.device_put(x, device)
    return jax.device_put(gather(x), device)


def by_columns(x: jax.Array, mesh: Mesh) -> jax.Array:
    """An `[n, n]` array of this process (on one device or the host) split by columns
    over `mesh`'s `items` axis: each device takes its n/d columns (every process gives
    the same whole array)."""
    columns = NamedSharding(mesh, P(None, "items"))
    if jax.process_count() == 1 and isinstance(x, jax.Array):
        return jax.device_put(x, columns)
    return put(np.asarray(x), columns)


def place_learner(tree, mesh: Mesh | None):
    """An exported learner on the device(s): laid out by `learner_shardings` on a mesh,
    whole on the default device without one."""
    if mesh is None:
        return jax.tree_util.tree_map(jnp.asarray, tree)
    return put(tree, learner_shardings(mesh, tree))


def jit_step(step, mesh: Mesh):
    """`step(state, batch, key)` jitted with the state donated and its shardings in and
    out (`state_shardings`); the batch, key and metrics replicated. The shardings are
    built at the first call from the state's structure."""
    compiled = {}
    rep = replicated(mesh)

    def sharded_step(state, batch, key):
        treedef = jax.tree_util.tree_structure(state)
        if treedef not in compiled:
            s = state_shardings(mesh, state)
            compiled[treedef] = jax.jit(
                step, donate_argnums=0, in_shardings=(s, rep, rep), out_shardings=(s, rep)
            )
        with jax.set_mesh(mesh):  # `constrain_batch` reads it while tracing
            return compiled[treedef](state, batch, key)

    return sharded_step


def constrain_batch(x: jax.Array) -> jax.Array:
    """The dense batch `x: [b, n]` split by rows over the `users` axis of the mesh being
    traced under (`jit_step`), so that `x W` and its gradient split the users; `x`
    itself (no op) outside a mesh: the single-device program is unchanged."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or tuple(mesh.axis_names) != AXES or mesh.shape["users"] == 1:
        return x
    return jax.lax.with_sharding_constraint(x, P("users", None))


def host_tree(tree):
    """Host (NumPy) copy of a pytree of arrays: the whole arrays where this process
    holds every shard, else its own shards' arrays kept on their devices (a copy)."""

    def copy(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.array(x)  # a copy: a view would hold buffers the next step donates
        return x.copy()  # several hosts: a shard each, never gathered

    return jax.tree_util.tree_map(copy, tree)


def gather(tree):
    """Whole host (NumPy) copies of a pytree's arrays on every process: a device get
    where this process holds every shard, else an all-gather across the processes
    (every process must call it). An `[n, n]` W then sits whole in each host's memory."""

    def whole(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(whole, tree)


def is_primary() -> bool:
    """Whether this process writes the run's files (process 0 of several, or the one)."""
    return jax.process_index() == 0


def check_distributed(coordinator_address, num_processes, process_id) -> bool:
    """Whether several processes are asked for; ConfigError for a partial set of flags
    or values out of range (before anything is started or written)."""
    given = {
        "--coordinator_address": coordinator_address,
        "--num_processes": num_processes,
        "--process_id": process_id,
    }
    if all(v is None for v in given.values()):
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ConfigError(
            f"several hosts need --coordinator_address, --num_processes and --process_id "
            f"together; missing {', '.join(missing)}"
        )
    if not str(coordinator_address).rpartition(":")[2].isdigit():
        raise ConfigError(f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ConfigError(
            f"--process_id must be in [0, --num_processes={num_processes}), got {process_id}"
        )
    return True


def distributed_init(coordinator_address, num_processes, process_id) -> bool:
    """`jax.distributed.initialize` for several processes (hosts), checked first by
    `check_distributed`; nothing for no flags. Call before any other jax call.

    Returns:
      Whether it started a multi-process run.
    """
    if not check_distributed(coordinator_address, num_processes, process_id):
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    return True
