"""Model flags shared by the launch scripts (`import _model_flags`).

Every flag defaults to None, meaning "the value in arm_jax/configs.py for this dataset
and model"; `model_config_from_flags` applies the ones given.
"""

import math

import jax
from absl import flags

from arm_jax import configs
from arm_jax.errors import ConfigError
from arm_jax.learners import LEARNERS
from arm_jax.products import PRODUCTS

MODEL = flags.DEFINE_string("model", "ease", f"One of {', '.join(configs.MODELS)}.")
C = flags.DEFINE_float("C", None, "Learner L2 in the authors' scaling, (XᵀDX/m + C·I)⁻¹.")
L2 = flags.DEFINE_float("l2", None, "Steck's λ, the other spelling of C: λ = C·m.")
BETA = flags.DEFINE_float("beta", None, "EASE-IPW exponent β: user weight θ_u^-β.")
B = flags.DEFINE_float("B", None, "Adversary L2 weight.")
LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Adam step of learner and adversary.")
ADVERSARY_LEARNING_RATE = flags.DEFINE_float(
    "adversary_learning_rate", None, "Adversary's own Adam step (default: --learning_rate)."
)
HIDDEN_DIM = flags.DEFINE_integer("hidden_dim", None, "d, R-LARM(NN) hidden width.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Users per mini-batch.")
MAX_EPOCHS = flags.DEFINE_integer("max_epochs", None, "Epoch budget.")
PATIENCE = flags.DEFINE_integer("patience", None, "Epochs without validation gain to stop.")
WARMUP_EPOCHS = flags.DEFINE_integer("warmup_epochs", None, "K: learner-only epochs first.")
WARM_START = flags.DEFINE_bool("warm_start", None, "Start W from the EASE closed form.")
PRODUCT = flags.DEFINE_enum("product", None, list(PRODUCTS), "x_u W product.")
ALPHA = flags.DEFINE_float("alpha", None, "CVaR-EASE: share α in (0, 1] of worst users.")
ROUNDS = flags.DEFINE_integer("rounds", None, "CVaR-EASE: reweighting rounds (>= 1).")
CVAR_LOSS = flags.DEFINE_enum("cvar_loss", None, ["squared", "rank"], "CVaR-EASE: user loss.")
DROPOUT_P = flags.DEFINE_float("dropout_p", None, "EDLAE (model, learner): dropout p in [0, 1).")
GROUPS = flags.DEFINE_integer("groups", None, "Group DRO: activity-quantile user groups.")
LEARNER = flags.DEFINE_enum(
    "learner", None, list(LEARNERS), "Adversarial models' learner: dense W, W = P Qᵀ or EDLAE."
)
RANK = flags.DEFINE_integer("rank", None, "r, rank of --learner=low_rank (P, Q: [n, r]).")
FLOAT64 = flags.DEFINE_bool("float64", False, "Compute in float64 (sets jax_enable_x64).")


def check_model() -> str:
    """--model and the flags it does not use, checked before any data is read."""
    if MODEL.value not in configs.MODELS:
        raise ConfigError(
            f"unknown model {MODEL.value!r}; expected one of {', '.join(configs.MODELS)}"
        )
    _check_used(_given(C.value))  # C is used by every model; --l2 needs the split
    return MODEL.value


def setup_precision():
    """Enables float64 when asked (the only place arm_jax touches jax.config)."""
    if not FLOAT64.value:
        return jax.numpy.float32
    if jax.default_backend() not in ("cpu", "gpu", "cuda", "rocm"):
        raise ConfigError(f"--float64: the {jax.default_backend()} backend has no float64")
    jax.config.update("jax_enable_x64", True)
    return jax.numpy.float64


def model_config_from_flags(dataset: str, n_train_users: int | None = None) -> configs.ModelConfig:
    """`configs.model_config` for --model on `dataset` with the flags given.

    Without `n_train_users` (before the data is read) --l2 is checked on its own and the
    config has the default C: a check of the flags, not the run's config.
    """
    if C.value is not None and L2.value is not None:
        raise ConfigError("give --C or --l2, not both (λ = C·m)")
    if L2.value is not None and not (math.isfinite(L2.value) and 0 < L2.value <= 1e30):
        raise ConfigError(f"--l2 must be finite, > 0 and at most 1e30, got {L2.value}")
    c = C.value
    if L2.value is not None and n_train_users is not None:
        c = L2.value / n_train_users
    given = _given(c)
    _check_used(given)
    return configs.model_config(dataset, MODEL.value, n_train_users=n_train_users, **given)


def _given(c: float | None) -> dict:
    return dict(
        C=c,
        beta=BETA.value,
        B=B.value,
        learning_rate=LEARNING_RATE.value,
        adversary_learning_rate=ADVERSARY_LEARNING_RATE.value,
        hidden_dim=HIDDEN_DIM.value,
        batch_size=BATCH_SIZE.value,
        max_epochs=MAX_EPOCHS.value,
        patience=PATIENCE.value,
        warmup_epochs=WARMUP_EPOCHS.value,
        warm_start=WARM_START.value,
        product=PRODUCT.value,
        alpha=ALPHA.value,
        rounds=ROUNDS.value,
        cvar_loss=CVAR_LOSS.value,
        dropout_p=DROPOUT_P.value,
        groups=GROUPS.value,
        learner=LEARNER.value,
        rank=RANK.value,
    )


def _check_used(given: dict) -> None:
    model = MODEL.value
    spec = configs.REGISTRY[model]
    used = set(spec.hyperparameters) | set(spec.run_options)
    unused = [f"--{k}" for k, v in given.items() if v is not None and k not in used]
    if unused:
        raise ConfigError(
            f"{', '.join(unused)}: not used by --model={model} "
            f"(it takes {', '.join('--' + k for k in sorted(used))})"
        )
    if RANK.value is not None and LEARNER.value != "low_rank":
        raise ConfigError(f"--rank={RANK.value} is for --learner=low_rank; give that too")
    own = spec.learner or LEARNER.value
    if DROPOUT_P.value is not None and "dropout_p" not in spec.hyperparameters and own != "edlae":
        raise ConfigError(f"--dropout_p={DROPOUT_P.value} is for --learner=edlae; give that too")
