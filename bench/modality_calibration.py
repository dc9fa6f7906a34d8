"""Calibrate and check the modality classifier (step 3) on labelled images.

Prints accuracy and a confusion matrix for
  * a labelled folder (default ../shared/realdata next to the repository: subfolders cfp/ ffa/
    oct/ other/), image only, plus leave-one-out accuracy when fitting;
  * synthetic atlas panels from testbed.synthetic_images, image only and with captions, after a
    simulated PDF embedding (downscale + JPEG);
  * the time per 512 px image.

``--fit`` refits the logistic image model on the labelled folder (with resized / recompressed
copies) plus synthetic panels and writes pipeline/data/modality_model.json.

Run: .venv/bin/python bench/modality_calibration.py [--fit] [--folder DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import minimize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testbed import synthetic_images  # noqa: E402
from pipeline.modality import (  # noqa: E402
    CLASSES,
    DEFAULT_MODEL_PATH,
    FEATURE_NAMES,
    ModalityOptions,
    classify_modality,
    extract_features,
    load_image_model,
)

IMAGE_CLASSES = ("CFP", "FFA", "OCT", "grey_fundus", "other")
REPORTED_AS = {"CFP": "CFP", "FFA": "FFA", "OCT": "OCT", "grey_fundus": "other", "other": "other"}
FOLDER_LABELS = {"cfp": "CFP", "ffa": "FFA", "oct": "OCT", "other": "other"}

SYNTHETIC_KINDS: dict[str, tuple[str, str, str | None, list[str | None]]] = {
    # kind: (image class, expected modality with caption, expected sublabel, caption choices)
    "cfp": ("CFP", "CFP", None, ["彩色眼底照相示视盘边界清楚", "Fundus photograph of the right eye.", "右眼眼底像", None]),
    "red_free": ("grey_fundus", "CFP", "red-free", ["无赤光眼底像示神经纤维层缺损", "Red-free photograph showing the nerve fibre layer."]),
    "ffa": ("FFA", "FFA", None, ["FFA示晚期荧光渗漏", "荧光素眼底血管造影静脉期", "Fluorescein angiogram, late phase.", None]),
    "icga": ("FFA", "FFA", "ICGA", ["ICGA示脉络膜血管扩张", "吲哚菁绿血管造影晚期", "ICGA shows a polypoidal lesion."]),
    "oct": ("OCT", "OCT", None, ["OCT示黄斑区神经上皮层脱离", "光学相干断层扫描", "OCT shows subretinal fluid.", None]),
    "diagram": ("other", "other", None, ["眼球结构示意图", "Schematic of the layers of the retina.", None]),
    "chart": ("other", "other", None, ["各组视力变化", "Visual acuity over time.", None]),
    "slit_lamp": ("other", "other", None, ["裂隙灯照相示前房积血", "Slit-lamp photograph.", None]),
    "logo": ("other", "other", None, [None]),
}


def default_folder() -> Path:
    return REPO.parent / "shared" / "realdata"


def read_rgb(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_folder(folder: Path, grey_fundus_marker: str) -> list[tuple[str, str, str, np.ndarray]]:
    """(image class, reported label, file name, image) for every image in cfp/ ffa/ oct/ other/."""
    samples = []
    for sub, label in FOLDER_LABELS.items():
        for path in sorted((folder / sub).glob("*")):
            if path.suffix.lower() not in {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}:
                continue
            try:
                image = read_rgb(path)
            except ValueError as error:
                print(f"skipped {error}")
                continue
            image_class = "grey_fundus" if label == "other" and grey_fundus_marker and grey_fundus_marker in path.name else label
            samples.append((image_class, label, f"{sub}/{path.name}", image))
    return samples


def embed_like_pdf(image: np.ndarray, rng: np.random.Generator, scale: float | None = None, quality: int | None = None) -> np.ndarray:
    """Mimic atlas embedding: resize, then JPEG at a middling quality."""
    scale = float(rng.uniform(0.35, 1.0)) if scale is None else scale
    quality = int(rng.integers(55, 95)) if quality is None else quality
    height, width = image.shape[:2]
    new_size = (max(48, round(width * scale)), max(48, round(height * scale)))
    resized = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(resized, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def synthetic_size(kind: str, rng: np.random.Generator) -> tuple[int, int]:
    height = int(rng.integers(200, 520))
    if kind == "oct":
        return int(height * rng.uniform(1.4, 3.0)), height
    if kind == "logo":
        return int(height * rng.uniform(1.5, 3.0)), height
    return int(height * rng.uniform(0.75, 1.4)), height


def synthetic_samples(per_kind: int, seed: int) -> list[tuple[str, str, np.ndarray, str | None]]:
    """(kind, image class, image after PDF-like embedding, caption) per synthetic panel."""
    rng = np.random.default_rng(seed)
    samples = []
    for kind, (image_class, _, _, captions) in SYNTHETIC_KINDS.items():
        generator = synthetic_images.GENERATORS[kind]
        for _ in range(per_kind):
            image = embed_like_pdf(generator(rng, synthetic_size(kind, rng)), rng)
            samples.append((kind, image_class, image, captions[int(rng.integers(0, len(captions)))]))
    return samples


# ---------------------------------------------------------------------------------------------
# Fitting


def feature_matrix(images: list[np.ndarray]) -> np.ndarray:
    rows = []
    for image in images:
        features = extract_features(image)
        rows.append([features[name] for name in FEATURE_NAMES])
    return np.array(rows)


def fit_softmax(x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """L2-regularised multinomial logistic regression on standardised features (L-BFGS)."""
    classes, features = len(IMAGE_CLASSES), x.shape[1]
    targets = np.eye(classes)[y]
    total = sample_weight.sum()

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        weights = params[: classes * features].reshape(classes, features)
        bias = params[classes * features :]
        logits = x @ weights.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        value = -(sample_weight[:, None] * targets * log_probs).sum() / total + 0.5 * l2 * (weights**2).sum()
        residual = (np.exp(log_probs) - targets) * sample_weight[:, None] / total
        grad_w = residual.T @ x + l2 * weights
        grad_b = residual.sum(axis=0)
        return value, np.concatenate([grad_w.ravel(), grad_b])

    start = np.zeros(classes * features + classes)
    result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return result.x[: classes * features].reshape(classes, features), result.x[classes * features :]


def balanced_weights(y: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Each (source, class) cell weighs the same in total, so real images count as much as synthetic ones."""
    weights = np.zeros(len(y))
    for src in np.unique(source):
        for cls in np.unique(y[source == src]):
            cell = (source == src) & (y == cls)
            weights[cell] = 1.0 / cell.sum()
    return weights * len(y) / weights.sum()


