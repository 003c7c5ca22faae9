"""An adversarial model's dense warm start read from a finished EASE run (`--warm_start_from`).

The dense learner's warm start is EASE at C/2 on the training rows (`learners`), an O(n³)
solve that dominates a run's start on a large catalogue (464 s of each run at gowalla's
40,981 items on 2 cores). A finished EASE run at C/2 on the same split holds that same W.
"""

import dataclasses
import os
import zipfile
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from arm_jax import configs, ease_host, identity, io
from arm_jax.data import Split, split_stats
from arm_jax.errors import ConfigError


def ease_warm_start(
    split: Split, config: configs.ModelConfig, sources: Sequence[str], *, dtype=jnp.float32
) -> str | None:
    """The finished EASE run whose W is the dense learner's warm start, or None.

    A run that records EASE at C/2 on the same data (`split_stats`: counts and file
    checksums) and dtype, with its `model.npz` and `results.json` written, holds it.

    Args:
      split: the split the adversarial model trains on.
      config: its configuration (C, warm_start and learner are read).
      sources: EASE workdirs, or folders whose sub-folders are (a sweep's); searched
        in order.
      dtype: the run's dtype.

    Returns:
      That run's workdir (`learners.load_model` of its `model.npz` gives W), or None
      when the config has no dense warm start or no source matches.
    """
    if not (config.warm_start and config.learner == "dense"):
        return None
    ease = dataclasses.replace(config, C=config.C / 2)
    expected = identity.run_identity(
        dataset=split.dataset, model="ease", config=ease, seed=0, dtype=dtype,
        data=split_stats(split),
    )  # fmt: skip
    del expected["seed"]  # a closed form's W does not depend on it
    for source in sources:
        if not os.path.isdir(source):
            raise ConfigError(f"--warm_start_from: {source} is not a folder")
        subdirs = sorted(os.path.join(source, d) for d in os.listdir(source))
        for workdir in [source, *subdirs]:
            files = [os.path.join(workdir, f) for f in ("config.json", "model.npz", "results.json")]
            if not all(os.path.isfile(f) for f in files):
                continue
            try:
                recorded = io.read_json(files[0])
            except (OSError, ValueError):
                continue  # not a run's config.json: not a candidate
            if not identity.identity_differences(recorded, expected):
                return workdir
    return None


def loader(workdir: str | None, split: Split):
    """A function reading `workdir`'s W (checked against the split's items), or None."""
    if workdir is None:
        return None

    def load():
        path = os.path.join(workdir, "model.npz")
        with np.load(path, allow_pickle=False) as f:
            if not np.array_equal(f["item_ids"], split.item_ids):
                raise ConfigError(f"{path}: its item ids are not the split's")
        try:  # read as the fit leaves W (an aligned buffer the CPU aliases): no copy
            return ease_host.to_device(ease_host.read_aligned(path, "W"))
        except (KeyError, ValueError, zipfile.BadZipFile) as e:
            raise ConfigError(f"{path}: not a W to warm-start from ({e})") from None

    return load
