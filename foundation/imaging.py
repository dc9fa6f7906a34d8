"""One guarded image decoder for every code path that decodes a panel, page or thumbnail.

A PNG of a few hundred kilobytes can hold an image of 20000 × 20000 pixels (1.2 GB as RGB), so
nothing here decodes before it has read the pixel size from the file header. Images over the
pixel limit are refused with `ImageTooLarge` (JPEGs are instead decoded at a reduced scale when
that brings them under it); images that cannot be decoded raise `ImageDecodeError`. Both carry a
one-line reason naming the file. PIL's own decompression-bomb check is not relied upon: it is a
process-wide setting, and its error would escape as a traceback.
"""

from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
"""8000 × 8000: far above an atlas panel or a 600 dpi A4 scan (35 Mpx), 192 MB once decoded as RGB."""

ImageSource = str | os.PathLike[str] | bytes


class ImageLimits(BaseModel):
    """How large an image may be decoded."""

    max_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS,
        gt=0,
        description="Largest image (width × height) decoded at full size; larger ones are refused as too large.",
    )


class ImageDecodeError(ValueError):
    """An image that cannot be decoded; `str()` is one line naming the file and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class ImageTooLarge(ImageDecodeError):
    """An image whose header declares more pixels than the limit allows."""

    def __init__(self, source: str, width: int, height: int, limit: int) -> None:
        self.width, self.height, self.limit = width, height, limit
        super().__init__(source, too_large_reason(width, height, limit))


def too_large_reason(width: int, height: int, limit: int, what: str = "image") -> str:
    """'18000×18000 image (324 Mpx) is over the 64 Mpx limit (max_image_pixels)'."""
    return (
        f"{width}×{height} {what} ({width * height / 1e6:.0f} Mpx) is over the "
        f"{limit / 1e6:.0f} Mpx limit (max_image_pixels)"
    )


def over_limit(width: float, height: float, limit: int) -> bool:
    """Whether a raster of this size would exceed `limit` pixels."""
    return width * height > limit


def _describe(source: ImageSource) -> str:
    return "<image bytes>" if isinstance(source, bytes) else str(source)


def _open_handle(source: ImageSource) -> BinaryIO:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    return open(source, "rb")


def _open_header(handle: BinaryIO, name: str) -> Image.Image:
    """Parse the header with PIL's format plugins, without PIL's global bomb check (we do our own)."""
    Image.init()
    prefix = handle.read(16)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            if accept is not None and not accept(prefix):
                continue
            handle.seek(0)
            return factory(handle, name)
        except Exception:  # noqa: BLE001 - a plugin refusing a damaged header raises anything
            continue
    raise ImageDecodeError(name, "not an image PIL can read (unknown or damaged header)")


def image_size(source: ImageSource) -> tuple[int, int]:
    """(width, height) from the file header alone; nothing is decoded."""
    name = _describe(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ImageDecodeError(name, "no such image file")
    try:
        with _open_handle(source) as handle:
            return _open_header(handle, name).size
    except OSError as exc:
        raise ImageDecodeError(name, f"cannot read image ({exc.strerror or exc})") from exc


def check_image(source: ImageSource, limits: ImageLimits | None = None) -> tuple[int, int]:
    """The header's size, raising `ImageTooLarge` when it is over the limit (JPEG or not)."""
    limits = limits or ImageLimits()
    width, height = image_size(source)
    if over_limit(width, height, limits.max_pixels):
        raise ImageTooLarge(_describe(source), width, height, limits.max_pixels)
    return width, height


def decode_image(
    source: ImageSource,
    *,
    limits: ImageLimits | None = None,
    mode: str = "RGB",
    max_side: int | None = None,
) -> Image.Image:
    """A fully loaded image in `mode`, its longest side at most `max_side` when given.

    The header is read first: an image over `limits.max_pixels` is refused (`ImageTooLarge`)
    unless it is a JPEG whose reduced-scale decode fits; a damaged one raises `ImageDecodeError`.
    """
    limits = limits or ImageLimits()
    name = _describe(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ImageDecodeError(name, "no such image file")
    try:
        with _open_handle(source) as handle:
            image = _open_header(handle, name)
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageDecodeError(name, f"image header declares an empty size {width}×{height}")
            target = _draft_target(width, height, limits.max_pixels, max_side)
            if target is not None and image.format == "JPEG":
                image.draft(mode if mode in ("RGB", "L") else "RGB", target)
            decoded_w, decoded_h = image.size
            if over_limit(decoded_w, decoded_h, limits.max_pixels):
                raise ImageTooLarge(name, width, height, limits.max_pixels)
            image.load()
            converted = image if image.mode == mode else image.convert(mode)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders of damaged data raise many types
        raise ImageDecodeError(name, f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    if max_side is not None and max(converted.size) > max_side:
        converted = converted.copy() if converted is image else converted
        converted.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return converted


def _draft_target(width: int, height: int, max_pixels: int, max_side: int | None) -> tuple[int, int] | None:
    """Size to ask a JPEG decoder for: it decodes at 1/2, 1/4 or 1/8 scale, the smallest
    reduction that still gives at least the size asked for."""
    wanted = None
    if over_limit(width, height, max_pixels):
        for factor in (2, 4, 8):
            if not over_limit(math.ceil(width / factor), math.ceil(height / factor), max_pixels):
                wanted = (math.ceil(width / factor), math.ceil(height / factor))
                break
        else:
            return (math.ceil(width / 8), math.ceil(height / 8))
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        by_side = (max(1, int(width * scale)), max(1, int(height * scale)))
        wanted = by_side if wanted is None or by_side[0] < wanted[0] else wanted
    return wanted


def decode_array(
    source: ImageSource, *, limits: ImageLimits | None = None, max_side: int | None = None
) -> np.ndarray:
    """HxWx3 uint8 RGB pixels through `decode_image`."""
    return np.asarray(decode_image(source, limits=limits, mode="RGB", max_side=max_side))


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
