"""Raw interaction readers: one function per published file format.

Every reader returns `Interactions`: the rows of its file(s) in file order, with users
and items as integer codes into arrays of the raw ids as read. Parsing takes a fast path
(pandas / pyarrow); when that fails or yields a missing value, a line-by-line scan of
the file finds the first bad line and raises `DataError` naming the file and line.
"""

import csv
import dataclasses
import io
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

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


def _ids(uniques) -> np.ndarray:
    """Raw ids as a NumPy array that `np.savez` stores without pickling."""
    arr = np.asarray(uniques)
    if arr.dtype == object:
        if all(isinstance(v, str) for v in arr):
            return arr.astype(str)
        raise DataError(f"ids mix strings and numbers: {arr[:3].tolist()}")
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
        user_ids=_ids(user_ids),
        item_ids=_ids(item_ids),
        source=source,
    )


def concat(parts: Sequence[Interactions], *, source: str = "") -> Interactions:
    """Rows of `parts` one after another (ids re-coded consistently)."""
    users = np.concatenate([p.user_ids[p.user] for p in parts])
    items = np.concatenate([p.item_ids[p.item] for p in parts])
    has_rating = [p.rating is not None for p in parts]
    ratings = np.concatenate([p.rating for p in parts]) if all(has_rating) else None
    return from_arrays(users, items, ratings, source=source)


