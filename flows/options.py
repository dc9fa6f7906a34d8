"""Typed options as CLI options and config files: one model per concern, declared once.

`mmretinal build --config build.yaml --set align.review_threshold=0.8` reads a YAML (or JSON)
file shaped like `BuildOptions`, applies the few dedicated CLI overrides and any `--set
key=value`, and validates the result with the model. The dedicated overrides take their help
text from the model's field descriptions, so the CLI cannot drift from the model, and
`mmretinal options build` prints every key with its default and description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

Model = TypeVar("Model", bound=BaseModel)


def _field_at(model: type[BaseModel], path: str):
    """The pydantic field at a dotted path, checking every part exists."""
    current: type[BaseModel] | None = model
    field = None
    for part in path.split("."):
        if current is None or part not in current.model_fields:
            known = ", ".join(sorted(current.model_fields)) if current is not None else "(none)"
            raise ValueError(f"unknown option {path!r}: {part!r} is not one of {known}")
        field = current.model_fields[part]
        annotation = field.annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return field


def field_help(model: type[BaseModel], path: str) -> str:
    """The model's description of one option, for a CLI flag's help."""
    return (_field_at(model, path).description or path) + f" [config key: {path}]"


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ValueError(f"option {path!r}: {part!r} is not a group of options")
    data[parts[-1]] = value


def read_config(path: Path) -> dict[str, Any]:
    """A YAML/JSON options file as a dict; errors name the file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of options")
    return data


def resolve_options(
    model: type[Model],
    config: Path | None = None,
    overrides: dict[str, Any] | None = None,
    assignments: list[str] | None = None,
) -> Model:
    """Config file, then dedicated overrides (None = not given), then `key=value` assignments."""
    data = read_config(config) if config else {}
    for path, value in (overrides or {}).items():
        if value is not None:
            _field_at(model, path)
            _set_path(data, path, value)
    for assignment in assignments or []:
        path, sep, raw = assignment.partition("=")
        if not sep:
            raise ValueError(f"--set {assignment!r}: expected KEY=VALUE")
        _field_at(model, path.strip())
        _set_path(data, path.strip(), yaml.safe_load(raw) if raw.strip() else None)
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        where = f"{config}: " if config else ""
        raise ValueError(f"{where}invalid options: {problems}") from None


def option_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every leaf option of a model, nested groups flattened."""
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        key = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(option_rows(annotation, f"{key}."))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append((key, repr(default if not isinstance(default, Path) else str(default)), field.description or ""))
    return rows


def options_yaml(options: BaseModel) -> str:
    return yaml.safe_dump(options.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
