"""Review-page fixtures: a tiny atlas PDF with figures and captions, panel PNGs, queued Pairs,
and a real headless Chromium (skipped locally when absent, a failure under CI)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pymupdf
import pytest
from PIL import Image, ImageDraw

from foundation.records import CaptionChoice, Pair

CAPTIONS = [
    ("5-1", "Central retinal vein occlusion with flame haemorrhages.", "视网膜中央静脉阻塞，火焰状出血。"),
    ("5-2", "Fluorescein angiogram: late leakage at the macula.", "荧光素眼底血管造影：黄斑区晚期渗漏。"),
    ("5-3", "OCT shows cystoid macular oedema.", "OCT 显示黄斑囊样水肿。"),
]


@dataclass
class ReviewBuild:
    """A queued build whose pairs point at a real PDF and real PNG panels."""

    pdf_path: Path
    image_dir: Path
    pairs: list[Pair]


def _panel_png(path: Path, seed: int) -> bytes:
    """A small fundus-like disc on black; pixels depend on seed so hashes differ."""
    image = Image.new("RGB", (96, 72), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((12, 4, 84, 68), fill=(170 + seed * 20 % 80, 70 + seed * 13 % 60, 30))
    draw.ellipse((52 - seed * 4, 26, 64 - seed * 4, 38), fill=(250, 220, 150))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path.read_bytes()


def make_review_build(root: Path, book: str = "atlas-a") -> ReviewBuild:
    """One A4 page with three figures and their bilingual captions; each figure is a queued pair
    whose alternatives are the other two captions on the page."""
    image_dir = root / "extraction"
    document = pymupdf.open()
    page = document.new_page(width=595, height=842)
    placements = []
    for index, (figure_id, caption_en, caption_zh) in enumerate(CAPTIONS):
        top = 60 + index * 250
        bbox = (90.0, float(top), 330.0, float(top + 180))
        png = _panel_png(image_dir / book / f"fig{figure_id}.png", index + 1)
        page.insert_image(pymupdf.Rect(bbox), stream=png)
        page.insert_text((90, top + 200), f"Fig. {figure_id} {caption_en}", fontsize=9, fontname="helv")
        page.insert_text((90, top + 214), f"图{figure_id} {caption_zh}", fontsize=9, fontname="china-s")
        placements.append((figure_id, caption_en, caption_zh, bbox, png))
    pdf_path = root / "pdfs" / f"{book}.pdf"
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    document.save(pdf_path)
    document.close()
    pdf_sha = hashlib.sha256(pdf_path.read_bytes()).hexdigest()
    modalities = ["CFP", "FFA", "OCT"]
    pairs = []
    for index, (figure_id, caption_en, caption_zh, bbox, png) in enumerate(placements):
        alternatives = [
            CaptionChoice(figure_id=other_id, caption_en=other_en, caption_zh=other_zh)
            for other_id, other_en, other_zh, *_ in placements
            if other_id != figure_id
        ]
        pairs.append(
            Pair(
                pair_id=f"{book}/{figure_id}/-",
                book=book,
                source_pdf=pdf_path.name,
                source_pdf_sha256=pdf_sha,
                page=1,
                bbox=bbox,
                figure_id=figure_id,
                image_sha256=hashlib.sha256(png).hexdigest(),
                image_file=f"{book}/fig{figure_id}.png",
                caption_en=caption_en,
                caption_zh=caption_zh,
                caption_en_origin="printed",
                caption_zh_origin="printed",
                modality=modalities[index],
                modality_confidence=0.41 + 0.1 * index,
                alignment_score=0.55,
                reasons=["two captions are equally close to this figure", "modality colour cue is weak"],
                alternatives=alternatives,
                review_status="queued",
            )
        )
    return ReviewBuild(pdf_path=pdf_path, image_dir=image_dir, pairs=pairs)


@pytest.fixture
def make_build() -> Callable[..., ReviewBuild]:
    """Factory: `make_build(root, book="atlas-a")` -> ReviewBuild."""
    return make_review_build


@pytest.fixture
def review_build(tmp_path: Path) -> ReviewBuild:
    return make_review_build(tmp_path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app) -> None:  # noqa: ANN001 - any ASGI app
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"review server did not start on {self.url}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server() -> Callable[..., LiveServer]:
    """Factory: `with live_server(app) as server:` serves app on a free 127.0.0.1 port."""
    return LiveServer


def _browser_binaries() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason they are missing."""
    chromium = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    missing = [path for path in (chromium, driver) if not Path(path).is_file()]
    if missing:
        return f"headless Chromium not installed ({', '.join(missing)} missing; apt-get install chromium chromium-driver)"
    return chromium, driver


@pytest.fixture(scope="session")
def chromium_binaries() -> tuple[str, str]:
    found = _browser_binaries()
    if isinstance(found, str):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(found)
        pytest.skip(found)
    return found


@pytest.fixture
def chromium(chromium_binaries: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory of real headless Chromium sessions (each with its own profile); all quit at teardown."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium_path, driver_path = chromium_binaries
    drivers = []

    def start(width: int = 1400, height: int = 1000):
        options = webdriver.ChromeOptions()
        options.binary_location = chromium_path
        for flag in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--window-size={width},{height}",
            f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        ):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # driver.get_log("browser") for console errors
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        driver.set_page_load_timeout(30)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@dataclass
class PrefectServer:
    """A `prefect server start` subprocess: its base URL, API URL and PREFECT_HOME."""

    url: str
    api_url: str
    home: Path


PREFECT_SERVER_START_SECONDS = 180


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server on a free port with its own PREFECT_HOME; the in-process client talks to it."""
    import subprocess
    import sys

    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_URL": f"{url}/api",
    }
    log_path = home / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + PREFECT_SERVER_START_SECONDS
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start on {url}:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        with temporary_settings({PREFECT_API_URL: f"{url}/api"}):
            yield PrefectServer(url=url, api_url=f"{url}/api", home=home)
    finally:
        from prefect.logging.handlers import APILogHandler

        from flows.prefect_env import stop_process

        APILogHandler().flush()  # send buffered run logs while the server still answers
        stop_process(server, 30)
