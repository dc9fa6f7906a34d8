"""Peak memory and time of step 1 on each hostile input, against a good PDF in the same run.

    python bench/robustness.py [--out DIR] [--code CHECKOUT] [--build]

Every input is extracted by `mmretinal extract` in its own child process; its peak RSS comes
from wait4's resource usage of that child. `--code` runs the children against another checkout
(e.g. the code before a change) on the same corpus; `--build` also times one `mmretinal build`
over the whole corpus and the good PDFs, as the fuzz test does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed.hostile_pdfs import write_hostile_corpus  # noqa: E402
from testbed.sample_atlas import generate_sample_atlas  # noqa: E402

GOOD_BOOKS = ["atlas-en", "atlas-zh-bilingual"]


def run_child(args: list[str], code: Path, timeout: float) -> tuple[int | None, float, float, str]:
    """(exit status or None on timeout, seconds, peak RSS in MiB, last output line) of one command."""
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "ARGOS_CHUNK_TYPE": "SPACY",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    log = tempfile.TemporaryFile()
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=code
    )
    deadline = started + timeout
    status = None
    while time.monotonic() < deadline:
        pid, raw_status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            status = os.waitstatus_to_exitcode(raw_status)
            break
        time.sleep(0.05)
    else:
        child.kill()
        _, _, usage = os.wait4(child.pid, 0)
    child.returncode = status if status is not None else -9
    seconds = time.monotonic() - started
    log.seek(0)
    lines = [line for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return status, seconds, usage.ru_maxrss / 1024, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Working folder (default: a temporary one).")
    parser.add_argument("--code", type=Path, default=REPO, help="Checkout whose code the children run.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds allowed per input.")
    parser.add_argument("--build", action="store_true", help="Also run one build over the whole corpus.")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="robustness-"))
    if out.exists():
        shutil.rmtree(out)
    atlas = generate_sample_atlas(out / "atlas", seed=0, books=GOOD_BOOKS)
    corpus = write_hostile_corpus(out / "hostile", atlas.pdfs, seed=0)
    inputs = [(pdf.name, "good PDF (baseline)", pdf) for pdf in atlas.pdfs]
    inputs += [(entry.name, entry.kind, out / "hostile" / entry.name) for entry in corpus]

    print(f"code: {args.code}")
    print(f"{'input':32} {'what':26} {'exit':>4} {'seconds':>8} {'peak MiB':>9} {'x time':>7} {'x RSS':>6}  last line")
    baseline: tuple[float, float] | None = None
    for name, kind, path in inputs:
        status, seconds, rss, last = run_child(["extract", str(path), "-o", str(out / "extract")], args.code, args.timeout)
        if baseline is None:
            baseline = (seconds, rss)
        exit_text = "kill" if status is None else str(status)
        print(
            f"{name:32} {kind[:26]:26} {exit_text:>4} {seconds:8.2f} {rss:9.0f} {seconds / baseline[0]:7.2f}"
            f" {rss / baseline[1]:6.2f}  {last[:90]}",
            flush=True,
        )
    if args.build:
        command = [
            "build", str(out / "hostile"), *map(str, atlas.pdfs),
            "--work-dir", str(out / "work"), "--registry", str(out / "registry"),
        ]
        status, seconds, rss, last = run_child(command, args.code, 3 * args.timeout)
        print(f"\nbuild of the whole batch: exit {status}, {seconds:.1f} s, peak RSS {rss:.0f} MiB; {last[:120]}")


if __name__ == "__main__":
    main()
