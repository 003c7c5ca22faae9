"""Parsing helpers of the raw readers: a fast pandas path and a line-by-line fallback.

When the fast path fails or yields a missing value, a scan of the file finds the first bad
line and raises `DataError` naming the file and line number.
"""

import csv
import io
import mmap
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from arm_jax.errors import DataError

# A byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name.
ENCODING = "utf-8-sig"


# Files that hold NUL bytes by design: Parquet, gzip, bzip2, zip, xz, zstd.
_BINARY_MAGIC = (b"PAR1", b"\x1f\x8b", b"BZh", b"PK\x03\x04", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")


def check_file(path: str, what: str) -> None:
    """Raises DataError unless `path` is a readable regular file of text (or a format
    of its own: Parquet, compressed); a UTF-16 file is named as such."""
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not a file (expected {what})")
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found (expected {what})")
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror}; expected {what})") from None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (
        b"\x00" in head and not head.startswith(_BINARY_MAGIC)
    ):
        bom = head[:2] in (b"\xff\xfe", b"\xfe\xff")
        kind = "UTF-16 text" if bom else "NUL bytes (UTF-16 without a byte-order mark, or not text)"
        raise DataError(
            f"{path}: holds {kind}; expected {what} as UTF-8 text: save it as UTF-8 "
            "(e.g. iconv -f UTF-16 -t UTF-8)"
        )


