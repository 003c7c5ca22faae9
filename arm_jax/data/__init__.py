"""Data: raw readers, the Liang et al. split, downloads, the synthetic dataset, cache."""

from arm_jax.data.load import GivenSplit, load_given_split, load_split, read_parquet_split
from arm_jax.data.readers import (
    Interactions,
    from_arrays,
    read_interactions,
    read_lines,
    read_movielens_100k,
    read_movielens_csv,
    read_movielens_dat,
    read_msd_triplets,
    read_netflix,
)
from arm_jax.data.split import Split, liang_split, split_stats, split_warnings
from arm_jax.data.synthetic import GROUP_NAMES, make_synthetic, synthetic_split

__all__ = [
    "GROUP_NAMES",
    "GivenSplit",
    "Interactions",
    "Split",
    "from_arrays",
    "liang_split",
    "load_given_split",
    "make_synthetic",
    "load_split",
    "read_interactions",
    "read_lines",
    "read_movielens_100k",
    "read_movielens_csv",
    "read_movielens_dat",
    "read_msd_triplets",
    "read_netflix",
    "read_parquet_split",
    "split_stats",
    "split_warnings",
    "synthetic_split",
]
