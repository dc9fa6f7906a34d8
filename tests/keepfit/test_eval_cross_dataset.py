"""Cross-dataset testing (fit on one experiment, test on another) and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import keepfit
from keepfit.evaluation import EvaluationOptions, FeatureCache, MethodOptions, SplitOptions, evaluate_model
from keepfit.evaluation.features import extract_features, tta_view
from keepfit.evaluation.synthetic import write_registry, write_synthetic_dataset

CLASSES = ["normal", "glaucoma", "cataract"]
FAST = {"adapter": {"epochs": 3, "batch_size": 4}, "batch_size": 16}


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cross")
    source = write_synthetic_dataset(root, CLASSES, per_class=8, size=32, seed=0, name="source3")
    # The external set lists the classes in another order: labels must follow the names.
    target = write_synthetic_dataset(root, CLASSES, per_class=5, size=32, seed=5, name="target3")
    target = target.model_copy(update={"classes": list(reversed(CLASSES))})
    return root, write_registry(root / "registry.yaml", [source, target])


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return keepfit.load("tiny", image_size=32)


def _options(root, registry, test_experiments=("target3",), **methods) -> EvaluationOptions:
    return EvaluationOptions(
        data_root=str(root), registry_paths=[str(registry)],
        split=SplitOptions(train="50%", test="50%", folds=2),
        methods=MethodOptions.model_validate({**FAST, **methods}), test_experiments=list(test_experiments),
    )


def test_each_fold_model_is_also_tested_on_the_external_experiment(two_sets, model):
    root, registry = two_sets
    options = _options(root, registry, linear_probe={"normalize": True})  # well conditioned on tiny features
    results = evaluate_model(model, "tiny", ["source3"], ["linear_probe", "zero_shot"], options, FeatureCache(None))
    names = [(r.experiment, r.method, r.tested_on) for r in results]
    assert names == [
        ("source3", "linear_probe", None), ("source3 -> target3", "linear_probe", "target3"),
        ("source3", "zero_shot", None), ("source3 -> target3", "zero_shot", "target3"),
    ]
    external = results[1]
    assert external.classes == CLASSES and external.class_counts == [5, 5, 5]
    assert [f.n_test for f in external.folds] == [15, 15]
    # Trained on source3's hues, the probe recognises target3's images by class name, not label index
    # (a mix-up of the reversed label order would score far below chance).
    assert external.metric("aca")[0] >= 0.6


def test_test_time_augmentation_averages_probabilities_over_views(two_sets, model):
    root, registry = two_sets
    cache = FeatureCache(None)
    plain = evaluate_model(model, "tiny", ["source3"], ["linear_probe"], _options(root, registry, test_experiments=[]),
                           cache)
    options = _options(root, registry, test_experiments=[], tta=True, tta_views=3)
    tta = evaluate_model(model, "tiny", ["source3"], ["linear_probe"], options, cache)
    assert cache.misses == 3  # the image itself, then two extra views, each extracted once
    assert tta[0].method_options.tta and not plain[0].method_options.tta
    one_view = _options(root, registry, test_experiments=[], tta=True, tta_views=1)
    same = evaluate_model(model, "tiny", ["source3"], ["linear_probe"], one_view, cache)
    assert same[0].summary["aca"].values == plain[0].summary["aca"].values


def test_views_are_the_image_its_flip_and_seeded_augmentations(model, two_sets):
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tta_view(image, 0, 7), image)
    assert torch.equal(tta_view(image, 1, 7), image.flip(-1))
    assert torch.equal(tta_view(image, 2, 7), tta_view(image, 2, 7))
    assert not torch.equal(tta_view(image, 2, 7), tta_view(image, 3, 7))
    root, _ = two_sets
    paths = sorted((root / "source3").rglob("*.png"))[:4]
    flipped = extract_features(model, paths, batch_size=2, view=1)
    with torch.no_grad():
        direct = [model.image_features(model.preprocess(Image.open(p).convert("RGB"))[None].flip(-1)) for p in paths]
    np.testing.assert_allclose(flipped.raw, torch.cat(direct).detach().numpy(), atol=1e-5)


def test_registry_holds_the_release_experiments_and_their_external_test_sets():
    from keepfit.evaluation import load_experiments

    registry = load_experiments()
    for name in ("37_DeepDRiD_test", "CAT_MYA_2", "MHL_RP_2", "CGI_HRDC_Task1", "CGI_HRDC_Task2"):
        assert name in registry.names(), name
    assert registry.get("CAT_MYA_2").classes == registry.get("08_ODIR200x3").classes
    assert registry.get("MHL_RP_2").classes == registry.get("05_20x3").classes
    assert registry.get("37_DeepDRiD_test").classes == registry.get("37_DeepDRiD").classes
