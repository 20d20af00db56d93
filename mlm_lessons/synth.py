"""Procedural music: the SynthCaps renderer.

MusicLM learns from (audio, caption) pairs. We cannot download MusicCaps' audio, so
the course makes its own: short pieces rendered in numpy from a seed and a small set
of *known* attributes (lead instrument, backing, tempo, key and mode, register,
loudness, mood). Because the attributes are known exactly, we can later *measure*
whether a model's output follows its text prompt.

The module reads top to bottom like the signal chain:

1. **Attributes** -- :class:`SynthAttributes` and :func:`sample_attributes`. The mood
   is tied to musical choices (calming = slow, soft, major, with a pad; aggressive =
   fast, loud, minor, drums and a distorted riff ...).
2. **Composition** -- :func:`compose` turns attributes into a :class:`Score`: a chord
   progression chosen by mode, a one-bar motif that is repeated, sequenced and
   varied over a four-chord phrase, melody notes that land on chord tones on strong
   beats, a bass on the chord roots, a pad holding the chords, a rhythmic riff and a
   drum pattern.
3. **Sound** -- oscillators (band-limited saw and pulse), ADSR envelopes, vibrato,
   Karplus-Strong plucked strings, waveshaping distortion, additive synthesis and
   synthesised drums give ten lead instruments with audibly different timbres.
4. **Mix** -- :func:`render_score` renders each part, balances them, adds a little
   reverb and peak-normalises to a loudness-dependent level.

Everything is deterministic for a given seed, and vectorised so a clip renders
100+ times faster than real time on one CPU core at 16 kHz (``bench/bench_synth.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from scipy import signal

# ----------------------------------------------------------------------------
# 1. Attributes
# ----------------------------------------------------------------------------

#: Lead instruments, named as captions say them.
INSTRUMENTS: tuple[str, ...] = (
    "violin", "flute", "piano", "acoustic guitar", "distorted electric guitar",
    "organ", "trumpet", "marimba", "synth lead", "clarinet",
)
#: Accompanying parts a clip may have (any subset, including none).
BACKING_PARTS: tuple[str, ...] = ("riff", "pad", "bass", "drums")
#: Instruments that can play the riff (a rhythmic chord or arpeggio pattern).
RIFF_INSTRUMENTS: tuple[str, ...] = (
    "distorted electric guitar", "acoustic guitar", "piano", "organ", "marimba",
)
#: Tonic names; flats are accepted as aliases of these (``"Db"`` -> ``"C#"``).
KEYS: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_KEY_ALIASES = {"Db": "C#", "D#": "Eb", "Gb": "F#", "G#": "Ab", "A#": "Bb"}
#: Semitones of each scale degree above the tonic.
MODE_INTERVALS: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),        # natural minor (aeolian)
    "dorian": (0, 2, 3, 5, 7, 9, 10),       # minor with a raised sixth: bittersweet, "mysterious"
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),   # major with a flat seventh: bluesy, bright
}
MODES: tuple[str, ...] = tuple(MODE_INTERVALS)
REGISTERS: tuple[str, ...] = ("low", "mid", "high")
LOUDNESS_LEVELS: tuple[str, ...] = ("soft", "medium", "loud")
MOODS: tuple[str, ...] = ("calming", "energetic", "sad", "happy", "mysterious", "aggressive")

#: Tempo words and the bpm ranges sampled for them; the gaps between ranges keep
#: a clip's tempo word unambiguous (see :func:`tempo_category`).
TEMPO_RANGES: dict[str, tuple[int, int]] = {"slow": (60, 84), "medium": (92, 116), "fast": (126, 160)}
MIN_TEMPO_BPM, MAX_TEMPO_BPM = 40, 240


def tempo_category(tempo_bpm: float) -> str:
    """``"slow"`` below 88 bpm, ``"medium"`` below 121 bpm, else ``"fast"``."""
    if tempo_bpm < 88:
        return "slow"
    return "medium" if tempo_bpm < 121 else "fast"


@dataclass(frozen=True)
class MoodProfile:
    """How a mood shapes the music: the choices :func:`sample_attributes` draws from."""

    tempo_categories: tuple[str, ...]
    modes: tuple[str, ...]
    loudness: tuple[str, ...]
    registers: tuple[str, ...]
    backing_probability: dict[str, float]   # chance that each backing part plays
    riff_instruments: tuple[str, ...]
    articulation: float    # fraction of a melody note's written length that sounds (legato ~1)
    reverb_mix: float      # wet/dry ratio of the room


MOOD_PROFILES: dict[str, MoodProfile] = {
    "calming": MoodProfile(("slow",), ("major",), ("soft",), ("mid", "high"),
                           {"riff": 0.25, "pad": 0.9, "bass": 0.4, "drums": 0.0},
                           ("piano", "acoustic guitar", "marimba"), 0.97, 0.35),
    "sad": MoodProfile(("slow",), ("minor",), ("soft", "medium"), ("low", "mid"),
                       {"riff": 0.3, "pad": 0.8, "bass": 0.5, "drums": 0.1},
                       ("piano", "acoustic guitar", "organ"), 0.97, 0.3),
    "happy": MoodProfile(("medium", "fast"), ("major", "mixolydian"), ("medium", "loud"), ("mid", "high"),
                         {"riff": 0.5, "pad": 0.3, "bass": 0.8, "drums": 0.7},
                         ("piano", "acoustic guitar", "marimba", "organ"), 0.85, 0.15),
    "energetic": MoodProfile(("fast",), ("major", "mixolydian", "minor"), ("loud",), ("mid", "high"),
                             {"riff": 0.6, "pad": 0.2, "bass": 0.9, "drums": 1.0},
                             ("distorted electric guitar", "piano", "organ"), 0.8, 0.12),
    "mysterious": MoodProfile(("slow", "medium"), ("dorian", "minor"), ("soft", "medium"), ("low", "mid"),
                              {"riff": 0.3, "pad": 0.9, "bass": 0.5, "drums": 0.2},
                              ("piano", "marimba", "organ"), 0.95, 0.4),
    "aggressive": MoodProfile(("fast",), ("minor",), ("loud",), ("low", "mid"),
                              {"riff": 0.9, "pad": 0.0, "bass": 0.9, "drums": 1.0},
                              ("distorted electric guitar",), 0.75, 0.1),
}


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


@dataclass(frozen=True)
class SynthAttributes:
    """Everything a SynthCaps clip is made from, besides its seed.

    Attributes:
        lead: lead instrument, one of :data:`INSTRUMENTS`.
        backing: accompanying parts, a tuple of :data:`BACKING_PARTS` (``()`` = solo);
            stored in the canonical order of :data:`BACKING_PARTS`.
        backing_instrument: the instrument playing the riff (one of
            :data:`RIFF_INSTRUMENTS`) when ``"riff"`` is in ``backing``, else ``None``.
        tempo_bpm: beats per minute.
        key: tonic name, one of :data:`KEYS` (flat/sharp aliases accepted).
        mode: one of :data:`MODES`.
        register: octave of the melody, one of :data:`REGISTERS`.
        loudness: one of :data:`LOUDNESS_LEVELS`; sets the output peak level.
        mood: one of :data:`MOODS`.
    """

    lead: str
    backing: tuple[str, ...]
    backing_instrument: str | None
    tempo_bpm: int
    key: str
    mode: str
    register: str
    loudness: str
    mood: str

    def __post_init__(self):
        _check_choice("lead", self.lead, INSTRUMENTS)
        backing = (self.backing,) if isinstance(self.backing, str) else tuple(self.backing)
        for part in backing:
            _check_choice("each backing part", part, BACKING_PARTS)
        if len(set(backing)) != len(backing):
            raise ValueError(f"backing lists a part twice: {backing}")
        object.__setattr__(self, "backing", tuple(p for p in BACKING_PARTS if p in backing))
        if "riff" in backing:
            _check_choice("backing_instrument (the riff's instrument)", self.backing_instrument,
                          RIFF_INSTRUMENTS)
        elif self.backing_instrument is not None:
            raise ValueError(f"backing_instrument={self.backing_instrument!r} needs 'riff' in backing, "
                             f"got backing={backing}")
        if not isinstance(self.tempo_bpm, (int, float, np.integer, np.floating)) or not (
                MIN_TEMPO_BPM <= self.tempo_bpm <= MAX_TEMPO_BPM):
            raise ValueError(f"tempo_bpm must be a number in [{MIN_TEMPO_BPM}, {MAX_TEMPO_BPM}], "
                             f"got {self.tempo_bpm!r}")
        object.__setattr__(self, "key", _KEY_ALIASES.get(self.key, self.key))
        _check_choice("key", self.key, KEYS)
        _check_choice("mode", self.mode, MODES)
        _check_choice("register", self.register, REGISTERS)
        _check_choice("loudness", self.loudness, LOUDNESS_LEVELS)
        _check_choice("mood", self.mood, MOODS)

    @property
    def tempo_category(self) -> str:
        """``"slow"``, ``"medium"`` or ``"fast"`` (see :func:`tempo_category`)."""
        return tempo_category(self.tempo_bpm)

    def instruments(self) -> tuple[str, ...]:
        """Every pitched instrument or part that sounds: the lead, the riff's instrument,
        and ``"pad"``/``"bass"``/``"drums"`` when present."""
        playing = [self.lead]
        if self.backing_instrument is not None:
            playing.append(self.backing_instrument)
        playing += [part for part in self.backing if part != "riff"]
        return tuple(playing)


_ATTRIBUTE_NAMES = tuple(SynthAttributes.__dataclass_fields__)


def sample_attributes(rng: np.random.Generator, **fixed) -> SynthAttributes:
    """Draw a random, musically coherent set of attributes.

    The mood is drawn first (among the moods compatible with any fixed tempo, mode
    and loudness), then the rest from that mood's :class:`MoodProfile`; the lead
    instrument and key are uniform.

    Args:
        rng: source of randomness, e.g. ``np.random.default_rng(0)``.
        **fixed: attribute values to use instead of random ones, e.g.
            ``lead="violin", mood="calming"``. Fixing ``backing_instrument`` adds a
            riff to a sampled backing.

    Raises:
        ValueError: for an unknown attribute name or an invalid value, naming the
            valid choices.
    """
    unknown = sorted(set(fixed) - set(_ATTRIBUTE_NAMES))
    if unknown:
        raise ValueError(f"unknown attribute(s) {unknown}; valid names: {list(_ATTRIBUTE_NAMES)}")
    if "mood" in fixed:
        _check_choice("mood", fixed["mood"], MOODS)
        mood = fixed["mood"]
    else:
        mood = str(rng.choice(_compatible_moods(fixed)))
    profile = MOOD_PROFILES[mood]

    def pick(name, choices):
        return fixed[name] if name in fixed else str(rng.choice(choices))

    if "tempo_bpm" in fixed:
        tempo_bpm = fixed["tempo_bpm"]
    else:
        low, high = TEMPO_RANGES[str(rng.choice(profile.tempo_categories))]
        tempo_bpm = int(rng.integers(low, high + 1))
    lead = pick("lead", INSTRUMENTS)
    if "backing" in fixed:
        backing = fixed["backing"]
        backing = (backing,) if isinstance(backing, str) else tuple(backing)
    else:
        backing = tuple(part for part in BACKING_PARTS if rng.random() < profile.backing_probability[part])
        if fixed.get("backing_instrument") is not None and "riff" not in backing:
            backing = ("riff",) + backing
    if "backing_instrument" in fixed:
        backing_instrument = fixed["backing_instrument"]
    elif "riff" in backing:
        # A riff on the lead's own instrument would be hard to tell apart from the melody.
        options = [name for name in profile.riff_instruments if name != lead]
        options = options or [name for name in RIFF_INSTRUMENTS if name != lead]
        backing_instrument = str(rng.choice(options))
    else:
        backing_instrument = None
    return SynthAttributes(
        lead=lead, backing=backing, backing_instrument=backing_instrument, tempo_bpm=tempo_bpm,
        key=pick("key", KEYS), mode=pick("mode", profile.modes), register=pick("register", profile.registers),
        loudness=pick("loudness", profile.loudness), mood=mood,
    )


def _compatible_moods(fixed: dict) -> list[str]:
    """Moods agreeing with the most fixed tempo/mode/loudness values (all moods if none is fixed)."""
    def agreement(mood: str) -> int:
        profile = MOOD_PROFILES[mood]
        score = 0
        if "tempo_bpm" in fixed:
            score += tempo_category(fixed["tempo_bpm"]) in profile.tempo_categories
        if "mode" in fixed:
            score += fixed["mode"] in profile.modes
        if "loudness" in fixed:
            score += fixed["loudness"] in profile.loudness
        return score

    best = max(agreement(mood) for mood in MOODS)
    return [mood for mood in MOODS if agreement(mood) == best]


# ----------------------------------------------------------------------------
# 2. Composition
# ----------------------------------------------------------------------------

class Note(NamedTuple):
    """One sounding note of a part."""

    pitch: int          # MIDI note number (60 = middle C)
    onset_s: float      # start, seconds from the clip's beginning
    duration_s: float   # how long the key is held, seconds (the release rings on after)
    velocity: float     # loudness/brightness of the attack, 0..1


class MelodyNote(NamedTuple):
    """One written note of the lead melody, in musical time (what lessons tokenise)."""

    pitch: int             # MIDI note number
    onset_beats: float     # beats from the start; gaps between notes are rests
    duration_beats: float  # written length in beats (a quarter note = 1)


class Chord(NamedTuple):
    """One chord of the progression."""

    numeral: str                # Roman numeral of the diatonic triad: upper case major ("IV"), lower minor ("vi")
    root_pitch_class: int       # 0 = C ... 11 = B
    pitch_classes: tuple[int, ...]  # the triad's pitch classes, root first
    onset_s: float
    duration_s: float


class DrumHit(NamedTuple):
    kind: str           # "kick", "snare" or "hihat"
    onset_s: float
    velocity: float     # 0..1


@dataclass(frozen=True)
class Score:
    """A composed clip: what each part plays and when, before any sound is made.

    ``lead`` holds the performed melody (articulated, velocities with accents),
    ``melody`` the same notes as written, in beats.
    """

    tempo_bpm: float
    seconds: float
    seed: int
    key: str
    mode: str
    beats_per_bar: int
    beats_per_chord: int
    chords: tuple[Chord, ...]
    melody: tuple[MelodyNote, ...]
    lead: tuple[Note, ...]
    riff: tuple[Note, ...] = ()
    pad: tuple[Note, ...] = ()
    bass: tuple[Note, ...] = ()
    drums: tuple[DrumHit, ...] = ()
    scale_pitch_classes: tuple[int, ...] = field(default=())

    @property
    def seconds_per_beat(self) -> float:
        return 60.0 / self.tempo_bpm

    def melody_pitches(self) -> list[int]:
        """MIDI pitches of the written melody, in order."""
        return [note.pitch for note in self.melody]

    def melody_durations(self) -> list[float]:
        """Written durations of the melody notes, in beats."""
        return [note.duration_beats for note in self.melody]


# Diatonic progressions as scale degrees (0 = tonic). Four chords make a phrase.
PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (0, 5, 3, 4), (5, 3, 0, 4)),          # I-V-vi-IV, I-IV-V-IV, ...
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 5, 4)),          # i-VI-III-VII, i-iv-v-i, ...
    "dorian": ((0, 3, 0, 3), (0, 6, 3, 0), (0, 1, 6, 0)),                       # i-IV-i-IV (the dorian IV)
    "mixolydian": ((0, 6, 3, 0), (0, 6, 0, 3), (0, 3, 6, 0)),                   # I-bVII-IV-I
}
_ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII")

# Two-beat rhythm cells (durations in beats) from which motifs are built, and how
# likely each is at each tempo: slow pieces move in quarters and eighths, fast
# pieces in longer values so the melody stays singable.
_RHYTHM_CELLS: tuple[tuple[float, ...], ...] = (
    (2.0,), (1.0, 1.0), (1.5, 0.5), (0.5, 0.5, 1.0), (1.0, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5),
)
_CELL_WEIGHTS = {"slow": (1, 3, 2, 3, 2, 2), "medium": (1, 3, 2, 2, 2, 1), "fast": (2, 3, 2, 2, 1, 0.5)}
# Melodic steps in scale degrees: mostly stepwise motion, some leaps.
_STEPS = (-2, -1, 1, 2, -3, 3, 0)
_STEP_WEIGHTS = (0.15, 0.25, 0.25, 0.15, 0.07, 0.08, 0.05)

# MIDI pitch around which each register's tonic is placed (C3, C4, C5).
_REGISTER_BASE = {"low": 48, "mid": 60, "high": 72}
_VELOCITY = {"soft": 0.5, "medium": 0.7, "loud": 0.9}


class _Scale:
    """Scale degrees <-> MIDI pitches for a tonic and mode. Degree 0 is the tonic at
    ``tonic_pitch``; degree 7 is an octave above, degree -1 the seventh below."""

    def __init__(self, tonic_pitch: int, mode: str):
        self.tonic_pitch = tonic_pitch
        self.intervals = MODE_INTERVALS[mode]

    def pitch(self, degree: int) -> int:
        octave, step = divmod(degree, 7)
        return self.tonic_pitch + 12 * octave + self.intervals[step]

    def triad(self, root_degree: int) -> tuple[int, int, int]:
        """Degrees of the triad stacked in thirds on ``root_degree``."""
        return root_degree, root_degree + 2, root_degree + 4


def _tonic_near(base_pitch: int, key: str) -> int:
    """MIDI pitch of ``key``'s tonic within a tritone of ``base_pitch``."""
    pitch_class = KEYS.index(key)
    return base_pitch + (pitch_class - base_pitch + 6) % 12 - 6


