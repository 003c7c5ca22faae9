"""Runs the analysis of `arm_jax.analysis` on model workdirs and writes its report.

`arm_jax.runs` loads and checks the workdirs (`load_run`, `align_runs`, re-exported
here); `analyze` is a pure function of the aligned runs; `write_report` writes every
table (CSV and Markdown: `arm_jax.report_markdown`, its `markdown_table` and
`summary_markdown` re-exported here), both figures (PNG) and `analysis.json` atomically.
"""

import dataclasses
import math
import os

import pandas as pd

from arm_jax import plots
from arm_jax.analysis import (
    METRICS,
    PERCENTS,
    adversary_auc_table,
    group_table,
    item_auc_table,
    loss_by_fold_in,
    overall_table,
    worst_users_improvement,
)
from arm_jax.errors import ArmJaxError, ConfigError, DataError
from arm_jax.io import write_json, write_text
from arm_jax.report_markdown import (  # noqa: F401 (SUMMARY_PERCENTS re-exported)
    SUMMARY_PERCENTS,
    markdown_table,
    summary_markdown,
)
from arm_jax.runs import ModelRun, align_runs, find_workdirs, load_run
from arm_jax.worst_off import CVAR_PERCENTS, worst_off_table, zero_share_table

__all__ = [
    "Analysis", "ModelRun", "align_runs", "analyze", "analyze_workdirs", "find_workdirs",
    "load_run", "markdown_table", "summary", "summary_markdown", "write_report",
]  # fmt: skip


# ----------------------------------------------------------------------------- analysis
@dataclasses.dataclass(frozen=True)
class Analysis:
    """Every table of one dataset's analysis.

    Attributes:
      dataset, split: what was evaluated.
      workdirs: {model: workdir}.
      settings: {model: hyperparameters}.
      table2: `overall_table` (Table 2).
      loss_by_fold_in: `loss_by_fold_in` of EASE (Figure 1).
      worst_users: `worst_users_improvement` (Figure 2).
      groups: `group_table`, None without planted groups.
      adversary_auc: `adversary_auc_table`, None without scored planted groups.
      alpha: the significance level of Figure 2.
      warnings: what a reader must know first, e.g. a run whose training diverged.
      worst_off: `worst_off.worst_off_table` (each model's own CVaR_q of NDCG@100).
      zeros: `worst_off.zero_share_table` (share of users with NDCG@100 = 0).
      bootstrap: {"n_boot", "seed"} of the CVaR intervals.
      item_auc: `item_auc_table` (item-level adversaries vs the planted niche items),
        None without them.
    """

    dataset: str
    split: str
    workdirs: dict
    settings: dict
    table2: pd.DataFrame
    loss_by_fold_in: pd.DataFrame
    worst_users: pd.DataFrame
    groups: pd.DataFrame | None
    adversary_auc: pd.DataFrame | None
    alpha: float
    worst_off: pd.DataFrame | None = None
    zeros: pd.DataFrame | None = None
    bootstrap: dict | None = None
    item_auc: pd.DataFrame | None = None
    warnings: tuple[str, ...] = ()


def _warnings(runs: dict[str, ModelRun]) -> tuple[str, ...]:
    """A run whose training stopped at a non-finite loss is not a success: say so."""
    return tuple(
        f"{m} ({r.workdir}): training diverged: {r.stop_reason}"
        for m, r in runs.items()
        if str(r.stop_reason).startswith("non-finite")
    )


def _check_options(runs, n_buckets, alpha, percents, cvar_percents, n_boot) -> None:
    """`analyze`'s checks: a ConfigError for a bad option, an error without EASE."""
    n_users = len(next(iter(runs.values())).per_user["user_ids"]) if runs else 0
    if not 1 <= n_buckets <= max(n_users, 1):
        raise ConfigError(
            f"n_buckets (--n_buckets) must be in [1, {n_users}] (the users), got {n_buckets}"
        )
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha (--alpha) must be in (0, 1), got {alpha}")
    if not all(0 < q <= 100 for q in (*percents, *cvar_percents)):
        raise ConfigError(f"percents must be in (0, 100], got {percents}, {cvar_percents}")
    if n_boot < 1:
        raise ConfigError(f"n_boot (--n_bootstrap) must be >= 1, got {n_boot}")
    if "ease" not in runs:
        raise ArmJaxError(
            "Figures 1-2 need the EASE workdir (model 'ease'); got only "
            + (", ".join(runs) or "nothing")
        )


