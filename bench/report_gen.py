"""FFA report generation throughput: beam search (size 3, trigram blocking) against greedy decoding.

Builds a synthetic FFA-IR-format set in a temp dir and one report generator, then in the same
run measures: generated reports/s with greedy decoding (the baseline) and with beam 3, their
ratio, and training samples/s of the full input pipeline (PNG decode, resize/pad, collate).
The model is trained a few epochs first so that both methods write whole reports and stop at
<eos> (an untrained model's lengths would make the comparison meaningless); the mean report
length of each method is printed beside its rate.

CPU default (tiny arch):   python bench/report_gen.py
Published size on a GPU:   python bench/report_gen.py --published   (ResNet-50 at 512 px, batch 16, bf16, peak memory)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from keepfit.ffa.data import FFAReportDataset, read_ffa_ir
from keepfit.ffa.decoding import DecodeConfig, decode
from keepfit.ffa.synthetic import write_ffa_ir_dataset
from keepfit.ffa.training import ReportTrainer, load_report_config


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_rate(
    trainer: ReportTrainer, batch: dict, config: DecodeConfig, repeats: int, dtype: torch.dtype | None
) -> tuple[float, float]:
    """(reports/s, mean words per report) of encoding + decoding one prepared batch, `repeats` times."""
    model, device = trainer.model.eval(), trainer.device
    images = batch["images"].to(device).float().div_(255.0)
    counts = batch["frame_counts"].to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        words = [len(s) for s in decode(model, model.encode(images, counts), trainer.vocab, config)]
        _synchronise(device)
        start = time.perf_counter()
        for _ in range(repeats):
            decode(model, model.encode(images, counts), trainer.vocab, config)
        _synchronise(device)
    return repeats * len(batch["case_ids"]) / (time.perf_counter() - start), sum(words) / len(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", action="store_true", help="ResNet-50 at 512 px, published transformer, bf16 (needs CUDA).")
    parser.add_argument("--cases", type=int, default=48, help="Synthetic training cases.")
    parser.add_argument("--batch", type=int, default=None, help="Batch size (default: config's).")
    parser.add_argument("--max-length", type=int, default=40, help="Words decoded per report.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed decoding passes per method.")
    parser.add_argument("--train-epochs", type=int, default=None, help="Epochs trained before decoding (default 8, 3 published).")
    parser.add_argument("--workers", type=int, default=0, help="Loader workers for the training measurement.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0 = torch default).")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.published and not torch.cuda.is_available():
        raise SystemExit("--published needs a CUDA device")

    with tempfile.TemporaryDirectory() as tmp:
        image_size = 512 if args.published else 64
        annotation = write_ffa_ir_dataset(
            Path(tmp) / "data", {"train": args.cases, "val": 8, "test": 8}, image_size=image_size, seed=0
        )
        overrides = {
            "data.ffa_ir": {"annotation": str(annotation)},
            "output_dir": str(Path(tmp) / "run"),
            "num_workers": args.workers,
            "decode.max_length": args.max_length,
            "vocab_min_frequency": 1,
        }
        if args.published:
            overrides.update({"device": "cuda", "amp": "bf16", "cache_dir": None})
        if args.batch:
            overrides["batch_size"] = overrides["eval_batch_size"] = args.batch
        config = load_report_config("keepfit-ffa" if args.published else "tiny", overrides)
        trainer = ReportTrainer(config)
        device = trainer.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        start = time.perf_counter()
        terms = trainer.train_epoch(1)
        _synchronise(device)
        train_elapsed = time.perf_counter() - start
        for epoch in range(2, (args.train_epochs or (3 if args.published else 8)) + 1):
            trainer.train_epoch(epoch)
        peak_train = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

        cases = read_ffa_ir(annotation).split("val")
        dataset = FFAReportDataset(cases, config.model.image_size, config.data.max_frames)
        batch = trainer.collate([dataset[i] for i in range(len(dataset))])
        dtype = trainer.amp_dtype
        greedy, greedy_words = decode_rate(trainer, batch, DecodeConfig(method="greedy", max_length=args.max_length), args.repeats, dtype)
        beam, beam_words = decode_rate(trainer, batch, DecodeConfig(method="beam", beam_size=3, max_length=args.max_length), args.repeats, dtype)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    arch = "ResNet-50 @512px, published transformer, bf16" if args.published else "tiny trunk @64px, tiny transformer, fp32"
    print(f"device {device}, {arch}, batch {config.batch_size}, {len(batch['case_ids'])} cases per decode batch, "
          f"max length {args.max_length}, {config.data.max_frames} frames/case at most")
    print(f"greedy decoding   : {greedy:8.2f} reports/s (baseline), {greedy_words:.1f} words/report")
    print(f"beam 3 + trigram  : {beam:8.2f} reports/s, {beam_words:.1f} words/report; ratio beam/greedy {beam / greedy:.3f}")
    print(f"training          : {terms['train_samples_per_s']:8.2f} samples/s (first epoch, {train_elapsed:.1f} s incl. data)")
    if peak is not None:
        print(f"peak GPU memory   : training {peak_train:.2f} GiB, overall {peak:.2f} GiB")


if __name__ == "__main__":
    main()
