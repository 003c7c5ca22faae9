r"""Grid search of one model on validation NDCG@100; resumable, optionally in parallel.

  python launch/sweep.py --dataset=ml-20m --data_dir=data/ml-20m --model=rlarm \
      --sweep_dir=runs/ml-20m/sweep_rlarm --grid=grid.json --num_workers=2

Writes one workdir per cell, sweep.csv, sweep.md and best.json (for launch/reproduce.py)
in --sweep_dir; finished cells of the same run are skipped on a rerun. Cells are ranked
by validation NDCG@100; test metrics stay in each cell's results.json (the paper
evaluates test users once, on the model selected).
"""

import functools
import os

import _cli
import _data_flags
import _warm_flags
from absl import app, flags, logging

from arm_jax import configs, grids, report, sweep
from arm_jax.data import load_split
from arm_jax.io import write_json, write_text

_MODEL = flags.DEFINE_enum("model", None, list(configs.MODELS), "Model to sweep.")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Output folder (one sub-folder per cell).")
_GRID = flags.DEFINE_string(
    "grid", None, 'Grid replacing default lists: a JSON file or text, e.g. {"C": [0.1, 0.5]}.'
)
_WORKERS = flags.DEFINE_integer("num_workers", 1, "Cells trained in parallel processes.")
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", None, "Override max_epochs of every cell.")
_PATIENCE = flags.DEFINE_integer("patience", None, "Override patience of every cell.")
flags.mark_flags_as_required(["model", "sweep_dir"])
flags.adopt_module_key_flags(_data_flags)  # --help lists them
flags.adopt_module_key_flags(_cli)
flags.adopt_module_key_flags(_warm_flags)


def _loader(load, workers: int):
    """(training users, the loader `run_sweep` gets): the split read once here, kept for
    one process; worker processes get `load` (picklable) and read their own."""
    split = load()
    return split.train.shape[0], (load if workers > 1 else lambda: split)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _WORKERS.value > 1:  # several processes share one accelerator
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    dataset, model, out = _data_flags.DATASET.value, _MODEL.value, _SWEEP_DIR.value
    budget = dict(max_epochs=_MAX_EPOCHS.value, patience=_PATIENCE.value)
    configs.model_config(dataset, model, **budget)  # refused before reading the data
    cells = grids.expand_grid(grids.load_grid(_GRID.value, dataset, model))
    n_train_users, load = _loader(
        functools.partial(load_split, **_data_flags.split_arguments()), _WORKERS.value
    )
    # As launch/train.py: the training users set the own-data batch cap.
    base = configs.model_config(dataset, model, n_train_users=n_train_users, **budget)
    sweep.run_sweep(
        load, model=model, base_config=base, cells=cells, sweep_dir=out,
        num_workers=_WORKERS.value, seed=_data_flags.SEED.value, dataset=dataset,
        warm_start_from=_warm_flags.WARM_START_FROM.value,
    )  # fmt: skip
    table = sweep.collect_results(out, cells)
    outside = sweep.finished_outside(out, cells)
    if outside:  # e.g. a rerun with one new cell: it would be "best" of a grid of one
        logging.warning(
            "%s holds %d finished cell(s) outside this grid (%s): best.json and sweep.md "
            "rank this grid's %d cell(s) only; give the whole grid to rank them all "
            "(finished cells are reused)",
            out, len(outside), ", ".join(outside), len(cells),
        )  # fmt: skip
    best = sweep.sweep_report(
        table, sweep.best_cell(table), dataset=dataset, model=model, cells=cells, sweep_dir=out
    )
    view = sweep.ranked_view(table)
    write_text(os.path.join(out, "sweep.csv"), table.loc[view.index].to_csv(index=False))
    write_text(os.path.join(out, "sweep.md"), report.markdown_table(view))
    write_json(os.path.join(out, "best.json"), best)
    print(report.markdown_table(view.head(10)))
    print(f"best of {len(table)} cells: {best['cell']} -> {os.path.join(out, 'best.json')}")


if __name__ == "__main__":
    _cli.run(main)