def _numeral(scale: _Scale, root_degree: int) -> str:
    root, third, fifth = (scale.pitch(d) for d in scale.triad(root_degree))
    name = _ROMAN[root_degree % 7]
    if third - root == 4:
        return name                         # major triad: upper case
    return name.lower() + ("°" if fifth - root == 6 else "")   # minor (or diminished): lower case


def compose(attrs: SynthAttributes, seconds: float, seed: int) -> Score:
    """Write the music for one clip.

    Harmony: a four-chord diatonic progression for the mode, one chord per bar
    (per half bar below 88 bpm, so slow clips still move). Melody: a motif one chord
    long is stated, repeated as a sequence over the next chord, varied, and closed by
    a cadence on a long note; notes on strong beats are moved to the nearest chord
    tone. Bass: chord roots in a tempo-dependent rhythm. Pad: the chords held. Riff:
    a pattern depending on its instrument. Drums: kick, snare and hi-hat by mood.

    Args:
        attrs: what to write.
        seconds: clip length; parts are written to cover it.
        seed: the same seed gives the same score.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    rng = np.random.default_rng([int(seed), 0])
    seconds_per_beat = 60.0 / attrs.tempo_bpm
    beats_per_chord = 2 if attrs.tempo_category == "slow" else 4
    n_chords = math.ceil(seconds / seconds_per_beat / beats_per_chord)
    progressions = PROGRESSIONS[attrs.mode]
    progression = progressions[int(rng.integers(len(progressions)))]
    chord_degrees = [progression[i % len(progression)] for i in range(n_chords)]

    scale = _Scale(_tonic_near(_REGISTER_BASE[attrs.register], attrs.key), attrs.mode)
    tonic_class = KEYS.index(attrs.key)
    chords = []
    for index, degree in enumerate(chord_degrees):
        pitch_classes = tuple(scale.pitch(d) % 12 for d in scale.triad(degree))
        chords.append(Chord(_numeral(scale, degree), pitch_classes[0], pitch_classes,
                            index * beats_per_chord * seconds_per_beat, beats_per_chord * seconds_per_beat))

    profile = MOOD_PROFILES[attrs.mood]
    melody_degrees = _compose_melody(rng, chord_degrees, beats_per_chord, attrs.tempo_category)
    melody = tuple(MelodyNote(scale.pitch(d), onset, duration) for d, onset, duration in melody_degrees)
    base_velocity = _VELOCITY[attrs.loudness]
    lead = tuple(
        Note(note.pitch, note.onset_beats * seconds_per_beat,
             note.duration_beats * seconds_per_beat * profile.articulation,
             _accented(base_velocity, note.onset_beats) + float(rng.uniform(-0.04, 0.04)))
        for note in melody
    )

    parts = {}
    if "bass" in attrs.backing:
        parts["bass"] = _compose_bass(chords, beats_per_chord, seconds_per_beat, attrs, base_velocity)
    if "pad" in attrs.backing:
        parts["pad"] = tuple(Note(52 + (pc - 52) % 12, chord.onset_s, chord.duration_s, base_velocity * 0.8)
                             for chord in chords for pc in chord.pitch_classes)
    if "riff" in attrs.backing:
        parts["riff"] = _compose_riff(chords, beats_per_chord, seconds_per_beat, attrs, base_velocity)
    if "drums" in attrs.backing:
        parts["drums"] = _compose_drums(seconds, seconds_per_beat, attrs.mood, base_velocity)
    return Score(
        tempo_bpm=float(attrs.tempo_bpm), seconds=float(seconds), seed=int(seed), key=attrs.key,
        mode=attrs.mode, beats_per_bar=4, beats_per_chord=beats_per_chord, chords=tuple(chords),
        melody=melody, lead=lead, scale_pitch_classes=tuple((tonic_class + i) % 12 for i in scale.intervals),
        **parts,
    )


def _accented(base_velocity: float, onset_beats: float) -> float:
    """Downbeats a little louder, off-beats a little softer: a sense of metre."""
    if onset_beats % 4 == 0:
        return min(1.0, base_velocity + 0.1)
    if onset_beats % 1 == 0:
        return base_velocity
    return base_velocity - 0.08


def _nearest_chord_tone(degree: int, chord_root: int, prefer_root: bool = False) -> int:
    tones = {chord_root % 7} if prefer_root else {chord_root % 7, (chord_root + 2) % 7, (chord_root + 4) % 7}
    candidates = [degree + offset for offset in (0, -1, 1, -2, 2, -3, 3, -4, 4) if (degree + offset) % 7 in tones]
    return candidates[0]


def _compose_melody(rng: np.random.Generator, chord_degrees: list[int], beats_per_chord: int,
                    tempo_word: str) -> list[tuple[int, float, float]]:
    """Melody as ``(scale_degree, onset_beats, duration_beats)`` triples.

    Phrase plan over each group of four chords: motif, motif as a sequence (same
    shape, moved to the new chord), variation (contour inverted or ending redrawn),
    cadence (the motif's opening, then a long note on the chord's root). Every later
    phrase restates the plan with a freshly varied motif ending.
    """
    weights = np.array(_CELL_WEIGHTS[tempo_word], dtype=float)
    cells_per_chord = beats_per_chord // 2

    def draw_steps(n_notes: int) -> list[int]:
        return [0] + [int(s) for s in rng.choice(_STEPS, size=n_notes - 1, p=_STEP_WEIGHTS)]

    motif_cells = [_RHYTHM_CELLS[int(rng.choice(len(_RHYTHM_CELLS), p=weights / weights.sum()))]
                   for _ in range(cells_per_chord)]
    motif_rhythm = [duration for cell in motif_cells for duration in cell]
    motif_steps = draw_steps(len(motif_rhythm))
    lowest, highest = -3, 10     # melody range in scale degrees around the register's tonic
    previous_degree = 4          # start near the fifth, mid-range
    notes = []
    for index, chord_root in enumerate(chord_degrees):
        role = index % 4
        if role == 0 and index > 0:
            # New phrase: keep the motif's opening, redraw its ending so it is not a literal copy.
            keep = max(1, len(motif_steps) // 2)
            motif_steps = motif_steps[:keep] + draw_steps(len(motif_steps) - keep + 1)[1:]
        if role in (0, 1):
            rhythm, steps = motif_rhythm, motif_steps
        elif role == 2:
            rhythm = motif_rhythm
            steps = [-s for s in motif_steps] if rng.random() < 0.5 else (
                motif_steps[:1] + draw_steps(len(motif_steps))[1:])
        else:
            # Cadence: the motif's first cell (if the chord is long enough), then a two-beat note.
            opening = list(motif_cells[0]) if cells_per_chord == 2 else []
            rhythm = opening + [2.0]
            steps = motif_steps[:len(opening)] + draw_steps(2)[1:]
        start = _nearest_chord_tone(previous_degree, chord_root)
        degrees = list(start + np.cumsum(steps))
        # Keep the contour, move the whole figure by an octave if it leaves the range.
        if max(degrees) > highest:
            degrees = [d - 7 for d in degrees]
        elif min(degrees) < lowest:
            degrees = [d + 7 for d in degrees]
        onset = index * beats_per_chord
        for position, (degree, duration) in enumerate(zip(degrees, rhythm)):
            is_final = role == 3 and position == len(rhythm) - 1
            if is_final or (onset % 2 == 0):     # strong beats (1 and 3) sound chord tones
                degree = _nearest_chord_tone(int(degree), chord_root, prefer_root=is_final)
            written = duration - 0.5 if is_final and rng.random() < 0.3 else duration   # breathe before the next phrase
            notes.append((int(degree), float(onset), float(written)))
            onset += duration
        previous_degree = notes[-1][0]
    return notes


def _compose_bass(chords, beats_per_chord: int, seconds_per_beat: float, attrs: SynthAttributes,
                  base_velocity: float) -> tuple[Note, ...]:
    """Chord roots in octave 2: held (slow), root-root-fifth-root quarters (medium),
    pulsing eighths with an octave pop (fast)."""
    tempo_word = attrs.tempo_category
    if tempo_word == "slow":
        pattern = [(0.0, float(beats_per_chord), 0)]
    elif tempo_word == "medium":
        pattern = [(float(beat), 1.0, 7 if beat == 2 else 0) for beat in range(beats_per_chord)]
    else:
        pattern = [(0.5 * i, 0.5, 12 if i == 2 * beats_per_chord - 1 else 0) for i in range(2 * beats_per_chord)]
    notes = []
    for chord in chords:
        root = 36 + chord.root_pitch_class % 12        # C2..B2
        for offset_beats, length_beats, interval in pattern:
            notes.append(Note(root + interval, chord.onset_s + offset_beats * seconds_per_beat,
                              0.9 * length_beats * seconds_per_beat, _accented(base_velocity, offset_beats)))
    return tuple(notes)


def _compose_riff(chords, beats_per_chord: int, seconds_per_beat: float, attrs: SynthAttributes,
                  base_velocity: float) -> tuple[Note, ...]:
    """A repeating two-beat pattern that depends on the instrument:

    * distorted electric guitar -- palm-muted power chords (root, fifth, octave) in eighths;
    * acoustic guitar -- down-strummed chords (strings 12 ms apart), quarter + two eighths;
    * piano and marimba -- arpeggios through the chord in eighths;
    * organ -- off-beat chord stabs.
    Each event is ``(onset_beats, length_beats, pitches, stagger_s)``.
    """
    instrument = attrs.backing_instrument
    notes = []
    for chord in chords:
        root = 40 + (chord.root_pitch_class - 40) % 12         # E2..D#3, the guitar's low strings
        third = root + (chord.pitch_classes[1] - chord.pitch_classes[0]) % 12
        fifth = root + 7
        if instrument == "distorted electric guitar":
            events = [(0.5 * i, 0.4, (root, fifth, root + 12), 0.0) for i in (0, 1, 3)]
        elif instrument == "acoustic guitar":
            strum = (root, fifth, root + 12, third + 12)
            events = [(0.0, 1.0, strum, 0.012), (1.0, 0.5, strum, 0.012), (1.5, 0.5, strum[1:], 0.012)]
        elif instrument in ("piano", "marimba"):
            arpeggio = (root + 12, third + 12, fifth + 12, root + 24)
            events = [(0.5 * i, 0.5, (pitch,), 0.0) for i, pitch in enumerate(arpeggio)]
        else:  # organ
            events = [(0.5, 0.4, (root + 12, third + 12, fifth + 12), 0.0),
                      (1.5, 0.4, (root + 12, third + 12, fifth + 12), 0.0)]
        for cell_start in range(0, beats_per_chord, 2):
            for offset_beats, length_beats, pitches, stagger_s in events:
                onset_s = chord.onset_s + (cell_start + offset_beats) * seconds_per_beat
                velocity = _accented(base_velocity, cell_start + offset_beats) * 0.9
                for string, pitch in enumerate(pitches):
                    notes.append(Note(pitch, onset_s + string * stagger_s,
                                      length_beats * seconds_per_beat, velocity))
    return tuple(notes)


# Drum patterns within a 4-beat bar, in beats.
_KICK_PATTERNS = {"energetic": (0, 1.5, 2, 2.5), "aggressive": (0, 0.5, 2, 2.5), "happy": (0, 2, 2.5)}
_DEFAULT_KICKS = (0, 2)


def _compose_drums(seconds: float, seconds_per_beat: float, mood: str, base_velocity: float
                   ) -> tuple[DrumHit, ...]:
    """Kick by mood, snare on the backbeat (2 and 4), hi-hat in eighths accented on the beat."""
    hits = []
    n_bars = math.ceil(seconds / (4 * seconds_per_beat))
    for bar in range(n_bars):
        start = 4 * bar
        hits += [DrumHit("kick", (start + b) * seconds_per_beat, base_velocity)
                 for b in _KICK_PATTERNS.get(mood, _DEFAULT_KICKS)]
        hits += [DrumHit("snare", (start + b) * seconds_per_beat, base_velocity) for b in (1, 3)]
        hits += [DrumHit("hihat", (start + 0.5 * i) * seconds_per_beat,
                         base_velocity * (0.8 if i % 2 == 0 else 0.5)) for i in range(8)]
    return tuple(hit for hit in hits if hit.onset_s < seconds)


# ----------------------------------------------------------------------------
# 3. Sound: building blocks
# ----------------------------------------------------------------------------

def midi_to_hz(pitch: float) -> float:
    """Equal temperament, A4 (MIDI 69) = 440 Hz."""
    return 440.0 * 2.0 ** ((pitch - 69) / 12)


def _cutoff(frequency_hz: float, sample_rate: int) -> float:
    """Keep a filter frequency safely below Nyquist at low sample rates."""
    return min(frequency_hz, 0.45 * sample_rate)


def _lowpass(wave: np.ndarray, frequency_hz: float, sample_rate: int, order: int = 2) -> np.ndarray:
    sos = signal.butter(order, _cutoff(frequency_hz, sample_rate), "lowpass", fs=sample_rate, output="sos")
    return signal.sosfilt(sos, wave)


def _highpass(wave: np.ndarray, frequency_hz: float, sample_rate: int, order: int = 2) -> np.ndarray:
    sos = signal.butter(order, _cutoff(frequency_hz, sample_rate), "highpass", fs=sample_rate, output="sos")
    return signal.sosfilt(sos, wave)


def _resonances(wave: np.ndarray, sample_rate: int, peaks: tuple[tuple[float, float, float], ...]) -> np.ndarray:
    """Add resonant peaks ``(frequency_hz, q, gain)``: a crude instrument body."""
    out = wave.copy()
    for frequency_hz, q, gain in peaks:
        b, a = signal.iirpeak(_cutoff(frequency_hz, sample_rate), q, fs=sample_rate)
        out += gain * signal.lfilter(b, a, wave)
    return out


def _adsr(note_samples: int, sample_rate: int, attack: float, decay: float, sustain: float,
          release: float) -> np.ndarray:
    """Attack-decay-sustain-release envelope, ``(note_samples + release samples,)``.

    Rises linearly to 1 over ``attack`` s, falls to ``sustain`` over ``decay`` s, holds
    until the note ends, then fades to 0 over ``release`` s from wherever it was.
    """
    release_samples = int(release * sample_rate)
    t = np.arange(note_samples + release_samples) / sample_rate
    attack = max(attack, 1.0 / sample_rate)
    env = np.interp(t, (0.0, attack, attack + decay + 1e-9), (0.0, 1.0, sustain))
    note_end = note_samples / sample_rate
    return env * np.clip(1.0 - (t - note_end) / max(release, 1e-3), 0.0, 1.0)


def _phase(frequency_hz: float, n_samples: int, sample_rate: int, vibrato_hz: float = 0.0,
           vibrato_cents: float = 0.0, vibrato_delay: float = 0.0, scoop_cents: float = 0.0,
           scoop_seconds: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Oscillator phase in cycles, ``(n_samples,)`` in [0, 1), and frequency per sample
    as a fraction of the sample rate (``(n_samples,)``, or a float for a steady pitch).

    Vibrato (a sinusoidal pitch wobble) fades in after ``vibrato_delay`` s, as players
    do on long notes; a scoop starts the note ``scoop_cents`` off pitch and slides in.
    """
    if not vibrato_cents and not scoop_cents:       # steady pitch: no need to integrate
        step = frequency_hz / sample_rate
        return (step * np.arange(n_samples)) % 1.0, step
    t = np.arange(n_samples) / sample_rate
    cents = np.zeros(n_samples)
    if vibrato_cents:
        depth = vibrato_cents * np.clip((t - vibrato_delay) / 0.25, 0.0, 1.0)
        cents += depth * np.sin(2 * np.pi * vibrato_hz * t)
    if scoop_cents:
        cents += scoop_cents * np.exp(-t / scoop_seconds)
    step = frequency_hz * np.exp2(cents / 1200.0) / sample_rate
    phase = np.cumsum(step) - step[0]
    return phase % 1.0, step


