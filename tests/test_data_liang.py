"""The Liang et al. split against the VAE-CF notebook's own pandas code."""

import os

import numpy as np
import pandas as pd
import pytest

from arm_jax.configs import SplitOptions
from arm_jax.data import load_split, readers
from arm_jax.data.split import liang_split

DATA = os.environ.get("ARM_JAX_TEST_DATA")
needs_data = pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA is unset")


# ------------------------------------------------------------------ the reference
# The VAE-CF notebook (Liang et al. 2018), verbatim up to two changes: `get_count` uses
# `groupby(id).size()` (a Series indexed by id; with pandas >= 2 the notebook's
# `as_index=False` returns a DataFrame whose masked index is row positions, not ids) and
# the matrices are built in memory instead of through CSV files.
def get_count(tp, id):
    return tp[[id]].groupby(id).size()


def filter_triplets(tp, min_uc=5, min_sc=0):
    if min_sc > 0:
        itemcount = get_count(tp, "movieId")
        tp = tp[tp["movieId"].isin(itemcount.index[itemcount >= min_sc])]
    if min_uc > 0:
        usercount = get_count(tp, "userId")
        tp = tp[tp["userId"].isin(usercount.index[usercount >= min_uc])]
    usercount, itemcount = get_count(tp, "userId"), get_count(tp, "movieId")
    return tp, usercount, itemcount


def split_train_test_proportion(data, test_prop=0.2):
    data_grouped_by_user = data.groupby("userId")
    tr_list, te_list = list(), list()
    np.random.seed(98765)
    for _, group in data_grouped_by_user:
        n_items_u = len(group)
        if n_items_u >= 5:
            idx = np.zeros(n_items_u, dtype="bool")
            idx[
                np.random.choice(n_items_u, size=int(test_prop * n_items_u), replace=False).astype(
                    "int64"
                )
            ] = True
            tr_list.append(group[np.logical_not(idx)])
            te_list.append(group[idx])
        else:
            tr_list.append(group)
    data_tr = pd.concat(tr_list)
    data_te = pd.concat(te_list) if te_list else data.iloc[:0]
    return data_tr, data_te


def reference_split(raw_data, threshold, min_uc, min_sc, n_heldout_users):
    """Returns the notebook's matrices as dense 0/1 arrays plus the id arrays."""
    state = np.random.get_state()
    if threshold is not None:
        raw_data = raw_data[raw_data["rating"] > threshold]
    raw_data, user_activity, item_popularity = filter_triplets(raw_data, min_uc, min_sc)
    unique_uid = user_activity.index
    np.random.seed(98765)
    idx_perm = np.random.permutation(unique_uid.size)
    unique_uid = unique_uid[idx_perm]
    n_users = unique_uid.size
    tr_users = unique_uid[: (n_users - n_heldout_users * 2)]
    vd_users = unique_uid[(n_users - n_heldout_users * 2) : (n_users - n_heldout_users)]
    te_users = unique_uid[(n_users - n_heldout_users) :]
    train_plays = raw_data.loc[raw_data["userId"].isin(tr_users)]
    unique_sid = pd.unique(train_plays["movieId"])
    show2id = dict((sid, i) for (i, sid) in enumerate(unique_sid))
    profile2id = dict((pid, i) for (i, pid) in enumerate(unique_uid))

    vad_plays = raw_data.loc[raw_data["userId"].isin(vd_users)]
    vad_plays = vad_plays.loc[vad_plays["movieId"].isin(unique_sid)]
    vad_plays_tr, vad_plays_te = split_train_test_proportion(vad_plays)
    test_plays = raw_data.loc[raw_data["userId"].isin(te_users)]
    test_plays = test_plays.loc[test_plays["movieId"].isin(unique_sid)]
    test_plays_tr, test_plays_te = split_train_test_proportion(test_plays)
    np.random.set_state(state)

    def dense(tp, start, n_rows):
        out = np.zeros((n_rows, len(unique_sid)))
        uid = [profile2id[x] - start for x in tp["userId"]]
        sid = [show2id[x] for x in tp["movieId"]]
        out[uid, sid] = 1
        return out

    n_tr = n_users - 2 * n_heldout_users
    h = n_heldout_users
    return dict(
        train=dense(train_plays, 0, n_tr),
        valid_tr=dense(vad_plays_tr, n_tr, h),
        valid_te=dense(vad_plays_te, n_tr, h),
        test_tr=dense(test_plays_tr, n_tr + h, h),
        test_te=dense(test_plays_te, n_tr + h, h),
        train_user_ids=np.asarray(tr_users),
        valid_user_ids=np.asarray(vd_users),
        test_user_ids=np.asarray(te_users),
        item_ids=np.asarray(unique_sid),
    )


