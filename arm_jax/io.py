"""Atomic file writes: a reader never sees a half-written file.

Every writer here writes to a temporary file in the destination folder and renames it
over the destination only once the write has completed (`os.replace` is atomic on POSIX).
"""

import contextlib
import errno
import json
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np

from arm_jax.errors import ConfigError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it to `path` if the block succeeds.

    On an exception the temporary file is removed and `path` is left untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Created like `open(path, "w")` would be, so the file gets the umask's permissions
    # (`tempfile.mkstemp` makes it 0600: others could not read a shared run's results).
    name = f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    tmp = os.path.join(folder, name)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def to_json_value(obj: Any) -> Any:
    """`obj` as `read_json` would give it back after `write_json` (tuples become lists,
    NumPy scalars and arrays Python numbers and lists)."""
    return json.loads(json.dumps(_to_jsonable(obj)))


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented JSON atomically (NumPy scalars and arrays allowed)."""
    write_text(path, json.dumps(_to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Appends one JSON line; refuses non-finite numbers (they mean a diverged run)."""
    line = json.dumps(_to_jsonable(record), allow_nan=False)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def savez(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """`np.savez` to `path` atomically (the name is kept exactly, no `.npz` added)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


LOCK_NAME = ".lock"


class WorkdirBusy(ConfigError):
    """Another live process holds the workdir's lock."""


def _holder(lock: str) -> str | None:
    """Who holds `lock` ("pid N on HOST"), or None when it is stale (its process is
    gone) or vanished."""
    try:
        with open(lock, encoding="utf-8") as f:
            pid_text, _, host = f.read().partition(" ")
    except FileNotFoundError:
        return None
    host = host.strip()
    try:
        pid = int(pid_text)
    except ValueError:
        return f"an unreadable lock ({lock})"
    if host == socket.gethostname():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
    return f"process {pid} on {host}"


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike) -> Iterator[None]:
    """Holds `workdir/.lock` (the pid and host) for the block: one run per workdir.

    Creates `workdir` if needed; if it created it and the block fails while it is still
    empty, removes it again (a refused run leaves nothing). A lock whose process is dead
    on this host (a killed run) is taken over.

    Raises:
      WorkdirBusy: another live process holds the lock.
      OSError: the folder cannot be created or written (a file, read-only, disk full).
    """
    workdir = os.fspath(workdir)
    created = not os.path.isdir(workdir)
    os.makedirs(workdir, exist_ok=True)
    lock = os.path.join(workdir, LOCK_NAME)
    for _ in range(3):  # a stale lock removed by a racing process: try again
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None:
                raise WorkdirBusy(
                    f"{workdir} is in use by {holder} (its {LOCK_NAME}); wait for it, use "
                    f"another workdir, or delete {lock} if no run is there"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
    else:
        raise WorkdirBusy(f"{workdir}: cannot take {lock}; delete it if no run is there")
    try:
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
    finally:
        os.close(fd)
    try:
        yield
    except BaseException:
        os.remove(lock)
        if created and not os.listdir(workdir):
            os.rmdir(workdir)
        raise
    os.remove(lock)


def os_error_message(e: OSError, what: str) -> str:
    """One line for a failed read or write of `what`: the path, the reason, what to do."""
    path = e.filename or what
    advice = {
        errno.ENOSPC: "free space or use another folder",
        errno.EROFS: "use a folder on a writable file system",
        errno.EACCES: "check the permissions or use another path",
        errno.EPERM: "check the permissions or use another path",
        errno.ENOTDIR: "a file stands where a folder is needed; use another path",
        errno.EEXIST: "a file stands where a folder is needed; use another path",
    }.get(e.errno, "check the path")
    return f"{path}: {e.strerror or e} ({what}); {advice}"
