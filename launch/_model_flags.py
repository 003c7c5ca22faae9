"""Model flags shared by the launch scripts (`import _model_flags`).

Every flag defaults to None, meaning "the value in arm_jax/configs.py for this dataset
and model"; `model_config_from_flags` applies the ones given.
"""

import jax
from absl import flags

from arm_jax import configs
from arm_jax.errors import ConfigError
from arm_jax.products import PRODUCTS

MODEL = flags.DEFINE_string("model", "ease", f"One of {', '.join(configs.MODELS)}.")
C = flags.DEFINE_float("C", None, "Learner L2 in the authors' scaling, (XᵀDX/m + C·I)⁻¹.")
L2 = flags.DEFINE_float("l2", None, "Steck's λ, the other spelling of C: λ = C·m.")
BETA = flags.DEFINE_float("beta", None, "EASE-IPW exponent β: user weight θ_u^-β.")
B = flags.DEFINE_float("B", None, "Adversary L2 weight.")
LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Adam step of learner and adversary.")
HIDDEN_DIM = flags.DEFINE_integer("hidden_dim", None, "d, R-LARM(NN) hidden width.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Users per mini-batch.")
MAX_EPOCHS = flags.DEFINE_integer("max_epochs", None, "Epoch budget.")
PATIENCE = flags.DEFINE_integer("patience", None, "Epochs without validation gain to stop.")
WARMUP_EPOCHS = flags.DEFINE_integer("warmup_epochs", None, "K: learner-only epochs first.")
WARM_START = flags.DEFINE_bool("warm_start", None, "Start W from the EASE closed form.")
PRODUCT = flags.DEFINE_enum("product", None, list(PRODUCTS), "x_u W product.")
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


def model_config_from_flags(dataset: str, n_train_users: int) -> configs.ModelConfig:
    """`configs.model_config` for --model on `dataset` with the flags given."""
    if C.value is not None and L2.value is not None:
        raise ConfigError("give --C or --l2, not both (λ = C·m)")
    if L2.value is not None and L2.value <= 0:
        raise ConfigError(f"--l2 must be > 0, got {L2.value}")
    c = L2.value / n_train_users if L2.value is not None else C.value
    given = _given(c)
    _check_used(given)
    return configs.model_config(dataset, MODEL.value, **given)


def _given(c: float | None) -> dict:
    return dict(
        C=c,
        beta=BETA.value,
        B=B.value,
        learning_rate=LEARNING_RATE.value,
        hidden_dim=HIDDEN_DIM.value,
        batch_size=BATCH_SIZE.value,
        max_epochs=MAX_EPOCHS.value,
        patience=PATIENCE.value,
        warmup_epochs=WARMUP_EPOCHS.value,
        warm_start=WARM_START.value,
        product=PRODUCT.value,
    )


def _check_used(given: dict) -> None:
    model = MODEL.value
    used = set(configs.HYPERPARAMETERS[model])
    if model in configs.ADVERSARIAL_MODELS:
        used |= {"max_epochs", "patience", "product"}  # how the run is carried out
    unused = [f"--{k}" for k, v in given.items() if v is not None and k not in used]
    if unused:
        raise ConfigError(
            f"{', '.join(unused)}: not used by --model={model} "
            f"(it takes {', '.join('--' + k for k in sorted(used))})"
        )
