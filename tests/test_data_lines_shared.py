"""The KGAT / LightGCN line-file folders of the shared data, merged and re-split."""

import os

import pytest

from arm_jax.data import load_split, split_stats

DATA = os.environ.get("ARM_JAX_TEST_DATA")


@pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA is unset")
@pytest.mark.parametrize(
    "folder,expected",
    [
        # (train, valid, test users, items seen by training users, all interactions kept)
        ("amazon-book", (56477, 7059, 7059, 24912, 846083)),
        ("gowalla", (23888, 2985, 2985, 40981, 1027370)),
    ],
)
def test_line_folders_load_and_resplit(folder, expected):
    split = load_split("lines", os.path.join(DATA, folder), use_cache=False)
    stats = split_stats(split)
    got = tuple(
        stats[k] for k in ("n_train_users", "n_valid_users", "n_test_users", "n_items", "nnz_total")
    )
    assert got == expected
    assert split.train.dtype == "float32" and split.train.has_sorted_indices
