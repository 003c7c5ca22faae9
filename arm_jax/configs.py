"""Every default in one place: per-dataset split options and per-model hyperparameters.

The paper's datasets use the published choices (Liang et al. 2018 for the splits;
Shivaswamy & Garcia-Garcia 2022 and the authors' code for the models). Scan this file to
see what a run will do before any flag overrides it.

C is the EASE regulariser in the paper authors' scaling: `P = (XᵀDX/m + C·I)⁻¹`, with m the
number of training users. Steck's λ (the `--l2` spelling) equals `C·m`.
"""

import dataclasses
import math

from arm_jax import config_checks
from arm_jax.errors import ConfigError
from arm_jax.registry import (  # noqa: F401  (re-exported: configs is where callers look)
    ADVERSARIAL_MODELS,
    HYPERPARAMETERS,
    MODEL_LABELS,
    MODELS,
    REGISTRY,
    ModelSpec,
    model_hyperparameters,
)


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
    floats = (*config_checks.FLOATS, "adversary_learning_rate")
    given = {k: float(v) if k in floats and type(v) is int else v for k, v in given.items()}
    config = dataclasses.replace(ModelConfig(), **{**table, **given})
    validate_model_config(config, model)
    return config


def validate_model_config(config: ModelConfig, model: str) -> None:
    """Raises ConfigError naming the flag when a hyperparameter is out of range
    (`config_checks.validate_model_config`)."""
    config_checks.validate_model_config(config, model, ADVERSARIAL_MODELS)


def config_warnings(config: ModelConfig, model: str) -> list[str]:
    """Settings that are valid but probably not meant, as sentences (launch logs them)."""
    return config_checks.config_warnings(config, model, ADVERSARIAL_MODELS)
