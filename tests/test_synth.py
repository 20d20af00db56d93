"""The SynthCaps renderer: attributes, composition and the sound of each instrument.

Timbre tests measure spectra instead of trusting names: a flute's energy sits in its
fundamental, a clarinet lacks even harmonics, a piano decays and an organ does not.
"""

import itertools

import numpy as np
import pytest

from mlm_lessons import synth

SR = 16_000


def harmonic_energies(wave: np.ndarray, f0: float, sample_rate: int = SR, count: int = 12) -> np.ndarray:
    """``(count,)`` spectral energy within +-0.3 f0 of each harmonic k * f0."""
    padded = 8 * len(wave)
    power = np.abs(np.fft.rfft(wave * np.hanning(len(wave)), padded)) ** 2
    freqs = np.fft.rfftfreq(padded, 1 / sample_rate)
    energies = []
    for k in range(1, count + 1):
        band = np.abs(freqs - k * f0) < 0.3 * f0
        energies.append(power[band].sum())
    return np.array(energies)


def fundamental_frequency(wave: np.ndarray, sample_rate: int = SR) -> float:
    """Frequency (Hz) of a pitched note's fundamental: find the lowest spectral peak
    above 10% of the largest magnitude, then take the power-weighted mean frequency
    within a semitone of it, so vibrato's sidebands average out to the centre pitch."""
    padded = 16 * len(wave)
    magnitude = np.abs(np.fft.rfft(wave * np.hanning(len(wave)), padded))
    freqs = np.fft.rfftfreq(padded, 1 / sample_rate)
    magnitude[freqs < 40] = 0
    threshold = 0.1 * magnitude.max()
    is_peak = (magnitude[1:-1] > threshold) & (magnitude[1:-1] >= magnitude[:-2]) & (magnitude[1:-1] >= magnitude[2:])
    peak_hz = freqs[int(np.flatnonzero(is_peak)[0]) + 1]
    band = np.abs(freqs - peak_hz) < 0.06 * peak_hz
    power = magnitude[band] ** 2
    return float(np.sum(freqs[band] * power) / np.sum(power))


def steady_part(wave: np.ndarray, start: float = 0.3, stop: float = 0.8) -> np.ndarray:
    return wave[int(start * SR):int(stop * SR)]


def rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(wave.astype(float) ** 2)))


def decay_ratio(wave: np.ndarray) -> float:
    """RMS in 0.9-1.1 s over RMS in 0.05-0.25 s of a note held for 1.2 s."""
    return rms(wave[int(0.9 * SR):int(1.1 * SR)]) / rms(wave[int(0.05 * SR):int(0.25 * SR)])


@pytest.fixture(scope="module")
def notes():
    """A3 (220 Hz) held for 1.2 s of a 1.5 s render, on every voice."""
    return {name: synth.render_note(name, 57, seconds=1.5, sample_rate=SR) for name in synth.INSTRUMENTS}


# --- attributes ---------------------------------------------------------------

def test_there_are_at_least_eight_distinct_lead_instruments():
    assert len(synth.INSTRUMENTS) >= 8
    assert len(set(synth.INSTRUMENTS)) == len(synth.INSTRUMENTS)


def test_fixed_attributes_override_random_choices():
    rng = np.random.default_rng(0)
    attrs = synth.sample_attributes(rng, lead="violin", mood="calming", backing=("riff",),
                                    backing_instrument="distorted electric guitar", tempo_bpm=70)
    assert (attrs.lead, attrs.mood, attrs.backing, attrs.backing_instrument, attrs.tempo_bpm) == (
        "violin", "calming", ("riff",), "distorted electric guitar", 70)


@pytest.mark.parametrize("fixed, message", [
    (dict(lead="banjo"), "violin"),
    (dict(mood="sleepy"), "calming"),
    (dict(mode="lydian"), "dorian"),
    (dict(key="H"), "C#"),
    (dict(tempo_bpm=500), "tempo_bpm"),
    (dict(backing=("strings",)), "drums"),
    (dict(colour="blue"), "valid names"),
    (dict(backing=("pad",), backing_instrument="piano"), "needs 'riff'"),
    (dict(backing=("riff",), backing_instrument="banjo"), "organ"),
])
def test_invalid_attributes_raise_value_errors_naming_the_choices(fixed, message):
    with pytest.raises(ValueError, match=message):
        synth.sample_attributes(np.random.default_rng(0), **fixed)


