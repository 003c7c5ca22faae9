"""`load_split`: find (or download) a dataset's files, read, split, and cache the result."""

import dataclasses
import errno
import glob
import hashlib
import os
import re

import numpy as np
import pandas as pd
import scipy.sparse as sp

from arm_jax.configs import split_options
from arm_jax.data import cache, download, readers, synthetic
from arm_jax.data.split import Split, binary_csr, liang_split
from arm_jax.errors import ConfigError, DataError

# dataset: (ratings file name, reader, folder name inside the publisher's zip)
_MOVIELENS = {
    "ml-100k": ("u.data", readers.read_movielens_100k, "ml-100k"),
    "ml-1m": ("ratings.dat", readers.read_movielens_dat, "ml-1m"),
    "ml-10m": ("ratings.dat", readers.read_movielens_dat, "ml-10M100K"),
    "ml-20m": ("ratings.csv", readers.read_movielens_csv, "ml-20m"),
    "ml-latest-small": ("ratings.csv", readers.read_movielens_csv, "ml-latest-small"),
    "msd": ("train_triplets.txt", readers.read_msd_triplets, ""),
}
_PARQUET_PARTS = ("train", "valid_tr", "valid_te", "test_tr", "test_te")
_DOWNLOAD_OPTIONS = ("base_url", "progress", "timeout")


def _find(data_dir: str, name: str, subfolder: str, dataset: str) -> str:
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: folder not found (expected the {dataset} data)")
    for path in (os.path.join(data_dir, name), os.path.join(data_dir, subfolder, name)):
        if os.path.isfile(path):
            return path
    raise DataError(f"{os.path.join(data_dir, name)}: file not found (the {dataset} ratings)")


def _netflix_files(data_dir: str | None, data_path: str | None) -> list[str]:
    if data_path is not None:
        readers.check_file(data_path, "a Netflix Prize ratings file")
        return [data_path]
    if data_dir is None:
        raise DataError(download.NETFLIX_HELP)

    def number(path):
        return int(re.findall(r"\d+", os.path.basename(path))[-1])

    for pattern in ("combined_data_*.txt", "training_set/mv_*.txt", "mv_*.txt"):
        found = glob.glob(os.path.join(data_dir, pattern))
        if found:
            return sorted(found, key=number)
    raise DataError(f"{data_dir}: no Netflix files found; {download.NETFLIX_HELP}")


def _source_files(dataset, data_dir, data_path, cache_dir, download_ok, dl_options):
    """The files a dataset is read from, downloading them if needed and allowed."""
    if dataset in _MOVIELENS:
        name, _, subfolder = _MOVIELENS[dataset]
        if data_path is not None:
            readers.check_file(data_path, f"the {dataset} ratings file {name}")
            return [data_path]
        if data_dir is not None:
            return [_find(data_dir, name, subfolder, dataset)]
        if not download_ok:
            raise DataError(f"{dataset}: no --data_dir given and downloads are off")
        return [download.download_dataset(dataset, cache_dir, **dl_options)]
    if dataset == "netflix":
        return _netflix_files(data_dir, data_path)
    if dataset == "interactions":
        if data_path is None:
            raise ConfigError("--dataset=interactions needs --data_path=FILE")
        readers.check_file(data_path, "an interactions file (CSV, TSV or Parquet)")
        return [data_path]
    if dataset == "lines":
        if data_dir is None:
            raise ConfigError("--dataset=lines needs --data_dir=DIR holding train.txt, test.txt")
        return [_find(data_dir, n, "", dataset) for n in ("train.txt", "test.txt")]
    if dataset == "parquet_split":
        if data_dir is None:
            raise ConfigError("--dataset=parquet_split needs --data_dir=DIR of *.pq files")
        return [_find(data_dir, f"{p}.pq", "", dataset) for p in _PARQUET_PARTS]
    raise ConfigError(f"unknown dataset {dataset!r}")


