"""Presets are complete, consistent, and round-trip through plain dicts (checkpoints)."""

import dataclasses

import pytest

from mlm_lessons import config


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_presets_round_trip_through_dicts(name):
    preset = config.get_preset(name)
    assert preset.name == name
    assert config.Config.from_dict(preset.to_dict()) == preset


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_token_streams_are_consistent(name):
    tokens = config.get_preset(name).tokens
    assert 0 < tokens.coarse_levels < tokens.rvq_levels
    transformer = config.get_preset(name).transformer
    assert transformer.d_model % transformer.n_heads == 0


def test_paper_preset_matches_the_published_token_rates():
    tokens = config.get_preset("paper").tokens
    sample_rate = config.get_preset("paper").data.sample_rate
    # 50 Hz x 12 levels x log2(1024) = 10 bits -> 6 kbps at 24 kHz (MusicLM, section 3.2)
    assert sample_rate == 24_000
    bits_per_second = tokens.soundstream_frame_rate * tokens.rvq_levels * 10
    assert bits_per_second == 6_000 and tokens.codebook_size == 2**10
    assert (tokens.coarse_levels, tokens.rvq_levels - tokens.coarse_levels) == (4, 8)
    assert (tokens.semantic_frame_rate, tokens.semantic_clusters) == (25, 1024)
    assert (tokens.mulan_dim, tokens.mulan_rvq_levels, tokens.mulan_codebook_size) == (128, 12, 1024)


def test_tiny_is_small_enough_for_a_laptop():
    tiny = config.get_preset("tiny")
    assert tiny.train.device == "cpu" and tiny.transformer.d_model <= 256


def test_unknown_preset_and_fields_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*paper.*small.*tiny"):
        config.get_preset("huge")
    values = config.get_preset("tiny").to_dict()
    values["train"]["learnig_rate"] = 1.0
    with pytest.raises(ValueError, match=r"config.train has unknown field\(s\) \['learnig_rate'\].*newer "
                                         r"version of mlm_lessons"):
        config.Config.from_dict(values)


def test_dicts_saved_before_a_field_existed_get_its_default():
    """A checkpoint written before a field (or a whole section) was added keeps loading."""
    tiny = config.get_preset("tiny")
    values = tiny.to_dict()
    del values["train"]["grad_accum_steps"], values["codec"]
    loaded = config.Config.from_dict(values)
    assert loaded.train.grad_accum_steps == config.TrainConfig().grad_accum_steps
    assert loaded.codec == config.CodecConfig()
    assert dataclasses.replace(loaded, codec=tiny.codec) == tiny


def test_variants_are_made_with_replace():
    tiny = config.get_preset("tiny")
    faster = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, learning_rate=1e-2))
    assert faster.train.learning_rate == 1e-2 and tiny.train.learning_rate == 1e-3


def test_stage_windows_shrink_from_semantic_to_fine_and_the_paper_uses_its_crops():
    paper = config.get_preset("paper").stages
    assert (paper.seconds("semantic"), paper.seconds("coarse"), paper.seconds("fine")) == (30.0, 10.0, 3.0)
    assert (paper.temperature("semantic"), paper.temperature("coarse"), paper.temperature("fine")) == (1.0, 0.95, 0.4)
    for name in config.PRESETS:
        stages = config.get_preset(name).stages
        assert stages.semantic_seconds >= stages.coarse_seconds >= stages.fine_seconds > 0
    older = config.get_preset("tiny").to_dict()
    del older["stages"]                                   # a checkpoint written before the section existed
    assert config.Config.from_dict(older).stages == config.StagesConfig()
