"""Worst-off users: CVaR_q and its bootstrap, zero shares, Figure 2's tie-broken buckets,
and the per-user best_rank they use; against float64 NumPy references written here."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax import analysis, metrics, report, worst_off
from arm_jax.io import savez, write_json


def _ref_cvar(x, q):
    k = -(-q * len(x) // 100)
    return float(np.sort(np.asarray(x, np.float64))[:k].mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_cvar_matches_sorting_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.random(257)
    x[rng.random(257) < 0.3] = 0.0  # a block of ties at 0, as NDCG on sparse data
    for q in (1, 7, 10, 20, 30, 55, 100):
        assert worst_off.cvar(x, q) == pytest.approx(_ref_cvar(x, q), rel=1e-12, abs=1e-15)
    assert worst_off.cvar(x, 100) == pytest.approx(x.mean(), rel=1e-12)
    assert np.isnan(worst_off.cvar(np.zeros(0), 10))


def test_bootstrap_matches_loop_reference():
    rng = np.random.default_rng(3)
    n, n_boot, chunk = 83, 50, 16
    values = {"ease": rng.random(n), "rlarm": np.round(rng.random(n), 1)}  # with ties
    out = worst_off.bootstrap_cvar(values, (10, 30), n_boot=n_boot, seed=7, chunk_size=chunk)
    ref_rng = np.random.default_rng(7)
    draws = [
        ref_rng.integers(0, n, size=(min(chunk, n_boot - s), n)) for s in range(0, n_boot, chunk)
    ]
    idx = np.concatenate(draws)
    for model, x in values.items():
        assert out[model].shape == (2, n_boot)
        for i, q in enumerate((10, 30)):
            ref = [_ref_cvar(x[row], q) for row in idx]
            np.testing.assert_allclose(out[model][i], ref, rtol=1e-12)


def test_worst_off_table_paired_test_and_intervals():
    rng = np.random.default_rng(4)
    base = np.clip(rng.random(400) - 0.2, 0, 1)
    ndcg = {"ease": base, "ease_ipw": base.copy(), "rlarm": np.clip(base + 0.05, 0, 1)}
    table = worst_off.worst_off_table(ndcg, n_boot=300, seed=1)
    assert len(table) == 3 * 3
    for row in table.itertuples():
        assert row.k == -(-row.percent * 400 // 100)
        assert row.cvar == pytest.approx(_ref_cvar(ndcg[row.model], row.percent), rel=1e-12)
        assert row.cvar_lo - 1e-12 <= row.cvar <= row.cvar_hi + 1e-12
    ease = table[table.model == "ease"]
    assert ease["p_vs_ease"].isna().all() and ease["diff_vs_ease"].isna().all()
    same = table[table.model == "ease_ipw"]  # identical users' values: no difference
    assert (same["diff_vs_ease"] == 0).all() and (same["p_vs_ease"] == 1.0).all()
    better = table[table.model == "rlarm"]  # +0.05 for every user: every resample agrees
    assert (better["diff_lo"] > 0).all()
    np.testing.assert_allclose(better["p_vs_ease"], 2 / 301, rtol=1e-12)
    # Holm over the 6 comparisons with EASE (2 models × 3 q): the three tied smallest
    # are each scaled by 6 (the running maximum), the rest stay at 1.
    np.testing.assert_allclose(better["p_holm_vs_ease"], 6 * 2 / 301, rtol=1e-12)
    assert (same["p_holm_vs_ease"] == 1.0).all() and ease["p_holm_vs_ease"].isna().all()
    d = np.array([-1.0, 0.0, 1.0, 2.0, 3.0])
    assert worst_off.paired_bootstrap_pvalue(d) == pytest.approx(2 * 3 / 6)


def test_zero_share_table():
    rng = np.random.default_rng(5)
    x = rng.random(120)
    x[rng.random(120) < 0.4] = 0.0
    row = worst_off.zero_share_table({"ease": x}).iloc[0]
    assert row.n_zero == int(np.sum(x == 0)) and row.zero_share == pytest.approx(np.mean(x == 0))


def test_bottom_users_breaks_ties_as_stated():
    rng = np.random.default_rng(6)
    n = 200
    ndcg = np.where(rng.random(n) < 0.6, 0.0, rng.random(n))  # 60% tie at 0
    best_rank = rng.integers(100, 150, n)  # coarse: ties left even after it
    user_ids = rng.permutation(10 * n)[:n]
    for q in (10, 30, 50, 70):
        mask, threshold, tied, left_out = analysis.bottom_users(
            ndcg, q, tiebreak=best_rank, user_ids=user_ids
        )
        k = -(-q * n // 100)
        assert mask.sum() == k
        ref = sorted(range(n), key=lambda u: (ndcg[u], -best_rank[u], user_ids[u]))[:k]
        assert set(np.flatnonzero(mask)) == set(ref)
        cut = ref[-1]
        same = (ndcg == ndcg[cut]) & (best_rank == best_rank[cut])
        assert threshold == ndcg[cut] and tied == same.sum() and left_out == (same & ~mask).sum()
    table = analysis.worst_users_improvement(
        {"ease": ndcg, "rlarm": np.clip(ndcg + 0.01, 0, 1)}, tiebreak=best_rank, user_ids=user_ids
    )
    np.testing.assert_array_equal(table["n_users"], [-(-q * n // 100) for q in analysis.PERCENTS])
    np.testing.assert_allclose(table["share_pct"], 100 * table["n_users"] / n)
    low = table[table.percent == 10].iloc[0]  # EASE's mean is 0 there: % n/a, diff is not
    assert np.isnan(low.improvement_pct) and low.diff_mean == pytest.approx(0.01)


def _ref_best_rank(scores, heldout, fold_in):
    s = np.where(fold_in > 0, -np.inf, scores.astype(np.float64))
    order = np.lexsort((np.arange(s.size), -s))  # score descending, lower index first
    position = np.empty(s.size, np.int64)
    position[order] = np.arange(s.size)
    return int(position[heldout > 0].min())


def test_best_rank_matches_reference_and_ndcg():
    rng = np.random.default_rng(8)
    users, n = 40, 300
    scores = np.round(rng.standard_normal((users, n)), 1).astype(np.float32)  # ties
    fold_in = (rng.random((users, n)) < 0.1).astype(np.float32)
    heldout = ((rng.random((users, n)) < 0.02) & (fold_in == 0)).astype(np.float32)
    heldout[:, 0] = np.where(heldout.sum(1) == 0, 1.0, heldout[:, 0]) * (fold_in[:, 0] == 0)
    keep = heldout.sum(1) > 0
    got = np.asarray(
        metrics.best_rank(jnp.asarray(scores), jnp.asarray(heldout), jnp.asarray(fold_in))
    )
    ndcg = np.asarray(
        metrics.ndcg_at_k(jnp.asarray(scores), jnp.asarray(heldout), jnp.asarray(fold_in), k=100)
    )
    for u in np.flatnonzero(keep):
        assert got[u] == _ref_best_rank(scores[u], heldout[u], fold_in[u])
    assert np.all((ndcg[keep] == 0) == (got[keep] >= 100))
    assert np.all(got[~keep] == -1)


def test_report_tables_with_best_rank(tmp_path):
    rng = np.random.default_rng(9)
    n = 150
    ids = rng.permutation(1000)[:n]
    ease = np.where(rng.random(n) < 0.5, 0.0, rng.random(n))
    for i, model in enumerate(("ease", "rlarm")):
        workdir = tmp_path / model
        write_json(str(workdir / "config.json"), {"dataset": "synthetic", "model": model})
        ndcg = np.clip(ease + 0.02 * i, 0, 1)
        arrays = dict(
            user_ids=ids, **{"ndcg@100": ndcg, "recall@20": ndcg, "recall@50": ndcg},
            n_fold_in=np.full(n, 5), n_heldout=np.full(n, 2), sq_loss=np.ones(n),
            best_rank=rng.integers(100, 400, n) * (ndcg == 0),
        )  # fmt: skip
        savez(str(workdir / "per_user_test.npz"), **arrays)
    result = report.analyze_workdirs([str(tmp_path)], n_boot=200, seed=3)
    assert (result.worst_users["tied_left_out"] < result.worst_users["n_users"]).all()
    assert (result.worst_users["n_users"] == [-(-q * n // 100) for q in analysis.PERCENTS]).all()
    written = report.write_report(result, str(tmp_path / "out"))
    names = {os.path.basename(p) for p in written}
    assert {"worst_off.csv", "zeros.csv", "summary.md", "analysis.json"} <= names
    summary = json.loads((tmp_path / "out" / "analysis.json").read_text())
    cvar10 = next(r for r in summary["worst_off"] if r["model"] == "rlarm" and r["percent"] == 10)
    assert cvar10["cvar"] == pytest.approx(_ref_cvar(np.clip(ease + 0.02, 0, 1), 10))
    assert summary["zeros"][0]["n_zero"] == int(np.sum(ease == 0))
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "CVaR_q" in text and "NDCG@100 = 0" in text
    assert "p_holm_vs_ease: paired bootstrap p-values Holm-corrected over 3 tests" in text
    assert "p_holm_vs_ease, p_holm_vs_ease_ipw: paired t p-values Holm-corrected over " in text
