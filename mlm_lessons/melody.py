"""Melodies as token sequences: the symbolic music that lessons 01 and 02 model.

Before MusicLM models *audio* tokens (lessons 05--08), lessons 01 and 02 train transformers on
something smaller and easier to read: the written melodies of SynthCaps (``synth.compose(...).melody``).

1. **Vocabulary** -- :data:`VOCAB`: special tokens (``<pad>``, ``<bos>``, ``<eos>``, ``|`` for a bar
   line, ``rest``), one token per written duration (eighth note to whole note), one per MIDI pitch, and
   one per transposition interval (the seq2seq task's instruction). A note is two tokens, pitch then
   duration; a rest is ``rest`` then a duration; a bar line comes before the first event of each bar.
2. :func:`encode_melody` / :func:`decode_melody` -- notes to token ids and back (lossless for SynthCaps
   melodies; lenient with a model's malformed output unless ``strict=True``).
3. **Data** -- :func:`compose_melody` writes a melody of a given number of beats with the SynthCaps
   composer (no audio, ~0.3 ms each); :class:`MelodyDataset` (language modelling) and
   :class:`TranspositionDataset` (sequence to sequence: ``<up 3> melody -> the melody 3 semitones up``)
   hold thousands of them as padded tensors, split by seed so held-out melodies are never trained on.
4. **Hear and see** -- :func:`render_melody` plays tokens or notes on a SynthCaps instrument;
   :func:`plot_piano_roll` draws them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mlm_lessons import synth
from mlm_lessons.synth import MelodyNote

# ----------------------------------------------------------------------------------------------------
# 1. Vocabulary

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "|", "rest")
#: Written durations in beats (a quarter note = 1): eighth, quarter, dotted quarter, half, dotted half, whole.
DURATIONS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
LOWEST_PITCH, HIGHEST_PITCH = 24, 107          # C1 .. B7, MIDI numbers (inclusive)
#: Transposition intervals, semitones, of the seq2seq task.
SHIFTS: tuple[int, ...] = tuple(range(-6, 7))
#: The intervals the lessons train on: down a fourth, down a tone, unchanged, up a minor third, up a fourth.
TRANSPOSITION_SHIFTS: tuple[int, ...] = (-5, -2, 0, 3, 5)
BEATS_PER_BAR = 4


def _pitch_name(pitch: int) -> str:
    names = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
    return f"{names[pitch % 12]}{pitch // 12 - 1}"


def _duration_name(beats: float) -> str:
    return f"d{beats:g}"


def _shift_name(semitones: int) -> str:
    return f"<up {semitones}>" if semitones >= 0 else f"<down {-semitones}>"


@dataclass(frozen=True)
class MelodyVocab:
    """Names and ids of every token. Use the module's :data:`VOCAB`."""

    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> int:
        return self.ids[name]

    @functools.cached_property
    def ids(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.names)}

    @property
    def pad(self) -> int:
        return 0

    @property
    def bos(self) -> int:
        return 1

    @property
    def eos(self) -> int:
        return 2

    @property
    def bar(self) -> int:
        return 3

    @property
    def rest(self) -> int:
        return 4

    @property
    def first_duration(self) -> int:
        return len(SPECIAL_TOKENS)

    @property
    def first_pitch(self) -> int:
        return self.first_duration + len(DURATIONS)

    @property
    def first_shift(self) -> int:
        return self.first_pitch + HIGHEST_PITCH - LOWEST_PITCH + 1

    def duration_token(self, beats: float) -> int:
        if beats not in DURATIONS:
            raise ValueError(f"duration {beats} beats has no token; durations are {DURATIONS}")
        return self.first_duration + DURATIONS.index(beats)

    def pitch_token(self, pitch: int) -> int:
        if not LOWEST_PITCH <= pitch <= HIGHEST_PITCH:
            raise ValueError(f"MIDI pitch {pitch} is outside the vocabulary's [{LOWEST_PITCH}, {HIGHEST_PITCH}]")
        return self.first_pitch + pitch - LOWEST_PITCH

    def shift_token(self, semitones: int) -> int:
        if semitones not in SHIFTS:
            raise ValueError(f"transposition {semitones} has no token; shifts are {SHIFTS[0]}..{SHIFTS[-1]}")
        return self.first_shift + SHIFTS.index(semitones)

    def is_duration(self, token: int) -> bool:
        return self.first_duration <= token < self.first_pitch

    def is_pitch(self, token: int) -> bool:
        return self.first_pitch <= token < self.first_shift

    def is_shift(self, token: int) -> bool:
        return self.first_shift <= token < len(self.names)

    def duration_of(self, token: int) -> float:
        return DURATIONS[token - self.first_duration]

    def pitch_of(self, token: int) -> int:
        return token - self.first_pitch + LOWEST_PITCH

    def shift_of(self, token: int) -> int:
        return SHIFTS[token - self.first_shift]

    def to_names(self, tokens: Iterable[int]) -> list[str]:
        """Readable names, e.g. ``['<bos>', '|', 'E4', 'd1', ...]``."""
        return [self.names[int(token)] for token in tokens]


