"""Token files: one per clip, written atomically, resumed, refused when other models made them."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mlm_lessons import audio, config, datasets, mulan, soundstream, token_files, tokenize

CHECKPOINTS = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
TINY = config.get_preset("tiny")


@pytest.fixture(scope="module")
def models():
    sources = {"codec": CHECKPOINTS / "soundstream-tiny.pt", "semantic": CHECKPOINTS / "w2v-bert-tiny.pt",
               "mulan": CHECKPOINTS / "mulan-tiny.pt"}
    return (soundstream.SoundStream.load(sources["codec"]), tokenize.SemanticTokenizer.load(sources["semantic"]),
            mulan.MuLan.load(sources["mulan"]), sources)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    datasets.write_synthcaps(root, num_clips=3, clip_seconds=2.0, progress=False)
    return datasets.read_synthcaps_manifest(root)


def test_each_clip_gets_its_tokens_with_shapes_and_rates_recorded(models, clips, tmp_path):
    codec, semantic, tower, sources = models
    spec_path = token_files.extract_tokens(clips, tmp_path, codec, semantic, tower, sources, progress=False)
    spec = json.loads(spec_path.read_text())
    assert spec["acoustic"] == {"levels": TINY.tokens.rvq_levels, "codebook_size": TINY.tokens.codebook_size,
                                "frame_rate": TINY.tokens.soundstream_frame_rate}
    assert spec["semantic"]["frame_rate"] == 25 and spec["sources"]["mulan"]["file"] == "mulan-tiny.pt"
    token_files.check_token_spec(spec, TINY)
    spec, read = token_files.read_token_files(tmp_path)
    assert [clip["ytid"] for clip in read] == sorted(record.ytid for record in clips)
    first = {clip["ytid"]: clip for clip in read}[clips[0].ytid]
    assert first["acoustic"].shape == (2 * 50, TINY.tokens.rvq_levels) and first["semantic"].shape == (2 * 25,)
    assert first["mulan"].shape == (TINY.tokens.mulan_rvq_levels,) and first["acoustic"].dtype == torch.long
    wave = audio.load_audio(clips[0].path)[0]
    assert torch.equal(first["acoustic"], codec.encode(wave, pad=True)[0].T)
    assert torch.equal(first["semantic"], semantic.semantic_tokens(wave)[0])
    assert torch.equal(first["mulan"], tower.audio_tokens(wave)[0])


def test_a_second_run_does_nothing_and_an_interrupted_one_resumes(models, clips, tmp_path, monkeypatch):
    codec, semantic, tower, sources = models
    token_files.extract_tokens(clips, tmp_path, codec, semantic, tower, sources, progress=False)
    (tmp_path / f"{clips[1].ytid}.pt").unlink()                       # as if the run had stopped there
    encoded = []
    original = codec.encode
    monkeypatch.setattr(codec, "encode", lambda audio, **kw: encoded.append(1) or original(audio, **kw))
    token_files.extract_tokens(clips, tmp_path, codec, semantic, tower, sources, progress=False)
    assert len(encoded) == 1 and (tmp_path / f"{clips[1].ytid}.pt").exists()
    token_files.extract_tokens(clips, tmp_path, codec, semantic, tower, sources, progress=False)
    assert len(encoded) == 1                                          # nothing left to do


def test_token_files_from_other_models_or_for_another_config_are_refused(models, clips, tmp_path):
    codec, semantic, tower, sources = models
    token_files.extract_tokens(clips[:1], tmp_path, codec, semantic, tower, sources, progress=False)
    other = dict(sources, mulan=CHECKPOINTS / "w2v-bert-tiny.pt")      # another file: another digest
    with pytest.raises(token_files.TokenFileMismatch, match="made by other models: sources.mulan"):
        token_files.extract_tokens(clips, tmp_path, codec, semantic, tower, other, progress=False)
    spec, _ = token_files.read_token_files(tmp_path)
    deeper = dataclasses.replace(TINY, tokens=dataclasses.replace(TINY.tokens, rvq_levels=8, codebook_size=1024))
    with pytest.raises(token_files.TokenFileMismatch, match="acoustic.codebook_size is 256 there but 1024 here"):
        token_files.check_token_spec(spec, deeper)
    with pytest.raises(FileNotFoundError, match="no token file for clip 'nope'"):
        token_files.read_token_files(tmp_path, ["nope"])
    with pytest.raises(FileNotFoundError, match="not a token folder"):
        token_files.read_token_files(tmp_path / "missing")
