"""Builders for small real PNG panels and the Pair records that point at them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from foundation.records import Pair

PairFactory = Callable[..., Pair]


def write_png(path: Path, seed: int, size: tuple[int, int] = (12, 9)) -> str:
    """Write a tiny PNG whose pixels depend on `seed`; return its SHA-256."""
    image = Image.new("RGB", size)
    image.putdata(
        [((seed * 37 + i * 11) % 256, (seed * 91 + i * 7) % 256, (seed * 13 + i) % 256) for i in range(size[0] * size[1])]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def make_pair(tmp_path: Path) -> PairFactory:
    """Factory: `make_pair("book-a", "3-12", "A", seed=1, **overrides)` -> Pair with its PNG on disk."""
    extraction_dir = tmp_path / "extraction"

    def factory(
        book: str = "book-a",
        figure_id: str = "3-12",
        panel: str | None = "A",
        *,
        seed: int = 1,
        **overrides,
    ) -> Pair:
        image_file = extraction_dir / book / f"fig{figure_id}{panel or ''}-s{seed}.png"
        sha = write_png(image_file, seed)
        fields = dict(
            pair_id=f"{book}/{figure_id}/{panel or '-'}",
            book=book,
            source_pdf=f"{book}.pdf",
            source_pdf_sha256=hashlib.sha256(book.encode()).hexdigest(),
            page=7,
            bbox=(10.0, 20.5, 200.0, 180.25),
            figure_id=figure_id,
            panel=panel,
            image_sha256=sha,
            image_file=str(image_file),
            caption_en=f"Central retinal vein occlusion. Panel {panel} of figure {figure_id}.",
            caption_zh=f"视网膜中央静脉阻塞。图{figure_id}{panel or ''}",
            caption_en_origin="printed",
            caption_zh_origin="machine",
            translation_engine="argos-zh-en 1.9",
            modality="CFP",
            modality_confidence=0.9,
            alignment_score=0.95,
            reasons=["caption below figure"],
            review_status="auto_accepted",
        )
        fields.update(overrides)
        return Pair(**fields)

    return factory


@pytest.fixture
def registry_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty registry root; the store env var is cleared so the default store is used."""
    monkeypatch.delenv("MMRETINAL_IMAGE_STORE", raising=False)
    monkeypatch.delenv("MMRETINAL_REGISTRY", raising=False)
    root = tmp_path / "registry"
    root.mkdir()
    return root


CONFIG = {"align": {"max_distance": 40, "min_score": 0.5}, "ocr": {"engine": "rapidocr"}}


@pytest.fixture
def do_publish(registry_root: Path):
    """Publish pairs into `registry_root` with a fixed config, inputs and pipeline version."""
    from data_manifests.registry import publish

    def run(pairs: list[Pair], **overrides):
        kwargs = dict(
            config=CONFIG,
            input_pdfs={f"{p.book}.pdf": p.source_pdf_sha256 for p in pairs},
            pipeline_version="0.1.0",
        )
        kwargs.update(overrides)
        return publish(pairs, "mm-retinal", registry_root, **kwargs)

    return run


@pytest.fixture
def png_writer() -> Callable[..., str]:
    """`png_writer(path, seed)` writes a tiny PNG and returns its SHA-256."""
    return write_png


@pytest.fixture
def publish_config() -> dict:
    return CONFIG
