"""Translation through the real argostranslate path with tiny packages built for the test session."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import sys
from pathlib import Path

import pytest

from foundation.records import Pair
from pipeline.translate import (
    ArgosTranslator,
    Glossary,
    TermMatch,
    TranslatorOptions,
    fill_missing_language,
    load_glossary,
    protected_spans,
    read_glossary,
    restore_placeholders,
)


def _load_tiny_argos():
    """Import tests/support/tiny_argos.py by path: argostranslate installs its own top-level `tests`."""
    path = Path(__file__).resolve().parents[1] / "support" / "tiny_argos.py"
    spec = importlib.util.spec_from_file_location("mm_retinal_tiny_argos", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_packages(tmp_path_factory) -> dict[str, Path]:
    tiny_argos = _load_tiny_argos()
    out = tmp_path_factory.mktemp("tiny-argos")
    return {
        "zh->en": tiny_argos.build_tiny_argos_package(out, "zh", "en", package_version="0.1", seed=1),
        "en->zh": tiny_argos.build_tiny_argos_package(out, "en", "zh", package_version="0.1", seed=2),
    }


@pytest.fixture(scope="session")
def argos_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("argos-home")


@pytest.fixture(scope="session")
def installed_dir(tiny_packages, argos_home, tmp_path_factory) -> Path:
    packages_dir = tmp_path_factory.mktemp("argos-packages")
    ArgosTranslator(
        TranslatorOptions(packages_dir=packages_dir, argos_home=argos_home, package_files=list(tiny_packages.values()))
    )
    return packages_dir


def _options(packages_dir: Path, argos_home: Path, **extra) -> TranslatorOptions:
    return TranslatorOptions(packages_dir=packages_dir, argos_home=argos_home, max_decoding_length=8, **extra)


def _pair(figure_id: str, en: str | None, zh: str | None) -> Pair:
    return Pair(
        pair_id=f"book/{figure_id}/-",
        book="book",
        source_pdf="book.pdf",
        source_pdf_sha256="0" * 64,
        page=1,
        bbox=(0, 0, 10, 10),
        figure_id=figure_id,
        image_sha256="1" * 64,
        image_file=f"{figure_id}.png",
        caption_en=en,
        caption_zh=zh,
    )


ZH_CAPTIONS = [
    "视网膜中央静脉阻塞。荧光素眼底血管造影示荧光素渗漏。",
    "糖尿病视网膜病变。眼底彩照示微动脉瘤、硬性渗出及棉絮斑，同图1-1。",
    "年龄相关性黄斑变性。吲哚菁绿血管造影示玻璃膜疣。",
]
EN_CAPTIONS = [
    "Central retinal vein occlusion. Fundus fluorescein angiography shows fluorescein leakage.",
    "Diabetic retinopathy. Cotton-wool spots and hard exudates (see Figure 3-2).",
    "Red-free photograph. Optical coherence tomography shows drusen.",
]


def test_installs_packages_by_path_into_the_given_directory(installed_dir: Path) -> None:
    folders = sorted(p.name for p in installed_dir.iterdir())
    assert folders == ["translate-en_zh-0_1", "translate-zh_en-0_1"]
    assert all((installed_dir / name / "metadata.json").is_file() for name in folders)


def test_zh_to_en_runs_argostranslate_and_enforces_the_glossary(installed_dir: Path, argos_home: Path) -> None:
    translator = ArgosTranslator(_options(installed_dir, argos_home))
    results = translator.translate(ZH_CAPTIONS, "zh", "en")

    assert len(results) == len(ZH_CAPTIONS)
    version = importlib.metadata.version("argostranslate")
    for source_text, result in zip(ZH_CAPTIONS, results):
        assert result.source_text == source_text
        assert result.origin == "machine"
        assert result.text and result.text.strip()
        assert result.engine == f"argostranslate {version}"
        assert result.package == "zh->en 0.1"
        terms = translator.glossary.find(source_text, "zh")
        assert terms, "every sample caption holds glossary terms"
        for term in terms:
            assert term.target in result.text, (term.source, result.text)
    assert "central retinal vein occlusion" in results[0].text
    assert "fundus fluorescein angiography" in results[0].text
    assert "Same patient as Figure 1-1" in results[1].text
    assert set(results[2].glossary_terms) >= {"年龄相关性黄斑变性", "吲哚菁绿血管造影", "玻璃膜疣"}


def test_en_to_zh_keeps_glossary_terms_and_cross_references(installed_dir: Path, argos_home: Path) -> None:
    translator = ArgosTranslator(_options(installed_dir, argos_home))
    results = translator.translate(EN_CAPTIONS, "en", "zh")

    assert [r.package for r in results] == ["en->zh 0.1"] * 3
    assert "视网膜中央静脉阻塞" in results[0].text
    assert "荧光素眼底血管造影" in results[0].text and "荧光素渗漏" in results[0].text
    assert "棉絮斑" in results[1].text and "硬性渗出" in results[1].text
    assert "（见图3-2）" in results[1].text
    assert "无赤光" in results[2].text and "光学相干断层扫描" in results[2].text and "玻璃膜疣" in results[2].text
    assert not any(re.search(r"[\u4e00-\u9fff]\s+[\u4e00-\u9fff]", r.text) for r in results)


def test_cache_avoids_retranslating_in_memory_and_across_runs(installed_dir: Path, argos_home: Path, tmp_path: Path) -> None:
    cache_path = tmp_path / "translations.sqlite"
    first = ArgosTranslator(_options(installed_dir, argos_home, cache_path=cache_path))
    originals = first.translate(ZH_CAPTIONS[:2], "zh", "en")
    calls = first.engine_calls
    assert calls >= 1 and not any(r.cached for r in originals)

    again = first.translate(ZH_CAPTIONS[:2], "zh", "en")
    assert first.engine_calls == calls
    assert all(r.cached for r in again)
    assert [r.text for r in again] == [r.text for r in originals]
    first.close()

    rebuilt = ArgosTranslator(_options(installed_dir, argos_home, cache_path=cache_path))
    from_disk = rebuilt.translate(ZH_CAPTIONS[:2], "zh", "en")
    assert rebuilt.engine_calls == 0
    assert [r.text for r in from_disk] == [r.text for r in originals]


def test_fill_missing_language_sets_origins_and_engine(installed_dir: Path, argos_home: Path) -> None:
    translator = ArgosTranslator(_options(installed_dir, argos_home))
    pairs = [
        _pair("1-1", None, ZH_CAPTIONS[0]),
        _pair("1-2", EN_CAPTIONS[1], None),
        _pair("1-3", EN_CAPTIONS[2], ZH_CAPTIONS[2]),
    ]
    filled = fill_missing_language(pairs, translator)

    zh_only, en_only, both = filled
    assert zh_only.caption_zh == ZH_CAPTIONS[0] and zh_only.caption_zh_origin == "printed"
    assert zh_only.caption_en_origin == "machine" and "central retinal vein occlusion" in zh_only.caption_en
    assert zh_only.translation_engine.startswith("argostranslate ") and "zh->en 0.1" in zh_only.translation_engine
    assert en_only.caption_en_origin == "printed" and en_only.caption_zh_origin == "machine"
    assert "棉絮斑" in en_only.caption_zh and "en->zh 0.1" in en_only.translation_engine
    assert both.caption_en_origin == both.caption_zh_origin == "printed" and both.translation_engine is None
    assert pairs[0].caption_en is None and pairs[0].caption_en_origin == "missing", "inputs stay unchanged"


def test_missing_package_marks_missing_and_warns_once(argos_home: Path, tmp_path: Path, caplog) -> None:
    empty = tmp_path / "no-packages"
    empty.mkdir()
    translator = ArgosTranslator(_options(empty, argos_home))
    pairs = [_pair(f"2-{i}", None, text) for i, text in enumerate(ZH_CAPTIONS)]

    with caplog.at_level(logging.WARNING, logger="pipeline.translate"):
        first = fill_missing_language(pairs, translator)
        second = fill_missing_language(pairs[:1], translator)

    for pair in first + second:
        assert pair.caption_en is None and pair.caption_en_origin == "missing"
        assert pair.caption_zh_origin == "printed" and pair.translation_engine is None
        assert any("no zh->en translation package" in reason for reason in pair.reasons)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "pipeline.translate"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "zh->en" in message and "install_from_path" in message and str(empty) in message


def test_missing_direction_is_independent_of_the_installed_one(tiny_packages, argos_home: Path, tmp_path: Path, caplog) -> None:
    only_zh_en = tmp_path / "zh-en-only"
    translator = ArgosTranslator(
        _options(only_zh_en, argos_home, package_files=[tiny_packages["zh->en"]])
    )
    pairs = [_pair("3-1", None, ZH_CAPTIONS[0]), _pair("3-2", EN_CAPTIONS[0], None), _pair("3-3", EN_CAPTIONS[1], None)]
    with caplog.at_level(logging.WARNING, logger="pipeline.translate"):
        filled = fill_missing_language(pairs, translator)
    assert filled[0].caption_en_origin == "machine"
    assert [p.caption_zh_origin for p in filled[1:]] == ["missing", "missing"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "pipeline.translate"]
    assert len(warnings) == 1 and "en->zh" in warnings[0]


def test_translator_uses_spacy_sentence_splitting_by_default(installed_dir: Path, argos_home: Path, monkeypatch) -> None:
    monkeypatch.delenv("ARGOS_CHUNK_TYPE", raising=False)
    translator = ArgosTranslator(_options(installed_dir, argos_home))
    assert translator.available("zh", "en")
    from argostranslate import settings
    from argostranslate.sbd import SpacySentencizerSmall

    assert settings.chunk_type == settings.ChunkType.SPACY
    loaded = translator._package_for("zh", "en")
    assert isinstance(loaded.translation.sentencizer, SpacySentencizerSmall)
    assert loaded.translation.sentencizer.split_sentences("视盘水肿。黄斑出血。") == ["视盘水肿。", "黄斑出血。"]


def test_user_glossary_extends_and_overrides(installed_dir: Path, argos_home: Path, tmp_path: Path) -> None:
    extra = tmp_path / "my_glossary.tsv"
    extra.write_text("zh\ten\ten_variants\n视网膜前膜\tpreretinal membrane\t\n黄斑\tmacula lutea\tmacula\n", encoding="utf-8")
    glossary = load_glossary([extra])
    assert len(glossary) == len(load_glossary()) + 1
    assert glossary.translate_term("黄斑", "zh") == "macula lutea"

    translator = ArgosTranslator(_options(installed_dir, argos_home, glossary_files=[extra]))
    result = translator.translate(["黄斑视网膜前膜。"], "zh", "en")[0]
    assert "preretinal membrane" in result.text and "macula lutea" in result.text


def test_builtin_glossary_covers_the_key_terms() -> None:
    glossary = load_glossary()
    assert len(glossary) >= 80
    expected = {
        "视盘": "optic disc",
        "黄斑": "macula",
        "荧光素渗漏": "fluorescein leakage",
        "棉絮斑": "cotton-wool spots",
        "硬性渗出": "hard exudates",
        "微动脉瘤": "microaneurysms",
        "玻璃膜疣": "drusen",
        "视网膜中央静脉阻塞": "central retinal vein occlusion",
        "荧光素眼底血管造影": "fundus fluorescein angiography",
        "吲哚菁绿血管造影": "indocyanine green angiography",
        "光学相干断层扫描": "optical coherence tomography",
        "无赤光": "red-free",
    }
    for zh, en in expected.items():
        assert glossary.translate_term(zh, "zh") == en
        assert glossary.translate_term(en, "en") == zh


def test_glossary_matches_longest_terms_and_english_variants() -> None:
    glossary = load_glossary()
    zh_terms = [m.source for m in glossary.find("视网膜中央静脉阻塞伴黄斑水肿", "zh")]
    assert zh_terms == ["视网膜中央静脉阻塞", "黄斑水肿"]
    en = glossary.find("Optic disk swelling with cotton wool spots on OCT.", "en")
    assert [(m.source, m.target) for m in en] == [
        ("Optic disk", "视盘"),
        ("cotton wool spots", "棉絮斑"),
        ("OCT", "光学相干断层扫描"),
    ]
    assert glossary.find("The doctor looked at the picture.", "en") == []


def test_protected_spans_carry_cross_references_across_languages() -> None:
    spans = protected_spans("同图1-1，黄斑区硬性渗出（见图3-2）。", "zh", load_glossary())
    assert [s.target for s in spans] == ["Same patient as Figure 1-1", "macular area", "hard exudates", "(see Figure 3-2)"]
    spans = protected_spans("Same patient as Figure 1-1A. Drusen.", "en", load_glossary())
    assert [s.target for s in spans] == ["同图1-1A", "玻璃膜疣"]


def test_restore_placeholders_requires_every_placeholder_once() -> None:
    spans = [
        TermMatch(start=0, end=2, source="视盘", target="optic disc"),
        TermMatch(start=3, end=5, source="黄斑", target="macula"),
    ]
    assert restore_placeholders("The QX0Q and the QX1Q.", spans) == "The  optic disc  and the  macula ."
    assert restore_placeholders("The QX 1 Q and QX0Q", spans) is not None
    assert restore_placeholders("Only QX0Q here.", spans) is None
    assert restore_placeholders("QX0Q QX0Q QX1Q", spans) is None


def test_bad_glossary_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.tsv"
    bad.write_text("chinese\tenglish\n视盘\toptic disc\n", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.tsv"):
        read_glossary(bad)
    missing_en = tmp_path / "short.tsv"
    missing_en.write_text("zh\ten\n视盘\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="short.tsv"):
        Glossary.from_files([missing_en])
