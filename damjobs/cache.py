"""Files on disk under the configured roots: cache layout, atomic writes, safe deletes.

Every relative path that comes from the database is untrusted. `resolve_inside` is the one
place that turns such a path into an absolute one, and it rejects anything that leaves its
root: `..` segments, absolute paths and symbolic links that point out of the root.
"""

import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from damjobs.errors import PathOutsideRootError, StorageError

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".damjobs-tmp-"
"""Name prefix of files that are still being written; readers never open these."""

HOST_TAG = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]
TEMP_NAME = re.compile(
    re.escape(TEMP_PREFIX) + r"(?P<host>[A-Za-z0-9-]*)\.(?P<pid>\d+)\."
)

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "tiff": "tif"}


@dataclasses.dataclass(frozen=True)
class FileOwnership:
    """Permissions given to every file and folder that damjobs creates in a root."""

    file_mode: int = 0o644
    dir_mode: int = 0o755
    gid: int | None = None


def resolve_inside(root: Path, relative: str) -> Path:
    """
    Return the absolute path of `relative` below `root`, following symbolic links.

    Raise PathOutsideRootError when the path is absolute, empty, contains a NUL byte or
    resolves (through `..` or a symbolic link) to a place outside `root`.
    """
    if not relative or "\x00" in relative:
        raise PathOutsideRootError(
            f"invalid path {relative!r}: empty or contains a NUL byte"
        )
    if os.path.isabs(relative):
        raise PathOutsideRootError(
            f"path {relative!r} is absolute; expected a path relative to {root}"
        )

    real_root = root.resolve()
    candidate = (real_root / relative).resolve()
    if candidate != real_root and real_root not in candidate.parents:
        raise PathOutsideRootError(f"path {relative!r} leaves its root {root}")

    return candidate


def entry_relative_path(key: dict[str, int | str], extension: str) -> str:
    """
    Return the sharded cache path of one cache entry, relative to the cache root.

    `key` contains the identity and the source versions of the entry. The name is the SHA-256
    of its canonical JSON, so a new version of any source gives a new path and the old file
    keeps serving until the new one is in place.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    return f"{digest[:2]}/{digest[2:4]}/{digest}.{extension}"


def make_parent_folders(path: Path, root: Path, ownership: FileOwnership) -> None:
    """Create the missing folders between `root` and `path`, with the configured mode and group."""
    missing = []
    parent = path.parent
    while parent != root and not parent.exists():
        missing.append(parent)
        parent = parent.parent

    for folder in reversed(missing):
        try:
            folder.mkdir(mode=ownership.dir_mode)
        except FileExistsError:
            continue
        os.chmod(folder, ownership.dir_mode)
        if ownership.gid is not None:
            os.chown(folder, -1, ownership.gid)


def atomic_write(path: Path, data: bytes, root: Path, ownership: FileOwnership) -> int:
    """
    Write `data` to `path` so that readers see either the old file or the whole new one.

    The bytes go to a temporary name in the target folder, are flushed to disk, get their
    mode and group, and are renamed over the target. Return the number of bytes written.
    """
    temp_path = path.with_name(temp_name(path.name))
    try:
        make_parent_folders(path, root, ownership)
        fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_path, ownership.file_mode)
        if ownership.gid is not None:
            os.chown(temp_path, -1, ownership.gid)
        os.replace(temp_path, path)
    except OSError as error:
        temp_path.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {error.strerror}") from error

    return len(data)


def temp_name(name: str) -> str:
    """Return a temporary name for `name` that records this host and process."""
    return f"{TEMP_PREFIX}{HOST_TAG}.{os.getpid()}.{secrets.token_hex(6)}-{name}"


def delete_inside(root: Path, relative: str) -> bool:
    """
    Delete one file below `root`; return False when it was already gone.

    A path outside the root raises PathOutsideRootError and nothing is deleted.
    """
    path = resolve_inside(root, relative)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as error:
        raise StorageError(f"cannot delete {path}: {error.strerror}") from error

    return True


def file_size(root: Path, relative: str) -> int | None:
    """Return the size of a file below `root`, or None when it is missing or not a regular file."""
    try:
        path = resolve_inside(root, relative)
        stat = path.stat()
    except (OSError, PathOutsideRootError):
        return None
    if not path.is_file():
        return None

    return stat.st_size


def iter_temp_files(root: Path) -> Iterator[Path]:
    """Yield every leftover temporary file below `root`."""
    for folder, _subfolders, names in os.walk(root):
        for name in names:
            if name.startswith(TEMP_PREFIX):
                yield Path(folder) / name


def _writer_is_gone(name: str) -> bool:
    """Return True when the temporary file `name` was written by a process of this host
    that no longer exists."""
    match = TEMP_NAME.match(name)
    if match is None or match["host"] != HOST_TAG:
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False

    return False


def sweep_temp_files(root: Path, min_age_seconds: float) -> int:
    """
    Delete the temporary files below `root` that a killed run left behind.

    A file whose writer on this host has ended goes at once; any other goes once it is
    `min_age_seconds` old, which keeps the files that a live writer on another host is
    still filling. Return how many files were deleted.
    """
    if not root.is_dir():
        return 0

    cutoff = time.time() - min_age_seconds
    deleted = 0
    for path in iter_temp_files(root):
        try:
            if _writer_is_gone(path.name) or path.lstat().st_mtime <= cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:
            continue
    if deleted:
        logger.info(
            "deleted %d temporary files left by an earlier run in %s", deleted, root
        )

    return deleted
