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
        disc = 1.0 / np.log2(np.arange(2, len(order) + 2))
        dcg = (rel[order] * disc).sum()
        idcg = (1.0 / np.log2(np.arange(2, min(n_rel, k) + 2))).sum()
        ndcg.append(dcg / idcg)
        recall.append(rel[order].sum() / min(k, n_rel))
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
