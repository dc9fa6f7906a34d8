"""Synthetic FLAIR dataframes and MM-Retinal manifests with learnable image-text structure.

Used by smoke runs, tests and the training-step benchmark: each category has its own tint and
lesion position, so a model can learn to match images to their captions within a few steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

logger = logging.getLogger(__name__)

SYNTHETIC_CATEGORIES = (
    "normal",
    "glaucoma",
    "drusen",
    "diabetic retinopathy",
    "cataract",
)
CATEGORY_ZH = {
    "normal": "正常眼底",
    "glaucoma": "青光眼",
    "drusen": "玻璃膜疣",
    "diabetic retinopathy": "糖尿病视网膜病变",
    "cataract": "白内障",
}


def synthetic_fundus(category_index: int, rng: np.random.Generator, size: int = 48, aspect: float = 1.25) -> np.ndarray:
    """A fundus-like disc whose tint and bright-spot position encode the category (HxWx3 uint8)."""
    height, width = size, int(size * aspect)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx, radius = height / 2, width / 2, 0.45 * height
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius**2
    tints = np.array([[170, 70, 40], [120, 150, 60], [200, 170, 60], [150, 40, 90], [90, 90, 160]], np.float32)
    base = tints[category_index % len(tints)] * (0.85 + 0.3 * rng.random())
    image = np.zeros((height, width, 3), np.float32)
    image[disc] = base
    angle = 2 * np.pi * category_index / len(tints)
    sy, sx = cy + 0.25 * height * np.sin(angle), cx + 0.25 * height * np.cos(angle)
    spot = ((yy - sy) ** 2 + (xx - sx) ** 2) <= (0.12 * height) ** 2
    image[spot & disc] = 250
    image += rng.normal(0, 8, image.shape).astype(np.float32) * disc[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


def write_flair_dataset(
    root: str | Path,
    n_images: int = 64,
    categories: tuple[str, ...] = SYNTHETIC_CATEGORIES,
    image_size: int = 48,
    seed: int = 0,
) -> Path:
    """Images under `root/images/` and `root/flair.csv` in the FLAIR dataframe format; returns the CSV."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n_images):
        category = int(rng.integers(len(categories)))
        name = f"images/{index:05d}.png"
        Image.fromarray(synthetic_fundus(category, rng, image_size)).save(root / name)
        attributes = ["good quality"] if rng.random() < 0.7 else ["noisy"]
        rows.append({"image": name, "atributes": repr(attributes), "categories": repr([categories[category]])})
    csv_path = root / "flair.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    return csv_path


def publish_expert_manifest(
    root: str | Path,
    n_pairs: int = 24,
    categories: tuple[str, ...] = SYNTHETIC_CATEGORIES,
    image_size: int = 48,
    seed: int = 1,
    dataset: str = "mm-retinal",
    extra_rejected: int = 2,
    extra_ffa: int = 2,
) -> tuple[Path, str]:
    """Publish synthetic CFP pairs (plus rejected and FFA ones) as a registry version; returns (registry, version)."""
    from data_manifests.registry import publish
    from foundation.records import Pair

    root = Path(root)
    panels = root / "panels"
    panels.mkdir(parents=True, exist_ok=True)
    registry = root / "registry"
    rng = np.random.default_rng(seed)
    pairs = []
    total = n_pairs + extra_rejected + extra_ffa
    for index in range(total):
        category = int(rng.integers(len(categories)))
        image_file = panels / f"panel-{index:04d}.png"
        Image.fromarray(synthetic_fundus(category, rng, image_size)).save(image_file)
        sha = hashlib.sha256(image_file.read_bytes()).hexdigest()
        status = "accepted" if index < n_pairs + extra_ffa else "rejected"
        modality = "FFA" if n_pairs <= index < n_pairs + extra_ffa else "CFP"
        name = categories[category]
        pairs.append(
            Pair(
                pair_id=f"synthetic-atlas/{index + 1}-1/-",
                book="synthetic-atlas",
                source_pdf="synthetic-atlas.pdf",
                source_pdf_sha256="0" * 64,
                page=index + 1,
                bbox=(0.0, 0.0, 100.0, 100.0),
                figure_id=f"{index + 1}-1",
                image_sha256=sha,
                image_file=str(image_file),
                caption_en=f"Figure {index + 1}-1 {name}: fundus photograph showing {name}",
                caption_zh=f"图{index + 1}-1 {CATEGORY_ZH.get(name, name)}",
                caption_en_origin="printed",
                caption_zh_origin="machine",
                modality=modality,
                modality_confidence=0.9,
                alignment_score=0.9,
                review_status=status,
            )
        )
    published = publish(
        pairs,
        dataset,
        registry,
        config={"synthetic": True, "seed": seed},
        input_pdfs={"synthetic-atlas.pdf": "0" * 64},
        pipeline_version="synthetic",
    )
    logger.info("published synthetic manifest %s", json.dumps({"path": str(published.path)}))
    return registry, published.version


DEMO_EXPERIMENTS = ("08_ODIR200x3", "25_REFUGE", "CAT_MYA_2")
"""Registered experiments the demo set imitates (their CSV names and class lists), small and synthetic."""


def write_demo_set(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """Everything the documented quick start needs under `root`, for a CPU run in seconds.

    `flair/flair.csv` (FLAIR pretraining format), an MM-Retinal manifest registry under
    `mmretinal/registry`, and `eval/<experiment>.csv` with images for each of `DEMO_EXPERIMENTS`.
    """
    from keepfit.evaluation.registry import load_experiments
    from keepfit.evaluation.synthetic import write_synthetic_dataset

    root = Path(root)
    csv_path = write_flair_dataset(root / "flair", n_images=48, seed=seed)
    registry, version = publish_expert_manifest(root / "mmretinal", n_pairs=16, seed=seed + 1)
    experiments = load_experiments()
    for offset, name in enumerate(DEMO_EXPERIMENTS):
        spec = experiments.get(name)
        written = write_synthetic_dataset(root / "eval", spec.classes, per_class=6, size=32, seed=seed + 10 + offset,
                                          name=Path(spec.dataframe).stem)
        logger.info("demo experiment %s: %s", name, root / "eval" / written.dataframe)
    logger.info("demo set in %s (FLAIR %s, MM-Retinal %s %s)", root, csv_path, registry, version)
    return {"flair": csv_path, "registry": registry, "eval": root / "eval"}


def main(argv: list[str] | None = None) -> int:
    """`python -m keepfit.synthetic DIR`: write the demo set of the quick start in docs/keepfit.md."""
    import sys

    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1:
        logger.error("usage: python -m keepfit.synthetic DIR")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = write_demo_set(arguments[0])
    logger.info("wrote %s", ", ".join(f"{key}={value}" for key, value in paths.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
