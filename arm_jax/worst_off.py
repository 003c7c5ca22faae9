"""Worst-off users: each model's own NDCG@100 CVaR, its bootstrap interval, zero shares.

Where Figure 2 follows EASE's bottom q% (`analysis.worst_users_improvement`), the
tables here follow each model's own worst users. Definitions (float64 throughout):

  * CVaR_q of per-user values x (n users): the mean of the k = ceil(q·n/100) smallest
    values (the lower tail: NDCG is a utility). Ties do not matter: tied values are equal.
  * Bootstrap: B resamples of the n users with replacement, drawn from
    `np.random.default_rng(seed)` as `integers(0, n, size=(c, n))` for consecutive chunks
    of c resamples (c = `chunk_size`, default the most with c·n <= 2^22); each
    resample's CVaR_q is the mean of its k smallest values (same k). The 95% interval is
    the 2.5th and 97.5th percentiles (NumPy's default linear interpolation) of the B
    values.
  * Paired comparison with EASE: the same resampled users for every model, so each
    resample b gives d_b = CVaR_q(model) − CVaR_q(EASE), each model's CVaR over its own
    worst users of that resample. Reported: the difference on the data, the percentile
    interval of d_b and the two-sided bootstrap p-value
    p = min(1, 2·(1 + min(#{d_b <= 0}, #{d_b >= 0})) / (B + 1)). Those p-values, over
    every model compared with EASE and every q, form one family: `p_holm_vs_ease` is
    Holm's adjustment of it (`analysis.holm`).
  * Zero share: the fraction of users with NDCG@100 exactly 0 (no held-out item in the
    top 100).
"""

import numpy as np
import pandas as pd

from arm_jax.analysis import MODEL_LABELS, holm
from arm_jax.errors import ConfigError

CVAR_PERCENTS = (10, 20, 30)


def tail_size(n: int, percent: int) -> int:
    """k = ceil(percent·n/100), computed in integers."""
    return -(-int(percent) * int(n) // 100)


def cvar(values: np.ndarray, percent: int) -> float:
    """CVaR_q: mean of the k = ceil(q·n/100) smallest of `values: [n]` (NaN if n = 0)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan")
    k = tail_size(x.size, percent)
    return float(np.partition(x, k - 1)[:k].mean())


def _tail_means(samples: np.ndarray, ks: list[int]) -> np.ndarray:
    """`[len(ks), c]`: per row of `samples: [c, n]`, the mean of its k smallest, per k."""
    part = np.partition(samples, [k - 1 for k in ks], axis=1)
    csum = np.cumsum(part[:, : max(ks)], axis=1)
    return np.stack([csum[:, k - 1] / k for k in ks])


def bootstrap_cvar(
    values: dict[str, np.ndarray],
    percents: tuple[int, ...] = CVAR_PERCENTS,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
    """CVaR_q of every resample of the users, the same resamples for every model.

    Args:
      values: {model: `[n]` per-user values}, aligned (the same users in one order).
      percents: the q values.
      n_boot: B, the resamples.
      seed: seed of the `np.random.Generator` that draws them.
      chunk_size: resamples drawn and reduced at once (module docstring).

    Returns:
      {model: `[len(percents), B]` float64 CVaR_q of each resample}.
    """
    arrays = {m: np.asarray(v, dtype=np.float64) for m, v in values.items()}
    n = next(iter(arrays.values())).size if arrays else 0
    if n == 0 or n_boot < 1:
        raise ConfigError(f"bootstrap needs users and n_boot >= 1, got {n} users, {n_boot}")
    ks = [tail_size(n, q) for q in percents]
    chunk = chunk_size or max(1, min(n_boot, 2**22 // n))
    rng = np.random.default_rng(seed)
    out = {m: np.empty((len(ks), n_boot)) for m in arrays}
    for start in range(0, n_boot, chunk):  # chunks of resamples bound the memory
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        for m, x in arrays.items():
            out[m][:, start:stop] = _tail_means(x[idx], ks)
    return out


def paired_bootstrap_pvalue(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of `diffs: [B]` against 0 (module docstring)."""
    d = np.asarray(diffs, dtype=np.float64)
    tail = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2.0 * (1 + tail) / (d.size + 1)))


def worst_off_table(
    ndcg: dict[str, np.ndarray],
    *,
    percents: tuple[int, ...] = CVAR_PERCENTS,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Each model's NDCG@100 CVaR_q with its bootstrap interval and the paired EASE test.

    Args:
      ndcg: {model: per-user NDCG@100 `[n]`}, aligned.
      percents: the q values.
      n_boot, seed: the bootstrap (`bootstrap_cvar`).
      level: the intervals' coverage.

    Returns:
      One row per (model, q): n_users, k, cvar, cvar_lo, cvar_hi, and against EASE
      (NaN for EASE itself or without EASE): diff_vs_ease, diff_lo, diff_hi, p_vs_ease,
      p_holm_vs_ease (`holm` over every model's and q's p_vs_ease).
    """
    boot = bootstrap_cvar(ndcg, percents, n_boot=n_boot, seed=seed)
    tails = (50 * (1 - level), 50 * (1 + level))
    rows = []
    for model, values in ndcg.items():
        n = np.asarray(values).size
        for i, q in enumerate(percents):
            lo, hi = np.percentile(boot[model][i], tails)
            row = {
                "model": model,
                "label": MODEL_LABELS.get(model, model),
                "percent": q,
                "n_users": n,
                "k": tail_size(n, q),
                "cvar": cvar(values, q),
                "cvar_lo": float(lo),
                "cvar_hi": float(hi),
            }
            row.update(diff_vs_ease=np.nan, diff_lo=np.nan, diff_hi=np.nan, p_vs_ease=np.nan)
            if "ease" in ndcg and model != "ease":
                d = boot[model][i] - boot["ease"][i]
                lo, hi = np.percentile(d, tails)
                row["diff_vs_ease"] = row["cvar"] - cvar(ndcg["ease"], q)
                row.update(diff_lo=float(lo), diff_hi=float(hi))
                row["p_vs_ease"] = paired_bootstrap_pvalue(d)
            rows.append(row)
    table = pd.DataFrame(rows)
    table["p_holm_vs_ease"] = holm(table["p_vs_ease"].to_numpy(dtype=np.float64))
    return table


def zero_share_table(ndcg: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per model: n_users, n_zero (users with NDCG@100 = 0) and zero_share = n_zero / n."""
    rows = []
    for model, values in ndcg.items():
        x = np.asarray(values, dtype=np.float64)
        n_zero = int((x == 0).sum())
        rows.append(
            {
                "model": model,
                "label": MODEL_LABELS.get(model, model),
                "n_users": int(x.size),
                "n_zero": n_zero,
                "zero_share": n_zero / x.size if x.size else float("nan"),
            }
        )
    return pd.DataFrame(rows)
