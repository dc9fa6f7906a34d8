"""Every transfer method end to end on a tiny synthetic FLAIR-format dataset with the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import keepfit
from keepfit.evaluation import (
    METHOD_NAMES,
    EvaluationOptions,
    FeatureCache,
    MethodContext,
    MethodOptions,
    SplitOptions,
    evaluate_model,
    load_experiment_dataset,
    load_experiments,
    load_results,
    make_splits,
    summary_markdown,
    write_reports,
)
from keepfit.evaluation.features import extract_features, model_fingerprint
from keepfit.evaluation.methods import FoldData, LinearProbe, LinearProbeFineTune
from keepfit.evaluation.synthetic import write_registry, write_synthetic_dataset

CLASSES = ["normal", "glaucoma", "cataract"]
FAST_METHODS = MethodOptions(
    adapter={"epochs": 5, "batch_size": 4},
    fine_tune={"epochs": 2, "batch_size": 8, "patience": 2},
    batch_size=16,
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    spec = write_synthetic_dataset(root, CLASSES, per_class=10, size=32, seed=0, name="synthetic3")
    registry = write_registry(root / "registry.yaml", [spec])
    return root, registry


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return keepfit.load("tiny", image_size=32)


def options_for(root, registry, **changes) -> EvaluationOptions:
    values = dict(
        data_root=str(root),
        cache_dir=str(root / "features"),
        registry_paths=[str(registry)],
        split=SplitOptions(train="50%", val="2", test="30%", folds=2),
        methods=FAST_METHODS,
    )
    values.update(changes)
    return EvaluationOptions(**values)


FROZEN_METHODS = ["zero_shot", "linear_probe", "clip_adapter", "tip_adapter", "tip_adapter_f"]
FINE_TUNING_METHODS = ["fine_tune", "lp_fine_tune"]


def test_method_lists_cover_every_method():
    assert sorted(FROZEN_METHODS + FINE_TUNING_METHODS) == sorted(METHOD_NAMES)


def test_frozen_methods_share_one_feature_pass_and_write_reports(synthetic, tiny_model, tmp_path):
    root, registry = synthetic
    options = options_for(root, registry, cache_dir=str(tmp_path / "features"))
    cache = FeatureCache(options.cache_dir)
    results = evaluate_model(tiny_model, "tiny", ["synthetic3"], FROZEN_METHODS, options, cache)

    assert [r.method for r in results] == FROZEN_METHODS
    # One extraction for the first method; every later method hit the cache.
    assert cache.misses == 1 and cache.hits == len(FROZEN_METHODS) - 1
    assert [r.feature_cache_hit for r in results] == [False] + [True] * (len(FROZEN_METHODS) - 1)
    assert len(list((tmp_path / "features").glob("*.npz"))) == 1
    for result in results:
        assert len(result.folds) == 2
        for fold in result.folds:
            assert (fold.n_train, fold.n_val, fold.n_test) == (15, 6, 9)
            assert sum(map(sum, fold.metrics.confusion_matrix)) == 9
            assert 0.0 <= fold.metrics.aca <= 1.0 and 0.0 <= fold.metrics.auc <= 1.0
        assert result.summary["aca"].values == [f.metrics.aca for f in result.folds]
        assert result.class_counts == [10, 10, 10]
    by_method = {r.method: r for r in results}
    # Hue encodes the class: even random tiny-model features separate it, with few samples (the raw,
    # small-norm features of a random tiny model are strongly regularised at C = 0.316, hence 0.6).
    assert by_method["linear_probe"].metric("aca")[0] >= 0.6
    assert by_method["tip_adapter"].metric("aca")[0] >= 0.6

    out = tmp_path / "reports"
    written = write_reports(results, out)
    for files in written["results"]:
        payload = json.loads(files["json"].read_text())
        assert payload["experiment"] == "synthetic3"
        assert "ACA" in files["markdown"].read_text()
        with Image.open(files["confusion_png"]) as png:
            assert png.format == "PNG" and png.size[0] > 100
    reloaded = load_results(written["all_results"])
    assert [r.method for r in reloaded] == FROZEN_METHODS
    assert reloaded[1].summary["aca"].mean == pytest.approx(by_method["linear_probe"].metric("aca")[0])
    table = summary_markdown(results)
    assert table.count("\n") == len(FROZEN_METHODS) + 2
    assert "synthetic3" in (out / "comparison.md").read_text()


def test_fine_tuning_methods_end_to_end_leave_the_model_untouched(synthetic, tiny_model, tmp_path):
    root, registry = synthetic
    before = model_fingerprint(tiny_model)
    options = options_for(
        root,
        registry,
        cache_dir=str(tmp_path / "features"),
        split=SplitOptions(train="50%", val="2", test="30%", folds=1),
    )
    cache = FeatureCache(options.cache_dir)
    results = evaluate_model(tiny_model, "tiny", ["synthetic3"], FINE_TUNING_METHODS, options, cache)
    assert [r.method for r in results] == FINE_TUNING_METHODS
    # lp_fine_tune fits its probe on the cached trunk features of the first method's pass.
    assert (cache.misses, cache.hits) == (1, 1)
    for result in results:
        fold = result.folds[0]
        assert (fold.n_train, fold.n_val, fold.n_test) == (15, 6, 9)
        assert sum(map(sum, fold.metrics.confusion_matrix)) == 9
    assert model_fingerprint(tiny_model) == before
    assert all(p.requires_grad for p in tiny_model.parameters())


def test_disk_cache_is_reused_by_a_new_process_and_keyed_by_weights(synthetic, tiny_model, tmp_path):
    root, registry = synthetic
    options = options_for(root, registry, cache_dir=str(tmp_path / "features"))
    first = FeatureCache(options.cache_dir)
    evaluate_model(tiny_model, "tiny", ["synthetic3"], ["zero_shot"], options, first)
    fresh = FeatureCache(options.cache_dir)
    evaluate_model(tiny_model, "tiny", ["synthetic3"], ["linear_probe"], options, fresh)
    assert (fresh.hits, fresh.misses) == (1, 0)

    other = keepfit.load("tiny", image_size=32)
    assert model_fingerprint(other) != model_fingerprint(tiny_model)
    evaluate_model(other, "other", ["synthetic3"], ["linear_probe"], options, fresh)
    assert fresh.misses == 1
    assert len(list((tmp_path / "features").glob("*.npz"))) == 2


def test_cached_features_equal_a_direct_forward_pass(synthetic, tiny_model):
    root, registry = synthetic
    spec = load_experiments(registry).get("synthetic3")
    dataset = load_experiment_dataset(spec, root)
    features = FeatureCache(None).get_or_compute(tiny_model, dataset, batch_size=7)
    images = torch.stack([tiny_model.preprocess(Image.open(p).convert("RGB")) for p in dataset.image_paths[:5]])
    with torch.no_grad():
        raw = tiny_model.image_features(images).numpy()
        projected = tiny_model.encode_image(images).numpy()
    np.testing.assert_allclose(features.raw[:5], raw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features.projected[:5], projected, rtol=1e-4, atol=1e-5)


def test_unreadable_image_is_dropped_not_fatal(tmp_path, tiny_model):
    spec = write_synthetic_dataset(tmp_path, CLASSES, per_class=6, size=32, name="broken")
    registry = write_registry(tmp_path / "registry.yaml", [spec])
    dataset = load_experiment_dataset(load_experiments(registry).get("broken"), tmp_path)
    dataset.image_paths[0].write_bytes(b"not an image")
    options = options_for(tmp_path, registry, split=SplitOptions(train="50%", test="50%", folds=1))
    [result] = evaluate_model(tiny_model, "tiny", ["broken"], ["linear_probe"], options, FeatureCache(None))
    fold = result.folds[0]
    assert fold.n_train + fold.n_test == 17


def test_lp_fine_tune_starts_from_the_probe(synthetic, tiny_model):
    root, registry = synthetic
    spec = load_experiments(registry).get("synthetic3")
    dataset = load_experiment_dataset(spec, root)
    features = extract_features(tiny_model, dataset.image_paths, batch_size=16)
    split = make_splits(dataset.labels, SplitOptions(train="50%", test="30%", folds=1))[0]
    fold = FoldData(split=split, labels=dataset.labels, features=features, dataset=dataset)
    options = FAST_METHODS.model_copy(deep=True)
    options.fine_tune.epochs = 0
    context = MethodContext(model=tiny_model, classes=CLASSES, options=options)
    probe = LinearProbe(context)
    probe.fit(fold)
    lp_ft = LinearProbeFineTune(context)
    lp_ft.fit(fold)
    probe_scores = probe.predict(fold, split.test)
    network_scores = lp_ft.predict(fold, split.test)
    np.testing.assert_array_equal(probe_scores.argmax(1), network_scores.argmax(1))
    np.testing.assert_allclose(
        torch.softmax(torch.tensor(network_scores), 1).numpy(), np.exp(probe_scores), atol=1e-4
    )


def test_zero_shot_prototypes_average_class_name_and_descriptions(tiny_model):
    context = MethodContext(model=tiny_model, classes=CLASSES, options=MethodOptions())
    prompts = context.class_prompts()
    assert prompts["normal"][0] == "A fundus photograph of normal"
    assert len(prompts["glaucoma"]) > 1  # the bundled dictionary describes glaucoma
    prototypes = context.class_prototypes()
    assert prototypes.shape == (3, tiny_model.encode_text(["x"]).shape[1])
    with torch.no_grad():
        glaucoma = torch.nn.functional.normalize(tiny_model.encode_text(prompts["glaucoma"]), dim=-1)
    # Reproduce profile (release): the plain mean of the prompt embeddings, not renormalised.
    torch.testing.assert_close(prototypes[1], glaucoma.mean(0), atol=1e-5, rtol=1e-4)
    assert prototypes[1].norm() < 1.0 - 1e-4
    renormalised = MethodContext(
        model=tiny_model, classes=CLASSES, options=MethodOptions(prompts={"prototype": "renormalized_mean"})
    ).class_prototypes()
    torch.testing.assert_close(renormalised.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(
        renormalised[1], torch.nn.functional.normalize(glaucoma.mean(0), dim=0), atol=1e-5, rtol=1e-4
    )
    plain = MethodContext(
        model=tiny_model, classes=CLASSES, options=MethodOptions(prompts={"domain_knowledge": False})
    )
    assert plain.class_prompts()["glaucoma"] == ["A fundus photograph of glaucoma"]


def test_projected_probe_and_graded_kappa(tmp_path, tiny_model):
    grades = ["grade0", "grade1", "grade2", "grade3"]
    spec = write_synthetic_dataset(tmp_path, grades, per_class=6, size=32, name="graded", graded=True)
    registry = write_registry(tmp_path / "registry.yaml", [spec])
    methods = FAST_METHODS.model_copy(deep=True)
    methods.linear_probe.features = "projected"
    options = options_for(
        tmp_path, registry, methods=methods, split=SplitOptions(scheme="stratified_kfold", train="100%", folds=3)
    )
    [result] = evaluate_model(tiny_model, "tiny", ["graded"], ["linear_probe"], options, FeatureCache(None))
    assert result.graded and "kappa" in result.summary
    assert len(result.summary["kappa"].values) == 3
    # Stratified k-fold: every image is tested exactly once over the folds.
    assert sum(fold.n_test for fold in result.folds) == 24
    assert np.asarray(result.confusion_matrix).sum(axis=1).tolist() == [6, 6, 6, 6]


def test_reproduce_probe_is_balanced_logistic_regression_on_raw_features():
    """Release probe: sklearn LogisticRegression(C=0.316, balanced, 1000 iterations) on unnormalised features."""
    from types import SimpleNamespace

    from sklearn.linear_model import LogisticRegression

    from keepfit.evaluation.features import FeatureSet
    from keepfit.evaluation.splits import Split

    raw = np.array(
        [[3.0, 0.1], [2.5, 0.4], [4.0, -0.2], [3.3, 0.0], [0.2, 2.0], [-0.1, 3.1], [0.5, 1.0], [9.0, 9.5]]
    )
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    features = FeatureSet(raw=raw, projected=raw, valid=np.ones(8, bool), errors={}, key="hand-made")
    split = Split(0, np.arange(8), np.array([], dtype=int), np.arange(8))
    fold = FoldData(split=split, labels=labels, features=features, dataset=SimpleNamespace())
    options = MethodOptions()
    assert (options.linear_probe.c, options.linear_probe.class_weight) == (0.316, "balanced")
    assert options.linear_probe.features == "raw" and options.linear_probe.normalize is False
    probe = LinearProbe(MethodContext(model=None, classes=["a", "b"], options=options))
    probe.fit(fold)
    reference = LogisticRegression(C=0.316, class_weight="balanced", max_iter=1000, random_state=0).fit(raw, labels)
    np.testing.assert_allclose(probe.classifier.coef_, reference.coef_, rtol=1e-6)
    np.testing.assert_allclose(probe.predict(fold, np.arange(8)), reference.predict_log_proba(raw), rtol=1e-6)
    normalised = LinearProbe(
        MethodContext(model=None, classes=["a", "b"], options=MethodOptions(linear_probe={"normalize": True}))
    )
    normalised.fit(fold)
    assert not np.allclose(normalised.classifier.coef_, reference.coef_)


def test_reproduce_fine_tuning_defaults_are_the_release_settings():
    options = MethodOptions().fine_tune
    assert (options.epochs, options.patience, options.update_batchnorm, options.lr) == (50, 10, True, 1e-4)
