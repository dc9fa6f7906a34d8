"""A build killed with SIGKILL leaves nothing running and nothing the next build keeps: its
temporary Prefect server dies with it, and the next build removes its `.partial` folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.prefect, pytest.mark.timeout(900)]


def _servers_of(process: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in process.children(recursive=True):
        try:
            if "prefect.server.api.server:create_app" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _wait(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_build_takes_its_server_along_and_the_next_build_clears_its_debris(tmp_path: Path) -> None:
    from testbed.sample_atlas import generate_sample_atlas

    atlas = generate_sample_atlas(tmp_path / "atlas", seed=0, books=["atlas-en"])
    work, registry = tmp_path / "work", tmp_path / "registry"
    env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    command = [str(Path(sys.executable).with_name("mmretinal")), "build", *map(str, atlas.pdfs), "--work-dir", str(work),
               "--registry", str(registry), "--no-progress"]

    build = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(build.pid)
    servers = _wait(lambda: _servers_of(parent), 240, "the build's temporary Prefect server")
    # wait until a document is being built, so that its .partial folder exists
    partial = _wait(lambda: list((work / "documents").glob(".*.partial")), 300, "a .partial document folder")
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
    gone, alive = psutil.wait_procs(servers, timeout=15)
    assert not alive, f"server(s) outlived the killed build: {[p.pid for p in alive]}"
    assert all(p.exists() for p in partial)  # debris until the next build

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not list((work / "documents").glob(".*.partial"))
    assert not list(work.glob("progress/*"))
    assert not [p for p in (work / "documents").rglob(".owner")]
