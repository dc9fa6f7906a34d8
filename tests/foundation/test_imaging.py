"""The guarded image decoder: sizes come from the header, bombs are refused before decoding."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from PIL import Image

from flows.artifacts import thumbnail_data_uri
from foundation.imaging import (
    ImageDecodeError,
    ImageLimits,
    ImageTooLarge,
    check_image,
    decode_array,
    decode_image,
    image_size,
)
from testbed.hostile_pdfs import bomb_png


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb-18000.png"
    bomb_png(path, 18000)
    return path


def test_bomb_is_sized_from_its_header_and_refused_with_one_line(bomb: Path) -> None:
    assert bomb.stat().st_size < 2_000_000
    assert image_size(bomb) == (18000, 18000)
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(bomb)
    message = str(caught.value)
    assert "\n" not in message
    assert str(bomb) in message and "18000×18000" in message and "max_image_pixels" in message
    with pytest.raises(ImageTooLarge):
        check_image(bomb)


def test_thumbnail_of_a_bomb_is_skipped_not_raised(bomb: Path, tmp_path: Path, caplog) -> None:
    """Problem 1: PIL's DecompressionBombError escaped the thumbnail and sank the whole build."""
    caplog.set_level(logging.WARNING)
    assert thumbnail_data_uri(bomb) is None
    assert any("18000×18000" in record.getMessage() for record in caplog.records)
    small = tmp_path / "panel.png"
    Image.new("RGB", (300, 200), (10, 120, 30)).save(small)
    uri = thumbnail_data_uri(small)
    assert uri is not None and uri.startswith("data:image/png;base64,")


def test_large_jpeg_is_decoded_downscaled_and_max_side_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "scan.jpg"
    Image.new("RGB", (4000, 3000), (200, 30, 30)).save(path, quality=80)
    limits = ImageLimits(max_pixels=4_000_000)  # 12 Mpx JPEG: decoded at 1/2 scale to fit
    image = decode_image(path, limits=limits)
    assert image.size == (2000, 1500)
    assert decode_image(path, max_side=96).size == (96, 72)
    png = tmp_path / "big.png"
    Image.new("L", (2100, 2000), 255).save(png)
    with pytest.raises(ImageTooLarge):
        decode_image(png, limits=limits)  # a PNG cannot be decoded at reduced scale: refused
    assert decode_array(png, max_side=50).shape == (48, 50, 3)


@pytest.mark.parametrize(
    "payload",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"],
    ids=["empty", "text", "cut-header"],
)
def test_damaged_or_foreign_bytes_raise_one_typed_error(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "panel.png"
    path.write_bytes(payload)
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_truncated_pixel_data_is_a_decode_error(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 60).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        decode_image(path)
    with pytest.raises(ImageDecodeError, match="no such image file"):
        decode_image(tmp_path / "missing.png")
