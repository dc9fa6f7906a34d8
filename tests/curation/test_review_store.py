"""The durable review queue: WAL SQLite, content keys across rebuilds, append-only history,
optimistic concurrency, publish-time application and the offline CSV round trip."""

from __future__ import annotations

import csv
import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from foundation.records import CaptionChoice, Pair
from curation.review_store import (
    NothingToUndo,
    ReviewConflict,
    ReviewStore,
    UnknownItem,
    caption_hash,
    content_key,
)


def make_pair(index: int, *, status: str = "queued", build_tag: str = "", **overrides) -> Pair:
    """A queued pair; `build_tag` changes only the file path, as a rebuild into a new directory would."""
    fields = dict(
        pair_id=f"atlas-a/{index}-1/-",
        book="atlas-a",
        source_pdf="atlas-a.pdf",
        source_pdf_sha256=hashlib.sha256(b"atlas-a").hexdigest(),
        page=index + 1,
        bbox=(10.0, 20.0, 200.0, 180.0),
        figure_id=f"{index}-1",
        image_sha256=hashlib.sha256(f"panel-{index}".encode()).hexdigest(),
        image_file=f"extraction{build_tag}/atlas-a/p{index}.png",
        caption_en=f"Figure {index}: branch retinal vein occlusion.",
        caption_zh=f"图{index} 视网膜分支静脉阻塞",
        caption_en_origin="printed",
        caption_zh_origin="printed",
        modality="CFP",
        modality_confidence=0.4,
        alignment_score=0.5,
        reasons=["caption far from figure"],
        alternatives=[
            CaptionChoice(figure_id=f"{index}-2", caption_en=f"Figure {index}-2: macular hole.", caption_zh="黄斑裂孔"),
            CaptionChoice(figure_id=f"{index}-3", caption_en=f"Figure {index}-3: drusen.", caption_zh=None),
        ],
        review_status=status,
    )
    fields.update(overrides)
    return Pair(**fields)


@pytest.fixture
def store(tmp_path: Path) -> ReviewStore:
    return ReviewStore(tmp_path / "review.sqlite")


@pytest.fixture
def pairs() -> list[Pair]:
    return [make_pair(i) for i in range(4)] + [make_pair(9, status="auto_accepted")]