def analyze(
    runs: dict[str, ModelRun],
    *,
    split: str = "test",
    n_buckets: int = 10,
    percents: tuple[int, ...] = PERCENTS,
    alpha: float = 0.05,
    cvar_percents: tuple[int, ...] = CVAR_PERCENTS,
    n_boot: int = 1000,
    seed: int = 0,
) -> Analysis:
    """Computes Table 2, Figures 1–2 and the planted-group tables of aligned runs.

    Args:
      runs: `align_runs` output; must contain "ease" (Figures 1–2 are relative to it).
      split: the split the per-user arrays come from (recorded only).
      n_buckets: Figure 1 buckets.
      percents: Figure 2 q values.
      alpha: Figure 2 significance level.
      cvar_percents: the q of each model's own CVaR_q (`worst_off`).
      n_boot, seed: resamples and seed of the CVaR bootstrap.

    Raises:
      ConfigError: n_buckets outside [1, users], alpha outside (0, 1), a q outside
        (0, 100] or n_boot < 1.
    """
    _check_options(runs, n_buckets, alpha, percents, cvar_percents, n_boot)
    per_user = {m: r.per_user for m, r in runs.items()}
    ndcg = {m: a["ndcg@100"] for m, a in per_user.items()}
    ease = per_user["ease"]
    groups = group_table(per_user)
    auc = adversary_auc_table({m: r.adversary for m, r in runs.items() if r.adversary})
    items = item_auc_table({m: r.item_adversary for m, r in runs.items() if r.item_adversary})
    return Analysis(
        dataset=runs["ease"].dataset,
        split=split,
        workdirs={m: r.workdir for m, r in runs.items()},
        settings={m: r.hyperparameters for m, r in runs.items()},
        table2=overall_table(per_user),
        loss_by_fold_in=loss_by_fold_in(per_user["ease"], n_buckets=n_buckets),
        worst_users=worst_users_improvement(
            ndcg,
            percents=percents,
            alpha=alpha,
            tiebreak=ease.get("best_rank"),  # absent in workdirs of older versions
            user_ids=ease["user_ids"],
        ),
        groups=groups if len(groups) else None,
        adversary_auc=auc if len(auc) else None,
        alpha=alpha,
        worst_off=worst_off_table(ndcg, percents=cvar_percents, n_boot=n_boot, seed=seed),
        zeros=zero_share_table(ndcg),
        bootstrap={"n_boot": n_boot, "seed": seed},
        item_auc=items if len(items) else None,
        warnings=_warnings(runs),
    )


def analyze_workdirs(paths: list[str], *, split: str = "test", **options) -> Analysis:
    """`analyze` of the workdirs found under `paths` (see `find_workdirs`)."""
    runs = [load_run(w, split=split) for w in find_workdirs(paths)]
    return analyze(align_runs(runs), split=split, **options)


# ------------------------------------------------------------------------------ writing
def _records(table: pd.DataFrame | None) -> list[dict] | None:
    if table is None:
        return None
    records = table.to_dict(orient="records")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in records
    ]


def summary(analysis: Analysis) -> dict:
    """Everything in `analysis` as a JSON-ready dict (NaN becomes None)."""
    return {
        "dataset": analysis.dataset,
        "split": analysis.split,
        "models": list(analysis.workdirs),
        "workdirs": analysis.workdirs,
        "hyperparameters": analysis.settings,
        "alpha": analysis.alpha,
        "warnings": list(analysis.warnings),
        "definitions": {
            "se": "std(ddof=1)/sqrt(n)",
            "fold_in_buckets": "equal-size buckets of users sorted (stable) by n_fold_in",
            "bottom_percent": "the first k = ceil(q*n/100) users ordered by EASE NDCG@100 "
            "ascending, EASE best_rank (rank of the best-placed held-out item) descending, "
            "user id ascending; tied_at_cut/tied_left_out: users sharing the k-th user's "
            "(NDCG, best_rank) and those of them left out",
            "improvement_pct": "100*(mean_model - mean_EASE)/mean_EASE on the same users; "
            "diff_mean is mean_model - mean_EASE",
            "cvar": "CVaR_q: mean NDCG@100 of the model's own k = ceil(q*n/100) worst users",
            "cvar_interval": "2.5/97.5 percentiles over bootstrap resamples of the users",
            "cvar_vs_ease": "paired bootstrap (same resamples) of CVaR_q(model) - "
            "CVaR_q(EASE); p = min(1, 2(1 + min(#d<=0, #d>=0))/(B+1))",
            "zero_share": "fraction of users with NDCG@100 = 0",
            "p_values": "two-sided scipy.stats.ttest_rel of per-user NDCG@100; "
            "p_holm_vs_ease / p_holm_vs_ease_ipw: Holm-Bonferroni step-down adjustment over "
            "one family per baseline (every q level x model compared with it; NaN p-values "
            "left out); sig_vs_* compare the adjusted p with alpha",
            "p_holm_cvar": "worst_off p_holm_vs_ease: Holm over every model x q compared "
            "with EASE by the paired bootstrap",
            "auc": "Mann-Whitney U / (n_minority*n_majority), score vs group != 0",
        },
        "table2": _records(analysis.table2),
        "loss_by_fold_in": _records(analysis.loss_by_fold_in),
        "worst_users": _records(analysis.worst_users),
        "groups": _records(analysis.groups),
        "adversary_auc": _records(analysis.adversary_auc),
        "item_auc": _records(analysis.item_auc),
        "worst_off": _records(analysis.worst_off),
        "zeros": _records(analysis.zeros),
        "bootstrap": analysis.bootstrap,
    }


