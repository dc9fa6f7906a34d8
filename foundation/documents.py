"""The one writer (and reader) of a `DocumentRun`: `document.json` beside its `images/`.

Image paths are stored relative to the document directory and made absolute when read, so a
work directory can be moved. A run is written into a staging directory that then replaces the
final one in one rename: readers see the old record or the new one, never half of either.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from foundation.files import write_atomic
from foundation.records import DocumentRun

DOCUMENT_FILE = "document.json"
IMAGES_DIR = "images"


def _relative(image_file: str | None) -> str | None:
    if not image_file:
        return image_file
    return f"{IMAGES_DIR}/{Path(image_file).name}"


def _with_image_paths(run: DocumentRun, convert) -> None:
    for pair in run.pairs:
        pair.image_file = convert(pair.image_file)
    for reject in run.rejects:
        if reject.proposal is not None:
            reject.proposal.image_file = convert(reject.proposal.image_file)


def write_document_run(run: DocumentRun, staging: Path, final: Path) -> DocumentRun:
    """Persist `run` (whose images are already in `staging/images/`) and move it to `final`.

    Returns the run with absolute image paths under `final`.
    """
    staging, final = Path(staging), Path(final)
    run.directory = str(final.resolve())
    _with_image_paths(run, _relative)
    try:
        write_atomic(staging / DOCUMENT_FILE, run.model_dump_json(), durable=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _with_image_paths(run, lambda name: str(final.resolve() / name) if name else name)
    replace_directory(staging, final)
    return run


def read_document_run(directory: Path) -> DocumentRun:
    """A stored run with absolute image paths; raises FileNotFoundError/ValueError when absent or damaged."""
    directory = Path(directory)
    run = DocumentRun.model_validate_json((directory / DOCUMENT_FILE).read_text(encoding="utf-8"))
    run.directory = str(directory.resolve())
    _with_image_paths(run, lambda name: str(directory.resolve() / name) if name else name)
    return run


def replace_directory(staging: Path, final: Path) -> None:
    """Move a finished directory into place; an older one is swapped out, then removed.

    Two writers of the same content (the same bytes under two names, built at once) may race:
    whichever lands last wins, and both leave a complete directory.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    retired = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
    try:
        os.replace(final, retired)
    except FileNotFoundError:
        pass
    try:
        os.replace(staging, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # another writer placed the same content first
    shutil.rmtree(retired, ignore_errors=True)
