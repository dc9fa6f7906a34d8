"""Files: atomic output and content hashes.

Output is written beside its target and renamed into place, so readers never see a
half-written file and a failure leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it when the block ends without error
    (for writers that want a file name: pandas, matplotlib, PIL)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        yield temp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)  # mkstemp makes files private; give them the usual mode
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output(path: Path | str, durable: bool = False) -> Iterator[BinaryIO]:
    """Binary handle whose content replaces `path` when the block ends without error;
    `durable` flushes it to disk first (manifests, stored images)."""
    with atomic_path(path) as temp_path, open(temp_path, "wb") as out:
        yield out
        if durable:
            out.flush()
            os.fsync(out.fileno())


def write_atomic(path: Path | str, data: bytes | str, durable: bool = False) -> None:
    """Replace `path` with `data` (text is written as UTF-8) in one step."""
    with atomic_output(path, durable) as out:
        out.write(data.encode("utf-8") if isinstance(data, str) else data)


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks so large files do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


OWNER_FILE = ".owner"
"""In an owned temporary folder: a file its creating process holds locked while it lives."""


class OwnedDir:
    """A temporary folder whose `.owner` file this process keeps locked until `release()` (or its
    death, when the kernel drops the lock): `remove_dead_dirs` tells it from a dead build's debris."""

    def __init__(self, parent: Path | str, prefix: str, suffix: str) -> None:
        Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
        self._fd: int | None = os.open(self.path / OWNER_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self, moved_to: Path | None = None) -> None:
        """Drop the lock; `moved_to`: where the folder went (its owner file is removed there)."""
        if moved_to is not None:
            (Path(moved_to) / OWNER_FILE).unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def owner_gone(folder: Path, owner_file: str = OWNER_FILE, grace_seconds: float = 120.0) -> bool:
    """Whether the process that owned `folder` is gone: the lock on its owner file is free (or it
    has none and is older than `grace_seconds`, so it is not being created right now)."""
    try:
        fd = os.open(folder / owner_file, os.O_RDONLY)
    except FileNotFoundError:  # no owner file: debris of an older build, unless being created now
        try:
            return time.time() - folder.stat().st_mtime > grace_seconds
        except FileNotFoundError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its owner is alive
    finally:
        os.close(fd)
    return True


def remove_dead_dirs(parent: Path | str, pattern: str, grace_seconds: float = 120.0) -> list[Path]:
    """Remove the folders under `parent` matching `pattern` whose owner process is gone; the
    folders of running builds are left alone. Returns what was removed."""
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for folder in sorted(parent.glob(pattern)):
        if folder.is_dir() and not folder.is_symlink() and owner_gone(folder, OWNER_FILE, grace_seconds):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def remove_stale_temp_files(parent: Path | str, older_than_seconds: float = 3600.0) -> list[Path]:
    """Remove `atomic_path` temporaries (`.NAME.XXXX.tmp`) left in `parent` by a killed writer."""
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    now = time.time()
    for temporary in parent.glob(".*.tmp"):
        try:
            if temporary.is_file() and now - temporary.stat().st_mtime > older_than_seconds:
                temporary.unlink()
                removed.append(temporary)
        except FileNotFoundError:
            continue
    return removed
