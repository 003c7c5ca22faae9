"""Downloads of the public datasets into the cache folder, verified and atomic.

GroupLens publishes an `.md5` beside each MovieLens zip: it is fetched and compared. The
MSD taste profile has no published checksum, so its size and SHA-256 are recorded on the
first download that unpacks (`<cache>/downloads/known.json`) and later downloads must match
them. A download goes to a temporary file of its own process (two processes may download
at once) that is renamed only once complete and verified. The unpacked ratings file's size
and SHA-256 are recorded too (`<cache>/downloads/unpacked.json`): a cached file that no
longer matches (truncated, edited) is downloaded again, never used. Netflix Prize data is
no longer distributed; its error says which files to put where.
"""

import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib

from arm_jax import io as aio
from arm_jax.data.cache import file_checksum
from arm_jax.errors import ConfigError, DataError

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"
MSD_URL = "http://millionsongdataset.com/sites/default/files/challenge/"

# dataset: (base URL, archive, member path inside the archive, published .md5 or not)
SOURCES: dict[str, tuple[str, str, str, bool]] = {
    "ml-100k": (GROUPLENS_URL, "ml-100k.zip", "ml-100k/u.data", True),
    "ml-1m": (GROUPLENS_URL, "ml-1m.zip", "ml-1m/ratings.dat", True),
    "ml-10m": (GROUPLENS_URL, "ml-10m.zip", "ml-10M100K/ratings.dat", True),
    "ml-20m": (GROUPLENS_URL, "ml-20m.zip", "ml-20m/ratings.csv", True),
    "ml-latest-small": (GROUPLENS_URL, "ml-latest-small.zip", "ml-latest-small/ratings.csv", True),
    "msd": (MSD_URL, "train_triplets.txt.zip", "train_triplets.txt", False),
}

NETFLIX_HELP = (
    "the Netflix Prize data cannot be downloaded; put combined_data_1.txt ... "
    "combined_data_4.txt (or the training_set/ folder of mv_*.txt files) in a folder DIR "
    "and pass --data_dir=DIR"
)
_CHUNK = 1 << 20


def _open(url: str, timeout: float):
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http(s) only)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataError(f"could not download {url}: {e}") from None


def fetch(
    url: str, dest: str, *, md5: str | None = None, progress: bool = True, timeout: float = 60.0
) -> dict:
    """Downloads `url` to `dest` through a temporary file, verifying `md5` if given.

    Returns:
      {"size": bytes, "sha256": hex, "md5": hex} of the downloaded file.

    Raises:
      DataError: the download failed or the checksum differs; `dest` is then untouched.
    """
    from tqdm.auto import tqdm

    sha, md = hashlib.sha256(), hashlib.md5()
    size = 0
    with _open(url, timeout) as response, aio.atomic_path(dest) as tmp, open(tmp, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=os.path.basename(dest),
            disable=not progress,
        ) as bar:
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    sha.update(chunk)
                    md.update(chunk)
                    size += len(chunk)
                    bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as e:  # IncompleteRead is the latter
                raise DataError(f"could not download {url}: {e!r}") from None
        if total is not None and size != total:
            raise DataError(f"could not download {url}: got {size} of {total} bytes")
        if md5 is not None and md.hexdigest() != md5.lower():
            raise DataError(f"checksum mismatch for {url}: md5 {md.hexdigest()}, published {md5}")
    return {"size": size, "sha256": sha.hexdigest(), "md5": md.hexdigest()}


def published_md5(url: str, *, timeout: float = 60.0) -> str:
    """The MD5 in GroupLens' `<zip>.md5` file (either `MD5 (f) = h` or `h  f`)."""
    try:
        with _open(url + ".md5", timeout) as response:
            text = response.read(4096).decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as e:
        raise DataError(f"could not download {url}.md5: {e!r}") from None
    # The whole file is the checksum line: not any 32 hex digits of, say, an HTML page.
    match = re.fullmatch(r"\s*(?:MD5 \(.*\) = )?([0-9a-fA-F]{32})(?:\s+\S.*)?\s*", text)
    if match is None:
        raise DataError(f"{url}.md5: expected an MD5 checksum, got {text[:80]!r}")
    return match.group(1).lower()


