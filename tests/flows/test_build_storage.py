"""`mmretinal build` whose registry cannot be written: the build summary still prints, the
publish failure is one line naming the place and the reason, and the exit status is 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.prefect, pytest.mark.timeout(900)]


def test_unwritable_registry_is_one_line_after_the_build_summary(tmp_path: Path) -> None:
    from testbed.sample_atlas import generate_sample_atlas

    atlas = generate_sample_atlas(tmp_path / "atlas", seed=0, books=["atlas-en"])
    registry = tmp_path / "registry"
    registry.write_text("a file where the registry should be")
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mmretinal")), "build", *map(str, atlas.pdfs), "--work-dir", str(tmp_path / "work"),
         "--registry", str(registry), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=800,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "\nbuild " in done.stdout and "pairs: " in done.stdout  # the summary
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "cannot publish mm-retinal" in errors[0] and str(registry) in errors[0] and "pair(s) not published" in errors[0]
    assert "Traceback" not in done.stderr
    assert registry.read_text() == "a file where the registry should be"
