"""Figures 1 and 2 of the paper as matplotlib Figures (no pyplot global state).

Each function takes the table that `arm_jax.analysis` computed and returns a
`matplotlib.figure.Figure`; `save_png` writes one atomically.
"""

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from arm_jax.analysis import MODEL_LABELS
from arm_jax.io import atomic_path

_COLORS = {
    "ease": "tab:gray",
    "ease_ipw": "tab:blue",
    "arm": "tab:olive",
    "rlarm": "tab:orange",
    "rlarm_nn": "tab:red",
    "cvar_ease": "tab:purple",
    "edlae": "tab:green",
    "group_dro": "tab:brown",
    "rlarm_edlae": "tab:pink",
    "item_arm": "tab:cyan",
    "item_rlarm": "darkcyan",
    "ui_arm": "khaki",
    "ui_rlarm": "goldenrod",
}
_SETTING_NAMES = {"C": "C", "beta": "β", "B": "B", "learning_rate": "lr", "hidden_dim": "d"}
_SETTING_NAMES.update(alpha="α", rounds="rounds", dropout_p="p", groups="groups")
_SETTINGS_OF = {
    "ease": ("C",),
    "ease_ipw": ("C", "beta"),
    "arm": ("C", "B", "learning_rate"),
    "rlarm": ("C", "B", "learning_rate"),
    "rlarm_nn": ("C", "B", "learning_rate", "hidden_dim"),
    "cvar_ease": ("C", "alpha", "rounds"),
    "edlae": ("C", "dropout_p"),
    "group_dro": ("C", "B", "learning_rate", "groups"),
    "rlarm_edlae": ("C", "B", "learning_rate", "dropout_p"),
    **dict.fromkeys(("item_arm", "item_rlarm", "ui_arm", "ui_rlarm"), ("C", "B", "learning_rate")),
}


def settings_label(model: str, hyperparameters: dict) -> str:
    """A short `EASE-IPW (C=0.002, β=0.6)` label of a model and its main settings."""
    parts = [
        f"{_SETTING_NAMES[k]}={hyperparameters[k]:g}"
        for k in _SETTINGS_OF.get(model, ())
        if isinstance(hyperparameters.get(k), (int, float))
    ]
    label = MODEL_LABELS.get(model, model)
    return f"{label} ({', '.join(parts)})" if parts else label


def loss_by_fold_in_figure(table: pd.DataFrame, *, title: str, split: str = "test") -> Figure:
    """Figure 1: mean per-user squared loss (left) and NDCG@100 (right) of EASE per bucket.

    Args:
      table: `analysis.loss_by_fold_in` output.
      title: figure title (dataset and EASE settings).
      split: whose users ("test" or "valid"), for the axis label.
    """
    named = {4: "quartile", 5: "quintile", 10: "decile"}
    bucket = named.get(len(table), f"1/{len(table)} bucket")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    x = np.arange(len(table))
    ticks = [
        f"{b}\n[{lo}–{hi}]"
        for b, lo, hi in zip(table["bucket"], table["fold_in_min"], table["fold_in_max"])
    ]
    panels = (
        ("sq_loss", "mean squared loss ‖x_u − x_u W‖² per user"),
        ("ndcg@100", "mean NDCG@100"),
    )
    for ax, (column, ylabel) in zip(axes, panels):
        ax.bar(
            x,
            table[column],
            yerr=np.nan_to_num(table[f"{column}_se"]),
            color=_COLORS["ease"],
            capsize=3,
            label="EASE (± s.e.)",
        )
        ax.set_xticks(x, ticks, fontsize=7)
        ax.set_xlabel(f"{bucket} of {split} users by # fold-in items [range of # fold-in items]")
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def worst_users_figure(
    table: pd.DataFrame, *, title: str, alpha: float = 0.05, split: str = "test"
) -> Figure:
    """Figure 2: % NDCG@100 improvement over EASE on EASE's bottom-q% users.

    A `*` above a bar marks a paired t-test against EASE significant at `alpha` after
    Holm's correction (the table's `sig_*` columns), a `†` one against EASE-IPW.

    Args:
      table: `analysis.worst_users_improvement` output.
      title: figure title (dataset and model settings).
      alpha: the significance level the table used (for the legend).
      split: whose users ("test" or "valid"), for the axis label.
    """
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax = fig.add_subplot()
    percents = sorted(table["percent"].unique())
    models = [m for m in _COLORS if m in set(table["model"])]
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(percents))
    for i, model in enumerate(models):
        rows = table[table["model"] == model].set_index("percent").reindex(percents)
        pos = x - 0.4 + width * (i + 0.5)
        heights = rows["improvement_pct"].to_numpy(dtype=float)
        ax.bar(pos, np.nan_to_num(heights), width, color=_COLORS[model], label=MODEL_LABELS[model])
        for p, h, s_e, s_i in zip(pos, heights, rows["sig_vs_ease"], rows["sig_vs_ease_ipw"]):
            mark = ("*" if s_e else "") + ("†" if s_i else "")
            if np.isnan(h):
                mark = "n/a"
            if mark:
                va = "bottom" if not h < 0 else "top"
                ax.text(p, np.nan_to_num(h), mark, ha="center", va=va, fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x, [f"{p}%" for p in percents])
    ax.set_xlabel(f"bottom q% of {split} users by EASE NDCG@100")
    ax.set_ylabel("NDCG@100 improvement over EASE (%)")
    ax.plot([], [], " ", label=f"* Holm p<{alpha:g} vs EASE, † vs EASE-IPW (paired t)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return fig


def save_png(fig: Figure, path: str | os.PathLike) -> None:
    """Writes `fig` as a PNG to `path` atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
