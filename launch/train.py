r"""Trains and evaluates one model; writes config, results, per-user metrics and W.

  python launch/train.py                                       # EASE on synthetic data
  python launch/train.py --dataset=ml-100k --data_dir=DIR --model=ease --C=0.5
  python launch/train.py --dataset=ml-20m --model=rlarm        # paper defaults

See arm_jax/experiment.py for the files written to --workdir.
"""

import os
import sys

import _cli
import _data_flags
import _mesh_flags
import _model_flags
import _warm_flags
from absl import app, flags, logging

from arm_jax import configs, experiment, training
from arm_jax.data import split_stats, split_warnings
from arm_jax.errors import ArmJaxError

WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default runs/DATASET/MODEL).")
RESUME = flags.DEFINE_bool("resume", False, "Continue an adversarial run from its checkpoint.")
CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every",
    training.CHECKPOINT_EVERY,
    "Epochs between an adversarial run's latest checkpoints (the best is kept as it improves).",
)
flags.adopt_module_key_flags(_data_flags)  # --help lists them
flags.adopt_module_key_flags(_cli)
flags.adopt_module_key_flags(_warm_flags)
flags.adopt_module_key_flags(_model_flags)
flags.adopt_module_key_flags(_mesh_flags)


def _log_epoch(record: dict) -> None:
    fields = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in record.items()
        if v is not None  # e.g. no adversary objective while the adversary warms up
    )
    print(fields, flush=True)


def _given_flags() -> dict:
    """The flags set on the command line (absl's own and unset ones are noise)."""
    return {k: v for k, v in flags.FLAGS.flag_values_dict().items() if flags.FLAGS[k].present}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    model = _model_flags.check_model()
    mesh = _mesh_flags.setup_mesh()  # first to touch the devices (jax.distributed)
    dtype = _model_flags.setup_precision()
    _model_flags.model_config_from_flags(_data_flags.DATASET.value)  # refused before reading
    split = _data_flags.load_split_from_flags()
    stats = split_stats(split)
    print(" ".join(f"{k}={v}" for k, v in stats.items() if not isinstance(v, dict)))
    config = _model_flags.model_config_from_flags(split.dataset, split.train.shape[0])
    for warning in split_warnings(split) + configs.config_warnings(config, model):
        logging.warning("%s", warning)
    workdir = WORKDIR.value or os.path.join("runs", split.dataset, model)
    results = experiment.run_experiment(
        split,
        model=model,
        config=config,
        workdir=workdir,
        seed=_data_flags.SEED.value,
        dtype=dtype,
        resume=RESUME.value,
        progress=sys.stderr.isatty(),  # a log file gets one line per epoch, no bar
        callback=_log_epoch,
        checkpoint_every=CHECKPOINT_EVERY.value,
        extra_config={"flags": _given_flags()},
        mesh=mesh,
        warm_start_from=_warm_flags.WARM_START_FROM.value,
    )
    print(experiment.results_table(results))
    print(f"wrote {workdir}")
    if experiment.divergence(results):  # said last, and not a success
        raise ArmJaxError(f"{workdir}: {experiment.divergence(results)}")


if __name__ == "__main__":
    _cli.run(main)
