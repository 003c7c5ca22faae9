"""The report's Markdown: tables (`markdown_table`) and `summary.md` (`summary_markdown`).

`summary_markdown` gives Table 2, Figure 2's rows at q = 10, 20, 30%, each model's own
worst users (CVaR_q) and the planted-group tables of an `report.Analysis`, each table of
p-values followed by a line that names its Holm families (`_holm_note`).
"""

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from arm_jax.analysis import METRICS

if TYPE_CHECKING:  # report imports this module
    from arm_jax.report import Analysis


def _fmt(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(table: pd.DataFrame, *, pm: tuple[str, ...] = ()) -> str:
    """A GitHub Markdown table; columns in `pm` are shown as `mean ± <col>_se`."""
    columns = [c for c in table.columns if not (c.endswith("_se") and c[:-3] in pm)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            if c in pm:
                mean, se = row[c], row[f"{c}_se"]
                cells.append(f"{mean:.4f} ± {se:.4f}" if not math.isnan(se) else f"{mean:.4f}")
            else:
                cells.append(_fmt(row[c]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SUMMARY_PERCENTS = (10, 20, 30)
"""The bottom-q% rows that stdout and summary.md show (the README's table)."""


def summary_markdown(analysis: "Analysis") -> str:
    """A short Markdown summary: Table 2, Figure 2 at q = 10, 20, 30%, the AUCs."""
    text = f"# {analysis.dataset} ({analysis.split} users)\n\n"
    text += "".join(f"**Warning:** {w}\n\n" for w in analysis.warnings)
    text += "## Table 2\n\n"
    text += markdown_table(analysis.table2.drop(columns=["model"]), pm=METRICS)
    wu = analysis.worst_users
    if len(wu):
        q = SUMMARY_PERCENTS  # the README's rows; every q is in fig2_worst_users.csv
        cols = [
            "percent", "label", "n_users", "tied_left_out", "diff_mean", "improvement_pct",
            "p_vs_ease", "p_vs_ease_ipw", "p_holm_vs_ease", "p_holm_vs_ease_ipw",
        ]  # fmt: skip
        text += "\n## NDCG@100 improvement over EASE on EASE's bottom q% users\n\n"
        text += markdown_table(wu[wu["percent"].isin(q)][cols])
        text += _holm_note(wu, {"EASE": "p_vs_ease", "EASE-IPW": "p_vs_ease_ipw"}, "paired t")
    text += _worst_off_markdown(analysis)
    if analysis.groups is not None:
        text += "\n## NDCG@100 per planted group (0 = majority)\n\n"
        text += markdown_table(analysis.groups.drop(columns=["model"]), pm=("ndcg@100",))
    if analysis.adversary_auc is not None:
        text += "\n## Adversary scores vs planted minority (ROC AUC)\n\n"
        text += markdown_table(analysis.adversary_auc.drop(columns=["model"]))
    if analysis.item_auc is not None:
        text += "\n## Item adversaries' logits vs planted niche items (ROC AUC)\n\n"
        text += markdown_table(analysis.item_auc.drop(columns=["model"]))
    return text


def _holm_note(table: pd.DataFrame, families: dict[str, str], test: str) -> str:
    """The line under a Markdown table of p-values: the Holm families and their sizes.

    Args:
      table: the whole table (every q level, not only the rows shown), with `percent`,
        `model` and, per family, its raw p-value column.
      families: {baseline label: raw p column}; its `p_holm_` column is the adjusted one.
      test: the test's name, e.g. "paired t".
    """
    parts = []
    for label, column in families.items():
        tested = table[table[column].notna()]
        if not len(tested):
            continue
        n_q, n_m = tested["percent"].nunique(), tested["model"].nunique()
        shape = f"{n_q} q levels × {n_m} models" + (
            "" if len(tested) == n_q * n_m else ", those with a p-value"
        )
        parts.append(f"over {len(tested)} tests against {label} ({shape})")
    if not parts:
        return ""
    holm_columns = ", ".join(c.replace("p_", "p_holm_", 1) for c in families.values())
    raw = ", ".join(families.values())
    return (
        f"\n{holm_columns}: {test} p-values Holm-corrected {' and '.join(parts)}; one "
        f"family per baseline, every q level computed included. {raw}: unadjusted.\n"
    )


def _worst_off_markdown(analysis: "Analysis") -> str:
    """Each model's own worst users: CVaR_q with intervals, the EASE test, zero shares."""
    if analysis.worst_off is None:
        return ""
    b = analysis.bootstrap or {}
    text = (
        "\n## Each model's own worst users: NDCG@100 CVaR_q "
        f"(95% bootstrap intervals, {b.get('n_boot')} resamples, seed {b.get('seed')})\n\n"
    )
    wo = analysis.worst_off.copy()
    wo["CVaR"] = [f"{c:.4f} [{lo:.4f}, {hi:.4f}]" for c, lo, hi in
                  zip(wo["cvar"], wo["cvar_lo"], wo["cvar_hi"])]  # fmt: skip
    wo["diff vs EASE"] = [
        "" if np.isnan(d) else f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        for d, lo, hi in zip(wo["diff_vs_ease"], wo["diff_lo"], wo["diff_hi"])
    ]
    cols = ["percent", "label", "k", "CVaR", "diff vs EASE", "p_vs_ease", "p_holm_vs_ease"]
    text += markdown_table(wo[cols])
    text += _holm_note(analysis.worst_off, {"EASE": "p_vs_ease"}, "paired bootstrap")
    text += "\n## Users with NDCG@100 = 0\n\n"
    text += markdown_table(analysis.zeros.drop(columns=["model"]))
    return text
