"""Checkpoints in the released `.pth` layout (a plain state dict) plus a JSON metadata sidecar."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from keepfit.model import KeepFITModel
from keepfit.model_config import ModelConfig, load_model_config
from foundation.files import atomic_output

logger = logging.getLogger(__name__)

OPTIONAL_KEYS = ("text_model.model.embeddings.position_ids",)
"""Keys older releases hold that current encoders keep as non-persistent buffers."""


def sidecar_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".json")


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call `write(handle)` on a temp file beside `path`, then rename it into place."""
    with atomic_output(path) as out:
        write(out)


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda out: out.write(json.dumps(payload, indent=2, sort_keys=True, default=str).encode()))


def save_checkpoint(model: KeepFITModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the state dict (released key layout) and `<path>.json` with the architecture and metadata."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, lambda out: torch.save(state, out))
    sidecar = {"model_config": model.config.model_dump(mode="json"), **(metadata or {})}
    atomic_write_json(sidecar_path(path), sidecar)
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a `.pth` state dict safely (tensors only); unwraps {'state_dict': ...} / {'model': ...} files."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: not a loadable weights-only checkpoint: {exc}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_dict_strict(model: KeepFITModel, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Strict load that tolerates only the optional legacy keys (checked for consistency, then dropped)."""
    state = dict(state)
    own = model.state_dict()
    for key in OPTIONAL_KEYS:
        if key in state and key not in own:
            legacy = state.pop(key)
            if legacy.numel() and legacy.flatten()[-1].item() != legacy.numel() - 1:
                raise ValueError(f"{source}: {key} is not the identity position range")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: does not match the architecture: missing {missing[:8]}, unexpected {unexpected[:8]}")


def infer_model_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    """Pick the released architecture that matches a sidecar-less checkpoint."""
    name = "keepfit-cfp" if any(k.startswith("attention.") for k in state) else "flair"
    return load_model_config(name, vision={"pretrained": False}, text={"pretrained": False})


def read_sidecar(checkpoint: str | Path) -> dict[str, Any] | None:
    sidecar = sidecar_path(checkpoint)
    if not sidecar.exists():
        return None
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{sidecar}: invalid JSON: {exc}") from exc


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", **overrides: Any) -> KeepFITModel:
    """A model with the architecture from the sidecar (or inferred from the keys) and the weights loaded."""
    path = Path(path)
    state = read_state_dict(path)
    sidecar = read_sidecar(path)
    if sidecar is not None and "model_config" in sidecar:
        tree = dict(sidecar["model_config"])
        config = load_model_config(tree, **{"vision.pretrained": False, "text.pretrained": False, **overrides})
    elif sidecar is not None and "architecture" in sidecar:
        config = load_model_config(
            sidecar["architecture"], **{"vision.pretrained": False, "text.pretrained": False, **overrides}
        )
    else:
        config = infer_model_config(state)
        if overrides:
            config = load_model_config(config.model_dump(mode="json"), **overrides)
        logger.info("%s: no sidecar; using the %s architecture", path, config.name)
    model = KeepFITModel(config)
    load_state_dict_strict(model, state, source=str(path))
    return model.to(device).eval()
