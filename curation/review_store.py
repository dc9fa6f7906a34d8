"""Durable review queue: builds, queued pairs and the reviewers' decisions in one SQLite file.

Decisions are keyed by content (image hash + proposed caption hash), not by build or pair id,
so a rebuild that produces the same panel with the same proposed caption sees the decisions
already taken. The decision table is append-only: undo, conflicts and re-applies all add rows,
nothing is ever updated or deleted there.

Two reviewers may work at once (separate processes or threads). Every write runs in its own
`BEGIN IMMEDIATE` transaction on a WAL database, and every decision may carry the item version
the reviewer saw (optimistic concurrency). A decision against a stale version is stored in the
history with outcome "conflict" and not applied; the caller gets a `ReviewConflict` and may
re-apply it against the new version (last writer wins only when the reviewer confirms).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from foundation.files import write_atomic
from foundation.spreadsheet import neutralise_row, restore_row
from foundation.records import CaptionChoice, Modality, Pair, ReviewStatus

logger = logging.getLogger(__name__)

Action = Literal[
    "accept",
    "reject_not_pair",
    "reject_not_retinal",
    "choose_caption",
    "edit_caption",
    "set_modality",
    "undo",
]
ACTIONS: tuple[str, ...] = get_args(Action)
MODALITIES: tuple[str, ...] = get_args(Modality)
DECISIVE_ACTIONS = frozenset({"accept", "reject_not_pair", "reject_not_retinal", "choose_caption", "edit_caption"})
"""Actions that settle an item (the page moves on to the next undecided item after them)."""

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 15_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS builds (
    build_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    created TEXT NOT NULL,
    source_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    build_id TEXT NOT NULL REFERENCES builds(build_id),
    item_key TEXT NOT NULL,
    position INTEGER NOT NULL,
    pair_json TEXT NOT NULL,
    PRIMARY KEY (build_id, item_key)
);
CREATE INDEX IF NOT EXISTS items_by_key ON items(item_key);
CREATE TABLE IF NOT EXISTS item_versions (
    item_key TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    decision_id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_key TEXT NOT NULL,
    action TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    created TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('applied', 'conflict')),
    expected_version INTEGER,
    version INTEGER NOT NULL,
    reverts_decision_id INTEGER
);
CREATE INDEX IF NOT EXISTS decisions_by_key ON decisions(item_key, decision_id);
"""


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def caption_hash(caption_en: str | None, caption_zh: str | None) -> str:
    """Hash of a proposed caption pair; None counts as the empty string."""
    return _sha256_text((caption_en or "") + "\n" + (caption_zh or ""))


def content_key(pair: Pair) -> str:
    """Key of a queue item: same panel image + same proposed caption gives the same key in every build."""
    return _sha256_text(pair.image_sha256 + "\n" + caption_hash(pair.caption_en, pair.caption_zh))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class Decision(BaseModel):
    """One row of the append-only decision history."""

    decision_id: int = Field(description="Monotonic id; orders the history.")
    item_key: str = Field(description="Content key of the item decided.")
    action: Action = Field(description="What the reviewer did.")
    reviewer: str = Field(description="Who decided.")
    created: str = Field(description="UTC time of the decision, ISO 8601.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Chosen caption, edited text or modality.")
    outcome: Literal["applied", "conflict"] = Field(
        description="'applied', or 'conflict' when it was taken against a stale version and not applied."
    )
    expected_version: int | None = Field(None, description="Item version the reviewer saw (None: unchecked).")
    version: int = Field(description="Item version after this decision (unchanged for conflicts).")
    reverts_decision_id: int | None = Field(None, description="For 'undo': the decision it reverted.")


class Resolution(BaseModel):
    """The item's state after folding all effective decisions (what publish applies)."""

    review_status: ReviewStatus | None = Field(
        None, description="accepted / rejected / edited, or None while undecided."
    )
    reject_reason: Literal["not_pair", "not_retinal"] | None = Field(None, description="Why it was rejected.")
    caption_en: str | None = Field(None, description="English caption after choices/edits.")
    caption_zh: str | None = Field(None, description="Chinese caption after choices/edits.")
    caption_changed: bool = Field(False, description="True when a reviewer chose or edited the caption.")
    chosen: CaptionChoice | None = Field(None, description="Alternative caption chosen, if any.")
    modality: Modality | None = Field(None, description="Modality set by a reviewer, if any.")
    reviewer: str | None = Field(None, description="Reviewer of the latest effective decision.")

    @property
    def decided(self) -> bool:
        return self.review_status is not None


