"""Analysis of trained models from their per-user files: Table 2, Figures 1–2, groups.

Everything here is recomputed from the files a training run leaves in its workdir
(`config.json`, `per_user_<split>.npz`, `adversary_scores.npz`), so no model is
retrained. `arm_jax.report` loads and checks the files and writes the report; the
statistics here are pure functions of arrays.

Definitions used throughout:
  * mean ± standard error: float64 mean and `std(ddof=1) / sqrt(n)` (NaN for n < 2).
  * Figure 1 buckets: users sorted by number of fold-in items (stable sort, so ties keep
    the file order) and cut into `n_buckets` groups of equal size (`np.array_split`);
    every bucket reports the range of fold-in counts it holds.
  * Figure 2 "bottom q%" users: with n users and k = ceil(q·n/100), the bucket is exactly
    the first k users in the order (EASE NDCG@100 ascending, then EASE's `best_rank`, the
    rank of the user's best-placed held-out item, descending, then user id ascending), so
    a bucket labelled q% holds k users even where many tie at NDCG 0 (on sparse data most
    of the bottom half may). `threshold` is the k-th user's NDCG; `tied_at_cut` counts
    the users sharing the k-th user's (NDCG, best_rank) and `tied_left_out` those of
    them the user-id order left out (0: the cut splits no tie). Runs without `best_rank`
    break NDCG ties by user id alone. Improvement is
    `100 · (mean_model − mean_EASE) / mean_EASE` over the bucket (NaN when mean_EASE is
    0; `diff_mean`, the absolute difference, is always given); p-values are two-sided
    paired t-tests (`scipy.stats.ttest_rel`) of the per-user NDCG@100 of the model
    against EASE and against EASE-IPW on the same users. Each baseline's p-values over
    every q level and model form one family, adjusted by Holm's step-down (`holm`):
    `p_holm_vs_*`; the `sig_*` columns compare the adjusted p with alpha.
  * Holm–Bonferroni: with the family's m non-NaN p-values sorted, p_(1) <= ... <= p_(m),
    the adjusted p_(k) is min(1, max_{j<=k} (m − j + 1)·p_(j)); NaNs stay NaN and are not
    counted in m. It controls the family-wise error rate at alpha for any dependence
    between the tests (the q buckets are nested, so theirs are strongly dependent).
  * Adversary AUC: ROC AUC of the raw score s_u for telling planted minority users
    (`group != 0`) from the majority, via the Mann–Whitney U statistic on average ranks
    (ties count one half); for an item-level adversary, of its item logits t_i for
    telling the minorities' niche items from the mainstream ones (`item_auc`).
"""

import numpy as np
import pandas as pd
import scipy.special
import scipy.stats

from arm_jax.configs import MODEL_LABELS, MODELS
from arm_jax.errors import ArmJaxError

METRICS = ("ndcg@100", "recall@20", "recall@50")
MODEL_ORDER = MODELS  # the registry's order (configs.REGISTRY)
PERCENTS = tuple(range(10, 101, 10))
_WORST_USERS_COLUMNS = (
    "percent", "model", "label", "n_users", "share_pct", "threshold", "tied_at_cut",
    "tied_left_out", "ease_mean", "mean", "diff_mean",
    "improvement_pct", "t_vs_ease", "p_vs_ease", "t_vs_ease_ipw", "p_vs_ease_ipw",
    "p_holm_vs_ease", "p_holm_vs_ease_ipw", "sig_vs_ease", "sig_vs_ease_ipw",
)  # fmt: skip


# -------------------------------------------------------------------------- statistics
def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Float64 mean and standard error std(ddof=1)/sqrt(n) of `values: [n]`.

    Returns (NaN, NaN) for n = 0 and (mean, NaN) for n = 1.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))


