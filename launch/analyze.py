r"""Table 2, Figures 1-2, worst-off users' CVaR and planted groups from models' workdirs.

Recomputes everything from the per-user files, without retraining:

  python launch/analyze.py --workdirs=runs/ml-20m/ease,runs/ml-20m/rlarm \
      --outdir=runs/ml-20m/analysis

A folder of model workdirs may be given instead of each workdir; --outdir defaults to
`analysis/` in the folder holding the workdirs (runs/ml-20m/analysis above).
"""

import os

import _cli
from absl import app, flags

from arm_jax import report

_WORKDIRS = flags.DEFINE_list(
    "workdirs", None, "Model workdirs (or folders of them), comma-separated; EASE required."
)
_OUTDIR = flags.DEFINE_string(
    "outdir", None, "Where tables, figures and analysis.json go (default: PARENT/analysis)."
)
_SPLIT = flags.DEFINE_enum("split", "test", ["test", "valid"], "Which users to analyze.")
_ALPHA = flags.DEFINE_float("alpha", 0.05, "Significance level of the paired t-tests.")
_BUCKETS = flags.DEFINE_integer("n_buckets", 10, "Figure 1: buckets by # fold-in items.")
_N_BOOT = flags.DEFINE_integer("n_bootstrap", 1000, "Resamples of the CVaR_q intervals.")
_BOOT_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "Seed of the CVaR_q bootstrap.")
flags.mark_flags_as_required(["workdirs"])


def _default_outdir(paths: list[str]) -> str:
    """`analysis/` beside the model workdirs: in their common parent folder."""
    parents = [
        os.path.dirname(os.path.abspath(p)) if os.path.isfile(os.path.join(p, "config.json"))
        else os.path.abspath(p)  # a folder of workdirs
        for p in paths
    ]  # fmt: skip
    return os.path.relpath(os.path.join(os.path.commonpath(parents), "analysis"))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    analysis = report.analyze_workdirs(
        _WORKDIRS.value,
        split=_SPLIT.value,
        alpha=_ALPHA.value,
        n_buckets=_BUCKETS.value,
        n_boot=_N_BOOT.value,
        seed=_BOOT_SEED.value,
    )
    outdir = _OUTDIR.value or _default_outdir(_WORKDIRS.value)
    written = report.write_report(analysis, outdir)
    print(report.summary_markdown(analysis))
    print(f"wrote {len(written)} files to {outdir}")
    for warning in analysis.warnings:  # last, where it is seen
        print(f"warning: {warning}")


if __name__ == "__main__":
    _cli.run(main)
