"""The strong-generalization split of Liang et al. (2018, VAE-CF), bit for bit.

EASE (Steck 2019) and the paper reuse the preprocessing of the VAE-CF notebook. This
module reproduces its output exactly, on arrays rather than per-user pandas groups:

0. (not in the notebook, which assumes none) a (user, item) pair given by several rows
   counts once: the last row in file order wins (its rating, its place), as a later
   rating updates an earlier one; the split records how many rows were dropped;
1. keep rows with rating > threshold;
2. if min_sc > 0 drop items with fewer than min_sc rows, then drop users with fewer than
   min_uc rows (one pass each, in that order);
3. sort the user ids ascending and permute them with a legacy generator seeded 98765;
4. the first n - 2h permuted users train, the next h validate, the last h test;
5. items are those of the training rows, in order of first appearance; validation and
   test rows with other items are dropped; rows of each part follow the permuted order;
6. each held-out part is split 80/20 per user after re-seeding 98765, drawing users in
   ascending raw-id order (as `groupby` iterates them) and rows in file order.

The notebook seeds NumPy's global generator. A fresh `np.random.RandomState(98765)` gives
the same stream, so the split is identical and leaves the global state untouched.
"""

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from arm_jax.configs import SplitOptions
from arm_jax.data.readers import Interactions
from arm_jax.errors import ConfigError, DataError

LIANG_SEED = 98765
TEST_PROP = 0.2
MIN_ITEMS_TO_HOLD_OUT = 5


@dataclasses.dataclass(frozen=True)
class Split:
    """A strong-generalization split: disjoint train, validation and test users.

    Attributes:
      train: [n_train_users, n_items] float32 0/1 CSR.
      valid_tr, valid_te: [n_valid_users, n_items] fold-in and held-out items.
      test_tr, test_te: [n_test_users, n_items] fold-in and held-out items.
      train_user_ids, valid_user_ids, test_user_ids: raw user ids, in row order.
      item_ids: [n_items] raw item ids, in column order.
      dataset: the dataset name.
      train_groups, valid_groups, test_groups: planted group label per user (synthetic
        data only; 0 is the majority).
      group_names: the name of each group label.
      item_groups: planted region of each item, in column order (synthetic data only;
        0 is the mainstream, g the niche items of minority g).
      n_duplicates: rows dropped as repeats of an earlier (user, item) pair.
      n_infinite_ratings: rows whose rating is ±inf (before filtering).
      checksums: (file name, SHA-256) of each file the split was read from; None for
        generated data.
    """

    train: sp.csr_matrix
    valid_tr: sp.csr_matrix
    valid_te: sp.csr_matrix
    test_tr: sp.csr_matrix
    test_te: sp.csr_matrix
    train_user_ids: np.ndarray
    valid_user_ids: np.ndarray
    test_user_ids: np.ndarray
    item_ids: np.ndarray
    dataset: str = ""
    train_groups: np.ndarray | None = None
    valid_groups: np.ndarray | None = None
    test_groups: np.ndarray | None = None
    group_names: tuple[str, ...] | None = None
    n_duplicates: int = 0
    n_infinite_ratings: int = 0
    checksums: tuple[tuple[str, str], ...] | None = None
    item_groups: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return self.train.shape[1]


MATRICES = ("train", "valid_tr", "valid_te", "test_tr", "test_te")


def binary_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """float32 0/1 CSR with sorted indices; repeated (row, col) pairs count once."""
    m = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (np.asarray(rows), np.asarray(cols))), shape=shape
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


def last_of_duplicates(inter: Interactions) -> np.ndarray:
    """Step 0: [n_rows] bool, False for a row whose (user, item) pair a later row repeats."""
    key = inter.user * np.int64(max(len(inter.item_ids), 1)) + inter.item
    return ~pd.Series(key).duplicated(keep="last").to_numpy()


