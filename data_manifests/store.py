"""Content-addressed image store shared by all published versions.

Images are stored once under `<root>/<first two hex digits>/<sha256><suffix>`, so a panel that
is unchanged between versions costs no extra disk, and a file's name proves what its bytes
should be (which is what `verify` checks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from foundation.files import atomic_output, sha256_file

logger = logging.getLogger(__name__)

IMAGE_STORE_ENV = "MMRETINAL_IMAGE_STORE"
DEFAULT_STORE_DIRNAME = "images"
DEFAULT_SUFFIX = ".png"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class ImageStoreError(Exception):
    """An image could not be stored: missing source, unreadable file or wrong hash."""


def resolve_image_store(registry_root: Path, image_store: Path | str | None = None) -> Path:
    """Store location: explicit argument, else $MMRETINAL_IMAGE_STORE, else `<registry root>/images`."""
    if image_store is not None and str(image_store) != "":
        return Path(image_store).expanduser().resolve()
    from_env = os.environ.get(IMAGE_STORE_ENV)
    if from_env:
        return Path(from_env).expanduser().resolve()
    return (Path(registry_root) / DEFAULT_STORE_DIRNAME).resolve()


class ImageStore:
    """Directory of images named by the SHA-256 of their bytes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @staticmethod
    def relative_path(sha256: str, suffix: str = DEFAULT_SUFFIX) -> str:
        """Path of an image inside the store, POSIX style, e.g. 'ab/abcdef....png'."""
        sha256 = sha256.lower()
        if not _SHA256_RE.match(sha256):
            raise ImageStoreError(f"not a SHA-256 hex digest: {sha256!r}")
        return f"{sha256[:2]}/{sha256}{suffix.lower()}"

    def path_for(self, relative_path: str) -> Path:
        """Absolute path of a stored image given its store-relative path."""
        return self.root / relative_path

    def has(self, sha256: str, suffix: str = DEFAULT_SUFFIX) -> bool:
        """Whether an image of this digest is stored (under that suffix)."""
        return self.path_for(self.relative_path(sha256, suffix or DEFAULT_SUFFIX)).is_file()

    def put(self, source: Path | str, expected_sha256: str) -> str:
        """Copy `source` into the store, checking its hash; return its store-relative path.

        Idempotent: an image already present with the right bytes is not written again (one
        whose bytes no longer match its name is rewritten). The copy goes to a temporary file in
        the target directory and is moved into place with os.replace, so readers never see
        half-written images and concurrent writers of the same image do not corrupt each other.
        """
        source = Path(source)
        expected = expected_sha256.lower()
        suffix = source.suffix.lower() or DEFAULT_SUFFIX
        relative = self.relative_path(expected, suffix)
        target = self.path_for(relative)
        if not source.is_file():
            raise ImageStoreError(f"image file not found: {source}")
        if target.is_file():
            actual = sha256_file(source)
            if actual != expected:
                raise ImageStoreError(f"image {source} has SHA-256 {actual}, expected {expected}")
            if sha256_file(target) == expected:
                return relative
            logger.warning("stored image %s does not match its name; rewriting it from %s", target, source)
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with atomic_output(target, durable=True) as out, open(source, "rb") as src:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
            actual = digest.hexdigest()
            if actual != expected:
                raise ImageStoreError(f"image {source} has SHA-256 {actual}, expected {expected}")
        os.chmod(target, 0o444)
        logger.debug("stored %s as %s", source, relative)
        return relative

    def count_images(self) -> int:
        """Number of stored images (temporary files excluded)."""
        if not self.root.is_dir():
            return 0
        return sum(
            1
            for path in self.root.glob("??/*")
            if path.is_file() and not path.name.startswith(".")
        )
