"""Every default in one place: per-dataset split options and per-model hyperparameters.

The paper's datasets use the published choices (Liang et al. 2018 for the splits;
Shivaswamy & Garcia-Garcia 2022 and the authors' code for the models). Scan this file to
see what a run will do before any flag overrides it.

C is the EASE regulariser in the paper authors' scaling: `P = (XᵀDX/m + C·I)⁻¹`, with m the
number of training users. Steck's λ (the `--l2` spelling) equals `C·m`.
"""

import dataclasses
import math
import numbers
from collections.abc import Callable

from arm_jax.adversarial import (
    LINEAR_ADVERSARY,
    NN_ADVERSARY,
    Adversary,
    arm_objective,
    rank_objective,
)
from arm_jax.errors import ConfigError
from arm_jax.item_adversaries import (
    ITEM_ADVERSARY,
    USER_ITEM_ADVERSARY,
    entry_arm_objective,
    entry_rank_objective,
    item_rank_objective,
)
from arm_jax.learners import LEARNERS
from arm_jax.products import PRODUCTS


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class SplitOptions:
    """Options of the Liang et al. strong-generalization split.

    Attributes:
      rating_threshold: keep rows with rating > threshold; None keeps every row.
      min_uc: drop users with fewer than this many rows (after item filtering).
      min_sc: if > 0, first drop items with fewer than this many rows.
      n_heldout_users: h, the number of validation users and of test users; None means
        10% of the users that survive filtering.
    """

    rating_threshold: float | None = None
    min_uc: int = 5
    min_sc: int = 0
    n_heldout_users: int | None = None


SPLIT_DEFAULTS: dict[str, SplitOptions] = {
    "ml-20m": SplitOptions(rating_threshold=3.5, min_uc=5, min_sc=0, n_heldout_users=10_000),
    "netflix": SplitOptions(rating_threshold=3.5, min_uc=5, min_sc=0, n_heldout_users=40_000),
    "msd": SplitOptions(rating_threshold=None, min_uc=20, min_sc=200, n_heldout_users=50_000),
    "ml-1m": SplitOptions(rating_threshold=3.5, min_uc=5, min_sc=0, n_heldout_users=600),
    "ml-10m": SplitOptions(rating_threshold=3.5, min_uc=5, min_sc=0, n_heldout_users=10_000),
    "ml-100k": SplitOptions(rating_threshold=3.5, min_uc=5, min_sc=0, n_heldout_users=100),
    "ml-latest-small": SplitOptions(rating_threshold=3.5, min_uc=5, min_sc=0, n_heldout_users=60),
    "interactions": SplitOptions(rating_threshold=None, min_uc=5, min_sc=0, n_heldout_users=None),
    "lines": SplitOptions(rating_threshold=None, min_uc=5, min_sc=0, n_heldout_users=None),
    "parquet_split": SplitOptions(),  # already split by the paper's authors
    "synthetic": SplitOptions(rating_threshold=None, min_uc=5, min_sc=0, n_heldout_users=None),
}


