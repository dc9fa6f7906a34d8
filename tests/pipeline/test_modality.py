"""Step 3 modality classifier: synthetic panels of each kind, caption cues, disagreement, doubt."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from testbed import synthetic_images
from pipeline.modality import (
    CLASSES,
    FEATURE_NAMES,
    ModalityOptions,
    classify_batch,
    classify_modality,
    extract_features,
    load_caption_cues,
    load_image_model,
)

EXPECTED_IMAGE_ONLY = {
    "cfp": "CFP",
    "ffa": "FFA",
    "icga": "FFA",
    "oct": "OCT",
    "diagram": "other",
    "chart": "other",
    "slit_lamp": "other",
    "logo": "other",
}


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _panel(kind: str, seed: int, height: int = 224) -> np.ndarray:
    rng = np.random.default_rng(seed)
    width = int(height * (2.4 if kind in {"oct", "logo"} else 1.0))
    return synthetic_images.GENERATORS[kind](rng, (width, height))


def test_synthetic_panels_are_classified_from_the_image_alone():
    outcomes = []
    for kind, expected in EXPECTED_IMAGE_ONLY.items():
        for seed in range(20):
            image = _panel(kind, 1000 + seed, height=160 + 8 * seed)
            if seed % 2:
                image = _jpeg_roundtrip(image, 60 + seed)
            outcomes.append((kind, seed, classify_modality(image).modality, expected))
    wrong = [outcome for outcome in outcomes if outcome[2] != outcome[3]]
    accuracy = 1 - len(wrong) / len(outcomes)
    assert accuracy >= 0.98, f"accuracy {accuracy:.3f}; wrong: {wrong}"


def test_captions_of_the_right_modality_keep_or_raise_confidence():
    image = _panel("ffa", 7)
    alone = classify_modality(image)
    helped = classify_modality(image, "图5-3-1 视网膜静脉阻塞 A. 荧光素眼底血管造影示静脉期荧光渗漏")
    assert alone.modality == helped.modality == "FFA"
    assert helped.confidence >= alone.confidence
    assert not helped.needs_review
    assert any(reason.startswith("caption: mentions") and "荧光素眼底血管造影" in reason for reason in helped.reasons)


def test_caption_sets_icga_sublabel():
    result = classify_modality(_panel("icga", 3), "ICGA示脉络膜息肉样病灶")
    assert (result.modality, result.sublabel) == ("FFA", "ICGA")
    assert classify_modality(_panel("icga", 4), "吲哚菁绿血管造影晚期").sublabel == "ICGA"


def test_caption_makes_a_grey_fundus_a_red_free_photograph():
    image = _panel("red_free", 5)
    alone = classify_modality(image)
    assert alone.modality == "CFP", "a grey fundus with no caption is read as a red-free colour photograph"
    assert alone.image_probabilities["grey_fundus"] == max(alone.image_probabilities.values())
    assert classify_modality(image, "Fundus autofluorescence of the macula.").modality == "other"
    result = classify_modality(image, "无赤光眼底像示视网膜神经纤维层缺损")
    assert (result.modality, result.sublabel) == ("CFP", "red-free")
    assert classify_modality(image, "Red-free photograph of the left eye.").sublabel == "red-free"
    assert classify_modality(image, "Retinografía aneritra del ojo izquierdo.").sublabel == "red-free"


def test_infrared_slo_caption_marks_a_retinal_other():
    result = classify_modality(synthetic_images.infrared_fundus_image(np.random.default_rng(2), 256), "Infrared SLO image of the macula.")
    assert (result.modality, result.sublabel) == ("other", "SLO")


def test_oct_viewer_screenshot_with_its_fundus_localiser_is_oct():
    outcomes = [classify_modality(_panel("oct_viewer", seed, height=300)).modality for seed in range(6)]
    assert outcomes.count("OCT") >= 5, outcomes


@pytest.mark.parametrize("kind", ["micrograph", "engraving", "chart", "diagram"])
def test_non_retinal_figures_are_other(kind):
    for seed in range(4):
        result = classify_modality(_panel(kind, 40 + seed, height=260))
        assert result.modality == "other", (kind, seed, result.reasons)


def test_the_scikit_image_fundus_photograph_is_cfp():
    from skimage import data

    result = classify_modality(data.retina())
    assert result.modality == "CFP" and not result.needs_review


def _run_with(panels: dict[str, tuple[np.ndarray, str]], tmp_path):
    from foundation.records import DocumentRun, Pair

    run = DocumentRun(pdf="book.pdf", book="book")
    for index, (name, (image, caption)) in enumerate(panels.items()):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        run.pairs.append(Pair(pair_id=f"book/{index}/-", book="book", source_pdf="book.pdf", source_pdf_sha256="0" * 64, page=1,
                              bbox=(0, 0, 100, 100), figure_id=str(index), image_sha256="0" * 64, image_file=str(path),
                              caption_en=caption, review_status="auto_accepted"))
    return run


def test_document_keeps_retinal_panels_classed_other_for_review_and_rejects_non_retinal(tmp_path):
    from pipeline.modality import classify_document

    rng = np.random.default_rng(8)
    panels = {
        "slo": (synthetic_images.infrared_fundus_image(rng, 256), "Figure 0. Infrared SLO image of the macula."),
        "chart": (synthetic_images.chart_image(rng, 256), "Figure 1. Visual acuity by year."),
        "oct": (synthetic_images.oct_image(rng, (480, 200)), "Figure 2. OCT shows subretinal fluid."),
        "micrograph": (synthetic_images.micrograph_image(rng, 256), "Figure 3."),
    }
    run = classify_document(_run_with(panels, tmp_path), lambda file: cv2.imread(file)[:, :, ::-1])
    kept = {pair.figure_id: pair for pair in run.pairs}
    slo = kept["0"]
    assert (slo.modality, slo.modality_sublabel, slo.review_status) == ("other", "SLO", "queued"), "a retinal 'other' is never dropped unseen"
    assert any(r.kind == "retinal_looking_other" and r.figure_id == "0" for r in run.rejects)
    for figure_id in ("1", "3"):
        assert figure_id not in kept and any(r.kind == "non_retinal_figure" and r.figure_id == figure_id for r in run.rejects)
    assert kept["2"].modality == "OCT" and kept["2"].review_status == "auto_accepted"


def test_octa_caption_is_not_read_as_oct_and_marks_other():
    cues = load_caption_cues()
    names = {match.cue.name for match in cues.find("OCTA shows a flow void")}
    assert names == {"OCT angiography"}
    assert {match.cue.name for match in cues.find("OCT示黄斑水肿")} == {"OCT"}
    result = classify_modality(_panel("ffa", 11), "OCTA 浅层毛细血管丛")
    assert (result.modality, result.sublabel) == ("other", "OCTA")


def test_disagreement_keeps_the_image_lowers_confidence_and_flags_review():
    image = _panel("oct", 9)
    alone = classify_modality(image)
    disputed = classify_modality(image, "彩色眼底照相示视盘水肿")
    assert alone.modality == disputed.modality == "OCT"
    assert disputed.confidence < alone.confidence
    assert disputed.needs_review
    assert any(reason.startswith("disagreement:") for reason in disputed.reasons)


@pytest.mark.parametrize(
    "image",
    [
        np.full((200, 200, 3), 128, dtype=np.uint8),
        np.random.default_rng(0).integers(0, 256, size=(200, 200, 3), dtype=np.uint8),
    ],
    ids=["uniform_grey", "noise"],
)
def test_structureless_images_get_low_confidence(image):
    result = classify_modality(image)
    assert result.confidence < ModalityOptions().review_threshold
    assert result.needs_review
    assert any("no large-scale structure" in reason for reason in result.reasons)


def test_every_result_explains_itself_and_is_well_formed():
    result = classify_modality(_panel("cfp", 2), "Fundus photograph of the right eye.")
    assert result.modality in CLASSES
    assert 0.0 <= result.confidence <= 1.0
    assert result.reasons[0].startswith("image:") and "score" in result.reasons[0]
    assert any(reason.startswith("caption:") for reason in result.reasons)
    assert sum(result.image_probabilities.values()) == pytest.approx(1.0, abs=1e-3)


def test_caption_weight_zero_ignores_captions():
    image = _panel("red_free", 6)
    ignored = classify_modality(image, "无赤光眼底像", ModalityOptions(caption_weight=0.0))
    assert ignored == classify_modality(image)


def test_features_are_scale_robust_and_model_matches_feature_list():
    model = load_image_model()
    assert list(model.features) == list(FEATURE_NAMES)
    image = _panel("oct", 12, height=400)
    small = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    large, reduced = extract_features(image), extract_features(small)
    assert abs(large["horizontal_layering"] - reduced["horizontal_layering"]) < 0.1
    assert large["log_aspect"] == pytest.approx(reduced["log_aspect"], abs=0.01)


def test_grey_and_rgba_inputs_are_accepted_and_bad_shapes_rejected():
    grey = _panel("ffa", 13)[:, :, 0]
    assert classify_modality(grey).modality == "FFA"
    rgba = np.dstack([_panel("cfp", 13), np.full((224, 224), 255, dtype=np.uint8)])
    assert classify_modality(rgba).modality == "CFP"
    with pytest.raises(ValueError, match="HxWx3"):
        classify_modality(np.zeros((10, 10, 2), dtype=np.uint8))


def test_batch_goes_on_past_a_bad_image():
    images = [_panel("oct", 1), np.zeros((4, 4, 3), dtype=np.uint8), _panel("diagram", 1)]
    results = classify_batch(images, ["OCT", None, "示意图"])
    assert results[1] is None
    assert [results[0].modality, results[2].modality] == ["OCT", "other"]


def test_greyscale_print_of_a_colour_photograph_follows_its_caption() -> None:
    import cv2

    from testbed.synthetic_images import cfp_image

    colour = cfp_image(np.random.default_rng(5), 300)
    grey = cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    result = classify_modality(grey, "Glaucoma. Colour fundus photograph shows an enlarged cup.")
    assert result.modality == "CFP" and not result.needs_review
    assert any("greyscale" in reason for reason in result.reasons)
    assert classify_modality(colour, "Glaucoma. Colour fundus photograph shows an enlarged cup.").modality == "CFP"


def test_without_a_caption_cue_only_a_very_confident_image_is_auto_accepted():
    image = _panel("oct", 21)
    alone = classify_modality(image, "Figure 4.")
    named = classify_modality(image, "Figure 4. OCT of the macula.")
    assert alone.modality == named.modality == "OCT"
    assert not named.needs_review
    assert not alone.needs_review, "by default the image alone may decide, as in atlases whose captions name the disease"
    strict = classify_modality(image, "Figure 4.", ModalityOptions(image_only_accept=0.999))
    assert strict.modality == "OCT" and strict.needs_review
    assert any(reason.startswith("no caption cue for OCT") for reason in strict.reasons)
    assert not classify_modality(image, "Figure 4. OCT of the macula.", ModalityOptions(image_only_accept=0.999)).needs_review


def test_a_document_that_never_names_the_eye_keeps_image_only_panels_as_non_retinal(tmp_path):
    """A novel's illustration or a physics plot can look like a grey fundus or an OCT to the
    image features; in a document whose text never names the eye (nor a retinal modality), they
    are typed rejects with their captions. The same panels in an eye book stay pairs."""
    from pipeline.modality import classify_document

    rng = np.random.default_rng(21)
    grey = cv2.cvtColor(cv2.cvtColor(synthetic_images.cfp_image(rng, 256), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    panels = {
        "grey": (grey, "Figure 1. They tip-toed along."),
        "layers": (synthetic_images.oct_image(rng, (480, 200)), "Figure 2. Pressure contours of the shock."),
    }
    pixels = lambda file: cv2.imread(file)[:, :, ::-1]  # noqa: E731
    run = classify_document(_run_with(panels, tmp_path), pixels)
    rejected = {r.figure_id: r for r in run.rejects if r.kind == "non_retinal_figure"}
    assert set(rejected) == {"0", "1"} and not run.pairs
    assert "never names the eye" in rejected["0"].reason and rejected["0"].caption == "Figure 1. They tip-toed along."

    eye_book = {**panels, "named": (synthetic_images.oct_image(rng, (480, 200)), "Figure 3. OCT of the left eye.")}
    assert {p.figure_id for p in classify_document(_run_with(eye_book, tmp_path), pixels).pairs} == {"0", "1", "2"}
    off = classify_document(_run_with(panels, tmp_path), pixels, ModalityOptions(eye_context=False))
    assert {p.figure_id for p in off.pairs} == {"0", "1"}


def test_eye_words_are_read_in_the_languages_of_ophthalmology():
    cues = load_caption_cues()
    for text in ("examen du fond d'œil", "Netzhautablösung am linken Auge", "retinopatía diabética", "视网膜脱离", "the left eye"):
        assert cues.names_the_eye(text), text
    for text in ("They tip-toed along the path.", "Pressure contours of the shock wave.", "October sales by region"):
        assert cues.names_the_eye(text) is None, text
