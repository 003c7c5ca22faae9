"""Metrics against a float64 NumPy reference of Liang et al.'s NDCG@k and Recall@k."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import ease, metrics


def _ref_ndcg_recall(scores, heldout, fold_in, k):
    """Liang et al.'s definitions, one user at a time, float64, stable tie order."""
    ndcg, recall = [], []
    for s, h, f in zip(scores, heldout, fold_in, strict=True):
        s = np.where(f > 0, -np.inf, s.astype(np.float64))
        order = np.argsort(-s, kind="stable")[:k]
        rel = (h > 0).astype(np.float64)
        n_rel = int(rel.sum())
        if n_rel == 0:
            ndcg.append(0.0)
            recall.append(0.0)
            continue
        hits = rel[order] * (f[order] <= 0)  # fold-in items are not in the ranking
        disc = 1.0 / np.log2(np.arange(2, len(order) + 2))
        dcg = (hits * disc).sum()
        idcg = (1.0 / np.log2(np.arange(2, min(n_rel, k) + 2))).sum()
        ndcg.append(dcg / idcg)
        recall.append(hits.sum() / min(k, n_rel))
    return np.array(ndcg), np.array(recall)


def _random_case(rng, n_users=40, n_items=150, ties=False):
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    if ties:  # few distinct values: many ties at the cut-off
        scores = np.round(scores * 2) / 2
    fold_in = (rng.random((n_users, n_items)) < 0.2).astype(np.float32)
    heldout = ((rng.random((n_users, n_items)) < 0.1) & (fold_in == 0)).astype(np.float32)
    heldout[0] = 0.0  # a user with nothing held out
    fold_in[1, :-30] = 1.0  # a user with fewer than k candidate items
    heldout[1] = 0.0
    heldout[1, -5:] = 1.0
    return scores, heldout, fold_in


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [20, 50, 100])
def test_ndcg_and_recall_match_numpy_reference(k, ties):
    rng = np.random.default_rng(k + ties)
    scores, heldout, fold_in = _random_case(rng, ties=ties)
    ref_ndcg, ref_recall = _ref_ndcg_recall(scores, heldout, fold_in, k)
    ndcg = metrics.ndcg_at_k(jnp.asarray(scores), heldout, fold_in, k=k)
    recall = metrics.recall_at_k(jnp.asarray(scores), heldout, fold_in, k=k)
    chex.assert_shape(ndcg, (scores.shape[0],))
    np.testing.assert_allclose(ndcg, ref_ndcg, atol=1e-6)
    np.testing.assert_allclose(recall, ref_recall, atol=1e-6)
    assert np.all(np.isfinite(ndcg)) and ndcg[0] == 0.0


def test_jit_vmap_and_single_user_agree():
    rng = np.random.default_rng(1)
    scores, heldout, fold_in = _random_case(rng, n_users=8)
    batched = metrics.ndcg_at_k(scores, heldout, fold_in, k=100)
    jitted = jax.jit(functools.partial(metrics.ndcg_at_k, k=100))(scores, heldout, fold_in)
    single = [metrics.ndcg_at_k(s, h, f, k=100) for s, h, f in zip(scores, heldout, fold_in)]
    np.testing.assert_allclose(jitted, batched, atol=1e-7)
    np.testing.assert_allclose(np.array(single), batched, atol=1e-7)


def test_perfect_ranking_scores_one():
    heldout = np.zeros((1, 300), np.float32)
    heldout[0, :7] = 1
    scores = heldout + 0.01 * np.random.default_rng(2).random((1, 300)).astype(np.float32)
    assert metrics.ndcg_at_k(scores, heldout, k=100)[0] == pytest.approx(1.0)
    assert metrics.recall_at_k(scores, heldout, k=20)[0] == pytest.approx(1.0)