# --------------------------------------------------------------------- bad-line scans
def check_file(path: str, what: str) -> None:
    """Raises DataError unless `path` is a readable regular file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found (expected {what})")


def _scan_lines(path: str, check: Callable[[str], None], *, skip: int = 0, data=None):
    """Raises DataError at the first non-blank line (after `skip`) that `check` rejects."""
    stream = io.TextIOWrapper(io.BytesIO(data), "utf-8") if data is not None else None
    with stream or open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if number <= skip or not line.strip():
                continue
            try:
                check(line.rstrip("\r\n"))
            except (ValueError, IndexError) as e:
                text = line.rstrip("\r\n")
                text = text if len(text) <= 80 else text[:77] + "..."
                raise DataError(f"{path}:{number}: {e}; got {text!r}") from None


def _fields_checker(split: Callable[[str], list[str]], kinds: Sequence[str], expected: str):
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


def _delimited(
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
    check = _fields_checker(split, need, expected)
    try:
        frame = pd.read_csv(
            io.BytesIO(data) if data is not None else path,
            sep=r"\s+" if sep == " " else sep,
            header=0 if header else None,
            engine="c",
            skip_blank_lines=True,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty (expected {expected})") from None
    except ValueError as e:  # ParserError is a ValueError
        if "secols" in str(e):
            raise DataError(f"{path}: columns {list(cols)} not found ({e})") from None
        _scan_lines(path, check, skip=int(header), data=data)
        match = re.search(r"line (\d+)", str(e))
        where = f":{match.group(1)}" if match else ""
        raise DataError(f"{path}{where}: {e}".replace("\n", " ")) from None
    out = []
    for pos, kind in zip(positions, kinds):
        if pos >= frame.shape[1]:
            raise DataError(f"{path}: has {frame.shape[1]} columns, expected {expected}")
        values = frame.iloc[:, pos]
        bad = values.isna().to_numpy().copy()
        if kind != "any":
            numeric = pd.to_numeric(values, errors="coerce")
            bad |= numeric.isna().to_numpy()
            if kind == "int":
                bad |= (numeric.fillna(0) % 1 != 0).to_numpy()
            values = numeric
        if bad.any():
            _raise_at_row(path, int(np.argmax(bad)), header, expected, data)
        arr = values.to_numpy()
        out.append(
            arr.astype(np.int64)
            if kind == "int"
            else arr.astype(np.float64)
            if kind == "float"
            else arr
        )
    return out


def _positions(path, cols, header, split, data) -> list[int]:
    """0-based positions of `cols` (names are looked up in the header line)."""
    if all(isinstance(c, int) for c in cols):
        return list(cols)
    stream = io.TextIOWrapper(io.BytesIO(data), "utf-8") if data is not None else None
    with stream or open(path, encoding="utf-8", errors="replace") as f:
        names = [n.strip() for n in split(f.readline().rstrip("\r\n"))]
    missing = [c for c in cols if isinstance(c, str) and c not in names]
    if missing:
        raise DataError(f"{path}:1: header has no column(s) {missing}; it has {names}")
    return [c if isinstance(c, int) else names.index(c) for c in cols]


def _raise_at_row(path: str, row: int, header: bool, expected: str, data=None) -> None:
    """Raises DataError at the line holding data row `row` (blank lines skipped)."""
    seen = -1
    stream = io.TextIOWrapper(io.BytesIO(data), "utf-8") if data is not None else None
    with stream or open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if (header and number == 1) or not line.strip():
                continue
            seen += 1
            if seen == row:
                text = line.rstrip("\r\n")
                raise DataError(f"{path}:{number}: expected {expected}; got {text!r}")
    raise DataError(f"{path}: row {row + 1}: expected {expected}")


# --------------------------------------------------------------------------- MovieLens
def read_movielens_csv(path: str) -> Interactions:
    """ML-20M / ml-latest-small `ratings.csv`: header `userId,movieId,rating,timestamp`."""
    check_file(path, "MovieLens ratings.csv")
    users, items, ratings = _delimited(
        path,
        sep=",",
        header=True,
        cols=["userId", "movieId", "rating"],
        kinds=["int", "int", "float"],
        expected="userId,movieId,rating,timestamp",
    )
    return from_arrays(users, items, ratings, source=path)


def read_movielens_dat(path: str) -> Interactions:
    """ML-1M / ML-10M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header."""
    check_file(path, "MovieLens ratings.dat")
    with open(path, "rb") as f:
        data = f.read().replace(b"::", b"\t")
    users, items, ratings = _delimited(
        path,
        sep="\t",
        header=False,
        cols=[0, 1, 2],
        kinds=["int", "int", "float"],
        expected="UserID::MovieID::Rating::Timestamp",
        data=data,
    )
    return from_arrays(users, items, ratings, source=path)


def read_movielens_100k(path: str) -> Interactions:
    """ML-100K `u.data`: tab-separated `user item rating timestamp`, no header."""
    check_file(path, "MovieLens 100K u.data")
    users, items, ratings = _delimited(
        path,
        sep="\t",
        header=False,
        cols=[0, 1, 2],
        kinds=["int", "int", "float"],
        expected="user<TAB>item<TAB>rating<TAB>timestamp",
    )
    return from_arrays(users, items, ratings, source=path)


# ------------------------------------------------------------------------------ MSD
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
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={"user": pa.string(), "song": pa.string(), "count": pa.float64()}
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        _scan_lines(path, _fields_checker(lambda s: s.split("\t"), ["any", "any", "int"], expected))
        raise DataError(f"{path}: {e}".replace("\n", " ")) from None
    for name in ("user", "song", "count"):
        column = table.column(name)
        if column.null_count or (name != "count" and pc.any(pc.equal(column, "")).as_py()):
            _scan_lines(
                path, _fields_checker(lambda s: s.split("\t"), ["any", "any", "int"], expected)
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


def _parse_netflix(path: str, data: bytes) -> tuple[np.ndarray, ...]:
    """(movie, user, rating) per rating row of one Netflix file's bytes."""
    heads = list(_MOVIE_LINE.finditer(data))
    if not heads or data[: heads[0].start()].strip():
        _scan_lines(path, _netflix_check({}))
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
            or len(users) != sum(counts)
            or np.isnan(ratings.astype(np.float64)).any()
        ):
            raise ValueError("bad rows")
    except ValueError:
        _scan_lines(path, _netflix_check({}))
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
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            tokens = line.split()
            if not tokens:
                continue
            try:
                ids = np.array(tokens, dtype=np.int64)
            except ValueError:
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
            bad = values.isna().to_numpy().copy()
            if kinds[k] == "float":
                values = pd.to_numeric(values, errors="coerce")
                bad |= values.isna().to_numpy()
                picked[k] = values
            if bad.any():
                raise DataError(f"{path}: row {int(np.argmax(bad)) + 1}: expected {expected}")
        arrays = [v.to_numpy() for v in picked]
    else:
        if sep is None:
            sep = "\t" if path.endswith((".tsv", ".txt", ".dat")) else ","
        sep = {"\\t": "\t", "tab": "\t", "space": " "}.get(sep, sep)
        arrays = _delimited(path, sep=sep, header=header, cols=cols, kinds=kinds, expected=expected)
    return from_arrays(*arrays, source=path)
