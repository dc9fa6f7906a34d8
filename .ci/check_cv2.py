"""Exactly one installed distribution may provide `cv2`: the one pyproject.toml pins.

Several wheels ship a `cv2` package (opencv-python, -headless, -contrib, -contrib-headless) and
each overwrites the others' files, leaving a mix of versions. rapidocr asks for
opencv-python-headless, paddlex (the `paddle` extra) for opencv-contrib-python==4.10.0.84 and
checks that name at run time, so the project pins opencv-contrib-python==4.10.0.84 and, after
installing, `--fix` removes every other cv2 distribution and reinstalls the pinned one's files.

Usage: python .ci/check_cv2.py [--fix]    (exit 1 with one line on stderr when it is not so)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def pinned_opencv() -> tuple[str, str]:
    """(distribution, version) of the `opencv-*==X` requirement in pyproject.toml's dependencies."""
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = [d for d in dependencies if d.lower().startswith("opencv")]
    if len(pins) != 1 or "==" not in pins[0]:
        sys.exit(f"error: {PYPROJECT}: expected one pinned opencv-*==VERSION dependency, found {pins}")
    name, version = pins[0].split("==")
    return name.strip().lower(), version.strip()


def cv2_distributions(path: list[str] | None = None) -> dict[str, str]:
    """Installed distributions (on sys.path, or on `path`) that put files into a top-level `cv2`
    package: name -> version."""
    found = {}
    for dist in metadata.distributions(**({"path": path} if path is not None else {})):
        top_level = dist.read_text("top_level.txt") or ""
        files = dist.files or []
        if "cv2" in top_level.split() or any(str(f).startswith("cv2/") for f in files):
            found[dist.metadata["Name"].lower()] = dist.version
    return found


def problem(path: list[str] | None = None) -> str | None:
    name, version = pinned_opencv()
    installed = cv2_distributions(path)
    if len(installed) > 1:
        listing = ", ".join(f"{n}=={v}" for n, v in sorted(installed.items()))
        return f"{len(installed)} distributions provide cv2 ({listing}); only {name}=={version} may (run with --fix)"
    if installed != {name: version}:
        listing = ", ".join(f"{n}=={v}" for n, v in installed.items()) or "none"
        return f"cv2 comes from {listing}, the project pins {name}=={version} (run with --fix)"
    return None


def fix() -> None:
    name, version = pinned_opencv()
    others = [n for n in cv2_distributions() if n != name]
    pip = [sys.executable, "-m", "pip"]
    if others:
        subprocess.run([*pip, "uninstall", "-y", "-q", *others], check=True)
    # Uninstalling another cv2 wheel deleted files the pinned one shares: put them back.
    subprocess.run([*pip, "install", "-q", "--no-deps", "--force-reinstall", f"{name}=={version}"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="Remove other cv2 distributions, reinstall the pinned one.")
    args = parser.parse_args()
    if args.fix and problem():
        fix()
    message = problem()
    if message:
        print(f"error: {sys.executable}: {message}", file=sys.stderr)
        sys.exit(1)
    import cv2  # the files must import, not just be listed

    name, version = pinned_opencv()
    print(f"cv2 {cv2.__version__} from {name}=={version} only")


if __name__ == "__main__":
    main()
