"""A seeded corpus of hostile inputs: what a careless library or a hostile tester feeds a build.

Image bombs are written as raw PDF objects (a Flate stream of blank rows), so making a
20000 × 20000 image costs a few megabytes here, never the decoded 400 MB. Each entry says what
a build should do with it: refuse it with a reason (`expect_reason`), or build it while logging
a skip (`expect_log`), or only finish (byte flips may or may not survive repair).
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pymupdf
from pydantic import BaseModel, Field

from pipeline.extract import ExtractOptions

BOMB_SIDES = (12000, 18000, 20000)
BLANK_PAGES = 3000
CROWDED_PAGES = {
    # name: (what, images, paths, side, gap) of `crowded_page_pdf`
    "tiny-images": ("4000 tiny images", 4000, 0, 5.0, 1.5),
    "dropped-images": ("4000 small images, far apart", 4000, 0, 30.0, 20.0),
    "small-panels": ("4000 small images in a grid", 4000, 0, 30.0, 4.0),
    "abutting-tiles": ("4000 abutting image tiles", 4000, 0, 6.0, 0.0),
    "vector-paths": ("5000 vector paths", 0, 5000, 4.0, 8.0),
    "many-vector-paths": ("12000 vector paths", 0, 12000, 4.0, 8.0),
    "images-and-paths": ("2500 images + 2500 paths", 2500, 2500, 5.0, 2.0),
}


class HostileInput(BaseModel):
    """One file of the corpus and what a build must say about it."""

    name: str = Field(description="File name inside the corpus directory.")
    kind: str = Field(description="What is hostile about it, e.g. 'image bomb 18000²'.")
    expect_reason: str | None = Field(
        None, description="Text the one-line reason for refusing or failing it must contain."
    )
    expect_log: str | None = Field(None, description="Text a log line about it must contain (built, part skipped).")
    special: bool = Field(False, description="Not a regular file (FIFO, link to a device): never to be opened.")


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF file from numbered object bodies (object 1 is the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _stream(dictionary: str, data: bytes) -> bytes:
    return f"<< {dictionary} /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream"


def _blank_flate(width: int, height: int) -> bytes:
    """Deflated white 8-bit grey rows, compressed row by row so memory stays small."""
    packer = zlib.compressobj(9)
    row = b"\xff" * width
    chunks = [packer.compress(row) for _ in range(height)]
    chunks.append(packer.flush())
    return b"".join(chunks)


def image_bomb_pdf(path: Path, side: int) -> None:
    """One A4 page: a caption and one side × side image placed as a 400-point figure."""
    text = f"BT /F1 11 Tf 72 300 Td (Figure 1-1. Fundus photograph of the right eye, {side} pixels square.) Tj ET"
    content = f"q 400 0 0 400 97 380 cm /Im1 Do Q\n{text}".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /XObject << /Im1 5 0 R >> /Font << /F1 6 0 R >> >> >>",
        _stream("", content),
        _stream(
            f"/Type /XObject /Subtype /Image /Width {side} /Height {side} /ColorSpace /DeviceGray"
            " /BitsPerComponent 8 /Filter /FlateDecode",
            _blank_flate(side, side),
        ),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    path.write_bytes(_pdf(objects))


def blank_pages_pdf(path: Path, pages: int) -> None:
    """`pages` empty A4 pages sharing one (empty) content stream."""
    first_page = 4
    kids = " ".join(f"{first_page + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        _stream("", b""),
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 3 0 R >>"] * pages
    path.write_bytes(_pdf(objects))


def mediabox_pdf(path: Path, width: float, height: float, rng: np.random.Generator, tiles: int = 2) -> None:
    """One page of the given size holding only scanned-looking image strips (so it is rendered)."""
    side = 600
    pixels = rng.integers(0, 256, size=(side, side), dtype=np.uint8).tobytes()
    strip = max(height, 1) / tiles
    content = "".join(
        f"q {max(width, 1)} 0 0 {strip:g} 0 {i * strip:g} cm /Im1 Do Q\n" for i in range(tiles)
    ).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:g} {height:g}] /Contents 4 0 R"
        " /Resources << /XObject << /Im1 5 0 R >> >> >>".encode(),
        _stream("", content),
        _stream(
            f"/Type /XObject /Subtype /Image /Width {side} /Height {side} /ColorSpace /DeviceGray"
            " /BitsPerComponent 8 /Filter /FlateDecode",
            zlib.compress(pixels, 6),
        ),
    ]
    path.write_bytes(_pdf(objects))


def crowded_page_pdf(
    path: Path, images: int, paths: int, side: float, gap: float, rng: np.random.Generator, figure: bool = True
) -> None:
    """One page: a grid of `images` small images and `paths` small vector paths (lines and filled
    squares), `side` points wide and `gap` apart (0: tiles that abut), in shuffled order; with
    `figure`, an ordinary figure and its caption below the grid. The page grows to hold the grid."""
    count = images + paths
    columns = max(1, int(np.ceil(np.sqrt(count))))
    pitch = side + gap
    width = max(595.0, 100 + columns * pitch)
    height = max(842.0, ((count // columns + 1) * pitch + 300) / 0.9)
    top = 0.08 * height  # below the running-header band
    bottom = top + (count // columns + 1) * pitch
    kinds = rng.permutation(np.array([True] * images + [False] * paths, dtype=bool))
    content = []
    for index, is_image in enumerate(kinds):
        row, column = divmod(index, columns)
        x, y = 50 + column * pitch, height - top - row * pitch - side  # PDF y runs upwards
        if is_image:
            content.append(f"q {side:g} 0 0 {side:g} {x:g} {y:g} cm /Im1 Do Q")
        elif index % 2:
            content.append(f"{x:g} {y:g} m {x + side:g} {y + side:g} l S")
        else:
            content.append(f"{x:g} {y:g} {side:g} {side:g} re f")
    if figure:
        content.append(f"q 240 0 0 180 50 {height - bottom - 200:g} cm /Im2 Do Q")
        content.append(f"BT /F1 10 Tf 50 {height - bottom - 218:g} Td (Figure 1-1. Fundus photograph of the left eye.) Tj ET")
    tile = rng.integers(0, 256, size=(8, 8), dtype=np.uint8).tobytes()
    picture = rng.integers(0, 256, size=(180, 240), dtype=np.uint8).tobytes()
    grey = "/Type /XObject /Subtype /Image /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:g} {height:g}] /Contents 4 0 R"
        " /Resources << /XObject << /Im1 5 0 R /Im2 6 0 R >> /Font << /F1 7 0 R >> >> >>".encode(),
        _stream("/Filter /FlateDecode", zlib.compress("\n".join(content).encode(), 6)),
        _stream(f"{grey} /Width 8 /Height 8", zlib.compress(tile)),
        _stream(f"{grey} /Width 240 /Height 180", zlib.compress(picture)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    path.write_bytes(_pdf(objects))


def encrypted_pdf(path: Path, source: Path) -> None:
    with pymupdf.open(source) as doc:
        doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="owner-secret", user_pw="user-secret")


def flipped_bytes(path: Path, source: Path, rng: np.random.Generator, flips: int = 64) -> None:
    """A copy with `flips` random bytes past the header XOR-ed with a random non-zero value."""
    data = bytearray(source.read_bytes())
    for position in rng.integers(16, len(data), size=flips):
        data[position] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))


def truncated(path: Path, source: Path, fraction: float) -> None:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def write_hostile_corpus(
    out_dir: Path, good_pdfs: Sequence[Path], seed: int = 0, bomb_sides: Sequence[int] = BOMB_SIDES
) -> list[HostileInput]:
    """Write the corpus into `out_dir` (created) from copies of `good_pdfs`; returns what each entry is."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    good = Path(good_pdfs[0])
    corpus: list[HostileInput] = []

    for number in range(2):
        name = f"flipped-{number}.pdf"
        flipped_bytes(out_dir / name, good, rng)
        corpus.append(HostileInput(name=name, kind="64 flipped bytes"))
    for fraction in (0.35, 0.8):
        name = f"truncated-{int(fraction * 100)}.pdf"
        truncated(out_dir / name, good, fraction)
        corpus.append(HostileInput(name=name, kind=f"cut at {fraction:.0%}", expect_reason="damaged"))
    for side in bomb_sides:
        name = f"bomb-{side}.pdf"
        image_bomb_pdf(out_dir / name, side)
        corpus.append(
            HostileInput(name=name, kind=f"image bomb {side}²", expect_log=f"{side}×{side} image")
        )
    blank_pages_pdf(out_dir / "blank-3000-pages.pdf", BLANK_PAGES)
    corpus.append(
        HostileInput(name="blank-3000-pages.pdf", kind=f"{BLANK_PAGES} blank pages", expect_reason="max_pages")
    )
    mediabox_pdf(out_dir / "huge-mediabox.pdf", 14400, 14400, rng)
    corpus.append(HostileInput(name="huge-mediabox.pdf", kind="14400-pt scanned page", expect_log="rendered at"))
    mediabox_pdf(out_dir / "zero-mediabox.pdf", 0, 0, rng)
    corpus.append(HostileInput(name="zero-mediabox.pdf", kind="zero mediabox"))
    limits = ExtractOptions()
    for key, (kind, images, paths, side, gap) in CROWDED_PAGES.items():
        crowded_page_pdf(out_dir / f"{key}.pdf", images, paths, side, gap, rng)
        over = [name for name, count in (("max_images_per_page", images), ("max_paths_per_page", paths))
                if count > getattr(limits, name)]
        corpus.append(HostileInput(name=f"{key}.pdf", kind=kind, expect_log=over[0] if over else None))
    encrypted_pdf(out_dir / "encrypted.pdf", good)
    corpus.append(HostileInput(name="encrypted.pdf", kind="encrypted", expect_reason="encrypted"))
    shutil.copyfile(good, out_dir / f"copy-of-{good.name}")
    corpus.append(HostileInput(name=f"copy-of-{good.name}", kind=f"the same bytes as {good.name}"))
    os.mkfifo(out_dir / "named-pipe.pdf")
    corpus.append(
        HostileInput(name="named-pipe.pdf", kind="FIFO", expect_reason="named pipe (FIFO)", special=True)
    )
    os.symlink("/dev/zero", out_dir / "dev-zero.pdf")
    corpus.append(
        HostileInput(name="dev-zero.pdf", kind="link to /dev/zero", expect_reason="character device", special=True)
    )
    return corpus


def bomb_png(path: Path, side: int) -> None:
    """A white side × side greyscale PNG written row by row: small on disk, huge once decoded."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * side  # filter type 0, then the samples
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