def test_backing_is_stored_in_canonical_order_and_flat_keys_are_accepted():
    attrs = synth.SynthAttributes("flute", ["drums", "pad"], None, 100, "Db", "major", "mid", "soft", "happy")
    assert attrs.backing == ("pad", "drums")
    assert attrs.key == "C#"


def test_fixing_the_riff_instrument_adds_a_riff_to_a_sampled_backing():
    for seed in range(20):
        attrs = synth.sample_attributes(np.random.default_rng(seed), backing_instrument="organ")
        assert "riff" in attrs.backing and attrs.backing_instrument == "organ"


def test_moods_shape_the_music():
    rng = np.random.default_rng(1)
    for _ in range(40):
        calm = synth.sample_attributes(rng, mood="calming")
        assert (calm.tempo_category, calm.loudness, calm.mode) == ("slow", "soft", "major")
        assert "drums" not in calm.backing
        angry = synth.sample_attributes(rng, mood="aggressive")
        assert (angry.tempo_category, angry.loudness, angry.mode) == ("fast", "loud", "minor")
        assert "drums" in angry.backing
        sad = synth.sample_attributes(rng, mood="sad")
        assert sad.mode == "minor" and sad.tempo_category == "slow"
        assert "drums" in synth.sample_attributes(rng, mood="energetic").backing


def test_a_fixed_fast_tempo_leads_to_a_mood_that_suits_it():
    moods = {synth.sample_attributes(np.random.default_rng(s), tempo_bpm=150).mood for s in range(60)}
    assert moods and moods <= {"energetic", "happy", "aggressive"}


def test_riff_instrument_differs_from_the_lead_when_sampled():
    rng = np.random.default_rng(2)
    for lead in synth.RIFF_INSTRUMENTS:
        for _ in range(10):
            attrs = synth.sample_attributes(rng, lead=lead, backing=("riff",))
            assert attrs.backing_instrument != lead


# --- composition --------------------------------------------------------------

def random_scores(count: int, seconds: float = 12.0):
    rng = np.random.default_rng(3)
    for seed in range(count):
        attrs = synth.sample_attributes(rng, backing=("riff", "pad", "bass", "drums"))
        yield attrs, synth.compose(attrs, seconds, seed)


def chord_at(score: synth.Score, onset_s: float) -> synth.Chord:
    return [c for c in score.chords if c.onset_s <= onset_s + 1e-9][-1]


def test_melody_notes_are_in_the_scale_and_strong_beats_are_chord_tones():
    checked = 0
    for attrs, score in random_scores(30):
        assert all(note.pitch % 12 in score.scale_pitch_classes for note in score.melody)
        for note in score.melody:
            if note.onset_beats % 2 == 0:
                chord = chord_at(score, note.onset_beats * score.seconds_per_beat)
                assert note.pitch % 12 in chord.pitch_classes
                checked += 1
    assert checked > 100


def test_the_motif_returns_as_a_sequence_over_the_second_chord():
    """The rhythm of the first chord's bar repeats over the second (a sequence)."""
    for attrs, score in random_scores(30):
        span = score.beats_per_chord

        def rhythm(index):
            return [n.duration_beats for n in score.melody if index * span <= n.onset_beats < (index + 1) * span]
        assert rhythm(0) == rhythm(1)


def test_melody_is_stepwise_mostly():
    intervals = []
    for attrs, score in random_scores(30):
        pitches = score.melody_pitches()
        intervals += [abs(b - a) for a, b in zip(pitches, pitches[1:])]
    assert np.mean(np.array(intervals) <= 4) > 0.6     # steps and thirds dominate, as in real tunes


