"""Tiny angiogram-like data sets whose visible pattern determines the report.

Each frame is a dark grey fundus disc with bright branching vessels; the finding is drawn on
top (a bright macular blot for leakage, a dark superior wedge for non-perfusion, a bright ring
for disc staining, nothing for a normal angiogram), and the report is that finding's sentences.
Written in FFA-IR's annotation layout, and as MM-Retinal FFA pairs in a published manifest, so
tests and benchmarks exercise the real readers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

FINDINGS = (
    (
        "normal",
        "The retinal vessels fill normally in the early phase. No leakage or abnormal fluorescence is seen.",
        "视网膜血管充盈正常，未见渗漏。",
    ),
    (
        "leakage",
        "Hyperfluorescent leakage appears at the macula and increases in the late phase. Macular edema is present.",
        "黄斑区荧光渗漏，晚期增强。",
    ),
    (
        "nonperfusion",
        "A large area of capillary nonperfusion is seen in the superior retina with dilated vessels at its border.",
        "上方视网膜大片无灌注区。",
    ),
    (
        "staining",
        "Ring shaped staining surrounds the optic disc without leakage into the vitreous.",
        "视盘周围环形着染。",
    ),
)


def synthetic_angiogram(finding: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """An HxW uint8 grey angiogram-like frame showing `finding` (index into FINDINGS)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    disc = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) <= 0.46**2
    image = np.where(disc, 55.0 + 10 * rng.random(), 0.0).astype(np.float32)
    for _ in range(4):
        angle = rng.uniform(0, 2 * np.pi)
        direction = np.array([np.sin(angle), np.cos(angle)])
        distance = np.abs((yy - 0.5) * direction[1] - (xx - 0.6) * direction[0])
        along = (yy - 0.5) * direction[0] + (xx - 0.6) * direction[1]
        image[(distance < 0.012) & (along > 0) & disc] = 150
    if finding == 1:
        blot = ((yy - 0.5) ** 2 + (xx - 0.4) ** 2) <= (0.12 + 0.02 * rng.random()) ** 2
        image[blot] = 235
    elif finding == 2:
        image[(yy < 0.38) & (np.abs(xx - 0.5) < 0.55 - yy) & disc] = 12
    elif finding == 3:
        ring = np.abs(np.sqrt((yy - 0.5) ** 2 + (xx - 0.68) ** 2) - 0.1) < 0.025
        image[ring] = 220
    image += rng.normal(0, 6, image.shape).astype(np.float32) * disc
    return np.clip(image, 0, 255).astype(np.uint8)


def write_ffa_ir_dataset(
    root: str | Path,
    cases_per_split: dict[str, int] | None = None,
    frames_per_case: tuple[int, int] = (2, 3),
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Frames under `root/images/<case>/` and `root/ffair_annotation.json`; returns the JSON path.

    Findings cycle through FINDINGS so every split holds each of them.
    """
    root = Path(root)
    cases_per_split = cases_per_split or {"train": 32, "val": 8, "test": 8}
    rng = np.random.default_rng(seed)
    tree: dict[str, dict[str, dict]] = {}
    for split, count in cases_per_split.items():
        tree[split] = {}
        for index in range(count):
            finding = index % len(FINDINGS)
            case_id = f"{split}_{index:04d}"
            frames = []
            for frame in range(int(rng.integers(frames_per_case[0], frames_per_case[1] + 1))):
                relative = f"images/{case_id}/{frame:02d}.png"
                (root / relative).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(synthetic_angiogram(finding, rng, image_size)).save(root / relative)
                frames.append(relative)
            name, english, chinese = FINDINGS[finding]
            tree[split][case_id] = {
                "Image_path": frames,
                "En_Report": english,
                "Cn_Report": chinese,
                "Lesion": {name: []} if name != "normal" else {},
            }
    annotation = root / "ffair_annotation.json"
    annotation.write_text(json.dumps(tree, indent=1, ensure_ascii=False), encoding="utf-8")
    return annotation


def publish_ffa_manifest(root: str | Path, n_pairs: int = 12, image_size: int = 64, seed: int = 1, dataset: str = "mm-retinal") -> tuple[Path, str]:
    """Publish synthetic FFA pairs (plus one CFP and one rejected pair) as a registry version."""
    from data_manifests.registry import publish
    from foundation.records import Pair

    root = Path(root)
    panels = root / "panels"
    panels.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs = []
    for index in range(n_pairs + 2):
        finding = index % len(FINDINGS)
        image_file = panels / f"ffa-{index:04d}.png"
        Image.fromarray(synthetic_angiogram(finding, rng, image_size)).convert("RGB").save(image_file)
        name, english, chinese = FINDINGS[finding]
        pairs.append(
            Pair(
                pair_id=f"synthetic-ffa-atlas/{index // 2 + 1}-1/{'AB'[index % 2]}",
                book="synthetic-ffa-atlas",
                source_pdf="synthetic-ffa-atlas.pdf",
                source_pdf_sha256="0" * 64,
                page=index // 2 + 1,
                bbox=(0.0, 0.0, 100.0, 100.0),
                figure_id=f"{index // 2 + 1}-1",
                panel="AB"[index % 2],
                image_sha256=hashlib.sha256(image_file.read_bytes()).hexdigest(),
                image_file=str(image_file),
                caption_en=f"Fluorescein angiography, {name}. {english}",
                caption_zh=f"荧光素血管造影。{chinese}",
                caption_en_origin="printed",
                caption_zh_origin="printed",
                modality="CFP" if index == n_pairs else "FFA",
                modality_confidence=0.9,
                alignment_score=0.9,
                review_status="rejected" if index == n_pairs + 1 else "accepted",
            )
        )
    published = publish(
        pairs,
        dataset,
        root / "registry",
        config={"synthetic": "ffa", "seed": seed},
        input_pdfs={"synthetic-ffa-atlas.pdf": "0" * 64},
        pipeline_version="synthetic",
    )
    return root / "registry", published.version
