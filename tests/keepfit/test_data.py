import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from keepfit import class_prompts, fill_template, is_banned_category, load_domain_knowledge, pretraining_prompt
from keepfit.augment import AugmentConfig, augment_batch
from keepfit.flair_data import FlairDataset, parse_list_literal, read_flair_dataframe
from keepfit.mmretinal_data import ExpertDataConfig, ExpertDataset, read_expert_manifest
from keepfit.preprocess import ResizedImageCache, resize_and_pad
from keepfit.pretrain_data import ExpertBatchSampler, ShardedEpochBatchSampler, TokenizingCollate


def test_list_columns_parse_python_and_json_literals_without_evaluating_code(tmp_path):
    assert parse_list_literal("['noisy', 'good quality']") == ["noisy", "good quality"]
    assert parse_list_literal('["diabetic retinopathy"]') == ["diabetic retinopathy"]
    assert parse_list_literal("'glaucoma'") == ["glaucoma"]
    marker = tmp_path / "evaluated"
    with pytest.raises(ValueError, match="not a list literal"):
        parse_list_literal(f"__import__('pathlib').Path({str(marker)!r}).touch()", "x.csv:2")
    assert not marker.exists()
    with pytest.raises(ValueError, match="list of strings"):
        parse_list_literal("[1, 2]")


def test_flair_dataframe_drops_banned_categories_and_skips_bad_rows(tmp_path, caplog):
    frame = pd.DataFrame(
        {
            "image": ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"],
            "atributes": ["['noisy']", "[]", "[]", "[]", "[]", "[]"],
            "categories": [
                "['glaucoma']",
                "['Cataract']",
                "['pathologic myopia', 'normal']",
                "['macular hole']",
                "os.system('rm -rf /')",
                "['retinitis pigmentosa']",
            ],
        }
    )
    csv_path = tmp_path / "source.csv"
    frame.to_csv(csv_path, index=False)
    rows = read_flair_dataframe(csv_path)
    assert rows["categories"].tolist() == [["glaucoma"]]
    assert rows["atributes"].tolist() == [["noisy"]]
    assert rows["image"].tolist() == [str(tmp_path / "a.png")]
    assert any("source.csv:6" in r.getMessage() for r in caplog.records)


def test_banned_category_variants():
    for name in (
        "myopia", "High Myopia", "myopic degeneration", "pathologic myopia", "cataracts", "macular_hole",
        "retinitis pigmentosa", "retinitis", "Retinitis",
    ):
        assert is_banned_category(name), name
    for name in ("glaucoma", "normal", "diabetic retinopathy", "chorioretinitis", "macular scar"):
        assert not is_banned_category(name), name


def test_banned_filter_on_a_csv_with_the_tricky_names(tmp_path):
    """The release's held-out classes: myop* (incl. myopic degeneration) and exact 'retinitis' leave pretraining."""
    rows = {
        "a.png": "['myopic degeneration']",
        "b.png": "['retinitis']",
        "c.png": "['chorioretinitis']",
        "d.png": "['glaucoma', 'high myopia']",
        "e.png": "['tessellation']",
        "f.png": "['no cataract']",
        "g.png": "['retinitis pigmentosa']",
        "h.png": "['macular hole']",
        "i.png": "['normal']",
    }
    csv_path = tmp_path / "tricky.csv"
    pd.DataFrame(
        {"image": list(rows), "atributes": ["[]"] * len(rows), "categories": list(rows.values())}
    ).to_csv(csv_path, index=False)
    kept = read_flair_dataframe(csv_path)
    assert [Path(p).name for p in kept["image"]] == ["c.png", "e.png", "i.png"]


def test_missing_columns_name_the_file(tmp_path):
    csv_path = tmp_path / "bad.csv"
    pd.DataFrame({"image": ["a.png"], "categories": ["['x']"]}).to_csv(csv_path, index=False)
    with pytest.raises(ValueError, match="bad.csv.*atributes"):
        read_flair_dataframe(csv_path)