def _read(dataset, files, *, sep, header, columns, need_rating) -> readers.Interactions:
    if dataset in _MOVIELENS:
        return _MOVIELENS[dataset][1](files[0])
    if dataset == "netflix":
        return readers.read_netflix(files)
    if dataset == "interactions":
        return readers.read_interactions(
            files[0], sep=sep, header=header, columns=columns, need_rating=need_rating
        )
    parts = [readers.read_lines(f) for f in files]
    return readers.concat(parts, source=os.path.dirname(files[0]))


@dataclasses.dataclass(frozen=True)
class GivenSplit:
    """A line-file folder's own train/test split (weak generalization: same users).

    Attributes:
      train, test: [n_users, n_items] float32 0/1 CSR from train.txt and test.txt.
      user_ids, item_ids: raw ids of the rows and columns, ascending.
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray


def load_given_split(data_dir: str) -> GivenSplit:
    """`train.txt` / `test.txt` of an NGCF/LightGCN/KGAT folder as given, not re-split."""
    parts = [readers.read_lines(_find(data_dir, n, "", "lines")) for n in ("train.txt", "test.txt")]
    users = [p.user_ids[p.user] for p in parts]
    items = [p.item_ids[p.item] for p in parts]
    user_ids, item_ids = np.unique(np.concatenate(users)), np.unique(np.concatenate(items))
    shape = (len(user_ids), len(item_ids))
    mats = [
        binary_csr(np.searchsorted(user_ids, u), np.searchsorted(item_ids, i), shape)
        for u, i in zip(users, items)
    ]
    return GivenSplit(*mats, user_ids=user_ids, item_ids=item_ids)


def read_parquet_split(files: list[str], dataset: str = "parquet_split") -> Split:
    """The paper authors' dense parquet split (users x items; in `*_te`, held-out = 1)."""
    frames = []
    for path in files:
        try:
            frames.append(pd.read_parquet(path))
        except Exception as e:  # pyarrow raises several types for a non-Parquet file
            message = f"{path}: not a readable Parquet file ({e})".replace("\n", " ")
            raise DataError(message) from None
    item_ids = np.asarray(frames[0].columns)
    mats = []
    for path, frame in zip(files, frames):
        if list(frame.columns) != list(item_ids):
            raise DataError(f"{path}: columns differ from {files[0]} (expected the same items)")
        values = frame.to_numpy()
        if values.dtype.kind not in "biuf":
            raise DataError(f"{path}: expected numeric user x item values, got {values.dtype}")
        rows, cols = np.nonzero(values > 0)
        mats.append(binary_csr(rows, cols, values.shape))
    for a, b in ((1, 2), (3, 4)):
        if frames[a].shape[0] != frames[b].shape[0]:
            raise DataError(
                f"{files[b]}: {frames[b].shape[0]} users, expected "
                f"{frames[a].shape[0]} as in {files[a]}"
            )
    ids = [readers._ids(np.asarray(frames[k].index)) for k in (0, 1, 3)]
    item_ids = readers._ids(
        np.asarray(item_ids).astype(str) if item_ids.dtype == object else item_ids
    )
    return Split(*mats, *ids, item_ids=item_ids, dataset=dataset)