def test_melody_durations_are_beats_and_fill_the_clip():
    for attrs, score in random_scores(10):
        assert set(score.melody_durations()) <= {0.5, 1.0, 1.5, 2.0}
        last = score.melody[-1]
        assert (last.onset_beats + last.duration_beats) * score.seconds_per_beat >= score.seconds - 2.0
        assert [n.pitch for n in score.lead] == score.melody_pitches()


def test_chords_follow_the_mode():
    """The tonic triad is major in major-like modes and minor in minor-like ones, and
    each phrase of four chords visits it."""
    for attrs, score in random_scores(30):
        tonic = "I" if attrs.mode in ("major", "mixolydian") else "i"
        assert tonic in [chord.numeral for chord in score.chords[:4]]
        if attrs.mode == "mixolydian":
            assert "VII" in [chord.numeral for chord in synth.compose(attrs, 20.0, 0).chords]   # the flat VII
        assert score.chords[-1].onset_s + score.chords[-1].duration_s >= score.seconds - 1e-9


def test_bass_plays_chord_roots_and_pad_holds_the_chord():
    for attrs, score in random_scores(20):
        for chord in score.chords:
            first_bass = min((n for n in score.bass if abs(n.onset_s - chord.onset_s) < 1e-9),
                             key=lambda n: n.onset_s)
            assert first_bass.pitch % 12 == chord.root_pitch_class
            pad = {n.pitch % 12 for n in score.pad if abs(n.onset_s - chord.onset_s) < 1e-9}
            assert pad == set(chord.pitch_classes)
        for note in score.bass:
            chord = chord_at(score, note.onset_s)
            assert (note.pitch - chord.root_pitch_class) % 12 in (0, 7)


def test_drums_put_the_snare_on_the_backbeat():
    for attrs, score in random_scores(10):
        beats = {round(hit.onset_s / score.seconds_per_beat, 6) % 4 for hit in score.drums if hit.kind == "snare"}
        assert beats == {1.0, 3.0}


# --- sound ----------------------------------------------------------------------

@pytest.mark.parametrize("instrument", synth.INSTRUMENTS)
@pytest.mark.parametrize("pitch", [48, 62, 79])
def test_a_rendered_note_sounds_at_the_requested_pitch(instrument, pitch):
    wave = synth.render_note(instrument, pitch, seconds=1.0, sample_rate=SR)
    measured = fundamental_frequency(wave[int(0.1 * SR):int(0.7 * SR)])
    cents = 1200 * np.log2(measured / synth.midi_to_hz(pitch))
    assert abs(cents) < 25, f"{instrument} MIDI {pitch}: measured {measured:.1f} Hz ({cents:+.0f} cents)"


def test_flute_energy_is_mostly_in_the_fundamental_unlike_violin_and_distorted_guitar(notes):
    def fundamental_share(name):
        energies = harmonic_energies(steady_part(notes[name]), 220.0)
        return energies[0] / energies.sum()
    assert fundamental_share("flute") > 0.9
    assert fundamental_share("violin") < 0.8
    assert fundamental_share("distorted electric guitar") < 0.5
    assert fundamental_share("distorted electric guitar") < fundamental_share("acoustic guitar")


def test_clarinet_has_odd_harmonics_only(notes):
    def odd_over_even(name):
        energies = harmonic_energies(steady_part(notes[name]), 220.0)
        return energies[0::2].sum() / energies[1::2].sum()
    assert odd_over_even("clarinet") > 50
    assert odd_over_even("violin") < 10          # a sawtooth has both


@pytest.mark.parametrize("instrument", ["piano", "marimba", "acoustic guitar"])
def test_struck_and_plucked_notes_decay(notes, instrument):
    assert decay_ratio(notes[instrument]) < 0.6


@pytest.mark.parametrize("instrument", ["organ", "flute", "violin", "clarinet", "trumpet"])
def test_sustained_instruments_do_not_decay_while_held(notes, instrument):
    assert decay_ratio(notes[instrument]) > 0.8


