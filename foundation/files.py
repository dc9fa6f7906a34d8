"""Files: atomic output and content hashes.

Output is written beside its target and renamed into place, so readers never see a
half-written file and a failure leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
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
