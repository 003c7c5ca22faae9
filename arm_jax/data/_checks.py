"""Checks of an interactions file that catch a file read as something it is not: a
user x item matrix, a header of numbers (a data row), a header read as data, lists."""

import numpy as np
import pandas as pd

from arm_jax.data._parse import _COMPRESSED, ENCODING
from arm_jax.errors import DataError

# A user x item matrix file: at least this many numeric columns, and at most this many
# distinct values in its first two (a rating scale: 0-10) -- no interaction list is.
_MATRIX_WIDTH, _MATRIX_VALUES = 5, 11


def first_lines(path: str) -> list[str]:
    """The first two non-blank lines ("" where there are none, or for a compressed file)."""
    lines = []
    if not path.endswith(_COMPRESSED):
        with open(path, encoding=ENCODING, errors="replace") as f:
            lines = [line.strip() for _, line in zip(range(1000), f) if line.strip()][:2]
    return lines + [""] * (2 - len(lines))


def _fields(line: str, sep: str) -> list[str]:
    return line.split() if sep == " " else [f.strip().strip('"') for f in line.split(sep)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def refuse_numeric_header(path: str, first: str, sep: str) -> None:
    """A header of numbers only is a data row: read as a header, it would be lost."""
    fields = _fields(first, sep)
    if len(fields) >= 2 and all(_is_number(f) for f in fields):
        raise DataError(
            f"{path}:1: the header line {first[:60]!r} is all numbers: a data row, which a "
            "header is not; if the file has no header, give --no_header (header=False)"
        )


def refuse_matrix(path: str, first: str, sep: str, ids: list[np.ndarray]) -> None:
    """A user x item matrix (one row per user, a number per item) is not a list of
    interactions: its "user" and "item" columns hold ratings, a handful of values."""
    fields = _fields(first, sep)
    if len(fields) < _MATRIX_WIDTH or not all(_is_number(f) for f in fields):
        return
    if all(len(pd.unique(a)) <= _MATRIX_VALUES for a in ids):
        raise DataError(
            f"{path}: looks like a user x item matrix ({len(fields)} numeric columns, "
            f"{len(ids[0])} rows, columns {{0, 1}} holding {len(pd.unique(ids[0]))} and "
            f"{len(pd.unique(ids[1]))} values); expected one interaction per line: "
            "user, item[, rating] (--columns)"
        )


def refuse_lists(path: str, values: pd.Series) -> None:
    """A Parquet column of lists (several items per row) is not one id per row."""
    if values.dtype != object or values.empty:
        return
    first = values.dropna().head(1000)
    nested = first.map(lambda v: isinstance(v, (list, tuple, dict, np.ndarray)))
    if nested.any():
        example = first[nested].iloc[0]
        shown = example.tolist() if isinstance(example, np.ndarray) else example
        raise DataError(
            f"{path}: column {values.name!r} holds {type(example).__name__} values (e.g. "
            f"{str(shown)[:40]}); expected one user and one item per row: explode "
            "the lists first (pandas DataFrame.explode)"
        )


def refuse_header_row(path: str, ids: list[np.ndarray]) -> None:
    """Raises if line 1 holds words where every other line holds numbers: a header read
    as data (`--no_header` on a file that has one) would make a fake user and item."""

    def numeric(values) -> bool:
        return bool(pd.to_numeric(pd.Series(values), errors="coerce").notna().all())

    first = [a[0] for a in ids if len(a) > 1]
    if len(first) < len(ids) or any(numeric([v]) for v in first):
        return
    if all(numeric(a[1:1001]) and numeric(a[1:]) for a in ids):
        raise DataError(
            f"{path}:1: {[str(v) for v in first]} looks like a header, but --no_header "
            "(header=False) reads it as a user and an item; drop --no_header"
        )
