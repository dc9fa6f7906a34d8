"""The `reproduce` profile is the default everywhere; `improved` switches each of our deviations on."""

from __future__ import annotations

import pytest

from keepfit.augment import AugmentConfig
from keepfit.evaluation import MethodOptions
from keepfit.losses import LossConfig
from keepfit.profiles import available_profiles, load_profile, method_options_tree
from keepfit.trainer import load_pretrain_config


def test_reproduce_profile_is_exactly_the_defaults():
    profile = load_profile("reproduce")
    assert MethodOptions.model_validate(method_options_tree(profile)) == MethodOptions()
    assert AugmentConfig.model_validate(profile.pretrain["augment"]) == AugmentConfig()
    assert LossConfig.model_validate(profile.pretrain["loss"]) == LossConfig()
    assert profile.model == {}
    defaults = load_pretrain_config("keepfit-cfp").flair
    assert profile.pretrain["flair"] == {
        "attributes": defaults.attributes, "knowledge_excluded_sources": defaults.knowledge_excluded_sources
    }
    assert load_pretrain_config("keepfit-cfp") == load_pretrain_config("keepfit-cfp", ["profile=reproduce"])


def test_improved_profile_turns_on_each_named_option():
    assert set(available_profiles()) >= {"reproduce", "improved"}
    profile = load_profile("improved")
    methods = MethodOptions.model_validate(method_options_tree(profile))
    assert methods.profile == "improved"
    assert methods.prompts.prototype == "renormalized_mean" and methods.linear_probe.normalize
    assert (methods.fine_tune.epochs, methods.fine_tune.patience, methods.fine_tune.update_batchnorm) == (20, 5, False)
    config = load_pretrain_config("keepfit-cfp", ["profile=improved"])
    assert config.loss.soft_targets == "multi_hot"
    assert config.augment == AugmentConfig.strong()
    assert config.model_overrides == {"text.padded_mean": False}
    # Explicit settings win over the profile.
    explicit = load_pretrain_config(
        "keepfit-cfp", ["profile=improved", "loss.soft_targets=sampled_category", "model_overrides.text.padded_mean=true"]
    )
    assert explicit.loss.soft_targets == "sampled_category" and explicit.model_overrides == {"text.padded_mean": True}
    assert explicit.augment == AugmentConfig.strong()
    tuned = MethodOptions.model_validate(method_options_tree("improved", {"linear_probe": {"normalize": False}}))
    assert tuned.linear_probe.normalize is False and tuned.prompts.prototype == "renormalized_mean"


def test_unknown_or_malformed_profiles_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="profile 'nope' not found"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("evaluation: {}\nsurprise: 1\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_profile(bad)