VOCAB = MelodyVocab(
    SPECIAL_TOKENS
    + tuple(_duration_name(d) for d in DURATIONS)
    + tuple(_pitch_name(p) for p in range(LOWEST_PITCH, HIGHEST_PITCH + 1))
    + tuple(_shift_name(s) for s in SHIFTS)
)
PAD, BOS, EOS, BAR, REST = VOCAB.pad, VOCAB.bos, VOCAB.eos, VOCAB.bar, VOCAB.rest


# ----------------------------------------------------------------------------------------------------
# 2. Encoding and decoding


def _split_duration(beats: float) -> list[float]:
    """Write a rest of any length (a multiple of an eighth) as a few duration tokens, longest first."""
    parts, remaining = [], beats
    while remaining > 1e-9:
        fitting = [d for d in DURATIONS if d <= remaining + 1e-9]
        if not fitting:
            raise ValueError(f"a gap of {beats} beats is not a multiple of {DURATIONS[0]} beats")
        parts.append(fitting[-1])
        remaining -= fitting[-1]
    return parts


def encode_melody(notes: Sequence[MelodyNote], bos: bool = True, eos: bool = True, bars: bool = True) -> list[int]:
    """Token ids of a melody: ``<bos> | E4 d1 D4 d0.5 ... rest d0.5 | ... <eos>``.

    Each note is ``pitch, duration``; a gap between notes is ``rest, duration`` (split into several if
    needed); with ``bars``, a ``|`` precedes the first event that starts in a new bar (bar lines carry
    no timing: they are there because they make the rhythm easier to learn). Timing is recovered from
    durations alone, so the melody must start at beat 0 (a leading gap becomes a rest).

    Raises:
        ValueError: notes that overlap, durations not in :data:`DURATIONS`, pitches outside the range.
    """
    tokens = [BOS] if bos else []
    time, last_bar = 0.0, -1

    def event(onset: float, first: int, duration: float) -> None:
        nonlocal last_bar
        bar = int(onset // BEATS_PER_BAR + 1e-9)
        if bars and bar > last_bar:
            tokens.append(BAR)
            last_bar = bar
        tokens.extend([first, VOCAB.duration_token(duration)])

    for note in notes:
        if note.onset_beats < time - 1e-9:
            raise ValueError(f"note {note} starts before the previous one ends (beat {time}); "
                             "melodies are monophonic")
        for part in _split_duration(note.onset_beats - time):
            event(time, REST, part)
            time += part
        event(note.onset_beats, VOCAB.pitch_token(note.pitch), note.duration_beats)
        time = note.onset_beats + note.duration_beats
    if eos:
        tokens.append(EOS)
    return tokens


def decode_melody(tokens: Iterable[int], strict: bool = False) -> tuple[MelodyNote, ...]:
    """Notes from token ids (a tensor or a list); the inverse of :func:`encode_melody`.

    Reading stops at ``<eos>`` or ``<pad>``; ``<bos>``, bar lines and transposition tokens are skipped.
    A model's output can be malformed (a pitch without a duration, a duration without a pitch): with
    ``strict=False`` such tokens are skipped, with ``strict=True`` they raise ``ValueError``.
    """
    tokens = [int(t) for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)]
    notes, time, pending = [], 0.0, None     # pending: a pitch (int) or REST waiting for its duration
    for position, token in enumerate(tokens):
        if token in (EOS, PAD):
            break
        if token in (BOS, BAR) or VOCAB.is_shift(token):
            continue
        if VOCAB.is_pitch(token) or token == REST:
            if pending is not None and strict:
                raise ValueError(f"token {position} ({VOCAB.names[token]}) follows a pitch or rest that has "
                                 "no duration")
            pending = token
        elif VOCAB.is_duration(token):
            if pending is None:
                if strict:
                    raise ValueError(f"token {position} ({VOCAB.names[token]}) is a duration with no pitch "
                                     "or rest before it")
                continue
            beats = VOCAB.duration_of(token)
            if pending != REST:
                notes.append(MelodyNote(VOCAB.pitch_of(pending), time, beats))
            time += beats
            pending = None
        elif strict:
            raise ValueError(f"token id {token} at position {position} is not a melody token")
    if pending is not None and strict:
        raise ValueError("the tokens end with a pitch or rest that has no duration")
    return tuple(notes)


