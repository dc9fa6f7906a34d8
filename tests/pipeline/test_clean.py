"""Caption cleaning rules on real-looking caption text in both languages."""

from __future__ import annotations

import pytest

from pipeline.clean import (
    canonical_caption,
    clean_caption,
    clean_caption_text,
    detect_language,
    find_cross_references,
    fix_ocr_confusions,
    join_lines,
    load_hyphenated_words,
    load_ocr_confusions,
    normalise_cross_references,
    normalise_for_match,
    normalise_punctuation,
    remove_ocr_spacing,
    split_figure_number,
    split_panel_prefix,
)


@pytest.mark.parametrize(
    ("raw", "figure_id", "rest"),
    [
        ("图3-12 视网膜中央静脉阻塞", "3-12", "视网膜中央静脉阻塞"),
        ("图 3 - 1 2 视网膜中央静脉阻塞", "3-12", "视网膜中央静脉阻塞"),
        ("图5-3-1 视盘水肿", "5-3-1", "视盘水肿"),
        ("图３－１２ 黄斑裂孔", "3-12", "黄斑裂孔"),
        ("Fig. 3-12 Central retinal vein occlusion", "3-12", "Central retinal vein occlusion"),
        ("Fig.3一12 Central retinal vein occlusion", "3-12", "Central retinal vein occlusion"),
        ("FIGURE 3-12. Central retinal vein occlusion.", "3-12", "Central retinal vein occlusion."),
        ("FIGURE3-12 Diabetic retinopathy", "3-12", "Diabetic retinopathy"),
        ("Figure 3-l2: Drusen", "3-12", "Drusen"),
        ("Fig. 5-3-1 Optic disc edema", "5-3-1", "Optic disc edema"),
    ],
)
def test_split_figure_number(raw: str, figure_id: str, rest: str) -> None:
    assert split_figure_number(raw) == (figure_id, rest)


def test_figure_number_is_only_taken_from_the_front() -> None:
    assert split_figure_number("Same patient as Figure 1-1A.") == (None, "Same patient as Figure 1-1A.")
    assert split_figure_number("视网膜中央静脉阻塞，同图1-1") == (None, "视网膜中央静脉阻塞，同图1-1")


@pytest.mark.parametrize(
    ("raw", "panel", "rest"),
    [
        ("A. Color fundus photograph shows flame-shaped hemorrhages.", "A", "Color fundus photograph shows flame-shaped hemorrhages."),
        ("A．彩色眼底像示视盘充血", "A", "彩色眼底像示视盘充血"),
        ("(a) Early arteriovenous phase", "A", "Early arteriovenous phase"),
        ("（b）晚期荧光素渗漏", "B", "晚期荧光素渗漏"),
        ("A、动脉期", "A", "动脉期"),
        ("A–C. Serial fluorescein angiograms", "A-C", "Serial fluorescein angiograms"),
        ("A-C. Serial fluorescein angiograms", "A-C", "Serial fluorescein angiograms"),
        ("A, B. Both eyes", "A,B", "Both eyes"),
        ("左图：动脉期", "A", "动脉期"),
        ("右图 静脉期", "B", "静脉期"),
        ("下图：OCT示黄斑水肿", "B", "OCT示黄斑水肿"),
    ],
)
def test_split_panel_prefix(raw: str, panel: str, rest: str) -> None:
    assert split_panel_prefix(raw) == (panel, rest)


@pytest.mark.parametrize(
    "text",
    ["A 62-year-old man with sudden loss of vision.", "Arterial phase shows delayed filling.", "U.S. patients", "视盘水肿"],
)
def test_panel_prefix_leaves_ordinary_text_alone(text: str) -> None:
    assert split_panel_prefix(text) == (None, text)


def test_hyphenated_line_breaks_join_typesetting_hyphens_and_keep_real_ones() -> None:
    text = "Extensive flame-shaped haem-\norrhages with cotton-\nwool spots and red-\nfree imaging; neovascu-\nlarization"
    assert join_lines(text) == (
        "Extensive flame-shaped haemorrhages with cotton-wool spots and red-free imaging; neovascularization"
    )


def test_hyphen_kept_when_the_hyphenated_form_appears_elsewhere() -> None:
    text = "Non-proliferative changes. Non-\nproliferative retinopathy"
    assert join_lines(text) == "Non-proliferative changes. Non-proliferative retinopathy"
    assert join_lines("anti-\nVEGF therapy") == "anti-VEGF therapy"
    assert join_lines("A 62-year-\nold man") == "A 62-year-old man"


def test_cjk_lines_join_without_spaces_and_latin_lines_with_one() -> None:
    assert join_lines("视网膜中央静脉\n阻塞，黄斑水肿") == "视网膜中央静脉阻塞，黄斑水肿"
    assert join_lines("Central retinal\nvein occlusion") == "Central retinal vein occlusion"
    assert join_lines("荧光素眼底血管造影\nFFA 示渗漏") == "荧光素眼底血管造影FFA 示渗漏"