def test_prompts_and_domain_knowledge(tmp_path):
    knowledge = load_domain_knowledge()
    for zero_shot_class in ("normal", "glaucoma", "cataract", "pathologic myopia", "macular hole", "retinitis pigmentosa"):
        assert knowledge[zero_shot_class], zero_shot_class
    assert fill_template("A [ATR] fundus photograph of [CLS]", "glaucoma", ["noisy"]) == "A noisy fundus photograph of glaucoma"
    assert fill_template("A [ATR] fundus photograph of [CLS]", "glaucoma") == "A fundus photograph of glaucoma"
    prompts = {pretraining_prompt("glaucoma", [], knowledge, random.Random(seed)) for seed in range(40)}
    assert "A fundus photograph of glaucoma" in prompts and len(prompts) == 1 + len(knowledge["glaucoma"])
    assert class_prompts("glaucoma", knowledge)[0] == "A fundus photograph of glaucoma"

    own = tmp_path / "mine.yaml"
    own.write_text("Glaucoma:\n  - cupped disc\n", encoding="utf-8")
    assert load_domain_knowledge(own) == {"glaucoma": ["cupped disc"]}
    broken = tmp_path / "broken.yaml"
    broken.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.yaml"):
        load_domain_knowledge(broken)


def test_resize_cache_fills_once_and_checks_sha256(tmp_path):
    image_path = tmp_path / "panel.png"
    Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(image_path)
    cache = ResizedImageCache(tmp_path / "cache", 16)
    with pytest.raises(ValueError, match="panel.png.*does not match"):
        cache.load(image_path, key="k" * 64, expected_sha256="0" * 64)
    first = cache.load(image_path)
    assert first.shape == (16, 16, 3) and first[:8].min() == 200 and first[8:].max() == 0
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 1
    assert np.array_equal(cache.load(image_path), first)
    assert np.array_equal(resize_and_pad(np.full((20, 40, 3), 200, np.uint8), 16), first)


def test_flair_dataset_items_are_reproducible_per_epoch(synthetic_pretraining_data):
    frame = read_flair_dataframe(synthetic_pretraining_data["csv"])
    dataset = FlairDataset(frame, 48, knowledge=load_domain_knowledge(), seed=3)
    first, again = dataset[(5, 0)], dataset[(5, 0)]
    assert first["text"] == again["text"] and first["image"].shape == (3, 48, 48)
    assert first["image"].dtype == torch.uint8
    assert first["category_multi_hot"][first["category_index"]]
    texts = {dataset[(5, epoch)]["text"] for epoch in range(30)}
    assert len(texts) > 1


def test_captions_sample_one_attribute_and_skip_knowledge_for_report_labelled_sources(tmp_path):
    """Release captions: one attribute at random in [ATR]; text-supervised sources keep their class names."""
    image = tmp_path / "01_EYEPACS" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    (tmp_path / "11_STARE").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "11_STARE" / "b.png")
    csv_path = tmp_path / "mixed.csv"
    pd.DataFrame({
        "image": ["01_EYEPACS/a.png", "11_STARE/b.png"],
        "atributes": ["['noisy', 'macula centred']", "[]"],
        "categories": ["['glaucoma']", "['glaucoma']"],
    }).to_csv(csv_path, index=False)
    frame = read_flair_dataframe(csv_path)
    assert frame["source"].tolist() == ["01_EYEPACS", "11_STARE"]
    knowledge = {"glaucoma": ["enlarged optic cup"]}
    dataset = FlairDataset(frame, 16, knowledge=knowledge, seed=0)
    first = {dataset[(0, epoch)]["text"] for epoch in range(40)}
    assert first == {
        f"A {attribute} fundus photograph of {name}"
        for attribute in ("noisy", "macula centred") for name in ("glaucoma", "enlarged optic cup")
    }
    assert {dataset[(1, epoch)]["text"] for epoch in range(20)} == {"A fundus photograph of glaucoma"}
    joined = FlairDataset(frame, 16, knowledge=knowledge, seed=0, attributes="all", knowledge_excluded_sources=())
    assert {joined[(0, e)]["text"] for e in range(40)} == {
        "A noisy macula centred fundus photograph of glaucoma",
        "A noisy macula centred fundus photograph of enlarged optic cup",
    }
    assert "A fundus photograph of enlarged optic cup" in {joined[(1, e)]["text"] for e in range(40)}


