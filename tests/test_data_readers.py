"""Every raw reader on files written here in its published format, through `load_split`."""

import os
import re

import numpy as np
import pandas as pd
import pytest
from test_data_liang import assert_same, reference_split

from arm_jax.data import _parse, load_given_split, load_split, read_netflix, readers, split_stats
from arm_jax.errors import DataError

RNG_SEED = 7


def _random_rows(seed=RNG_SEED, n=9000, n_users=300, n_items=200):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "userId": rng.integers(1, n_users + 1, n) * 3,
            "movieId": rng.zipf(1.5, n) % n_items + 1,
            "rating": rng.integers(1, 6, n).astype(float),
        }
    )
    return frame.drop_duplicates(["userId", "movieId"]).reset_index(drop=True)


def _load(dataset, tmp_path, **kw):
    return load_split(dataset, cache_dir=str(tmp_path / "cache"), **kw)


def test_movielens_csv_dat_and_udata(tmp_path):
    rows = _random_rows()
    ref = reference_split(rows, 3.5, 5, 0, 20)
    d20, d1, d100 = (tmp_path / n for n in ("ml-20m", "ml-1m", "ml-100k"))
    for d in (d20, d1, d100):
        d.mkdir()
    ts = np.arange(len(rows)) + 10**9
    (d20 / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{i},{r:.1f},{t}\n" for (u, i, r), t in zip(rows.values, ts))
    )
    (d1 / "ratings.dat").write_text(
        "".join(f"{int(u)}::{int(i)}::{int(r)}::{t}\n" for (u, i, r), t in zip(rows.values, ts))
    )
    (d100 / "u.data").write_text(
        "".join(f"{int(u)}\t{int(i)}\t{int(r)}\t{t}\n" for (u, i, r), t in zip(rows.values, ts))
    )
    for dataset, folder in (("ml-20m", d20), ("ml-1m", d1), ("ml-100k", d100)):
        split = _load(dataset, tmp_path, data_dir=str(folder), n_heldout_users=20)
        assert_same(split, ref)
        assert split.dataset == dataset


def test_ml20m_like_literal_counts(tmp_path):
    # 12 users x 6 items, all liked except user 3's item 5; user 11 has 4 rows (dropped).
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(1, 13):
        for i in range(1, 7 if u != 11 else 5):
            lines.append(f"{u},{i * 10},{2.0 if (u, i) == (3, 5) else 4.5},0")
    (tmp_path / "ratings.csv").write_text("\n".join(lines) + "\n")
    split = _load("ml-20m", tmp_path, data_dir=str(tmp_path), n_heldout_users=2)
    stats = split_stats(split)
    assert (stats["n_train_users"], stats["n_valid_users"], stats["n_test_users"]) == (7, 2, 2)
    assert stats["n_items"] == 6
    # 6-row users hold out int(0.2 * 6) = 1 item; user 3 (5 rows) also holds out 1.
    assert stats["nnz_valid_te"] == 2 and stats["nnz_test_te"] == 2
    assert stats["nnz_total"] == 11 * 6 - 1
    assert sorted(split.item_ids.tolist()) == [10, 20, 30, 40, 50, 60]


