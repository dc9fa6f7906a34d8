"""Training-step throughput and the share of step time spent waiting for data.

Runs the real trainer on synthetic FLAIR + MM-Retinal data written to a temp dir, twice in one
process: (1) baseline, the same step on one batch already on the device; (2) the full input
pipeline (PNG decode, resize/pad, tokenise in loader workers, transfer, device augmentation).
Prints samples/s of both, their ratio, and data wait / total step time of the pipeline run.

CPU default (tiny arch):   python bench/train_step.py
Paper size on a GPU:       python bench/train_step.py --arch keepfit-cfp --image-size 512 --batch 24 --amp bf16
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from keepfit.synthetic import publish_expert_manifest, write_flair_dataset
from keepfit.trainer import Trainer, load_pretrain_config


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _tokenizer_override(arch: str) -> dict[str, str]:
    """Use the bundled WordPiece vocab when the architecture's tokenizer is not available offline."""
    from keepfit.model import build_tokenizer
    from keepfit.model_config import load_model_config

    try:
        build_tokenizer(load_model_config(arch).text)
        return {}
    except OSError:
        print(f"note: {arch} tokenizer not available offline; using keepfit/data/tiny_vocab.txt (ids fit any BERT vocab)")
        return {"text.tokenizer": "vocab:tiny_vocab.txt"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tiny", help="Model config name (tiny, keepfit-cfp, flair).")
    parser.add_argument("--image-size", type=int, default=48, help="Model input side in pixels.")
    parser.add_argument("--batch", type=int, default=8, help="FLAIR batch size (expert batch is the same).")
    parser.add_argument("--steps", type=int, default=8, help="Timed steps per measurement.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps before each measurement.")
    parser.add_argument("--workers", type=int, default=2, help="Loader workers per source.")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (0 = torch default; 1 is steadiest on shared CPUs)."
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="keepfit-bench-") as tmp:
        root = Path(tmp)
        source_size = int(args.image_size * 1.2)
        n_images = args.batch * (args.steps + args.warmup + 1)
        csv = write_flair_dataset(root / "flair", n_images=n_images * 2, image_size=source_size)
        registry, version = publish_expert_manifest(root / "mm", n_pairs=max(32, args.batch), image_size=source_size)
        model_overrides = {
            "image_size": args.image_size,
            "vision.pretrained": False,
            "text.pretrained": False,
            **_tokenizer_override(args.arch),
        }
        config = load_pretrain_config(
            None,
            {
                "model": args.arch,
                "model_overrides": model_overrides,
                "flair.dataframes": [str(csv)],
                "expert.registry_root": str(registry),
                "expert.version": version,
                "output_dir": str(root / "run"),
                "batch_size": args.batch,
                "max_steps": 10_000,
                "device": args.device,
                "amp": args.amp,
                "num_workers": args.workers,
                "tensorboard": False,
                "progress_bar": False,
                "resume": None,
                "allow_random_init": True,  # tiny towers built from configs, no weights to load
            },
        )
        trainer = Trainer(config)
        device = trainer.context.device
        samples_per_step = 2 * args.batch  # FLAIR + expert images through both towers

        batches = trainer.batches(0)
        flair, expert = next(batches)
        preloaded = trainer._device_inputs(flair, expert, 0)
        for _ in range(args.warmup):
            trainer.train_step([preloaded])
        _synchronise(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step([preloaded])
        _synchronise(device)
        baseline_time = time.perf_counter() - start

        for step in range(args.warmup):
            flair, expert = next(batches)
            trainer.train_step([trainer._device_inputs(flair, expert, step)])
        _synchronise(device)
        data_time = 0.0
        start = time.perf_counter()
        for step in range(args.steps):
            fetch = time.perf_counter()
            flair, expert = next(batches)
            inputs = trainer._device_inputs(flair, expert, step)
            _synchronise(device)
            data_time += time.perf_counter() - fetch
            trainer.train_step([inputs])
        _synchronise(device)
        pipeline_time = time.perf_counter() - start

    baseline_rate = args.steps * samples_per_step / baseline_time
    pipeline_rate = args.steps * samples_per_step / pipeline_time
    print(
        f"arch {args.arch}, image {args.image_size}px, batch {args.batch}+{args.batch} expert, device {device}, "
        f"amp {trainer.amp_dtype}, workers {args.workers}, threads {torch.get_num_threads()}"
    )
    print(f"baseline (batch preloaded on device): {baseline_rate:8.1f} samples/s  {1000 * baseline_time / args.steps:7.1f} ms/step")
    print(f"full input pipeline:                  {pipeline_rate:8.1f} samples/s  {1000 * pipeline_time / args.steps:7.1f} ms/step")
    print(f"pipeline / baseline throughput ratio: {pipeline_rate / baseline_rate:.3f}")
    print(f"data wait share of step time:         {data_time / pipeline_time:.1%}")


if __name__ == "__main__":
    main()