def test_ocr_spaces_between_cjk_and_digits_are_removed() -> None:
    cleaned = clean_caption("图3 - 1 2 视网膜 中央 静脉 阻塞，患者 男，6 2 岁")
    assert cleaned.figure_id == "3-12"
    assert cleaned.text == "视网膜中央静脉阻塞，患者男，62岁"
    assert cleaned.language == "zh"


def test_remove_ocr_spacing_keeps_spaces_before_latin_panel_labels() -> None:
    assert remove_ocr_spacing("图 7 - 2 视 盘 水 肿 A．彩 色 眼 底 像") == "图7-2视盘水肿 A．彩色眼底像"
    assert remove_ocr_spacing("Fig. 3 - 1 2 Central retinal") == "Fig. 3-12 Central retinal"


@pytest.mark.parametrize(
    ("raw", "fixed"),
    [
        ("0CT shows macular edema", "OCT shows macular edema"),
        ("c0tton wool spots", "cotton wool spots"),
        ("F1UORESCEIN", "FIUORESCEIN"),
        ("at 3-l2 o'clock", "at 3-12 o'clock"),
        ("visual acuity 2O/40", "visual acuity 20/40"),
        ("图3一12", "图3-12"),
        ("3—5 天", "3-5 天"),
        ("一例患者", "一例患者"),
        ("B12 deficiency and H2O", "B12 deficiency and H2O"),
        ("3D OCT", "3D OCT"),
    ],
)
def test_fix_ocr_confusions(raw: str, fixed: str) -> None:
    assert fix_ocr_confusions(raw) == fixed


def test_confusion_table_is_data() -> None:
    table = load_ocr_confusions()
    assert table.number["l"] == "1" and table.latin_word_upper["0"] == "O"
    assert table.number_separator["一"] == "-"
    assert table.zh_punctuation[","] == "，" and table.en_punctuation["，"] == ","
    assert "cotton-wool" in load_hyphenated_words().compounds


@pytest.mark.parametrize(
    ("raw", "language", "expected"),
    [
        ("视盘水肿, 边界不清.", "zh", "视盘水肿，边界不清。"),
        ("视网膜中央静脉阻塞(CRVO)患者:FFA示荧光素渗漏;", "zh", "视网膜中央静脉阻塞（CRVO）患者：FFA示荧光素渗漏；"),
        ("ＦＦＡ　显示　视盘　强荧光，１２岁", "zh", "FFA显示视盘强荧光，12岁"),
        ("视力 0 . 1, 眼压 1 8 mmHg", "zh", "视力0.1，眼压18 mmHg"),
        ("杯盘比扩大至0.8,时间3:00", "zh", "杯盘比扩大至0.8，时间3:00"),
        ("Optic disc ，cup-to-disc ratio 0.8 。", "en", "Optic disc, cup-to-disc ratio 0.8."),
        ("Hard exudates（arrow）： macula；fovea", "en", "Hard exudates (arrow): macula; fovea"),
        ("“Cherry-red spot”  at the   fovea", "en", '"Cherry-red spot" at the fovea'),
        ("haemorrhages,exudates and\u00a0drusen", "en", "haemorrhages, exudates and drusen"),
        ("The ﬁrst photograph", "en", "The first photograph"),
    ],
)
def test_punctuation_and_whitespace_by_language(raw: str, language: str, expected: str) -> None:
    assert normalise_punctuation(raw, language) == expected


def test_cross_references_are_found_with_structure() -> None:
    refs = find_cross_references("Same person as Figure 1-1A, 3 months later (see Fig. 3-2).")
    assert [(r.kind, r.figure_id, r.panel, r.language, r.text) for r in refs] == [
        ("same_case", "1-1", "A", "en", "Same patient as Figure 1-1A"),
        ("see", "3-2", None, "en", "(see Figure 3-2)"),
    ]
    refs = find_cross_references("与图1-1为同一患者，治疗后3个月。黄斑区硬性渗出(见图 3 - 2)")
    assert [(r.kind, r.figure_id, r.text) for r in refs] == [
        ("same_case", "1-1", "同图1-1"),
        ("see", "3-2", "（见图3-2）"),
    ]
    text = "同图1-1，激光治疗后"
    ref = find_cross_references(text)[0]
    assert text[ref.start:ref.end] == "同图1-1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Same person as Figure 1-1A", "Same patient as Figure 1-1A."),
        ("Same eye as Fig.1-1A. Late phase.", "Same patient as Figure 1-1A. Late phase."),
        ("same patient as figure 1-1", "Same patient as Figure 1-1."),
        ("Hard exudates (see Fig. 3-2) in the macula.", "Hard exudates (see Figure 3-2) in the macula."),
        ("同图1-1", "同图1-1。"),
        ("同 图1-1,激光治疗后", "同图1-1,激光治疗后"),
        ("与图1-1为同一患者", "同图1-1。"),
        ("黄斑区硬性渗出(见图3-2)", "黄斑区硬性渗出（见图3-2）"),
    ],
)
def test_cross_references_normalised_in_text(raw: str, expected: str) -> None:
    assert normalise_cross_references(raw) == expected


