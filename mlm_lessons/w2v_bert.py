"""w2v-BERT: a self-supervised audio encoder whose layers hold MusicLM's semantic tokens.

w2v-BERT (Chung et al., 2021) learns from unlabeled audio alone: no text, no labels. It hides stretches of
its input and learns to say what was there. MusicLM takes a w2v-BERT trained on music (600M parameters),
reads the embeddings of one middle layer (the 7th of its masked-prediction module) at 25 Hz and clusters
them with k-means into 1,024 *semantic tokens* (:mod:`mlm_lessons.tokenize`). Lesson 06 builds this file.
Read it top to bottom::

    audio (batch, samples)
      -> log-mel (batch, 4 x frames, n_mels)          100 mel frames per second for 25 Hz tokens
           |                                                       |
           v                                                       v  normalised per band over the clip
      feature encoder: two stride-2 Conv2d, a linear layer    quantiser (lesson 05's VectorQuantizer)
           -> features (batch, frames, d_model)                    -> targets q_t and their code ids
           | masked: some spans replaced by noise                  .
           v                                                       .
      contrastive module (Conformer blocks) -> context c_t ..... contrastive task: pick q_t
           v                                                       .
      masked-prediction module (Conformer blocks) -> logits .... masked prediction: name the code id

1. **Feature encoder** (:class:`FeatureEncoder`): two 2-D convolutions of stride 2 over (time, mel) cut
   the 100 Hz mel frames to 25 Hz and the 64 or 80 mel bands to a quarter; a linear layer makes each frame
   a ``d_model`` vector.
2. **Conformer blocks** (:class:`ConformerBlock`, Gulati et al., 2020): a Transformer block with a
   convolution module added, so each frame sees its neighbours through the convolution (local detail:
   onsets, pitch glides) and the whole clip through attention (repetition, key). Attention is lesson 01's
   :class:`~mlm_lessons.attention.MultiHeadAttention` with rotary, i.e. relative, positions.
3. **Masking** (:func:`span_mask`, as in wav2vec 2.0, Baevski et al., 2020): each frame starts a masked
   span of ``mask_span`` frames with probability ``mask_prob``; 0.065 and 10 hide about half of the frames.
   Masked frames are replaced by random vectors before the contrastive module.
4. **Targets.** Each frame's four mel frames, normalised per mel band over the clip (what this moment adds
   to the clip's average sound), quantised by an EMA k-means codebook. In w2v-BERT the quantiser reads the
   feature encoder's output and learns with the model; at this course's scale that moving target did not
   train (target perplexity swinging between 25 and 60 of 128 codes and the masked-prediction accuracy
   under 6% after 2,000 steps), so, as in HuBERT's first iteration (Hsu et al., 2021), the targets are
   clusters of the spectrogram itself, which hold still while the model learns to predict them.
5. **Contrastive task** (:func:`contrastive_loss`, wav2vec 2.0's): at each masked frame, pick the true
   target out of itself plus ``num_distractors`` targets of other masked frames of the same clip, by the
   cosine similarity of learned projections over a temperature. Distractors from the same clip share its
   instrument and loudness: only knowing *what was played* there tells them apart.
6. **Masked prediction** (:func:`masked_prediction_loss`, BERT's task on audio): from the context vectors,
   more Conformer blocks predict the *code id* of each masked frame's target: a classification over the
   quantiser's codebook, like BERT predicting a hidden word. To name what is hidden, a layer must model
   the music around it.
7. **Both losses summed.** (The quantiser's own commitment loss is left out: nothing before it learns.)

Layers are counted from 1 over both modules (contrastive blocks first); layer 0 is the feature encoder's
output. :meth:`W2VBert.embeddings` returns any layer for a batch of audio.

Shapes: audio ``(batch, samples)``; log-mel ``(batch, mel_frames, n_mels)``; hidden states and embeddings
``(batch, frames, d_model)``; masks ``(batch, frames)`` bool; code ids ``(batch, frames)`` int64.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mlm_lessons.attention import MultiHeadAttention, RotaryEmbedding
from mlm_lessons.audio import AudioError, as_tensor, scaled_log_mel
from mlm_lessons.config import Config, W2VBertConfig
from mlm_lessons.datasets import AudioCrops
from mlm_lessons.quantize import VectorQuantizer
from mlm_lessons.train import (Trainer, check_state_dict_matches, half_state_dict, load_checkpoint,
                               load_half_state_dict, save_atomically, saved_config_section)

W2V_BERT_FORMAT = "mlm_lessons.w2v_bert/1"
SUBSAMPLING = 4                # mel frames per semantic frame: two stride-2 convolutions
MAX_FRAMES = 8192              # rotary positions precomputed: 5.5 minutes at 25 Hz
# ----------------------------------------------------------------------------------------------------
# 1. Feature encoder


def frame_log_mel(audio: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                  frames: int) -> torch.Tensor:
    """``(batch, samples)`` -> ``(batch, 4 * frames, n_mels)``: :func:`~mlm_lessons.audio.scaled_log_mel` (silence
    0, a full-scale tone about 1.6), time first, cut to the mel frames of ``frames`` whole encoder frames."""
    spectrogram = scaled_log_mel(audio, sample_rate, n_fft, hop_length, n_mels)
    return spectrogram[..., :SUBSAMPLING * frames].transpose(1, 2)


class FeatureEncoder(nn.Module):
    """Scaled log-mel ``(batch, 4 * frames, n_mels)`` (:func:`frame_log_mel`) -> features ``(batch, frames, d_model)``.

    Two ``3 x 3`` convolutions of stride 2 over (time, mel), each followed by a GELU, then a linear layer
    on the flattened ``channels x n_mels / 4`` values of each frame and a LayerNorm (so that features and
    the unit-variance noise that replaces masked frames have the same scale).
    """

    def __init__(self, n_mels: int, channels: int, d_model: int):
        super().__init__()
        self.convolutions = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GELU())
        reduced_mels = ((n_mels + 1) // 2 + 1) // 2
        self.projection = nn.Linear(channels * reduced_mels, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, mel_frames: torch.Tensor) -> torch.Tensor:
        x = self.convolutions(mel_frames.unsqueeze(1))            # (batch, channels, frames, mels / 4)
        x = x.permute(0, 2, 1, 3).flatten(2)                      # (batch, frames, channels * mels / 4)
        return self.norm(self.projection(x))


# ----------------------------------------------------------------------------------------------------
# 2. The Conformer block


class ConformerFeedForward(nn.Module):
    """LayerNorm, ``d_model -> 4 d_model``, Swish (SiLU), dropout, back to ``d_model``, dropout."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, 4 * d_model), nn.SiLU(),
                                 nn.Dropout(dropout), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvolutionModule(nn.Module):
    """The Conformer's convolution module, ``(batch, frames, d_model)`` in and out.

    LayerNorm; a pointwise convolution to ``2 d_model`` channels and a GLU (half the channels gate the
    other half); a depthwise convolution over time (one ``kernel_size`` filter per channel: cheap local
    context); a normalisation, Swish, a pointwise convolution and dropout. Gulati et al. normalise with
    BatchNorm; we use a LayerNorm over channels, which does not depend on the batch (so a clip's embedding
    does not depend on what it is batched with, and DDP needs no synchronised statistics).

    ``causal=True`` pads the depthwise convolution on the left only, so frame ``t`` sees ``t - k + 1 .. t``.
    """

    def __init__(self, d_model: int, kernel_size: int, dropout: float, causal: bool = False):
        super().__init__()
        if not causal and kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel must be odd for a centred convolution, got {kernel_size}")
        self.causal, self.kernel_size = causal, kernel_size
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, groups=d_model)
        self.depthwise_norm = nn.LayerNorm(d_model)
        self.pointwise_out = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pointwise_in(self.norm(x).transpose(1, 2)), dim=1)    # (batch, d_model, frames)
        left = self.kernel_size - 1 if self.causal else (self.kernel_size - 1) // 2
        y = self.depthwise(F.pad(y, (left, self.kernel_size - 1 - left)))
        y = F.silu(self.depthwise_norm(y.transpose(1, 2))).transpose(1, 2)
        return self.dropout(self.pointwise_out(y).transpose(1, 2))


