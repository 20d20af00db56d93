"""The MusicLM pipeline object: one folder in, prompts to audio out, every bad input a clear error."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings

import pytest
import torch

from mlm_lessons import config, musiclm, pipeline
from mlm_lessons.soundstream import SoundStream

PROMPTS = ["a calming violin melody backed by a distorted guitar riff", "an energetic trumpet tune"]




def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def test_generate_gives_one_clip_per_prompt_of_the_asked_length(shipped):
    assert pipeline.check_seconds(0.5, shipped.config) == 0.52, "rounded to whole semantic frames (0.04 s)"
    audio = shipped.generate(PROMPTS, seconds=1.0, seed=0)
    frames = round(1.0 * shipped.codec.frame_rate)
    assert audio.shape == (2, frames * shipped.codec.hop_length) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all() and audio.abs().max() > 1e-3            # music, not silence


def test_music_longer_than_every_window_slides(shipped):
    seconds = shipped.stages["semantic"].seconds + 1.0                        # beyond the longest window (4 s)
    codes = shipped.generate_tokens(shipped.prompt_tokens(PROMPTS[:1]), seconds,
                                    generator=torch.Generator().manual_seed(0))
    assert codes["semantic"].shape[1] == round(seconds * shipped.config.tokens.semantic_frame_rate)
    assert codes["acoustic"].shape[1:] == (round(seconds * shipped.codec.frame_rate), shipped.codec.num_levels)


def test_the_same_seed_gives_the_same_audio_and_another_seed_other_audio(shipped):
    first = shipped.generate(PROMPTS, seconds=0.5, seed=3)
    assert torch.equal(first, shipped.generate(PROMPTS, seconds=0.5, seed=3))
    assert not torch.equal(first, shipped.generate(PROMPTS, seconds=0.5, seed=4))


def test_batches_of_any_size_give_every_prompt_its_clip(shipped):
    audio = shipped.generate(PROMPTS * 2, seconds=0.5, seed=0, batch_size=3)
    assert audio.shape[0] == 4
    with pytest.raises(ValueError, match="batch_size"):
        shipped.generate(PROMPTS, seconds=0.5, batch_size=0)


def test_temperatures_override_the_configuration_per_stage(shipped):
    tokens = shipped.prompt_tokens(PROMPTS)
    greedy = [shipped.generate_tokens(tokens, 0.5, {name: 0.0 for name in musiclm.STAGES},
                                      generator=torch.Generator().manual_seed(seed))["acoustic"] for seed in (0, 1)]
    assert torch.equal(*greedy), "temperature 0 is greedy: the seed no longer matters"
    with pytest.raises(ValueError, match="temperatures are per stage"):
        shipped.generate_tokens(tokens, 0.5, {"semantics": 1.0})
    with pytest.raises(ValueError, match="temperatures are per stage"):
        shipped.generate_tokens(tokens, 0.5, {"fine": -1.0})


@pytest.mark.parametrize("prompt, message", [
    ("", "prompt 0 is empty"),
    ("   \n", "prompt 0 is empty"),
    ("!!! ... ???", "MuLan knows no word"),
    ("zxqv qxzv", "MuLan knows no word"),
])
def test_prompts_mulan_cannot_read_are_refused(shipped, prompt, message):
    with pytest.raises(ValueError, match=message):
        shipped.generate(prompt, seconds=0.5)


def test_the_bad_prompt_of_a_list_is_named_and_other_inputs_are_checked(shipped):
    with pytest.raises(ValueError, match="prompt 1"):
        shipped.generate(["a sad piano", "???"], seconds=0.5)
    with pytest.raises(ValueError, match="no prompts"):
        shipped.generate([], seconds=0.5)
    with pytest.raises(ValueError, match="prompt 0 is a int"):
        shipped.generate([3], seconds=0.5)
    assert pipeline.check_prompts("violins!!", shipped.mulan) == ["violins!!"]      # a stem is a known word


def test_a_very_long_prompt_is_cut_with_a_warning_and_still_generates(shipped):
    prompt = "a calming violin melody with a slow tempo " * 40
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        audio = shipped.generate(prompt, seconds=0.5)
    assert audio.shape[0] == 1
    assert [str(warning.message) for warning in caught if "was cut" in str(warning.message)], "one clear warning"
    limit = shipped.mulan.config.max_text_len
    assert torch.equal(shipped.prompt_tokens(prompt), shipped.prompt_tokens(prompt + " and a loud trumpet")), \
        f"words after the first {limit} subwords change nothing"


@pytest.mark.parametrize("seconds", [0, -1.0, 0.01, math.nan, math.inf, pipeline.MAX_SECONDS + 1, "4"])
def test_seconds_out_of_range_are_refused(shipped, seconds):
    with pytest.raises(ValueError, match="seconds"):
        shipped.generate("a sad piano", seconds=seconds)


def test_a_saved_folder_loads_into_the_same_pipeline(shipped, shipped_folder):
    manifest = json.loads((shipped_folder / pipeline.MANIFEST_NAME).read_text())
    assert sorted(part["file"] for part in manifest["parts"].values()) == sorted(pipeline.PART_FILES.values())
    loaded = pipeline.MusicLM.load(shipped_folder)
    assert torch.equal(loaded.generate(PROMPTS, seconds=0.5, seed=1), shipped.generate(PROMPTS, seconds=0.5, seed=1))


def test_a_folder_missing_a_part_names_it(shipped_folder, tmp_path):
    broken = copy_of(shipped_folder, tmp_path)
    (broken / "coarse.pt").unlink()
    with pytest.raises(pipeline.PipelineError, match=r"lacks \['coarse.pt'\]"):
        pipeline.MusicLM.load(broken)
    with pytest.raises(pipeline.PipelineError, match="no pipeline folder"):
        pipeline.MusicLM.load(tmp_path / "nowhere")


def test_a_part_swapped_after_saving_is_noticed(shipped_folder, tmp_path):
    swapped = copy_of(shipped_folder, tmp_path)
    shutil.copy(swapped / "coarse.pt", swapped / "fine.pt")
    with pytest.raises(pipeline.PipelineError, match="fine.pt is not the fine this pipeline was assembled with"):
        pipeline.MusicLM.load(swapped)
    (swapped / pipeline.MANIFEST_NAME).write_text("{not json")
    with pytest.raises(pipeline.PipelineError, match="damaged"):
        pipeline.MusicLM.load(swapped)


def test_a_codec_that_makes_other_tokens_than_the_stages_read_is_refused(shipped, shipped_folder, tmp_path):
    mismatched = copy_of(shipped_folder, tmp_path)
    tiny = config.get_preset("tiny")
    other = dataclasses.replace(tiny, tokens=dataclasses.replace(tiny.tokens, rvq_levels=8))
    SoundStream.from_config(other).save(mismatched / "soundstream.pt")
    pipeline.write_manifest(mismatched)                                  # the swap is deliberate: re-assembled
    with pytest.raises(pipeline.PipelineError,
                       match="semantic stage was built for other tokens.*acoustic.levels is 8 in the token models"):
        pipeline.MusicLM.load(mismatched)


def test_stages_built_for_another_tokenizer_are_refused(shipped):
    tiny = config.get_preset("tiny")
    other = dataclasses.replace(tiny, tokens=dataclasses.replace(tiny.tokens, semantic_clusters=64))
    stages = {**shipped.stages, "semantic": musiclm.Stage.from_config(other, "semantic")}
    with pytest.raises(pipeline.PipelineError,
                       match="semantic stage was built for other tokens.*semantic.codebook_size"):
        pipeline.MusicLM(shipped.codec, shipped.semantic_tokenizer, shipped.mulan, stages)
    with pytest.raises(pipeline.PipelineError, match="missing"):
        pipeline.MusicLM(shipped.codec, shipped.semantic_tokenizer, shipped.mulan,
                         {"semantic": shipped.stages["semantic"]})
