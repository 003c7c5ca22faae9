"""Bad input: one-line errors naming the file (and line), and no cache left behind."""

import os
import time

import pytest

from arm_jax.data import load_split, split_stats
from arm_jax.errors import ConfigError, DataError

HEADER = "userId,movieId,rating,timestamp\n"
GOOD = "".join(f"{u},{i},5.0,0\n" for u in range(1, 31) for i in range(1, 8))


def _cache_files(cache):
    return [os.path.join(d, f) for d, _, fs in os.walk(cache) for f in fs if f != "checksums.json"]


def _fails(tmp_path, exc, match, dataset="ml-20m", **kw):
    cache = tmp_path / "cache"
    with pytest.raises(exc, match=match or None) as info:
        load_split(dataset, cache_dir=str(cache), **kw)
    message = str(info.value)
    assert "\n" not in message
    assert not _cache_files(cache), "a failed load left cache files"
    return message


def test_missing_file(tmp_path):
    message = _fails(tmp_path, DataError, "file not found", data_dir=str(tmp_path))
    assert str(tmp_path / "ratings.csv") in message
    _fails(tmp_path, DataError, "folder not found", data_dir=str(tmp_path / "nope"))
    _fails(
        tmp_path,
        DataError,
        "file not found",
        dataset="interactions",
        data_path=str(tmp_path / "x.csv"),
    )


@pytest.mark.parametrize(
    "dataset,name,text,line",
    [
        ("ml-20m", "ratings.csv", HEADER + GOOD[:40] + "7,abc,4.0,0\n" + GOOD[40:], 6),
        ("ml-20m", "ratings.csv", HEADER + "1,2,4.0,0\n1,3\n" + GOOD, 3),
        ("ml-20m", "ratings.csv", HEADER + "1,2,4.0,0\n1,3,4.0,0,9,9\n" + GOOD, 3),
        ("ml-1m", "ratings.dat", "1::2::4::0\n\n1::x::4::0\n", 3),
        ("ml-100k", "u.data", "1\t2\t4\t0\n1\t2\tfive\t0\n", 2),
        ("msd", "train_triplets.txt", "u1\ts1\t3\nu2\ts2\n", 2),
        ("netflix", "combined_data_1.txt", "1:\n5,4,2005-01-01\nfoo,4,2005-01-01\n", 3),
        ("netflix", "combined_data_1.txt", "5,4,2005-01-01\n", 1),
        ("lines", "train.txt", "0 1 2\n1 2 x\n", 2),
    ],
    ids=[
        "csv-text",
        "csv-short",
        "csv-long",
        "dat",
        "udata",
        "msd",
        "netflix",
        "netflix-head",
        "lines",
    ],
)
def test_unparsable_line_names_file_and_line(tmp_path, dataset, name, text, line):
    (tmp_path / name).write_text(text)
    if dataset == "lines":
        (tmp_path / "test.txt").write_text("0 3\n")
    message = _fails(tmp_path, DataError, "", dataset=dataset, data_dir=str(tmp_path))
    assert f"{tmp_path / name}:{line}:" in message, message
    if dataset == "ml-1m":  # the line as written, not as parsed
        assert "'1::x::4::0'" in message, message


