"""The downloader against a local HTTP server on 127.0.0.1 (no test reaches outside)."""

import functools
import hashlib
import http.server
import os
import threading
import zipfile

import pytest

from arm_jax.data import download, load_split
from arm_jax.errors import DataError


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def _zip(path, member, text, md5=True, md5_override=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, text)
    digest = md5_override or hashlib.md5(path.read_bytes()).hexdigest()
    if md5:
        (path.parent / (path.name + ".md5")).write_text(f"MD5 ({path.name}) = {digest}\n")


UDATA = "".join(f"{u}\t{i}\t5\t0\n" for u in range(1, 41) for i in range(1, 9))


def _files(folder):
    return sorted(
        os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
    )


def test_grouplens_zip_with_md5(server, tmp_path):
    root, url = server
    _zip(root / "ml-100k.zip", "ml-100k/u.data", UDATA)
    cache = tmp_path / "cache"
    path = download.download_dataset("ml-100k", str(cache), base_url=url, progress=False)
    assert open(path).read() == UDATA
    # The archive is removed and no temporary is left; the unpacked file is recorded.
    assert _files(cache / "downloads") == ["unpacked.json"]
    split = load_split(
        "ml-100k", cache_dir=str(cache), base_url=url, progress=False, n_heldout_users=5
    )
    assert split.train.shape == (30, 8)
    (root / "ml-100k.zip").unlink()  # second call: served from the cache
    again = load_split("ml-100k", cache_dir=str(cache), base_url=url, n_heldout_users=5)
    assert (again.train != split.train).nnz == 0


def test_corrupted_archive_leaves_nothing(server, tmp_path):
    root, url = server
    _zip(root / "ml-1m.zip", "ml-1m/ratings.dat", "1::2::5::0\n", md5_override="0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch for .*ml-1m.zip"):
        load_split("ml-1m", cache_dir=str(cache), base_url=url, progress=False)
    assert [f for f in _files(cache) if f != "checksums.json"] == []


def test_missing_archive_and_bad_zip(server, tmp_path):
    root, url = server
    with pytest.raises(DataError, match="could not download .*ml-20m.zip"):
        download.download_dataset("ml-20m", str(tmp_path / "c"), base_url=url, progress=False)
    (root / "ml-latest-small.zip").write_bytes(b"not a zip")
    (root / "ml-latest-small.zip.md5").write_text(
        hashlib.md5(b"not a zip").hexdigest() + "  ml-latest-small.zip\n"
    )
    with pytest.raises(DataError, match="not a valid zip"):
        download.download_dataset(
            "ml-latest-small", str(tmp_path / "c"), base_url=url, progress=False
        )
    assert _files(tmp_path / "c") == []


def test_msd_records_then_checks_size_and_sha256(server, tmp_path):
    root, url = server
    _zip(root / "train_triplets.txt.zip", "train_triplets.txt", "u1\ts1\t3\n", md5=False)
    cache = tmp_path / "cache"
    path = download.download_dataset("msd", str(cache), base_url=url, progress=False)
    assert open(path).read() == "u1\ts1\t3\n"
    known = (cache / "downloads" / "known.json").read_text()
    assert hashlib.sha256((root / "train_triplets.txt.zip").read_bytes()).hexdigest() in known
    os.remove(path)  # a later download must match the record
    _zip(root / "train_triplets.txt.zip", "train_triplets.txt", "u1\ts1\t4\n", md5=False)
    with pytest.raises(DataError, match="checksum mismatch"):
        download.download_dataset("msd", str(cache), base_url=url, progress=False)
    assert not os.path.exists(path)
    assert _files(cache / "downloads") == ["known.json", "unpacked.json"]


def test_a_bad_first_msd_download_is_not_recorded(server, tmp_path):
    # A damaged first download used to record its checksum, so every good one was refused.
    root, url = server
    archive = root / "train_triplets.txt.zip"
    _zip(archive, "train_triplets.txt", "u1\ts1\t3\n" * 50, md5=False)
    good = archive.read_bytes()
    data_at = good.index(b"u1")  # a stored member: damage the bytes the zip's CRC covers
    for bad in (
        b"<html>busy</html>",
        good[: len(good) // 2],
        good[:data_at] + b"X" + good[data_at + 1 :],
    ):
        archive.write_bytes(bad)
        with pytest.raises(DataError, match="not a valid zip archive"):
            download.download_dataset("msd", str(tmp_path / "c"), base_url=url, progress=False)
    assert not (tmp_path / "c" / "downloads" / "known.json").exists()
    archive.write_bytes(good)
    path = download.download_dataset("msd", str(tmp_path / "c"), base_url=url, progress=False)
    assert open(path).read() == "u1\ts1\t3\n" * 50


def test_a_damaged_cached_file_is_downloaded_again(server, tmp_path):
    root, url = server
    _zip(root / "ml-100k.zip", "ml-100k/u.data", UDATA)
    cache = str(tmp_path / "cache")
    path = download.download_dataset("ml-100k", cache, base_url=url, progress=False)
    with open(path, "r+") as f:  # cut to 60%: it used to be read as a smaller dataset
        f.truncate(len(UDATA) * 6 // 10)
    assert download.download_dataset("ml-100k", cache, base_url=url, progress=False) == path
    assert open(path).read() == UDATA
    with open(path, "r+") as f:  # same size, other bytes
        f.write("9")
    download.download_dataset("ml-100k", cache, base_url=url, progress=False)
    assert open(path).read() == UDATA


def test_unusable_cache_and_records_are_one_line_errors(server, tmp_path):
    root, url = server
    _zip(root / "ml-100k.zip", "ml-100k/u.data", UDATA)
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="file: cannot write downloads there .* --cache_dir"):
        download.download_dataset("ml-100k", str(tmp_path / "file"), base_url=url, progress=False)
    _zip(root / "train_triplets.txt.zip", "train_triplets.txt", "u1\ts1\t3\n", md5=False)
    (tmp_path / "c" / "downloads").mkdir(parents=True)
    (tmp_path / "c" / "downloads" / "known.json").write_text("")
    with pytest.raises(DataError, match="known.json: not readable .* delete it"):
        download.download_dataset("msd", str(tmp_path / "c"), base_url=url, progress=False)
    # An .md5 that is a web page with 32 hex digits in it is not taken for a checksum.
    (root / "ml-100k.zip.md5").write_text("<html>" + "ab" * 16 + " maintenance</html>")
    with pytest.raises(DataError, match="expected an MD5 checksum"):
        download.download_dataset("ml-100k", str(tmp_path / "d"), base_url=url, progress=False)


def test_a_failed_download_leaves_no_empty_folders(server, tmp_path):
    root, url = server
    _zip(root / "ml-1m.zip", "ml-1m/ratings.dat", "1::2::5::0\n", md5_override="0" * 32)
    cache = tmp_path / "cache"
    for dataset in ("ml-1m", "ml-20m"):  # a checksum mismatch; no archive on the server
        with pytest.raises(DataError):
            download.download_dataset(dataset, str(cache), base_url=url, progress=False)
        assert not cache.exists()
    (cache / "ml-100k").mkdir(parents=True)  # folders that were there before stay
    with pytest.raises(DataError):
        download.download_dataset("ml-20m", str(cache), base_url=url, progress=False)
    assert sorted(os.listdir(cache)) == ["ml-100k"]