def _title(analysis: Analysis, models: list[str], *, width: int = 120) -> str:
    """Dataset, users and every model's settings, in lines of at most about `width`
    characters (a figure clips a longer line), broken between models."""
    n = int(analysis.table2["n_users"].iloc[0])
    lines = [f"{analysis.dataset}: {n} {analysis.split} users", ""]
    for label in (plots.settings_label(m, analysis.settings[m]) for m in models):
        if lines[-1] and len(lines[-1]) + 2 + len(label) > width:
            lines.append("")
        lines[-1] += f"; {label}" if lines[-1] else label
    return "\n".join(lines)


def write_report(analysis: Analysis, outdir: str) -> list[str]:
    """Writes every table, both figures and `analysis.json` under `outdir`.

    Returns:
      The paths written: table2.{csv,md}, fig1_loss_by_fold_in.{csv,png},
      fig2_worst_users.{csv,png} (no png when EASE is the only model), worst_off.csv and
      zeros.csv (each model's own worst users), groups.{csv,md}
      and adversary_auc.{csv,md} (planted groups only), item_auc.csv (item-level
      adversaries on planted data), summary.md, analysis.json.
    """
    _make_outdir(outdir)
    written = []

    def _write(name: str, text: str) -> None:
        path = os.path.join(outdir, name)
        write_text(path, text)
        written.append(path)

    _write("table2.csv", analysis.table2.to_csv(index=False))
    _write("table2.md", markdown_table(analysis.table2.drop(columns=["model"]), pm=METRICS))
    _write("fig1_loss_by_fold_in.csv", analysis.loss_by_fold_in.to_csv(index=False))
    _write("fig2_worst_users.csv", analysis.worst_users.to_csv(index=False))
    if analysis.groups is not None:
        _write("groups.csv", analysis.groups.to_csv(index=False))
        _write("groups.md", markdown_table(analysis.groups, pm=("ndcg@100",)))
    if analysis.worst_off is not None:
        _write("worst_off.csv", analysis.worst_off.to_csv(index=False))
        _write("zeros.csv", analysis.zeros.to_csv(index=False))
    if analysis.adversary_auc is not None:
        _write("adversary_auc.csv", analysis.adversary_auc.to_csv(index=False))
        _write("adversary_auc.md", markdown_table(analysis.adversary_auc))
    if analysis.item_auc is not None:
        _write("item_auc.csv", analysis.item_auc.to_csv(index=False))
    for name, fig in _figures(analysis).items():
        path = os.path.join(outdir, name)
        plots.save_png(fig, path)
        written.append(path)
    _write("summary.md", summary_markdown(analysis))
    path = os.path.join(outdir, "analysis.json")
    write_json(path, summary(analysis))
    written.append(path)
    return written


def _make_outdir(outdir: str) -> None:
    """Creates the report folder `outdir`; a DataError where it cannot be written."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise DataError(f"{outdir}: exists and is not a folder (--outdir)")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise DataError(f"{outdir}: cannot create the report folder ({e.strerror})") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise DataError(f"{outdir}: not writable (--outdir)")


def _figures(analysis: Analysis) -> dict:
    """{file name: figure}: Figure 1, and Figure 2 unless EASE is the only model."""
    figures = {
        "fig1_loss_by_fold_in.png": plots.loss_by_fold_in_figure(
            analysis.loss_by_fold_in, title=_title(analysis, ["ease"]), split=analysis.split
        )
    }
    if len(analysis.worst_users):  # no figure when EASE is the only model
        figures["fig2_worst_users.png"] = plots.worst_users_figure(
            analysis.worst_users,
            title=_title(analysis, list(analysis.workdirs)),
            alpha=analysis.alpha,
            split=analysis.split,
        )
    return figures
