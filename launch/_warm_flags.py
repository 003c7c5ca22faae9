"""`--warm_start_from`, shared by train.py, sweep.py and reproduce.py."""

from absl import flags

WARM_START_FROM = flags.DEFINE_list(
    "warm_start_from",
    [],
    "Finished EASE runs, or sweep folders of them: an adversarial model's --warm_start "
    "(EASE at C/2) is read from the one at C/2 on the same split instead of refit.",
)
