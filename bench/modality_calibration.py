"""Calibrate and check the modality classifier (step 3) on labelled images.

Prints accuracy and a confusion matrix for
  * a labelled folder (default ../shared/realdata next to the repository: subfolders cfp/ ffa/
    oct/ other/; its SOURCES.md names what each 'other' image is, so grey fundus frames, OCTA and
    ultra-widefield SLO count as retinal), image only;
  * real non-retinal photographs and micrographs shipped with scikit-image;
  * with --fit: leave-one-image-out over both real sets, per class, through the whole decision
    (each image left out of the fit), and the reliability of the confidence: how often panels
    above each threshold are right, and the thresholds that keep auto-accepted modalities and
    auto-rejected non-retinal figures right >= 99 % of the time;
  * synthetic atlas panels from testbed.synthetic_images, image only and with captions, after a
    simulated PDF embedding (downscale + JPEG);
  * the time per 512 px image.

``--fit`` refits the logistic image model on the labelled folder (with resized / recompressed
copies) plus synthetic panels and writes pipeline/data/modality_model.json.

Run: .venv/bin/python bench/modality_calibration.py [--fit] [--folder DIR]
(--fit is needed for the leave-one-out and reliability tables.)
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
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
REPORTED_AS = {"CFP": "CFP", "FFA": "FFA", "OCT": "OCT", "grey_fundus": "CFP", "other": "other"}
"""A grey fundus with no caption cue is read as a red-free photograph (atlases print red-free far more often than SLO)."""
FOLDER_LABELS = {"cfp": "CFP", "ffa": "FFA", "oct": "OCT", "other": "other"}
SOURCE_KINDS = {
    # kind named in SOURCES.md ("what it is" up to the colon): (image class to fit, or None; accepted modalities; retinal)
    "nonffa_grayscale": ("grey_fundus", {"CFP", "other"}, True),
    "octa_enface": (None, {"other"}, True),
    "uwf_pseudocolor_slo": ("CFP", {"CFP", "other"}, True),
}
PACKAGE_IMAGES = (
    # scikit-image's bundled pictures: real photographs, micrographs, scans and drawings, none retinal
    "astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
    "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon", "page", "rocket", "shepp_logan_phantom", "text",
)
PACKAGE_FILES = (
    # (Python package or absolute folder, glob): photographs, plots, UI screenshots, diagrams and
    # device illustrations shipped with installed Python and Debian packages, none retinal
    ("matplotlib", "mpl-data/sample_data/*.jpg"),
    ("matplotlib", "mpl-data/sample_data/*.png"),
    ("sklearn", "datasets/images/*.jpg"),
    ("networkx", "drawing/tests/baseline/*.png"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/color.png"),
    ("/usr/share/doc/nodejs/contributing/doc_img", "*.png"),
    ("/usr/share/doc/valgrind/html/images", "*.png"),
    ("/usr/share/info", "*.png"),
    ("/usr/share/icons/Adwaita/512x512/devices", "*.png"),
)
ACCEPT_TARGET = 0.99

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
    "infrared_fundus": ("grey_fundus", "other", "SLO", ["Infrared SLO image of the macula.", "红外眼底像", None]),
    "oct_annotated": ("OCT", "OCT", None, ["Segmentation of the retinal layers.", "OCT示视网膜分层", None]),
    "oct_viewer": ("OCT", "OCT", None, ["Main window with the B-scan and the fundus image.", "OCT viewer.", None]),
    "micrograph": ("other", "other", None, ["Confocal images of cultured astrocytes.", None]),
    "engraving": ("other", "other", None, ["THEY WALKED ALONG.", None]),
}


def default_folder() -> Path:
    return REPO.parent / "shared" / "realdata"


def read_rgb(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class Labelled:
    """One real labelled image: the class it is fitted as (None: evaluated only) and what counts as right."""

    def __init__(self, name: str, image: np.ndarray, image_class: str | None, accepted: set[str], retinal: bool) -> None:
        self.name, self.image, self.image_class, self.accepted, self.retinal = name, image, image_class, accepted, retinal

    @property
    def label(self) -> str:
        """Row name in the per-class tables."""
        if self.image_class in ("CFP", "FFA", "OCT"):
            return self.image_class
        return "retinal other" if self.retinal else "non-retinal"


def _source_kinds(folder: Path) -> dict[str, str]:
    """File -> kind from the folder's SOURCES.md table (`| `sub/file` | label | kind: ... |`)."""
    kinds = {}
    sources = folder / "SOURCES.md"
    if sources.is_file():
        for line in sources.read_text(encoding="utf-8").splitlines():
            cells = [cell.strip() for cell in line.split("|")]
            if len(cells) > 3 and cells[1].startswith("`") and ":" in cells[3]:
                kinds[cells[1].strip("`")] = cells[3].split(":", 1)[0].strip()
    return kinds


