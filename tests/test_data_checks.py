"""Data that used to be read silently wrong (issue 16): repeated pairs, matrix files, a
numeric header, and the one-line errors and warnings promised for odd files."""

import errno
import hashlib
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from arm_jax.data import cache, load_split, readers, split_stats, split_warnings
from arm_jax.errors import ConfigError, DataError

DATA = os.environ.get("ARM_JAX_TEST_DATA")
ROWS = [(u, i) for u in range(1, 31) for i in range(1, 8)]


def _load(path, **kw):
    kw = {"cache_dir": str(path.parent / "cache"), **kw}
    return load_split("interactions", data_path=str(path), **kw)


def _fails(exc, match, path, **kw):
    with pytest.raises(exc, match=match) as info:
        _load(path, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def _same(a, b):
    for name in ("train", "valid_tr", "valid_te", "test_tr", "test_te"):
        np.testing.assert_array_equal(getattr(a, name).toarray(), getattr(b, name).toarray())
    for name in ("train_user_ids", "valid_user_ids", "test_user_ids", "item_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def _has(split, user, item) -> bool:
    """Whether any part of `split` holds (user, item)."""
    col = np.flatnonzero(split.item_ids == item)
    for part, mats in (("train", ["train"]), ("valid", ["valid_tr", "valid_te"])):
        for name in mats + (["test_tr", "test_te"] if part == "valid" else []):
            ids = (
                split.train_user_ids
                if name == "train"
                else getattr(split, f"{name.split('_')[0]}_user_ids")
            )
            rows = np.flatnonzero(ids == user)
            if len(rows) and len(col) and getattr(split, name)[rows[0], col[0]]:
                return True
    return False


def test_a_repeated_pair_counts_once_and_its_last_row_wins(tmp_path):
    # Every row twice; (1, 1) rated 5 then 1 (the 1 wins: dropped at > 3.5), (2, 1)
    # rated 1 then 5 (kept).
    first = {(1, 1): 5, (2, 1): 1}
    last = {(1, 1): 1, (2, 1): 5}
    rows = [(u, i, first.get((u, i), 5)) for u, i in ROWS]
    rows += [(u, i, last.get((u, i), 4)) for u, i in ROWS]
    twice, once = tmp_path / "twice.csv", tmp_path / "once.csv"
    twice.write_text("u,i,r\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
    frame = pd.read_csv(twice)
    frame[~frame.duplicated(["u", "i"], keep="last")].to_csv(once, index=False)
    kw = dict(columns="u,i,r", rating_threshold=3.5, n_heldout_users=3)
    a, b = _load(once, **kw), _load(twice, **kw)
    assert b.n_duplicates == len(ROWS) and a.n_duplicates == 0
    _same(a, b)
    assert not _has(b, 1, 1) and _has(b, 2, 1) and _has(b, 2, 2)
    assert split_stats(b)["n_duplicates_dropped"] == len(ROWS)
    assert any("dropped 210 rows repeating a (user, item) pair" in w for w in split_warnings(b))
    for s in (b,):  # no item both folded in and held out
        assert s.valid_tr.multiply(s.valid_te).nnz == 0 and s.test_tr.multiply(s.test_te).nnz == 0


@pytest.mark.skipif(not DATA, reason="ARM_JAX_TEST_DATA unset")
def test_ml100k_with_every_row_doubled_gives_the_same_split(tmp_path):
    source = os.path.join(DATA, "ml-100k", "u.data")
    doubled = tmp_path / "u.data"
    text = open(source).read()
    doubled.write_text(text + text)
    a = load_split("ml-100k", data_path=source, use_cache=False)
    b = load_split("ml-100k", data_path=str(doubled), use_cache=False)
    assert a.n_duplicates == 0 and b.n_duplicates == 100_000
    _same(a, b)
    assert a.checksums == (("u.data", hashlib.sha256(text.encode()).hexdigest()),)
    assert split_stats(a)["sha256"] == {"u.data": a.checksums[0][1]}


def test_a_user_item_matrix_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "matrix.txt"
    matrix = rng.integers(0, 6, (40, 12))
    path.write_text("\n".join(" ".join(map(str, row)) for row in matrix) + "\n")
    message = _fails(DataError, "looks like a user x item matrix", path, sep=" ", header=False)
    assert "12 numeric columns" in message and "one interaction per line" in message
    # Without --no_header the first row is a "header" of numbers: refused, not dropped.
    message = _fails(DataError, r"matrix.txt:1: the header line .* is all numbers", path, sep=" ")
    assert "--no_header" in message
    # An interaction list as wide is read.
    wide = tmp_path / "wide.txt"
    wide.write_text("".join(f"{u} {i} 1 2 3 4\n" for u, i in ROWS))
    assert _load(wide, sep=" ", header=False, n_heldout_users=3).train.nnz > 0


def test_a_headerless_file_does_not_lose_its_first_row(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("".join(f"{u},{i},4\n" for u, i in ROWS))
    message = _fails(DataError, r"x.csv:1: the header line '1,1,4' is all numbers", path)
    assert "give --no_header" in message
    split = _load(path, header=False, n_heldout_users=3)
    assert split_stats(split)["nnz_total"] == len(ROWS)


def test_odd_separators_columns_and_files(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("u::i\n" + "".join(f"{u}::{i}\n" for u, i in ROWS))
    _fails(ConfigError, "--sep must be one character, got '::'", path, sep="::")
    txt = tmp_path / "x.txt"  # comma-separated, read as tab-separated by its extension
    txt.write_text("u,i\n" + "".join(f"{u},{i}\n" for u, i in ROWS))
    _fails(DataError, r"has 1 columns, .* is the separator '\\t'\? give --sep", txt)
    header_only = tmp_path / "h.csv"
    header_only.write_text("user,item\n")
    _fails(DataError, "h.csv: no data rows, only a header line", header_only)
    _fails(DataError, "is a folder, not a file", tmp_path)
    utf16 = tmp_path / "u16.csv"
    utf16.write_text("u,i\n" + "".join(f"{u},{i}\n" for u, i in ROWS), encoding="utf-16")
    _fails(DataError, "u16.csv: holds UTF-16 text; .* save it as UTF-8", utf16)


def test_a_parquet_column_of_lists_is_refused(tmp_path):
    path = tmp_path / "x.parquet"
    pd.DataFrame({"u": [1, 2, 3], "i": [[1, 2], [3], [4, 5]]}).to_parquet(path)
    _fails(DataError, r"column 'i' holds ndarray values \(e.g. \[1, 2\]\).* explode", path)


def test_an_unreadable_file_is_a_one_line_error(tmp_path, monkeypatch):
    path = tmp_path / "x.csv"
    path.write_text("u,i\n" + "".join(f"{u},{i}\n" for u, i in ROWS))

    def denied(name, *args, **kwargs):  # what open() raises for a mode-000 file (not root)
        raise PermissionError(errno.EACCES, "Permission denied", str(name))

    monkeypatch.setattr(readers, "read_interactions", denied)
    _fails(DataError, r"x.csv: cannot read it \(Permission denied\)", path, use_cache=False)
    monkeypatch.setattr(cache, "sha256_file", denied)
    _fails(DataError, r"x.csv: cannot read it \(Permission denied\)", path, use_cache=False)


def test_too_few_users_is_not_blamed_on_an_unset_flag(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("u,i\n" + "".join(f"{u},{i}\n" for u, i in ROWS if u <= 7))
    message = _fails(DataError, "only 7 users left after filtering", path)
    assert "n_heldout_users=0" not in message and "--n_heldout_users=1" in message


def test_infinite_ratings_and_few_items_are_warned_of(tmp_path):
    path = tmp_path / "x.csv"
    rows = "".join(f"{u},{i},{'inf' if u == 3 else 4}\n" for u, i in ROWS)
    path.write_text("u,i,r\n" + rows)
    split = _load(path, columns="u,i,r", rating_threshold=3.5, n_heldout_users=3)
    warnings = split_warnings(split)
    assert split.n_infinite_ratings == 7 and split_stats(split)["n_infinite_ratings"] == 7
    assert any("7 ratings are infinite" in w for w in warnings)
    assert any("only 7 items, fewer than k=100" in w and "Recall@50 is 1" in w for w in warnings)


def test_a_cache_entry_is_checked_against_its_key(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("u,i\n" + "".join(f"{u},{i}\n" for u, i in ROWS))
    b.write_text("u,i\n" + "".join(f"{u},{i}\n" for u, i in ROWS if i != 7))
    split_a, split_b = _load(a, n_heldout_users=3), _load(b, n_heldout_users=3)
    entries = sorted((tmp_path / "cache" / "splits").iterdir(), key=os.path.getmtime)
    # Entry a copied over entry b (a cache synced by name): b's load rebuilds b.
    shutil.copyfile(entries[0], entries[1])
    with pytest.raises(DataError, match="damaged cache file .* holds entry"):
        cache.load_split_file(str(entries[1]), entries[1].stem.split("-", 1)[1])
    again = _load(b, n_heldout_users=3)
    assert again.n_items == split_b.n_items == 6 != split_a.n_items
