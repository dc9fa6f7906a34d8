"""The review web page: researchers clear the queue of uncertain image-caption pairs in a browser.

Server-rendered (FastAPI + Jinja2); plain HTML forms do every action, a small script adds
keyboard shortcuts. Each form carries the item version the page showed, so a decision taken
by another reviewer in between turns into a 409 page instead of being overwritten silently.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from foundation.files import sha256_file, write_atomic
from foundation.imaging import DEFAULT_MAX_IMAGE_PIXELS, ImageDecodeError, ImageLimits, decode_image, encode_png, image_size
from foundation.records import CaptionChoice, Pair
from curation.review_store import (
    DECISIVE_ACTIONS,
    MODALITIES,
    ItemState,
    NothingToUndo,
    QueueItem,
    ReviewConflict,
    ReviewStore,
    UnknownItem,
)

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
TOKEN_COOKIE = "mmretinal_review_token"
REVIEWER_COOKIE = "mmretinal_reviewer"

ACTION_LABELS = {
    "accept": "Accepted",
    "reject_not_pair": "Rejected: not a pair",
    "reject_not_retinal": "Rejected: not retinal",
    "choose_caption": "Caption chosen",
    "edit_caption": "Caption edited",
    "set_modality": "Modality set",
    "undo": "Undo",
}


class ReviewAppSettings(BaseModel):
    """How the review page finds files and renders pages."""

    token: str | None = Field(None, description="Shared secret every request must carry (cookie or ?token=); None: open.")
    pdf_roots: list[Path] = Field(default_factory=list, description="Folders searched for the source PDFs (by file name).")
    image_roots: list[Path] = Field(default_factory=list, description="Folders that relative Pair.image_file paths are under.")
    cache_dir: Path | None = Field(None, description="Where rendered page PNGs are cached; default: next to the database.")
    page_dpi: int = Field(100, ge=36, le=300, description="Resolution of the rendered source pages.")
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, gt=0, description="Panels with more pixels than this are refused, not decoded."
    )
    panel_max_side: int = Field(
        2048, ge=64, description="Panels with a longer side are served downscaled to it (cached), not as they are."
    )
    page_max_pixels: int = Field(
        16_000_000, gt=0, description="Largest page rendering; a larger page is rendered at the resolution that fits."
    )
    default_reviewer: str | None = Field(None, description="Reviewer name used until the page sets one; default: OS user.")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


class PageGeometry(BaseModel):
    """Size of a rendered page and where a box lands on it, in percent of the page."""

    width: float
    height: float
    rotation_matrix: tuple[float, float, float, float, float, float]

    def box_percent(self, bbox: Sequence[float]) -> dict[str, float]:
        """Map a box in unrotated page space onto the rendered (rotated) page."""
        a, b, c, d, e, f = self.rotation_matrix
        x0, y0, x1, y1 = bbox
        xs, ys = [], []
        for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
            xs.append(a * x + c * y + e)
            ys.append(b * x + d * y + f)
        return {
            "left": max(0.0, 100 * min(xs) / self.width),
            "top": max(0.0, 100 * min(ys) / self.height),
            "width": min(100.0, 100 * (max(xs) - min(xs)) / self.width),
            "height": min(100.0, 100 * (max(ys) - min(ys)) / self.height),
        }


MISS_LABELS = {
    "caption_without_figure": "a caption whose figure was not found (the region shown is where it most likely is)",
    "figure_without_caption": "a figure region that found no caption",
    "dropped_image": "an image dropped as decoration",
}
"""How the page names each kind of possible miss."""


class SourceFiles:
    """Finds source PDFs and panel images and renders (and caches) PDF pages as PNG."""

    def __init__(self, settings: ReviewAppSettings, cache_dir: Path) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        self._verified: dict[tuple[str, float, int], str] = {}
        self._geometry: dict[tuple[str, int], PageGeometry] = {}
        self._lock = threading.Lock()

    def find_pdf(self, pair: Pair, extra_roots: Sequence[Path] = ()) -> Path | None:
        """The PDF whose bytes match pair.source_pdf_sha256, searched by name under the roots."""
        name = Path(pair.source_pdf)
        candidates = [name] if name.is_absolute() else []
        for root in [*self.settings.pdf_roots, *extra_roots]:
            candidates += [Path(root) / name, Path(root) / name.name]
        for candidate in candidates:
            if candidate.is_file() and self._sha256_cached(candidate) == pair.source_pdf_sha256:
                return candidate
        return None

    def _sha256_cached(self, path: Path) -> str:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime, stat.st_size)
        with self._lock:
            if key not in self._verified:
                self._verified[key] = sha256_file(path)
            return self._verified[key]

    def find_image(self, pair: Pair, extra_roots: Sequence[Path] = ()) -> Path | None:
        """The panel PNG: absolute path as given, or relative to one of the image roots."""
        image = Path(pair.image_file)
        if image.is_absolute():
            return image if image.is_file() else None
        for root in [*self.settings.image_roots, *extra_roots]:
            root_path = Path(root).resolve()
            candidate = (root_path / image).resolve()
            if candidate.is_relative_to(root_path) and candidate.is_file():
                return candidate
        return None

    def panel_file(self, image_path: Path) -> Path:
        """The panel to send to the browser: the file itself when it is small, else a downscaled
        copy (cached). Raises ImageDecodeError (one line) for an image too large or not an image."""
        limits = ImageLimits(max_pixels=self.settings.max_image_pixels)
        width, height = image_size(image_path)
        if max(width, height) <= self.settings.panel_max_side:
            return image_path
        stat = image_path.stat()
        key = f"{image_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.settings.panel_max_side}"
        target = self.cache_dir / "panels" / f"{hashlib.sha256(key.encode()).hexdigest()}.png"
        if target.is_file():
            return target
        image = decode_image(image_path, limits=limits, max_side=self.settings.panel_max_side)
        write_atomic(target, encode_png(image))
        logger.info("panel %s (%d×%d) served downscaled from %s", image_path, width, height, target)
        return target

    def page_dpi_for(self, page_width: float, page_height: float) -> int:
        """The configured page resolution, lowered so a huge page stays within page_max_pixels."""
        dpi = self.settings.page_dpi
        pixels = (page_width * dpi / 72) * (page_height * dpi / 72)
        if pixels <= self.settings.page_max_pixels:
            return dpi
        return max(1, int(dpi * (self.settings.page_max_pixels / pixels) ** 0.5))

    def geometry(self, pdf_path: Path, sha256: str, page_number: int) -> PageGeometry:
        key = (sha256, page_number)
        with self._lock:
            cached = self._geometry.get(key)
        if cached is not None:
            return cached
        import pymupdf

        with pymupdf.open(pdf_path) as document:
            page = document[page_number - 1]
            matrix = page.rotation_matrix
            geometry = PageGeometry(
                width=page.rect.width,
                height=page.rect.height,
                rotation_matrix=(matrix.a, matrix.b, matrix.c, matrix.d, matrix.e, matrix.f),
            )
        with self._lock:
            self._geometry[key] = geometry
        return geometry

    def page_png(self, pdf_path: Path, sha256: str, page_number: int) -> Path:
        """Rendered page PNG, cached on disk by PDF hash, page and resolution."""
        target = self.cache_dir / f"{sha256}-p{page_number}-{self.settings.page_dpi}dpi.png"
        if target.is_file():
            return target
        import pymupdf

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with pymupdf.open(pdf_path) as document:
            if not 1 <= page_number <= document.page_count:
                raise ValueError(f"{pdf_path}: page {page_number} out of range 1..{document.page_count}")
            page = document[page_number - 1]
            pixmap = page.get_pixmap(dpi=self.page_dpi_for(page.rect.width, page.rect.height))
            data = pixmap.tobytes("png")
        write_atomic(target, data)
        logger.debug("rendered %s page %d -> %s", pdf_path, page_number, target)
        return target


def _paths(values: Any) -> list[Path]:
    if not values:
        return []
    if isinstance(values, (str, os.PathLike)):
        values = [values]
    return [Path(value) for value in values]


def _same_origin(request: Request) -> bool:
    """Reject cross-site form posts: a browser sends Origin on POST, it must be this server."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def create_review_app(
    store: ReviewStore,
    *,
    token: str | None = None,
    pdf_roots: Sequence[str | os.PathLike[str]] = (),
    image_roots: Sequence[str | os.PathLike[str]] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    page_dpi: int = 100,
    default_reviewer: str | None = None,
    source_lookup: Callable[[Pair], Path | None] | None = None,
) -> FastAPI:
    """Build the review app over a store.

    `source_lookup`, when given, is asked first for a pair's source PDF (e.g. a content-addressed
    PDF store); otherwise PDFs are searched by name under pdf_roots and under the "pdf_roots"
    recorded with the build, and verified against Pair.source_pdf_sha256.
    """
    settings = ReviewAppSettings(
        token=token or None,
        pdf_roots=_paths(pdf_roots),
        image_roots=_paths(image_roots),
        cache_dir=Path(cache_dir) if cache_dir else None,
        page_dpi=page_dpi,
        default_reviewer=default_reviewer,
    )
    files = SourceFiles(settings, settings.cache_dir or store.db_path.parent / ".review-page-cache")
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.globals["action_labels"] = ACTION_LABELS
    fallback_reviewer = settings.default_reviewer or _os_user()

    app = FastAPI(title="MM-Retinal review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.settings = settings
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.middleware("http")
    async def require_token(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette signature
        if request.method == "POST" and not _same_origin(request):
            return HTMLResponse("Cross-site form posts are refused.", status_code=403)
        if settings.token is None:
            return await call_next(request)
        expected = settings.token.encode("utf-8")
        from_query = request.query_params.get("token")
        from_cookie = request.cookies.get(TOKEN_COOKIE)
        query_ok = from_query is not None and hmac.compare_digest(from_query.encode("utf-8"), expected)
        cookie_ok = from_cookie is not None and hmac.compare_digest(from_cookie.encode("utf-8"), expected)
        if not (query_ok or cookie_ok):
            return HTMLResponse(
                "<!doctype html><title>Token required</title><p>This review server needs its access token: "
                "open the link printed by <code>mmretinal review serve</code> (it ends in <code>?token=…</code>).</p>",
                status_code=401,
            )
        response = await call_next(request)
        if query_ok and not cookie_ok:
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    # the reviewer cookie holds the name percent-encoded as UTF-8: a header is Latin-1, a name is any text
    def reviewer_of(request: Request, form_value: str | None = None) -> str:
        remembered = unquote(request.cookies.get(REVIEWER_COOKIE) or "")
        for value in (form_value, request.query_params.get("reviewer"), remembered):
            if value and value.strip():
                return value.strip()[:80]
        return fallback_reviewer

    def remember_reviewer(response: Response, request: Request, reviewer: str) -> Response:
        encoded = quote(reviewer, safe="")
        if request.cookies.get(REVIEWER_COOKIE) != encoded:
            response.set_cookie(REVIEWER_COOKIE, encoded, samesite="strict", max_age=365 * 24 * 3600)
        return response

    def build_roots(build_id: str, key: str) -> list[Path]:
        return _paths(store.build_source(build_id).get(key))

    def load_item(item_key: str, build_id: str) -> QueueItem:
        try:
            return store.item(item_key, build_id)
        except UnknownItem:
            raise HTTPException(404, f"item {item_key} is not in build {build_id}") from None

    def locate_pdf(item: QueueItem) -> Path | None:
        if source_lookup is not None:
            found = source_lookup(item.pair)
            if found is not None:
                return Path(found)
        return files.find_pdf(item.pair, build_roots(item.build_id, "pdf_roots"))

    def item_url(build_id: str, item_key: str, **params: str) -> str:
        query = {"build": build_id, **{k: v for k, v in params.items() if v}}
        return f"/item/{item_key}?{urlencode(query)}"

    def next_undecided(items: Sequence[QueueItem | ItemState], after_position: int) -> QueueItem | ItemState | None:
        undecided = [item for item in items if not item.decided]
        later = [item for item in undecided if item.position > after_position]
        return (later or undecided or [None])[0]

    @app.get("/", response_class=HTMLResponse)
    def list_builds(request: Request) -> Response:
        reviewer = reviewer_of(request)
        response = templates.TemplateResponse(
            request, "review_builds.html", {"builds": store.list_builds(), "reviewer": reviewer}
        )
        return remember_reviewer(response, request, reviewer)

    @app.get("/queue", response_class=HTMLResponse)
    def show_queue(request: Request, build: str, show: str = "all") -> Response:
        info = store.get_build(build)
        if info is None:
            raise HTTPException(404, f"unknown build {build}")
        items = store.queue(build)
        shown = [item for item in items if show == "all" or not item.decided]
        first = next_undecided(items, -1)
        reviewer = reviewer_of(request)
        response = templates.TemplateResponse(
            request,
            "review_queue.html",
            {
                "build": info,
                "items": shown,
                "show": show,
                "decided": sum(1 for item in items if item.decided),
                "total": len(items),
                "first_undecided": first,
                "item_url": item_url,
                "reviewer": reviewer,
                "miss_labels": MISS_LABELS,
            },
        )
        return remember_reviewer(response, request, reviewer)

    @app.get("/next")
    def go_next(build: str, after: int = -1, last: str = "") -> Response:
        items = store.queue_states(build)
        target = next_undecided(items, after)
        if target is None:
            return RedirectResponse(f"/queue?{urlencode({'build': build})}", status_code=303)
        return RedirectResponse(item_url(build, target.item_key, last=last), status_code=303)

    @app.get("/item/{item_key}", response_class=HTMLResponse)
    def show_item(request: Request, item_key: str, build: str, last: str = "") -> Response:
        item = load_item(item_key, build)
        items = store.queue_states(build)
        index = next(i for i, candidate in enumerate(items) if candidate.item_key == item_key)
        previous_item = items[index - 1] if index > 0 else None
        next_item = items[index + 1] if index + 1 < len(items) else None
        undo_target: QueueItem | ItemState | None = None
        if item.decision is not None:
            undo_target = item
        elif last and last != item_key:
            candidate = next((c for c in items if c.item_key == last), None)
            if candidate is not None and candidate.has_decision:
                undo_target = candidate
        pdf_path = locate_pdf(item)
        highlight = None
        if pdf_path is not None:
            geometry = files.geometry(pdf_path, item.pair.source_pdf_sha256, item.pair.page)
            highlight = geometry.box_percent(item.pair.bbox)
        image_path = files.find_image(item.pair, build_roots(build, "image_roots"))
        reviewer = reviewer_of(request)
        response = templates.TemplateResponse(
            request,
            "review_item.html",
            {
                "build": store.get_build(build, with_progress=False),
                "item": item,
                "pair": item.pair,
                "res": item.resolution,
                "modalities": MODALITIES,
                "current_modality": item.resolution.modality or item.pair.modality,
                "decided": sum(1 for c in items if c.decided),
                "total": len(items),
                "index": index,
                "previous_item": previous_item,
                "next_item": next_item,
                "undo_target": undo_target,
                "last": last,
                "pdf_found": pdf_path is not None,
                "highlight": highlight,
                "image_found": image_path is not None,
                "history": store.history(item_key),
                "item_url": item_url,
                "reviewer": reviewer,
                "miss_labels": MISS_LABELS,
            },
        )
        return remember_reviewer(response, request, reviewer)

    @app.get("/item/{item_key}/page.png")
    def page_image(item_key: str, build: str) -> Response:
        item = load_item(item_key, build)
        pdf_path = locate_pdf(item)
        if pdf_path is None:
            raise HTTPException(404, f"source PDF {item.pair.source_pdf} not found under the PDF roots")
        try:
            png = files.page_png(pdf_path, item.pair.source_pdf_sha256, item.pair.page)
        except (ValueError, RuntimeError) as exc:
            logger.warning("cannot render %s page %d: %s", pdf_path, item.pair.page, exc)
            raise HTTPException(404, str(exc)) from exc
        return FileResponse(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/item/{item_key}/panel.png")
    def panel_image(item_key: str, build: str) -> Response:
        item = load_item(item_key, build)
        image_path = files.find_image(item.pair, build_roots(build, "image_roots"))
        if image_path is None:
            raise HTTPException(404, f"panel image {item.pair.image_file} not found under the image roots")
        try:
            served = files.panel_file(image_path)
        except ImageDecodeError as exc:
            logger.warning("panel not shown: %s", exc)
            raise HTTPException(422, f"panel image not shown: {exc.reason}") from exc
        return FileResponse(served, headers={"Cache-Control": "private, max-age=86400"})

    @app.post("/item/{item_key}/decide")
    def decide(
        request: Request,
        item_key: str,
        build: str = Form(...),
        action: str = Form(...),
        expected_version: int = Form(...),
        reviewer: str = Form(""),
        caption_en: str | None = Form(None),
        caption_zh: str | None = Form(None),
        modality: str | None = Form(None),
        choice: int | None = Form(None),
        return_to: str = Form(""),
        last: str = Form(""),
    ) -> Response:
        item = load_item(item_key, build)
        who = reviewer_of(request, reviewer)
        chosen: CaptionChoice | None = None
        if action == "choose_caption":
            if choice is None or not 1 <= choice <= len(item.pair.alternatives):
                raise HTTPException(400, f"choice must be 1..{len(item.pair.alternatives)}")
            chosen = item.pair.alternatives[choice - 1]
        try:
            decision = store.decide(
                item_key,
                action,
                who,
                caption_en=caption_en if action == "edit_caption" else None,
                caption_zh=caption_zh if action == "edit_caption" else None,
                modality=modality if action == "set_modality" else None,
                chosen=chosen,
                expected_version=expected_version,
            )
        except ReviewConflict as conflict:
            fields = {
                "build": build, "action": action, "reviewer": who, "caption_en": caption_en,
                "caption_zh": caption_zh, "modality": modality, "choice": choice, "return_to": return_to,
                "last": last,
            }
            response = templates.TemplateResponse(
                request,
                "review_conflict.html",
                {
                    "build": store.get_build(build, with_progress=False),
                    "item": store.item(item_key, build),
                    "conflict": conflict,
                    "fields": {k: v for k, v in fields.items() if v is not None},
                    "item_url": item_url,
                    "reviewer": who,
                },
                status_code=409,
            )
            return remember_reviewer(response, request, who)
        except NothingToUndo as exc:
            raise HTTPException(409, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc
        logger.info("%s: %s on %s by %s (v%d)", build, action, item_key[:12], who, decision.version)
        if action in DECISIVE_ACTIONS and return_to != "item":
            target = next_undecided(store.queue_states(build), item.position)
            url = (
                item_url(build, target.item_key, last=item_key)
                if target is not None
                else f"/queue?{urlencode({'build': build, 'done': '1'})}"
            )
        elif action == "undo":
            url = item_url(build, item_key)
        else:
            url = item_url(build, item_key, last=last)
        return remember_reviewer(RedirectResponse(url, status_code=303), request, who)

    return app
