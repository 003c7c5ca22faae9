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
    assert _files(cache / "downloads") == []  # archive removed, no temporary left
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
    assert _files(cache / "downloads") == ["known.json"]