def test_interactions_bad_columns_and_rows(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("u,i,r\n1,2,3\n1,,4\n")
    message = _fails(
        tmp_path, DataError, "", dataset="interactions", data_path=str(path), columns="u,i"
    )
    assert f"{path}:3:" in message
    _fails(
        tmp_path,
        DataError,
        "no column",
        dataset="interactions",
        data_path=str(path),
        columns="user,item",
    )
    _fails(
        tmp_path,
        ConfigError,
        "rating column",
        dataset="interactions",
        data_path=str(path),
        columns="u,i",
        rating_threshold=3.0,
    )
    _fails(
        tmp_path,
        ConfigError,
        "positions",
        dataset="interactions",
        data_path=str(path),
        columns="u,i",
        header=False,
    )
    _fails(tmp_path, ConfigError, "data_path", dataset="interactions")
    message = _fails(
        tmp_path, DataError, "", dataset="interactions", data_path=str(path), columns="0,9"
    )
    assert "has 3 columns, so there is no column 9" in message


def test_nothing_left_after_filtering(tmp_path):
    (tmp_path / "ratings.csv").write_text(HEADER + GOOD.replace("5.0", "3.0"))
    message = _fails(
        tmp_path, DataError, "no interactions left after filtering", data_dir=str(tmp_path)
    )
    assert "rating > 3.5" in message and "None" not in message
    path = tmp_path / "x.csv"
    path.write_text("u,i\n1,2\n")
    message = _fails(tmp_path, DataError, "", dataset="interactions", data_path=str(path), min_uc=5)
    assert message.endswith("(kept users with >= 5 rows)") and "None" not in message
    (tmp_path / "ratings.csv").write_text(HEADER)
    _fails(tmp_path, DataError, "", data_dir=str(tmp_path))


def test_heldout_users_too_many(tmp_path):
    (tmp_path / "ratings.csv").write_text(HEADER + GOOD)
    message = _fails(
        tmp_path, DataError, "n_heldout_users=15", data_dir=str(tmp_path), n_heldout_users=15
    )
    assert "30 users" in message


def test_unknown_dataset_and_option(tmp_path):
    _fails(tmp_path, ConfigError, "unknown dataset 'ml-30m'", dataset="ml-30m")
    (tmp_path / "ratings.csv").write_text(HEADER + GOOD)
    _fails(tmp_path, ConfigError, "unknown option", data_dir=str(tmp_path), colour="red")
    _fails(tmp_path, ConfigError, "unknown option", dataset="synthetic", colour="red")


def test_netflix_cannot_be_downloaded(tmp_path):
    message = _fails(tmp_path, DataError, "cannot be downloaded", dataset="netflix")
    assert "combined_data_1.txt" in message and "training_set/" in message
    _fails(tmp_path, DataError, "no Netflix files", dataset="netflix", data_dir=str(tmp_path))


def _load_good(tmp_path, cache):
    return load_split("ml-20m", data_dir=str(tmp_path), cache_dir=str(cache), n_heldout_users=5)


def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    (tmp_path / "ratings.csv").write_text(HEADER + GOOD)
    cache = tmp_path / "cache"
    first = _load_good(tmp_path, cache)
    (entry,) = (cache / "splits").iterdir()
    whole = entry.read_bytes()
    for damage in (b"", b"not a zip file" * 50, whole[: len(whole) // 2], whole[:-9] + b"x" * 9):
        entry.write_bytes(damage)
        again = _load_good(tmp_path, cache)
        assert (
            again.train != first.train
        ).nnz == 0 and again.item_ids.tolist() == first.item_ids.tolist()
        assert entry.read_bytes() == whole  # replaced by a good copy
    (cache / "checksums.json").write_text("[1]")  # a damaged memo is only a memo
    assert (_load_good(tmp_path, cache).train != first.train).nnz == 0


def test_an_unwritable_cache_is_a_one_line_error(tmp_path):
    (tmp_path / "ratings.csv").write_text(HEADER + GOOD)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DataError, match="cannot write the split cache") as info:
        _load_good(tmp_path, blocker)
    assert "\n" not in str(info.value) and "--cache_dir" in str(info.value)


def test_a_rewrite_that_keeps_size_and_mtime_is_not_taken_from_the_cache(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(HEADER + GOOD)
    cache = tmp_path / "cache"
    before = os.stat(path)
    first = _load_good(tmp_path, cache)
    time.sleep(0.05)  # past the file system's timestamp tick
    path.write_text(HEADER + GOOD.replace(",5.0,", ",1.0,", 40))  # same size, 40 dislikes
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `cp -p` would
    assert os.stat(path).st_size == before.st_size
    second = _load_good(tmp_path, cache)
    # 40 rows below the rating threshold, and user 6 left with 2 rows (< min_uc = 5).
    assert split_stats(second)["nnz_total"] == split_stats(first)["nnz_total"] - 42


def test_a_header_read_as_data_is_refused(tmp_path):
    rows = "".join(f"{u},{i}\n" for u in range(1, 31) for i in range(1, 8))
    path = tmp_path / "clicks.csv"
    path.write_text("user_id,item_id\n" + rows)
    message = _fails(
        tmp_path, DataError, "looks like a header", dataset="interactions",
        data_path=str(path), header=False, n_heldout_users=3,
    )  # fmt: skip
    assert f"{path}:1:" in message and "--no_header" in message
    # Words on every line are ids, not a header.
    path.write_text("".join(f"u{u},i{i}\n" for u in range(1, 31) for i in range(1, 8)))
    split = load_split(
        "interactions", data_path=str(path), header=False, n_heldout_users=3,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert split_stats(split)["nnz_total"] == 210
