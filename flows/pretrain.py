"""Prefect `pretrain` flow: a thin wrapper over `keepfit.trainer` (FLAIR dataframes + an MM-Retinal manifest version).

Multi-GPU runs use torchrun directly (`torchrun --nproc_per_node N -m keepfit.trainer CONFIG key=value ...`);
the flow runs the trainer in its own process for single-device runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from keepfit.trainer import load_pretrain_config, run_pretraining


@flow(name="pretrain", log_prints=False)
def pretrain_flow(
    config: str = "keepfit-cfp",
    dataset: str | None = None,
    manifest_version: str | None = None,
    modalities: list[str] | None = None,
    overrides: list[str] | None = None,
    knowledge: str | None = None,
    allow_random_init: bool = False,
) -> dict[str, Any]:
    """Pretrain KeepFIT and return where the final checkpoint is.

    Parameters:
        config: pretraining YAML path or bundled name (keepfit/configs/pretrain/<name>.yaml).
        dataset: MM-Retinal dataset name in the manifest registry (overrides `expert.dataset`).
        manifest_version: published version, e.g. 'v3' or 'latest' (overrides `expert.version`);
            a publish event can pass the version it just wrote.
        modalities: MM-Retinal modalities to train on, e.g. ["FFA"] (overrides `expert.modalities`).
        overrides: dotted `key=value` settings, e.g. ["optim.lr=3e-4", "max_steps=1000"].
        knowledge: domain-knowledge YAML (category -> descriptions) for the FLAIR captions.
        allow_random_init: start towers whose pretrained weights are not found from random weights.
    """
    logger = get_run_logger()
    settings = list(overrides or [])
    if dataset is not None:
        settings.append(f"expert.dataset={dataset}")
    if manifest_version is not None:
        settings.append(f"expert.version={manifest_version}")
    if knowledge is not None:
        settings.append(f"flair.domain_knowledge_path={knowledge}")
    if allow_random_init:
        settings.append("allow_random_init=true")
    if modalities:
        settings.append(f"expert.modalities=[{', '.join(modalities)}]")
    options = load_pretrain_config(config, settings)
    logger.info("pretraining %s into %s", options.model, options.output_dir)
    result = run_pretraining(options)
    logger.info("finished at step %d/%d (%s): %s", result.step, result.total_steps, result.stop_reason, result.checkpoint)
    return {
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "step": result.step,
        "total_steps": result.total_steps,
        "stop_reason": result.stop_reason,
        "last_terms": result.last_terms,
        "output_dir": str(Path(options.output_dir)),
    }