class ConformerBlock(nn.Module):
    """One Conformer block (Gulati et al., 2020), ``(batch, frames, d_model)`` in and out::

        x = x + 1/2 FeedForward(x)                 a "macaron": the feed-forward split in two halves
        x = x + SelfAttention(LayerNorm(x))        the whole clip, relative (rotary) positions
        x = x + Convolution(x)                     the neighbourhood
        x = x + 1/2 FeedForward(x)
        x = LayerNorm(x)

    Args:
        causal: frame ``t`` sees only frames ``<= t`` (causal attention, left-padded convolution), for a
            streaming encoder; w2v-BERT itself is bidirectional (``False``).
    """

    def __init__(self, d_model: int, n_heads: int, conv_kernel: int, dropout: float = 0.0, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.feed_forward_in = ConformerFeedForward(d_model, dropout)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = MultiHeadAttention(d_model, n_heads, dropout)
        self.convolution = ConvolutionModule(d_model, conv_kernel, dropout, causal)
        self.feed_forward_out = ConformerFeedForward(d_model, dropout)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, rotary: RotaryEmbedding | None = None) -> torch.Tensor:
        x = x + 0.5 * self.feed_forward_in(x)
        attended, _ = self.attention(self.attention_norm(x), is_causal=self.causal, rotary=rotary)
        x = x + attended
        x = x + self.convolution(x)
        x = x + 0.5 * self.feed_forward_out(x)
        return self.final_norm(x)