def assert_same(split, ref):
    for name in ("train", "valid_tr", "valid_te", "test_tr", "test_te"):
        m = getattr(split, name)
        assert m.dtype == np.float32 and m.has_sorted_indices, name
        np.testing.assert_array_equal(m.toarray(), ref[name], err_msg=name)
    for name in ("train_user_ids", "valid_user_ids", "test_user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(split, name), ref[name], err_msg=name)


def _frame(inter):
    return pd.DataFrame(
        {
            "userId": inter.user_ids[inter.user],
            "movieId": inter.item_ids[inter.item],
            "rating": inter.rating if inter.rating is not None else 1.0,
        }
    )


# ------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_files_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = 4000
    users = rng.integers(0, 400, n) * 7 + 3  # sparse, unordered raw ids
    items = rng.zipf(1.6, n) % 300
    ratings = rng.integers(1, 11, n) / 2
    if seed % 2:  # string ids sort lexicographically, like pandas
        users = np.array([f"u{u}" for u in users])
        items = np.array([f"s{i:x}" for i in items])
    inter = readers.from_arrays(users, items, ratings, source="random")
    min_sc = [0, 3][seed % 2]
    opts = SplitOptions(rating_threshold=2.5, min_uc=5, min_sc=min_sc, n_heldout_users=8)
    state = np.random.get_state()
    split = liang_split(inter, opts)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1])  # no global effect
    # The notebook assumes no repeated (user, item) pair; these files have some, and the
    # split counts a pair once, by its last row: the notebook's split of those rows.
    frame = _frame(inter)
    last = ~frame.duplicated(["userId", "movieId"], keep="last")
    assert split.n_duplicates == (~last).sum() > 0
    assert_same(split, reference_split(frame[last], 2.5, 5, min_sc, 8))


def _expected_counts(split):
    return (
        split.train.shape[0],
        split.valid_tr.shape[0],
        split.test_tr.shape[0],
        split.train.shape[1],
        split.train.nnz,
        split.valid_tr.nnz,
        split.valid_te.nnz,
        split.test_tr.nnz,
        split.test_te.nnz,
    )


@needs_data
@pytest.mark.parametrize(
    "dataset,path,read,counts",
    [
        (
            "ml-100k",
            "ml-100k/u.data",
            readers.read_movielens_100k,
            (738, 100, 100, 1415, 43606, 4839, 1161, 4612, 1105),
        ),
        (
            "ml-latest-small",
            "ml-latest-small/ratings.csv",
            readers.read_movielens_csv,
            (483, 60, 60, 5660, 38246, 3875, 939, 3879, 935),
        ),
    ],
)
def test_shared_data_matches_reference_and_counts(dataset, path, read, counts, tmp_path):
    inter = read(os.path.join(DATA, path))
    split = load_split(dataset, os.path.join(DATA, os.path.dirname(path)), cache_dir=str(tmp_path))
    assert_same(split, reference_split(_frame(inter), 3.5, 5, 0, counts[1]))
    assert _expected_counts(split) == counts
    again = load_split(dataset, os.path.join(DATA, os.path.dirname(path)), cache_dir=str(tmp_path))
    assert_same(again, reference_split(_frame(inter), 3.5, 5, 0, counts[1]))
