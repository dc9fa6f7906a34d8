"""Feature extraction through the evaluation pipeline vs a bare forward pass, in one process.

Pipeline (cold cache): read the FLAIR CSV, decode each image file, preprocess (resize + pad),
forward the image tower once for raw + projected features, write the cache file.
Baseline: the same encoder's forward (trunk + projection) on the same images already decoded
and preprocessed into one tensor in memory, with the same batch size.
The printed ratio (pipeline / baseline images per second) is the share of encoder throughput
the pipeline keeps; the gap is I/O, decoding and preprocessing.

    .venv/bin/python bench/eval.py                       # tiny model, 64 px
    .venv/bin/python bench/eval.py --model keepfit-cfp --images 32   # ResNet-50 at 512 px
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import keepfit
from keepfit.evaluation import FeatureCache, load_experiment_dataset, load_experiments
from keepfit.evaluation.features import model_fingerprint
from keepfit.evaluation.synthetic import write_registry, write_synthetic_dataset


def bare_forward(model, images: torch.Tensor, batch_size: int) -> float:
    """Seconds for encode_image over pre-loaded tensors in batches."""
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            model.encode_image(images[start : start + batch_size])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="Model config name (tiny, keepfit-cfp, flair).")
    parser.add_argument("--image-size", type=int, default=None, help="Override the model input size.")
    parser.add_argument("--images", type=int, default=192, help="Number of images.")
    parser.add_argument("--source-size", type=int, default=256, help="Pixel size of the image files on disk.")
    parser.add_argument("--batch-size", type=int, default=32, help="Images per forward pass.")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the pipeline.")
    parser.add_argument("--repeats", type=int, default=2, help="Alternating repeats; the best of each is kept.")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)

    overrides = {"image_size": arguments.image_size} if arguments.image_size else {}
    torch.manual_seed(0)
    model = keepfit.create_model(arguments.model, **overrides).eval()
    classes = ["normal", "glaucoma", "cataract"]
    per_class = -(-arguments.images // len(classes))
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        spec = write_synthetic_dataset(root, classes, per_class, size=arguments.source_size, name="bench")
        registry = write_registry(root / "registry.yaml", [spec])
        n_images = per_class * len(classes)

        # Warm-up so neither side pays one-off costs (allocator, kernel selection).
        warm = torch.rand(min(arguments.batch_size, n_images), 3, model.image_size, model.image_size)
        bare_forward(model, warm, arguments.batch_size)

        pipeline_times, baseline_times = [], []
        for repeat in range(arguments.repeats):
            # Alternate the two measurements so a change in machine load hits both alike; keep the best.
            started = time.perf_counter()
            dataset = load_experiment_dataset(load_experiments(registry).get("bench"), root)
            cache = FeatureCache(root / f"cache-{repeat}")
            features = cache.get_or_compute(
                model, dataset, batch_size=arguments.batch_size, num_workers=arguments.workers
            )
            pipeline_times.append(time.perf_counter() - started)
            assert cache.misses == 1 and features.raw.shape[0] == n_images

            preloaded = torch.stack(
                [model.preprocess(Image.open(path).convert("RGB")) for path in dataset.image_paths]
            )
            baseline_times.append(bare_forward(model, preloaded, arguments.batch_size))
            del preloaded
        pipeline_seconds, baseline_seconds = min(pipeline_times), min(baseline_times)

        hashing_started = time.perf_counter()
        model_fingerprint(model)
        hashing_seconds = time.perf_counter() - hashing_started

        warm_started = time.perf_counter()
        FeatureCache(root / "cache-0").get_or_compute(model, dataset, batch_size=arguments.batch_size)
        warm_seconds = time.perf_counter() - warm_started

    pipeline_rate = n_images / pipeline_seconds
    baseline_rate = n_images / baseline_seconds
    print(
        f"model {arguments.model} @ {model.image_size}px, {n_images} images of {arguments.source_size}px, "
        f"batch {arguments.batch_size}, workers {arguments.workers}, torch threads {torch.get_num_threads()}, "
        f"best of {arguments.repeats}"
    )
    print(f"pipeline (cold cache, incl. CSV, decode, preprocess, weight hash, cache write): "
          f"{pipeline_rate:8.1f} images/s  ({pipeline_seconds:.2f} s)")
    print(f"bare forward on pre-loaded tensors:                  {baseline_rate:8.1f} images/s  "
          f"({baseline_seconds:.2f} s)")
    print(f"ratio pipeline / bare forward: {pipeline_rate / baseline_rate:.2f}")
    print(f"weight hashing (part of the cold path): {hashing_seconds:.2f} s; warm cache reload: {warm_seconds:.3f} s "
          f"({n_images / max(warm_seconds, 1e-9):.0f} images/s, {pipeline_seconds / max(warm_seconds, 1e-9):.0f}x "
          "faster than cold)")


if __name__ == "__main__":
    main()
