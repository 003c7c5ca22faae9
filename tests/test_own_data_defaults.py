"""Defaults on data that is not the paper's (`configs.own_data_defaults`) and the
adversary's own Adam step size (`adversary_learning_rate`)."""

import dataclasses

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from arm_jax import adversarial, configs, gda
from arm_jax.errors import ConfigError
from arm_jax.products import make_batch


@pytest.mark.parametrize(
    "dataset", ["ml-20m", "netflix", "msd", "synthetic", "ml-100k", "ml-latest-small"]
)
def test_datasets_with_their_own_defaults_are_unchanged(dataset):
    for model in configs.MODELS:
        config = configs.model_config(dataset, model, n_train_users=500)
        table = configs.MODEL_DEFAULTS[dataset].get(model, {})
        learner = configs.REGISTRY[model].learner  # a model with its own (R-LARM(EDLAE))
        table = {**table, "learner": learner} if learner else table
        assert config == dataclasses.replace(configs.ModelConfig(), **table)
        assert config.adversary_learning_rate is None
        assert "adversary_learning_rate" not in configs.config_record(config)


@pytest.mark.parametrize("dataset", ["interactions", "lines"])
def test_own_data_rule(dataset):
    ease = configs.model_config(dataset, "ease", n_train_users=983)
    assert ease == configs.model_config("ml-20m", "ease")
    rlarm = configs.model_config(dataset, "rlarm", n_train_users=983)
    assert rlarm.warm_start and rlarm.C == 2 * ease.C  # starts at the EASE model
    assert rlarm.batch_size == 64 and rlarm.adversary_learning_rate == 1e-3
    assert rlarm.learning_rate == 5e-5 and rlarm.B == 100.0
    assert configs.model_config(dataset, "rlarm", n_train_users=10**6).batch_size == 1024
    assert configs.model_config(dataset, "rlarm", n_train_users=20).batch_size == 8
    given = configs.model_config(dataset, "rlarm", n_train_users=983, batch_size=100)
    assert given.batch_size == 100  # a flag overrides the rule
    record = configs.model_hyperparameters("rlarm", rlarm)
    assert record["adversary_learning_rate"] == 1e-3


def test_adversary_learning_rate_is_checked():
    for bad in (0.0, -1e-3, float("nan"), "x"):
        with pytest.raises(ConfigError, match="adversary_learning_rate"):
            configs.model_config("ml-20m", "rlarm", adversary_learning_rate=bad)


@pytest.mark.parametrize("adversary_lr", [None, 3e-2])
def test_the_adversary_steps_with_its_own_learning_rate(adversary_lr):
    rng = np.random.default_rng(2)
    x = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.float32))
    config = configs.model_config(
        "synthetic", "arm", learning_rate=1e-4, adversary_learning_rate=adversary_lr,
        batch_size=16, B=0.0001,
    )  # fmt: skip
    model = adversarial.make_model("arm")
    state = gda.init_state(jax.random.PRNGKey(0), 30, adversary=model.adversary, config=config)
    before = np.asarray(state.adversary_params["a"]).copy()
    step = gda.make_step(model, config, warmup_steps=0)
    state, _ = step(state, make_batch(x, np.arange(16), 512), jax.random.PRNGKey(1))
    moved = np.abs(np.asarray(state.adversary_params["a"]) - before)
    lr = adversary_lr or config.learning_rate
    # Adam's first step moves a coordinate with a clear gradient by about its step size.
    assert lr / 2 < moved.max() <= lr * 1.001