def test_store_uses_wal_and_a_busy_timeout(store: ReviewStore) -> None:
    assert store.journal_mode() == "wal"
    with store._connect() as conn:
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    raw = sqlite3.connect(store.db_path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    raw.close()
    assert {"builds", "items", "decisions"} <= tables


def test_content_key_is_image_hash_plus_caption_hash() -> None:
    pair = make_pair(1)
    expected_caption = hashlib.sha256((pair.caption_en + "\n" + pair.caption_zh).encode()).hexdigest()
    assert caption_hash(pair.caption_en, pair.caption_zh) == expected_caption
    assert content_key(pair) == hashlib.sha256((pair.image_sha256 + "\n" + expected_caption).encode()).hexdigest()
    no_zh = make_pair(1, caption_zh=None)
    assert caption_hash(None, None) == hashlib.sha256(b"\n").hexdigest()
    assert content_key(no_zh) != content_key(pair)


def test_register_build_enqueues_queued_pairs_idempotently(store: ReviewStore, pairs: list[Pair]) -> None:
    assert store.register_build("b1", "mm-retinal", pairs) == 4
    assert store.register_build("b1", "mm-retinal", pairs) == 4
    queue = store.queue("b1")
    assert [item.position for item in queue] == [0, 1, 2, 3]
    assert [item.pair.pair_id for item in queue] == [p.pair_id for p in pairs[:4]]
    assert all(item.version == 0 and item.decision is None and not item.decided for item in queue)
    builds = store.list_builds()
    assert [(b.build_id, b.dataset, b.decided, b.total) for b in builds] == [("b1", "mm-retinal", 0, 4)]
    assert builds[0].source["pdfs"] == [{"file": "atlas-a.pdf", "sha256": pairs[0].source_pdf_sha256}]


def test_decisions_survive_reopening_the_database(tmp_path: Path, pairs: list[Pair]) -> None:
    first = ReviewStore(tmp_path / "review.sqlite")
    first.register_build("b1", "mm-retinal", pairs)
    key = first.queue("b1")[0].item_key
    first.decide(key, "accept", "ann", expected_version=0)
    reopened = ReviewStore(tmp_path / "review.sqlite")
    assert reopened.current_decision(key).action == "accept"
    assert reopened.progress("b1") == (1, 4)
    assert reopened.queue("b1", include_decided=False)[0].position == 1


def test_decisions_follow_content_across_rebuilds(store: ReviewStore, pairs: list[Pair]) -> None:
    store.register_build("b1", "mm-retinal", pairs)
    first, second = store.queue("b1")[:2]
    store.decide(first.item_key, "reject_not_retinal", "ann")
    store.decide(second.item_key, "accept", "ann")
    rebuilt = [make_pair(i, build_tag="-v2") for i in range(4)]
    rebuilt[1] = make_pair(1, build_tag="-v2", caption_en="Figure 1: a different proposed caption.")
    store.register_build("b2", "mm-retinal", rebuilt)
    queue = {item.pair.figure_id: item for item in store.queue("b2")}
    assert queue["0-1"].item_key == first.item_key
    assert queue["0-1"].resolution.review_status == "rejected"
    assert queue["0-1"].pair.image_file.startswith("extraction-v2/")
    assert not queue["1-1"].decided, "a new proposed caption is a new item"
    assert store.progress("b2") == (1, 4)
    assert store.progress("b1") == (2, 4)


def test_undo_reverts_latest_decision_and_keeps_history(store: ReviewStore, pairs: list[Pair]) -> None:
    store.register_build("b1", "mm-retinal", pairs)
    key = store.queue("b1")[0].item_key
    accepted = store.decide(key, "accept", "ann", expected_version=0)
    store.decide(key, "set_modality", "ann", modality="FFA", expected_version=1)
    assert store.resolution(key).modality == "FFA"
    undo = store.decide(key, "undo", "ann", expected_version=2)
    assert store.resolution(key).modality is None
    assert store.current_decision(key) == accepted
    assert undo.version == 3
    store.decide(key, "undo", "bob", expected_version=3)
    assert store.current_decision(key) is None
    assert not store.item(key).decided
    with pytest.raises(NothingToUndo):
        store.decide(key, "undo", "bob")
    history = store.history(key)
    assert [d.action for d in history] == ["accept", "set_modality", "undo", "undo"]
    assert history[2].reverts_decision_id == history[1].decision_id
    assert history[3].reverts_decision_id == history[0].decision_id
    assert [d.version for d in history] == [1, 2, 3, 4]


def test_stale_version_is_recorded_as_conflict_and_not_applied(store: ReviewStore, pairs: list[Pair]) -> None:
    store.register_build("b1", "mm-retinal", pairs)
    key = store.queue("b1")[0].item_key
    store.decide(key, "accept", "ann", expected_version=0)
    with pytest.raises(ReviewConflict) as caught:
        store.decide(key, "edit_caption", "bob", caption_en="Edited by bob.", expected_version=0)
    conflict = caught.value
    assert conflict.current_version == 1
    assert conflict.current.action == "accept" and conflict.current.reviewer == "ann"
    assert conflict.attempted.outcome == "conflict"
    assert conflict.attempted.payload == {"caption_en": "Edited by bob."}
    assert store.resolution(key, store.item(key).pair).review_status == "accepted"
    assert store.version(key) == 1
    reapplied = store.decide(key, "edit_caption", "bob", caption_en="Edited by bob.", expected_version=1)
    assert reapplied.outcome == "applied" and reapplied.version == 2
    item = store.item(key)
    assert item.resolution.caption_en == "Edited by bob."
    assert item.resolution.review_status == "edited"
    assert [(d.reviewer, d.outcome) for d in store.history(key)] == [
        ("ann", "applied"), ("bob", "conflict"), ("bob", "applied")
    ]


def test_decide_validates_its_input(store: ReviewStore, pairs: list[Pair]) -> None:
    store.register_build("b1", "mm-retinal", pairs)
    key = store.queue("b1")[0].item_key
    with pytest.raises(UnknownItem):
        store.decide("0" * 64, "accept", "ann")
    with pytest.raises(ValueError, match="unknown action"):
        store.decide(key, "approve", "ann")
    with pytest.raises(ValueError, match="modality"):
        store.decide(key, "set_modality", "ann", modality="MRI")
    with pytest.raises(ValueError, match="CaptionChoice"):
        store.decide(key, "choose_caption", "ann")
    with pytest.raises(ValueError, match="reviewer"):
        store.decide(key, "accept", "  ")
    assert store.history(key) == []


def test_apply_decisions_sets_status_caption_modality_and_reviewer(store: ReviewStore, pairs: list[Pair]) -> None:
    store.register_build("b1", "mm-retinal", pairs)
    keys = [item.item_key for item in store.queue("b1")]
    store.decide(keys[0], "accept", "ann")
    store.decide(keys[1], "reject_not_pair", "bob")
    store.decide(keys[2], "choose_caption", "ann", chosen=pairs[2].alternatives[1])
    store.decide(keys[3], "edit_caption", "cy", caption_en="Edited caption.", caption_zh="")
    store.decide(keys[3], "set_modality", "cy", modality="OCT")
    rebuilt = [make_pair(i, build_tag="-v2") for i in range(4)] + [make_pair(7)]
    published = store.apply_decisions(rebuilt)
    assert [p.review_status for p in published] == ["accepted", "rejected", "edited", "edited", "queued"]
    assert [p.reviewer for p in published] == ["ann", "bob", "ann", "cy", None]
    assert published[0].caption_en == rebuilt[0].caption_en
    assert published[2].caption_en == "Figure 2-3: drusen."
    assert published[2].caption_zh is None and published[2].caption_zh_origin == "missing"
    assert (published[3].caption_en, published[3].caption_zh) == ("Edited caption.", None)
    assert published[3].modality == "OCT" and published[3].modality_confidence == 1.0
    assert any("modality CFP -> OCT" in reason for reason in published[3].reasons)
    assert published[4] == rebuilt[4]
    assert published[0].pair_id == rebuilt[0].pair_id


def test_csv_round_trip(store: ReviewStore, pairs: list[Pair], tmp_path: Path) -> None:
    store.register_build("b1", "mm-retinal", pairs)
    keys = [item.item_key for item in store.queue("b1")]
    store.decide(keys[0], "accept", "ann")
    sheet = tmp_path / "sheet.csv"
    assert store.export_csv(sheet, "b1") == 4
    with sheet.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["item_key"] for row in rows] == keys
    assert (rows[0]["action"], rows[0]["reviewer"], rows[0]["version"]) == ("accept", "ann", "1")
    assert rows[1]["proposed_caption_zh"] == pairs[1].caption_zh
    rows[1].update(action="reject_not_retinal")
    rows[2].update(action="choose_caption", choice="1")
    rows[3].update(action="edit_caption", caption_en="Offline edit.", modality="FFA")
    rows.append({**rows[3], "item_key": "f" * 64})
    rows.append({**rows[3], "item_key": keys[3], "action": "approve"})
    with sheet.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = store.import_csv(sheet, reviewer="dee")
    assert report.applied == 4, report
    assert report.unchanged == 1
    assert report.unknown_keys == ["f" * 64]
    assert len(report.errors) == 1 and "row 7" in report.errors[0] and "approve" in report.errors[0]
    assert store.resolution(keys[1]).review_status == "rejected"
    chosen = store.item(keys[2]).resolution
    assert chosen.caption_en == pairs[2].alternatives[0].caption_en and chosen.reviewer == "dee"
    edited = store.item(keys[3]).resolution
    assert (edited.caption_en, edited.caption_zh, edited.modality) == ("Offline edit.", pairs[3].caption_zh, "FFA")
    assert [d.action for d in store.history(keys[3])] == ["set_modality", "edit_caption"]

    again = tmp_path / "again.csv"
    store.export_csv(again)
    with again.open(encoding="utf-8") as handle:
        exported = {row["item_key"]: row for row in csv.DictReader(handle)}
    assert exported[keys[2]]["action"] == "choose_caption" and exported[keys[2]]["choice"] == "1"
    assert exported[keys[3]]["caption_en"] == "Offline edit." and exported[keys[3]]["modality"] == "FFA"
    history_size = sum(len(store.history(k)) for k in keys)
    reimport = store.import_csv(again)
    assert (reimport.applied, reimport.unchanged, reimport.conflicts) == (0, 4, [])
    assert sum(len(store.history(k)) for k in keys) == history_size

    other = ReviewStore(tmp_path / "other.sqlite")
    other.register_build("b1", "mm-retinal", pairs)
    stale = other.import_csv(again)
    assert len(stale.conflicts) == 4, "versions from another database are stale"
    forced = other.import_csv(again, force=True)
    assert forced.applied == 5
    assert [other.resolution(k).review_status for k in keys] == ["accepted", "rejected", "edited", "edited"]


