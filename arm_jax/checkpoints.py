"""A training run's files: orbax checkpoints of the latest and best state, `metrics.jsonl`.

`Checkpointer(workdir)` keeps two orbax `CheckpointManager`s, each step an epoch:
- `checkpoints/latest/<epoch>/`: the full train state (`tree`) and the loop's
  bookkeeping (`meta`: epoch, early stopping, history, nnz cap, the run's fingerprint),
  written every `checkpoint_every` epochs and at the last one; one is kept;
- `checkpoints/best/<epoch>/`: the best learner and adversary (`tree`), written only when
  the validation metric improves; the newest is kept, and the one the committed `latest`
  refers to (at most two).
Writes are atomic (orbax writes a temporary folder and renames it) and synchronous: an
asynchronous write holds host copies of the arrays while training goes on, more memory
than a dense W's state leaves on a 24 GiB machine (docs/performance.md). Every checkpoint's
`meta` holds a checksum of its arrays: orbax's chunks carry none, and a flipped byte
would otherwise restore as a wrong number.
"""

import glob
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from arm_jax import io
from arm_jax.errors import ConfigError

OLD_FILES = ("latest.npz", "best.npz")
"""The checkpoints of arm_jax 0.1.0, which this version does not read."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, "checkpoints")


def check_old_checkpoints(workdir: str) -> None:
    """Raises ConfigError if `workdir` holds a checkpoint of arm_jax 0.1.0 (`.npz`)."""
    for name in OLD_FILES:
        if os.path.exists(os.path.join(workdir, name)):
            raise ConfigError(
                f"{workdir} holds a checkpoint of an older arm_jax ({name}); resume it with "
                "arm_jax <= 0.1.0 or use a new workdir"
            )


def _words(leaf: jax.Array) -> jax.Array:
    """The leaf's bits as a uint32 array of its shape."""
    leaf = jnp.asarray(leaf)
    if leaf.dtype == jnp.bool_:
        return leaf.astype(jnp.uint32)
    size = leaf.dtype.itemsize
    if size < 4:
        unsigned = jnp.uint8 if size == 1 else jnp.uint16
        return jax.lax.bitcast_convert_type(leaf, unsigned).astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(leaf, jnp.uint32)


_DEVICE_BLOCK = 2**20
"""Elements per block of the device sum: a whole-leaf product would be materialised
(an `[n, n]` temporary per leaf)."""


def _leaf_sum(leaf: jax.Array) -> jax.Array:
    """Σ word·(2i + 1) mod 2³² over the leaf's words in order, blocks of rows at a time."""
    rows = leaf.reshape(-1, leaf.shape[-1]) if leaf.ndim > 1 else leaf.reshape(1, -1)
    r, k = rows.shape
    size = max(1, min(r, _DEVICE_BLOCK // max(k, 1)))

    def block(start, count):
        words = _words(jax.lax.dynamic_slice_in_dim(rows, start, count, 0)).reshape(count, k)
        index = jnp.arange(count * k, dtype=jnp.uint32).reshape(count, k)
        index = index + jnp.asarray(start, jnp.uint32) * jnp.uint32(k)
        return jnp.sum(words * (2 * index + 1), dtype=jnp.uint32)

    total = jax.lax.fori_loop(
        0, r // size, lambda b, acc: acc + block(b * size, size), jnp.zeros((), jnp.uint32)
    )
    if r % size:
        total = total + block(r // size * size, r % size)
    return total


@jax.jit
def _device_sums(leaves: list) -> list:
    # One changed word always changes the sum (odd weights); the leaves are read where
    # they are, never copied.
    return [_leaf_sum(leaf) for leaf in leaves]


_HOST_CHUNK = 2**22
"""Words per block of the host sum: its temporaries stay at a few MiB whatever the leaf."""


def _host_sum(leaf) -> int:
    """`_device_sums`'s sum of a host array, in NumPy, block by block: moving a leaf
    to the device for it would copy it (gigabytes for a large W)."""
    flat = np.ascontiguousarray(leaf).reshape(-1)
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)
    if flat.dtype.itemsize > 4:
        raise ValueError(f"tree_checksum takes leaves of at most 32 bits, got {flat.dtype}")
    words = flat.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[flat.dtype.itemsize])
    total = 0
    for start in range(0, words.size, _HOST_CHUNK):
        block = words[start : start + _HOST_CHUNK].astype(np.uint32)
        weights = np.arange(start, start + block.size, dtype=np.uint32) * np.uint32(2) + 1
        total = (total + int(np.sum(block * weights, dtype=np.uint32))) % 2**32
    return total


def _dtype_name(leaf) -> str:
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf)
    return np.dtype(dtype).name


