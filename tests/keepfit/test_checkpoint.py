import pickle

import pytest
import torch

import keepfit
from keepfit.checkpoint import load_checkpoint, load_state_dict_strict, read_sidecar, read_state_dict, save_checkpoint

RELEASED_SHAPES = {
    "vision_model.projection_head_vision.projection.weight": (512, 2048),
    "text_model.projection_head_text.projection.weight": (512, 768),
    "logit_scale": (),
    "attention.W_q.weight": (512, 512),
    "attention.W_k.weight": (512, 512),
    "attention.W_v.weight": (512, 512),
    "attention.W_o.weight": (512, 512),
    "vision_model.model.conv1.weight": (64, 3, 7, 7),
    "vision_model.model.layer4.2.bn3.running_var": (2048,),
    "text_model.model.embeddings.word_embeddings.weight": (28996, 768),
    "text_model.model.encoder.layer.11.output.dense.weight": (768, 3072),
    "text_model.model.pooler.dense.weight": (768, 768),
}


def _released_state_dict() -> dict[str, torch.Tensor]:
    """A state dict shaped like the released KeepFIT .pth, built from torchvision/transformers configs."""
    import torchvision
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    state = {}
    resnet = torchvision.models.resnet50(weights=None)
    state.update({f"vision_model.model.{k}": v for k, v in resnet.state_dict().items() if not k.startswith("fc.")})
    state["vision_model.projection_head_vision.projection.weight"] = torch.randn(512, 2048)
    bert = BertModel(BertConfig(vocab_size=28996))
    state.update({f"text_model.model.{k}": v for k, v in bert.state_dict().items()})
    state["text_model.model.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    state["text_model.projection_head_text.projection.weight"] = torch.randn(512, 768)
    state["logit_scale"] = torch.tensor(2.6592)
    for name in ("W_q", "W_k", "W_v", "W_o"):
        state[f"attention.{name}.weight"] = torch.randn(512, 512)
    return state


@pytest.mark.slow
def test_released_layout_loads_strictly_and_saves_back_to_the_same_keys(tmp_path):
    released = _released_state_dict()
    for key, shape in RELEASED_SHAPES.items():
        assert tuple(released[key].shape) == shape, key
    path = tmp_path / "keepfit_released.pth"
    torch.save(released, path)

    model = keepfit.load(path)  # no sidecar: architecture inferred from the keys
    assert model.config.name == "keepfit-cfp" and model.attention is not None
    # As trained: text pooled over padding tokens too, 256 tokens (the reproduce profile, no flag needed).
    assert model.config.text.padded_mean and model.config.text.max_length == 256
    assert torch.equal(model.attention.W_v.weight, released["attention.W_v.weight"])
    assert torch.equal(
        model.text_model.model.embeddings.word_embeddings.weight,
        released["text_model.model.embeddings.word_embeddings.weight"],
    )
    saved = save_checkpoint(model, tmp_path / "resaved.pth")
    resaved = read_state_dict(saved)
    expected_keys = set(released) - {"text_model.model.embeddings.position_ids"}
    assert set(resaved) == expected_keys
    for key in expected_keys:
        assert torch.equal(resaved[key], released[key]), key
    assert model.image_features(torch.rand(1, 3, 64, 64)).shape == (1, 2048)

    flair_state = {k: v for k, v in released.items() if not k.startswith("attention.")}
    flair = keepfit.create_model("flair", **{"vision.pretrained": False, "text.pretrained": False})
    load_state_dict_strict(flair, flair_state)
    with pytest.raises(ValueError, match="missing"):
        load_state_dict_strict(model, flair_state)


def test_tiny_round_trip_keeps_weights_and_sidecar_names_the_architecture(tmp_path, tiny_model, tiny_images):
    path = save_checkpoint(tiny_model, tmp_path / "tiny.pth", {"note": "round trip"})
    sidecar = read_sidecar(path)
    assert sidecar["model_config"]["name"] == "tiny" and sidecar["note"] == "round trip"
    loaded = keepfit.load(path)
    tiny_model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(tiny_images), tiny_model.encode_image(tiny_images), atol=1e-6)
        assert torch.allclose(loaded.encode_text(["glaucoma"]), tiny_model.encode_text(["glaucoma"]), atol=1e-6)


def test_mismatched_and_unsafe_checkpoints_fail_with_the_file_name(tmp_path, tiny_model):
    broken = save_checkpoint(tiny_model, tmp_path / "broken.pth")
    state = tiny_model.state_dict()
    state.pop("attention.W_o.weight")
    state["unexpected.weight"] = torch.zeros(1)
    torch.save(state, broken)
    with pytest.raises(ValueError, match="broken.pth.*missing.*W_o.*unexpected.weight"):
        load_checkpoint(broken)

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled",))

    unsafe = tmp_path / "unsafe.pth"
    with unsafe.open("wb") as handle:
        pickle.dump({"weight": Payload()}, handle, protocol=2)
    with pytest.raises(ValueError, match="unsafe.pth"):
        read_state_dict(unsafe)
