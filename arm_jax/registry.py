"""The model registry: each `--model`'s label, kind, hyperparameters and parts.

A model is (learner, adversary, objective): the registry names the adversary and the
objective of each adversarial model (its learner is `ModelConfig.learner`'s, or fixed
here); `configs.model_config` holds the values each starts from.
"""

import dataclasses
from collections.abc import Callable

from arm_jax.adversarial import (
    LINEAR_ADVERSARY,
    NN_ADVERSARY,
    Adversary,
    arm_objective,
    rank_objective,
)
from arm_jax.item_adversaries import (
    ITEM_ADVERSARY,
    USER_ITEM_ADVERSARY,
    entry_arm_objective,
    entry_rank_objective,
    item_rank_objective,
)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model's facts, read by configs, launch flags, grids, sweeps and reports.

    Attributes:
      name: the `--model` name.
      label: the paper's name, for tables and plots.
      kind: "closed_form" (EASE's solve) or "adversarial" (descent–ascent, `gda_step`).
      hyperparameters: the `ModelConfig` fields that define the fit: what results
        record and a grid may list.
      swept: the fields the default grid searches (`grids.default_grid`).
      run_options: the fields (flags) that say how a run is carried out, not which model
        it fits (max_epochs, patience, product, the learner).
      adversary, objective: an adversarial model's adversary and the objective it
        ascends (`adversarial.Model`; its learner is `ModelConfig.learner`'s).
      learner: the learner the model always uses (`ModelConfig.learner` is set to it),
        or None for the one `--learner` names.
    """

    name: str
    label: str
    kind: str
    hyperparameters: tuple[str, ...]
    swept: tuple[str, ...]
    run_options: tuple[str, ...] = ()
    adversary: Adversary | None = None
    objective: Callable | None = None
    learner: str | None = None


_LINEAR = ("C", "B", "learning_rate", "batch_size", "warmup_epochs", "warm_start")
_NN = ("C", "B", "learning_rate", "hidden_dim", "batch_size", "warmup_epochs", "warm_start")
_RUN = (
    "max_epochs",
    "patience",
    "product",
    "learner",
    "rank",
    "dropout_p",
    "adversary_learning_rate",
)


def _spec(name, label, kind, hyperparameters, swept, adversary=None, objective=None, learner=None):
    run = _RUN if kind == "adversarial" else ()
    return ModelSpec(name, label, kind, hyperparameters, swept, run, adversary, objective, learner)


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _spec("ease", "EASE", "closed_form", ("C",), ("C",)),
        _spec("ease_ipw", "EASE-IPW", "closed_form", ("C", "beta"), ("C", "beta")),
        _spec(
            "arm", "ARM", "adversarial", _LINEAR, ("learning_rate", "C", "B"),
            LINEAR_ADVERSARY, arm_objective,
        ),
        _spec(
            "rlarm", "R-LARM", "adversarial", _LINEAR, ("learning_rate", "C", "B"),
            LINEAR_ADVERSARY, rank_objective,
        ),
        _spec(
            "rlarm_nn", "R-LARM(NN)", "adversarial", _NN,
            ("learning_rate", "C", "B", "hidden_dim"), NN_ADVERSARY, rank_objective,
        ),
        _spec(
            "cvar_ease", "CVaR-EASE", "closed_form", ("C", "alpha", "rounds", "cvar_loss"),
            ("C", "alpha"),
        ),
        _spec("edlae", "EDLAE", "closed_form", ("C", "dropout_p"), ("C", "dropout_p")),
        # Group DRO's adversary is built from the split's activity groups
        # (`group_dro.group_dro_model`), so the registry holds only its objective.
        _spec(
            "group_dro", "Group DRO", "adversarial", (*_LINEAR, "groups"),
            ("learning_rate", "C", "B"), None, arm_objective,
        ),
        # R-LARM over EDLAE's learner (`learners.edlae_learner`), and the item-level and
        # user–item adversaries (`item_adversaries`), the paper's §6 directions.
        _spec(
            "rlarm_edlae", "R-LARM(EDLAE)", "adversarial", (*_LINEAR, "dropout_p"),
            ("learning_rate", "C", "B"), LINEAR_ADVERSARY, rank_objective, "edlae",
        ),
        _spec(
            "item_arm", "Item-ARM", "adversarial", _LINEAR, ("learning_rate", "C", "B"),
            ITEM_ADVERSARY, entry_arm_objective,
        ),
        _spec(
            "item_rlarm", "Item-R-LARM", "adversarial", _LINEAR, ("learning_rate", "C", "B"),
            ITEM_ADVERSARY, item_rank_objective,
        ),
        _spec(
            "ui_arm", "UI-ARM", "adversarial", _LINEAR, ("learning_rate", "C", "B"),
            USER_ITEM_ADVERSARY, entry_arm_objective,
        ),
        _spec(
            "ui_rlarm", "UI-R-LARM", "adversarial", _LINEAR, ("learning_rate", "C", "B"),
            USER_ITEM_ADVERSARY, entry_rank_objective,
        ),
    )
}  # fmt: skip
"""Every model, in the order of the paper's tables."""

MODELS = tuple(REGISTRY)
ADVERSARIAL_MODELS = tuple(n for n, s in REGISTRY.items() if s.kind == "adversarial")
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {n: s.hyperparameters for n, s in REGISTRY.items()}
"""The `ModelConfig` fields each model uses: what results record and a grid may sweep
(max_epochs, patience, product and adam_eps say how a run is carried out, not which
model it fits)."""
MODEL_LABELS = {n: s.label for n, s in REGISTRY.items()}


def model_hyperparameters(model: str, config) -> dict:
    """The hyperparameters `model` uses, for results, tables and a run's identity (the
    learner's fields only when it is not the paper's dense W, which records as before)."""
    names = HYPERPARAMETERS[model]
    if config.learner != "dense":
        own = "rank" if config.learner == "low_rank" else "dropout_p"  # the learner's own
        names = (*names, "learner", *(n for n in (own,) if n not in names))
    if model in ADVERSARIAL_MODELS and config.adversary_learning_rate is not None:
        names = (*names, "adversary_learning_rate")
    return {name: getattr(config, name) for name in names}
