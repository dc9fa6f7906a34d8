"""Peak memory and time of step 1 on each hostile input, against a good PDF in the same run.

    python bench/robustness.py [--out DIR] [--code CHECKOUT] [--build] [--pages-only]

Every input is extracted by `mmretinal extract` in its own child process; its peak RSS comes
from wait4's resource usage of that child. `--code` runs the children against another checkout
(e.g. the code before a change) on the same corpus; `--build` also times one `mmretinal build`
over the whole corpus and the good PDFs, as the fuzz test does.

A second table times, in this process, the worst of a few generated pages of each crowded kind
(thousands of images, tiles, vector paths, a mix) against an ordinary page (one figure and its
caption); `--pages-only` prints only that table.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.extract import ExtractionError, ExtractOptions, extract_pdf  # noqa: E402
from testbed.hostile_pdfs import CROWDED_PAGES, crowded_page_pdf, write_hostile_corpus  # noqa: E402
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


def time_page(pdf: Path, out: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds to extract a one-page PDF in this process, and what came out."""
    started, cpu = time.perf_counter(), time.process_time()
    try:
        run = extract_pdf(pdf, out, ExtractOptions())
        rejects = sorted({r.reason.split(":")[0] for r in run.rejects if r.kind == "bad_page"})
        what = f"{len(run.pages[0].regions)} regions, {len(run.rejects)} rejects {rejects}"
    except ExtractionError as exc:
        what = f"error: {exc}"
    return time.perf_counter() - started, time.process_time() - cpu, what


def crowded_pages(out: Path, seeds: int) -> None:
    """The worst of `seeds` pages of each crowded kind against the worst ordinary page (wall
    time; CPU time beside it, which other load on the machine disturbs less)."""
    (out / "pages").mkdir(parents=True, exist_ok=True)
    logging.getLogger("pipeline").setLevel(logging.ERROR)  # the limits' warnings: the table shows them

    def worst(images: int, paths: int, side: float, gap: float, name: str) -> tuple[float, float, str]:
        timings = []
        for seed in range(seeds):
            pdf = out / "pages" / f"{name}-{seed}.pdf"
            crowded_page_pdf(pdf, images, paths, side, gap, np.random.default_rng(seed))
            timings.append(time_page(pdf, out / "pages" / "extract"))
        return max(timings)

    worst(0, 0, 5.0, 2.0, "warm-up")  # first calls load libraries: not a page's cost
    ordinary, ordinary_cpu, what = worst(0, 0, 5.0, 2.0, "ordinary")
    print(f"\n{'page (worst of ' + str(seeds) + ')':36} {'seconds':>8} {'x ordinary':>10} {'CPU s':>6} {'x':>6}  what came out")
    print(f"{'ordinary: one figure and its caption':36} {ordinary:8.2f} {1:10.1f} {ordinary_cpu:6.2f} {1:6.1f}  {what}")
    for name, (kind, images, paths, side, gap) in CROWDED_PAGES.items():
        seconds, cpu, what = worst(images, paths, side, gap, name)
        print(
            f"{kind:36} {seconds:8.2f} {seconds / ordinary:10.1f} {cpu:6.2f} {cpu / ordinary_cpu:6.1f}  {what[:100]}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="Working folder (default: a temporary one).")
    parser.add_argument("--code", type=Path, default=REPO, help="Checkout whose code the children run.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds allowed per input.")
    parser.add_argument("--build", action="store_true", help="Also run one build over the whole corpus.")
    parser.add_argument("--pages-only", action="store_true", help="Only time the crowded pages, in this process.")
    parser.add_argument("--seeds", type=int, default=3, help="Pages generated per crowded kind (the worst is shown).")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="robustness-"))
    if out.exists():
        shutil.rmtree(out)
    if args.pages_only:
        crowded_pages(out, args.seeds)
        return
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
    crowded_pages(out, args.seeds)


if __name__ == "__main__":
    main()
