"""Named bundles of settings: `reproduce` (the release, also the default) and `improved` (ours).

A profile file (`keepfit/configs/profiles/<name>.yaml` or any YAML path) has three optional
sections: `model` (architecture overrides used when pretraining), `pretrain` (PretrainConfig
values) and `evaluation` (MethodOptions values). Explicit settings always win over the profile.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

PROFILE_DIR = Path(__file__).parent / "configs" / "profiles"
DEFAULT_PROFILE = "reproduce"


class Profile(BaseModel):
    """One profile file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Profile name (file stem) or path as given.")
    description: str = Field("", description="What the profile is for.")
    model: dict[str, Any] = Field(default_factory=dict, description="Architecture overrides (pretraining).")
    pretrain: dict[str, Any] = Field(default_factory=dict, description="PretrainConfig values.")
    evaluation: dict[str, Any] = Field(default_factory=dict, description="MethodOptions values.")


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    """A bundled profile by name, or a profile YAML file."""
    candidate = Path(name_or_path)
    path = candidate if candidate.suffix in (".yaml", ".yml") and candidate.is_file() else PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile {name_or_path!r} not found: not a YAML file and not one of {available_profiles()}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: a profile is a mapping with model / pretrain / evaluation sections")
    try:
        return Profile.model_validate({"name": str(name_or_path), **tree})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on top, recursively for nested mappings (values of `over` win)."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'text': {'padded_mean': False}} -> {'text.padded_mean': False}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def method_options_tree(profile: str | Path | Profile, explicit: dict[str, Any] | None = None) -> dict[str, Any]:
    """The MethodOptions values of a profile with explicit values on top."""
    loaded = profile if isinstance(profile, Profile) else load_profile(profile)
    return deep_merge({**loaded.evaluation, "profile": loaded.name}, explicit or {})
