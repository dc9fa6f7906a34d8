"""Experiment registry: the paper's downstream tasks as data, extendable with user YAML files."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, field_validator

logger = logging.getLogger(__name__)

BUILTIN_REGISTRY = Path(__file__).resolve().parent.parent / "configs" / "experiments.yaml"


class ExperimentSpec(BaseModel):
    """One downstream classification task."""

    name: str = Field(description="Experiment id used on the command line and in report names.")
    dataframe: str = Field(description="FLAIR-format CSV (image, atributes, categories), relative to the data root.")
    classes: list[str] = Field(description="Class names in label order, as written in the CSV's categories list.")
    graded: bool = Field(False, description="Ordered grades (e.g. DR severity): report quadratic-weighted kappa.")
    description: str = Field("", description="Free text shown in reports.")
    image_root: str | None = Field(
        None, description="Image directory relative to the data root when it differs from the data root itself."
    )

    @field_validator("classes")
    @classmethod
    def _at_least_two_distinct(cls, classes: list[str]) -> list[str]:
        if len(classes) < 2:
            raise ValueError("an experiment needs at least two classes")
        if len(set(classes)) != len(classes):
            raise ValueError(f"duplicate class names: {classes}")
        return classes


class ExperimentRegistry(BaseModel):
    """All known experiments by name."""

    experiments: dict[str, ExperimentSpec] = Field(default_factory=dict, description="Experiments keyed by name.")

    def get(self, name: str) -> ExperimentSpec:
        try:
            return self.experiments[name]
        except KeyError:
            known = ", ".join(sorted(self.experiments)) or "none"
            raise KeyError(f"unknown experiment {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return list(self.experiments)


def _parse_registry_text(text: str, source: str) -> list[ExperimentSpec]:
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc
    entries = document.get("experiments") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a top-level 'experiments:' list")
    specs = []
    for index, entry in enumerate(entries):
        try:
            specs.append(ExperimentSpec.model_validate(entry))
        except Exception as exc:
            raise ValueError(f"{source}: experiment #{index}: {exc}") from exc
    return specs


def load_experiments(*extra_paths: str | Path) -> ExperimentRegistry:
    """Built-in experiments plus those of each YAML path given (later files override by name)."""
    builtin = BUILTIN_REGISTRY.read_text(encoding="utf-8")
    registry = ExperimentRegistry()
    for spec in _parse_registry_text(builtin, str(BUILTIN_REGISTRY)):
        registry.experiments[spec.name] = spec
    for path in extra_paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"experiment registry {path} does not exist")
        for spec in _parse_registry_text(path.read_text(encoding="utf-8"), str(path)):
            if spec.name in registry.experiments:
                logger.info("experiment %s from %s overrides an earlier definition", spec.name, path)
            registry.experiments[spec.name] = spec
    return registry
