"""Differences between two published versions, pair by pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from data_manifests.registry import LoadedManifest, load_manifest
from data_manifests.schema import CONTENT_COLUMNS


class ChangedPair(BaseModel):
    """A pair present in both versions whose content differs."""

    pair_id: str = Field(description="Id of the pair.")
    columns: list[str] = Field(description="Content columns whose values differ, in schema order.")


class Diff(BaseModel):
    """What changed from version `a` to version `b`."""

    a: str = Field(description="Reference of the older side, e.g. 'mm-retinal/v1'.")
    b: str = Field(description="Reference of the newer side.")
    added: list[str] = Field(default_factory=list, description="Pair ids only in b, sorted.")
    removed: list[str] = Field(default_factory=list, description="Pair ids only in a, sorted.")
    changed: list[ChangedPair] = Field(default_factory=list, description="Pairs in both with differing content, sorted by id.")

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def column_change_counts(self) -> dict[str, int]:
        """How many changed pairs touch each column (e.g. how many captions were edited)."""
        counts: dict[str, int] = {}
        for change in self.changed:
            for column in change.columns:
                counts[column] = counts.get(column, 0) + 1
        return dict(sorted(counts.items()))


def _rows_by_id(table: pa.Table) -> dict[str, dict[str, Any]]:
    columns = [c for c in CONTENT_COLUMNS if c in table.column_names]
    return {row["pair_id"]: row for row in table.select(columns).to_pylist()}


def diff_tables(a: pa.Table, b: pa.Table, *, a_ref: str = "a", b_ref: str = "b") -> Diff:
    """Compare two manifest tables by pair_id."""
    rows_a = _rows_by_id(a)
    rows_b = _rows_by_id(b)
    changed: list[ChangedPair] = []
    for pair_id in sorted(rows_a.keys() & rows_b.keys()):
        row_a, row_b = rows_a[pair_id], rows_b[pair_id]
        columns = [c for c in CONTENT_COLUMNS if row_a.get(c) != row_b.get(c)]
        if columns:
            changed.append(ChangedPair(pair_id=pair_id, columns=columns))
    return Diff(
        a=a_ref,
        b=b_ref,
        added=sorted(rows_b.keys() - rows_a.keys()),
        removed=sorted(rows_a.keys() - rows_b.keys()),
        changed=changed,
    )


def diff(
    a: str | LoadedManifest,
    b: str | LoadedManifest,
    *,
    root: Path | str | None = None,
) -> Diff:
    """Compare two versions given as references ('mm-retinal/v1', needs `root`) or loaded manifests."""

    def load(side: str | LoadedManifest) -> LoadedManifest:
        if isinstance(side, LoadedManifest):
            return side
        if root is None:
            raise ValueError(f"registry root is required to load {side!r}")
        return load_manifest(root, side)

    loaded_a, loaded_b = load(a), load(b)
    return diff_tables(loaded_a.table, loaded_b.table, a_ref=loaded_a.ref, b_ref=loaded_b.ref)
