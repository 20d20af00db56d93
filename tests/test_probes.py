"""Linear probes: labels read from the score, token features, and a probe that finds what is there and
only that."""

import dataclasses

import numpy as np
import pytest
import torch

from mlm_lessons import config, datasets, probes, soundstream, synth, w2v_bert
from mlm_lessons.tokenize import SemanticTokenizer


def test_pitch_classes_are_read_from_the_lead_notes():
    score = synth.Score(tempo_bpm=120.0, seconds=1.0, seed=0, key="C", mode="major", beats_per_bar=4,
                        beats_per_chord=4, chords=(), melody=(),
                        lead=(synth.Note(60, 0.0, 0.2, 0.8), synth.Note(67, 0.4, 0.3, 0.8),
                              synth.Note(74, 0.6, 0.2, 0.8)))
    labels = probes.melody_pitch_classes(score, frame_rate=10, num_frames=10)   # frame centres 0.05, 0.15, ...
    # C for 0-0.2 s; a rest; G from 0.4 s until D (the later onset) takes over at 0.6 s; rest after 0.8 s.
    np.testing.assert_array_equal(labels, [0, 0, -1, -1, 7, 7, 2, 2, -1, -1])


def test_one_hot_tokens_give_each_stream_its_own_block():
    features = probes.one_hot_tokens(np.array([[1, 0], [2, 2]]), vocab_size=3)
    np.testing.assert_array_equal(features, [[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 1]])
    assert probes.one_hot_tokens(torch.tensor([0, 2]), 3).shape == (2, 3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        probes.one_hot_tokens(np.array([3]), 3)


def test_acoustic_frames_regroup_codes_without_reordering_time():
    codes = np.arange(2 * 6).reshape(2, 6)          # 2 levels, 6 acoustic frames
    grouped = probes.acoustic_frames(codes, 3)       # 3 coarse frames of 2 acoustic frames each
    assert grouped.shape == (3, 2, 2)
    np.testing.assert_array_equal(grouped[1], [[2, 3], [8, 9]])
    with pytest.raises(ValueError, match="must divide"):
        probes.acoustic_frames(codes, 4)


def test_a_probe_finds_a_linear_signal_and_not_a_missing_one():
    generator = np.random.default_rng(0)
    labels = generator.integers(0, 4, 2000)
    informative = np.eye(4)[labels] + 0.3 * generator.normal(size=(2000, 4))
    noise = generator.normal(size=(2000, 4))
    labels[::10] = -1                                   # unlabelled frames are ignored
    found = probes.linear_probe(informative[:1500], labels[:1500], informative[1500:], labels[1500:])
    missing = probes.linear_probe(noise[:1500], labels[:1500], noise[1500:], labels[1500:])
    assert found.accuracy > 0.95 and found.num_test == int((labels[1500:] >= 0).sum())
    assert abs(missing.accuracy - 0.25) < 0.06 and 0.2 < missing.chance < 0.35
    with pytest.raises(ValueError, match="differ in length"):
        probes.linear_probe(noise[:10], labels[:9], noise[:5], labels[:5])
    with pytest.raises(ValueError, match="at least two classes"):
        probes.linear_probe(noise[:10], np.zeros(10, int), noise[:5], np.zeros(5, int))


def test_probe_frames_line_up_every_representation(tmp_path):
    data = tmp_path / "data"
    datasets.write_synthcaps(data, preset="tiny", num_clips=4, clip_seconds=1.0, progress=False)
    records = datasets.read_synthcaps_manifest(data)
    tiny = config.get_preset("tiny")
    section = dataclasses.replace(tiny.w2v_bert, n_mels=16, conv_channels=4, d_model=16, n_heads=2,
                                  contrastive_layers=1, mlm_layers=1, target_codebook_size=16, token_layer=1)
    torch.manual_seed(0)
    encoder = w2v_bert.W2VBert(16_000, 25, section).eval()
    clips = [datasets.audio.load_audio(record.path)[0] for record in records]
    tokenizer = SemanticTokenizer.fit(encoder, clips, num_clusters=8)
    codec_section = dataclasses.replace(tiny.codec, channels=4, latent_dim=8)
    codec = soundstream.SoundStream(16_000, 50, 2, 16, codec_section).eval()
    frames = probes.probe_frames(records, tokenizer, codec, clip_seconds=1.0)
    assert len(frames.layers) == 3 and all(layer.shape == (100, 16) for layer in frames.layers)
    assert frames.semantic_tokens.shape == frames.pitch_class.shape == (100,)
    assert frames.acoustic_tokens.shape == (100, 2, 2) and frames.log_mel.shape == (100, 16)
    np.testing.assert_array_equal(frames.clip, np.repeat(np.arange(4), 25))
    leads = [synth.INSTRUMENTS.index(record.attributes.lead) for record in records]
    np.testing.assert_array_equal(frames.instrument, np.repeat(leads, 25))
    assert (frames.pitch_class >= 0).mean() > 0.3
    table = probes.probe_table(frames, frames, codebook_size=16, num_clusters=8, embedding_layer=1)
    assert set(table) == {"log-mel (continuous)", "acoustic tokens, level 1", "acoustic tokens, 2 levels",
                          "semantic tokens", "w2v-BERT layer 1 (continuous)"}
    assert all(set(row) == {"pitch class", "instrument"} for row in table.values())