# ----------------------------------------------------------------------------------------------------
# 3. Masking and distractors


def span_mask(batch: int, frames: int, mask_prob: float, span: int,
              generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """wav2vec 2.0's masking: ``(batch, frames)`` bool, ``True`` where a frame is hidden.

    Each frame that can start a whole span (``0 .. frames - span``) does so with probability
    ``mask_prob``; each start hides ``span`` frames; spans may overlap. The expected hidden fraction is
    about ``1 - (1 - mask_prob)^span`` (0.49 for 0.065 and 10). Every example gets at least one span
    (drawn uniformly when none started), so there is always something to predict; a clip shorter than
    ``span`` frames is hidden entirely.
    """
    if frames < 1 or span < 1 or not 0.0 <= mask_prob <= 1.0:
        raise ValueError(f"need frames >= 1, span >= 1 and mask_prob in [0, 1]; got {frames}, {span}, {mask_prob}")
    starts_allowed = max(1, frames - span + 1)
    starts = torch.rand(batch, starts_allowed, generator=generator, device=device) < mask_prob
    forced = torch.randint(starts_allowed, (batch,), generator=generator, device=device)
    none = ~starts.any(dim=1)
    starts[none, forced[none]] = True
    all_starts = F.pad(starts, (0, frames - starts_allowed))                       # (batch, frames)
    # Frame t is hidden when a span started within the last `span` frames: count starts with a running sum.
    started = all_starts.long().cumsum(dim=1)                                       # starts at <= t
    started_earlier = F.pad(started, (span, 0))[:, :frames]                         # starts at <= t - span
    return (started - started_earlier) > 0


def sample_distractors(mask: torch.Tensor, num_distractors: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """For each masked frame, ``num_distractors`` *other* masked frames of the same example.

    Masked frames are numbered in row-major order (``mask.nonzero()``'s order: example, then frame). For
    the ``i``-th of them, distractors are drawn uniformly with replacement among the masked frames of its
    own example, never ``i`` itself (so the true target is never also a negative).

    Args:
        mask: ``(batch, frames)`` bool; every example with a masked frame must have at least two.

    Returns:
        ``(num_masked, num_distractors)`` int64 indices into the masked frames.
    """
    per_example = mask.sum(dim=1)                                                    # (batch,)
    if ((per_example == 1)).any():
        raise ValueError("an example has a single masked frame: there is nothing to contrast it with; "
                         "mask at least two frames per example (longer crops or a longer mask_span)")
    example = mask.nonzero()[:, 0]                                                   # (num_masked,)
    first = per_example.cumsum(0) - per_example                                      # index of each example's first
    local = torch.arange(len(example), device=mask.device) - first[example]         # rank within its example
    others = (per_example[example] - 1)[:, None]                                     # choices per target
    draw = torch.rand(len(example), num_distractors, generator=generator, device=mask.device)
    choice = (draw * others).long().minimum(others - 1)
    choice = choice + (choice >= local[:, None]).long()                              # skip the target itself
    return first[example][:, None] + choice


# ----------------------------------------------------------------------------------------------------
# 4-5. The two objectives


def contrastive_loss(context: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                     temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """wav2vec 2.0's contrastive loss, averaged over masked frames::

        loss_t = -log  exp(cos(c_t, q_t) / T)  /  sum over q in {q_t} + distractors of  exp(cos(c_t, q) / T)

    Args:
        context: ``(n, dim)`` the model's context vectors at the masked frames.
        positives: ``(n, dim)`` each frame's true quantised target.
        negatives: ``(n, num_distractors, dim)`` targets of other masked frames.
        temperature: ``T``; small values sharpen the softmax (0.1 in wav2vec 2.0).

    A distractor quantised to the same code as the positive is the same vector: it cannot be told apart and
    keeps the loss above zero. wav2vec 2.0 leaves such distractors out; we keep them, because leaving them out
    has a degenerate optimum here: an encoder that maps every frame to one code would have no distractors
    left and a loss of zero. Kept in, that collapse costs the most (``log(1 + num_distractors)``), so the loss
    itself asks for frames that differ to get codes that differ (wav2vec 2.0 adds a "diversity" loss instead).

    Returns:
        ``(loss, accuracy)``: the mean loss and the fraction of frames whose positive scores highest.
    """
    candidates = torch.cat([positives.unsqueeze(1), negatives], dim=1)                # (n, 1 + K, dim)
    logits = F.cosine_similarity(context.float().unsqueeze(1), candidates.float(), dim=-1) / temperature
    target = torch.zeros(len(logits), dtype=torch.long, device=logits.device)       # the positive is column 0
    loss = F.cross_entropy(logits, target)
    accuracy = (logits.argmax(dim=1) == 0).float().mean()
    return loss, accuracy


def masked_prediction_loss(logits: torch.Tensor, target_codes: torch.Tensor, mask: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's loss on audio: cross-entropy of the target code ids, at masked frames only.

    Args:
        logits: ``(batch, frames, codebook_size)``.
        target_codes: ``(batch, frames)`` int64, the quantiser's code of each (unmasked) frame.
        mask: ``(batch, frames)`` bool, the hidden frames.

    Returns:
        ``(loss, accuracy)`` over the masked frames.
    """
    chosen = logits[mask].float()                                                   # (n, codebook_size)
    targets = target_codes[mask]
    return F.cross_entropy(chosen, targets), (chosen.argmax(dim=-1) == targets).float().mean()


# ----------------------------------------------------------------------------------------------------
# 6. The model


@dataclass
class W2VBertOutput:
    """What :meth:`W2VBert.forward` returns: the summed ``loss`` to minimise, its parts and metrics."""

    loss: torch.Tensor
    contrastive_loss: torch.Tensor
    mlm_loss: torch.Tensor
    mask: torch.Tensor                  # (batch, frames) bool
    target_codes: torch.Tensor          # (batch, frames) int64
    metrics: dict[str, torch.Tensor]


class W2VBert(nn.Module):
    """Feature encoder, quantiser, contrastive module and masked-prediction module (module docstring).

    Args:
        sample_rate: the audio rate in Hz it reads.
        frame_rate: embeddings per second; the mel hop is ``sample_rate / (4 * frame_rate)`` samples and must
            be a whole number.
        config: sizes and training settings (:class:`~mlm_lessons.config.W2VBertConfig`).
        causal: build causal Conformer blocks (a streaming variant; w2v-BERT is not causal).

    Build it from a preset with :meth:`from_config`; write and read it with :meth:`save` / :meth:`load`.
    """

    def __init__(self, sample_rate: int, frame_rate: int, config: W2VBertConfig = W2VBertConfig(),
                 causal: bool = False, seed: int = 0):
        super().__init__()
        hop, remainder = divmod(sample_rate, SUBSAMPLING * frame_rate)
        if remainder or hop < 1:
            raise ValueError(f"{sample_rate} Hz is not a whole number of mel hops at {frame_rate} frames per "
                             f"second x {SUBSAMPLING}; choose a frame rate that divides sample_rate / 4")
        if config.d_model % config.n_heads or (config.d_model // config.n_heads) % 2:
            raise ValueError(f"d_model={config.d_model} must split into n_heads={config.n_heads} heads of even "
                             "size (rotary positions rotate pairs)")
        if not 0 <= config.token_layer <= config.contrastive_layers + config.mlm_layers:
            raise ValueError(f"token_layer={config.token_layer} is not a layer of this model (0 to "
                             f"{config.contrastive_layers + config.mlm_layers})")
        self.sample_rate, self.frame_rate, self.hop_length = sample_rate, frame_rate, hop
        self.config, self.causal = config, causal
        self.feature_encoder = FeatureEncoder(config.n_mels, config.conv_channels, config.d_model)
        self.target_dim = SUBSAMPLING * config.n_mels          # a target: the 4 mel frames of one frame
        self.quantizer = VectorQuantizer(self.target_dim, config.target_codebook_size, dead_code_steps=20,
                                         seed=seed)
        self.input_projection = nn.Linear(config.d_model, config.d_model)
        self.rotary = RotaryEmbedding(config.d_model // config.n_heads, MAX_FRAMES)
        self.contrastive_blocks = nn.ModuleList(
            ConformerBlock(config.d_model, config.n_heads, config.conv_kernel, config.dropout, causal)
            for _ in range(config.contrastive_layers))
        # The contrastive task compares both sides in one learned space, as wav2vec 2.0 does: raw spectra are
        # all alike in cosine (every one is mostly "loud low bands"), a learned projection can tell them apart.
        self.context_projection = nn.Linear(config.d_model, config.d_model)
        self.target_projection = nn.Linear(self.target_dim, config.d_model)
        self.mlm_blocks = nn.ModuleList(
            ConformerBlock(config.d_model, config.n_heads, config.conv_kernel, config.dropout, causal)
            for _ in range(config.mlm_layers))
        self.mlm_head = nn.Linear(config.d_model, config.target_codebook_size)

    @classmethod
    def from_config(cls, config: Config) -> "W2VBert":
        """The encoder a preset describes: ``data.sample_rate``, ``tokens.semantic_frame_rate``, ``w2v_bert``."""
        return cls(config.data.sample_rate, config.tokens.semantic_frame_rate, config.w2v_bert,
                   seed=config.train.seed)

    @property
    def num_layers(self) -> int:
        """Conformer blocks in all: valid layers for :meth:`embeddings` are ``0 .. num_layers``."""
        return len(self.contrastive_blocks) + len(self.mlm_blocks)

    @property
    def samples_per_frame(self) -> int:
        return SUBSAMPLING * self.hop_length

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    # -- audio in ------------------------------------------------------------------------------------

    def _check_audio(self, audio, sample_rate: int | None) -> torch.Tensor:
        """``(samples,)`` or ``(batch, samples)`` -> ``(batch, samples)`` on the model's device."""
        audio = as_tensor(audio)
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise AudioError(f"this w2v-BERT reads {self.sample_rate} Hz audio but got {sample_rate} Hz; convert "
                             f"it with mlm_lessons.audio.resample(audio, {sample_rate}, {self.sample_rate})")
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise AudioError(f"w2v-BERT takes audio shaped (samples,) or (batch, samples), got shape "
                             f"{tuple(audio.shape)}; mix stereo to mono with mlm_lessons.audio.to_mono")
        if audio.shape[-1] < self.samples_per_frame:
            raise AudioError(f"{audio.shape[-1]} samples is shorter than one frame ({self.samples_per_frame} "
                             f"samples, {1000 / self.frame_rate:g} ms at {self.sample_rate} Hz); pass longer audio")
        if not torch.isfinite(audio).all():
            raise AudioError(f"the audio contains {int((~torch.isfinite(audio)).sum())} NaN or infinite samples")
        if audio.shape[-1] // self.samples_per_frame > MAX_FRAMES:
            raise AudioError(f"{audio.shape[-1] / self.sample_rate:.0f} s is longer than the {MAX_FRAMES} frames "
                             "this encoder handles at once; embed it in windows")
        return audio.to(self.mlm_head.weight.device)

    def mel_frames(self, audio: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> scaled log-mel ``(batch, 4 * frames, n_mels)``, ``frames = samples //
        samples_per_frame`` (samples after the last whole frame are ignored)."""
        return frame_log_mel(audio, self.sample_rate, self.config.n_fft, self.hop_length, self.config.n_mels,
                             audio.shape[-1] // self.samples_per_frame)

    def target_vectors(self, mel_frames: torch.Tensor) -> torch.Tensor:
        """Scaled log-mel ``(batch, 4 * frames, n_mels)`` -> what the quantiser reads, ``(batch, frames,
        4 * n_mels)``: each frame's four mel frames side by side, after each mel band is normalised to zero mean
        and unit variance over the clip (cepstral mean and variance normalisation, a staple of speech
        recognition). What is left is how each moment *differs* from the clip's average sound: the notes and
        onsets, not the clip's overall timbre, which every frame of the clip shares."""
        batch, mel_frames_count, n_mels = mel_frames.shape
        mean = mel_frames.mean(dim=1, keepdim=True)
        std = mel_frames.std(dim=1, keepdim=True, unbiased=False)
        normalised = (mel_frames - mean) / (std + 1e-2)
        return normalised.reshape(batch, mel_frames_count // SUBSAMPLING, SUBSAMPLING * n_mels)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> features ``(batch, frames, d_model)``: layer 0."""
        return self.feature_encoder(self.mel_frames(audio))

    def _blocks(self, x: torch.Tensor, blocks: nn.ModuleList, states: list[torch.Tensor] | None
                ) -> torch.Tensor:
        for block in blocks:
            x = block(x, rotary=self.rotary)
            if states is not None:
                states.append(x)
        return x

    # -- training ------------------------------------------------------------------------------------

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> W2VBertOutput:
        """Both self-supervised losses on a batch of audio ``(batch, samples)``.

        Args:
            mask: ``(batch, frames)`` bool frames to hide; default :func:`span_mask` with the config's
                ``mask_prob`` and ``mask_span``. Random draws (mask, noise, distractors) use torch's global
                generator, which the trainer seeds and checkpoints.
        """
        audio = self._check_audio(audio, None)
        mel_frames = self.mel_frames(audio)                                         # (batch, 4 frames, n_mels)
        features = self.feature_encoder(mel_frames)                                 # (batch, frames, d_model)
        batch, frames, _ = features.shape
        if frames < 2:
            raise AudioError(f"training needs at least 2 frames per example ({2 * self.samples_per_frame} "
                             "samples): a masked frame must be contrasted with another")
        config = self.config
        if mask is None:
            mask = span_mask(batch, frames, config.mask_prob, config.mask_span, device=features.device)
        elif mask.shape != (batch, frames) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool (batch, frames) = {(batch, frames)}, got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        targets = self.quantizer(self.target_vectors(mel_frames))                   # never masked
        noise = torch.randn(features.shape, device=features.device, dtype=features.dtype)
        masked_features = torch.where(mask[..., None], noise, features)
        context = self._blocks(self.input_projection(masked_features), self.contrastive_blocks, None)
        distractors = sample_distractors(mask, config.num_distractors)              # (n, K) into masked rows
        masked_targets = self.target_projection(targets.quantized[mask])
        contrastive, contrastive_accuracy = contrastive_loss(
            self.context_projection(context[mask]), masked_targets, masked_targets[distractors], config.temperature)
        logits = self.mlm_head(self._blocks(context, self.mlm_blocks, None))
        mlm, mlm_accuracy = masked_prediction_loss(logits, targets.codes, mask)
        loss = contrastive + mlm
        metrics = {"contrastive": contrastive.detach(), "masked_prediction": mlm.detach(),
                   "contrastive_accuracy": contrastive_accuracy, "mlm_accuracy": mlm_accuracy,
                   "masked_fraction": mask.float().mean(), "target_perplexity": targets.metrics["perplexity"],
                   "target_usage": targets.metrics["usage"]}
        return W2VBertOutput(loss, contrastive, mlm, mask, targets.codes, metrics)

    # -- embeddings out ------------------------------------------------------------------------------

    def _check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not -self.num_layers - 1 <= layer <= self.num_layers:
            raise ValueError(f"layer must be an int from 0 (the feature encoder) to {self.num_layers} (the last "
                             f"Conformer block), or negative from the end; got {layer!r}")
        return layer % (self.num_layers + 1)

    @torch.no_grad()
    def hidden_states(self, audio, sample_rate: int | None = None, up_to: int | None = None) -> list[torch.Tensor]:
        """Every layer's embeddings of unmasked audio: a list of ``num_layers + 1`` tensors ``(batch, frames,
        d_model)`` (or of ``up_to + 1``, stopping early), layer 0 first."""
        audio = self._check_audio(audio, sample_rate)
        states = [self.features(audio)]
        last = self.num_layers if up_to is None else self._check_layer(up_to)
        x = self.input_projection(states[0])
        for block in [*self.contrastive_blocks, *self.mlm_blocks][:last]:
            x = block(x, rotary=self.rotary)
            states.append(x)
        return states

    @torch.no_grad()
    def embeddings(self, audio, layer: int | None = None, sample_rate: int | None = None) -> torch.Tensor:
        """One layer's embeddings ``(batch, frames, d_model)`` of audio ``(samples,)`` or ``(batch, samples)``.

        Args:
            layer: ``0`` the feature encoder, ``1 .. num_layers`` a Conformer block's output, negative from
                the end; default the config's ``token_layer`` (the semantic tokens' layer).
            sample_rate: the audio's rate, checked against the model's when given.
        """
        layer = self._check_layer(self.config.token_layer if layer is None else layer)
        return self.hidden_states(audio, sample_rate, up_to=layer)[layer]

    # -- files ---------------------------------------------------------------------------------------

    def config_dict(self) -> dict:
        """What :meth:`load` needs to rebuild this encoder."""
        return {"sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "causal": self.causal,
                "w2v_bert": dataclasses.asdict(self.config)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the encoder alone (no optimiser state) atomically, weights in float16."""
        save_atomically({"format": W2V_BERT_FORMAT, "config": self.config_dict(), "model": half_state_dict(self, keep_float32=("quantizer.",))},
                        path)
        return Path(path)

    @classmethod
    def from_payload(cls, payload: dict, source: str) -> "W2VBert":
        """Rebuild from a dict written by :meth:`save` (also the ``"encoder"`` entry of a tokenizer file)."""
        settings = dict(payload["config"])
        model = cls(config=saved_config_section(W2VBertConfig, settings.pop("w2v_bert"), "w2v-BERT"), **settings)
        load_half_state_dict(model, payload["model"], source=source)
        return model.eval()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "W2VBert":
        """Rebuild an encoder written by :meth:`save`, or from a :class:`~mlm_lessons.train.Trainer`
        checkpoint of one (in eval mode)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no w2v-BERT checkpoint at {path}")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(payload, dict) and payload.get("format") == W2V_BERT_FORMAT:
            return cls.from_payload(payload, source=f"w2v-BERT checkpoint {path}")
        checkpoint = load_checkpoint(path)
        model = cls.from_config(Config.from_dict(checkpoint["config"]))
        check_state_dict_matches(model, checkpoint["model"], source=f"w2v-BERT checkpoint {path}")
        model.load_state_dict(checkpoint["model"])
        return model.eval()


# ----------------------------------------------------------------------------------------------------
# Training on a folder of clips


def w2v_bert_train_config(config: Config, steps: int | None = None) -> Config:
    """``config`` with its ``train`` section set for w2v-BERT: its own batch size, learning rate and warm-up,
    and ``steps`` if given."""
    section = config.w2v_bert
    train = dataclasses.replace(config.train, batch_size=section.batch_size, learning_rate=section.learning_rate,
                                warmup_steps=section.warmup_steps,
                                max_steps=steps if steps is not None else config.train.max_steps)
    return dataclasses.replace(config, train=train)


def w2v_bert_objective(model: W2VBert, audio: torch.Tensor):
    """The trainer's ``loss_fn``: ``(loss, metrics)`` of :meth:`W2VBert.forward` on ``(batch, samples)``."""
    output = model(audio)
    return output.loss, output.metrics


def train_w2v_bert(config: Config, clips: Sequence[torch.Tensor], out_dir: str | os.PathLike | None = None, *,
                   steps: int | None = None, resume: bool = True, progress: bool = True):
    """Train a w2v-BERT on random crops of ``clips`` with the package's :class:`~mlm_lessons.train.Trainer`.

    Args:
        config: a preset (``data``, ``tokens`` and ``w2v_bert`` shape the model; see
            :func:`w2v_bert_train_config` for what is taken from ``train``).
        clips: ``(samples,)`` waveforms at ``config.data.sample_rate``, each at least one crop long.
        out_dir: where the trainer keeps ``last.pt``; with ``resume`` an interrupted run continues there.
        steps: optimiser steps (default: ``config.train.max_steps``).

    Returns:
        ``(model, history)``: the trained :class:`W2VBert` in eval mode and the trainer's loss history.
    """
    config = w2v_bert_train_config(config, steps)
    torch.manual_seed(config.train.seed)
    model = W2VBert.from_config(config)
    crop_samples = max(2, round(config.w2v_bert.crop_seconds * model.frame_rate)) * model.samples_per_frame
    crops_per_clip = max(1, -(-config.train.batch_size // len(clips)))   # at least one full batch per epoch
    data = AudioCrops(clips, crop_samples, crops_per_clip)
    trainer = Trainer(model, config, data, w2v_bert_objective, out_dir=out_dir,
                      resume=resume and out_dir is not None, progress=progress)
    history = trainer.fit()
    return model.eval(), history
