"""Raw interaction readers: one function per published file format.

Every reader returns `Interactions`: the rows of its file(s) in file order, with users
and items as integer codes into arrays of the raw ids as read. Parsing takes a fast path
(pandas / pyarrow); when that fails or yields a missing value, a line-by-line scan of
the file finds the first bad line and raises `DataError` naming the file and line.
"""

import dataclasses
import io
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from arm_jax.data._checks import (
    first_lines,
    refuse_header_row,
    refuse_lists,
    refuse_matrix,
    refuse_numeric_header,
)
from arm_jax.data._parse import (
    ENCODING,
    beyond_int64,
    check_file,
    fields_checker,
    read_delimited,
    scan_lines,
)
from arm_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Rows of raw interaction files, in file order.

    Attributes:
      user: [n_rows] int64 codes into `user_ids`.
      item: [n_rows] int64 codes into `item_ids`.
      rating: [n_rows] float64 ratings (or play counts), or None when the format has none.
      user_ids: [n_user_codes] raw user ids as read (ints or strings).
      item_ids: [n_item_codes] raw item ids as read.
      source: the file or folder the rows came from, for messages.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    source: str = ""


def _ids(uniques, source: str = "") -> np.ndarray:
    """Raw ids as a NumPy array that `np.savez` stores without pickling."""
    arr = np.asarray(uniques)
    if arr.dtype == object:
        # All strings, or integers beyond 64 bits (kept as their digits: still distinct).
        if all(isinstance(v, (str, int)) for v in arr) and len({type(v) for v in arr}) == 1:
            return arr.astype(str)
        kinds = sorted({type(v).__name__ for v in arr})
        raise DataError(
            f"{source}: ids of several kinds ({', '.join(kinds)}), e.g. {arr[:3].tolist()}; "
            "expected all strings or all integers"
        )
    return arr


def from_arrays(users, items, ratings=None, *, source: str = "") -> Interactions:
    """`Interactions` from per-row raw user ids, item ids and (optional) ratings."""
    user, user_ids = pd.factorize(np.asarray(users))
    item, item_ids = pd.factorize(np.asarray(items))
    rating = None if ratings is None else np.asarray(ratings, dtype=np.float64)
    return Interactions(
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        rating=rating,
        user_ids=_ids(user_ids, source),
        item_ids=_ids(item_ids, source),
        source=source,
    )


def concat(parts: Sequence[Interactions], *, source: str = "") -> Interactions:
    """Rows of `parts` one after another (ids re-coded consistently)."""
    users = np.concatenate([p.user_ids[p.user] for p in parts])
    items = np.concatenate([p.item_ids[p.item] for p in parts])
    has_rating = [p.rating is not None for p in parts]
    ratings = np.concatenate([p.rating for p in parts]) if all(has_rating) else None
    return from_arrays(users, items, ratings, source=source)


# --------------------------------------------------------------------------- MovieLens
def read_movielens_csv(path: str) -> Interactions:
    """ML-20M / ml-latest-small `ratings.csv`: header `userId,movieId,rating,timestamp`."""
    check_file(path, "MovieLens ratings.csv")
    users, items, ratings = read_delimited(
        path,
        sep=",",
        header=True,
        cols=["userId", "movieId", "rating"],
        kinds=["int", "int", "float"],
        expected="userId,movieId,rating,timestamp",
    )
    return from_arrays(users, items, ratings, source=path)


def _movielens_tab_rows(path: str, expected: str, data: bytes | None = None) -> Interactions:
    """User, item and rating of a headerless tab-separated MovieLens file (or its bytes)."""
    columns = read_delimited(
        path,
        sep="\t",
        header=False,
        cols=[0, 1, 2],
        kinds=["int", "int", "float"],
        expected=expected,
        data=data,
    )
    return from_arrays(*columns, source=path)


def read_movielens_dat(path: str) -> Interactions:
    """ML-1M / ML-10M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header."""
    check_file(path, "MovieLens ratings.dat")
    with open(path, "rb") as f:
        data = f.read().replace(b"::", b"\t")
    try:
        return _movielens_tab_rows(path, "UserID::MovieID::Rating::Timestamp", data)
    except DataError as e:  # quote the line as the file has it, '::' not a tab
        raise DataError(str(e).replace("\\t", "::")) from None


def read_movielens_100k(path: str) -> Interactions:
    """ML-100K `u.data`: tab-separated `user item rating timestamp`, no header."""
    check_file(path, "MovieLens 100K u.data")
    return _movielens_tab_rows(path, "user<TAB>item<TAB>rating<TAB>timestamp")


# ------------------------------------------------------------------------------ MSD
def _skip_whitespace_rows(row) -> str:
    """pyarrow's handler of a row with too few fields: skip whitespace-only lines."""
    return "skip" if not (row.text or "").strip() else "error"