def grammar_errors(tokens: Iterable[int]) -> int:
    """How many tokens :func:`decode_melody` has to skip: a simple "is this well-formed?" score."""
    tokens = [int(t) for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)]
    errors, pending = 0, None
    for token in tokens:
        if token in (EOS, PAD):
            break
        if VOCAB.is_pitch(token) or token == REST:
            errors += pending is not None
            pending = token
        elif VOCAB.is_duration(token):
            errors += pending is None
            pending = None
        elif token in (BOS, BAR):
            errors += pending is not None
            pending = None if token == BAR else pending
    return errors + (pending is not None)


def transpose(notes: Sequence[MelodyNote], semitones: int) -> tuple[MelodyNote, ...]:
    """The same melody ``semitones`` higher (negative: lower)."""
    return tuple(MelodyNote(note.pitch + semitones, note.onset_beats, note.duration_beats) for note in notes)


# ----------------------------------------------------------------------------------------------------
# 3. Data


def compose_melody(seed: int, beats: int = 16, **fixed_attributes) -> tuple[tuple[MelodyNote, ...], synth.SynthAttributes]:
    """Write a SynthCaps melody exactly ``beats`` long (no audio is rendered).

    Attributes (mood, tempo, key, mode, register ...) are sampled from ``seed`` unless fixed; the
    composer's melody is cut at ``beats`` (a note crossing the end is shortened).

    Returns:
        ``(notes, attributes)``.
    """
    rng = np.random.default_rng([seed, 7])
    attrs = synth.sample_attributes(rng, **fixed_attributes)
    seconds = beats * 60.0 / attrs.tempo_bpm
    score = synth.compose(attrs, seconds, seed)
    notes = tuple(MelodyNote(n.pitch, n.onset_beats, min(n.duration_beats, beats - n.onset_beats))
                  for n in score.melody if n.onset_beats < beats)
    return notes, attrs


def pad_sequences(sequences: Sequence[Sequence[int]], length: int, pad: int = PAD) -> torch.Tensor:
    """``(n, length)`` int64, right-padded with ``pad``.

    Raises:
        ValueError: if a sequence is longer than ``length``.
    """
    out = torch.full((len(sequences), length), pad, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if len(sequence) > length:
            raise ValueError(f"sequence {row} has {len(sequence)} tokens, more than length={length}")
        out[row, :len(sequence)] = torch.as_tensor(list(sequence), dtype=torch.long)
    return out


class MelodyDataset(Dataset):
    """``num_melodies`` melody token sequences for language modelling.

    Melody ``i`` is ``compose_melody(first_seed + i, beats)``; train and held-out sets are made with
    disjoint seed ranges. Items are ``{"tokens": (max_len,) int64}``: ``<bos> ... <eos>`` then padding.

    Attributes:
        tokens: ``(num_melodies, max_len)`` int64, every item at once.
        melodies: the notes of each melody.
        attributes: the :class:`~mlm_lessons.synth.SynthAttributes` each was composed from.
    """

    def __init__(self, num_melodies: int, beats: int = 16, first_seed: int = 0, max_len: int = 72):
        pairs = [compose_melody(first_seed + i, beats) for i in range(num_melodies)]
        self.melodies = [notes for notes, _ in pairs]
        self.attributes = [attrs for _, attrs in pairs]
        self.tokens = pad_sequences([encode_melody(notes) for notes in self.melodies], max_len)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"tokens": self.tokens[index]}


