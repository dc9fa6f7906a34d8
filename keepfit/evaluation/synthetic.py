"""A synthetic FLAIR-format dataset with class-specific appearance, for smoke runs and benchmarks.

Each image is a noisy disc on a black background (a crude fundus) whose hue encodes the class,
so a model that learns anything from the images can tell the classes apart.
"""

from __future__ import annotations

import colorsys
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from keepfit.evaluation.registry import ExperimentSpec


def class_colour(index: int, n_classes: int) -> np.ndarray:
    """RGB in [0, 1] with hues evenly spaced over the classes (red, green, blue for three)."""
    return np.asarray(colorsys.hsv_to_rgb(index / n_classes, 0.85, 0.9))


def synthetic_fundus(index: int, n_classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """HxWx3 uint8: a disc tinted with the class colour plus pixel noise and a random bright spot."""
    y, x = np.mgrid[0:size, 0:size]
    centre = size / 2 + rng.uniform(-size / 10, size / 10, 2)
    radius = size * rng.uniform(0.36, 0.46)
    disc = ((y - centre[0]) ** 2 + (x - centre[1]) ** 2) <= radius**2
    colour = class_colour(index, n_classes) * rng.uniform(0.7, 1.0)
    image = colour[None, None, :] * disc[:, :, None]
    image = image + rng.normal(0.0, 0.08, image.shape) * disc[:, :, None]
    spot = ((y - rng.uniform(0.3, 0.7) * size) ** 2 + (x - rng.uniform(0.3, 0.7) * size) ** 2) <= (size / 12) ** 2
    image[spot & disc] += 0.25
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def write_synthetic_dataset(
    root: str | Path,
    classes: list[str],
    per_class: int,
    size: int = 48,
    seed: int = 0,
    name: str = "synthetic",
    graded: bool = False,
) -> ExperimentSpec:
    """Write `<root>/<name>/<class k>/<i>.png` and `<root>/<name>.csv`; return the experiment spec."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for class_index, class_name in enumerate(classes):
        folder = root / name / f"class{class_index}"
        folder.mkdir(parents=True, exist_ok=True)
        for item in range(per_class):
            relative = f"{name}/class{class_index}/{item:04d}.png"
            Image.fromarray(synthetic_fundus(class_index, len(classes), size, rng)).save(root / relative)
            rows.append({"image": relative, "atributes": "[]", "categories": repr([class_name])})
    order = rng.permutation(len(rows))
    csv_path = root / f"{name}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "atributes", "categories"])
        writer.writeheader()
        writer.writerows(rows[i] for i in order)
    return ExperimentSpec(
        name=name,
        dataframe=csv_path.name,
        classes=list(classes),
        graded=graded,
        description=f"synthetic: {per_class} images per class, hue encodes the class",
    )


def write_registry(path: str | Path, specs: list[ExperimentSpec]) -> Path:
    """A registry YAML file holding `specs` (the format `load_experiments` reads)."""
    import yaml

    path = Path(path)
    payload = {"experiments": [spec.model_dump(exclude_none=True) for spec in specs]}
    path.write_text(yaml.safe_dump(payload, sort_keys=False), encoding="utf-8")
    return path