def test_evaluate_chunks_exclude_empty_users_and_match_reference():
    rng = np.random.default_rng(3)
    n_users, n_items = 37, 120
    w = rng.normal(size=(n_items, n_items)).astype(np.float32)
    _, heldout, fold_in = _random_case(rng, n_users=n_users, n_items=n_items)
    out = metrics.evaluate(
        ease.predict,
        jnp.asarray(w),
        sp.csr_matrix(fold_in),
        sp.csr_matrix(heldout),
        chunk_size=8,
        with_loss=True,
    )
    keep = heldout.sum(1) > 0
    np.testing.assert_array_equal(out["index"], np.flatnonzero(keep))
    scores = fold_in.astype(np.float64) @ w
    ref_ndcg, _ = _ref_ndcg_recall(scores[keep], heldout[keep], fold_in[keep], 100)
    _, ref_r20 = _ref_ndcg_recall(scores[keep], heldout[keep], fold_in[keep], 20)
    np.testing.assert_allclose(out["ndcg@100"], ref_ndcg, atol=1e-5)
    np.testing.assert_allclose(out["recall@20"], ref_r20, atol=1e-6)
    full = (fold_in + heldout)[keep].astype(np.float64)
    ref_loss = ((full - full @ w) ** 2).sum(1)
    np.testing.assert_allclose(out["sq_loss"], ref_loss, rtol=1e-4)
    np.testing.assert_array_equal(out["n_heldout"], heldout[keep].sum(1))
    summary = metrics.summarize(out)
    assert summary["n_users"] == keep.sum()
    assert summary["ndcg@100_se"] == pytest.approx(ref_ndcg.std(ddof=1) / np.sqrt(keep.sum()))


def test_evaluate_compiles_once_across_calls():
    rng = np.random.default_rng(4)
    _, heldout, fold_in = _random_case(rng, n_users=20, n_items=90)
    x, y = sp.csr_matrix(fold_in), sp.csr_matrix(heldout)
    w = jnp.asarray(rng.normal(size=(90, 90)).astype(np.float32))
    metrics.evaluate(ease.predict, w, x, y, chunk_size=8)
    before = metrics._evaluate_chunk._cache_size()
    metrics.evaluate(ease.predict, w + 1, x, y, chunk_size=8)
    assert metrics._evaluate_chunk._cache_size() == before


def test_fold_in_items_are_never_hits_and_k_is_checked():
    # An item both folded in and held out (not in a Liang split, but possible input):
    # it is out of the ranking even when k reaches past the remaining items.
    scores = jnp.asarray([0.1, 0.2, 0.3, 0.4])
    item0 = jnp.asarray([1.0, 0.0, 0.0, 0.0])
    assert float(metrics.ndcg_at_k(scores, item0, item0, k=10)) == 0.0
    assert float(metrics.recall_at_k(scores, item0, item0, k=10)) == 0.0
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            metrics.ndcg_at_k(scores, item0, k=bad)
        with pytest.raises(ValueError, match="k must be a positive integer"):
            metrics.recall_at_k(scores, item0, k=bad)


def test_evaluate_ignores_stored_zeros_and_takes_any_sparse_format():
    rng = np.random.default_rng(5)
    w = jnp.asarray(rng.normal(size=(30, 30)).astype(np.float32))
    _, heldout, fold_in = _random_case(rng, n_users=9, n_items=30)
    heldout[0] = 0.0
    heldout[0, 3] = 1.0
    clean = metrics.evaluate(ease.predict, w, sp.csr_matrix(fold_in), sp.csr_matrix(heldout))
    stored = sp.csr_matrix(heldout)
    stored.data[stored.indptr[0]] = 0.0  # user 0's one held-out entry, stored as 0
    folded = sp.csr_matrix(fold_in)
    folded.data[folded.indptr[2] : folded.indptr[3]] = 0.0  # user 2: no fold-in items
    out = metrics.evaluate(ease.predict, w, folded.tocsc(), stored.tocoo())
    assert 0 not in out["index"] and 0 in clean["index"]
    row2 = list(out["index"]).index(2)
    assert out["n_fold_in"][row2] == 0 and out["n_heldout"][row2] == heldout[2].sum()
    fold_in[2] = 0.0
    heldout[0] = 0.0
    ref = metrics.evaluate(ease.predict, w, sp.csr_matrix(fold_in), sp.csr_matrix(heldout))
    for name in ("index", "ndcg@100", "recall@20", "n_fold_in", "n_heldout"):
        np.testing.assert_array_equal(out[name], ref[name])