def test_expert_manifest_excludes_rejected_and_filters_modality_and_language(synthetic_pretraining_data):
    data = synthetic_pretraining_data
    config = ExpertDataConfig(registry_root=str(data["registry"]), version=data["version"])
    manifest = read_expert_manifest(config)
    assert len(manifest.frame) == 16
    assert set(manifest.frame["modality"]) == {"CFP"}
    assert "rejected" not in set(manifest.frame["review_status"])
    assert manifest.identity["version"] == data["version"] and len(manifest.content_fingerprint) == 64
    both_modalities = read_expert_manifest(config.model_copy(update={"modalities": ["CFP", "FFA"]}))
    assert len(both_modalities.frame) == 18

    english = ExpertDataset(manifest, 48, language="en")
    chinese = ExpertDataset(manifest, 48, language="zh")
    assert english[0]["text"].startswith("Figure") and chinese[0]["text"].startswith("图")
    both = ExpertDataset(manifest, 48, language="both")
    assert {both.caption(0, draw) for draw in range(20)} == {english[0]["text"], chinese[0]["text"]}


def test_expert_images_are_verified_against_the_manifest_hash(synthetic_pretraining_data, tmp_path):
    data = synthetic_pretraining_data
    manifest = read_expert_manifest(ExpertDataConfig(registry_root=str(data["registry"]), version=data["version"]))
    tampered = tmp_path / "tampered.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tampered)
    frame = manifest.frame.copy()
    frame.loc[0, "image_file"] = str(tampered)
    dataset = ExpertDataset(
        manifest.__class__(frame, manifest.dataset, manifest.version, manifest.content_fingerprint, manifest.path),
        48,
        cache=ResizedImageCache(tmp_path / "cache", 48),
    )
    with pytest.raises(ValueError, match="tampered.png.*does not match"):
        dataset[0]
    assert dataset[1]["image"].shape == (3, 48, 48)


def test_sharded_batches_cover_the_global_batch_and_resume_mid_epoch():
    single = iter(ShardedEpochBatchSampler(20, 8, seed=1))
    ranks = [iter(ShardedEpochBatchSampler(20, 4, rank=r, world_size=2, seed=1)) for r in range(2)]
    for _ in range(5):
        assert next(single) == next(ranks[0]) + next(ranks[1])
    full = ShardedEpochBatchSampler(20, 4, seed=1)
    stream = iter(full)
    expected = [next(stream) for _ in range(12)]
    resumed = iter(ShardedEpochBatchSampler(20, 4, seed=1, start_batch=7))
    assert [next(resumed) for _ in range(5)] == expected[7:]
    epoch_one = [i for batch in expected[5:10] for i, epoch in batch]
    assert len(set(epoch_one)) == 20 and {epoch for batch in expected[5:10] for _, epoch in batch} == {1}


def test_expert_batches_have_no_duplicates_within_a_step_and_resume_exactly():
    rank0 = ExpertBatchSampler(25, 4, rank=0, world_size=2, seed=2)
    rank1 = ExpertBatchSampler(25, 4, rank=1, world_size=2, seed=2)
    for step in range(30):
        together = [i for i, _ in rank0.batch(step) + rank1.batch(step)]
        assert len(set(together)) == 8 and all(0 <= i < 25 for i in together)
    # Iteration from a resume position is the same stream.
    stream = iter(ExpertBatchSampler(25, 4, rank=0, world_size=2, seed=2))
    first = [next(stream) for _ in range(7)]
    resumed = iter(ExpertBatchSampler(25, 4, rank=0, world_size=2, seed=2, start_batch=4))
    assert [next(resumed) for _ in range(3)] == first[4:] == [rank0.batch(s) for s in range(4, 7)]
    # Without replacement: within an epoch (3 global batches of 8 from 25) no item repeats.
    epoch = [i for s in range(3) for i, _ in rank0.batch(s) + rank1.batch(s)]
    assert len(epoch) == len(set(epoch)) == 24
    # Independent of the FLAIR order drawn with the same seed.
    flair_order = ShardedEpochBatchSampler(25, 4, rank=0, world_size=2, seed=2).permutation(0)[:4].tolist()
    assert [i for i, _ in rank0.batch(0)] != flair_order
    assert rank0.batch(0) != ExpertBatchSampler(25, 4, rank=0, world_size=2, seed=3).batch(0)
    with pytest.raises(ValueError, match="smaller than one global expert batch"):
        ExpertBatchSampler(7, 4, world_size=2)