class QueueItem(BaseModel):
    """One queued pair of a build with its current decision state."""

    item_key: str = Field(description="Content key.")
    build_id: str = Field(description="Build the item was queued by.")
    position: int = Field(description="0-based order in the build's queue.")
    pair: Pair = Field(description="The pair as the build proposed it.")
    version: int = Field(0, description="Number of applied decisions; the value to send as expected_version.")
    decision: Decision | None = Field(None, description="Latest effective decision (None when undecided or all undone).")
    resolution: Resolution = Field(default_factory=Resolution, description="Folded effect of all effective decisions.")

    @property
    def decided(self) -> bool:
        return self.resolution.decided


class ItemState(BaseModel):
    """Where an item stands, without its pair (cheap enough to compute for a whole queue per page view)."""

    item_key: str = Field(description="Content key.")
    position: int = Field(description="0-based order in the build's queue.")
    version: int = Field(0, description="Number of applied decisions.")
    decided: bool = Field(False, description="True when the item has a verdict.")
    has_decision: bool = Field(False, description="True when some decision (a verdict or a modality) is in effect.")


class BuildInfo(BaseModel):
    """A registered build and its review progress."""

    build_id: str
    dataset: str
    created: str
    source: dict[str, Any] = Field(default_factory=dict, description="Source PDFs and any locations given at registration.")
    decided: int = Field(0, description="Items with a verdict.")
    total: int = Field(0, description="Items queued by the build.")


class ReviewConflict(Exception):
    """A decision was taken against a stale item version; it is in the history but not applied."""

    def __init__(self, attempted: Decision, current_version: int, current: Decision | None) -> None:
        super().__init__(
            f"item {attempted.item_key[:12]} changed since version {attempted.expected_version} "
            f"(now {current_version}); decision {attempted.decision_id} recorded as conflict"
        )
        self.attempted = attempted
        self.current_version = current_version
        self.current = current


class NothingToUndo(ValueError):
    """Undo was asked for an item without an effective decision."""


class UnknownItem(KeyError):
    """The item key is not queued by any registered build."""


class ImportReport(BaseModel):
    """Outcome of importing a reviewer's CSV; bad rows are reported, not fatal."""

    applied: int = Field(0, description="Decisions applied.")
    unchanged: int = Field(0, description="Rows whose decision already matched the store.")
    skipped_empty: int = Field(0, description="Rows without an action.")
    conflicts: list[str] = Field(default_factory=list, description="Item keys whose version changed since export.")
    unknown_keys: list[str] = Field(default_factory=list, description="Item keys no build queued.")
    errors: list[str] = Field(default_factory=list, description="'row N: reason' for rows that could not be read.")


def fold_decisions(decisions: Iterable[Decision], pair: Pair | None = None) -> tuple[Resolution, Decision | None]:
    """Replay applied decisions (undo pops the latest effective one) into a resolution."""
    stack: list[Decision] = []
    for decision in decisions:
        if decision.outcome != "applied":
            continue
        if decision.action == "undo":
            if stack:
                stack.pop()
        else:
            stack.append(decision)
    resolution = Resolution()
    if pair is not None:
        resolution.caption_en, resolution.caption_zh = pair.caption_en, pair.caption_zh
    for decision in stack:
        payload = decision.payload
        if decision.action == "accept":
            resolution.review_status = "edited" if resolution.caption_changed else "accepted"
            resolution.reject_reason = None
        elif decision.action in ("reject_not_pair", "reject_not_retinal"):
            resolution.review_status = "rejected"
            resolution.reject_reason = "not_pair" if decision.action == "reject_not_pair" else "not_retinal"
        elif decision.action == "choose_caption":
            resolution.chosen = CaptionChoice.model_validate(payload["chosen"])
            resolution.caption_en = resolution.chosen.caption_en
            resolution.caption_zh = resolution.chosen.caption_zh
            resolution.caption_changed = True
            resolution.review_status = "edited"
            resolution.reject_reason = None
        elif decision.action == "edit_caption":
            if "caption_en" in payload:
                resolution.caption_en = payload["caption_en"]
            if "caption_zh" in payload:
                resolution.caption_zh = payload["caption_zh"]
            resolution.caption_changed = True
            resolution.review_status = "edited"
            resolution.reject_reason = None
        elif decision.action == "set_modality":
            resolution.modality = payload["modality"]
        resolution.reviewer = decision.reviewer
    return resolution, (stack[-1] if stack else None)


