"""The on-disk cache: where it lives, file checksums, and splits saved as `.npz`.

A cached split is keyed by the SHA-256 of its source files and the split options, so an
edited file or a changed option makes a new entry. Every write is atomic
(`arm_jax.io`), so an interrupted run leaves no partial entry.
"""

import hashlib
import json
import os
import zipfile

import numpy as np
import scipy.sparse as sp

from arm_jax import io as aio
from arm_jax.data.split import MATRICES, Split
from arm_jax.errors import DataError

# Bump when the split or the cache layout changes, to invalidate old entries.
# 2: interactions ids are their text ("01" ≠ "1"); 3: a repeated (user, item) pair counts
# once, and an entry holds its key and the counts of dropped rows.
CACHE_VERSION = 3
_CHUNK = 1 << 22


def default_cache_dir() -> str:
    """`$ARM_JAX_CACHE`, else `$XDG_CACHE_HOME/arm_jax`, else `~/.cache/arm_jax`."""
    if os.environ.get("ARM_JAX_CACHE"):
        return os.environ["ARM_JAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "arm_jax")


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksum(path: str, cache_dir: str) -> str:
    """SHA-256 of `path`, remembered per (path, inode, size, mtime, ctime) to skip
    re-reading big files. The change time is in the key because a copy that keeps the
    old mtime (`cp -p`, `rsync -a`, `os.utime`) still changes it."""
    stat = os.stat(path)
    memo_path = os.path.join(cache_dir, "checksums.json")
    key = "|".join(
        str(v)
        for v in (os.path.abspath(path), stat.st_ino, stat.st_size)
        + (stat.st_mtime_ns, stat.st_ctime_ns)
    )
    try:
        memo = aio.read_json(memo_path)
    except (OSError, ValueError):
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    if key not in memo:
        memo[key] = sha256_file(path)
        try:  # a memo only: a cache that cannot take it is still read
            aio.write_json(memo_path, memo)
        except OSError:
            pass
    return memo[key]


def split_key(dataset: str, files: list[str], options: dict, cache_dir: str, checksums=None) -> str:
    """Cache key of a split: dataset, options and the checksums of its source files
    (`checksums`, one per file, where the caller has them)."""
    record = {
        "version": CACHE_VERSION,
        "dataset": dataset,
        "options": options,
        "files": list(checksums or [file_checksum(f, cache_dir) for f in files]),
    }
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def split_path(cache_dir: str, dataset: str, key: str) -> str:
    return os.path.join(cache_dir, "splits", f"{dataset}-{key}.npz")


def save_split(path: str, split: Split, key: str = "") -> None:
    """Writes `split` to `path` atomically, with the cache `key` it is stored under.

    Raises:
      DataError: the cache folder cannot be written (read-only, or a file in the way).
    """
    arrays = {}
    for name in MATRICES:
        m = getattr(split, name)
        arrays[f"{name}_indices"] = m.indices
        arrays[f"{name}_indptr"] = m.indptr
        arrays[f"{name}_shape"] = np.asarray(m.shape, np.int64)
    for name in ("train_user_ids", "valid_user_ids", "test_user_ids", "item_ids"):
        arrays[name] = getattr(split, name)
    for name in ("train_groups", "valid_groups", "test_groups"):
        if getattr(split, name) is not None:
            arrays[name] = getattr(split, name)
    arrays["dataset"] = np.asarray(split.dataset)
    arrays["key"] = np.asarray(key)
    arrays["counts"] = np.asarray([split.n_duplicates, split.n_infinite_ratings], np.int64)
    if split.group_names is not None:
        arrays["group_names"] = np.asarray(split.group_names, dtype=str)
    try:
        aio.savez(path, **arrays)
    except OSError as e:
        raise DataError(
            f"cannot write the split cache {path} ({e.strerror or e}); give a writable "
            "--cache_dir (or $ARM_JAX_CACHE), or --no_cache"
        ) from None


def load_split_file(path: str, key: str | None = None) -> Split:
    """Reads a split written by `save_split`; with `key`, checks it was saved under it.

    Raises:
      DataError: the file is damaged (truncated, overwritten, missing an array), or holds
        another entry than `key` (a file copied or renamed into the cache).
    """
    try:
        return _load_split_file(path, key)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: damaged cache file ({type(e).__name__}: {e})") from None


def _load_split_file(path: str, key: str | None) -> Split:
    with np.load(path, allow_pickle=False) as z:
        if key is not None and str(z["key"]) != key:
            raise ValueError(f"it holds entry {str(z['key'])!r}, not {key!r}")
        fields = {}
        for name in MATRICES:
            indices = z[f"{name}_indices"]
            shape = tuple(int(s) for s in z[f"{name}_shape"])
            m = sp.csr_matrix(
                (np.ones(len(indices), np.float32), indices, z[f"{name}_indptr"]), shape=shape
            )
            m.has_sorted_indices = True
            fields[name] = m
        for name in ("train_user_ids", "valid_user_ids", "test_user_ids", "item_ids"):
            fields[name] = z[name]
        for name in ("train_groups", "valid_groups", "test_groups"):
            fields[name] = z[name] if name in z.files else None
        fields["dataset"] = str(z["dataset"])
        fields["n_duplicates"], fields["n_infinite_ratings"] = (int(c) for c in z["counts"])
        if "group_names" in z.files:
            fields["group_names"] = tuple(str(s) for s in z["group_names"])
    _check_shapes(fields)
    return Split(**fields)


def _check_shapes(fields: dict) -> None:
    """Raises ValueError unless the matrices and id arrays agree in size."""
    n_items = fields["train"].shape[1]
    rows = {"train": "train", "valid_tr": "valid", "valid_te": "valid", "test_tr": "test"}
    rows["test_te"] = "test"
    for name, part in rows.items():
        m = fields[name]
        n_ids = len(fields[f"{part}_user_ids"])
        if m.shape != (n_ids, n_items) or (m.nnz and int(m.indices.max()) >= n_items):
            raise ValueError(f"{name} is {m.shape}, its ids and items ({n_ids}, {n_items})")
    if len(fields["item_ids"]) != n_items:
        raise ValueError(f"{len(fields['item_ids'])} item ids for {n_items} columns")
