"""Tests of arm_jax.analysis, arm_jax.report, arm_jax.plots and launch/analyze.py."""

import json
import os

import numpy as np
import pytest
import scipy.stats
from _cli_batch import run_cases  # launch/analyze.py in one interpreter

from arm_jax import analysis, plots, report
from arm_jax.errors import ArmJaxError, ConfigError, DataError
from arm_jax.io import savez, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("ease", "ease_ipw", "arm", "rlarm", "rlarm_nn")
SPLITS = ("test", "valid")


def _fake_per_user(rng, user_ids, group, offset, counts):
    n = user_ids.size
    n_fold_in, n_heldout = counts  # the split's: the same for every model
    ndcg = np.clip(0.1 + 0.005 * n_fold_in + 0.15 * rng.standard_normal(n) + offset, 0, 1)
    ndcg[rng.random(n) < 0.05] = 0.0  # users with nothing found tie at 0
    return {
        "user_ids": user_ids,
        "ndcg@100": ndcg,
        "recall@20": rng.random(n),
        "recall@50": rng.random(n),
        "n_fold_in": n_fold_in,
        "n_heldout": n_heldout,
        "sq_loss": n_fold_in * (0.8 + 0.1 * rng.random(n)),
        "group": group,
    }


def _make_workdirs(root, *, seed=0, n_users=300, models=MODELS, shuffle=True):
    rng = np.random.default_rng(seed)
    user_ids = rng.permutation(10 * n_users)[:n_users]
    group = (rng.random(n_users) < 0.2).astype(np.int64) * rng.integers(1, 3, size=n_users)
    counts = {s: (rng.integers(1, 60, n_users), rng.integers(1, 15, n_users)) for s in SPLITS}
    paths = {}
    for i, model in enumerate(models):
        workdir = os.path.join(root, model)
        write_json(
            os.path.join(workdir, "config.json"),
            {"dataset": "synthetic", "model": model, "hyperparameters": {"C": 0.005, "B": 500.0}},
        )
        for split in SPLITS:
            arrays = _fake_per_user(rng, user_ids, group, 0.01 * i, counts[split])
            if shuffle and i > 0:  # same users, different order: must be re-aligned
                perm = rng.permutation(n_users)
                arrays = {k: v[perm] for k, v in arrays.items()}
            savez(os.path.join(workdir, f"per_user_{split}.npz"), **arrays)
        if model in ("arm", "rlarm", "rlarm_nn"):
            train_group = (rng.random(500) < 0.2).astype(np.int64)
            score = rng.standard_normal(500) + 2.0 * train_group
            savez(
                os.path.join(workdir, "adversary_scores.npz"),
                user_ids=np.arange(500),
                score=score,
                group=train_group,
            )
        paths[model] = workdir
    return paths


def _brute_auc(scores, labels):
    pos = scores[labels].astype(np.float64)
    neg = scores[~labels].astype(np.float64)
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