def _blank_to_none(text: str | None) -> str | None:
    if text is None:
        return None
    stripped = text.strip()
    return stripped or None


class ReviewStore:
    """The review queue and decision history in one SQLite file (WAL), safe for concurrent reviewers."""

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self.db_path}: SQLite refused WAL mode (got {mode!r})")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            found = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            if found != SCHEMA_VERSION:
                raise RuntimeError(f"{self.db_path}: review store schema {found}, this code reads {SCHEMA_VERSION}")

    # -- connections -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One short-lived connection per operation: safe across threads and processes."""
        conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front, so read-check-write is atomic."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def journal_mode(self) -> str:
        with self._connect() as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    # -- builds and items --------------------------------------------------------------------

    def register_build(
        self,
        build_id: str,
        dataset: str,
        pairs: list[Pair],
        *,
        source: dict[str, Any] | None = None,
    ) -> int:
        """Enqueue a build's queued pairs; registering the same build again changes nothing.

        Returns the number of queue items the build has. `source` may carry extra locations
        (e.g. "pdf_roots", "image_roots") that the review page uses to find files.
        """
        pdfs = sorted({(p.source_pdf, p.source_pdf_sha256) for p in pairs})
        source_info = {"pdfs": [{"file": name, "sha256": sha} for name, sha in pdfs], **(source or {})}
        queued = [p for p in pairs if p.review_status == "queued"]
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO builds(build_id, dataset, created, source_json) VALUES (?, ?, ?, ?)",
                (build_id, dataset, _now(), json.dumps(source_info, ensure_ascii=False, sort_keys=True)),
            )
            next_position = conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM items WHERE build_id = ?", (build_id,)
            ).fetchone()[0]
            for pair in queued:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO items(build_id, item_key, position, pair_json) VALUES (?, ?, ?, ?)",
                    (build_id, content_key(pair), next_position, pair.model_dump_json()),
                )
                next_position += cursor.rowcount
            total = conn.execute("SELECT COUNT(*) FROM items WHERE build_id = ?", (build_id,)).fetchone()[0]
        logger.info("build %s: %d queue items (%d queued pairs given)", build_id, total, len(queued))
        return int(total)

    def list_builds(self) -> list[BuildInfo]:
        """All builds, newest first, with their progress."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM builds ORDER BY created DESC, build_id").fetchall()
        return [self._build_info(row) for row in rows]

    def get_build(self, build_id: str, *, with_progress: bool = True) -> BuildInfo | None:
        """One build (with its progress unless asked not to), or None."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM builds WHERE build_id = ?", (build_id,)).fetchone()
        return self._build_info(row, with_progress) if row is not None else None

    def build_source(self, build_id: str) -> dict[str, Any]:
        """Source info recorded at registration (PDFs, optional pdf_roots / image_roots)."""
        with self._connect() as conn:
            row = conn.execute("SELECT source_json FROM builds WHERE build_id = ?", (build_id,)).fetchone()
        return json.loads(row["source_json"]) if row is not None else {}

    def _build_info(self, row: sqlite3.Row, with_progress: bool = True) -> BuildInfo:
        decided, total = self.progress(row["build_id"]) if with_progress else (0, 0)
        return BuildInfo(
            build_id=row["build_id"],
            dataset=row["dataset"],
            created=row["created"],
            source=json.loads(row["source_json"]),
            decided=decided,
            total=total,
        )

    @staticmethod
    def _select_keys(conn: sqlite3.Connection, keys: list[str]) -> None:
        """Fill the connection's temp table of keys that the next queries join on."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_keys (item_key TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM wanted_keys")
        conn.executemany("INSERT OR IGNORE INTO wanted_keys VALUES (?)", [(k,) for k in keys])

    def _decisions_for(self, conn: sqlite3.Connection, keys: list[str]) -> dict[str, list[Decision]]:
        by_key: dict[str, list[Decision]] = {key: [] for key in keys}
        self._select_keys(conn, keys)
        rows = conn.execute(
            "SELECT d.* FROM decisions d JOIN wanted_keys w ON w.item_key = d.item_key ORDER BY d.decision_id"
        ).fetchall()
        for row in rows:
            by_key[row["item_key"]].append(_decision_from_row(row))
        return by_key

    def _versions_for(self, conn: sqlite3.Connection, keys: list[str]) -> dict[str, int]:
        self._select_keys(conn, keys)
        rows = conn.execute(
            "SELECT v.item_key, v.version FROM item_versions v JOIN wanted_keys w ON w.item_key = v.item_key"
        ).fetchall()
        return {row["item_key"]: row["version"] for row in rows}

    def queue(self, build_id: str, include_decided: bool = True) -> list[QueueItem]:
        """The build's queue in order, each item with its current decision."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            rows = conn.execute(
                "SELECT * FROM items WHERE build_id = ? ORDER BY position", (build_id,)
            ).fetchall()
            keys = [row["item_key"] for row in rows]
            decisions = self._decisions_for(conn, keys)
            versions = self._versions_for(conn, keys)
            conn.execute("COMMIT")
        items = []
        for row in rows:
            pair = Pair.model_validate_json(row["pair_json"])
            resolution, latest = fold_decisions(decisions[row["item_key"]], pair)
            item = QueueItem(
                item_key=row["item_key"],
                build_id=row["build_id"],
                position=row["position"],
                pair=pair,
                version=versions.get(row["item_key"], 0),
                decision=latest,
                resolution=resolution,
            )
            if include_decided or not item.decided:
                items.append(item)
        return items

    def item(self, item_key: str, build_id: str | None = None) -> QueueItem:
        """One queue item (from the given build, else from the latest build that queued it)."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            if build_id is None:
                row = conn.execute(
                    "SELECT i.* FROM items i JOIN builds b ON b.build_id = i.build_id "
                    "WHERE i.item_key = ? ORDER BY b.created DESC LIMIT 1",
                    (item_key,),
                ).fetchone()
            else:
                row = conn.execute(
                    "SELECT * FROM items WHERE item_key = ? AND build_id = ?", (item_key, build_id)
                ).fetchone()
            if row is None:
                conn.execute("COMMIT")
                raise UnknownItem(item_key)
            decisions = self._decisions_for(conn, [item_key])[item_key]
            version = self._versions_for(conn, [item_key]).get(item_key, 0)
            conn.execute("COMMIT")
        pair = Pair.model_validate_json(row["pair_json"])
        resolution, latest = fold_decisions(decisions, pair)
        return QueueItem(
            item_key=item_key,
            build_id=row["build_id"],
            position=row["position"],
            pair=pair,
            version=version,
            decision=latest,
            resolution=resolution,
        )

    def queue_states(self, build_id: str) -> list[ItemState]:
        """Decision state of every item of a build, in queue order, without loading the pairs."""
        with self._connect() as conn:
            conn.execute("BEGIN")
            rows = conn.execute(
                "SELECT item_key, position FROM items WHERE build_id = ? ORDER BY position", (build_id,)
            ).fetchall()
            keys = [row["item_key"] for row in rows]
            decisions = self._decisions_for(conn, keys)
            versions = self._versions_for(conn, keys)
            conn.execute("COMMIT")
        states = []
        for row in rows:
            resolution, latest = fold_decisions(decisions[row["item_key"]])
            states.append(
                ItemState(
                    item_key=row["item_key"],
                    position=row["position"],
                    version=versions.get(row["item_key"], 0),
                    decided=resolution.decided,
                    has_decision=latest is not None,
                )
            )
        return states

    def progress(self, build_id: str) -> tuple[int, int]:
        """(decided, total) items of a build."""
        states = self.queue_states(build_id)
        return sum(1 for state in states if state.decided), len(states)

    # -- decisions ---------------------------------------------------------------------------

    def decide(
        self,
        item_key: str,
        action: str,
        reviewer: str,
        *,
        caption_en: str | None = None,
        caption_zh: str | None = None,
        modality: str | None = None,
        chosen: CaptionChoice | None = None,
        expected_version: int | None = None,
    ) -> Decision:
        """Record a decision; raises ReviewConflict (after storing it) when expected_version is stale.

        With expected_version None the decision is applied unconditionally (last writer wins);
        the page always sends the version it showed, so that only happens when asked for.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        if not reviewer or not reviewer.strip():
            raise ValueError("a decision needs a reviewer name")
        payload: dict[str, Any] = {}
        if action == "choose_caption":
            if chosen is None:
                raise ValueError("choose_caption needs the chosen CaptionChoice")
            payload["chosen"] = chosen.model_dump()
        elif action == "edit_caption":
            if caption_en is None and caption_zh is None:
                raise ValueError("edit_caption needs caption_en and/or caption_zh")
            if caption_en is not None:
                payload["caption_en"] = _blank_to_none(caption_en)
            if caption_zh is not None:
                payload["caption_zh"] = _blank_to_none(caption_zh)
        elif action == "set_modality":
            if modality not in MODALITIES:
                raise ValueError(f"set_modality needs a modality in {MODALITIES}, got {modality!r}")
            payload["modality"] = modality
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM items WHERE item_key = ? LIMIT 1", (item_key,)).fetchone() is None:
                raise UnknownItem(item_key)
            row = conn.execute("SELECT version FROM item_versions WHERE item_key = ?", (item_key,)).fetchone()
            version = row["version"] if row else 0
            history = self._decisions_for(conn, [item_key])[item_key]
            _, latest = fold_decisions(history)
            stale = expected_version is not None and expected_version != version
            reverts = None
            if action == "undo" and not stale:
                if latest is None:
                    raise NothingToUndo(f"item {item_key[:12]} has no decision to undo")
                reverts = latest.decision_id
            new_version = version if stale else version + 1
            cursor = conn.execute(
                "INSERT INTO decisions(item_key, action, reviewer, created, payload_json, outcome, "
                "expected_version, version, reverts_decision_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item_key,
                    action,
                    reviewer.strip(),
                    _now(),
                    json.dumps(payload, ensure_ascii=False, sort_keys=True),
                    "conflict" if stale else "applied",
                    expected_version,
                    new_version,
                    reverts,
                ),
            )
            if not stale:
                conn.execute(
                    "INSERT INTO item_versions(item_key, version) VALUES (?, ?) "
                    "ON CONFLICT(item_key) DO UPDATE SET version = excluded.version",
                    (item_key, new_version),
                )
            decision = _decision_from_row(
                conn.execute("SELECT * FROM decisions WHERE decision_id = ?", (cursor.lastrowid,)).fetchone()
            )
        if stale:
            logger.info("conflict on %s: %s by %s against version %s (now %d)",
                        item_key[:12], action, reviewer, expected_version, version)
            raise ReviewConflict(decision, version, latest)
        return decision

    def history(self, item_key: str) -> list[Decision]:
        """Every decision ever taken on the item, conflicts and undos included, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM decisions WHERE item_key = ? ORDER BY decision_id", (item_key,)
            ).fetchall()
        return [_decision_from_row(row) for row in rows]

    def current_decision(self, item_key: str) -> Decision | None:
        """Latest effective decision (undo removes the one it reverted), or None."""
        return fold_decisions(self.history(item_key))[1]

    def version(self, item_key: str) -> int:
        with self._connect() as conn:
            row = conn.execute("SELECT version FROM item_versions WHERE item_key = ?", (item_key,)).fetchone()
        return int(row["version"]) if row else 0

    def resolution(self, item_key: str, pair: Pair | None = None) -> Resolution:
        return fold_decisions(self.history(item_key), pair)[0]

    def apply_decisions(self, pairs: list[Pair]) -> list[Pair]:
        """Return the pairs with reviewers' decisions applied (matched by content key); used by publish."""
        keys = [content_key(pair) for pair in pairs]
        with self._connect() as conn:
            conn.execute("BEGIN")
            decisions = self._decisions_for(conn, sorted(set(keys)))
            conn.execute("COMMIT")
        result = []
        for pair, key in zip(pairs, keys, strict=True):
            resolution, latest = fold_decisions(decisions.get(key, []), pair)
            if latest is None:
                result.append(pair)
                continue
            result.append(_apply_resolution(pair, resolution))
        return result

    # -- CSV round trip ----------------------------------------------------------------------

    CSV_COLUMNS = (
        "item_key", "build_id", "position", "pair_id", "source_pdf", "page", "figure_id", "panel",
        "image_file", "proposed_caption_en", "proposed_caption_zh", "proposed_modality",
        "modality_confidence", "alternatives", "version", "action", "choice", "caption_en",
        "caption_zh", "modality", "reviewer",
    )
    """Columns of the offline review sheet; a reviewer fills action (and choice, captions, modality)."""

    def export_csv(self, path: str | os.PathLike[str], build_id: str | None = None) -> int:
        """Write the queue (one build, or all) with current decisions; returns the row count."""
        build_ids = [build_id] if build_id is not None else [b.build_id for b in self.list_builds()]
        rows = []
        for bid in build_ids:
            for item in self.queue(bid):
                pair, res = item.pair, item.resolution
                choice = ""
                if res.chosen is not None:
                    for index, alternative in enumerate(pair.alternatives, start=1):
                        if alternative == res.chosen:
                            choice = str(index)
                rows.append({
                    "item_key": item.item_key,
                    "build_id": bid,
                    "position": item.position,
                    "pair_id": pair.pair_id,
                    "source_pdf": pair.source_pdf,
                    "page": pair.page,
                    "figure_id": pair.figure_id,
                    "panel": pair.panel or "",
                    "image_file": pair.image_file,
                    "proposed_caption_en": pair.caption_en or "",
                    "proposed_caption_zh": pair.caption_zh or "",
                    "proposed_modality": pair.modality,
                    "modality_confidence": f"{pair.modality_confidence:.3f}",
                    "alternatives": json.dumps([a.model_dump() for a in pair.alternatives], ensure_ascii=False),
                    "version": item.version,
                    "action": _csv_action(res),
                    "choice": choice,
                    "caption_en": res.caption_en or "",
                    "caption_zh": res.caption_zh or "",
                    "modality": res.modality or pair.modality,
                    "reviewer": res.reviewer or "",
                })
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=self.CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(neutralise_row(row) for row in rows)  # no cell runs as a spreadsheet formula
        write_atomic(path, buffer.getvalue())
        return len(rows)

    def import_csv(
        self, path: str | os.PathLike[str], reviewer: str | None = None, *, force: bool = False
    ) -> ImportReport:
        """Append the sheet's decisions to the history.

        A row is applied when its action/modality/caption differ from the store's current state.
        The row's version is the one the reviewer saw at export: if the item changed since, the
        decision is recorded as a conflict and reported (unless force, which applies it anyway).
        """
        report = ImportReport()
        source = Path(path)
        try:
            handle = source.open(newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise ValueError(f"{source}: cannot read review sheet ({exc})") from exc
        with handle:
            reader = csv.DictReader(handle)
            missing = {"item_key", "action"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{source}: review sheet lacks column(s) {', '.join(sorted(missing))}")
            for line_number, row in enumerate(reader, start=2):
                try:
                    self._import_row(restore_row(row), reviewer, force, report)
                except (ValueError, json.JSONDecodeError) as exc:
                    report.errors.append(f"row {line_number}: {exc}")
        logger.info(
            "%s: %d applied, %d unchanged, %d conflicts, %d unknown keys, %d errors",
            source, report.applied, report.unchanged, len(report.conflicts), len(report.unknown_keys),
            len(report.errors),
        )
        return report

    def _import_row(self, row: dict[str, str], reviewer: str | None, force: bool, report: ImportReport) -> None:
        item_key = (row.get("item_key") or "").strip()
        action = (row.get("action") or "").strip()
        modality = (row.get("modality") or "").strip()
        if not item_key:
            raise ValueError("empty item_key")
        try:
            item = self.item(item_key)
        except UnknownItem:
            report.unknown_keys.append(item_key)
            return
        who = reviewer or (row.get("reviewer") or "").strip()
        if not who:
            raise ValueError(f"item {item_key[:12]}: no reviewer in the row and none given")
        version_text = (row.get("version") or "").strip()
        expected: int | None = None if force or not version_text else int(version_text)
        if action and action not in DECISIVE_ACTIONS:
            raise ValueError(f"item {item_key[:12]}: action {action!r} not allowed in a sheet "
                             f"(use one of {', '.join(sorted(DECISIVE_ACTIONS))})")
        if modality and modality not in MODALITIES:
            raise ValueError(f"item {item_key[:12]}: modality {modality!r} not one of {MODALITIES}")
        steps: list[dict[str, Any]] = []
        current_modality = item.resolution.modality or item.pair.modality
        if modality and modality != current_modality:
            steps.append({"action": "set_modality", "modality": modality})
        if action:
            step = self._sheet_step(item, action, row)
            if step is not None:
                steps.append(step)
        if not steps:
            if action or modality:
                report.unchanged += 1
            else:
                report.skipped_empty += 1
            return
        for step in steps:
            try:
                decision = self.decide(item_key, reviewer=who, expected_version=expected, **step)
            except ReviewConflict:
                report.conflicts.append(item_key)
                return
            expected = None if expected is None else decision.version
            report.applied += 1

    @staticmethod
    def _sheet_step(item: QueueItem, action: str, row: dict[str, str]) -> dict[str, Any] | None:
        """The decide() arguments for a sheet row, or None when the store already says the same."""
        res = item.resolution
        if action == "choose_caption":
            choice_text = (row.get("choice") or "").strip()
            if not choice_text.isdigit() or not 1 <= int(choice_text) <= len(item.pair.alternatives):
                raise ValueError(
                    f"item {item.item_key[:12]}: choice {choice_text!r} is not 1..{len(item.pair.alternatives)}"
                )
            chosen = item.pair.alternatives[int(choice_text) - 1]
            if res.chosen == chosen and (res.caption_en, res.caption_zh) == (chosen.caption_en, chosen.caption_zh):
                return None
            return {"action": action, "chosen": chosen}
        if action == "edit_caption":
            caption_en = _blank_to_none(row.get("caption_en"))
            caption_zh = _blank_to_none(row.get("caption_zh"))
            if res.caption_changed and (caption_en, caption_zh) == (res.caption_en, res.caption_zh):
                return None
            return {"action": action, "caption_en": caption_en or "", "caption_zh": caption_zh or ""}
        if _csv_action(res) == action:
            return None
        return {"action": action}


def _csv_action(resolution: Resolution) -> str:
    """The sheet action that reproduces a resolution's verdict."""
    if resolution.review_status == "rejected":
        return "reject_not_pair" if resolution.reject_reason == "not_pair" else "reject_not_retinal"
    if resolution.review_status == "accepted":
        return "accept"
    if resolution.review_status == "edited":
        chosen = resolution.chosen
        if chosen is not None and (resolution.caption_en, resolution.caption_zh) == (chosen.caption_en, chosen.caption_zh):
            return "choose_caption"
        return "edit_caption"
    return ""


def _decision_from_row(row: sqlite3.Row) -> Decision:
    return Decision(
        decision_id=row["decision_id"],
        item_key=row["item_key"],
        action=row["action"],
        reviewer=row["reviewer"],
        created=row["created"],
        payload=json.loads(row["payload_json"]),
        outcome=row["outcome"],
        expected_version=row["expected_version"],
        version=row["version"],
        reverts_decision_id=row["reverts_decision_id"],
    )


def _origin_after_edit(text: str | None, origin: str) -> str:
    if text is None:
        return "missing"
    return "printed" if origin == "missing" else origin


def _apply_resolution(pair: Pair, resolution: Resolution) -> Pair:
    """A copy of the pair carrying the reviewer's verdict, caption and modality."""
    update: dict[str, Any] = {"reviewer": resolution.reviewer, "reasons": list(pair.reasons)}
    if resolution.review_status is not None:
        update["review_status"] = resolution.review_status
    if resolution.reject_reason is not None:
        update["reasons"].append(f"review: rejected ({resolution.reject_reason.replace('_', ' ')}) by {resolution.reviewer}")
    if resolution.caption_changed:
        update["caption_en"] = resolution.caption_en
        update["caption_zh"] = resolution.caption_zh
        update["caption_en_origin"] = _origin_after_edit(resolution.caption_en, pair.caption_en_origin)
        update["caption_zh_origin"] = _origin_after_edit(resolution.caption_zh, pair.caption_zh_origin)
        if resolution.chosen is not None and (resolution.caption_en, resolution.caption_zh) == (
            resolution.chosen.caption_en, resolution.chosen.caption_zh
        ):
            panel = f" panel {resolution.chosen.panel}" if resolution.chosen.panel else ""
            update["reasons"].append(f"review: caption of figure {resolution.chosen.figure_id}{panel} chosen")
            if pair.possible_miss:
                # a possible miss takes the identity of the caption the reviewer chose for it
                chosen = resolution.chosen
                update["figure_id"], update["panel"] = chosen.figure_id, chosen.panel
                update["pair_id"] = f"{pair.book}/{chosen.figure_id}/{chosen.panel or '-'}"
        else:
            update["reasons"].append("review: caption edited")
    if resolution.modality is not None:
        update["modality"] = resolution.modality
        update["modality_confidence"] = 1.0
        if resolution.modality != pair.modality:
            update["reasons"].append(f"review: modality {pair.modality} -> {resolution.modality}")
    return pair.model_copy(update=update)
