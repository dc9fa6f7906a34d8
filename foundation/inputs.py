"""Checking a batch's inputs before anything reads them.

Hashing or opening a named pipe, a character device (or a link to `/dev/zero`) or a socket
blocks or never ends, so every input is looked at with `stat` first and only regular files go
on. Directories are expanded to the files they hold; a problem with one input is reported with
a one-line reason and the rest of the batch goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, Field

PDF_SUFFIXES: tuple[str, ...] = (".pdf",)


class InputProblem(BaseModel):
    """An input that will not be built, and why."""

    path: str = Field(description="The input as given (or found in a given directory).")
    reason: str = Field(description="One line: why it is not built.")

    def line(self) -> str:
        return f"{self.path}: {self.reason}"


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "not readable (permission denied)"
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links"
    return f"cannot be read ({exc.strerror or exc})"


def check_file(path: Path) -> str | None:
    """Why `path` must not be read as an input file, or None when it is a readable regular file.

    Only `stat` and, for regular files alone, an open for reading are used: nothing that could
    block on a pipe or a device.
    """
    try:
        link = os.lstat(path)
    except OSError as exc:
        return _os_reason(exc)
    try:
        target = os.stat(path)
    except OSError as exc:
        if stat.S_ISLNK(link.st_mode) and exc.errno == errno.ENOENT:
            return f"broken symbolic link (to {os.readlink(path)})"
        return _os_reason(exc)
    kind = _kind(target.st_mode)
    if kind is not None:
        if stat.S_ISLNK(link.st_mode):
            return f"symbolic link to {os.path.realpath(path)}, {kind}, not a regular file"
        return f"{kind}, not a regular file"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        return _os_reason(exc)
    try:
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(after.st_mode):  # swapped for something else between the stat and the open
        return f"{_kind(after.st_mode)}, not a regular file"
    return None


def _matches(name: str, suffixes: tuple[str, ...]) -> bool:
    return name.lower().endswith(suffixes)


def check_inputs(
    inputs: Iterable[Path | str], suffixes: tuple[str, ...] = PDF_SUFFIXES
) -> tuple[list[Path], list[InputProblem]]:
    """(files to build, problems): each input checked, directories expanded to their `suffixes` files.

    A directory contributes its matching entries (sorted, not recursive), each checked like a
    given file, so a FIFO named `x.pdf` inside it is refused too; a directory with none is a
    problem. A file given twice is built once; a hard link to one already taken is reported.
    """
    files: list[Path] = []
    problems: list[InputProblem] = []
    seen: dict[tuple[int, int], Path] = {}

    def take(path: Path) -> None:
        reason = check_file(path)
        if reason is not None:
            problems.append(InputProblem(path=str(path), reason=reason))
            return
        identity = os.stat(path)
        key = (identity.st_dev, identity.st_ino)
        if key in seen:
            if Path(os.path.abspath(seen[key])) != Path(os.path.abspath(path)):
                problems.append(InputProblem(path=str(path), reason=f"the same file as {seen[key]} (built once)"))
            return
        seen[key] = path
        files.append(path)

    for item in inputs:
        path = Path(item)
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:
            is_dir = False
        if not is_dir:
            take(path)
            continue
        try:
            entries = sorted(entry for entry in path.iterdir() if _matches(entry.name, suffixes))
        except OSError as exc:
            problems.append(InputProblem(path=str(path), reason=f"directory {_os_reason(exc)}"))
            continue
        if not entries:
            wanted = " or ".join(f"*{s}" for s in suffixes)
            problems.append(InputProblem(path=str(path), reason=f"empty directory: no {wanted} files in it"))
            continue
        for entry in entries:
            take(entry)
    return files, problems