def _polyblep(phase: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Correction that rounds off a saw's jump over one sample each side (PolyBLEP),
    which removes most of the aliasing a naive ``2 * phase - 1`` saw would have."""
    correction = np.zeros_like(phase)
    step = np.broadcast_to(step, phase.shape)
    just_after = phase < step
    x = phase[just_after] / step[just_after]
    correction[just_after] = 2 * x - x * x - 1
    just_before = phase > 1 - step
    x = (phase[just_before] - 1) / step[just_before]
    correction[just_before] = x * x + 2 * x + 1
    return correction


def _saw(phase: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Band-limited sawtooth in [-1, 1]: all harmonics, amplitude 1/n."""
    return 2 * phase - 1 - _polyblep(phase, step)


def _pulse(phase: np.ndarray, step: np.ndarray, duty: np.ndarray) -> np.ndarray:
    """Band-limited pulse wave: the difference of two saws ``duty`` cycles apart (zero mean)."""
    shifted = (phase + duty) % 1.0
    return _saw(phase, step) - _saw(shifted, step)


def _additive(phase: np.ndarray, ratios, amplitudes, frequency_hz: float, sample_rate: int) -> np.ndarray:
    """Sum of sines at ``ratios`` x the fundamental; partials above 0.45 x rate are dropped."""
    out = np.zeros(phase.shape, dtype=np.float32)
    for ratio, amplitude in zip(ratios, amplitudes):
        if ratio * frequency_hz < 0.45 * sample_rate:
            # Wrapped phase is exact in float64; the sine itself is fine (and ~3x faster) in float32.
            out += amplitude * np.sin((2 * np.pi * ((ratio * phase) % 1.0)).astype(np.float32))
    return out


def _karplus_strong(frequency_hz: float, n_samples: int, sample_rate: int, decay_seconds: float,
                    brightness: float, rng: np.random.Generator, pluck_position: float = 0.15) -> np.ndarray:
    """A plucked string: Karplus-Strong, vectorised over whole periods.

    A delay line one period long is filled with noise (the pluck) and fed back
    through a two-point average, ``y[n] = x[n] + g/2 * (y[n-N] + y[n-N-1])``: every
    trip round the loop the average takes away a little treble, so the tone starts
    bright and mellows as it decays, like a real string.

    Python loops over samples are slow, so we advance ``m`` periods at a time: after
    the pluck has died out of ``x``, applying the recursion ``m`` times gives
    ``y[n] = (g/2)^m * sum_j C(m, j) * y[n - m*N - j]``, a block of ``m*N`` samples
    computed from already-known ones in one numpy expression.

    The loop has a period of ``N + 0.5`` samples (the average delays half a sample),
    an integer ``N``; the exact pitch comes from resampling the result by linear
    interpolation.

    Args:
        decay_seconds: time for the tone to fall by 60 dB.
        brightness: 0..1, how much treble the pluck has (a harder pluck is brighter).
        pluck_position: where along the string it is plucked, as a fraction; plucking
            at 1/k of the length silences every k-th harmonic.
    Returns:
        ``(n_samples,)``.
    """
    exact_period = sample_rate / frequency_hz
    period = max(2, int(round(exact_period - 0.5)))             # loop length N, in samples
    stretch = (period + 0.5) / exact_period                     # > 1: the loop is slightly slow
    n_loop = int(math.ceil(n_samples * stretch)) + 2
    loop_gain = 10.0 ** (-3.0 / (decay_seconds * sample_rate / (period + 0.5)))   # per trip round the loop

    pluck = rng.uniform(-1.0, 1.0, period)
    pluck = signal.lfilter([1.0 - 0.9 * (1 - brightness)], [1.0, -0.9 * (1 - brightness)], pluck)
    pluck -= np.roll(pluck, int(round(pluck_position * period)))
    pluck -= pluck.mean()

    # One leading zero stands for y[-1]; y[k + 1] holds sample k.
    y = np.zeros(n_loop + 1)
    y[1:period + 1] = pluck[: max(0, min(period, n_loop))]
    periods_per_step = max(1, min(period, 256 // period))
    start = period + 1
    # Plain recursion until the pluck is m periods behind us ...
    while start < min(n_loop + 1, (periods_per_step + 1) * period + 1):
        stop = min(start + period, n_loop + 1)
        length = stop - start
        y[start:stop] += 0.5 * loop_gain * (y[start - period:start - period + length]
                                            + y[start - period - 1:start - period - 1 + length])
        start = stop
    # ... then m periods per numpy step.
    block = periods_per_step * period
    weights = [loop_gain ** periods_per_step * math.comb(periods_per_step, j) / 2 ** periods_per_step
               for j in range(periods_per_step + 1)]
    while start < n_loop + 1:
        stop = min(start + block, n_loop + 1)
        length = stop - start
        acc = np.zeros(length)
        for j, weight in enumerate(weights):
            acc += weight * y[start - block - j:start - block - j + length]
        y[start:stop] = acc
        start = stop
    y = y[1:]
    return np.interp(np.arange(n_samples) * stretch, np.arange(n_loop), y)


def _note_off(wave: np.ndarray, note_samples: int, sample_rate: int, release: float) -> np.ndarray:
    """Damp a ringing note over ``release`` s after the key is let go; trims the tail."""
    release_samples = int(release * sample_rate)
    wave = wave[:note_samples + release_samples].copy()
    tail = wave[note_samples:]
    tail *= np.linspace(1.0, 0.0, len(tail), endpoint=False)
    return wave


# ----------------------------------------------------------------------------
# 3b. Instruments: a note source per instrument plus an effect over the whole part
# ----------------------------------------------------------------------------
# A source renders one note: (frequency_hz, note_samples, sample_rate, velocity, rng)
# -> samples, at least note_samples long (the release rings on). An effect processes
# the summed part once; linear filters commute with the sum, and distortion and
# tremolo act on the whole sound in real instruments too.

def _violin(freq, n, sr, velocity, rng):
    """Bowed string: sawtooth (the bow's stick-slip), delayed vibrato, slow attack."""
    env = _adsr(n, sr, attack=0.09, decay=0.1, sustain=0.85, release=0.12)
    phase, step = _phase(freq, len(env), sr, vibrato_hz=5.5, vibrato_cents=22, vibrato_delay=0.15)
    bow_noise = 0.03 * rng.standard_normal(len(env))
    return velocity * env * (_saw(phase, step) + bow_noise)


def _violin_body(wave, sr):
    """Wooden body: resonances near 280 Hz (air), 460 Hz (wood) and 2.9 kHz (bridge)."""
    wave = _lowpass(wave, 5500, sr)
    return _resonances(wave, sr, ((280, 2.0, 0.8), (460, 2.0, 0.6), (2900, 1.5, 0.7)))


def _flute(freq, n, sr, velocity, rng):
    """Nearly a sine (a weak 2nd and 3rd harmonic) plus breath noise, strongest at the attack."""
    env = _adsr(n, sr, attack=0.07, decay=0.05, sustain=0.9, release=0.08)
    phase, _ = _phase(freq, len(env), sr, vibrato_hz=5.0, vibrato_cents=14, vibrato_delay=0.2)
    tone = _additive(phase, (1, 2, 3), (1.0, 0.12, 0.03), freq, sr)
    t = np.arange(len(env)) / sr
    breath = rng.standard_normal(len(env)) * (0.03 + 0.12 * np.exp(-t / 0.05))
    return velocity * env * (tone + breath)


def _flute_effect(wave, sr):
    return _lowpass(wave, 6000, sr, order=1)     # soften the breath's hiss


_PIANO_PARTIALS = 10
_PIANO_INHARMONICITY = 3e-4   # stiff strings: partial n sits at n * f * sqrt(1 + B n^2)


def _piano(freq, n, sr, velocity, rng):
    """Struck string: slightly stretched partials, each decaying exponentially (higher
    partials faster), brighter when struck harder, a hammer thump, damped at note-off."""
    ring = min(n + int(0.15 * sr), int(4.0 * sr))
    harmonic = np.arange(1, _PIANO_PARTIALS + 1)
    ratios = harmonic * np.sqrt(1 + _PIANO_INHARMONICITY * harmonic ** 2)
    keep = ratios * freq < 0.45 * sr
    ratios, harmonic = ratios[keep], harmonic[keep]
    amplitudes = harmonic ** -1.1 * np.exp(-(harmonic - 1) * (1.0 - velocity) * 0.6)
    fundamental_decay = float(np.clip(1.6 * (220.0 / freq) ** 0.6, 0.3, 3.0))
    t = np.arange(ring) / sr
    time_constants = (fundamental_decay / (1 + 0.6 * (harmonic - 1))).astype(np.float32)
    decays = np.exp(-t.astype(np.float32)[None, :] / time_constants[:, None])
    partials = np.sin((2 * np.pi * ((ratios[:, None] * freq * t[None, :]) % 1.0)).astype(np.float32))
    tone = (amplitudes[:, None] * decays * partials).sum(axis=0)
    hammer = 0.3 * rng.standard_normal(ring) * np.exp(-t / 0.004)
    attack = np.clip(t / 0.002, 0.0, 1.0)
    return _note_off(velocity * attack * (tone + hammer), n, sr, release=0.12)


def _piano_effect(wave, sr):
    return _lowpass(wave, 7000, sr, order=1)


def _acoustic_guitar(freq, n, sr, velocity, rng):
    """Plucked nylon/steel string (Karplus-Strong), damped by the fretting hand at note-off."""
    decay_seconds = float(np.clip(3.0 * (110.0 / freq) ** 0.5, 0.6, 4.0))
    length = n + int(0.08 * sr)
    string = _karplus_strong(freq, length, sr, decay_seconds, brightness=0.3 + 0.5 * velocity, rng=rng)
    return velocity * _note_off(string, n, sr, release=0.08)


def _guitar_body(wave, sr):
    """Hollow body: low air resonance (~100 Hz) and top-plate resonance (~210 Hz)."""
    return _resonances(_lowpass(wave, 5000, sr), sr, ((100, 2.0, 0.5), (210, 2.0, 0.4)))


def _electric_guitar(freq, n, sr, velocity, rng):
    """A long-sustaining steel string; the character comes from the amplifier (effect)."""
    length = n + int(0.05 * sr)
    string = _karplus_strong(freq, length, sr, decay_seconds=8.0, brightness=0.9, rng=rng, pluck_position=0.2)
    return velocity * _note_off(string, n, sr, release=0.05)


def _amplifier(wave, sr):
    """Overdriven amp and speaker cabinet.

    High gain into an asymmetric ``tanh`` waveshaper flattens the wave's peaks, which
    adds many new harmonics (odd from the symmetric part, even from the offset) and
    squashes the decay into sustain; the cabinet then rolls off the harsh top.
    """
    wave = _highpass(wave, 90, sr)
    rms = float(np.sqrt(np.mean(wave ** 2)))
    if rms == 0:
        return wave
    # Gain set from the RMS, not the peak, so a spiky pluck cannot turn the drive down.
    drive, bias = 4.0, 0.2
    shaped = np.tanh(drive * wave / rms + bias) - np.tanh(bias)
    cabinet = _lowpass(_highpass(shaped, 80, sr), 3800, sr, order=4)
    return _resonances(cabinet, sr, ((1800, 1.5, 0.5),))


_DRAWBAR_RATIOS = (0.5, 1, 2, 3, 4, 6)           # 16', 8', 4', 2 2/3', 2', 1 1/3' ranks
_DRAWBAR_LEVELS = (0.45, 1.0, 0.7, 0.4, 0.3, 0.15)


def _organ(freq, n, sr, velocity, rng):
    """Additive drawbars: sines at fixed ratios, full level for as long as the key is held."""
    env = _adsr(n, sr, attack=0.008, decay=0.0, sustain=1.0, release=0.03)
    phase, _ = _phase(freq, len(env), sr)
    return velocity * env * _additive(phase, _DRAWBAR_RATIOS, _DRAWBAR_LEVELS, freq, sr)


def _rotary_speaker(wave, sr):
    """A gentle 6 Hz tremolo, the amplitude side of a rotating speaker."""
    t = np.arange(len(wave)) / sr
    return wave * (1.0 + 0.08 * np.sin(2 * np.pi * 6.2 * t))


# A trumpet's steady spectrum: the 2nd to 4th harmonics are as strong as the fundamental
# (the bell and mouthpiece form a broad resonance near 1 kHz), then it rolls off.
_TRUMPET_LEVELS = (1.0, 1.1, 1.0, 0.85, 0.6, 0.45, 0.3, 0.2, 0.14, 0.1, 0.07, 0.05)


def _trumpet(freq, n, sr, velocity, rng):
    """Brass: harmonics that bloom as the note swells.

    A brass player's spectrum brightens with loudness: harmonic ``h`` grows like
    ``loudness ** (1 + 0.5 (h - 1))``, so the attack starts dark and opens up (and
    softer notes stay darker). The note also starts a little flat and slides up
    (the lip "scoop").
    """
    env = _adsr(n, sr, attack=0.05, decay=0.1, sustain=0.8, release=0.08)
    phase, _ = _phase(freq, len(env), sr, vibrato_hz=5.0, vibrato_cents=10, vibrato_delay=0.3,
                      scoop_cents=-60, scoop_seconds=0.03)
    log_openness = np.log(np.maximum(velocity * env, 1e-4)).astype(np.float32)
    tone = np.zeros(len(env), dtype=np.float32)
    for h, level in enumerate(_TRUMPET_LEVELS, start=1):
        if h * freq >= 0.45 * sr:
            break
        bloom = np.exp(0.5 * (h - 1) * log_openness)
        tone += level * bloom * np.sin((2 * np.pi * ((h * phase) % 1.0)).astype(np.float32))
    return env * tone


def _trumpet_bell(wave, sr):
    return _lowpass(wave, 6000, sr)


_MARIMBA_RATIOS = (1.0, 3.9, 9.2)     # a tuned bar's modes are far from harmonic
_MARIMBA_LEVELS = (1.0, 0.35, 0.12)


def _marimba(freq, n, sr, velocity, rng):
    """Struck wooden bar: three inharmonic modes, the upper ones dying fast, plus a mallet tick."""
    ring_decay = 0.35 * (300.0 / freq) ** 0.3       # low bars ring longer
    length = int(min(max(n / sr, 4 * ring_decay), 1.2) * sr)   # by then the bar is ~35 dB down
    t = (np.arange(length) / sr).astype(np.float32)
    tone = np.zeros(length, dtype=np.float32)
    for ratio, level, decay in zip(_MARIMBA_RATIOS, _MARIMBA_LEVELS, (1.0, 0.25, 0.12)):
        if ratio * freq < 0.45 * sr:
            # Upper modes die within a fraction of the signal: compute them only while audible.
            audible = min(length, int(6 * ring_decay * decay * sr))
            cycles = (ratio * freq * np.arange(audible) / sr) % 1.0
            tone[:audible] += (level * np.exp(-t[:audible] / np.float32(ring_decay * decay))
                               * np.sin((2 * np.pi * cycles).astype(np.float32)))
    tick = 0.2 * rng.standard_normal(length) * np.exp(-t / 0.002)
    return velocity * np.clip(t / 0.001, 0, 1) * (tone + tick)


def _synth_lead(freq, n, sr, velocity, rng):
    """Pulse wave with pulse-width modulation: near-square, so hollow (odd harmonics
    strongest), with the width swaying slowly so the even harmonics come and go."""
    env = _adsr(n, sr, attack=0.01, decay=0.15, sustain=0.7, release=0.1)
    phase, step = _phase(freq, len(env), sr, vibrato_hz=6.0, vibrato_cents=12, vibrato_delay=0.25)
    t = np.arange(len(env)) / sr
    duty = 0.5 + 0.1 * np.sin(2 * np.pi * 0.8 * t)
    return 0.5 * velocity * env * _pulse(phase, step, duty)


def _synth_filter(wave, sr):
    """A resonant low-pass (the classic subtractive-synth filter): a peak at 2.4 kHz, then roll-off."""
    return _resonances(_lowpass(wave, 3200, sr), sr, ((2400, 4.0, 1.5),))


_CLARINET_RATIOS = (1, 2, 3, 4, 5, 7, 9, 11)
# A cylindrical bore closed at one end favours odd harmonics.
_CLARINET_LEVELS = (1.0, 0.04, 0.45, 0.02, 0.25, 0.15, 0.09, 0.05)


def _clarinet(freq, n, sr, velocity, rng):
    """Odd harmonics (a hollow, woody tone), little vibrato, a soft reedy breath."""
    env = _adsr(n, sr, attack=0.05, decay=0.05, sustain=0.9, release=0.06)
    phase, _ = _phase(freq, len(env), sr, vibrato_hz=4.5, vibrato_cents=4, vibrato_delay=0.3)
    tone = _additive(phase, _CLARINET_RATIOS, _CLARINET_LEVELS, freq, sr)
    return velocity * env * (tone + 0.01 * rng.standard_normal(len(env)))


def _clarinet_effect(wave, sr):
    return _lowpass(wave, 4500, sr)


def _bass(freq, n, sr, velocity, rng):
    """Synth bass: a saw for bite over a sine for weight, plucky envelope."""
    env = _adsr(n, sr, attack=0.005, decay=0.25, sustain=0.55, release=0.06)
    phase, step = _phase(freq, len(env), sr)
    return velocity * env * (0.6 * _saw(phase, step) + 0.8 * np.sin(2 * np.pi * phase))


def _bass_effect(wave, sr):
    return _lowpass(_highpass(wave, 30, sr), 700, sr)


def _pad(freq, n, sr, velocity, rng):
    """Warm pad: two saws detuned by +-8 cents beat slowly against each other (chorus)."""
    env = _adsr(n, sr, attack=0.35, decay=0.3, sustain=0.8, release=0.4)
    total = np.zeros(len(env))
    for cents in (-8.0, 8.0):
        phase, step = _phase(freq * 2 ** (cents / 1200), len(env), sr)
        total += _saw((phase + rng.random()) % 1.0, step)
    return 0.5 * velocity * env * total


def _pad_effect(wave, sr):
    return _lowpass(wave, 1500, sr)


def _no_effect(wave, sr):
    return wave


class _Voice(NamedTuple):
    source: Callable[[float, int, int, float, np.random.Generator], np.ndarray]
    effect: Callable[[np.ndarray, int], np.ndarray]


_VOICES: dict[str, _Voice] = {
    "violin": _Voice(_violin, _violin_body),
    "flute": _Voice(_flute, _flute_effect),
    "piano": _Voice(_piano, _piano_effect),
    "acoustic guitar": _Voice(_acoustic_guitar, _guitar_body),
    "distorted electric guitar": _Voice(_electric_guitar, _amplifier),
    "organ": _Voice(_organ, _rotary_speaker),
    "trumpet": _Voice(_trumpet, _trumpet_bell),
    "marimba": _Voice(_marimba, _no_effect),
    "synth lead": _Voice(_synth_lead, _synth_filter),
    "clarinet": _Voice(_clarinet, _clarinet_effect),
    "pad": _Voice(_pad, _pad_effect),
    "bass": _Voice(_bass, _bass_effect),
}


def _render_part(notes, voice_name: str, sample_rate: int, n_samples: int, rng: np.random.Generator
                 ) -> np.ndarray:
    """Sum every note of a part into ``(n_samples,)`` and apply the voice's effect.

    Identical notes (same pitch, length and velocity: riffs and motifs repeat a lot)
    are rendered once and reused, like a sampler playing back one recording.
    """
    voice = _VOICES[voice_name]
    out = np.zeros(n_samples)
    rendered: dict[tuple, np.ndarray] = {}
    for note in notes:
        start = int(round(note.onset_s * sample_rate))
        if start >= n_samples:
            continue
        note_samples = max(1, int(round(note.duration_s * sample_rate)))
        key = (note.pitch, note_samples, round(note.velocity, 2))
        if key not in rendered:
            rendered[key] = voice.source(midi_to_hz(note.pitch), note_samples, sample_rate,
                                         float(np.clip(note.velocity, 0.05, 1.0)), rng)
        wave = rendered[key]
        stop = min(n_samples, start + len(wave))
        out[start:stop] += wave[:stop - start]
    return voice.effect(out, sample_rate)


def render_note(instrument: str, pitch: int, seconds: float = 1.0, sample_rate: int = 16_000,
                velocity: float = 0.8, seed: int = 0) -> np.ndarray:
    """One note on one instrument, e.g. to hear and compare timbres.

    Args:
        instrument: one of :data:`INSTRUMENTS` (or ``"pad"``/``"bass"``).
        pitch: MIDI note number.
        seconds: total length; the key is released at 80% of it so the release is heard.

    Returns:
        float32 ``(round(seconds * sample_rate),)``, peak 0.9.
    """
    _check_choice("instrument", instrument, tuple(_VOICES))
    n_samples = int(round(seconds * sample_rate))
    note = Note(pitch, 0.0, 0.8 * seconds, velocity)
    wave = _render_part([note], instrument, sample_rate, n_samples, np.random.default_rng(seed))
    return _normalise(wave, 0.9)


# ----------------------------------------------------------------------------
# 3c. Drums
# ----------------------------------------------------------------------------

def _drum_sounds(sample_rate: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One sample per drum, reused for every hit (as a drum machine does).

    * kick: a sine whose pitch sweeps from ~160 Hz down to 48 Hz in a few tens of ms,
      with a click for the beater;
    * snare: a 190 Hz tone (the drum head) plus band-passed noise (the snare wires);
    * hi-hat: high-passed noise with a very short decay.
    """
    def time(seconds):
        return np.arange(int(seconds * sample_rate)) / sample_rate

    t = time(0.35)
    sweep = 48.0 + 110.0 * np.exp(-t / 0.035)
    kick_phase = np.cumsum(sweep) / sample_rate
    kick = np.sin(2 * np.pi * kick_phase) * np.exp(-t / 0.16)
    kick += 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.003)

    t = time(0.22)
    sos = signal.butter(2, (_cutoff(1200, sample_rate), _cutoff(6000, sample_rate)), "bandpass",
                        fs=sample_rate, output="sos")
    wires = signal.sosfilt(sos, rng.standard_normal(len(t))) * np.exp(-t / 0.05)
    snare = 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.04) + wires

    t = time(0.09)
    hihat = _highpass(rng.standard_normal(len(t)), 6000, sample_rate, order=4) * np.exp(-t / 0.022)
    return {"kick": kick, "snare": 0.7 * snare, "hihat": 0.5 * hihat}


def _render_drums(hits, sample_rate: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    sounds = _drum_sounds(sample_rate, rng)
    out = np.zeros(n_samples)
    for hit in hits:
        start = int(round(hit.onset_s * sample_rate))
        if start >= n_samples:
            continue
        sound = sounds[hit.kind]
        stop = min(n_samples, start + len(sound))
        out[start:stop] += hit.velocity * sound[:stop - start]
    return out


# ----------------------------------------------------------------------------
# 4. Mix
# ----------------------------------------------------------------------------

#: Output peak level for each loudness word.
PEAK_LEVELS: dict[str, float] = {"soft": 0.3, "medium": 0.55, "loud": 0.85}
# Loudness of each part relative to the lead, after each is set to unit RMS.
_PART_GAINS = {"lead": 1.0, "riff": 0.5, "pad": 0.35, "bass": 0.55, "drums": 0.45}


def _normalise(wave: np.ndarray, peak: float) -> np.ndarray:
    biggest = float(np.max(np.abs(wave))) if len(wave) else 0.0
    scaled = wave * (peak / biggest) if biggest > 0 else wave
    return scaled.astype(np.float32)


def _room(wave: np.ndarray, sample_rate: int, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Reverb: convolve with a burst of exponentially decaying, darkening noise (a room's
    impulse response, statistically), 15 ms pre-delay, 1.2 s to fall 60 dB."""
    rt60 = 1.2
    t = np.arange(int(min(rt60, 1.0) * sample_rate)) / sample_rate
    impulse = _lowpass(rng.standard_normal(len(t)), 4000, sample_rate, order=1) * np.exp(-6.91 * t / rt60)
    impulse = np.concatenate([np.zeros(int(0.015 * sample_rate)), impulse])
    impulse /= np.sqrt(np.sum(impulse ** 2))
    tail = signal.fftconvolve(wave, impulse)[: len(wave)]
    return wave + wet * tail


def render_score(score: Score, attrs: SynthAttributes, sample_rate: int = 16_000) -> np.ndarray:
    """Turn a :class:`Score` into audio with the instruments and mix ``attrs`` ask for.

    Each part is rendered, set to unit RMS and scaled by its mix gain (the lead on
    top); a room reverb is added (more for calm, sad and mysterious moods); a high-pass
    removes DC and rumble; a 30 ms fade ends the clip without a click; finally the
    peak is set by the loudness (:data:`PEAK_LEVELS`).

    Returns:
        float32 ``(round(score.seconds * sample_rate),)`` in [-1, 1], no NaN.
    """
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz for these instruments, got {sample_rate}")
    n_samples = int(round(score.seconds * sample_rate))
    rng = np.random.default_rng([score.seed, 1])       # the sound's noise, independent of the composition
    parts = {"lead": _render_part(score.lead, attrs.lead, sample_rate, n_samples, rng)}
    if score.riff:
        parts["riff"] = _render_part(score.riff, attrs.backing_instrument, sample_rate, n_samples, rng)
    if score.pad:
        parts["pad"] = _render_part(score.pad, "pad", sample_rate, n_samples, rng)
    if score.bass:
        parts["bass"] = _render_part(score.bass, "bass", sample_rate, n_samples, rng)
    if score.drums:
        parts["drums"] = _render_drums(score.drums, sample_rate, n_samples, rng)

    mix = np.zeros(n_samples)
    for name, wave in parts.items():
        rms = float(np.sqrt(np.mean(wave ** 2)))
        if rms > 0:
            mix += _PART_GAINS[name] * wave / rms
    mix = _room(mix, sample_rate, MOOD_PROFILES[attrs.mood].reverb_mix, rng)
    mix = _highpass(mix, 30, sample_rate)
    fade = min(n_samples, int(0.03 * sample_rate))
    mix[n_samples - fade:] *= np.linspace(1.0, 0.0, fade)
    return _normalise(mix, PEAK_LEVELS[attrs.loudness])


def render(attrs: SynthAttributes, seconds: float = 4.0, sample_rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Compose and render one clip: ``render_score(compose(attrs, seconds, seed), attrs, sample_rate)``.

    Returns:
        float32 ``(round(seconds * sample_rate),)``, peak at ``PEAK_LEVELS[attrs.loudness]``;
        the same ``(attrs, seconds, sample_rate, seed)`` always gives the same samples.
    """
    return render_score(compose(attrs, seconds, seed), attrs, sample_rate)