class TranspositionDataset(Dataset):
    """Pairs for a sequence-to-sequence task: transpose a melody by a given interval.

    ``source = <up k> | C4 d1 ... <eos>`` (the instruction replaces ``<bos>``),
    ``target = <bos> | D#4 d1 ... <eos>`` (the melody ``k`` semitones higher). Durations, rests and bar
    lines are copied; every pitch moves by ``k``. Token ``t`` of the target lines up with token ``t`` of
    the source, which makes the cross-attention maps easy to read. The interval is drawn from
    ``shifts`` (a subset of :data:`SHIFTS`) for each melody.

    Items are ``{"source": (max_len,), "target": (max_len,)}`` int64, padded with ``<pad>``.
    """

    def __init__(self, num_melodies: int, beats: int = 8, first_seed: int = 0, max_len: int = 40,
                 shifts: Sequence[int] = TRANSPOSITION_SHIFTS):
        unknown = sorted(set(shifts) - set(SHIFTS))
        if unknown or not shifts:
            raise ValueError(f"shifts must be a non-empty subset of {SHIFTS}, got {list(shifts)}")
        rng = np.random.default_rng([first_seed, 11])
        self.melodies, self.shifts, sources, targets = [], [], [], []
        for index in range(num_melodies):
            notes, _ = compose_melody(first_seed + index, beats)
            shift = int(rng.choice(shifts))
            self.melodies.append(notes)
            self.shifts.append(shift)
            sources.append([VOCAB.shift_token(shift)] + encode_melody(notes, bos=False))
            targets.append(encode_melody(transpose(notes, shift)))
        self.sources = pad_sequences(sources, max_len)
        self.targets = pad_sequences(targets, max_len)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"source": self.sources[index], "target": self.targets[index]}


