"""Flags of the data split, shared by the launch scripts (`import _data_flags`).

`python launch/<script>.py` puts `launch/` on sys.path, so a script defines these flags
by importing this module and builds its split with `load_split_from_flags()`.
"""

from absl import flags

from arm_jax.configs import SPLIT_DEFAULTS
from arm_jax.data import Split, load_split

DATASET = flags.DEFINE_enum(
    "dataset", "synthetic", sorted(SPLIT_DEFAULTS), "Dataset to read and split."
)
DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder of the dataset's files (MovieLens/MSD: unset downloads them)."
)
DATA_PATH = flags.DEFINE_string(
    "data_path", None, "One file to read (required for --dataset=interactions)."
)
CACHE_DIR = flags.DEFINE_string(
    "cache_dir",
    None,
    "Cache folder (default $ARM_JAX_CACHE, $XDG_CACHE_HOME/arm_jax or ~/.cache/arm_jax).",
)
SEP = flags.DEFINE_string("sep", None, "interactions: column separator (default by extension).")
NO_HEADER = flags.DEFINE_bool("no_header", False, "interactions: the file has no header line.")
COLUMNS = flags.DEFINE_list(
    "columns", None, "interactions: user,item[,rating] as names or 0-based positions."
)
RATING_THRESHOLD = flags.DEFINE_float(
    "rating_threshold", None, "Keep rows with rating > this (default per dataset)."
)
MIN_UC = flags.DEFINE_integer("min_uc", None, "Drop users with fewer rows (default per dataset).")
MIN_SC = flags.DEFINE_integer("min_sc", None, "If > 0, first drop items with fewer rows.")
N_HELDOUT_USERS = flags.DEFINE_integer(
    "n_heldout_users", None, "Validation and test users each (default per dataset)."
)
SEED = flags.DEFINE_integer(
    "seed", 0, "Seed of the synthetic data and of training (init, shuffling); splits use 98765."
)
NO_CACHE = flags.DEFINE_bool("no_cache", False, "Neither read nor write the split cache.")


def split_arguments() -> dict:
    """The keyword arguments of `arm_jax.data.load_split` that the flags above set."""
    return dict(
        dataset=DATASET.value,
        data_dir=DATA_DIR.value,
        data_path=DATA_PATH.value,
        cache_dir=CACHE_DIR.value,
        rating_threshold=RATING_THRESHOLD.value,
        min_uc=MIN_UC.value,
        min_sc=MIN_SC.value,
        n_heldout_users=N_HELDOUT_USERS.value,
        sep=SEP.value,
        header=not NO_HEADER.value,
        columns=COLUMNS.value,
        seed=SEED.value,
        use_cache=not NO_CACHE.value,
    )


def load_split_from_flags(**options) -> Split:
    """`arm_jax.data.load_split` with the values of the flags above."""
    return load_split(**split_arguments(), **options)