def _netflix_files(rows, folder):
    """Writes both Netflix forms: training_set/mv_*.txt and combined_data_[1-2].txt."""
    (folder / "training_set").mkdir(parents=True)
    by_movie = sorted(rows.groupby("movieId"), key=lambda kv: kv[0])
    combined = [[], []]
    for k, (movie, group) in enumerate(by_movie):
        body = "".join(
            f"{u},{int(r)},2005-0{1 + u % 9}-1{u % 10}\n"
            for u, r in zip(group.userId, group.rating)
        )
        (folder / "training_set" / f"mv_{movie:07d}.txt").write_text(f"{movie}:\n{body}")
        combined[k * 2 // len(by_movie)].append(f"{movie}:\n{body}")
    for n, part in enumerate(combined, start=1):
        (folder / f"combined_data_{n}.txt").write_text("".join(part))


def test_netflix_both_forms(tmp_path):
    rows = _random_rows()
    _netflix_files(rows, tmp_path / "a")
    file_order = rows.sort_values("movieId", kind="stable")
    ref = reference_split(file_order, 3.5, 5, 0, 25)
    combined = _load("netflix", tmp_path, data_dir=str(tmp_path / "a"), n_heldout_users=25)
    assert_same(combined, ref)
    os.makedirs(tmp_path / "b")
    os.rename(tmp_path / "a" / "training_set", tmp_path / "b" / "training_set")
    per_movie = _load("netflix", tmp_path, data_dir=str(tmp_path / "b"), n_heldout_users=25)
    assert_same(per_movie, ref)
    inter = read_netflix([str(tmp_path / "a" / "combined_data_1.txt")])
    assert inter.rating is not None and len(inter.user) > 0


def test_msd_triplets(tmp_path):
    rng = np.random.default_rng(1)
    n = 6000
    users = np.array([f"{h:040x}" for h in rng.integers(0, 2**62, 400)])[rng.integers(0, 400, n)]
    songs = np.array([f"SO{k:016X}" for k in range(150)])[rng.zipf(1.4, n) % 150]
    frame = pd.DataFrame({"userId": users, "movieId": songs, "rating": rng.integers(1, 9, n)})
    frame = frame.drop_duplicates(["userId", "movieId"]).reset_index(drop=True)
    path = tmp_path / "train_triplets.txt"
    path.write_text("".join(f"{u}\t{s}\t{c}\n" for u, s, c in frame.values))
    split = _load("msd", tmp_path, data_dir=str(tmp_path), min_uc=8, min_sc=20, n_heldout_users=15)
    assert_same(split, reference_split(frame, None, 8, 20, 15))
    assert split.train_user_ids.dtype.kind == "U"
    with open(path, "a") as f:  # whitespace-only lines carry nothing
        f.write("  \n\t\n")
    split = _load("msd", tmp_path, data_dir=str(tmp_path), min_uc=8, min_sc=20, n_heldout_users=15)
    assert_same(split, reference_split(frame, None, 8, 20, 15))
    with open(path, "a") as f:  # a short line is still an error at its line
        f.write("user-without-song\n")
    with pytest.raises(DataError, match=rf"train_triplets.txt:{len(frame) + 3}: expected"):
        _load("msd", tmp_path, data_dir=str(tmp_path), min_uc=8, min_sc=20, n_heldout_users=15)


@pytest.mark.parametrize("form", ["csv_names", "csv_bom", "tsv_positions", "parquet", "space"])
def test_interactions(tmp_path, form):
    rows = _random_rows()
    ref_all = reference_split(rows, None, 5, 0, len(rows.userId.unique()) // 10)
    ref_thr = reference_split(rows, 3.5, 5, 0, 20)
    if form in ("csv_names", "csv_bom"):  # csv_bom: Excel's "CSV UTF-8", a byte-order mark
        path = tmp_path / "clicks.csv"
        rows.rename(columns={"userId": "uid", "movieId": "iid", "rating": "r"}).to_csv(
            path, index=False, encoding="utf-8-sig" if form == "csv_bom" else "utf-8"
        )
        kw = dict(columns="uid,iid,r")
    elif form == "tsv_positions":
        path = tmp_path / "clicks.tsv"
        rows[["rating", "userId", "movieId"]].to_csv(path, sep="\t", index=False, header=False)
        kw = dict(columns=["1", "2", "0"], header=False)
    elif form == "space":
        path = tmp_path / "clicks.dat"
        rows.to_csv(path, sep=" ", index=False, header=False)
        kw = dict(columns="0,1,2", header=False, sep=" ")
    else:
        path = tmp_path / "clicks.parquet"
        rows.to_parquet(path)
        kw = dict(columns="userId,movieId,rating")
    split = _load("interactions", tmp_path, data_path=str(path), **kw)
    assert_same(split, ref_all)  # unset threshold: every row counts, h = 10% of users
    split = _load(
        "interactions",
        tmp_path,
        data_path=str(path),
        rating_threshold=3.5,
        n_heldout_users=20,
        **kw,
    )
    assert_same(split, ref_thr)


def test_lines_merge_and_resplit(tmp_path):
    rows = _random_rows()
    rows = rows.assign(userId=rows.userId // 3 - 1, movieId=rows.movieId - 1)
    train_part = rows.groupby("userId").head(8)
    test_part = rows.drop(train_part.index)
    for name, part in (("train.txt", train_part), ("test.txt", test_part)):
        text = "".join(f"{u} {' '.join(map(str, g.movieId))}\n" for u, g in part.groupby("userId"))
        (tmp_path / name).write_text(text)
    file_order = pd.concat(
        [p.sort_values("userId", kind="stable") for p in (train_part, test_part)]
    )
    split = _load("lines", tmp_path, data_dir=str(tmp_path))
    assert_same(split, reference_split(file_order, None, 5, 0, rows.userId.nunique() // 10))
    given = load_given_split(str(tmp_path))  # the folder's own split, as given
    assert given.train.nnz == len(train_part) and given.test.nnz == len(test_part)
    assert given.train.shape == given.test.shape == (rows.userId.nunique(), rows.movieId.nunique())
    assert given.train.multiply(given.test).nnz == 0


def test_parquet_split(tmp_path):
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(30)]
    parts = {}
    parts["train"] = (rng.random((40, 30)) < 0.2).astype(np.float32)
    for p in ("valid", "test"):
        full = rng.random((8, 30)) < 0.3
        held = full & (rng.random((8, 30)) < 0.3)
        parts[f"{p}_tr"] = (full & ~held).astype(np.float32)
        parts[f"{p}_te"] = held.astype(np.float32) - (full & ~held).astype(np.float32)
    for name, values in parts.items():
        index = [f"{name}_u{k}" for k in range(len(values))]
        pd.DataFrame(values, columns=items, index=index).to_parquet(tmp_path / f"{name}.pq")
    split = _load("parquet_split", tmp_path, data_dir=str(tmp_path))
    for name, values in parts.items():
        np.testing.assert_array_equal(getattr(split, name).toarray(), values > 0)
    assert split.item_ids.tolist() == items
    assert split.valid_user_ids[0] == "valid_tr_u0"


def test_harmless_formatting_reads_the_same(tmp_path):
    # A byte-order mark, blank and whitespace-only lines, CRLF: the same split as clean files.
    rows = _random_rows()
    ref = reference_split(rows, 3.5, 5, 0, 20)
    udata = "".join(f"{int(u)}\t{int(i)}\t{int(r)}\t9\n" for u, i, r in rows.values)
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text(udata + "  \n\t\n")
    assert_same(_load("ml-100k", tmp_path, data_dir=str(folder), n_heldout_users=20), ref)

    _netflix_files(rows, tmp_path / "clean")
    messy = tmp_path / "messy"
    messy.mkdir()
    for n in (1, 2):
        text = (tmp_path / "clean" / f"combined_data_{n}.txt").read_text()
        text = text.replace(":\n", ":\n\n", 3).replace("\n", "\r\n") + "\r\n \n"
        (messy / f"combined_data_{n}.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    ref = reference_split(rows.sort_values("movieId", kind="stable"), 3.5, 5, 0, 25)
    assert_same(_load("netflix", tmp_path, data_dir=str(messy), n_heldout_users=25), ref)

    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "train.txt").write_bytes(b"\xef\xbb\xbf0 1 2 3 4 5\n1 2 3 4 5 6\n2 1 3 5 7\n")
    (lines / "test.txt").write_text("0 6\n1 7\n2 8\n")
    split = _load("lines", tmp_path, data_dir=str(lines), min_uc=1, n_heldout_users=1)
    users = np.concatenate([split.train_user_ids, split.valid_user_ids, split.test_user_ids])
    assert sorted(users.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("huge", ["9223372036854775808", "18446744073709551617"])
def test_ids_beyond_int64_are_an_error_not_a_merge(tmp_path, huge):
    # Ids past int64 used to wrap (2^63 → −2^63) or merge (all > 2^64 became one user).
    rows = "".join(f"{u}\t{i}\t5\t9\n" for u in range(1, 9) for i in range(1, 8))
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text(rows + f"{huge}\t1\t5\t9\n")
    with pytest.raises(DataError, match=r"u.data:57: expected .*" + huge):
        _load("ml-100k", tmp_path, data_dir=str(folder))
    lines = tmp_path / "lines"
    lines.mkdir()
    (lines / "train.txt").write_text(f"0 1 2\n{huge} 1 2\n")
    (lines / "test.txt").write_text("0 3\n")
    with pytest.raises(DataError, match=r"train.txt:2: expected integer ids"):
        _load("lines", tmp_path, data_dir=str(lines))
    # Interactions ids are labels: two ids past int64 stay two users.
    clicks = tmp_path / "clicks.csv"
    clicks.write_text(
        "u,i\n" + rows.replace("\t5\t9", "").replace("\t", ",") + f"{huge},1\n{huge}0,2\n"
    )
    split = _load("interactions", tmp_path, data_path=str(clicks), min_uc=1, n_heldout_users=1)
    users = np.concatenate([split.train_user_ids, split.valid_user_ids, split.test_user_ids])
    assert len(set(users.tolist())) == 10 and huge in {str(u) for u in users}


@pytest.mark.parametrize(
    "form, text, header",
    [
        ("leading zeros", "u,i\n01,1\n1,2\n001,3\n1 ,4\n", True),
        ("plus sign", "u,i\n+1,1\n1,2\n001,3\n1,4\n", True),
        ("quoted", 'u,i\n"01",1\n1,2\n001,3\n1,4\n', True),
        ("decimal point", "u,i\n1.0,1\n1,2\n1.00,3\n1,4\n", True),
        ("byte-order mark, no header", "\ufeff01,1\n1,2\n001,3\n1,4\n", False),
    ],
)
def test_interactions_ids_are_their_text(tmp_path, form, text, header):
    # "01" and "1" read as numbers were one user, and "01" lost its zero; a trailing
    # blank still does not make another id.
    first = text.lstrip("\ufeff").splitlines()[int(header)].split(",")[0].strip('"')
    for name, sep in (("clicks.csv", ","), ("clicks.tsv", "\t")):
        path = tmp_path / name
        path.write_text(text.replace(",", sep), encoding="utf-8")
        got = readers.read_interactions(str(path), header=header)
        assert len(got.user_ids) == 3 and first in got.user_ids.tolist(), (name, got.user_ids)
        assert got.user.tolist() == [0, 1, 2, 1]


def test_interactions_plain_numbers_keep_the_numeric_read(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("u,i,when\n10,7,2015-01-03 09:00\n2,70,2015-01-04 10:00\n10,0,x\n")
    got = readers.read_interactions(str(path))
    assert got.user_ids.dtype.kind == "i" and got.user_ids.tolist() == [10, 2]
    assert got.item_ids.tolist() == [7, 70, 0]


def test_the_leading_zero_scan_matches_a_regex_across_chunks(monkeypatch):
    monkeypatch.setattr(_parse, "_SCAN_BYTES", 7)  # many chunk boundaries
    rng = np.random.default_rng(3)
    alphabet = np.frombuffer(b'0123456789+,\n" ab', np.uint8)
    for _ in range(300):
        text = bytes(rng.choice(alphabet, rng.integers(0, 40)))
        expected = re.search(rb'(?:^|[\n",])(?:\+|0[0-9])', text) is not None
        assert _parse._numeric_text_differs("x.csv", text, ",") == expected, text
