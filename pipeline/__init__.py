"""The four build steps of MM-Retinal as plain Python: extract, align, classify, clean + translate."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__version__ = "0.1.0"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Release plus a digest of the steps' code and data and of the shared records they fill, so
    caches never outlive a change to a step (and only to a step: the build, review store and
    sample-atlas tools are not part of it)."""
    root = Path(__file__).parent
    foundation = root.parent / "foundation"
    digest = hashlib.sha256()
    for path in sorted([*root.glob("*.py"), *(root / "data").glob("*"), *foundation.glob("*.py")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:10]}"