def test_import_reports_a_missing_column(store: ReviewStore, tmp_path: Path) -> None:
    sheet = tmp_path / "bad.csv"
    sheet.write_text("key,verdict\nx,accept\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.csv.*item_key"):
        store.import_csv(sheet)


def test_two_threads_deciding_lose_nothing(store: ReviewStore) -> None:
    store.register_build("b1", "mm-retinal", [make_pair(i) for i in range(20)])
    keys = [item.item_key for item in store.queue("b1")]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def review(reviewer: str, modality: str) -> None:
        try:
            barrier.wait()
            for key in keys:
                store.decide(key, "set_modality", reviewer, modality=modality)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=review, args=(name, mod)) for name, mod in (("ann", "FFA"), ("bob", "OCT"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for key in keys:
        history = store.history(key)
        assert sorted(d.reviewer for d in history) == ["ann", "bob"]
        assert [d.version for d in history] == [1, 2]
        assert store.version(key) == 2


# Each reviewer is a separate Python process (as two people on two review pages would be);
# both wait for a start file so their writes really overlap.
_REVIEWER_PROCESS = """
import json, sys, time
from pathlib import Path
from curation.review_store import ReviewConflict, ReviewStore

db, keys_file, reviewer, start_file = sys.argv[1:5]
keys = json.loads(Path(keys_file).read_text())
store = ReviewStore(db)
while not Path(start_file).exists():
    time.sleep(0.01)
outcomes = []
for key in keys:
    try:
        store.decide(key, "accept" if reviewer == "ann" else "reject_not_pair", reviewer, expected_version=0)
        outcomes.append("applied")
    except ReviewConflict:
        outcomes.append("conflict")
print(json.dumps(outcomes))
"""


def test_two_processes_on_the_same_items_get_one_winner_each_and_lose_nothing(store: ReviewStore, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    store.register_build("b1", "mm-retinal", [make_pair(i) for i in range(30)])
    keys = [item.item_key for item in store.queue("b1")]
    keys_file, start_file = tmp_path / "keys.json", tmp_path / "start"
    keys_file.write_text(json.dumps(keys))
    reviewers = [
        subprocess.Popen(
            [sys.executable, "-c", _REVIEWER_PROCESS, str(store.db_path), str(keys_file), name, str(start_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("ann", "bob")
    ]
    start_file.touch()
    ann, bob = (json.loads(process.communicate(timeout=120)[0]) for process in reviewers)
    for index, key in enumerate(keys):
        history = store.history(key)
        assert len(history) == 2, "both decisions are in the history"
        assert sorted(d.outcome for d in history) == ["applied", "conflict"]
        assert sorted([ann[index], bob[index]]) == ["applied", "conflict"]
        winner = next(d for d in history if d.outcome == "applied")
        assert store.current_decision(key) == winner
        assert store.version(key) == 1