def scan_lines(path: str, check: Callable[[str], None], *, skip: int = 0, data=None):
    """Raises DataError at the first non-blank line (after `skip`) that `check` rejects."""
    stream = io.TextIOWrapper(io.BytesIO(data), ENCODING) if data is not None else None
    with stream or open(path, encoding=ENCODING, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if number <= skip or not line.strip():
                continue
            try:
                check(line.rstrip("\r\n"))
            except (ValueError, IndexError) as e:
                text = line.rstrip("\r\n")
                text = text if len(text) <= 80 else text[:77] + "..."
                raise DataError(f"{path}:{number}: {e}; got {text!r}") from None


def fields_checker(split: Callable[[str], list[str]], kinds: Sequence[str], expected: str):
    """A line check: `split(line)` gives >= len(kinds) fields of the given kinds."""

    def check(line: str) -> None:
        fields = split(line)
        if len(fields) < len(kinds):
            raise ValueError(f"expected {expected}")
        for field, kind in zip(fields, kinds):
            if kind == "int":
                int(field.strip())
            elif kind == "float":
                value = float(field.strip())
                if value != value:
                    raise ValueError(f"expected {expected}")
            elif not field.strip():
                raise ValueError(f"expected {expected}")

    return check


def _first_read(read, path, cols, check, *, header, expected, data):
    """`read()`, its parser errors turned into one-line `DataError`s naming the line."""
    try:
        return read()
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (expected {expected})") from None
    except ValueError as e:  # ParserError is a ValueError
        if "secols" in str(e):
            raise DataError(f"{path}: columns {list(cols)} not found ({e})") from None
        scan_lines(path, check, skip=int(header), data=data)
        match = re.search(r"line (\d+)", str(e))
        where = f":{match.group(1)}" if match else ""
        raise DataError(f"{path}{where}: {e}".replace("\n", " ")) from None


def _column(frame, pos, kind, *, path, sep, header, expected, data):
    """Column `pos` of `frame` as an array of `kind`; a bad field raises naming its line."""
    if pos >= frame.shape[1]:
        hint = f"; is the separator {sep!r}? give --sep" if frame.shape[1] == 1 else ""
        raise DataError(
            f"{path}: has {frame.shape[1]} columns, so there is no column {pos} "
            f"(0-based) for the {expected}{hint}"
        )
    values = frame.iloc[:, pos]
    bad = values.isna().to_numpy().copy()
    if kind != "any":
        numeric = pd.to_numeric(values, errors="coerce")
        bad |= numeric.isna().to_numpy()
        if kind == "int":
            bad |= (numeric.fillna(0) % 1 != 0).to_numpy()
            bad |= beyond_int64(numeric.to_numpy())
        values = numeric
    if bad.any():
        _raise_at_row(path, int(np.argmax(bad)), header, expected, data)
    arr = values.to_numpy()
    return (
        arr.astype(np.int64)
        if kind == "int"
        else arr.astype(np.float64)
        if kind == "float"
        else arr
    )


def _ids_as_text(frame, read, positions, kinds, *, path, sep, data):
    """`frame`, re-read with its id ("any") columns as stripped text where that matters."""
    # Ids ("any" columns) are text: read as numbers, "01" and "1" would be one id and
    # "01" would lose its zero. The fast numeric read stands where no field can be such.
    ids = [
        p
        for p, kind in zip(positions, kinds)
        if kind == "any" and p < frame.shape[1] and frame.dtypes.iloc[p].kind in "iuf"
    ]
    if ids and (
        any(frame.dtypes.iloc[p].kind == "f" for p in ids) or _numeric_text_differs(path, data, sep)
    ):
        frame = _drop_whitespace_rows(read({frame.columns[p]: str for p in ids}))
        for p in ids:  # stripped, as the numeric read ignores surrounding blanks
            frame[frame.columns[p]] = frame.iloc[:, p].str.strip()
    return frame


def read_delimited(
    path: str,
    *,
    sep: str,
    header: bool,
    cols: Sequence[int | str],
    kinds: Sequence[str],
    expected: str,
    data: bytes | None = None,
) -> list:
    """Reads columns `cols` of a delimited file as arrays of the given kinds.

    Args:
      path: file name (for messages; read unless `data` is given).
      sep: one-character delimiter.
      header: whether the first line names the columns.
      cols: column names (with a header) or 0-based positions.
      kinds: "int", "float" or "any" per column.
      expected: what a line should look like, for messages.
      data: the file's bytes, if already in memory.

    Returns:
      One NumPy array per column, rows in file order.
    """
    split = (lambda s: next(csv.reader([s], delimiter=sep))) if sep != " " else str.split
    positions = _positions(path, cols, header, split, data)
    need = ["any"] * (max(positions) + 1)
    for pos, kind in zip(positions, kinds):
        need[pos] = kind
    check = fields_checker(split, need, expected)

    def read(dtype=None):
        return pd.read_csv(
            io.BytesIO(data) if data is not None else path,
            sep=r"\s+" if sep == " " else sep,
            header=0 if header else None,
            engine="c",
            skip_blank_lines=True,
            encoding=ENCODING,
            dtype=dtype,
        )

    frame = _first_read(read, path, cols, check, header=header, expected=expected, data=data)
    frame = _drop_whitespace_rows(frame)
    if frame.shape[0] == 0:
        raise DataError(f"{path}: no data rows, only a header line (expected {expected})")
    frame = _ids_as_text(frame, read, positions, kinds, path=path, sep=sep, data=data)
    return [
        _column(frame, pos, kind, path=path, sep=sep, header=header, expected=expected, data=data)
        for pos, kind in zip(positions, kinds)
    ]


_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar")
_SCAN_BYTES = 1 << 24  # bytes per chunk of `_numeric_text_differs`'s scan


def _numeric_text_differs(path: str, data: bytes | None, sep: str) -> bool:
    """Whether some field may read as a number that is not its text: a leading zero
    ("01", "007") or a plus sign ("+1") after a delimiter, a line break or a quote.

    A byte scan of the file (≈0.2 s per 70 MB; pandas' numeric read takes ≈0.6 s, a
    read as text ≈5 s), conservative: such a field in any column counts. Compressed
    files are not scanned and count. Not seen: a zero after blanks that pad a field
    (" 01" in a comma-separated file; blanks before a time of day are far more common).
    """
    if data is None and path.endswith(_COMPRESSED):
        return True
    start = np.zeros(256, bool)  # what may precede a field: not a blank in "2015-01-03 09:00"
    start[list(b'\n"' + (b" \t" if sep == " " else sep.encode()))] = True
    if data is not None:
        return _zero_or_plus_leads_a_field(np.frombuffer(data, np.uint8), start)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _zero_or_plus_leads_a_field(np.frombuffer(mapped, np.uint8), start)


def _zero_or_plus_leads_a_field(text: np.ndarray, start: np.ndarray) -> bool:
    first = text[3:] if bytes(text[:3]) == b"\xef\xbb\xbf" else text  # skip a BOM
    head = np.concatenate([[ord("\n")], first[:2], [0, 0]]).astype(np.uint8)
    step = _SCAN_BYTES  # chunks overlap by 2 bytes: a byte is checked with both neighbours
    for c in [head] + [text[s : s + step + 2] for s in range(0, len(text), step)]:
        at = np.flatnonzero((c[1:] == ord("0")) | (c[1:] == ord("+"))) + 1
        at = at[start[c[at - 1]]]
        after = np.where(at + 1 < len(c), c[np.minimum(at + 1, len(c) - 1)], 0)
        if np.any((c[at] == ord("+")) | ((after >= ord("0")) & (after <= ord("9")))):
            return True
    return False


def beyond_int64(values: np.ndarray) -> np.ndarray:
    """Where integers as pandas parses them (uint64 or float64 past int64) fall outside
    int64: cast, they would wrap or merge ids."""
    if values.dtype.kind == "u":
        return values > np.iinfo(np.int64).max
    if values.dtype.kind == "f":
        return np.abs(values) >= 2.0**63
    return np.zeros(values.shape, bool)


def _drop_whitespace_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` without the rows of whitespace-only lines (a tab-separated reader keeps
    them, as a row of a blank string and missing values)."""
    missing = frame.isna().to_numpy()
    if not missing.any():
        return frame
    suspect = np.flatnonzero(missing.any(axis=1))
    cells = frame.iloc[suspect]
    blank = (cells.isna() | cells.astype(str).apply(lambda c: c.str.strip() == "")).all(axis=1)
    return frame.drop(index=frame.index[suspect[blank.to_numpy()]])


def _positions(path, cols, header, split, data) -> list[int]:
    """0-based positions of `cols` (names are looked up in the header line)."""
    if all(isinstance(c, int) for c in cols):
        return list(cols)
    stream = io.TextIOWrapper(io.BytesIO(data), ENCODING) if data is not None else None
    with stream or open(path, encoding=ENCODING, errors="replace") as f:
        names = [n.strip() for n in split(f.readline().rstrip("\r\n"))]
    missing = [c for c in cols if isinstance(c, str) and c not in names]
    if missing:
        raise DataError(f"{path}:1: header has no column(s) {missing}; it has {names}")
    return [c if isinstance(c, int) else names.index(c) for c in cols]


def _raise_at_row(path: str, row: int, header: bool, expected: str, data=None) -> None:
    """Raises DataError at the line holding data row `row` (blank lines skipped)."""
    seen = -1
    stream = io.TextIOWrapper(io.BytesIO(data), ENCODING) if data is not None else None
    with stream or open(path, encoding=ENCODING, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if (header and number == 1) or not line.strip():
                continue
            seen += 1
            if seen == row:
                text = line.rstrip("\r\n")
                raise DataError(f"{path}:{number}: expected {expected}; got {text!r}")
    raise DataError(f"{path}: row {row + 1}: expected {expected}")