def fit_and_write(folder_samples, l2: float, per_kind: int, seed: int, model_path: Path) -> None:
    rng = np.random.default_rng(seed)
    rows, labels, sources, groups = [], [], [], []
    for group, (image_class, _, _, image) in enumerate(folder_samples):
        for scale, quality in ((1.0, 95), (0.6, 75), (0.35, 60)):
            rows.append(embed_like_pdf(image, rng, scale, quality) if scale < 1.0 else image)
            labels.append(IMAGE_CLASSES.index(image_class))
            sources.append("real")
            groups.append(group)
    for kind, image_class, image, _ in synthetic_samples(per_kind, seed):
        rows.append(image)
        labels.append(IMAGE_CLASSES.index(image_class))
        sources.append("synthetic")
        groups.append(-1)
    started = time.perf_counter()
    x_raw = feature_matrix(rows)
    print(f"features for {len(rows)} training images in {time.perf_counter() - started:.1f} s")
    y, source, group = np.array(labels), np.array(sources), np.array(groups)
    sample_weight = balanced_weights(y, source)

    def fitted(mask: np.ndarray):
        mean, scale = x_raw[mask].mean(axis=0), x_raw[mask].std(axis=0) + 1e-6
        weights, bias = fit_softmax((x_raw[mask] - mean) / scale, y[mask], sample_weight[mask], l2)
        return mean, scale, weights, bias

    def predict(params, x: np.ndarray) -> np.ndarray:
        mean, scale, weights, bias = params
        return np.argmax(((x - mean) / scale) @ weights.T + bias, axis=1)

    loo_true, loo_pred = [], []
    for index in range(len(folder_samples)):
        params = fitted(group != index)
        original = np.flatnonzero(group == index)[0]
        loo_true.append(REPORTED_AS[IMAGE_CLASSES[y[original]]])
        loo_pred.append(REPORTED_AS[IMAGE_CLASSES[predict(params, x_raw[original : original + 1])[0]]])
        if loo_pred[-1] != loo_true[-1]:
            print(f"  left out {folder_samples[index][2]}: predicted {loo_pred[-1]}")
    if folder_samples:
        report("labelled folder, leave-one-image-out (image only)", loo_true, loo_pred, CLASSES)

    mean, scale, weights, bias = fitted(np.ones(len(y), dtype=bool))
    model = {
        "version": dt.date.today().isoformat() + f"-l2{l2:g}-n{len(rows)}",
        "features": list(FEATURE_NAMES),
        "classes": list(IMAGE_CLASSES),
        "reported_as": REPORTED_AS,
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "weights": [[round(float(v), 5) for v in row] for row in weights],
        "bias": [round(float(v), 5) for v in bias],
        "low_structure_contrast": 0.03,
        "low_structure_factor": 0.4,
        "fit_summary": {
            "method": "multinomial logistic regression, L2, balanced (source, class) weights",
            "l2": l2,
            "labelled_images": len(folder_samples),
            "labelled_variants": ["original", "x0.6 JPEG q75", "x0.35 JPEG q60"],
            "synthetic_per_kind": per_kind,
            "synthetic_seed": seed,
            "leave_one_out_accuracy": round(float(np.mean(np.array(loo_true) == np.array(loo_pred))), 4) if loo_true else None,
        },
    }
    model_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=model_path.parent, delete=False, suffix=".tmp", encoding="utf-8") as handle:
        json.dump(model, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    os.replace(handle.name, model_path)
    load_image_model.cache_clear()
    print(f"wrote {model_path}")


# ---------------------------------------------------------------------------------------------
# Reporting


def report(title: str, truth: list[str], predicted: list[str], labels: tuple[str, ...] | list[str]) -> float:
    accuracy = float(np.mean(np.array(truth) == np.array(predicted))) if truth else float("nan")
    print(f"\n== {title}: accuracy {accuracy:.4f} ({sum(t == p for t, p in zip(truth, predicted))}/{len(truth)})")
    width = max(8, max(len(label) for label in labels) + 1)
    print("true \\ predicted".ljust(18) + "".join(label.rjust(width) for label in labels))
    for true_label in labels:
        counts = [sum(1 for t, p in zip(truth, predicted) if t == true_label and p == label) for label in labels]
        print(true_label.ljust(18) + "".join(str(count).rjust(width) for count in counts))
    return accuracy


def evaluate(name: str, items, classify: Callable) -> None:
    truth, predicted, errors = [], [], []
    for label, ident, image, caption in items:
        result = classify(image, caption)
        truth.append(label)
        predicted.append(result.modality)
        if result.modality != label:
            errors.append(f"  {ident}: expected {label}, got {result.modality} ({result.confidence:.2f}) {result.reasons[0]}")
    report(name, truth, predicted, CLASSES)
    for line in errors[:15]:
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=default_folder(), help="labelled folder with cfp/ ffa/ oct/ other/")
    parser.add_argument("--fit", action="store_true", help="refit the image model and write it")
    parser.add_argument("--l2", type=float, default=0.08, help="L2 penalty of the logistic model")
    parser.add_argument("--train-per-kind", type=int, default=30, help="synthetic training panels per kind")
    parser.add_argument("--eval-per-kind", type=int, default=40, help="synthetic evaluation panels per kind")
    parser.add_argument("--grey-fundus-marker", default="non_ffa", help="file-name part of 'other' images that are grey fundus frames")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="model JSON to write / use")
    args = parser.parse_args()

    folder_samples = load_folder(args.folder, args.grey_fundus_marker) if args.folder.is_dir() else []
    if not folder_samples:
        print(f"no labelled images under {args.folder}; synthetic checks only")
    if args.fit:
        fit_and_write(folder_samples, args.l2, args.train_per_kind, seed=1, model_path=args.model)

    options = ModalityOptions(model_path=args.model)
    image_only = lambda image, caption: classify_modality(image, None, options)  # noqa: E731
    with_caption = lambda image, caption: classify_modality(image, caption, options)  # noqa: E731
    if folder_samples:
        evaluate(
            "labelled folder, image only (fitted on it when --fit: resubstitution)",
            [(label, name, image, None) for _, label, name, image in folder_samples],
            image_only,
        )
    evaluation = synthetic_samples(args.eval_per_kind, seed=2024)
    evaluate(
        "synthetic panels after PDF-like embedding, image only",
        [(REPORTED_AS[image_class], kind, image, caption) for kind, image_class, image, caption in evaluation],
        image_only,
    )
    evaluate(
        "synthetic panels after PDF-like embedding, with captions",
        [(SYNTHETIC_KINDS[kind][1], f"{kind} {caption!r}", image, caption) for kind, _, image, caption in evaluation],
        with_caption,
    )
    sublabel_hits = [
        classify_modality(image, caption, options).sublabel == SYNTHETIC_KINDS[kind][2]
        for kind, _, image, caption in evaluation
        if caption is not None and SYNTHETIC_KINDS[kind][2] is not None
    ]
    print(f"\nsublabels from captions (red-free, ICGA): {np.mean(sublabel_hits):.4f} ({sum(sublabel_hits)}/{len(sublabel_hits)})")

    sample = synthetic_images.cfp_image(np.random.default_rng(0), 512)
    classify_modality(sample, "彩色眼底照相", options)
    runs = 60

    def median_seconds(work: Callable[[], object]) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    per_image = median_seconds(lambda: classify_modality(sample, "彩色眼底照相", options))
    baseline = median_seconds(lambda: cv2.resize(sample, (256, 256), interpolation=cv2.INTER_AREA))
    cpu_started = time.process_time()
    for _ in range(runs):
        classify_modality(sample, "彩色眼底照相", options)
    cpu_per_image = (time.process_time() - cpu_started) / runs
    print(
        f"\ntime per 512x512 image (median of {runs}): {per_image * 1000:.1f} ms wall, "
        f"{cpu_per_image * 1000:.1f} ms CPU ({per_image / baseline:.0f}x a plain downscale to 256 px in the same run; "
        "wall time grows when other processes share the cores)"
    )

if __name__ == "__main__":
    main()
