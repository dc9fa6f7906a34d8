"""Image-only copies of corpus documents, as a scanner would make them (for `real_pdfs.py --as-scans`).

Real scanned documents with retinal figures are rare in public repositories; these copies put the
real layouts of the corpus through the build's scan path (page detection, deskew, OCR). Each page
is rendered, turned by a small seeded angle, given sensor noise and JPEG compression, and stored
as one page-sized image with no text layer. Page sizes are kept, so the truth boxes still apply
(within the small turn). The copies are a simulation: their numbers are printed apart from the
corpus's own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pymupdf


def rasterise(pdf: Path, out: Path, dpi: int = 150, max_degrees: float = 0.6) -> Path:
    """Write an image-only copy of `pdf` to `out` (same page sizes); the same input gives the same page images."""
    seed = int(hashlib.sha256(pdf.name.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    scan = pymupdf.open()
    with pymupdf.open(pdf) as doc:
        for page in doc:
            pixmap = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csRGB, alpha=False)
            image = np.frombuffer(pixmap.samples, dtype=np.uint8).reshape(pixmap.height, pixmap.width, 3)
            angle = float(rng.uniform(-max_degrees, max_degrees))
            turn = cv2.getRotationMatrix2D((pixmap.width / 2, pixmap.height / 2), angle, 1.0)
            image = cv2.warpAffine(image, turn, (pixmap.width, pixmap.height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
            noisy = image.astype(np.int16) + rng.normal(0, 4, image.shape).astype(np.int16)
            image = np.clip(noisy, 0, 255).astype(np.uint8)
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 75])
            if not ok:
                raise ValueError(f"{pdf}: page {page.number + 1}: cannot encode the scan")
            target = scan.new_page(width=page.rect.width, height=page.rect.height)
            target.insert_image(target.rect, stream=jpeg.tobytes())
    out.parent.mkdir(parents=True, exist_ok=True)
    scan.save(out, garbage=3, deflate=True)
    scan.close()
    return out