def test_clean_caption_reports_references_in_cleaned_text() -> None:
    cleaned = clean_caption("Fig. 1-2 Same person as Fig.1-1A . Laser scars.")
    assert cleaned.figure_id == "1-2"
    assert cleaned.text == "Same patient as Figure 1-1A. Laser scars."
    assert [(r.figure_id, r.panel) for r in cleaned.cross_references] == [("1-1", "A")]
    ref = cleaned.cross_references[0]
    assert cleaned.text[ref.start:ref.end] == "Same patient as Figure 1-1A"


def test_clean_caption_english_ocr_caption() -> None:
    raw = "FIGURE 3-12. Central retinal vein 0cclusion.\nA. Extensive intraretinal haem-\norrhages and cotton-\nwool spots ."
    cleaned = clean_caption(raw)
    assert (cleaned.figure_id, cleaned.language) == ("3-12", "en")
    assert cleaned.text == "Central retinal vein occlusion. A. Extensive intraretinal haemorrhages and cotton-wool spots."


def test_canonical_caption_english() -> None:
    assert (
        canonical_caption("FIGURE 3-12. Central retinal vein occlusion.", "A. Color fundus photograph shows flame-shaped hemorrhages", "en")
        == "Central retinal vein occlusion. Color fundus photograph shows flame-shaped hemorrhages."
    )
    assert canonical_caption("Fig. 3-12 Central retinal vein occlusion", None, "en") == "Central retinal vein occlusion."
    assert (
        canonical_caption("Drusen;", ["A 70-year-old woman,", "B. OCT shows RPE elevations:"], "en")
        == "Drusen. A 70-year-old woman. OCT shows RPE elevations."
    )


def test_canonical_caption_chinese() -> None:
    assert (
        canonical_caption("图3-12 视网膜中央静脉阻塞", "A．眼底 彩照 示 火焰状 出血,", "zh")
        == "视网膜中央静脉阻塞。眼底彩照示火焰状出血。"
    )
    assert canonical_caption("图 3 - 1 2 视网膜中央静脉阻塞。", None, "zh") == "视网膜中央静脉阻塞。"
    assert (
        canonical_caption("视盘水肿", ["患者男，62岁；", "左图：荧光素眼底血管造影(FFA)示视盘强荧光."], "zh")
        == "视盘水肿。患者男，62岁。荧光素眼底血管造影（FFA）示视盘强荧光。"
    )


def test_normalise_for_match_ignores_case_punctuation_and_spacing() -> None:
    assert normalise_for_match("Cotton-wool  spots, MACULA.", "en") == normalise_for_match("cotton wool spots macula", "en")
    assert normalise_for_match("Cotton-wool  spots, MACULA.", "en") == "cotton wool spots macula"
    assert normalise_for_match("视网膜 中央，静脉。", "zh") == "视网膜中央静脉"
    assert normalise_for_match("ＯＣＴ示黄斑水肿。", "zh") == normalise_for_match("oct 示 黄斑水肿", "zh")


def test_detect_language() -> None:
    assert detect_language("视网膜中央静脉阻塞（CRVO）") == "zh"
    assert detect_language("Central retinal vein occlusion (视网膜)") == "en"
    assert detect_language("OCT") == "en"


def test_clean_caption_text_is_idempotent() -> None:
    for raw, language in [
        ("图3-12 视网膜 中央静脉阻塞, 同图1-1.", "zh"),
        ("FIGURE 3-12. Hard exudates (see Fig. 3-2) ，macula", "en"),
    ]:
        once = clean_caption_text(raw, language)
        assert clean_caption_text(once, language) == once


def test_canonical_caption_matches_the_sample_atlas_rule_on_its_content() -> None:
    """Same text as the sample atlas truth, also when OCR spaced out the Chinese pieces."""
    import re

    from testbed import sample_atlas

    compared = 0
    for book in sample_atlas.load_sample_content():
        for figure in book.figures.values():
            letters = sorted({letter for seg in figure.segments for letter in (seg.letters() or [])}) or [None]
            for letter in letters:
                for language in ("en", "zh"):
                    title = figure.title_en if language == "en" else figure.title_zh
                    if title is None:
                        continue
                    texts = [seg.en if language == "en" else seg.zh for seg in figure.segments
                             if letter is None or seg.letters() is None or letter in seg.letters()]
                    texts = [text for text in texts if text]
                    expected = sample_atlas.canonical_caption([title, *texts], language)
                    assert canonical_caption(title, texts, language) == expected
                    if language == "zh":
                        spaced = [re.sub(r"(?<=[\u4e00-\u9fff])(?=[\u4e00-\u9fff])", " ", t) for t in [title, *texts]]
                        assert canonical_caption(spaced[0], spaced[1:], language) == expected
                    compared += 1
    assert compared > 50
