"""Owned temporary folders: a killed process's folders are told from a running one's by the lock
it held, and removed; nothing of a live owner is touched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from foundation.files import OWNER_FILE, OwnedDir, remove_dead_dirs, remove_stale_temp_files

ROOT = Path(__file__).resolve().parents[2]


def _killed_owner(parent: Path) -> Path:
    """A folder whose owner process was SIGKILLed while holding it."""
    code = (
        "import sys, time; from foundation.files import OwnedDir; "
        "d = OwnedDir(sys.argv[1], prefix='.k.', suffix='.partial'); print(d.path, flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(parent)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    path = Path(child.stdout.readline().strip())
    child.kill()
    child.wait()
    return path


def test_folders_of_dead_owners_are_removed_and_live_ones_kept(tmp_path):
    dead = _killed_owner(tmp_path)
    (dead / "images").mkdir()
    live = OwnedDir(tmp_path, prefix=".live.", suffix=".partial")
    old_ownerless = tmp_path / ".old.partial"
    old_ownerless.mkdir()
    os.utime(old_ownerless, (time.time() - 3600, time.time() - 3600))
    young_ownerless = tmp_path / ".young.partial"
    young_ownerless.mkdir()
    other = tmp_path / "kept-folder"
    other.mkdir()

    removed = remove_dead_dirs(tmp_path, ".*.partial")

    assert sorted(removed) == sorted([dead, old_ownerless])
    assert not dead.exists() and not old_ownerless.exists()
    assert live.path.is_dir() and young_ownerless.is_dir() and other.is_dir()
    live.release()
    assert remove_dead_dirs(tmp_path, ".*.partial", grace_seconds=3600) == [live.path]


def test_release_after_a_move_leaves_no_owner_file(tmp_path):
    owned = OwnedDir(tmp_path, prefix=".x.", suffix=".partial")
    (owned.path / "record.json").write_text("{}")
    final = tmp_path / "final"
    owned.path.rename(final)
    owned.release(moved_to=final)
    assert sorted(p.name for p in final.iterdir()) == ["record.json"]
    assert not (final / OWNER_FILE).exists()


def test_stale_temporary_files_are_removed_and_fresh_ones_kept(tmp_path):
    stale = tmp_path / ".manifest.json.abc123.tmp"
    stale.write_text("half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / ".manifest.json.def456.tmp"
    fresh.write_text("being written")
    kept = tmp_path / "manifest.json"
    kept.write_text("{}")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert fresh.exists() and kept.exists()
