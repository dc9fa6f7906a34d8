"""The real-document corpus tooling: extraction from clones with digest checks, the halves, the
committed sources and truth, the overlay, and the scorer against a truth whose answer is known."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pymupdf
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.corpus import get as corpus_get  # noqa: E402
from bench.corpus.corpus import (  # noqa: E402
    RESERVED,
    SOURCES,
    TRUTH,
    CorpusError,
    from_sample_truth,
    half_of,
    read_sources,
    read_truth,
    reserved_digests,
)
from bench.corpus.score import AGREES, RETINAL_MODALITIES, score_document, summarise  # noqa: E402

MODALITIES = set(AGREES) | {"derived", "diagram", "chart", "photo"}
KINDS = {"clean", "screenshot", "diagram", "chart", "mosaic", "composite", "derived", None}


def _pdf(path: Path, text: str) -> bytes:
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), text)
    doc.save(path)
    doc.close()
    return path.read_bytes()


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def clones(tmp_path: Path):
    """A folder of clones (owner+name layout) with one repository of three PDFs, and their sources."""
    repo = tmp_path / "clones" / "eye-lab+atlas"
    repo.mkdir(parents=True)
    _git("init", "-q", cwd=repo)
    digests = {}
    for name in ("good", "tampered", "reserved"):
        digests[name] = hashlib.sha256(_pdf(repo / f"{name}.pdf", f"Fig. 1 {name}")).hexdigest()
    _git("add", ".", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pdfs", cwd=repo)
    commit = _git("rev-parse", "HEAD", cwd=repo)
    sources = tmp_path / "sources.jsonl"
    lines = []
    for name in ("good", "tampered", "reserved"):
        sha = digests[name] if name != "tampered" else "0" * 64
        lines.append({"name": f"doc_{name}", "repository": "eye-lab/atlas", "commit": commit, "path": f"{name}.pdf", "sha256": sha})
    lines.append({"name": "doc_elsewhere", "repository": "other/repo", "commit": commit, "path": "x.pdf", "sha256": "1" * 64})
    sources.write_text("".join(json.dumps(line) + "\n" for line in lines))
    reserved = tmp_path / "reserved.sha256"
    reserved.write_text(digests["reserved"] + "\n")
    return tmp_path / "clones", sources, reserved, digests


def test_get_extracts_checked_files_and_refuses_reserved_and_tampered(clones, tmp_path, capsys):
    folder, sources, reserved, digests = clones
    out = tmp_path / "corpus"
    status = corpus_get.main([str(folder), "--out", str(out), "--sources", str(sources), "--reserved", str(reserved)])
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert sorted(p.name for p in out.iterdir()) == ["doc_good.pdf"]  # nothing else written, no temporary left
    assert hashlib.sha256((out / "doc_good.pdf").read_bytes()).hexdigest() == digests["good"]
    assert any(line.startswith("error: doc_tampered: sha256 ") and "not written" in line for line in err)
    assert any(line.startswith("error: doc_reserved: ") and "reserved" in line for line in err)
    assert any(line.startswith("missing clone: other/repo") for line in err)
    # a second run finds the good file in place and does not rewrite it
    before = (out / "doc_good.pdf").stat().st_mtime_ns
    corpus_get.main([str(folder), "--out", str(out), "--sources", str(sources), "--reserved", str(reserved)])
    assert (out / "doc_good.pdf").stat().st_mtime_ns == before
    assert "1 already present" in capsys.readouterr().out


def test_get_reports_an_unreadable_sources_file_on_one_line(tmp_path, capsys):
    bad = tmp_path / "sources.jsonl"
    bad.write_text('{"name": "a"}\nnot json\n')
    assert corpus_get.main([str(tmp_path), "--out", str(tmp_path / "o"), "--sources", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err


def test_halves_follow_the_digest_and_a_pin():
    assert half_of({"sha256": f"{159:08x}" + "a" * 56}) == "tune"  # 159 % 100 = 59
    assert half_of({"sha256": f"{160:08x}" + "a" * 56}) == "check"  # 160 % 100 = 60
    assert half_of({"sha256": f"{160:08x}" + "a" * 56, "half": "tune"}) == "tune"
    shares = [half_of({"sha256": hashlib.sha256(str(n).encode()).hexdigest()}) for n in range(1000)]
    assert 0.55 < shares.count("tune") / len(shares) < 0.65


def test_committed_sources_and_truth_are_consistent():
    sources = read_sources(SOURCES)
    truth = read_truth(TRUTH)
    names = {s["name"] for s in sources}
    reserved = reserved_digests(RESERVED)
    for source in sources:
        assert len(source["sha256"]) == 64 and len(source["commit"]) == 40, source["name"]
        assert source["sha256"] not in reserved, source["name"]
        assert source.get("language") and source.get("kind"), source["name"]
    assert set(truth) <= names, set(truth) - names
    for name, figures in truth.items():
        for figure in figures:
            where = f"{name} p{figure['page']} {figure.get('label')}"
            assert figure.get("kind") in KINDS, where
            assert isinstance(figure.get("retinal"), bool), where
            assert figure.get("panels"), where
            for panel in figure["panels"]:
                assert panel.get("modality") in MODALITIES | {"other"}, where
                if panel["modality"] != "other":  # the former development set marks retinal screenshots "other"
                    assert panel.get("retinal") == (panel["modality"] in RETINAL_MODALITIES), where
                box = panel.get("bbox")
                if box:
                    assert box[0] < box[2] and box[1] < box[3], where
            assert figure["retinal"] == any(p.get("retinal") for p in figure["panels"]), where


def test_reading_a_bad_truth_line_names_the_file_and_line(tmp_path):
    bad = tmp_path / "truth.jsonl"
    bad.write_text('{"doc": "a", "page": 1}\n[1, 2]\n')
    with pytest.raises(CorpusError, match=r"truth.jsonl:2: not a JSON object"):
        read_truth(bad)


def test_overlay_draws_truth_boxes_on_a_page_render(tmp_path):
    pdf = tmp_path / "doc_a.pdf"
    _pdf(pdf, "Fig. 1 A fundus photograph.")
    truth = tmp_path / "truth.jsonl"
    figure = {"doc": "doc_a", "page": 1, "label": "Fig. 1", "bbox": [100, 100, 300, 300], "kind": "clean",
              "caption_bbox": [100, 310, 300, 330], "panels": [{"bbox": [110, 110, 200, 200], "label": "A", "modality": "CFP"}]}
    truth.write_text(json.dumps(figure) + "\n")
    out = tmp_path / "overlays"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "corpus" / "overlay.py"), str(tmp_path), "--truth", str(truth),
                           "--out", str(out), "--dpi", "72"], capture_output=True, text=True, check=True)
    assert "1 page(s) drawn" in done.stdout
    pixmap = pymupdf.Pixmap(str(out / "doc_a-p1.png"))
    assert pixmap.pixel(200, 100)[:3] != (255, 255, 255)  # the figure box's top edge is drawn
    assert pixmap.pixel(150, 250)[:3] == (255, 255, 255)  # inside the box the page stays white


def test_scorer_on_a_generated_atlas_finds_what_truth_says_and_counts_wrong_modalities(sample_build, sample_truth):
    _, record, _ = sample_build
    truth = from_sample_truth(sample_truth)
    runs = {Path(doc.pdf).stem: doc for doc in record.documents}
    born_digital = [name for name in truth if not any(r.scanned for r in sample_truth if Path(r.pdf).stem == name)]
    assert born_digital
    scores = [score_document(name, "tune", runs[name], truth[name]) for name in born_digital]
    total = summarise("all", "tune", scores).metrics()
    assert total["retinal_recall"] == 1.0
    assert total["panel_recall"] >= 0.95 and total["panel_precision"] >= 0.95
    assert total["modality_agreement"] == 1.0
    assert total["auto_wrong"] <= 0.02

    # the same build against a truth whose modalities are all wrong: every matched pair disagrees
    swapped = copy.deepcopy(truth[born_digital[0]])
    for figure in swapped:
        for panel in figure["panels"]:
            if panel["retinal"]:
                panel["modality"] = "OCT" if panel["modality"] != "OCT" else "FFA"
    wrong = score_document(born_digital[0], "tune", runs[born_digital[0]], swapped)
    assert wrong.metrics()["modality_agreement"] == 0.0
    assert wrong.wrong["wrong_modality"] == wrong.counts["auto_accepted"] > 0

    # panels moved off their place: pairs no longer match a truth box
    shifted = copy.deepcopy(truth[born_digital[0]])
    for figure in shifted:
        for panel in figure["panels"]:
            x0, y0, x1, y1 = panel["bbox"]
            panel["bbox"] = [x0 + (x1 - x0) * 0.6, y0, x1 + (x1 - x0) * 0.6, y1]
    moved = score_document(born_digital[0], "tune", runs[born_digital[0]], shifted).metrics()
    assert moved["panel_recall"] == 0.0 and moved["auto_wrong"] == 1.0


def test_real_pdfs_bench_prints_both_halves_on_a_generated_corpus(tmp_path):
    """bench/real_pdfs.py end to end on two generated books, one pinned to each half."""
    from testbed.sample_atlas import generate_sample_atlas, read_truth as read_sample_truth

    atlas = generate_sample_atlas(tmp_path / "corpus", seed=3, books=["atlas-en", "atlas-zh-only"])
    truth = from_sample_truth(read_sample_truth(atlas.truth_path))
    sources = []
    for pdf, half in zip(sorted(atlas.pdfs), ("tune", "check"), strict=True):
        sources.append({"name": pdf.stem, "repository": "generated/atlas", "commit": "0" * 40, "path": pdf.name,
                        "sha256": hashlib.sha256(pdf.read_bytes()).hexdigest(), "half": half, "language": "en", "kind": "atlas"})
    (tmp_path / "sources.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sources))
    (tmp_path / "truth.jsonl").write_text("".join(json.dumps(f) + "\n" for figures in truth.values() for f in figures))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "real_pdfs.py"), str(tmp_path / "corpus"),
                           "--sources", str(tmp_path / "sources.jsonl"), "--truth", str(tmp_path / "truth.jsonl"),
                           "--json", str(tmp_path / "rows.json")], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.strip().startswith("tune") and "check" in line)
    assert header.split() == ["tune", "check"]
    recall = next(line for line in lines if line.startswith("ret.rec"))
    assert recall.split()[1:] == ["1.000", "1.000"]
    assert lines[lines.index("tune half, per document") + 2].startswith(sources[0]["name"])
    assert sources[1]["name"] not in done.stdout  # the check half is not listed document by document
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {row["half"] for row in rows} == {"tune", "check"}


def test_simulated_scans_are_image_only_copies_with_the_same_pages(tmp_path):
    from bench.corpus.scans import rasterise

    source = tmp_path / "doc.pdf"
    doc = pymupdf.open()
    for size in ((595, 842), (842, 595)):
        doc.new_page(width=size[0], height=size[1]).insert_text((72, 100), "Fig. 1. Colour fundus photograph.", fontsize=14)
    doc.save(source)
    doc.close()
    first = rasterise(source, tmp_path / "a" / "doc.pdf", dpi=72)
    second = rasterise(source, tmp_path / "b" / "doc.pdf", dpi=72)
    def page_images(path):
        with pymupdf.open(path) as scan:
            return [scan.extract_image(page.get_images()[0][0])["image"] for page in scan]

    assert page_images(first) == page_images(second)  # seeded: the same scan every time
    with pymupdf.open(first) as scan:
        assert [tuple(p.rect) for p in scan] == [(0, 0, 595, 842), (0, 0, 842, 595)]
        for page in scan:
            assert page.get_text().strip() == ""
            (image,) = page.get_image_info()
            assert pymupdf.Rect(image["bbox"]) == page.rect