def load_folder(folder: Path) -> list[Labelled]:
    """Every image in cfp/ ffa/ oct/ other/, labelled by folder and, for 'other', by its SOURCES.md kind."""
    kinds = _source_kinds(folder)
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
            name = f"{sub}/{path.name}"
            image_class, accepted, retinal = SOURCE_KINDS.get(kinds.get(name, ""), (label, {label}, label != "other"))
            samples.append(Labelled(name, image, image_class, accepted, retinal))
    return samples


def load_package_images() -> list[Labelled]:
    """Non-retinal pictures shipped with installed packages (scikit-image, matplotlib, scikit-learn,
    networkx, Debian documentation and icons): no download needed, absent ones are skipped."""
    from skimage import data

    samples = []
    for name in PACKAGE_IMAGES:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception as error:  # a missing optional file must not stop the bench
            print(f"skipped skimage.data.{name}: {type(error).__name__}")
            continue
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        image = image[:, :, :3].astype(np.uint8) if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).astype(np.uint8)[:, :, :3]
        samples.append(Labelled(f"skimage/{name}", image, "other", {"other"}, False))
    for root, pattern in PACKAGE_FILES:
        if root.startswith("/"):
            folder = Path(root)
        else:
            spec = importlib.util.find_spec(root)
            if spec is None or spec.origin is None:
                continue
            folder = Path(spec.origin).parent
        for path in sorted(folder.glob(pattern))[:8]:
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or min(image.shape[:2]) < 64:
                continue
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            elif image.shape[2] == 4:
                alpha = image[:, :, 3:4].astype(np.float32) / 255.0
                image = (image[:, :, :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
            image = cv2.resize(image, None, fx=min(1.0, 768 / max(image.shape[:2])), fy=min(1.0, 768 / max(image.shape[:2])), interpolation=cv2.INTER_AREA)
            samples.append(Labelled(f"{folder.name}/{path.name}", np.ascontiguousarray(image[:, :, ::-1]), "other", {"other"}, False))
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
    if kind in ("oct", "oct_annotated"):
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


def _model_json(mean, scale, weights, bias, version: str, summary: dict) -> dict:
    return {
        "version": version,
        "features": list(FEATURE_NAMES),
        "classes": list(IMAGE_CLASSES),
        "reported_as": REPORTED_AS,
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "weights": [[round(float(v), 5) for v in row] for row in weights],
        "bias": [round(float(v), 5) for v in bias],
        "low_structure_contrast": 0.03,
        "low_structure_factor": 0.4,
        "fit_summary": summary,
    }


def _write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, ensure_ascii=False)
        handle.write("\n")
    os.replace(handle.name, path)
    load_image_model.cache_clear()


def fit_and_write(labelled: list[Labelled], l2: float, per_kind: int, seed: int, model_path: Path) -> list[tuple[Labelled, object]]:
    """Fit on real (three embeddings each) + synthetic images; return each real image's
    leave-one-out decision (the image left out of the fit, classified by the whole step)."""
    rng = np.random.default_rng(seed)
    rows, labels, sources, groups = [], [], [], []
    for group, sample in enumerate(labelled):
        if sample.image_class is None:
            continue
        for scale, quality in ((1.0, 95), (0.6, 75), (0.35, 60)):
            rows.append(embed_like_pdf(sample.image, rng, scale, quality) if scale < 1.0 else sample.image)
            labels.append(IMAGE_CLASSES.index(sample.image_class))
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

    leave_one_out = []
    with tempfile.TemporaryDirectory() as folds:
        for index, sample in enumerate(labelled):
            fold_path = Path(folds) / f"fold{index}.json"
            _write_json(_model_json(*fitted(group != index), version=f"fold{index}", summary={}), fold_path)
            leave_one_out.append((sample, classify_modality(sample.image, None, ModalityOptions(model_path=fold_path))))
    loo_accuracy = float(np.mean([result.modality in sample.accepted for sample, result in leave_one_out])) if leave_one_out else None

    summary = {
        "method": "multinomial logistic regression, L2, balanced (source, class) weights",
        "l2": l2,
        "labelled_images": len(labelled),
        "labelled_variants": ["original", "x0.6 JPEG q75", "x0.35 JPEG q60"],
        "synthetic_per_kind": per_kind,
        "synthetic_seed": seed,
        "leave_one_out_accuracy": round(loo_accuracy, 4) if loo_accuracy is not None else None,
    }
    model = _model_json(*fitted(np.ones(len(y), dtype=bool)), version=dt.date.today().isoformat() + f"-l2{l2:g}-n{len(rows)}", summary=summary)
    _write_json(model, model_path)
    print(f"wrote {model_path}")
    return leave_one_out


def report_leave_one_out(leave_one_out: list[tuple[Labelled, object]]) -> None:
    """Per-class accuracy and the retinal / non-retinal split of the leave-one-out decisions."""
    classes = ["CFP", "FFA", "OCT", "retinal other", "non-retinal"]
    hits = sum(result.modality in sample.accepted for sample, result in leave_one_out)
    print(f"\n== real images, leave-one-image-out, whole decision, image only: accuracy {hits / len(leave_one_out):.4f} ({hits}/{len(leave_one_out)})")
    for label in classes:
        rows = [(sample, result) for sample, result in leave_one_out if sample.label == label]
        if rows:
            right = sum(result.modality in sample.accepted for sample, result in rows)
            print(f"  {label:<14} {right / len(rows):.3f} ({right}/{len(rows)})")
    for sample, result in leave_one_out:
        if result.modality not in sample.accepted:
            print(f"  left out {sample.name}: expected {'/'.join(sorted(sample.accepted))}, got {result.modality} ({result.confidence:.2f})")


def _retinal_share(result) -> float:
    return sum(p for name, p in result.image_probabilities.items() if name != "other")


def report_reliability(decisions: list[tuple[set[str], bool, object]], options: ModalityOptions, title: str) -> dict[str, float | None]:
    """Accuracy by confidence bin for retinal modalities (what may be auto-accepted) and for
    'other' read as non-retinal (what may be auto-rejected); the lowest thresholds that keep
    each >= 99 % right."""
    print(f"\n== reliability of the confidence ({title})")
    accepted = [(result.confidence, result.modality in truth) for truth, _, result in decisions if result.modality != "other"]
    rejected = [
        (result.confidence, not retinal)
        for _, retinal, result in decisions
        if result.modality == "other" and _retinal_share(result) < options.retinal_looking_threshold
    ]
    chosen: dict[str, float | None] = {}
    for title, rows, key in (("CFP/FFA/OCT (auto-accept)", accepted, "review_threshold"), ("other, not retinal-looking (auto-reject)", rejected, "non_retinal_confidence")):
        print(f"  {title}: confidence bin  right/count")
        for low in np.arange(0.3, 1.0, 0.1):
            inside = [right for confidence, right in rows if low <= confidence < low + 0.1 or (low >= 0.9 and confidence >= low)]
            if inside:
                print(f"    [{low:.1f}, {low + 0.1:.1f})  {sum(inside)}/{len(inside)}")
        threshold = None
        for candidate in np.arange(0.3, 1.0, 0.05):
            above = [right for confidence, right in rows if confidence >= candidate]
            if above and np.mean(above) >= ACCEPT_TARGET:
                threshold = round(float(candidate), 2)
                break
        current = getattr(options, key)
        above = [right for confidence, right in rows if confidence >= current]
        precision = f"{np.mean(above):.4f} ({sum(above)}/{len(above)})" if above else "-"
        print(f"    lowest threshold with >= {ACCEPT_TARGET:.0%} right: {threshold}; at the current {key}={current:.2f}: {precision} right, "
              f"{len(above)}/{len(rows)} panels above it")
        chosen[key] = threshold
    named = [(result.confidence, result.modality in truth) for truth, _, result in decisions
             if result.modality != "other" and not result.needs_review and not any(r.startswith("caption: mentions") for r in result.reasons)]
    for candidate in np.arange(0.6, 1.0, 0.05):
        above = [right for confidence, right in named if confidence >= candidate]
        if above and np.mean(above) >= ACCEPT_TARGET:
            print(f"  image alone (no caption cue): >= {ACCEPT_TARGET:.0%} right from confidence {candidate:.2f} "
                  f"({sum(above)}/{len(above)}); suggested image_only_accept for books that are not atlases")
            break
    auto = [result.modality in truth for truth, _, result in decisions if result.modality != "other" and not result.needs_review]
    if auto:
        print(f"  auto-accepted as decided (CFP/FFA/OCT, no review flag: caption cue at {options.review_threshold:.2f}, "
              f"image alone at {options.image_only_accept:.2f}): {np.mean(auto):.4f} right ({sum(auto)}/{len(auto)})")
    return chosen


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
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="model JSON to write / use")
    args = parser.parse_args()

    labelled = load_folder(args.folder) if args.folder.is_dir() else []
    if not labelled:
        print(f"no labelled images under {args.folder}; synthetic and package images only")
    labelled += load_package_images()
    leave_one_out = fit_and_write(labelled, args.l2, args.train_per_kind, seed=1, model_path=args.model) if args.fit else []

    options = ModalityOptions(model_path=args.model)
    image_only = lambda image, caption: classify_modality(image, None, options)  # noqa: E731
    with_caption = lambda image, caption: classify_modality(image, caption, options)  # noqa: E731
    evaluate(
        "real images, image only (in the fit: resubstitution)",
        [(min(sample.accepted), sample.name, sample.image, None) for sample in labelled],
        image_only,
    )
    if leave_one_out:
        report_leave_one_out(leave_one_out)
    evaluation = synthetic_samples(args.eval_per_kind, seed=2024)
    evaluate(
        "synthetic panels after PDF-like embedding, image only",
        [(REPORTED_AS[image_class], kind, image, caption) for kind, image_class, image, caption in evaluation],
        image_only,
    )
    evaluate(
        "synthetic panels after PDF-like embedding, with captions",
        [(SYNTHETIC_KINDS[kind][1] if caption else REPORTED_AS[image_class], f"{kind} {caption!r}", image, caption)
         for kind, image_class, image, caption in evaluation],
        with_caption,
    )
    if leave_one_out:
        decisions = [(sample.accepted, sample.retinal, result) for sample, result in leave_one_out]
        report_reliability(decisions, options, "real images, leave-one-out only")
        for kind, image_class, image, caption in evaluation:
            for text in (None, caption):
                truth = SYNTHETIC_KINDS[kind][1] if text is not None else REPORTED_AS[image_class]
                decisions.append(({truth}, image_class != "other", classify_modality(image, text, options)))
        chosen = report_reliability(decisions, options, "real leave-one-out + synthetic evaluation, image only and with captions")
        print(f"  chosen thresholds: {chosen} (ModalityOptions defaults: review_threshold={options.review_threshold}, "
              f"non_retinal_confidence={options.non_retinal_confidence}, retinal_looking_threshold={options.retinal_looking_threshold})")
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