def test_collate_tokenizes_and_stacks(tiny_model):
    collate = TokenizingCollate(tiny_model.text_model.tokenizer, 16)
    items = [
        {"image": torch.zeros(3, 8, 8, dtype=torch.uint8), "text": "glaucoma", "category_index": 0,
         "category_multi_hot": torch.tensor([True, False])},
        {"image": torch.ones(3, 8, 8, dtype=torch.uint8), "text": "a fundus photograph of drusen", "category_index": 1,
         "category_multi_hot": torch.tensor([False, True])},
    ]
    batch = collate(items)
    assert batch["images"].shape == (2, 3, 8, 8) and batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert batch["category_index"].tolist() == [0, 1]


def test_augmentation_is_seeded_bounded_and_changes_images():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    config = AugmentConfig()
    a = augment_batch(images, config, torch.Generator().manual_seed(1))
    b = augment_batch(images, config, torch.Generator().manual_seed(1))
    c = augment_batch(images, config, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, images, atol=1e-2)
    assert torch.equal(augment_batch(images, AugmentConfig(enabled=False), torch.Generator()), images)


def test_reproduce_augmentation_is_the_release_recipe():
    """Flip p=0.5, affine p=0.25 (rotation 5 degrees, scale 0.9-1, no shift), jitter p=0.25 (0.2, 0.2)."""
    config = AugmentConfig()
    assert (config.flip_probability, config.affine_probability, config.color_probability) == (0.5, 0.25, 0.25)
    assert config.scale_range == (0.9, 1.0) and config.translate_fraction == 0.0 and config.rotation_degrees == 5
    assert (config.brightness, config.contrast, config.saturation) == (0.2, 0.2, 0.0)
    images = torch.rand(400, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    none = AugmentConfig(flip_probability=0.0, affine_probability=0.0, color_probability=0.0)
    torch.testing.assert_close(augment_batch(images, none, torch.Generator().manual_seed(0)), images)
    flip_only = none.model_copy(update={"flip_probability": 1.0})
    torch.testing.assert_close(augment_batch(images, flip_only, torch.Generator().manual_seed(0)), images.flip(-1))
    # With flips off, an image is untouched unless its affine or jitter draw fired: 0.75 * 0.75 of them.
    no_flip = config.model_copy(update={"flip_probability": 0.0})
    out = augment_batch(images, no_flip, torch.Generator().manual_seed(3))
    untouched = (out - images).abs().flatten(1).amax(1) < 1e-5
    assert 0.48 < untouched.float().mean().item() < 0.65
    strong = AugmentConfig.strong()
    assert strong.affine_probability == 1.0 and strong.translate_fraction > 0
    out = augment_batch(images, strong.model_copy(update={"flip_probability": 0.0}), torch.Generator().manual_seed(3))
    assert ((out - images).abs().flatten(1).amax(1) > 1e-3).all()


def test_manifest_image_bomb_is_refused_from_its_header(tmp_path):
    """KeepFIT reads manifest images through the guarded decoder: a bomb costs a header read."""
    import pytest

    from foundation.imaging import ImageTooLarge
    from keepfit.preprocess import ResizedImageCache
    from testbed.hostile_pdfs import bomb_png

    bomb = tmp_path / "bomb.png"
    bomb_png(bomb, 18000)
    with pytest.raises(ImageTooLarge, match="18000×18000"):
        ResizedImageCache(tmp_path / "cache", 64).load(bomb, key="b" * 64)