def read_msd_triplets(path: str) -> Interactions:
    """MSD taste profile `train_triplets.txt`: `user<TAB>song<TAB>play_count`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pacsv

    check_file(path, "MSD train_triplets.txt")
    expected = "user<TAB>song<TAB>play_count"
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=["user", "song", "count"]),
            parse_options=pacsv.ParseOptions(
                delimiter="\t", quote_char=False, invalid_row_handler=_skip_whitespace_rows
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={"user": pa.string(), "song": pa.string(), "count": pa.float64()}
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        scan_lines(path, fields_checker(lambda s: s.split("\t"), ["any", "any", "int"], expected))
        raise DataError(f"{path}: {e}".replace("\n", " ")) from None
    for name in ("user", "song", "count"):
        column = table.column(name)
        if column.null_count or (name != "count" and pc.any(pc.equal(column, "")).as_py()):
            scan_lines(
                path, fields_checker(lambda s: s.split("\t"), ["any", "any", "int"], expected)
            )

    def encode(column):
        uniques = pc.unique(column)
        codes = np.concatenate(
            [
                pc.index_in(chunk, value_set=uniques).to_numpy(zero_copy_only=False)
                for chunk in column.chunks
            ]
            or [np.zeros(0, np.int64)]
        )
        return codes.astype(np.int64), uniques.to_numpy(zero_copy_only=False).astype(str)

    user, user_ids = encode(table.column("user"))
    item, item_ids = encode(table.column("song"))
    if user.size == 0:
        raise DataError(f"{path}: file is empty (expected {expected})")
    rating = table.column("count").to_numpy()
    return Interactions(user, item, rating, user_ids, item_ids, source=path)


# --------------------------------------------------------------------------- Netflix
_MOVIE_LINE = re.compile(rb"^[ \t]*(\d+):[ \t\r]*$", re.M)
_NETFLIX_EXPECTED = "'MOVIE_ID:' or 'user,rating,date'"


def _netflix_check(state: dict) -> Callable[[str], None]:
    def check(line: str) -> None:
        if re.fullmatch(r"\s*\d+:\s*", line):
            state["movie"] = True
            return
        if not state.get("movie"):
            raise ValueError("expected a 'MOVIE_ID:' line before the first rating")
        fields = line.split(",")
        if len(fields) < 2:
            raise ValueError(f"expected {_NETFLIX_EXPECTED}")
        int(fields[0])
        float(fields[1])

    return check


_BLANK_LINES = re.compile(rb"^[ \t\r]*(?:\n|\Z)", re.M)


def _parse_netflix(path: str, data: bytes) -> tuple[np.ndarray, ...]:
    """(movie, user, rating) per rating row of one Netflix file's bytes."""
    # A byte-order mark and blank lines carry nothing (messages re-read the file, so
    # their line numbers are the file's own).
    data = _BLANK_LINES.sub(b"", data.removeprefix(b"\xef\xbb\xbf"))
    heads = list(_MOVIE_LINE.finditer(data))
    if not heads or data[: heads[0].start()].strip():
        scan_lines(path, _netflix_check({}))
        raise DataError(f"{path}: expected a 'MOVIE_ID:' line first")
    bodies, movies, counts = [], [], []
    for k, head in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(data)
        body = data[head.end() + 1 : end]
        if body and not body.endswith(b"\n"):
            body += b"\n"
        bodies.append(body)
        movies.append(int(head.group(1)))
        counts.append(body.count(b"\n"))
    joined = b"".join(bodies)
    try:
        if joined.strip():
            frame = pd.read_csv(
                io.BytesIO(joined), header=None, usecols=[0, 1], skip_blank_lines=False, engine="c"
            )
            users = frame[0].to_numpy()
            ratings = pd.to_numeric(frame[1], errors="coerce").to_numpy()
        else:
            users, ratings = np.zeros(0, np.int64), np.zeros(0)
        if (
            users.dtype.kind not in "iu"
            or beyond_int64(users).any()
            or len(users) != sum(counts)
            or np.isnan(ratings.astype(np.float64)).any()
        ):
            raise ValueError("bad rows")
    except ValueError:
        scan_lines(path, _netflix_check({}))
        raise DataError(f"{path}: expected lines {_NETFLIX_EXPECTED}") from None
    movie = np.repeat(np.asarray(movies, np.int64), counts)
    return movie, users.astype(np.int64), ratings.astype(np.float64)


def read_netflix(paths: Sequence[str]) -> Interactions:
    """Netflix Prize ratings: `combined_data_[1-4].txt` or `training_set/mv_*.txt` files.

    Each file holds `MOVIE_ID:` lines, each followed by that movie's `user,rating,date`
    lines. Rows keep the order of `paths`, then of lines within a file.
    """
    movies, users, ratings = [], [], []
    for path in paths:
        check_file(path, "a Netflix Prize ratings file")
        with open(path, "rb") as f:
            movie, user, rating = _parse_netflix(path, f.read())
        movies.append(movie)
        users.append(user)
        ratings.append(rating)
    if not paths:
        raise DataError("netflix: no ratings files given")
    source = os.path.dirname(paths[0]) if len(paths) > 1 else paths[0]
    return from_arrays(
        np.concatenate(users), np.concatenate(movies), np.concatenate(ratings), source=source
    )