def unigram_bigram_baselines(train_tokens: torch.Tensor, test_tokens: torch.Tensor, smoothing: float = 0.1
                             ) -> dict[str, float]:
    """Perplexity on ``test_tokens`` of two counting models fitted on ``train_tokens``.

    Both predict every token after ``<bos>`` up to and including ``<eos>`` (padding ignored), with
    add-``smoothing`` counts so unseen tokens keep a little probability.

    Returns:
        ``{"unigram": perplexity, "bigram": perplexity}``.
    """
    size = len(VOCAB)

    def pairs(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        previous, current = tokens[:, :-1].reshape(-1), tokens[:, 1:].reshape(-1)
        keep = current != PAD
        return previous[keep], current[keep]

    train_previous, train_current = pairs(train_tokens)
    test_previous, test_current = pairs(test_tokens)
    unigram = torch.bincount(train_current, minlength=size).double() + smoothing
    unigram /= unigram.sum()
    bigram = torch.zeros(size, size, dtype=torch.float64)
    bigram.index_put_((train_previous, train_current), torch.ones(len(train_current), dtype=torch.float64),
                      accumulate=True)
    bigram = (bigram + smoothing) / (bigram + smoothing).sum(dim=1, keepdim=True)
    return {"unigram": float(torch.exp(-unigram[test_current].log().mean())),
            "bigram": float(torch.exp(-bigram[test_previous, test_current].log().mean()))}


# ----------------------------------------------------------------------------------------------------
# 4. Hear and see


def _as_notes(melody) -> tuple[MelodyNote, ...]:
    if isinstance(melody, torch.Tensor) or (len(melody) and isinstance(melody[0], (int, np.integer))):
        return decode_melody(melody)
    return tuple(melody)


def render_melody(melody, tempo_bpm: float = 100.0, instrument: str = "piano", sample_rate: int = 16_000,
                  seconds: float | None = None, seed: int = 0) -> np.ndarray:
    """Play a melody (notes, or token ids) on a SynthCaps instrument, solo.

    Args:
        seconds: length of the audio (default: up to the end of the last note plus 0.5 s).

    Returns:
        float32 ``(samples,)``.
    """
    notes = _as_notes(melody)
    beat = 60.0 / tempo_bpm
    end = max((n.onset_beats + n.duration_beats for n in notes), default=1.0) * beat + 0.5
    seconds = end if seconds is None else seconds
    attrs = synth.SynthAttributes(lead=instrument, backing=(), backing_instrument=None, tempo_bpm=int(round(tempo_bpm)),
                                  key="C", mode="major", register="mid", loudness="medium", mood="calming")
    lead = tuple(synth.Note(n.pitch, n.onset_beats * beat, 0.95 * n.duration_beats * beat,
                            0.8 if n.onset_beats % BEATS_PER_BAR == 0 else 0.7) for n in notes)
    score = synth.Score(tempo_bpm=float(tempo_bpm), seconds=float(seconds), seed=seed, key="C", mode="major",
                        beats_per_bar=BEATS_PER_BAR, beats_per_chord=BEATS_PER_BAR, chords=(), melody=notes,
                        lead=lead)
    return synth.render_score(score, attrs, sample_rate)


def plot_piano_roll(melody, ax=None, title: str | None = None, label: str | None = None,
                    color: str | None = None, alpha: float = 0.8):
    """Draw a melody (notes, or token ids) as bars: time in beats across, MIDI pitch up, bar lines grey.

    Call it twice on one ``ax`` to overlay two melodies (pass ``label`` for a legend).
    """
    import matplotlib.pyplot as plt

    notes = _as_notes(melody)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 2.5))
    ax.barh([n.pitch for n in notes], [0.95 * n.duration_beats for n in notes],
            left=[n.onset_beats for n in notes], height=0.8, color=color, alpha=alpha, label=label)
    end = max((n.onset_beats + n.duration_beats for n in notes), default=float(BEATS_PER_BAR))
    for bar_line in np.arange(BEATS_PER_BAR, end, BEATS_PER_BAR):
        ax.axvline(bar_line, color="0.75", linewidth=0.8, zorder=0)
    ax.set_xlabel("time (beats)")
    ax.set_ylabel("MIDI pitch")
    if title:
        ax.set_title(title)
    if label:
        ax.legend(loc="upper right", fontsize=8)
    return ax


# ----------------------------------------------------------------------------------------------------
# 5. Measuring generated melodies

MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)


def diatonic_fit(notes: Sequence[MelodyNote]) -> float:
    """Fraction of the notes that fit the best-fitting diatonic scale (any of the 12 transpositions of
    the major scale, which also covers the minor, dorian and mixolydian modes SynthCaps writes in).

    Every SynthCaps melody scores 1.0; notes drawn uniformly at random score about 0.7. An empty
    melody scores 0.
    """
    if not notes:
        return 0.0
    counts = np.bincount([note.pitch % 12 for note in notes], minlength=12)
    best = max(sum(counts[(tonic + step) % 12] for step in MAJOR_SCALE) for tonic in range(12))
    return float(best / len(notes))


def repeated_ngram_fraction(tokens: Sequence[int], n: int = 4) -> float:
    """Fraction of the ``n``-grams of ``tokens`` (up to ``<eos>``) that already occurred earlier in it.

    Some repetition is music (motifs, sequences); a sampler stuck in a loop scores near 1, and a
    sequence with no repeated ``n``-gram scores 0.
    """
    tokens = [int(t) for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens)]
    if EOS in tokens:
        tokens = tokens[:tokens.index(EOS)]
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    seen, repeats = set(), 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)
