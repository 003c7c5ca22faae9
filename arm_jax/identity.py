"""What makes two runs the same run: one definition for a workdir's reuse
(`experiment.check_workdir`), a sweep's finished cells (`sweep`) and training's resume
check (`training`).

A run is its dataset, model, seed, dtype, the hyperparameters the model uses, and its
data: the split's statistics and the SHA-256 of the files it was read from
(`split_stats`), so that an edited file with the same counts is another run. The other
settings (max_epochs, patience, the product, data flags, the backend) may change when a
run is resumed or redone.
"""

import jax.numpy as jnp

from arm_jax import configs, io

RUN_IDENTITY = ("dataset", "model", "seed", "dtype", "hyperparameters", "data")
"""The `config.json` entries of `run_identity`."""


def run_identity(
    *, dataset: str, model: str, config: configs.ModelConfig, seed: int, dtype, data: dict
) -> dict:
    """The entries that make a run itself, as `config.json` records them.

    Args:
      dataset, model, config, seed, dtype: the run's.
      data: `split_stats` of its split.
    """
    return io.to_json_value(
        {
            "dataset": dataset,
            "model": model,
            "seed": int(seed),
            "dtype": jnp.dtype(dtype).name,
            "hyperparameters": configs.model_hyperparameters(model, config),
            "data": data,
        }
    )


def _differences(old, new, name: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(new) + [k for k in old if k not in new]
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{name}.{k}")]
    return [] if old == new else [f"{name} {old!r}, not {new!r}"]


def identity_differences(recorded: dict, expected: dict) -> list[str]:
    """How `expected` (some `run_identity` entries) differs from a recorded run, as
    "name old, not new" phrases; [] for the same run.

    Entries only one side holds are not compared, and in `data` only the statistics
    both record (a run of an arm_jax version that records fewer, e.g. no checksums, is
    still compared on the rest).
    """
    new = io.to_json_value({k: expected[k] for k in RUN_IDENTITY if k in expected})
    diffs = []
    for key in (k for k in new if k in recorded):
        old, value = recorded[key], new[key]
        if key == "data" and isinstance(old, dict) and isinstance(value, dict):
            old = {k: v for k, v in old.items() if k in value}
            value = {k: v for k, v in value.items() if k in old}
        diffs += _differences(old, value, key)
    return diffs
