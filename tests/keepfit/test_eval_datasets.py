"""FLAIR-format dataframes parsed safely, bad rows kept as reasons; the experiment registry."""

from __future__ import annotations

import csv

import pytest

from keepfit.evaluation.datasets import parse_list_literal, read_flair_dataframe
from keepfit.evaluation.registry import load_experiments

PAPER_EXPERIMENTS = {
    "08_ODIR200x3": (["normal", "pathologic myopia", "cataract"], False),
    "25_REFUGE": (["no glaucoma", "glaucoma"], False),
    "13_FIVES": (["normal", "age related macular degeneration", "diabetic retinopathy", "glaucoma"], False),
    "02_MESSIDOR": (None, True),
    "37_DeepDRiD": (None, True),
    "36_ACRIMA": (["no glaucoma", "glaucoma"], False),
    "AMD": (["age related macular degeneration", "normal"], False),
    "05_20x3": (["normal", "retinitis pigmentosa", "macular hole"], False),
    "TAOP": (None, False),
}


def write_csv(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "atributes", "categories"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def touch_images(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_registry_holds_the_paper_experiments():
    registry = load_experiments()
    for name, (classes, graded) in PAPER_EXPERIMENTS.items():
        spec = registry.get(name)
        assert spec.graded is graded
        if classes:
            assert spec.classes == classes
    assert len(registry.get("02_MESSIDOR").classes) == 5
    assert len(registry.get("TAOP").classes) == 5


def test_user_registry_adds_and_overrides(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text(
        "experiments:\n"
        "  - {name: mine, dataframe: mine.csv, classes: [a, b, c]}\n"
        "  - {name: 25_REFUGE, dataframe: refuge_v2.csv, classes: [no glaucoma, glaucoma]}\n"
    )
    registry = load_experiments(extra)
    assert registry.get("mine").classes == ["a", "b", "c"]
    assert registry.get("25_REFUGE").dataframe == "refuge_v2.csv"
    assert "08_ODIR200x3" in registry.names()
    with pytest.raises(KeyError, match="unknown experiment 'nope'"):
        registry.get("nope")


@pytest.mark.parametrize(
    "text, message",
    [
        ("experiments: {}", "top-level 'experiments:' list"),
        ("experiments:\n  - {name: x, dataframe: x.csv, classes: [only]}", "at least two classes"),
        ("experiments: [unclosed", "not valid YAML"),
    ],
)
def test_bad_registry_names_file_and_reason(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_experiments(path)
    assert "bad.yaml" in str(error.value)


def test_list_literals_parsed_without_eval(tmp_path):
    assert parse_list_literal("['glaucoma']", "categories") == ["glaucoma"]
    assert parse_list_literal("['a', 'b ']", "categories") == ["a", "b"]
    marker = tmp_path / "executed"
    with pytest.raises(ValueError, match="not a list literal"):
        parse_list_literal(f"__import__('pathlib').Path('{marker}').touch()", "categories")
    assert not marker.exists()
    with pytest.raises(ValueError, match="list of strings"):
        parse_list_literal("[1, 2]", "categories")


def test_dataframe_rows_become_labels_and_bad_rows_reasons(tmp_path):
    touch_images(tmp_path, ["a/1.png", "a/2.png", "a/3.png", "a/4.png", "a/5.png", "a/6.png"])
    csv_path = write_csv(
        tmp_path / "exp.csv",
        [
            {"image": "a/1.png", "atributes": "[]", "categories": "['Glaucoma']"},
            {"image": "a/2.png", "atributes": "['noisy']", "categories": "['no glaucoma']"},
            {"image": "a/3.png", "atributes": "[]", "categories": "eval('boom')"},
            {"image": "a/4.png", "atributes": "[]", "categories": "['cataract']"},
            {"image": "a/5.png", "atributes": "[]", "categories": "['glaucoma', 'no glaucoma']"},
            {"image": "a/missing.png", "atributes": "[]", "categories": "['glaucoma']"},
            {"image": "a/6.png", "atributes": "[]", "categories": "['glaucoma', 'noisy']"},
        ],
    )
    dataset = read_flair_dataframe(csv_path, tmp_path, ["no glaucoma", "glaucoma"], name="exp")
    assert dataset.relative_paths == ["a/1.png", "a/2.png", "a/6.png"]
    assert dataset.labels.tolist() == [1, 0, 1]
    assert dataset.class_counts() == [1, 2]
    reasons = {row.image: row.reason for row in dataset.skipped}
    assert "not a list literal" in reasons["a/3.png"]
    assert "no experiment class" in reasons["a/4.png"]
    assert "several experiment classes" in reasons["a/5.png"]
    assert "not found" in reasons["a/missing.png"]
    assert [row.row for row in dataset.skipped] == [4, 5, 6, 7]


def test_content_key_changes_with_csv_bytes_and_image_root(tmp_path):
    touch_images(tmp_path, ["x.png"])
    other_root = tmp_path / "other"
    touch_images(other_root, ["x.png"])
    csv_path = write_csv(tmp_path / "e.csv", [{"image": "x.png", "atributes": "[]", "categories": "['a']"}])
    first = read_flair_dataframe(csv_path, tmp_path, ["a", "b"]).content_key
    assert read_flair_dataframe(csv_path, tmp_path, ["a", "b"]).content_key == first
    assert read_flair_dataframe(csv_path, other_root, ["a", "b"]).content_key != first
    write_csv(csv_path, [{"image": "x.png", "atributes": "['noisy']", "categories": "['a']"}])
    assert read_flair_dataframe(csv_path, tmp_path, ["a", "b"]).content_key != first


def test_missing_columns_and_empty_results_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label\nx.png,1\n")
    with pytest.raises(ValueError, match="missing column"):
        read_flair_dataframe(bad, tmp_path, ["a", "b"])
    empty = write_csv(tmp_path / "empty.csv", [{"image": "x.png", "atributes": "[]", "categories": "['c']"}])
    with pytest.raises(ValueError, match="no usable rows"):
        read_flair_dataframe(empty, tmp_path, ["a", "b"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_flair_dataframe(tmp_path / "nope.csv", tmp_path, ["a", "b"])
