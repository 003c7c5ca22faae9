"""Range checks of a `ModelConfig` (`configs.model_config` runs them before any run).

Kept apart from the defaults so `configs.py` reads as the table of what a run will do.
Each check takes the adversarial models' names from the caller (the registry lives in
`configs`).
"""

import math
import numbers

from arm_jax.errors import ConfigError
from arm_jax.learners import LEARNERS
from arm_jax.products import PRODUCTS

FLOATS = ("C", "beta", "B", "learning_rate", "adam_eps", "alpha", "dropout_p")
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


def _check_numbers(config) -> None:
    for name in FLOATS:
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


def validate_model_config(config, model: str, adversarial_models: tuple[str, ...]) -> None:
    """Raises ConfigError naming the flag when a hyperparameter is out of range.

    Every number must be finite and of a size the computation holds (NaN, ±inf or 1e300
    would train to a non-finite W with finite-looking metrics); the ones `model` uses
    must be in their range.
    """
    _check_numbers(config)
    _validate_learner(config, model, adversarial_models)
    if config.C <= 0:
        raise ConfigError(f"--C must be > 0, got {config.C}")
    if config.beta < 0:
        raise ConfigError(f"--beta must be >= 0, got {config.beta}")
    if config.beta > MAX_BETA:
        raise ConfigError(f"--beta must be at most {MAX_BETA:g}, got {config.beta}")
    _validate_worst_case(config, model)
    if model in adversarial_models:
        if config.B <= 0:
            raise ConfigError(f"--B must be > 0, got {config.B}")
        if config.learning_rate <= 0:
            raise ConfigError(f"--learning_rate must be > 0, got {config.learning_rate}")
        check_adversary_learning_rate(config.adversary_learning_rate)
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


def check_adversary_learning_rate(value) -> None:
    if value is None:
        return
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 < value <= _FLOAT_MAX:
        raise ConfigError(f"--adversary_learning_rate must be a number > 0, got {value!r}")


def config_warnings(config, model: str, adversarial_models: tuple[str, ...]) -> list[str]:
    """Settings that are valid but probably not meant, as sentences (launch logs them)."""
    if model in adversarial_models and config.warmup_epochs >= config.max_epochs:
        return [
            f"--warmup_epochs={config.warmup_epochs} >= --max_epochs={config.max_epochs}: "
            "the adversary never trains (the run is the learner alone)"
        ]
    return []


def _validate_worst_case(config, model: str) -> None:
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


def _validate_learner(config, model: str, adversarial_models: tuple[str, ...]) -> None:
    # The rank's upper bound (the items) is checked where the data is known.
    if config.learner not in LEARNERS:
        raise ConfigError(f"--learner must be one of {', '.join(LEARNERS)}, got {config.learner!r}")
    if config.learner != "dense" and model not in adversarial_models:
        raise ConfigError(
            f"--learner={config.learner}: {model} is a closed form (dense W); the learner "
            f"is chosen for {', '.join(adversarial_models)}"
        )
    if config.rank < 1:
        raise ConfigError(f"--rank must be >= 1, got {config.rank}")
