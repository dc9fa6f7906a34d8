"""Domain knowledge as user data: read the released dictionary, write and check our YAML format.

The released FLAIR and KeepFIT code keeps its category -> descriptions dictionary in a Python
module (`definitions = {...}` in `*/modeling/dictionary.py`). That file is parsed with `ast`
and only literal values are read (`ast.literal_eval` on the assigned node): nothing in it is
imported or executed.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterable
from pathlib import Path

import yaml

from foundation.files import atomic_output
from keepfit.prompts import normalise_category

logger = logging.getLogger(__name__)

RELEASED_DICTIONARY_PATHS = (
    "keepfit/modeling/dictionary.py",
    "KeepFIT/KeepFIT-CFP/keepfit/modeling/dictionary.py",
    "KeepFIT-CFP/keepfit/modeling/dictionary.py",
    "flair/modeling/dictionary.py",
)
"""Where the dictionary sits in a FLAIR or KeepFIT checkout, relative to its root."""

DICTIONARY_NAME = "definitions"


def find_released_dictionary(path: str | Path) -> Path:
    """The dictionary module: `path` itself, or the known location inside a checkout directory."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for relative in RELEASED_DICTIONARY_PATHS:
            candidate = path / relative
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"{path}: no released dictionary found (looked for {', '.join(RELEASED_DICTIONARY_PATHS)})"
        )
    raise FileNotFoundError(f"{path}: no such file or directory")


def parse_released_dictionary(path: str | Path, name: str = DICTIONARY_NAME) -> dict[str, list[str]]:
    """Category -> descriptions from the module's `definitions = {...}` assignment, read as a literal."""
    source = find_released_dictionary(path)
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:
        raise ValueError(f"{source}: cannot parse as Python: {exc}") from exc
    node = None
    for statement in tree.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else (
            [statement.target] if isinstance(statement, ast.AnnAssign) and statement.value is not None else []
        )
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            node = statement.value
    if node is None:
        raise ValueError(f"{source}: no top-level `{name} = {{...}}` assignment")
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ValueError(f"{source}: `{name}` is not a literal dictionary: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{source}: `{name}` is a {type(value).__name__}, not a dictionary")
    knowledge: dict[str, list[str]] = {}
    for category, descriptions in value.items():
        if isinstance(descriptions, str):
            descriptions = [descriptions]
        if not isinstance(category, str) or not isinstance(descriptions, (list, tuple)) or not all(
            isinstance(d, str) for d in descriptions
        ):
            raise ValueError(f"{source}: entry {category!r} must map a name to a list of strings")
        knowledge[category.strip()] = [" ".join(d.split()) for d in descriptions if d.strip()]
    logger.info("%s: %d categories read", source, len(knowledge))
    return knowledge


def write_knowledge_yaml(knowledge: dict[str, list[str]], out: str | Path, header: str = "") -> Path:
    """Write category -> descriptions in the YAML format `load_domain_knowledge` reads (atomically)."""
    out = Path(out)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    body = yaml.safe_dump(
        {category: list(descriptions) for category, descriptions in knowledge.items()},
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as handle:
        handle.write((comment + body).encode("utf-8"))
    return out


def import_released_dictionary(path: str | Path, out: str | Path) -> tuple[Path, int]:
    """Read the released dictionary from a checkout (or the file) and write it as our YAML."""
    source = find_released_dictionary(path)
    knowledge = parse_released_dictionary(source)
    header = f"Domain knowledge imported from {source}\n(the released `{DICTIONARY_NAME}` dictionary)."
    return write_knowledge_yaml(knowledge, out, header), len(knowledge)


def uncovered_categories(knowledge: dict[str, list[str]], categories: Iterable[str]) -> list[str]:
    """Categories (normalised names) that have no description in `knowledge`."""
    described = {normalise_category(name) for name, descriptions in knowledge.items() if descriptions}
    return sorted({normalise_category(c) for c in categories} - described)