def test_every_pair_of_instruments_has_a_different_timbre(notes):
    """A timbre fingerprint: harmonic profile in dB, noise share and decay; every pair
    of instruments must differ clearly (a few dB per harmonic on average)."""
    def fingerprint(name):
        wave = notes[name]
        energies = harmonic_energies(steady_part(wave), 220.0, count=8)
        profile = 10 * np.log10(energies / energies[0] + 1e-6)
        return np.concatenate([profile, [10 * np.log10(decay_ratio(wave) + 1e-3)]])
    prints = {name: fingerprint(name) for name in synth.INSTRUMENTS}
    for a, b in itertools.combinations(synth.INSTRUMENTS, 2):
        distance = np.sqrt(np.mean((prints[a] - prints[b]) ** 2))
        assert distance > 3.0, f"{a} and {b} sound too alike (distance {distance:.1f} dB)"


@pytest.mark.parametrize("lead", synth.INSTRUMENTS)
def test_render_is_float32_finite_unclipped_and_peaks_at_the_loudness_level(lead):
    attrs = synth.sample_attributes(np.random.default_rng(4), lead=lead)
    wave = synth.render(attrs, seconds=1.5, sample_rate=SR, seed=7)
    assert wave.dtype == np.float32 and wave.shape == (int(1.5 * SR),)
    assert np.isfinite(wave).all()
    assert np.abs(wave).max() == pytest.approx(synth.PEAK_LEVELS[attrs.loudness], rel=1e-4)
    assert rms(wave) > 0.02 * synth.PEAK_LEVELS[attrs.loudness]       # music, not silence


def test_render_is_deterministic_by_seed_and_seeds_differ():
    attrs = synth.sample_attributes(np.random.default_rng(5), backing=("pad", "bass", "drums"))
    first = synth.render(attrs, seconds=2.0, seed=11)
    np.testing.assert_array_equal(first, synth.render(attrs, seconds=2.0, seed=11))
    other = synth.render(attrs, seconds=2.0, seed=12)
    assert rms(first - other) > 0.2 * rms(first)


def test_loudness_orders_the_level():
    base = synth.sample_attributes(np.random.default_rng(6), lead="trumpet", mood="happy")
    levels = [rms(synth.render(synth.SynthAttributes(**{**base.__dict__, "loudness": loudness}), 1.5, seed=1))
              for loudness in ("soft", "medium", "loud")]
    assert levels[0] < levels[1] < levels[2]


def test_render_score_matches_render_and_lower_rates_work():
    attrs = synth.sample_attributes(np.random.default_rng(8), backing=("riff", "drums"))
    score = synth.compose(attrs, 1.0, seed=3)
    np.testing.assert_array_equal(synth.render_score(score, attrs, SR), synth.render(attrs, 1.0, SR, seed=3))
    low = synth.render(attrs, 1.0, sample_rate=8000, seed=3)
    assert low.shape == (8000,) and np.isfinite(low).all()


def onset_period(wave: np.ndarray, sample_rate: int = SR, shortest: float = 0.25, longest: float = 1.0) -> float:
    """Strongest periodicity (s) of the onset-strength envelope (rises in log energy)."""
    hop = sample_rate // 100
    frames = wave[: len(wave) // hop * hop].reshape(-1, hop)
    log_energy = np.log(np.mean(frames.astype(float) ** 2, axis=1) + 1e-8)
    onset = np.maximum(np.diff(log_energy), 0)
    onset -= onset.mean()
    correlation = np.correlate(onset, onset, mode="full")[len(onset) - 1:]
    lags = np.arange(int(shortest * 100), int(longest * 100) + 1)
    return lags[np.argmax(correlation[lags])] / 100


@pytest.mark.parametrize("tempo_bpm", [96, 132])
def test_the_tempo_can_be_measured_from_the_rhythm(tempo_bpm):
    attrs = synth.sample_attributes(np.random.default_rng(9), tempo_bpm=tempo_bpm, backing=("drums",),
                                    lead="organ", mood="happy")
    period = onset_period(synth.render(attrs, seconds=8.0, seed=2))
    half_beat = 30.0 / tempo_bpm
    multiple = round(period / half_beat)
    assert multiple >= 1 and abs(period - multiple * half_beat) < 0.02, (period, half_beat)