# ------------------------------------------------------------------------ line files
def read_lines(path: str) -> Interactions:
    """One line per user, `user item item ...` (NGCF / LightGCN / KGAT `train.txt`)."""
    check_file(path, "a 'user item item ...' line file")
    users, items = [], []
    with open(path, encoding=ENCODING, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                ids = np.array(tokens, dtype=np.int64)
            except (ValueError, OverflowError):  # OverflowError: beyond int64
                text = line.strip()[:80]
                raise DataError(
                    f"{path}:{number}: expected integer ids 'user item item ...'; got {text!r}"
                ) from None
            users.append(np.full(len(ids) - 1, ids[0]))
            items.append(ids[1:])
    if not users:
        raise DataError(f"{path}: file is empty (expected 'user item item ...' lines)")
    return from_arrays(np.concatenate(users), np.concatenate(items), source=path)


# ---------------------------------------------------------------------- interactions
def _parse_columns(columns, header: bool, path: str) -> list[int | str]:
    if columns is None:
        return [0, 1]
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    cols = [int(c) if isinstance(c, int) or str(c).isdigit() else str(c) for c in columns]
    if len(cols) not in (2, 3):
        raise ConfigError(f"--columns must name user,item[,rating]; got {columns}")
    if not header and any(isinstance(c, str) for c in cols):
        raise ConfigError(f"--columns must be positions with --no_header ({path}); got {columns}")
    return cols


def _parquet_columns(path: str, cols, kinds, expected: str) -> list:
    """Columns `cols` of a Parquet file as arrays; missing or bad values raise DataError."""
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        message = f"{path}: not a readable Parquet file ({e})".replace("\n", " ")
        raise DataError(message) from None
    try:
        picked = [frame.iloc[:, c] if isinstance(c, int) else frame[c] for c in cols]
    except (KeyError, IndexError):
        message = f"{path}: columns {cols} not found; has {list(frame.columns)}"
        raise DataError(message) from None
    for k, values in enumerate(picked):
        refuse_lists(path, values)
        bad = values.isna().to_numpy().copy()
        if kinds[k] == "float":
            values = pd.to_numeric(values, errors="coerce")
            bad |= values.isna().to_numpy()
            picked[k] = values
        if bad.any():
            raise DataError(f"{path}: row {int(np.argmax(bad)) + 1}: expected {expected}")
    return [v.to_numpy() for v in picked]


def read_interactions(
    path: str,
    *,
    sep: str | None = None,
    header: bool = True,
    columns=None,
    need_rating: bool = False,
) -> Interactions:
    """Any CSV / TSV / Parquet file of interactions, one row per (user, item[, rating]).

    Args:
      path: the file; `.parquet` / `.pq` files are read as Parquet.
      sep: the delimiter of a text file; default "\\t" for .tsv/.txt/.dat, else ",".
      header: whether the first line of a text file names the columns.
      columns: "user,item[,rating]" as names or 0-based positions (default "0,1").
      need_rating: raise ConfigError when `columns` names no rating column.
    """
    check_file(path, "an interactions file (CSV, TSV or Parquet)")
    cols = _parse_columns(columns, header, path)
    if need_rating and len(cols) < 3:
        raise ConfigError("--rating_threshold needs a rating column: --columns=user,item,rating")
    kinds = ["any", "any", "float"][: len(cols)]
    expected = "user, item" + (", rating" if len(cols) == 3 else "") + " columns"
    if path.endswith((".parquet", ".pq")):
        arrays = _parquet_columns(path, cols, kinds, expected)
    else:
        if sep is None:
            sep = "\t" if path.endswith((".tsv", ".txt", ".dat")) else ","
        sep = {"\\t": "\t", "tab": "\t", "space": " "}.get(sep, sep)
        if len(sep) != 1:
            raise ConfigError(
                f"--sep must be one character, got {sep!r} ({path}); convert the file "
                "(e.g. sed 's/::/\\t/g'), or read MovieLens ratings.dat with --dataset=ml-1m"
            )
        lines = first_lines(path)
        if header:
            refuse_numeric_header(path, lines[0], sep)
        arrays = read_delimited(
            path, sep=sep, header=header, cols=cols, kinds=kinds, expected=expected
        )
        if not header:
            refuse_header_row(path, arrays[:2])
        refuse_matrix(path, lines[int(header)], sep, arrays[:2])
    return from_arrays(*arrays, source=path)
