r"""Trains (or reuses) EASE, EASE-IPW, ARM, R-LARM and R-LARM(NN), then analyzes them.

  python launch/reproduce.py --dataset=ml-20m --data_dir=data/ml-20m \
      --workdir=runs/ml-20m --best=runs/ml-20m/sweep_rlarm/best.json

Each model goes to <workdir>/<model>/ (skipped when its results.json exists) with the
hyperparameters of its sweep's best.json if given, else the defaults of
arm_jax/configs.py; a sweep's best cell that holds the same run finished (the same
max_epochs and patience included) is hard-linked there instead of being retrained.
Table 2 and Figures 1-2 go to <workdir>/analysis/.
"""

import os

import _cli
import _data_flags
import _warm_flags
from absl import app, flags

from arm_jax import configs, report, sweep
from arm_jax.data import load_split, split_stats

_WORKDIR = flags.DEFINE_string("workdir", None, "Parent folder of the model workdirs.")
_MODELS = flags.DEFINE_list("models", list(configs.MODELS), "Models to train (EASE needed).")
_BEST = flags.DEFINE_list("best", [], "best.json files of sweeps (one per model).")
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", None, "Override max_epochs of every model.")
_PATIENCE = flags.DEFINE_integer("patience", None, "Override patience of every model.")
flags.mark_flags_as_required(["workdir"])
flags.adopt_module_key_flags(_data_flags)  # --help lists them
flags.adopt_module_key_flags(_cli)
flags.adopt_module_key_flags(_warm_flags)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    unknown = set(_MODELS.value) - set(configs.MODELS)
    if unknown:
        raise configs.ConfigError(f"--models: unknown {', '.join(sorted(unknown))}")
    if "ease" not in _MODELS.value:  # checked before hours of training, not after
        raise configs.ConfigError("--models must include ease: the analysis compares with it")
    dataset, models = _data_flags.DATASET.value, tuple(_MODELS.value)
    sweep.best_overrides(_BEST.value, dataset=dataset, models=models)  # before loading data
    split = load_split(**_data_flags.split_arguments())
    best = sweep.best_overrides(
        _BEST.value, dataset=dataset, models=models, data=split_stats(split)
    )
    workdirs = sweep.reproduce_models(
        lambda: split,
        dataset=dataset,
        workdir=_WORKDIR.value,
        models=models,
        best=best,
        overrides={"max_epochs": _MAX_EPOCHS.value, "patience": _PATIENCE.value},
        seed=_data_flags.SEED.value,
        cells=sweep.best_cells(_BEST.value),
        on_reuse=lambda model, cell: print(f"{model}: reused the sweep's best cell {cell}"),
        warm_start_from=_warm_flags.WARM_START_FROM.value,
    )
    analysis = report.analyze_workdirs(workdirs)
    outdir = os.path.join(_WORKDIR.value, "analysis")
    report.write_report(analysis, outdir)
    print(report.summary_markdown(analysis))
    print(f"analysis written to {outdir}")


if __name__ == "__main__":
    _cli.run(main)