def _records(path: str) -> dict:
    """The JSON object at `path` ({} if there is none); DataError if it is damaged."""
    if not os.path.exists(path):
        return {}
    try:
        records = aio.read_json(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable ({e}); delete it to start afresh") from None
    if not isinstance(records, dict):
        raise DataError(f"{path}: expected a JSON object; delete it to start afresh")
    return records


def _check_known(known_path: str, archive: str, url: str, info: dict) -> None:
    """Raises if `archive` was recorded with another (size, SHA-256)."""
    known = _records(known_path).get(archive)
    if known is not None and known != {"size": info["size"], "sha256": info["sha256"]}:
        raise DataError(
            f"checksum mismatch for {url}: size {info['size']} sha256 {info['sha256']}, "
            f"recorded {known.get('size')} / {known.get('sha256')} in {known_path} (delete "
            f"its {archive!r} entry if that first download was the bad one)"
        )


def _record(path: str, key: str, value: dict) -> None:
    records = _records(path)
    records[key] = value
    aio.write_json(path, records)


def _unpacked_intact(target: str, cache_dir: str) -> bool:
    """Whether the cached `target` is the file that was unpacked (size, then SHA-256)."""
    record = _records(os.path.join(cache_dir, "downloads", "unpacked.json")).get(target)
    if record is None:  # unpacked before records were kept: trusted, as then
        return True
    if os.path.getsize(target) != record["size"]:
        return False
    return file_checksum(target, cache_dir) == record["sha256"]


def download_dataset(
    dataset: str,
    cache_dir: str,
    *,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> str:
    """Makes sure `dataset`'s ratings file is in the cache; returns its path.

    Args:
      dataset: a key of `SOURCES` (Netflix raises DataError saying what to do instead).
      cache_dir: the cache folder; files go to `<cache_dir>/<dataset>/`.
      base_url: replaces the publisher's URL prefix (tests serve archives locally).
      progress: show a progress bar.
      timeout: seconds to wait for the server.
    """
    if dataset == "netflix":
        raise DataError(NETFLIX_HELP)
    if dataset not in SOURCES:
        raise ConfigError(f"no download for dataset {dataset!r}; pass --data_dir or --data_path")
    default_url, archive, member, has_md5 = SOURCES[dataset]
    target = os.path.join(cache_dir, dataset, os.path.basename(member))
    if os.path.isfile(target) and _unpacked_intact(target, cache_dir):
        return target
    downloads = os.path.join(cache_dir, "downloads")
    # Removed again if the download fails: an empty folder would look like a cache.
    created = [d for d in (os.path.dirname(target), downloads, cache_dir) if not os.path.exists(d)]
    try:
        os.makedirs(downloads, exist_ok=True)
        os.makedirs(os.path.dirname(target), exist_ok=True)
    except OSError as e:
        raise DataError(
            f"{cache_dir}: cannot write downloads there ({e.strerror}); pass another "
            "--cache_dir (or set $ARM_JAX_CACHE)"
        ) from None
    url = (base_url or default_url).rstrip("/") + "/" + archive
    known_path = os.path.join(downloads, "known.json")
    zip_path = os.path.join(downloads, f"{archive}.{os.getpid()}")  # one per process
    try:
        md5 = published_md5(url, timeout=timeout) if has_md5 else None
        info = fetch(url, zip_path, md5=md5, progress=progress, timeout=timeout)
        if not has_md5:
            _check_known(known_path, archive, url, info)
        _extract(zip_path, member, target, url)
    except BaseException:
        _remove_empty(created, keep=zip_path)
        raise
    finally:
        if os.path.exists(zip_path):
            os.remove(zip_path)
    if not has_md5:  # recorded once it has unpacked: a bad first download is not kept
        _record(known_path, archive, {"size": info["size"], "sha256": info["sha256"]})
    _record(
        os.path.join(downloads, "unpacked.json"),
        target,
        {"size": os.path.getsize(target), "sha256": file_checksum(target, cache_dir)},
    )
    return target


def _remove_empty(folders: list[str], *, keep: str) -> None:
    """Removes `folders` (innermost first) where nothing but `keep` is in them."""
    if os.path.exists(keep):
        os.remove(keep)
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:  # not empty (another process's download) or already gone
            pass


def _extract(zip_path: str, member: str, target: str, url: str) -> None:
    """Copies `member` of the zip to `target` atomically."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            names = z.namelist()
            if member not in names:
                # tolerate a different top folder
                found = [n for n in names if n.endswith("/" + os.path.basename(member))]
                if not found:
                    raise DataError(f"{url}: archive has no {member}")
                member = found[0]
            with z.open(member) as src, aio.atomic_path(target) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DataError(f"{url}: not a valid zip archive ({e})") from None