def filter_rows(
    inter: Interactions, options: SplitOptions, *, last: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 0-2: (user, item) codes of the rows that survive the filters, in file order.

    `last` is `last_of_duplicates(inter)`, if the caller has it.
    """
    last = last_of_duplicates(inter) if last is None else last
    user, item = inter.user[last], inter.item[last]
    if options.rating_threshold is not None:
        if inter.rating is None:
            raise ConfigError(
                f"{inter.source}: has no ratings, so --rating_threshold must be unset"
            )
        keep = inter.rating[last] > options.rating_threshold
        user, item = user[keep], item[keep]
    if options.min_sc > 0:
        keep = np.bincount(item, minlength=len(inter.item_ids))[item] >= options.min_sc
        user, item = user[keep], item[keep]
    if options.min_uc > 0:
        keep = np.bincount(user, minlength=len(inter.user_ids))[user] >= options.min_uc
        user, item = user[keep], item[keep]
    if user.size == 0:
        kept = _filters(options)
        kept = f"after filtering (kept {kept})" if kept else "(no rows)"
        raise DataError(f"{inter.source}: no interactions left {kept}")
    return user, item


def _filters(options: SplitOptions) -> str:
    """The active filters, in words."""
    return ", ".join(
        text
        for text, active in (
            (f"rating > {options.rating_threshold}", options.rating_threshold is not None),
            (f"items with >= {options.min_sc} rows", options.min_sc > 0),
            (f"users with >= {options.min_uc} rows", options.min_uc > 0),
        )
        if active
    )


def _holdout_mask(ascending_key: np.ndarray) -> np.ndarray:
    """Step 6: which rows are held out, rows given in file order.

    Args:
      ascending_key: [n_rows] the rank of each row's user in ascending raw-id order.

    Returns:
      [n_rows] bool, True for held-out rows.
    """
    rng = np.random.RandomState(LIANG_SEED)
    order = np.argsort(ascending_key, kind="stable")
    _, starts, counts = np.unique(ascending_key[order], return_index=True, return_counts=True)
    held = np.zeros(len(ascending_key), bool)
    for start, n_u in zip(starts.tolist(), counts.tolist()):
        if n_u >= MIN_ITEMS_TO_HOLD_OUT:
            pick = rng.choice(n_u, size=int(TEST_PROP * n_u), replace=False).astype("int64")
            held[order[start + pick]] = True
    return held


def _heldout_count(inter: Interactions, options: SplitOptions, n_users: int) -> int:
    """h, the validation (and test) users; a one-line DataError where it does not fit."""
    h = options.n_heldout_users
    if h is None:
        h = n_users // 10
    if options.n_heldout_users is None and (h < 1 or n_users - 2 * h < 1):
        kept = f" (kept {_filters(options)})" if _filters(options) else ""
        raise DataError(
            f"{inter.source}: only {n_users} users left after filtering{kept}, too few for "
            f"train, validation and test users (by default 10% each: {h}); the split needs "
            "at least 10, or 3 with --n_heldout_users=1; relax the filters (--min_uc)"
        )
    if h < 1 or n_users - 2 * h < 1:
        raise DataError(
            f"{inter.source}: --n_heldout_users={h} does not fit {n_users} users left after "
            f"filtering (need 1 <= h and 2*h < {n_users})"
        )
    return h


def liang_split(inter: Interactions, options: SplitOptions, *, dataset: str = "") -> Split:
    """Splits interactions into train / validation / test users (Liang et al. 2018).

    Args:
      inter: the raw rows, in file order.
      options: threshold, min_uc, min_sc and h (None: 10% of the filtered users).
      dataset: name recorded in the result.

    Returns:
      The split; see the module docstring for the exact procedure.
    """
    last = last_of_duplicates(inter)
    user, item = filter_rows(inter, options, last=last)
    present = np.unique(user)
    sorted_users = present[np.argsort(inter.user_ids[present], kind="stable")]
    n_users = len(sorted_users)
    h = _heldout_count(inter, options, n_users)
    permuted = sorted_users[np.random.RandomState(LIANG_SEED).permutation(n_users)]
    rank = np.full(len(inter.user_ids), -1, np.int64)
    rank[permuted] = np.arange(n_users)
    ascending = np.full(len(inter.user_ids), -1, np.int64)
    ascending[sorted_users] = np.arange(n_users)
    row_rank = rank[user]
    n_train = n_users - 2 * h

    in_train = row_rank < n_train
    train_items = pd.unique(item[in_train])
    column = np.full(len(inter.item_ids), -1, np.int64)
    column[train_items] = np.arange(len(train_items))
    n_items = len(train_items)
    train = binary_csr(row_rank[in_train], column[item[in_train]], (n_train, n_items))

    parts = []
    for lo in (n_train, n_train + h):
        rows = (row_rank >= lo) & (row_rank < lo + h) & (column[item] >= 0)
        u, i = user[rows], item[rows]
        held = _holdout_mask(ascending[u])
        r, c = rank[u] - lo, column[i]
        parts.append(binary_csr(r[~held], c[~held], (h, n_items)))
        parts.append(binary_csr(r[held], c[held], (h, n_items)))
    ids = inter.user_ids[permuted]
    return Split(
        train,
        *parts,
        train_user_ids=ids[:n_train],
        valid_user_ids=ids[n_train : n_train + h],
        test_user_ids=ids[n_train + h :],
        item_ids=inter.item_ids[train_items],
        dataset=dataset,
        n_duplicates=int(last.size - last.sum()),
        n_infinite_ratings=0 if inter.rating is None else int(np.isinf(inter.rating).sum()),
    )


def split_stats(split: Split) -> dict:
    """Sizes of a split, JSON-able: users, items, interactions per part, density."""
    stats = {
        "dataset": split.dataset,
        "n_items": int(split.train.shape[1]),
        "n_train_users": int(split.train.shape[0]),
        "n_valid_users": int(split.valid_tr.shape[0]),
        "n_test_users": int(split.test_tr.shape[0]),
    }
    for name in MATRICES:
        stats[f"nnz_{name}"] = int(getattr(split, name).nnz)
    stats["nnz_total"] = sum(stats[f"nnz_{name}"] for name in MATRICES)
    cells = split.train.shape[0] * split.train.shape[1]
    stats["train_density"] = float(split.train.nnz / cells) if cells else 0.0
    stats["mean_train_items_per_user"] = (
        float(split.train.nnz / split.train.shape[0]) if split.train.shape[0] else 0.0
    )
    stats["n_duplicates_dropped"] = int(split.n_duplicates)
    if split.n_infinite_ratings:
        stats["n_infinite_ratings"] = int(split.n_infinite_ratings)
    if split.checksums is not None:
        stats["sha256"] = dict(split.checksums)
    if split.group_names is not None:
        for part in ("train", "valid", "test"):
            labels = getattr(split, f"{part}_groups")
            counts = np.bincount(labels, minlength=len(split.group_names))
            stats[f"{part}_group_counts"] = {
                name: int(n) for name, n in zip(split.group_names, counts)
            }
    return stats


def split_warnings(split: Split) -> list[str]:
    """What a reader of the results should know about the data, as sentences (the
    library returns them; launch scripts log them)."""
    out = []
    if split.n_duplicates:
        out.append(
            f"{split.dataset}: dropped {split.n_duplicates} rows repeating a (user, item) "
            "pair (the last row of a pair wins)"
        )
    if split.n_infinite_ratings:
        out.append(f"{split.dataset}: {split.n_infinite_ratings} ratings are infinite")
    if split.n_items < 100:
        out.append(
            f"{split.dataset}: only {split.n_items} items, fewer than k=100: NDCG@100 ranks "
            "every item" + (" and Recall@50 is 1" if split.n_items <= 50 else "")
        )
    return out
