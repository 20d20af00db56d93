"""Linear probes: what a representation knows, measured.

A *probe* asks whether some property can be read off a representation by the simplest possible reader, a
linear classifier (Alain & Bengio, 2016). Train a logistic regression from the representation of each
frame to a label on some clips; report its accuracy on other clips. High accuracy means the property is
there, plainly; chance accuracy means a linear reader cannot find it. Lesson 06 probes three kinds of
frames with the same reader:

* raw log-mel frames (the input: everything is there, but not necessarily linearly);
* acoustic tokens (SoundStream's codes, lesson 05) and semantic tokens (k-means of w2v-BERT, lesson 06):
  a token is one-hot encoded, so a linear probe on it is a lookup table "this token -> that label", and
  it measures how much the token's *identity* says about the label;
* w2v-BERT's embeddings at every layer, to see where in the network each property lives.

SynthCaps makes the labels exact: every clip's score is known (:func:`mlm_lessons.synth.compose`), so each
frame's melody note and each clip's lead instrument are facts, not annotations.

Shapes: features ``(frames, dim)`` float; labels ``(frames,)`` int, ``-1`` where a frame has no label
(no melody note sounding); such frames are left out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mlm_lessons import synth

PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


# ----------------------------------------------------------------------------------------------------
# Labels from the score


def melody_pitch_classes(score: synth.Score, frame_rate: float, num_frames: int) -> np.ndarray:
    """The pitch class (0 = C ... 11 = B) of the lead note sounding at the middle of each frame.

    Args:
        score: the clip's composition (``synth.compose(attributes, seconds, seed)``).
        frame_rate: frames per second; frame ``t`` covers ``[t, t + 1) / frame_rate`` seconds.
        num_frames: how many frames to label.

    Returns:
        ``(num_frames,)`` int64, ``-1`` where no lead note sounds (a rest; a note's release tail does not
        count). Where notes overlap, the latest onset wins.
    """
    centres = (np.arange(num_frames) + 0.5) / frame_rate
    labels = np.full(num_frames, -1, dtype=np.int64)
    for note in sorted(score.lead, key=lambda note: note.onset_s):
        sounding = (centres >= note.onset_s) & (centres < note.onset_s + note.duration_s)
        labels[sounding] = note.pitch % 12
    return labels


# ----------------------------------------------------------------------------------------------------
# Features from tokens


def one_hot_tokens(tokens, vocab_size: int) -> np.ndarray:
    """Token ids ``(frames,)`` or ``(frames, ...)`` -> ``(frames, streams * vocab_size)`` float32 indicators.

    With several streams per frame (the trailing dimensions: RVQ levels, or two 50 Hz acoustic frames per
    25 Hz frame), each stream gets its own block of ``vocab_size`` columns.
    """
    tokens = np.asarray(tokens.cpu() if isinstance(tokens, torch.Tensor) else tokens)
    tokens = tokens.reshape(len(tokens), -1)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{tokens.min()}, {tokens.max()}]")
    frames, streams = tokens.shape
    features = np.zeros((frames, streams * vocab_size), dtype=np.float32)
    columns = tokens + np.arange(streams) * vocab_size
    features[np.arange(frames)[:, None], columns] = 1.0
    return features


def acoustic_frames(codes, frames: int) -> np.ndarray:
    """Regroup SoundStream codes ``(levels, acoustic_frames)`` into ``frames`` coarser frames.

    The codec runs at a multiple of the semantic rate (50 Hz against 25 Hz): coarse frame ``t`` gets the
    codes of acoustic frames ``t * ratio .. (t + 1) * ratio - 1`` of every level.

    Returns:
        ``(frames, levels, ratio)`` int64; ``[:, :1]`` is the first RVQ level alone.
    """
    codes = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes)
    ratio, remainder = divmod(codes.shape[1], frames)
    if remainder or ratio < 1:
        raise ValueError(f"cannot regroup {codes.shape[1]} acoustic frames into {frames} frames: the second count "
                         "must divide the first")
    return codes.reshape(codes.shape[0], frames, ratio).transpose(1, 0, 2)


# ----------------------------------------------------------------------------------------------------
# The probe


@dataclass(frozen=True)
class ProbeResult:
    """Held-out accuracy of a linear probe, beside the accuracy of always guessing the commonest class."""

    accuracy: float
    chance: float
    num_train: int
    num_test: int


def linear_probe(train_features, train_labels, test_features, test_labels, max_iter: int = 300,
                 standardize: bool = True, seed: int = 0) -> ProbeResult:
    """Fit a multinomial logistic regression on the train frames, score it on the test frames.

    Frames labelled ``-1`` are dropped. ``standardize`` scales each feature to zero mean and unit variance
    on the train frames (leave it off for one-hot tokens, which are already on one scale).

    Raises:
        ValueError: mismatched lengths, or fewer than two classes among the train labels.
    """
    train_features, test_features = np.asarray(train_features, np.float32), np.asarray(test_features, np.float32)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError(f"features and labels differ in length: train {len(train_features)} vs "
                         f"{len(train_labels)}, test {len(test_features)} vs {len(test_labels)}")
    keep_train, keep_test = train_labels >= 0, test_labels >= 0
    train_features, train_labels = train_features[keep_train], train_labels[keep_train]
    test_features, test_labels = test_features[keep_test], test_labels[keep_test]
    classes = np.unique(train_labels)
    if len(classes) < 2 or len(test_labels) == 0:
        raise ValueError(f"a probe needs at least two classes to train on and a labelled test frame; got classes "
                         f"{classes.tolist()} and {len(test_labels)} test frames")
    if standardize:
        scaler = StandardScaler().fit(train_features)
        train_features, test_features = scaler.transform(train_features), scaler.transform(test_features)
    classifier = LogisticRegression(max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():  # a probe stopped at max_iter is still a linear reader; its accuracy stands
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(train_features, train_labels)
    accuracy = float((classifier.predict(test_features) == test_labels).mean())
    commonest = classes[np.argmax([(train_labels == label).sum() for label in classes])]
    return ProbeResult(accuracy, float((test_labels == commonest).mean()), len(train_labels), len(test_labels))


# ----------------------------------------------------------------------------------------------------
# Lesson 06's measurement: every representation of the same frames, and the probe table


@dataclass
class ProbeFrames:
    """The frames of a set of SynthCaps clips at the semantic frame rate, in every representation.

    Frame ``i`` of every array is the same 40 ms of the same clip (``clip[i]``).
    """

    layers: list[np.ndarray]        # w2v-BERT embeddings per layer, each (frames, d_model), layer 0 first
    semantic_tokens: np.ndarray     # (frames,) int64
    acoustic_tokens: np.ndarray     # (frames, codec levels, acoustic frames per frame) int64
    log_mel: np.ndarray             # (frames, n_mels): the mean of the mel frames inside each frame
    pitch_class: np.ndarray         # (frames,) the melody's pitch class, -1 in rests
    instrument: np.ndarray          # (frames,) index into synth.INSTRUMENTS of the clip's lead
    clip: np.ndarray                # (frames,) index of the clip in the records given


def probe_frames(records, tokenizer, codec, clip_seconds: float, batch_size: int = 16) -> ProbeFrames:
    """Embed, tokenise and label ``records`` (:class:`~mlm_lessons.datasets.SynthCapsRecord`).

    Args:
        tokenizer: a :class:`~mlm_lessons.tokenize.SemanticTokenizer` (its encoder gives the layers).
        codec: a :class:`~mlm_lessons.soundstream.SoundStream` at the same sample rate, whose frame rate is
            a multiple of the tokenizer's.
        clip_seconds: the clips' length, to recompose their scores.
        batch_size: clips of equal length embedded together.
    """
    from mlm_lessons.audio import load_audio, log_mel

    encoder = tokenizer.encoder
    if codec.sample_rate != encoder.sample_rate:
        raise ValueError(f"the codec runs at {codec.sample_rate} Hz and the tokenizer at {encoder.sample_rate} Hz")
    records = list(records)
    parts: dict[str, list] = {name: [] for name in ("semantic", "acoustic", "mel", "pitch", "instrument", "clip")}
    layers: list[list[np.ndarray]] = [[] for _ in range(encoder.num_layers + 1)]
    clips = [load_audio(record.path, sample_rate=encoder.sample_rate)[0] for record in records]
    start = 0
    while start < len(clips):
        group = [index for index in range(start, min(start + batch_size, len(clips)))
                 if clips[index].shape[-1] == clips[start].shape[-1]]
        audio = torch.stack([clips[index] for index in group])                      # (group, samples)
        states = encoder.hidden_states(audio)
        frames = states[0].shape[1]
        for layer, state in enumerate(states):
            layers[layer].extend(state.float().cpu().numpy())
        parts["semantic"].extend(tokenizer.tokens_of(states[tokenizer.layer]).cpu().numpy())
        # The codec encodes clip by clip: on a CPU its long convolutions run faster one clip at a time.
        parts["acoustic"].extend(acoustic_frames(codec.encode(clip[:frames * encoder.samples_per_frame])[0], frames)
                                 for clip in audio)
        mel = log_mel(audio, encoder.sample_rate, n_fft=encoder.config.n_fft, hop_length=encoder.hop_length,
                      n_mels=encoder.config.n_mels)[..., :frames * 4]               # (group, n_mels, 4 frames)
        parts["mel"].extend(mel.transpose(1, 2).reshape(len(group), frames, 4, -1).mean(dim=2).numpy())
        for index in group:
            record = records[index]
            score = synth.compose(record.attributes, clip_seconds, record.seed)
            parts["pitch"].append(melody_pitch_classes(score, encoder.frame_rate, frames))
            parts["instrument"].append(np.full(frames, synth.INSTRUMENTS.index(record.attributes.lead)))
            parts["clip"].append(np.full(frames, index))
        start += len(group)
    joined = {name: np.concatenate(values) for name, values in parts.items()}
    return ProbeFrames([np.concatenate(layer) for layer in layers], joined["semantic"], joined["acoustic"],
                       joined["mel"], joined["pitch"], joined["instrument"], joined["clip"])


def probe_table(train: ProbeFrames, test: ProbeFrames, codebook_size: int, num_clusters: int,
                embedding_layer: int | None = None) -> dict[str, dict[str, ProbeResult]]:
    """Probe every representation for the melody's pitch class (what note) and the lead instrument (timbre).

    Rows: raw log-mel; acoustic tokens of the first RVQ level, and of all levels; semantic tokens; and, with
    ``embedding_layer``, the continuous w2v-BERT embeddings of that layer (what k-means started from).

    Returns:
        ``{representation: {"pitch class": ProbeResult, "instrument": ProbeResult}}``.
    """
    levels = train.acoustic_tokens.shape[1]
    rows = {
        "log-mel (continuous)": (train.log_mel, test.log_mel, True),
        "acoustic tokens, level 1": (one_hot_tokens(train.acoustic_tokens[:, :1], codebook_size),
                                     one_hot_tokens(test.acoustic_tokens[:, :1], codebook_size), False),
        f"acoustic tokens, {levels} levels": (one_hot_tokens(train.acoustic_tokens, codebook_size),
                                              one_hot_tokens(test.acoustic_tokens, codebook_size), False),
        "semantic tokens": (one_hot_tokens(train.semantic_tokens, num_clusters),
                            one_hot_tokens(test.semantic_tokens, num_clusters), False),
    }
    if embedding_layer is not None:
        rows[f"w2v-BERT layer {embedding_layer} (continuous)"] = (
            train.layers[embedding_layer], test.layers[embedding_layer], True)
    targets = {"pitch class": (train.pitch_class, test.pitch_class),
               "instrument": (train.instrument, test.instrument)}
    return {name: {target: linear_probe(train_x, train_y, test_x, test_y, standardize=standardize)
                   for target, (train_y, test_y) in targets.items()}
            for name, (train_x, test_x, standardize) in rows.items()}