def load_split(
    dataset: str,
    data_dir: str | None = None,
    *,
    data_path: str | None = None,
    cache_dir: str | None = None,
    rating_threshold: float | None = None,
    min_uc: int | None = None,
    min_sc: int | None = None,
    n_heldout_users: int | None = None,
    sep: str | None = None,
    header: bool = True,
    columns=None,
    seed: int = 0,
    use_cache: bool = True,
    download: bool = True,
    **options,
) -> Split:
    """Reads `dataset` and returns its Liang et al. strong-generalization split.

    Args:
      dataset: ml-20m, netflix, msd, ml-1m, ml-10m, ml-100k, ml-latest-small,
        interactions, lines, parquet_split or synthetic.
      data_dir: the folder of the dataset's files; for MovieLens and MSD, None downloads
        them into the cache.
      data_path: one file to read instead (required for `interactions`).
      cache_dir: the cache folder (default `cache.default_cache_dir()`).
      rating_threshold, min_uc, min_sc, n_heldout_users: override the dataset defaults
        of `arm_jax.configs.SPLIT_DEFAULTS`.
      sep, header, columns: how to read an `interactions` file.
      seed: the generator seed of `synthetic` (the split itself always uses 98765).
      use_cache: read and write the split cache.
      download: allow downloads.
      **options: `base_url`, `progress`, `timeout` of the downloader, or the keyword
        arguments of `make_synthetic` for `synthetic`.

    Returns:
      The split, float32 0/1 CSR matrices with sorted indices, with the SHA-256 of the
      files it was read from (`Split.checksums`).

    Raises:
      DataError, ConfigError: a user error, with a one-line message saying what and where.
    """
    # Over 60 lines for its signature and docstring (one option per data flag).
    opts = split_options(
        dataset,
        rating_threshold=rating_threshold,
        min_uc=min_uc,
        min_sc=min_sc,
        n_heldout_users=n_heldout_users,
    )
    if dataset == "synthetic":
        return synthetic.synthetic_split(seed=seed, options=opts, **options)
    unknown = set(options) - set(_DOWNLOAD_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option(s) for {dataset}: {', '.join(sorted(unknown))}")
    cache_dir = cache_dir or cache.default_cache_dir()
    try:
        return _load(dataset, opts, cache_dir, data_dir, data_path, sep, header, columns,
                     use_cache, download, options)  # fmt: skip
    except OSError as e:  # unreadable (permissions), a folder where a file is expected
        raise DataError(_os_error(e)) from None


def _os_error(e: OSError) -> str:
    what = "cannot read it" if e.errno != errno.ENOSPC else "no space left on the device"
    return f"{e.filename or 'a data file'}: {what} ({e.strerror or e}); check the path"


def _checksums(files: list[str], cache_dir: str, use_cache: bool) -> list[str]:
    if use_cache:
        return [cache.file_checksum(f, cache_dir) for f in files]
    return [cache.sha256_file(f) for f in files]


def _recorded_checksums(files: list[str], sums: list[str]) -> tuple[tuple[str, str], ...]:
    """(file name, SHA-256) per file; past 10 files (Netflix's 17,770), one digest of
    them all, so that config.json stays short."""
    if len(files) <= 10:
        return tuple((os.path.basename(f), c) for f, c in zip(files, sums))
    digest = hashlib.sha256(" ".join(sums).encode()).hexdigest()
    return ((f"{len(files)} files ({os.path.basename(files[0])}, ...)", digest),)


def _load(dataset, opts, cache_dir, data_dir, data_path, sep, header, columns, use_cache,
          download_ok, options) -> Split:  # fmt: skip
    files = _source_files(dataset, data_dir, data_path, cache_dir, download_ok, options)
    sums = _checksums(files, cache_dir, use_cache)
    checksums = _recorded_checksums(files, sums)
    path = key = None
    if use_cache:
        key_options = dict(vars(opts))
        if dataset == "interactions":
            key_options.update(sep=sep, header=header, columns=columns)
        key = cache.split_key(dataset, files, key_options, cache_dir, checksums=sums)
        path = cache.split_path(cache_dir, dataset, key)
        if os.path.isfile(path):
            try:
                split = cache.load_split_file(path, key)
                return dataclasses.replace(split, checksums=checksums)
            except DataError:
                pass  # damaged or another entry: rebuilt below and replaced atomically
    if dataset == "parquet_split":
        split = read_parquet_split(files, dataset)
    else:
        inter = _read(
            dataset,
            files,
            sep=sep,
            header=header,
            columns=columns,
            need_rating=opts.rating_threshold is not None,
        )
        split = liang_split(inter, opts, dataset=dataset)
    if path is not None:
        cache.save_split(path, split, key)
    return dataclasses.replace(split, checksums=checksums)