def overall_table(per_user: dict[str, dict]) -> pd.DataFrame:
    """Table 2: per model, mean and standard error of each metric over the users.

    Args:
      per_user: {model: {metric: [n_users], ...}}.

    Returns:
      One row per model: model, label, n_users, then `<metric>` and `<metric>_se`.
    """
    rows = []
    for model, arrays in per_user.items():
        row = {"model": model, "label": MODEL_LABELS[model]}
        row["n_users"] = int(np.asarray(arrays[METRICS[0]]).size)
        for metric in METRICS:
            row[metric], row[f"{metric}_se"] = mean_and_se(arrays[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def equal_size_buckets(values: np.ndarray, *, n_buckets: int = 10) -> np.ndarray:
    """Bucket index in [0, n_buckets) of each of `values: [n]`, by rank, equal sizes.

    Users are sorted by value (stable: ties keep input order) and cut with
    `np.array_split`, so bucket sizes differ by at most one.
    """
    order = np.argsort(np.asarray(values), kind="stable")
    bucket = np.empty(order.size, dtype=np.int64)
    for b, idx in enumerate(np.array_split(order, n_buckets)):
        bucket[idx] = b
    return bucket


def loss_by_fold_in(arrays: dict, *, n_buckets: int = 10) -> pd.DataFrame:
    """Figure 1: per fold-in bucket, mean per-user squared loss and NDCG@100.

    Args:
      arrays: one model's (EASE's) per-user arrays with `n_fold_in`, `sq_loss`,
        `ndcg@100`, each [n_users].
      n_buckets: number of equal-size buckets (10 in the paper).

    Returns:
      One row per bucket (1-based): n_users, fold_in_min, fold_in_max, sq_loss,
      sq_loss_se, ndcg@100, ndcg@100_se.
    """
    bucket = equal_size_buckets(arrays["n_fold_in"], n_buckets=n_buckets)
    rows = []
    for b in range(n_buckets):
        sel = bucket == b
        fold_in = arrays["n_fold_in"][sel]
        row = {"bucket": b + 1, "n_users": int(sel.sum())}
        row["fold_in_min"] = int(fold_in.min()) if fold_in.size else -1
        row["fold_in_max"] = int(fold_in.max()) if fold_in.size else -1
        row["sq_loss"], row["sq_loss_se"] = mean_and_se(arrays["sq_loss"][sel])
        row["ndcg@100"], row["ndcg@100_se"] = mean_and_se(arrays["ndcg@100"][sel])
        rows.append(row)
    return pd.DataFrame(rows)


def bottom_percent_mask(values: np.ndarray, percent: int) -> tuple[np.ndarray, float]:
    """The users in the bottom `percent`% of `values: [n]`, ties at the cut kept together.

    Returns:
      (mask [n] of values <= t, t) where t is the k-th smallest value, k = ceil(p·n/100)
      computed in integers (NumPy's "inverted_cdf" quantile at p/100).
    """
    if not 0 < percent <= 100 or int(percent) != percent:
        raise ArmJaxError(f"percent must be an integer in (0, 100], got {percent}")
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return np.zeros(0, dtype=bool), float("nan")
    k = -(-int(percent) * x.size // 100)
    threshold = float(np.partition(x, k - 1)[k - 1])
    return x <= threshold, threshold


def bottom_users(
    values: np.ndarray, percent: int, *, tiebreak=None, user_ids=None
) -> tuple[np.ndarray, float, int, int]:
    """Exactly the k = ceil(p·n/100) worst of `values: [n]`, ties broken as stated.

    Args:
      values: `[n]` per-user metric (lower is worse).
      percent: p, an integer in (0, 100].
      tiebreak: `[n]` second key, higher is worse (EASE's `best_rank`), or None.
      user_ids: `[n]` last key, ascending, or None for the array order.

    Returns:
      (mask [n] of the k users, the k-th user's value, users tied with the k-th user on
      (value, tiebreak), how many of those are left out of the mask).
    """
    if not 0 < percent <= 100 or int(percent) != percent:
        raise ArmJaxError(f"percent must be an integer in (0, 100], got {percent}")
    x = np.asarray(values, dtype=np.float64)
    mask = np.zeros(x.size, dtype=bool)
    if x.size == 0:
        return mask, float("nan"), 0, 0
    second = np.zeros(x.size) if tiebreak is None else -np.asarray(tiebreak, np.float64)
    last = np.arange(x.size) if user_ids is None else np.asarray(user_ids)
    order = np.lexsort((last, second, x))
    k = -(-int(percent) * x.size // 100)
    mask[order[:k]] = True
    cut = order[k - 1]
    tied = (x == x[cut]) & (second == second[cut])
    return mask, float(x[cut]), int(tied.sum()), int((tied & ~mask).sum())


def paired_pvalue(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test of `a` against `b` (both [n]): (t statistic, p-value).

    NaN when n < 2 or when every difference is equal (no variance).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = a - b
    if a.size < 2 or np.all(d == d[0]):
        return float("nan"), float("nan")
    res = scipy.stats.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values of one family `pvalues: [...]` (module docstring).

    NaN entries stay NaN and do not count in the family size m; the result has the
    input's shape, float64, and keeps the order of the raw p-values.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    out = np.full(flat.shape, np.nan)
    present = np.flatnonzero(~np.isnan(flat))
    order = present[np.argsort(flat[present], kind="stable")]
    m = order.size
    # Step-down: the k-th smallest is scaled by m - k + 1; the running max keeps the
    # adjusted values in the raw values' order.
    scaled = (m - np.arange(m)) * flat[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out.reshape(p.shape)


def worst_users_improvement(
    ndcg: dict[str, np.ndarray],
    *,
    percents: tuple[int, ...] = PERCENTS,
    alpha: float = 0.05,
    tiebreak: np.ndarray | None = None,
    user_ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """Figure 2: NDCG@100 improvement over EASE on EASE's bottom-q% users.

    Args:
      ndcg: {model: per-user NDCG@100 [n_users]}, aligned; must contain "ease".
      percents: the q values, integer percents.
      alpha: significance level of the paired t-tests.
      tiebreak, user_ids: `[n_users]` EASE's `best_rank` and the user ids, the later
        keys of the bottom-q% order (`bottom_users`); None: not used.

    Returns:
      One row per (q, model other than EASE): n_users (k), share_pct (100·k/n),
      threshold, tied_at_cut, tied_left_out, ease_mean, mean, diff_mean,
      improvement_pct, t/p against EASE and EASE-IPW (NaN when EASE-IPW is absent or is
      the model), p_holm_vs_ease and p_holm_vs_ease_ipw (`holm` over each column: all q
      levels × models), sig_vs_ease, sig_vs_ease_ipw (Holm-adjusted p < alpha).
    """
    if "ease" not in ndcg:
        raise ArmJaxError("Figure 2 needs the EASE workdir (model 'ease'); none was given")
    base = np.asarray(ndcg["ease"], dtype=np.float64)
    ipw = ndcg.get("ease_ipw")
    rows = []
    for percent in percents:
        mask, threshold, tied, left_out = bottom_users(
            base, percent, tiebreak=tiebreak, user_ids=user_ids
        )
        base_mean = float(base[mask].mean())
        for model, values in ndcg.items():
            if model == "ease":
                continue
            row = _improvement_row(model, values, base, ipw, mask, base_mean)
            cut = {"threshold": threshold, "tied_at_cut": tied, "tied_left_out": left_out}
            rows.append({"percent": percent, **row, **cut})
    table = pd.DataFrame(rows, columns=list(_WORST_USERS_COLUMNS))
    for baseline in ("ease", "ease_ipw"):  # one family per baseline
        adjusted = holm(table[f"p_vs_{baseline}"].to_numpy(dtype=np.float64))
        table[f"p_holm_vs_{baseline}"] = adjusted
        table[f"sig_vs_{baseline}"] = adjusted < alpha  # NaN: False
    return table


def _improvement_row(model, values, base, ipw, mask, base_mean) -> dict:
    """Figure 2's numbers for `model` on EASE's bottom users `mask`: its mean NDCG@100,
    the difference from EASE's, and the paired t-tests against EASE and EASE-IPW."""
    v = np.asarray(values, dtype=np.float64)[mask]
    mean = float(v.mean())
    t_e, p_e = paired_pvalue(v, base[mask])
    t_i, p_i = float("nan"), float("nan")
    if ipw is not None and model != "ease_ipw":
        t_i, p_i = paired_pvalue(v, np.asarray(ipw, dtype=np.float64)[mask])
    return {
        "model": model,
        "label": MODEL_LABELS[model],
        "n_users": int(mask.sum()),
        "share_pct": 100.0 * mask.sum() / base.size,
        "ease_mean": base_mean,
        "mean": mean,
        "diff_mean": float((v - base[mask]).mean()),
        "improvement_pct": (
            100.0 * (mean - base_mean) / base_mean if base_mean > 0 else float("nan")
        ),
        "t_vs_ease": t_e,
        "p_vs_ease": p_e,
        "t_vs_ease_ipw": t_i,
        "p_vs_ease_ipw": p_i,
    }


def group_table(per_user: dict[str, dict], *, metric: str = "ndcg@100") -> pd.DataFrame:
    """Per model and planted group: n_users, mean and standard error of `metric`.

    Args:
      per_user: {model: arrays with `group` and `metric`, each [n_users]}; models without
        `group` are skipped.
    """
    rows = []
    for model, arrays in per_user.items():
        if "group" not in arrays:
            continue
        for g in np.unique(arrays["group"]):
            sel = arrays["group"] == g
            mean, se = mean_and_se(arrays[metric][sel])
            rows.append(
                {
                    "model": model,
                    "label": MODEL_LABELS[model],
                    "group": int(g),
                    "n_users": int(sel.sum()),
                    metric: mean,
                    f"{metric}_se": se,
                }
            )
    return pd.DataFrame(rows)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of `scores: [n]` for boolean `labels: [n]` by the Mann–Whitney U formula.

    AUC = (R₊ − n₊(n₊+1)/2) / (n₊ n₋) with R₊ the sum of the positives' average ranks
    (`scipy.stats.rankdata`), which counts a tied pair as one half. NaN if a class is empty.
    """
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(np.asarray(scores, dtype=np.float64))
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def item_auc(scores: np.ndarray, item_groups: np.ndarray) -> float:
    """ROC AUC of an item-level adversary's logits `scores: [n]` for telling the planted
    minorities' niche items (`item_groups != 0`, `Split.item_groups`) from the
    mainstream ones (`roc_auc`: Mann–Whitney U on average ranks); NaN if a class is
    empty."""
    return roc_auc(scores, np.asarray(item_groups) != 0)


def item_auc_table(adversaries: dict[str, dict]) -> pd.DataFrame:
    """Per item-level adversary: how well its logits pick out the planted niche items.

    Args:
      adversaries: {model: arrays `score` and `group`, each [n_items]}; models without
        `group` are skipped.

    Returns:
      One row per model: n_items, n_niche, auc (`item_auc`), and weight_ratio = mean
      sigmoid(t) of niche / of mainstream items.
    """
    return _planted_auc_table(adversaries, rows="n_items", planted="n_niche")


def adversary_auc_table(adversaries: dict[str, dict]) -> pd.DataFrame:
    """Per adversarial model: how well its scores pick out planted minority users.

    Args:
      adversaries: {model: arrays `score` and `group`, each [n_train_users]}; models
        without `group` are skipped.

    Returns:
      One row per model: n_users, n_minority, auc (score vs group != 0), and
      weight_ratio = mean sigmoid(s) of minority / of majority users.
    """
    return _planted_auc_table(adversaries, rows="n_users", planted="n_minority")


def _planted_auc_table(adversaries: dict[str, dict], *, rows: str, planted: str):
    """The AUC table of scores (users' or items') against their planted `group != 0`;
    `rows` and `planted` name the count columns."""
    out = []
    for model, arrays in adversaries.items():
        if arrays is None or "group" not in arrays:
            continue
        score = np.asarray(arrays["score"], dtype=np.float64)
        marked = np.asarray(arrays["group"]) != 0
        weight = scipy.special.expit(score)
        ratio = float("nan")
        if marked.any() and (~marked).any():
            ratio = float(weight[marked].mean() / weight[~marked].mean())
        out.append(
            {
                "model": model,
                "label": MODEL_LABELS[model],
                rows: int(score.size),
                planted: int(marked.sum()),
                "auc": roc_auc(score, marked),
                "weight_ratio": ratio,
            }
        )
    return pd.DataFrame(out)
