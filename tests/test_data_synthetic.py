"""The synthetic dataset: deterministic, groups kept, and EASE under-serves minorities."""

import numpy as np
import pytest

from arm_jax.data import load_split, make_synthetic, split_stats
from arm_jax.errors import ConfigError


def _ease(x, lam):
    """float64 EASE: B = I - P / diag(P), P = (XᵀX + λI)⁻¹ (the diagonal needs the inverse)."""
    g = (x.T @ x).toarray().astype(np.float64)
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    return np.eye(len(g)) - p / np.diag(p)


def _ndcg_at_100(scores, fold_in, held_out, k=100):
    """Binary NDCG@k per user with fold-in items excluded; NaN for no held-out items."""
    scores = np.where(fold_in.toarray() > 0, -np.inf, scores)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    relevant = held_out.toarray() > 0
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (np.take_along_axis(relevant, top, axis=1) * discount).sum(axis=1)
    n_rel = np.minimum(relevant.sum(axis=1), k)
    idcg = np.cumsum(discount)[np.maximum(n_rel - 1, 0)]
    return np.where(n_rel > 0, dcg / idcg, np.nan)


def test_make_synthetic_is_deterministic_and_sized():
    a, ga = make_synthetic(seed=3)
    b, gb = make_synthetic(seed=3)
    c, _ = make_synthetic(seed=4)
    assert a.equals(b) and np.array_equal(ga, gb) and not a.equals(c)
    assert 3000 <= len(ga) <= 4000 and a["item"].nunique() <= 1000
    shares = np.bincount(ga) / len(ga)
    assert 0.80 <= shares[0] <= 0.85 and all(0.07 <= s <= 0.10 for s in shares[1:])
    per_user = np.bincount(a["user"])
    assert per_user.min() >= 5
    assert np.median(per_user[ga > 0]) < np.median(per_user[ga == 0])  # minorities: fewer


def test_synthetic_split_keeps_groups_and_is_reproducible():
    state = np.random.get_state()
    s = load_split("synthetic", seed=0)
    assert np.array_equal(np.random.get_state()[1], state[1])
    frame, groups = make_synthetic(seed=0)
    n = len(groups)
    assert s.valid_tr.shape[0] == s.test_tr.shape[0] == n // 10
    assert s.train.shape[0] == n - 2 * (n // 10)
    for part in ("train", "valid", "test"):
        ids = getattr(s, f"{part}_user_ids")
        np.testing.assert_array_equal(getattr(s, f"{part}_groups"), groups[ids])
    assert s.group_names == ("majority", "niche_a", "niche_b")
    stats = split_stats(s)
    assert sum(stats["test_group_counts"].values()) == n // 10
    again = load_split("synthetic", seed=0)
    for name in ("train", "valid_tr", "valid_te", "test_tr", "test_te"):
        assert (getattr(s, name) != getattr(again, name)).nnz == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_ease_worst_decile_is_mostly_minority_users(seed):
    s = load_split("synthetic", seed=seed)
    # λ chosen on validation NDCG@100 over {1, 10, 50, 100, 200, 500, 1000} (seed 0: 500).
    b = _ease(s.train, 500.0)
    valid = _ndcg_at_100(s.valid_tr @ b, s.valid_tr, s.valid_te)
    assert np.nanmean(valid) > 0.3  # a sensible model, not a broken one
    ndcg = _ndcg_at_100(s.test_tr @ b, s.test_tr, s.test_te)
    ok = ~np.isnan(ndcg)
    ndcg, groups = ndcg[ok], s.test_groups[ok]
    worst = np.argsort(ndcg, kind="stable")[: len(ndcg) // 10]
    minority_share = np.mean(groups[worst] > 0)
    assert minority_share > 0.5
    assert minority_share > 2.5 * np.mean(groups > 0)
    # Held-out items of each group follow its fold-in tastes: every group is served
    # well above a random ranking (whose NDCG@100 is about 0.04 here).
    for g in range(3):
        assert np.mean(ndcg[groups == g]) > 0.08


def test_small_item_counts_cap_activity():
    frame, groups = make_synthetic(seed=3, n_users=300, n_items=120)
    per_user = frame.groupby("user").size()
    assert per_user.max() <= 120 and len(np.unique(groups)) == 3
    assert not frame.duplicated().any()
    with pytest.raises(ConfigError, match="too few"):
        make_synthetic(n_users=100, n_items=20)
