"""Melody tokens round-trip, the datasets hold what they say, and generated tokens can be heard and seen."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mlm_lessons import melody  # noqa: E402
from mlm_lessons.melody import BAR, BOS, EOS, PAD, REST, VOCAB, MelodyNote  # noqa: E402


def test_vocabulary_names_are_unique_and_ids_line_up():
    assert len(set(VOCAB.names)) == len(VOCAB) == 5 + 6 + 84 + 13
    assert (PAD, BOS, EOS, BAR, REST) == (0, 1, 2, 3, 4)
    assert VOCAB.names[VOCAB.pitch_token(60)] == "C4" and VOCAB.names[VOCAB.pitch_token(69)] == "A4"
    assert VOCAB.names[VOCAB.duration_token(1.5)] == "d1.5" and VOCAB.names[VOCAB.shift_token(-2)] == "<down 2>"
    assert VOCAB["C4"] == VOCAB.pitch_token(60)
    for token in range(len(VOCAB)):
        kinds = [VOCAB.is_pitch(token), VOCAB.is_duration(token), VOCAB.is_shift(token), token < 5]
        assert sum(kinds) == 1
    with pytest.raises(ValueError, match="outside"):
        VOCAB.pitch_token(10)
    with pytest.raises(ValueError, match="no token"):
        VOCAB.duration_token(0.25)
    with pytest.raises(ValueError, match="no token"):
        VOCAB.shift_token(9)


def test_every_synthcaps_melody_round_trips_through_tokens():
    for seed in range(200):
        notes, _ = melody.compose_melody(seed, beats=16)
        tokens = melody.encode_melody(notes)
        assert tokens[0] == BOS and tokens[-1] == EOS and tokens[1] == BAR
        assert melody.decode_melody(tokens, strict=True) == notes
        assert melody.grammar_errors(tokens) == 0
        assert tokens.count(BAR) == 4                                 # 16 beats = 4 bars


def test_gaps_become_rests_and_bars_mark_new_bars():
    notes = (MelodyNote(60, 0.0, 1.0), MelodyNote(62, 3.5, 0.5), MelodyNote(64, 6.5, 1.5))
    tokens = melody.encode_melody(notes)
    names = VOCAB.to_names(tokens)
    assert names == ["<bos>", "|", "C4", "d1", "rest", "d2", "rest", "d0.5", "D4", "d0.5",
                     "|", "rest", "d2", "rest", "d0.5", "E4", "d1.5", "<eos>"]
    assert melody.decode_melody(tokens, strict=True) == notes
    assert melody.encode_melody(notes, bos=False, eos=False, bars=False)[:2] == [VOCAB.pitch_token(60),
                                                                                 VOCAB.duration_token(1.0)]
    with pytest.raises(ValueError, match="monophonic"):
        melody.encode_melody((MelodyNote(60, 0.0, 2.0), MelodyNote(62, 1.0, 1.0)))


def test_decoding_a_models_mistakes_is_lenient_unless_strict():
    c4, d1, d2 = VOCAB.pitch_token(60), VOCAB.duration_token(1.0), VOCAB.duration_token(2.0)
    messy = [BOS, c4, c4, d1, d2, BAR, REST, d1, c4, d2, EOS, c4, d1]
    assert melody.decode_melody(messy) == (MelodyNote(60, 0.0, 1.0), MelodyNote(60, 2.0, 2.0))
    assert melody.grammar_errors(messy) == 2                          # a pitch without a duration, a lone duration
    with pytest.raises(ValueError, match="no duration"):
        melody.decode_melody(messy, strict=True)
    assert melody.decode_melody(torch.tensor([BOS, c4, d1, PAD, c4, d1])) == (MelodyNote(60, 0.0, 1.0),)


def test_compose_melody_is_deterministic_and_exactly_the_right_length():
    first, attrs = melody.compose_melody(3, beats=8)
    assert first == melody.compose_melody(3, beats=8)[0]
    assert first != melody.compose_melody(4, beats=8)[0]
    assert all(note.onset_beats + note.duration_beats <= 8 for note in first)
    assert melody.compose_melody(3, beats=8, mood="sad")[1].mood == "sad" and attrs.mood in ("calming", "energetic",
                                                                                              "sad", "happy",
                                                                                              "mysterious", "aggressive")


def test_melody_dataset_pads_and_splits_by_seed():
    train = melody.MelodyDataset(40, beats=16, first_seed=0)
    held_out = melody.MelodyDataset(10, beats=16, first_seed=1_000)
    assert train.tokens.shape == (40, 72) and train[3]["tokens"].dtype == torch.long
    lengths = (train.tokens != PAD).sum(1)
    assert torch.all(train.tokens[torch.arange(40), lengths - 1] == EOS)
    assert not set(map(tuple, train.melodies)) & set(map(tuple, held_out.melodies))
    with pytest.raises(ValueError, match="more than length"):
        melody.MelodyDataset(5, beats=16, max_len=20)


def test_transposition_pairs_are_the_same_melody_moved():
    pairs = melody.TranspositionDataset(50, beats=8, first_seed=0)
    assert pairs.sources.shape == pairs.targets.shape == (50, 40)
    assert set(pairs.shifts) <= set(melody.TRANSPOSITION_SHIFTS) and len(set(pairs.shifts)) > 2
    for index in range(50):
        source, target = pairs[index]["source"], pairs[index]["target"]
        shift = VOCAB.shift_of(int(source[0]))
        assert shift == pairs.shifts[index] and target[0] == BOS
        assert melody.decode_melody(target, strict=True) == melody.transpose(melody.decode_melody(source), shift)
        assert torch.equal(source != PAD, target != PAD)                  # token t lines up with token t
    with pytest.raises(ValueError, match="subset"):
        melody.TranspositionDataset(2, shifts=(11,))


def test_counting_baselines_prefer_the_bigram_on_held_out_melodies():
    train = melody.MelodyDataset(300, first_seed=0).tokens
    test = melody.MelodyDataset(50, first_seed=10_000).tokens
    baselines = melody.unigram_bigram_baselines(train, test)
    assert 1.0 < baselines["bigram"] < baselines["unigram"] < len(VOCAB)


def test_rendering_tokens_gives_audio_of_the_melodys_length():
    notes, _ = melody.compose_melody(0, beats=8)
    wave = melody.render_melody(melody.encode_melody(notes), tempo_bpm=120, sample_rate=16_000)
    assert wave.dtype == np.float32 and np.isfinite(wave).all() and np.abs(wave).max() > 0.1
    assert len(wave) == round((8 * 0.5 + 0.5) * 16_000)
    assert len(melody.render_melody(notes, seconds=1.0)) == 16_000
    silent = melody.render_melody([BOS, EOS], seconds=0.5)
    assert len(silent) == 8_000 and np.abs(silent).max() == 0


def test_piano_roll_draws_one_bar_per_note_and_labels_axes():
    notes = (MelodyNote(60, 0.0, 1.0), MelodyNote(67, 1.0, 3.0), MelodyNote(64, 4.0, 2.0))
    ax = melody.plot_piano_roll(notes, title="a tune", label="original")
    melody.plot_piano_roll(melody.transpose(notes, 5), ax=ax, label="up a fourth")
    assert len(ax.patches) == 6 and ax.get_xlabel() == "time (beats)" and ax.get_ylabel() == "MIDI pitch"
    assert ax.get_title() == "a tune" and [t.get_text() for t in ax.get_legend().get_texts()] == ["original", "up a fourth"]
    plt.close("all")


def test_diatonic_fit_scores_synthcaps_melodies_as_fully_diatonic():
    for seed in range(20):
        assert melody.diatonic_fit(melody.compose_melody(seed)[0]) == 1.0
    chromatic = tuple(MelodyNote(60 + i, float(i), 1.0) for i in range(12))
    assert melody.diatonic_fit(chromatic) == pytest.approx(7 / 12)
    assert melody.diatonic_fit(()) == 0.0


def test_repeated_ngrams_are_counted_up_to_eos():
    assert melody.repeated_ngram_fraction([5, 6, 7, 8, 9], n=2) == 0.0
    assert melody.repeated_ngram_fraction([5, 6, 5, 6, 5, 6], n=2) == pytest.approx(3 / 5)
    assert melody.repeated_ngram_fraction(torch.tensor([5, 6, 5, EOS, 5, 6]), n=2) == 0.0
    assert melody.repeated_ngram_fraction([5], n=2) == 0.0
