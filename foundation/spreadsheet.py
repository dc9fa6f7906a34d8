"""Text cells safe to open in a spreadsheet.

Excel, LibreOffice and Google Sheets run a cell that starts with `=`, `+`, `-` or `@` (or a tab
or carriage return before one) as a formula, so a caption edited to `=HYPERLINK(...)` becomes a
live link in whoever opens the export. Such cells get a leading apostrophe, which spreadsheets
show as text and hide; `restore_cell` takes it off again when the sheet is read back.
"""

from __future__ import annotations

from typing import Any

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def neutralise_cell(value: Any) -> Any:
    """`value` with a leading apostrophe when it is text starting with a formula prefix; else as is."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return ESCAPE + value
    return value


def restore_cell(value: Any) -> Any:
    """Undo `neutralise_cell` on a cell read back from a sheet."""
    if isinstance(value, str) and value.startswith(ESCAPE) and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def neutralise_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: neutralise_cell(value) for key, value in row.items()}


def restore_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: restore_cell(value) for key, value in row.items()}