def tree_checksum(tree) -> str:
    """A checksum of a pytree's arrays (their bits, shapes, dtypes and paths).

    The same for a tree on the host (NumPy) and on the device (jax arrays): device
    leaves are summed on the device, host leaves on the host, neither copied.
    """
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    on_device = [i for i, (_, v) in enumerate(leaves) if isinstance(v, jax.Array)]
    sums = [None] * len(leaves)
    for i, s in zip(on_device, jax.device_get(_device_sums([leaves[i][1] for i in on_device]))):
        sums[i] = int(s)
    for i, (_, v) in enumerate(leaves):
        sums[i] = _host_sum(v) if sums[i] is None else sums[i]
    text = json.dumps(
        [
            [jax.tree_util.keystr(p), list(np.shape(v)), _dtype_name(v), s]
            for (p, v), s in zip(leaves, sums)
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _meta_checksum(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def _manager(path: str, *, max_to_keep: int | None):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        # A write killed mid-way leaves `<epoch>.orbax-checkpoint-tmp*`: removed here.
        cleanup_tmp_directories=True,
        # Synchronous: see the module docstring.
        enable_async_checkpointing=False,
    )
    handlers = {"tree": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(os.path.abspath(path), options=options, item_handlers=handlers)


_DATA_FILE_BYTES = 64 * 2**20
"""OCDBT data files of at most this size: tensorstore holds a file's encoded chunks until
it is written, and orbax's 2 GiB default held about one more copy of each `[n, n]` leaf
while saving (docs/performance.md). The arrays' bytes on disk are the same."""


def _save_args(tree) -> ocp.args.PyTreeSave:
    return ocp.args.PyTreeSave(tree, ocdbt_target_data_file_size=_DATA_FILE_BYTES)


def _damaged(where: str, error: Exception | str) -> ConfigError:
    """The error for a damaged checkpoint in `where` (`.../checkpoints/KIND/EPOCH`)."""
    reason = str(error if isinstance(error, str) else f"{type(error).__name__}: {error}")
    reason = (reason.strip().splitlines() or ["unreadable"])[0][:200]
    folder = os.path.dirname(os.path.dirname(where))
    return ConfigError(
        f"{where}: the checkpoint is damaged ({reason}); to start over, delete {folder} "
        "and run again without --resume, or use a new workdir"
    )


def _check_meta(meta, where: str) -> None:
    if not isinstance(meta, dict) or meta.get("meta_checksum") != _meta_checksum(meta):
        raise _damaged(where, "its meta does not match its checksum")


def _restore(manager, path: str, step: int, like=None) -> tuple:
    """(tree or None, meta) of `step`, checked against the checksums its meta holds."""
    items = {"meta": ocp.args.JsonRestore()}
    if like is not None:
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, like)
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
        items["tree"] = ocp.args.PyTreeRestore(abstract, restore_args=restore_args)
    where = os.path.join(path, str(step))
    try:
        out = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax and tensorstore raise many kinds for a damaged file
        raise _damaged(where, e) from e
    meta = out["meta"]
    _check_meta(meta, where)
    tree = out["tree"] if like is not None else None
    if tree is not None and tree_checksum(tree) != meta.get("checksum"):
        raise _damaged(where, "its arrays do not match their checksum")
    return tree, meta


def _steps(path: str) -> list[int]:
    # A step's folder gets its number only once written (orbax renames its temporary).
    names = os.listdir(path) if os.path.isdir(path) else []
    return sorted(int(name) for name in names if name.isdigit())


def latest_meta(workdir: str) -> dict | None:
    """The bookkeeping of `workdir`'s latest checkpoint, or None where there is none.

    Reads only (a plain orbax `Checkpointer` of the `meta` item: no manager, which would
    create folders and clean up temporaries).
    """
    check_old_checkpoints(workdir)
    steps = _steps(os.path.join(checkpoint_dir(workdir), "latest"))
    if not steps:
        return None
    where = os.path.join(checkpoint_dir(workdir), "latest", str(steps[-1]))
    try:
        with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as reader:
            meta = reader.restore(os.path.abspath(os.path.join(where, "meta")))
    except Exception as e:  # orbax and tensorstore raise many kinds for a damaged file
        raise _damaged(where, e) from e
    _check_meta(meta, where)
    return meta


class Checkpointer:
    """The latest and best checkpoints of one run (module docstring); a context manager.

    Args:
      workdir: the run's folder; `checkpoints/` is created in it.
      checkpoint_every: write `latest` every this many epochs (and at the last one).
    """

    def __init__(self, workdir: str, *, checkpoint_every: int = 1):
        check_old_checkpoints(workdir)
        for leftover in glob.glob(os.path.join(glob.escape(workdir), ".*.npz.*.tmp")):
            os.remove(leftover)  # an arm_jax 0.1.0 checkpoint write killed mid-way
        self.directory = checkpoint_dir(workdir)
        self.checkpoint_every = checkpoint_every
        self._latest_path = os.path.join(self.directory, "latest")
        self._best_path = os.path.join(self.directory, "best")
        self._latest = _manager(self._latest_path, max_to_keep=1)
        self._best = _manager(self._best_path, max_to_keep=None)
        self._pending_best = None  # best epoch the `latest` being written refers to

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def should_save(self, epoch: int, *, last: bool) -> bool:
        """Whether `latest` is written after `epoch` (1-based)."""
        return last or epoch % self.checkpoint_every == 0

    def save_latest(self, epoch: int, tree, meta: dict) -> None:
        """Writes the train state `tree` and `meta` (JSON) as epoch `epoch`."""
        self._latest.wait_until_finished()
        self._prune_best()  # the previous `latest` is committed: older bests can go
        meta = {**meta, "checksum": tree_checksum(tree)}
        meta["meta_checksum"] = _meta_checksum(meta)
        args = ocp.args.Composite(tree=_save_args(tree), meta=ocp.args.JsonSave(meta))
        self._latest.save(epoch, args=args)
        self._pending_best = meta.get("best_epoch")

    def save_best(self, epoch: int, tree) -> None:
        """Writes the best learner and adversary `tree` as epoch `epoch`."""
        meta = {"epoch": epoch, "checksum": tree_checksum(tree)}
        meta["meta_checksum"] = _meta_checksum(meta)
        args = ocp.args.Composite(tree=_save_args(tree), meta=ocp.args.JsonSave(meta))
        self._best.save(epoch, args=args)
        self._best.wait_until_finished()
        # Only this best and the one the committed `latest` names are ever read again
        # (a run without a `latest` resumes from scratch): 6.3 GB each at 40,981 items.
        for step in self._best.all_steps():
            if step not in (epoch, self._pending_best):
                self._best.delete(step)

    def restore_latest(self, like) -> tuple:
        """(state tree shaped like `like`, meta) of the latest checkpoint."""
        step = self._latest.latest_step()
        return _restore(self._latest, self._latest_path, step, like)

    def restore_best(self, epoch: int, like):
        """The best tree written at `epoch`, shaped like `like`."""
        if epoch not in self._best.all_steps():
            raise _damaged(os.path.join(self._best_path, str(epoch)), "it is missing")
        return _restore(self._best, self._best_path, epoch, like)[0]

    def start_from(self, epoch: int, best_epoch: int) -> None:
        """Drops what the run will write again: every checkpoint after `epoch`, and the
        best ones but `best_epoch` (all of them for a fresh start, `epoch` 0)."""
        for step in self._latest.all_steps():
            if step > epoch or epoch == 0:
                self._latest.delete(step)
        for step in self._best.all_steps():
            if step != best_epoch or epoch == 0:
                self._best.delete(step)
        self._pending_best = best_epoch if epoch else None  # the `latest` resumed names it

    def _prune_best(self) -> None:
        if self._pending_best is None:
            return
        for step in self._best.all_steps():
            if step < self._pending_best:
                self._best.delete(step)

    def close(self) -> None:
        """Waits for the writes in flight, then frees the managers."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()
        self._prune_best()
        self._latest.close()
        self._best.close()


def _nulled(record: dict) -> dict:
    return {
        k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in record.items()
    }


class MetricWriter:
    """`metrics.jsonl` in `workdir`: one JSON line per epoch.

    Non-finite numbers are written as null (they only occur in the record of the epoch
    that diverged); `io.append_jsonl` refuses any that are left.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, "metrics.jsonl")

    def reset(self, history: list[dict]) -> None:
        """Rewrites the file with `history` (a resumed run: the killed run may have
        written epochs past its checkpoint)."""
        lines = "".join(json.dumps(_nulled(r), allow_nan=False) + "\n" for r in history)
        io.write_text(self.path, lines)

    def write(self, record: dict) -> None:
        """Appends one epoch's record."""
        io.append_jsonl(self.path, _nulled(record))
