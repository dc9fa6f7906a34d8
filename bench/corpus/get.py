"""Extract the corpus PDFs from local clones of their repositories, checking every digest.

    python bench/corpus/get.py CLONES_DIR --out ~/mmr-corpus

CLONES_DIR holds one clone per repository, as `owner+name/` (with `repo/`, `repo/.git` or `.git` inside, or
bare), `owner/name/` or `name/`. Each document of `sources.jsonl` is read with `git show
COMMIT:PATH`, its sha256 compared with the one recorded, and written to `OUT/<name>.pdf` (through a
temporary file, so nothing half-written is left). A file whose digest is in the reserved list
(`../shared/reserved.sha256`, or `--reserved`) is refused and never written. Problems are one line
each (`error: NAME: reason`); the other documents go on. Repositories missing from CLONES_DIR are
listed at the end with the `git clone` line that gets them. Exit status 1 when anything is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.corpus.corpus import RESERVED, SOURCES, CorpusError, read_sources, reserved_digests  # noqa: E402


def git_dir(clones: Path, repository: str) -> Path | None:
    """The git directory of a repository's clone under `clones`, or None."""
    owner, _, name = repository.partition("/")
    for folder in (clones / f"{owner}+{name}", clones / owner / name, clones / name):
        for candidate in (folder / "repo" / ".git", folder / "repo", folder / ".git", folder):
            if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
                return candidate
    return None


def read_blob(git: Path, commit: str, path: str) -> bytes:
    """The file at `commit:path`; a path with accents is also tried in the other Unicode normal form
    (trees committed on macOS hold decomposed names)."""
    message: list[str] = []
    for name in dict.fromkeys([path, unicodedata.normalize("NFC", path), unicodedata.normalize("NFD", path)]):
        done = subprocess.run(["git", f"--git-dir={git}", "show", f"{commit}:{name}"], capture_output=True, check=False)
        if done.returncode == 0:
            return done.stdout
        message = message or done.stderr.decode("utf-8", "replace").strip().splitlines()
    raise LookupError(message[-1] if message else "git show failed")


def write_atomic(target: Path, data: bytes) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def get_one(source: dict, clones: Path, out: Path, reserved: set[str]) -> str:
    """'ok', 'present' or 'missing-repo'; raises ValueError/LookupError with the reason otherwise."""
    expected = source["sha256"].lower()
    if expected in reserved:
        raise ValueError("its digest is reserved for independent checks; not extracted")
    target = out / f"{source['name']}.pdf"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
        return "present"
    git = git_dir(clones, source["repository"])
    if git is None:
        return "missing-repo"
    data = read_blob(git, source["commit"], source["path"])
    digest = hashlib.sha256(data).hexdigest()
    if digest in reserved:
        raise ValueError("the file's digest is reserved for independent checks; not extracted")
    if digest != expected:
        raise ValueError(f"sha256 {digest[:12]}… differs from the recorded {expected[:12]}…; not written")
    write_atomic(target, data)
    return "ok"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clones", type=Path, help="Folder holding local clones of the source repositories.")
    parser.add_argument("--out", type=Path, required=True, help="Corpus folder to write <name>.pdf into (outside the repository).")
    parser.add_argument("--sources", type=Path, default=SOURCES)
    parser.add_argument("--reserved", type=Path, default=RESERVED, help="Digests never to extract (default %(default)s).")
    arguments = parser.parse_args(argv)
    try:
        sources = read_sources(arguments.sources)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not arguments.clones.is_dir():
        print(f"error: {arguments.clones}: not a folder", file=sys.stderr)
        return 2
    reserved = reserved_digests(arguments.reserved)
    arguments.out.mkdir(parents=True, exist_ok=True)
    counts = {"ok": 0, "present": 0, "missing-repo": 0, "failed": 0}
    missing: dict[str, str] = {}
    for source in sources:
        try:
            status = get_one(source, arguments.clones, arguments.out, reserved)
        except (ValueError, LookupError, OSError) as exc:
            print(f"error: {source['name']}: {exc}", file=sys.stderr)
            counts["failed"] += 1
            continue
        counts[status] += 1
        if status == "missing-repo":
            missing[source["repository"]] = source["commit"]
    for repository in sorted(missing):
        print(f"missing clone: {repository}  (git clone https://github.com/{repository} {arguments.clones}/{repository.replace('/', '+')})",
              file=sys.stderr)
    print(f"{counts['ok']} extracted, {counts['present']} already present, {counts['missing-repo']} without a clone, "
          f"{counts['failed']} refused or failed; corpus in {arguments.out}")
    return 1 if counts["failed"] or counts["missing-repo"] else 0


if __name__ == "__main__":
    sys.exit(main())
