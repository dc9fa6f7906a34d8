"""Caption parsing: figure id, title and per-panel texts in both book styles."""

from __future__ import annotations

import pytest

from pipeline.caption_parse import parse_caption
from pipeline.captions import match_caption_start


@pytest.mark.parametrize(
    ("text", "figure_id", "style"),
    [
        ("图3-12 视网膜中央静脉阻塞", "3-12", "zh"),
        ("图 3 - 1 2 视网膜", "3-12", "zh"),
        ("图５－３－１　黄斑", "5-3-1", "zh"),
        ("Fig. 3-12 Central retinal vein occlusion", "3-12", "en_fig"),
        ("Fig.3一l2 Central", "3-12", "en_fig"),
        ("FIGURE 3-12. Central serous chorioretinopathy.", "3-12", "en_figure"),
        ("FIGURE 16-1-1. Title", "16-1-1", "en_figure"),
    ],
)
def test_caption_starts_tolerate_ocr_noise_and_full_width(text, figure_id, style):
    assert match_caption_start(text)[:2] == (figure_id, style)


@pytest.mark.parametrize("text", ["见图3-12", "Figure 3-15).", "图3-12所示", "Figure 3-12 shows the fundus", "(Fig. 3-12)"])
def test_citations_in_running_text_are_not_captions(text):
    assert match_caption_start(text) is None


def test_bilingual_chinese_caption_with_shared_sentence():
    parsed = parse_caption("图3-12 视网膜中央静脉阻塞。患者男，62岁。A．彩色眼底像示视盘水肿。B．FFA示渗漏。C．OCT示黄斑水肿。")
    assert (parsed.figure_id, parsed.language, parsed.title) == ("3-12", "zh", "视网膜中央静脉阻塞")
    assert parsed.letters == ["A", "B", "C"]
    assert parsed.panel_texts("C") == ["患者男，62岁。", "OCT示黄斑水肿。"]


def test_english_caption_sentence_starting_with_a_is_not_a_panel():
    parsed = parse_caption("Fig. 3-12 Central retinal vein occlusion. A 62-year-old man. A. Colour photograph. B. Angiogram.")
    assert parsed.title == "Central retinal vein occlusion"
    assert parsed.letters == ["A", "B"]
    assert parsed.panel_texts("B") == ["A 62-year-old man.", "Angiogram."]


@pytest.mark.parametrize("dash", ["–", "-", "~", "·"])
def test_panel_ranges(dash):
    parsed = parse_caption(f"FIGURE 3-11. Diabetic retinopathy. A{dash}C. Fundus photographs over a year. D. Angiogram.")
    assert parsed.letters == ["A", "B", "C", "D"]
    assert parsed.panel_texts("B") == ["Fundus photographs over a year."]
    assert parsed.panel_texts("D") == ["Angiogram."]


@pytest.mark.parametrize(
    ("text", "letters"),
    [
        ("图5-3-2 新生血管性黄斑变性 A、彩色眼底像；B、OCT示积液；C、FFA示渗漏。", ["A", "B", "C"]),
        ("图5-3-3 息肉状脉络膜血管病变 (a)彩色眼底像；(b)荧光造影。", ["A", "B"]),
        ("图5-3-1 干性黄斑变性 左图：彩色眼底像示玻璃膜疣；右图：OCT示隆起。", ["A", "B"]),
        ("图7-2视盘水肿A.彩色眼底像示充血。B.荧光素眼底血管造影示渗漏。", ["A", "B"]),
    ],
)
def test_chinese_panel_label_styles(text, letters):
    parsed = parse_caption(text)
    assert parsed.letters == letters
    assert all(parsed.panel_texts(letter) for letter in letters)


def test_closing_note_after_the_last_panel_is_shared():
    parsed = parse_caption("图5-3-3 息肉状 (a)彩色。(b)荧光。(c)ICGA。(d)OCT示双层征。本例经治疗后消退。")
    assert parsed.panel_texts("A") == ["彩色。", "本例经治疗后消退。"]
    assert parsed.panel_texts("D") == ["OCT示双层征。", "本例经治疗后消退。"]


def test_single_panel_caption_keeps_its_description():
    parsed = parse_caption("FIGURE 3-9. Normal fundus. Colour fundus photograph shows a healthy disc.")
    assert parsed.letters == [] and parsed.title == "Normal fundus"
    assert parsed.panel_texts(None) == ["Colour fundus photograph shows a healthy disc."]


def test_a_label_whose_full_stop_ocr_read_as_a_comma():
    parsed = parse_caption("图7-2视盘水肿A，彩色眼底像示视盘充血隆起。B.荧光素眼底血管造影示渗漏。")
    assert parsed.title == "视盘水肿" and parsed.letters == ["A", "B"]
    assert parsed.panel_texts("A") == ["彩色眼底像示视盘充血隆起。"]
