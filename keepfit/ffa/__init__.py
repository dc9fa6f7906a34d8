"""KeepFIT-FFA: angiography pretraining on FFA-IR + MM-Retinal FFA pairs, and FFA report generation.

Modules (imported on demand, so `import keepfit.ffa` stays light):

- `data`: FFA-IR annotation JSON and MM-Retinal FFA pairs as cases; per-image or per-case samples.
- `pretraining`: FFA-IR reports as the general side of the KeepFIT objective (`mmretinal pretrain keepfit-ffa`).
- `vocab`, `model`, `decoding`: the report generator (ResNet grid features + transformer encoder-decoder).
- `metrics`, `reports`: BLEU-1..4, METEOR, ROUGE-L, CIDEr via pycocoevalcap; JSON + markdown reports.
- `training`: training with model selection on validation only, evaluation and generation.
- `synthetic`: tiny angiogram-like data sets whose visible pattern determines the report.
"""