def split_options(dataset: str, **overrides) -> SplitOptions:
    """The split defaults of `dataset` with non-None `overrides` applied."""
    if dataset not in SPLIT_DEFAULTS:
        raise ConfigError(
            f"unknown dataset {dataset!r}; expected one of {', '.join(sorted(SPLIT_DEFAULTS))}"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    for name in ("min_uc", "min_sc"):
        if given.get(name, 0) < 0:
            raise ConfigError(f"--{name} must be >= 0, got {given[name]}")
    return dataclasses.replace(SPLIT_DEFAULTS[dataset], **given)


# ---------------------------------------------------------------------------- models
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of one model on one dataset.

    Attributes:
      C: learner L2 weight, authors' scaling (Steck's λ = C·m).
      beta: EASE-IPW exponent; user weight θ_u^-β, θ_u = #training items of u.
      B: adversary L2 weight.
      learning_rate: Adam step size of the learner (and of the adversary unless
        `adversary_learning_rate` is given).
      adversary_learning_rate: Adam step size of the adversary; None: `learning_rate`,
        as in the paper (one step size for both).
      hidden_dim: d, width of the R-LARM(NN) adversary's tanh layer.
      batch_size: users per mini-batch.
      max_epochs, patience: stop after `patience` epochs without a better validation
        NDCG@100, or after `max_epochs`.
      warmup_epochs: K, epochs of learner-only steps before the adversary moves.
      adam_eps: Adam's ε, added as TensorFlow adds it (1e-7 as in the authors' code;
        `gda.keras_adam`).
      warm_start: start W from the EASE closed form instead of Glorot-normal.
      product: how `x_u W` is computed: "auto", "dense", "sparse" or "segment"
        (`arm_jax.products`).
      alpha, rounds, cvar_loss: CVaR-EASE's share of worst users, reweighting rounds and
        per-user loss, "squared" or "rank" (`arm_jax.closed_form`).
      dropout_p: EDLAE's dropout probability p (`arm_jax.closed_form`, and the
        "edlae" learner's).
      groups: group DRO's activity groups (`arm_jax.group_dro`).
      learner: the adversarial models' learner (`arm_jax.learners`): "dense" (the
        paper's `W: [n, n]`), "low_rank" (`W = P Qᵀ`, diagonal removed) or "edlae"
        (dense, EDLAE's loss with dropout_p).
      rank: r, the low-rank learner's rank (`P, Q: [n, r]`).
    """

    C: float = 0.005
    beta: float = 0.0
    B: float = 1000.0
    learning_rate: float = 5e-5
    hidden_dim: int = 5
    batch_size: int = 1024
    max_epochs: int = 100
    patience: int = 5
    warmup_epochs: int = 1
    adam_eps: float = 1e-7
    warm_start: bool = False
    product: str = "auto"
    alpha: float = 0.2
    rounds: int = 3
    cvar_loss: str = "squared"
    dropout_p: float = 0.25
    groups: int = 10
    learner: str = "dense"
    rank: int = 64
    adversary_learning_rate: float | None = None


def config_record(config: ModelConfig) -> dict:
    """`config` as a dict for records, without the learner's fields for the dense
    learner (so runs of the paper's learner record what they recorded before)."""
    record = dataclasses.asdict(config)
    if config.learner == "dense":
        del record["learner"], record["rank"]
    if config.adversary_learning_rate is None:  # the paper's: records as before
        del record["adversary_learning_rate"]
    return record


# The paper's published choices (Table 2 runs; issues #3 and #4). ARM shares R-LARM's.
_PAPER = {
    "ml-20m": {
        "ease": dict(C=0.005),
        "ease_ipw": dict(C=0.002, beta=0.6),
        "arm": dict(C=0.005, B=2000.0, learning_rate=5e-5),
        "rlarm": dict(C=0.005, B=2000.0, learning_rate=5e-5),
        "rlarm_nn": dict(C=0.005, B=500.0, learning_rate=5e-5, hidden_dim=5),
    },
    "netflix": {
        "ease": dict(C=0.002),
        "ease_ipw": dict(C=0.0005, beta=0.8),
        "arm": dict(C=0.002, B=8000.0, learning_rate=2e-5),
        "rlarm": dict(C=0.002, B=8000.0, learning_rate=2e-5),
        "rlarm_nn": dict(C=0.002, B=1000.0, learning_rate=1e-5, hidden_dim=6),
    },
    "msd": {
        "ease": dict(C=0.0002),
        "ease_ipw": dict(C=0.0002, beta=0.4),
        "arm": dict(C=0.0002, B=500.0, learning_rate=1e-4, batch_size=8192),
        "rlarm": dict(C=0.0002, B=500.0, learning_rate=1e-4, batch_size=8192),
        # The specification's values; the authors' README at commit 9af3ded lists C=0.005,
        # dim=6 for this row (see README, "Models and hyperparameters").
        "rlarm_nn": dict(C=0.0005, B=500.0, learning_rate=1e-4, hidden_dim=9, batch_size=8192),
    },
}


def _new_adversarial(*, C, lr, batch, edlae_c, p) -> dict[str, dict]:
    """R-LARM(EDLAE) and the item / user–item models on a small dataset: R-LARM's C,
    learning rate and batch; R-LARM(EDLAE)'s C twice EDLAE's (its learner's optimum is
    EDLAE at C/2) and EDLAE's p; B = 1 for the free item logits, not tuned (their
    gradients are of the order of one item's loss, so B = 100 would hold them at
    ~1e-3; at B = 1 the shared learning rate bounds them: |t_i| < 0.2 on synthetic)."""
    common = dict(C=C, learning_rate=lr, batch_size=batch)
    out = {"rlarm_edlae": dict(common, C=edlae_c, B=100.0, dropout_p=p)}
    for name in ("item_arm", "item_rlarm", "ui_arm", "ui_rlarm"):
        out[name] = dict(common, B=1.0)
    return out


# Smaller datasets: chosen on validation NDCG@100 with `launch/sweep.py --grid=...` (see
# README, "Hyperparameter search"). EASE: C in {0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5};
# EASE-IPW: C in {0.05, 0.1, 0.2, 0.5, 1, 2} × β in {0.2, 0.4, 0.6, 0.8, 1.0}.
# Adversarial models: C is twice EASE's (with uniform weights the learner's fixed point
# is EASE at C/2), B=100; batch and learning rate picked on validation NDCG@100 among
# lr ∈ {5e-4, 1e-3, 2e-3} (synthetic seed 0, 2800 training users: batch 128, ~21
# steps/epoch; ml-100k 738 users and ml-latest-small 483 users: batch 64).
_SMALL: dict[str, dict[str, dict]] = {
    "synthetic": {
        "ease": dict(C=0.2),
        "ease_ipw": dict(C=0.1, beta=0.8),
        "arm": dict(C=0.4, B=100.0, learning_rate=5e-4, batch_size=128),
        "rlarm": dict(C=0.4, B=100.0, learning_rate=5e-4, batch_size=128),
        "rlarm_nn": dict(C=0.4, B=100.0, learning_rate=5e-4, batch_size=128, hidden_dim=5),
        # Chosen on validation NDCG@100: CVaR-EASE among α ∈ {0.1, 0.2, 0.5} × loss ∈
        # {squared, rank} at C = 0.2 (α = 1 is EASE itself, and validation prefers it);
        # EDLAE among C ∈ {0.05, 0.1, 0.2} × p ∈ {0.1, 0.25, 0.5}; group DRO among
        # B ∈ {0.1, 1, 10} at ARM's C and learning rate.
        "cvar_ease": dict(C=0.2, alpha=0.5, rounds=3, cvar_loss="rank"),
        "edlae": dict(C=0.1, dropout_p=0.5),
        "group_dro": dict(C=0.4, B=10.0, learning_rate=5e-4, batch_size=128, groups=10),
        **_new_adversarial(C=0.4, lr=5e-4, batch=128, edlae_c=0.2, p=0.5),
    },
    "ml-100k": {
        "ease": dict(C=0.5),
        "ease_ipw": dict(C=0.2, beta=0.4),
        "arm": dict(C=1.0, B=100.0, learning_rate=1e-3, batch_size=64),
        "rlarm": dict(C=1.0, B=100.0, learning_rate=1e-3, batch_size=64),
        "rlarm_nn": dict(C=1.0, B=100.0, learning_rate=1e-3, batch_size=64, hidden_dim=5),
        # CVaR-EASE and EDLAE: EASE's C, not tuned here.
        "cvar_ease": dict(C=0.5, alpha=0.5, cvar_loss="rank"),
        "edlae": dict(C=0.5),
        "group_dro": dict(C=1.0, B=10.0, learning_rate=1e-3, batch_size=64),
        **_new_adversarial(C=1.0, lr=1e-3, batch=64, edlae_c=1.0, p=0.25),
    },
    "ml-latest-small": {
        "ease": dict(C=0.2),
        "ease_ipw": dict(C=0.2, beta=0.4),
        "arm": dict(C=0.4, B=100.0, learning_rate=1e-3, batch_size=64),
        "rlarm": dict(C=0.4, B=100.0, learning_rate=2e-3, batch_size=64),
        "rlarm_nn": dict(C=0.4, B=100.0, learning_rate=2e-3, batch_size=64, hidden_dim=5),
        # CVaR-EASE and EDLAE: EASE's C, not tuned here.
        "cvar_ease": dict(C=0.2, alpha=0.5, cvar_loss="rank"),
        "edlae": dict(C=0.2),
        "group_dro": dict(C=0.4, B=10.0, learning_rate=1e-3, batch_size=64),
        **_new_adversarial(C=0.4, lr=2e-3, batch=64, edlae_c=0.4, p=0.25),
    },
}

MODEL_DEFAULTS: dict[str, dict[str, dict]] = {**_PAPER, **_SMALL}
SMALL_DATASETS = tuple(_SMALL)
"""Datasets with defaults of their own, chosen here on validation (not the paper's)."""


# --------------------------------------------------------------------- the registry
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
      defaults: {dataset: the `ModelConfig` values `model_config` starts from}.
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
    defaults: dict = dataclasses.field(default_factory=dict)
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
    defaults = {d: table[name] for d, table in MODEL_DEFAULTS.items() if name in table}
    run = _RUN if kind == "adversarial" else ()
    return ModelSpec(
        name, label, kind, hyperparameters, swept, run, adversary, objective, defaults, learner
    )


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


def model_hyperparameters(model: str, config: ModelConfig) -> dict:
    """The hyperparameters `model` uses, for results, tables and a run's identity (the
    learner's fields only when it is not the paper's dense W, which records as before)."""
    names = HYPERPARAMETERS[model]
    if config.learner != "dense":
        own = "rank" if config.learner == "low_rank" else "dropout_p"  # the learner's own
        names = (*names, "learner", *(n for n in (own,) if n not in names))
    if model in ADVERSARIAL_MODELS and config.adversary_learning_rate is not None:
        names = (*names, "adversary_learning_rate")
    return {name: getattr(config, name) for name in names}


OWN_DATA = ("interactions", "lines")
"""Datasets a user brings (`--dataset=interactions|lines`): `own_data_defaults` applies."""


def own_data_defaults(model: str, n_train_users: int | None) -> dict:
    """Defaults on data that is not the paper's (`OWN_DATA`), on top of the ML-20M values.

    The ML-20M values assume 116k training users and a Glorot start that needs many
    epochs; on an unseen file they trained to far below EASE within the budget. The rule:
    - adversarial models start from EASE (`warm_start`, EASE at C/2) with C twice
      EASE's default, so that start is the EASE model `--model=ease` fits, and
      validation begins where EASE is;
    - the batch is at most 1024 and at most an eighth of the training users (a power
      of two, at least 8), so an epoch has at least eight steps;
    - the adversary's Adam step is its own, 1e-3 (20× the learner's 5e-5): Adam moves
      a coordinate by at most its step size a step, and at 5e-5 a hundred steps cannot
      move a logit, so the weights stayed uniform. The paper uses one step size for
      both (`adversary_learning_rate` None); this departs from it;
    - B = 100, the value chosen on the small datasets: at ML-20M's 2000 the penalty
      pulled a 9k-item adversary back to uniform weights (ml-latest-small as a file).
    Closed-form models keep the ML-20M values.

    Args:
      model: the model name.
      n_train_users: m, the training users (None: before the data is read; the
        batch is then the ML-20M one).
    """
    if model not in ADVERSARIAL_MODELS:
        return {}
    C = 2 * _PAPER["ml-20m"]["ease"]["C"]
    out = dict(warm_start=True, C=C, B=100.0, adversary_learning_rate=1e-3)
    if n_train_users is not None:
        cap = max(8, n_train_users // 8)
        out["batch_size"] = min(1024, 2 ** int(math.log2(cap)))
    return out


def model_config(
    dataset: str, model: str, *, n_train_users: int | None = None, **overrides
) -> ModelConfig:
    """The defaults of `model` on `dataset`, with non-None `overrides` applied.

    Datasets without their own entry start from the ML-20M values; on `OWN_DATA` files
    `own_data_defaults` adjusts them (warm start, batch, the adversary's step size)
    given `n_train_users`.
    """
    if model not in MODELS:
        raise ConfigError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    if dataset not in MODEL_DEFAULTS:
        table = dict(MODEL_DEFAULTS["ml-20m"].get(model, {}))
        if dataset in OWN_DATA:
            table.update(own_data_defaults(model, n_train_users))
    else:
        table = dict(MODEL_DEFAULTS[dataset].get(model, {}))
    given = {k: v for k, v in overrides.items() if v is not None}
    own = REGISTRY[model].learner
    if own is not None and given.setdefault("learner", own) != own:
        raise ConfigError(f"--learner={given['learner']}: {model}'s learner is always {own}")
    unknown = set(given) - {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown:
        raise ConfigError(f"unknown model option(s): {', '.join(sorted(unknown))}")
    # An integer where a float is meant (learning_rate=1) would reach JAX as an int32.
    floats = (*_FLOATS, "adversary_learning_rate")
    given = {k: float(v) if k in floats and type(v) is int else v for k, v in given.items()}
    config = dataclasses.replace(ModelConfig(), **{**table, **given})
    validate_model_config(config, model)
    return config


_FLOATS = ("C", "beta", "B", "learning_rate", "adam_eps", "alpha", "dropout_p")
_INTS = (
    "hidden_dim",
    "batch_size",
    "max_epochs",
    "patience",
    "warmup_epochs",
    "rounds",
    "groups",
    "rank",
)
# Past this a value overflows float32 (or, for counts, int32) in the computation.
_FLOAT_MAX, _INT_MAX = 1e30, 2**31 - 1
MAX_HIDDEN_DIM = 10_000
"""d of R-LARM(NN): the paper's are 5-9; a wider adversary is a typo, not a model."""
MAX_BETA = 10.0
"""EASE-IPW's β: the paper's are 0.4-0.8; past ~70, θ^-β underflows to 0 for every user."""


def _check_numbers(config: ModelConfig) -> None:
    for name in _FLOATS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"--{name} must be a number, got {value!r}")
        if not math.isfinite(value) or abs(value) > _FLOAT_MAX:
            raise ConfigError(f"--{name} must be finite and at most {_FLOAT_MAX:g}, got {value}")
    for name in _INTS:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"--{name} must be an integer, got {value!r}")
        if abs(value) > _INT_MAX:
            raise ConfigError(f"--{name} must be at most {_INT_MAX}, got {value}")


def validate_model_config(config: ModelConfig, model: str) -> None:
    """Raises ConfigError naming the flag when a hyperparameter is out of range.

    Every number must be finite and of a size the computation holds (NaN, ±inf or 1e300
    would train to a non-finite W with finite-looking metrics); the ones `model` uses
    must be in their range.
    """
    _check_numbers(config)
    _validate_learner(config, model)
    if config.C <= 0:
        raise ConfigError(f"--C must be > 0, got {config.C}")
    if config.beta < 0:
        raise ConfigError(f"--beta must be >= 0, got {config.beta}")
    if config.beta > MAX_BETA:
        raise ConfigError(f"--beta must be at most {MAX_BETA:g}, got {config.beta}")
    _validate_worst_case(config, model)
    if model in ADVERSARIAL_MODELS:
        if config.B <= 0:
            raise ConfigError(f"--B must be > 0, got {config.B}")
        if config.learning_rate <= 0:
            raise ConfigError(f"--learning_rate must be > 0, got {config.learning_rate}")
        _check_adversary_learning_rate(config.adversary_learning_rate)
        if config.adam_eps <= 0:
            raise ConfigError(f"adam_eps must be > 0, got {config.adam_eps}")
        if not 1 <= config.hidden_dim <= MAX_HIDDEN_DIM:
            raise ConfigError(
                f"--hidden_dim (d) must be in [1, {MAX_HIDDEN_DIM}], got {config.hidden_dim}"
            )
        if config.batch_size < 1:
            raise ConfigError(f"--batch_size must be >= 1, got {config.batch_size}")
        if config.max_epochs < 1 or config.patience < 1 or config.warmup_epochs < 0:
            raise ConfigError("--max_epochs and --patience must be >= 1, --warmup_epochs >= 0")
        if config.product not in PRODUCTS:
            raise ConfigError(
                f"--product must be one of {', '.join(PRODUCTS)}, got {config.product!r}"
            )


def _check_adversary_learning_rate(value) -> None:
    if value is None:
        return
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 < value <= _FLOAT_MAX:
        raise ConfigError(f"--adversary_learning_rate must be a number > 0, got {value!r}")


def config_warnings(config: ModelConfig, model: str) -> list[str]:
    """Settings that are valid but probably not meant, as sentences (launch logs them)."""
    if model in ADVERSARIAL_MODELS and config.warmup_epochs >= config.max_epochs:
        return [
            f"--warmup_epochs={config.warmup_epochs} >= --max_epochs={config.max_epochs}: "
            "the adversary never trains (the run is the learner alone)"
        ]
    return []


def _validate_worst_case(config: ModelConfig, model: str) -> None:
    """CVaR-EASE's α and rounds, EDLAE's dropout p, group DRO's groups (>= 2 here; at
    most the training users is checked where the split is known)."""
    if model == "cvar_ease" and not 0 < config.alpha <= 1:
        raise ConfigError(f"--alpha (CVaR level) must be in (0, 1], got {config.alpha}")
    if model == "cvar_ease" and config.rounds < 1:
        raise ConfigError(f"--rounds must be an integer >= 1, got {config.rounds}")
    if model == "cvar_ease" and config.cvar_loss not in ("squared", "rank"):
        raise ConfigError(f"--cvar_loss must be squared or rank, got {config.cvar_loss!r}")
    if (model == "edlae" or config.learner == "edlae") and not 0 <= config.dropout_p < 1:
        raise ConfigError(f"--dropout_p must be in [0, 1), got {config.dropout_p}")
    if model == "group_dro" and config.groups < 2:
        raise ConfigError(f"--groups must be an integer >= 2, got {config.groups}")


def _validate_learner(config: ModelConfig, model: str) -> None:
    # The rank's upper bound (the items) is checked where the data is known.
    if config.learner not in LEARNERS:
        raise ConfigError(f"--learner must be one of {', '.join(LEARNERS)}, got {config.learner!r}")
    if config.learner != "dense" and model not in ADVERSARIAL_MODELS:
        raise ConfigError(
            f"--learner={config.learner}: {model} is a closed form (dense W); the learner "
            f"is chosen for {', '.join(ADVERSARIAL_MODELS)}"
        )
    if config.rank < 1:
        raise ConfigError(f"--rank must be >= 1, got {config.rank}")
