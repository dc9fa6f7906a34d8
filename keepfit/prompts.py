"""Prompt templates and the domain-knowledge dictionary shared by pretraining and zero-shot."""

from __future__ import annotations

import fnmatch
import logging
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from keepfit.model_config import DATA_DIR

logger = logging.getLogger(__name__)

PRETRAIN_TEMPLATE = "A [ATR] fundus photograph of [CLS]"
ZERO_SHOT_TEMPLATE = "A fundus photograph of [CLS]"
DEFAULT_DOMAIN_KNOWLEDGE = DATA_DIR / "domain_knowledge.yaml"

BANNED_PRETRAINING_CATEGORIES = (
    "*myop*",
    "*cataract*",
    "*macular hole*",
    "*retinitis pigmentosa*",
    "*pigmentary retinopathy*",
    "retinitis",
)
"""Categories held out of pretraining so that they stay unseen classes in evaluation.

Shell-style patterns matched against the whole normalised category name (lower case, single
spaces): `*myop*` catches myopia, high myopia and myopic degeneration; plain `retinitis` is
that exact name only, so chorioretinitis stays in.
"""


def normalise_category(category: str) -> str:
    return " ".join(category.lower().replace("_", " ").split())


def is_banned_category(category: str, banned: Iterable[str] = BANNED_PRETRAINING_CATEGORIES) -> bool:
    """True when the category matches one of the banned patterns (see `BANNED_PRETRAINING_CATEGORIES`)."""
    name = normalise_category(category)
    return any(fnmatch.fnmatchcase(name, normalise_category(pattern)) for pattern in banned)


def load_domain_knowledge(path: str | Path | None = None) -> dict[str, list[str]]:
    """Read a category -> expert descriptions mapping (YAML or JSON); the bundled one by default."""
    source = Path(path) if path is not None else DEFAULT_DOMAIN_KNOWLEDGE
    try:
        with source.open(encoding="utf-8") as handle:
            tree = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{source}: cannot read domain knowledge: {exc}") from exc
    if not isinstance(tree, dict):
        raise ValueError(f"{source}: domain knowledge must map category names to lists of descriptions")
    knowledge: dict[str, list[str]] = {}
    for category, descriptions in tree.items():
        if isinstance(descriptions, str):
            descriptions = [descriptions]
        if not isinstance(descriptions, list) or not all(isinstance(d, str) for d in descriptions):
            raise ValueError(f"{source}: entry {category!r} must be a list of strings")
        knowledge[str(category).strip().lower()] = [d.strip() for d in descriptions if d.strip()]
    return knowledge


def fill_template(template: str, category: str, attributes: Sequence[str] = ()) -> str:
    """Fill '[ATR]' with the attributes (joined) and '[CLS]' with the category; collapse spaces."""
    text = template.replace("[ATR]", " ".join(a for a in attributes if a)).replace("[CLS]", category)
    return " ".join(text.split())


def pretraining_prompt(
    category: str,
    attributes: Sequence[str] = (),
    knowledge: dict[str, list[str]] | None = None,
    rng: random.Random | None = None,
    template: str = PRETRAIN_TEMPLATE,
) -> str:
    """A FLAIR-side caption: the class name, or with domain knowledge one of its descriptions at random."""
    described = category
    descriptions = (knowledge or {}).get(category.lower(), [])
    if descriptions:
        choice = (rng or random).randrange(len(descriptions) + 1)
        if choice > 0:
            described = descriptions[choice - 1]
    return fill_template(template, described, attributes)


def class_prompts(
    category: str,
    knowledge: dict[str, list[str]] | None = None,
    template: str = ZERO_SHOT_TEMPLATE,
) -> list[str]:
    """Prompts for a zero-shot class prototype: the class name plus each of its descriptions."""
    names = [category] + list((knowledge or {}).get(category.lower(), []))
    unique = list(dict.fromkeys(names))
    return [fill_template(template, name) for name in unique]