# ------------------------------------------------------------------------------- stats
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_pairwise_reference(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(400) < 0.3
    scores = rng.integers(0, 8, size=400) + 1.5 * labels  # many ties
    assert analysis.roc_auc(scores, labels) == pytest.approx(_brute_auc(scores, labels), abs=1e-12)
    scores = rng.standard_normal(400)
    assert analysis.roc_auc(scores, labels) == pytest.approx(_brute_auc(scores, labels), abs=1e-12)


def test_roc_auc_extremes():
    labels = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    scores = np.where(labels, 2.0, -1.0) + np.arange(6) * 0.01
    assert analysis.roc_auc(scores, labels) == 1.0
    assert analysis.roc_auc(-scores, labels) == 0.0
    assert analysis.roc_auc(np.ones(6), labels) == 0.5
    assert np.isnan(analysis.roc_auc(scores, np.zeros(6, dtype=bool)))


def test_overall_table_matches_numpy():
    rng = np.random.default_rng(3)
    per_user = {m: {k: rng.random(57).astype(np.float32) for k in analysis.METRICS} for m in MODELS}
    table = analysis.overall_table(per_user)
    assert list(table["model"]) == list(MODELS)
    for row, model in zip(table.to_dict(orient="records"), MODELS):
        assert row["n_users"] == 57
        for metric in analysis.METRICS:
            x = per_user[model][metric].astype(np.float64)
            assert row[metric] == pytest.approx(x.mean(), rel=1e-12)
            se = x.std(ddof=1) / np.sqrt(x.size)
            assert row[f"{metric}_se"] == pytest.approx(se, rel=1e-12)


def test_bottom_percent_mask_definition():
    rng = np.random.default_rng(4)
    x = np.round(rng.random(137), 2)  # ties
    x[:20] = 0.0
    sizes = []
    for percent in analysis.PERCENTS:
        mask, t = analysis.bottom_percent_mask(x, percent)
        assert t == np.quantile(x, percent / 100, method="inverted_cdf")
        assert mask.sum() >= -(-percent * x.size // 100)
        assert np.all(x[mask] <= t) and np.all(x[~mask] > t)
        sizes.append(mask.sum())
    assert sizes[0] >= 20  # all tied zeros together, although 10% of 137 is 14
    assert np.all(np.diff(sizes) >= 0) and sizes[-1] == x.size
    mask, t = analysis.bottom_percent_mask(np.arange(100.0), 30)
    assert mask.sum() == 30 and t == 29.0
    with pytest.raises(ArmJaxError):
        analysis.bottom_percent_mask(x, 0)


def test_worst_users_improvement_consistent_with_scipy():
    rng = np.random.default_rng(5)
    base = np.clip(rng.random(250) - 0.05, 0, 1)
    ndcg = {
        m: np.clip(base + 0.05 * rng.standard_normal(250) + 0.01 * i, 0, 1)
        for i, m in enumerate(MODELS[1:], 1)
    }
    ndcg["ease"] = base
    table = analysis.worst_users_improvement(ndcg)
    assert set(table["model"]) == set(MODELS[1:])
    for model in MODELS[1:]:
        rows = table[table["model"] == model].sort_values("percent")
        assert np.all(np.diff(rows["n_users"]) >= 0)
        last = rows.iloc[-1]
        assert last["percent"] == 100 and last["n_users"] == 250
        overall = 100 * (ndcg[model].mean() - base.mean()) / base.mean()
        assert last["improvement_pct"] == pytest.approx(overall, rel=1e-10)
        assert last["diff_mean"] == pytest.approx((ndcg[model] - base).mean(), rel=1e-10)
        for row in rows.itertuples():
            mask = base <= row.threshold
            assert mask.sum() == row.n_users
            assert row.p_vs_ease == pytest.approx(
                scipy.stats.ttest_rel(ndcg[model][mask], base[mask]).pvalue, rel=1e-10
            )
            assert row.sig_vs_ease == (row.p_holm_vs_ease < 0.05)  # Holm-adjusted
            if model == "ease_ipw":
                assert np.isnan(row.p_vs_ease_ipw)
            else:
                ref = scipy.stats.ttest_rel(ndcg[model][mask], ndcg["ease_ipw"][mask]).pvalue
                assert row.p_vs_ease_ipw == pytest.approx(ref, rel=1e-10)
    with pytest.raises(ArmJaxError, match="EASE"):
        analysis.worst_users_improvement({"rlarm": base})


def _ref_holm(p):
    """Holm's step-down, written out: sorted ascending, the k-th (1-based) of m scaled by
    m - k + 1, a running maximum, capped at 1; NaNs left out."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.size, np.nan)
    present = [i for i in range(p.size) if not np.isnan(p[i])]
    m = len(present)
    running = 0.0
    for k, i in enumerate(sorted(present, key=lambda i: p[i]), start=1):
        running = max(running, (m - k + 1) * p[i])
        out[i] = min(1.0, running)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holm_matches_stepdown_reference(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(40) ** 3  # many small p-values, some adjusted past 1
    p[rng.random(40) < 0.2] = np.nan
    p[5] = p[6] = 0.0123  # tied p-values get one adjusted value
    got = analysis.holm(p)
    np.testing.assert_allclose(got, _ref_holm(p), rtol=1e-15, equal_nan=True)
    assert np.array_equal(np.isnan(got), np.isnan(p))
    kept = ~np.isnan(p)  # NaNs do not count in the family size
    np.testing.assert_allclose(got[kept], analysis.holm(p[kept]), rtol=1e-15)
    assert np.all(got[kept] >= p[kept]) and np.all(got[kept] <= 1.0)
    order = np.argsort(p[kept], kind="stable")
    assert np.all(np.diff(got[kept][order]) >= 0)  # monotone in the raw p-values
    np.testing.assert_allclose(analysis.holm(p.reshape(5, 8)), got.reshape(5, 8), rtol=0)


def test_holm_textbook_example():
    # Four tests at alpha = 0.05 (Holm 1979's procedure as in the textbooks): sorted
    # 0.005, 0.01, 0.03, 0.04 -> 4·0.005, 3·0.01, 2·0.03, max(0.06, 1·0.04).
    got = analysis.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02], rtol=1e-15)
    assert analysis.holm([]).size == 0 and np.isnan(analysis.holm([np.nan])).all()
    np.testing.assert_allclose(analysis.holm([0.3, 0.9]), [0.6, 0.9])


def test_worst_users_holm_columns_over_one_family_per_baseline():
    rng = np.random.default_rng(8)
    base = rng.random(200)
    ndcg = {"ease": base, "ease_ipw": base + 0.03 * rng.standard_normal(200)}
    for i, m in enumerate(("arm", "rlarm", "rlarm_nn")):
        ndcg[m] = base + 0.01 * i + 0.05 * rng.standard_normal(200)
    table = analysis.worst_users_improvement(ndcg, percents=(10, 30, 50, 100), alpha=0.1)
    for baseline in ("ease", "ease_ipw"):
        raw = table[f"p_vs_{baseline}"].to_numpy()
        np.testing.assert_allclose(
            table[f"p_holm_vs_{baseline}"], _ref_holm(raw), rtol=1e-15, equal_nan=True
        )
        assert (table[f"sig_vs_{baseline}"] == (table[f"p_holm_vs_{baseline}"] < 0.1)).all()
    assert table["p_vs_ease"].notna().sum() == 4 * 4  # q levels × models vs EASE
    assert table["p_vs_ease_ipw"].notna().sum() == 4 * 3
    assert (table["p_holm_vs_ease"] >= table["p_vs_ease"]).all()


def test_loss_by_fold_in_buckets():
    rng = np.random.default_rng(6)
    arrays = {
        "n_fold_in": rng.integers(1, 30, size=203),
        "sq_loss": rng.random(203) * 10,
        "ndcg@100": rng.random(203),
    }
    table = analysis.loss_by_fold_in(arrays)
    assert len(table) == 10 and table["n_users"].sum() == 203
    assert table["n_users"].max() - table["n_users"].min() <= 1
    assert np.all(np.diff(table["fold_in_min"]) >= 0)
    assert np.all(table["fold_in_max"].to_numpy()[:-1] <= table["fold_in_min"].to_numpy()[1:])
    order = np.argsort(arrays["n_fold_in"], kind="stable")
    first = order[: table["n_users"].iloc[0]]
    assert table["sq_loss"].iloc[0] == pytest.approx(arrays["sq_loss"][first].mean(), rel=1e-12)
    assert table["ndcg@100"].iloc[0] == pytest.approx(arrays["ndcg@100"][first].mean(), rel=1e-12)


# ------------------------------------------------------------------------------ report
def test_align_runs_reorders_and_checks_users(tmp_path):
    paths = _make_workdirs(str(tmp_path), models=("ease", "rlarm"))
    runs = report.align_runs([report.load_run(paths[m]) for m in ("rlarm", "ease")])
    assert list(runs) == ["ease", "rlarm"]
    np.testing.assert_array_equal(
        runs["ease"].per_user["user_ids"], runs["rlarm"].per_user["user_ids"]
    )
    raw = dict(np.load(os.path.join(paths["rlarm"], "per_user_test.npz")))
    pos = {u: i for i, u in enumerate(raw["user_ids"])}
    idx = [pos[u] for u in runs["ease"].per_user["user_ids"]]
    np.testing.assert_array_equal(runs["rlarm"].per_user["ndcg@100"], raw["ndcg@100"][idx])
    raw["user_ids"] = raw["user_ids"] + 1  # different users
    savez(os.path.join(paths["rlarm"], "per_user_test.npz"), **raw)
    with pytest.raises(DataError, match="same users"):
        report.align_runs([report.load_run(p) for p in paths.values()])
    with pytest.raises(DataError, match="given twice"):
        report.align_runs([report.load_run(paths["ease"])] * 2)


def test_analyze_and_write_report(tmp_path):
    paths = _make_workdirs(str(tmp_path / "runs"))
    result = report.analyze_workdirs([str(tmp_path / "runs")])
    assert list(result.workdirs) == list(MODELS)
    # groups: per-group means equal numpy on the aligned arrays
    ease = report.load_run(paths["ease"]).per_user
    g1 = result.groups[(result.groups["model"] == "ease") & (result.groups["group"] == 1)]
    assert g1["ndcg@100"].iloc[0] == pytest.approx(ease["ndcg@100"][ease["group"] == 1].mean())
    assert set(result.adversary_auc["model"]) == {"arm", "rlarm", "rlarm_nn"}
    assert np.all(result.adversary_auc["auc"] > 0.8)  # scores were planted +2 on minority
    written = report.write_report(result, str(tmp_path / "out"))
    assert all(os.path.getsize(p) > 0 for p in written)
    assert {os.path.basename(p) for p in written} >= {
        "table2.csv", "table2.md", "fig1_loss_by_fold_in.png", "fig2_worst_users.png",
        "fig2_worst_users.csv", "groups.csv", "adversary_auc.csv", "analysis.json",
    }  # fmt: skip
    text = (tmp_path / "out" / "summary.md").read_text()  # the Holm families, stated
    assert (
        "p_holm_vs_ease, p_holm_vs_ease_ipw: paired t p-values Holm-corrected over 40 tests "
        "against EASE (10 q levels × 4 models) and over 30 tests against EASE-IPW (10 q "
        "levels × 3 models); one family per baseline" in text
    )
    assert "Holm-corrected over 12 tests against EASE (3 q levels × 4 models)" in text
    assert "| p_holm_vs_ease | p_holm_vs_ease_ipw |" in text
    records = json.loads((tmp_path / "out" / "analysis.json").read_text())["worst_users"]
    holm = analysis.holm([np.nan if r["p_vs_ease"] is None else r["p_vs_ease"] for r in records])
    np.testing.assert_allclose([r["p_holm_vs_ease"] for r in records], holm, rtol=1e-15)
    with pytest.raises(ArmJaxError, match="EASE"):
        report.analyze_workdirs([paths["rlarm"], paths["arm"]])
    with pytest.raises(ConfigError, match="n_buckets"):
        report.analyze_workdirs([str(tmp_path / "runs")], n_buckets=0)
    with pytest.raises(ConfigError, match="alpha"):
        report.analyze_workdirs([str(tmp_path / "runs")], alpha=2.0)
    # Figure titles: every model's settings, in lines a figure does not clip.
    title = report._title(result, list(MODELS)).splitlines()
    assert len(title) >= 2 and all(len(line) <= 120 for line in title)
    assert all(plots.settings_label(m, result.settings[m]) in "\n".join(title) for m in MODELS)
    alone = report.analyze_workdirs([paths["ease"]])  # EASE alone: no Figure 2 bars
    assert len(alone.worst_users) == 0
    written = report.write_report(alone, str(tmp_path / "alone"))
    assert not os.path.exists(tmp_path / "alone" / "fig2_worst_users.png")
    assert os.path.exists(tmp_path / "alone" / "fig1_loss_by_fold_in.png")


def _rewrite_npz(path, **changes):
    arrays = dict(np.load(path))
    savez(path, **{**arrays, **changes})


def test_runs_of_other_splits_or_broken_runs_are_refused(tmp_path):
    # Each used to be analysed as if it were fine (a +1834% "improvement", p = 0.027, from
    # runs of two different splits) or to end in a traceback.
    paths = _make_workdirs(str(tmp_path / "runs"), models=("ease", "rlarm"))
    ease, rlarm = paths["ease"], paths["rlarm"]

    def analyse(**options):
        return report.analyze_workdirs([ease, rlarm], **options)

    analyse()
    per_user = os.path.join(rlarm, "per_user_test.npz")
    fold_in = dict(np.load(per_user))["n_fold_in"]
    _rewrite_npz(per_user, n_fold_in=fold_in + (np.arange(fold_in.size) < 7))
    with pytest.raises(DataError, match="n_fold_in differs .* for 7 users: .*different splits"):
        analyse()
    _rewrite_npz(per_user, n_fold_in=fold_in)
    config = os.path.join(rlarm, "config.json")
    with open(config) as f:
        original = json.load(f)
    for path, nnz in ((os.path.join(ease, "config.json"), 1821), (config, 1477)):
        with open(path) as f:
            write_json(path, {**json.load(f), "data": {"nnz_test_tr": nnz, "n_items": 50}})
    with pytest.raises(DataError, match="different splits: config.json's data differs in nnz"):
        analyse()
    write_json(config, {**original, "data": {"nnz_test_tr": 1821}})
    analyse()  # a statistic only one run records (another version's) is not compared
    write_json(config, original)
    analyse()

    results = os.path.join(rlarm, "results.json")
    write_json(results, {"stop_reason": "non-finite loss in epoch 1 (learner_loss=inf)"})
    with pytest.raises(DataError, match="results.json: training diverged before its first"):
        analyse()
    write_json(results, {"stop_reason": "non-finite loss in epoch 9", "best_epoch": 4})
    analyse()  # diverged later: the files hold the best epoch's model
    ndcg = dict(np.load(per_user))["ndcg@100"]
    _rewrite_npz(per_user, **{"ndcg@100": np.where(np.arange(ndcg.size) < 5, np.nan, ndcg)})
    with pytest.raises(DataError, match="ndcg@100 is not finite for 5 of 300 users"):
        analyse()
    _rewrite_npz(per_user, **{"ndcg@100": ndcg})

    with pytest.raises(ConfigError, match=r"n_buckets .* \[1, 300\]"):
        analyse(n_buckets=301)
    with open(config, "w") as f:
        f.write('{"dataset": "synth')
    with pytest.raises(DataError, match="config.json: not readable JSON"):
        analyse()
    write_json(config, [original])
    with pytest.raises(DataError, match="config.json: expected a JSON object, got list"):
        analyse()
    write_json(config, original)
    with open(per_user, "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(DataError, match="per_user_test.npz: not an .npz file"):
        analyse()


def test_report_folder_errors_and_figure_labels(tmp_path):
    paths = _make_workdirs(str(tmp_path / "runs"), models=("ease", "rlarm"))
    result = report.analyze_workdirs(list(paths.values()), split="valid", n_buckets=4)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="exists and is not a folder"):
        report.write_report(result, str(tmp_path / "file"))
    with pytest.raises(DataError, match="cannot create the report folder"):
        report.write_report(result, str(tmp_path / "file" / "out"))
    fig1 = plots.loss_by_fold_in_figure(result.loss_by_fold_in, title="t", split="valid")
    assert fig1.axes[0].get_xlabel().startswith("quartile of valid users")
    fig2 = plots.worst_users_figure(result.worst_users, title="t", split="valid")
    assert "of valid users" in fig2.axes[0].get_xlabel()


def test_launch_analyze_end_to_end(tmp_path):
    paths = _make_workdirs(str(tmp_path / "runs"), models=("ease", "ease_ipw", "rlarm"))
    out = tmp_path / "analysis"
    argvs = [  # the last two are refused; all three in one interpreter (_cli_batch)
        [f"--workdirs={','.join(paths.values())}", f"--outdir={out}"],
        *[[*bad, f"--outdir={out}"]
          for bad in ([f"--workdirs={paths['rlarm']}"],
                      [f"--workdirs={paths['ease']}", "--n_buckets=0"])],
    ]  # fmt: skip
    proc, *refused = run_cases("analyze.py", argvs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Table 2" in proc.stdout and "R-LARM" in proc.stdout
    for name in (
        "table2.csv",
        "table2.md",
        "fig1_loss_by_fold_in.csv",
        "summary.md",
        "fig1_loss_by_fold_in.png",
        "fig2_worst_users.png",
        "fig2_worst_users.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    with open(out / "analysis.json") as f:
        summary = json.load(f)
    ease = dict(np.load(os.path.join(paths["ease"], "per_user_test.npz")))
    row = next(r for r in summary["table2"] if r["model"] == "ease")
    assert row["ndcg@100"] == pytest.approx(ease["ndcg@100"].astype(np.float64).mean(), rel=1e-12)
    assert len(summary["worst_users"]) == 10 * 2

    for proc in refused:
        assert proc.returncode == 1
        assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr
