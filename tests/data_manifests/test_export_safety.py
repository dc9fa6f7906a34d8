"""`mmretinal export` never deletes what it did not write: the registry, the image store, the work
dir and foreign folders are refused on one line; only an earlier export of the same format is
replaced, and only with --overwrite."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

FORMATS = ("flair-csv", "ffa-ir", "hf", "webdataset", "croissant")


@pytest.fixture
def app():
    return importlib.import_module("flows.cli").app


@pytest.fixture
def published(make_pair, do_publish):
    do_publish([make_pair("book-a", "1-1", "A", seed=1), make_pair("book-b", "2-1", None, seed=2, modality="FFA")])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _export(app, registry_root: Path, out: Path, export_format: str, *extra: str):
    return CliRunner().invoke(
        app, ["export", "mm-retinal/v1", "--format", export_format, "--out", str(out), "--registry", str(registry_root), *extra]
    )


@pytest.mark.parametrize("export_format", FORMATS)
@pytest.mark.parametrize("where", ["registry", "dataset", "version", "store", "work"])
def test_export_into_the_registry_store_or_work_dir_is_refused_and_nothing_changes(
    app, published, registry_root, tmp_path, monkeypatch, export_format, where
):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / ".mmretinal"
    (work / "documents").mkdir(parents=True)
    (work / "documents" / "keep.json").write_text("{}")
    target = {"registry": registry_root, "dataset": registry_root / "mm-retinal", "version": registry_root / "mm-retinal" / "v1",
              "store": registry_root / "images", "work": work / "exports"}[where]
    before = _files(registry_root)
    result = _export(app, registry_root, target, export_format, "--overwrite")
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "overlaps" in lines[0], result.output
    assert _files(registry_root) == before
    assert (work / "documents" / "keep.json").read_text() == "{}"
    assert not list(tmp_path.rglob(".tmp-export-*"))
    verify = CliRunner().invoke(app, ["manifest", "verify", "mm-retinal/v1", "--registry", str(registry_root)])
    assert verify.exit_code == 0, verify.output


@pytest.mark.parametrize("export_format", FORMATS)
def test_a_foreign_folder_is_refused_even_with_overwrite(app, published, registry_root, tmp_path, export_format):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("my thesis")
    for extra in ((), ("--overwrite",)):
        result = _export(app, registry_root, out, export_format, *extra)
        assert result.exit_code == 2 and "not an earlier export" in result.output, result.output
    assert _files(out) == {"chapter1.tex": b"my thesis"}


@pytest.mark.parametrize("export_format", FORMATS)
def test_an_earlier_export_is_replaced_only_with_overwrite_and_only_by_its_own_format(
    app, published, registry_root, tmp_path, export_format
):
    out = tmp_path / "export"
    assert _export(app, registry_root, out, export_format).exit_code == 0
    first = _files(out)
    assert ".mmretinal-export" in first
    again = _export(app, registry_root, out, export_format)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert _files(out) == first
    replaced = _export(app, registry_root, out, export_format, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert set(_files(out)) == set(first)
    other = next(f for f in FORMATS if f != export_format)
    refused = _export(app, registry_root, out, other, "--overwrite")
    assert refused.exit_code == 2 and f"holds a {export_format} export" in refused.output
    assert set(_files(out)) == set(first)
    assert not list(tmp_path.glob(".tmp-export-*")) and not list(tmp_path.glob(".old-export-*"))


def test_an_empty_folder_is_written_into(app, published, registry_root, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert _export(app, registry_root, out, "hf").exit_code == 0
    assert (out / ".mmretinal-export").is_file()
