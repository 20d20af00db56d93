"""MuLan: music and text in one embedding space.

MuLan (Huang et al., 2022) is how MusicLM listens to a prompt. It is a *pair* of encoders, one for audio and
one for text, trained on (clip, description) pairs so that a clip and its description land close together
in one shared space, and a clip and someone else's description far apart. MusicLM trains its stages on the
MuLan embedding of the *audio* (no captions needed for its 280,000 hours of music) and generates from the
MuLan embedding of the *text* prompt: the two are interchangeable because they live in the same space.
Lesson 07 builds this file. Read it top to bottom:

1. **Text in** (:class:`CaptionTokenizer`): a WordPiece subword vocabulary (as BERT's), trained with the
   ``tokenizers`` library on the captions. A word never seen in training is split into known pieces
   ("harpsichord" -> "harp", "##si", ...), never an error; only a character never seen becomes ``[UNK]``.
2. **Audio tower** (:class:`AudioTower`): a small ResNet over the log-mel spectrogram (the paper's is a
   ResNet-50), averaged over time: one vector per clip.
3. **Text tower** (:class:`TextTower`): lesson 01's :class:`~mlm_lessons.transformer.TransformerEncoder`
   over the subwords, averaged over the caption's real tokens.
4. **One space**: each tower ends in a linear projection to ``mulan_dim`` and the vectors are normalised to
   unit length, so similarity is a cosine.
5. **Symmetric InfoNCE** (:func:`info_nce`, as in CLIP): in a batch of ``N`` pairs, the similarity matrix
   ``S = scale * A T^T`` should be largest on its diagonal; the loss is the cross-entropy of each row
   (audio -> which text?) and of each column (text -> which audio?), averaged. ``scale = 1 / temperature`` is
   learned. Every other pair in the batch is a negative, so bigger batches are harder and teach more: under
   DDP the embeddings of every process are gathered, with their gradients, so the loss sees the global batch.
6. **Using it**: :func:`recall_at_k` for retrieval, :func:`zero_shot_classify` for tagging with prompts such
   as "a flute melody" (no classifier is trained: the text tower *is* the classifier).
7. **MuLan tokens**: lesson 05's :class:`~mlm_lessons.quantize.ResidualVQ` over the embeddings (the paper: 12
   levels of 1,024 codes), fitted on *audio* embeddings by :meth:`MuLan.fit_token_quantizer`.
   :meth:`MuLan.audio_tokens` are what the stages train on; :meth:`MuLan.text_tokens`, what they are given at
   generation time, are the same codebook's nearest codes to a caption. Audio and text embeddings form two
   separate clouds in the shared space (the "modality gap"): a codebook fitted on both gives captions codes
   that no clip ever gets, which a stage trained on audio tokens would never have seen (measured in lesson 07).

Shapes: audio ``(batch, samples)``; log-mel ``(batch, n_mels, frames)``; token ids ``(batch, length)``;
embeddings ``(batch, mulan_dim)``, unit length.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import numpy as np
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import nn
from torch.utils.data import Dataset

from mlm_lessons import captions as caption_writer
from mlm_lessons.atomic import atomic_path
from mlm_lessons.audio import AudioError, as_tensor, scaled_log_mel
from mlm_lessons.config import AudioFeatureConfig, Config, MuLanConfig
from mlm_lessons.quantize import ResidualVQ
from mlm_lessons.train import (Trainer, half_state_dict, load_half_state_dict, load_tagged_file, save_atomically,
                               saved_config_section)
from mlm_lessons.transformer import TransformerEncoder

MULAN_FORMAT = "mlm_lessons.mulan/1"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


# ----------------------------------------------------------------------------------------------------
# 1. Text in: a subword tokenizer trained on the captions


class CaptionTokenizer:
    """WordPiece subwords (lower-cased, accents stripped, as BERT's uncased vocabulary), wrapped in ``[CLS]``
    ... ``[SEP]``. Build one with :meth:`train`; it travels inside a MuLan checkpoint as JSON."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.pad_id, self.unk_id = tokenizer.token_to_id("[PAD]"), tokenizer.token_to_id("[UNK]")
        if self.pad_id is None or self.unk_id is None:
            raise ValueError(f"not a caption tokenizer: its vocabulary lacks the special tokens {SPECIAL_TOKENS}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1000) -> "CaptionTokenizer":
        """Learn a WordPiece vocabulary of at most ``vocab_size`` subwords from ``texts``.

        Not bit-reproducible across processes: the ``tokenizers`` library breaks ties between equally frequent
        merges in hash order. Train it once and keep it with the model (MuLan checkpoints store it); under
        DDP, train it on one process and hand the others its :meth:`to_str`.
        """
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        tokenizer.train_from_iterator(list(texts), trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def tokenize(self, text: str) -> list[str]:
        """The subwords of one caption, ``[CLS]`` and ``[SEP]`` included."""
        return self.tokenizer.encode(_check_text(text)).tokens

    def encode(self, texts: str | Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> ``(ids, key_is_real)``, both ``(batch, length)`` (``length <= max_len``), padded with
        ``[PAD]``; ``key_is_real`` is ``False`` at padding.

        A caption longer than ``max_len`` subwords is cut to its first ``max_len - 1`` and ``[SEP]`` (a
        ``UserWarning`` says how many were cut): MuLan's text tower reads a bounded length.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("no captions to encode")
        encodings = [self.tokenizer.encode(_check_text(text)).ids for text in texts]
        cut = [index for index, ids in enumerate(encodings) if len(ids) > max_len]
        if cut:
            warnings.warn(f"{len(cut)} caption(s) longer than {max_len} subword tokens were truncated "
                          f"(the first is caption {cut[0]}, {len(encodings[cut[0]])} tokens)", stacklevel=2)
            for index in cut:
                encodings[index] = encodings[index][:max_len - 1] + encodings[index][-1:]
        length = max(len(ids) for ids in encodings)
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        for row, encoding in enumerate(encodings):
            ids[row, :len(encoding)] = torch.tensor(encoding)
        return ids, ids != self.pad_id

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids back to text (special tokens dropped, subwords joined)."""
        return self.tokenizer.decode(list(ids))

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_str(cls, text: str) -> "CaptionTokenizer":
        return cls(Tokenizer.from_str(text))


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"a caption must be a str, got {type(text).__name__}; for token ids use the text tower "
                        "directly")
    if not text.strip():
        raise ValueError("an empty caption describes nothing; pass at least one word")
    return text


# ----------------------------------------------------------------------------------------------------
# 2-3. The towers


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and a skip connection; ``stride`` 2 halves time and frequency."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, out_channels), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, out_channels), out_channels)
        self.skip = (nn.Identity() if stride == 1 and in_channels == out_channels else
                     nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.skip(x))


class AudioTower(nn.Module):
    """Scaled log-mel ``(batch, n_mels, frames)`` -> ``(batch, out_dim)``: a ResNet, then the mean over time (any
    clip length gives one vector), then a linear projection of every channel at every remaining frequency band.

    The frequency axis is kept to the end, not averaged away as in an image ResNet: *where* in the spectrum the
    energy sits is much of what tells a flute from a clarinet. GroupNorm rather than the ResNet's BatchNorm: a
    clip's embedding must not depend on its batch mates, and DDP then needs no synchronised statistics.
    """

    def __init__(self, channels: Sequence[int], out_dim: int, n_mels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, padding=1, bias=False),
                                  nn.GroupNorm(min(8, channels[0]), channels[0]), nn.ReLU())
        widths = [channels[0], *channels]
        self.stages = nn.Sequential(*(ResidualBlock(widths[index], widths[index + 1], stride=2)
                                      for index in range(len(channels))))
        bands = n_mels
        for _ in channels:
            bands = (bands - 1) // 2 + 1            # each stride-2 stage (padding 1) halves, rounding up
        self.projection = nn.Linear(channels[-1] * bands, out_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(mel.unsqueeze(1)))                # (batch, channels, bands, frames / 2^k)
        return self.projection(x.mean(dim=3).flatten(1))            # (batch, channels * bands) -> (batch, out_dim)


class TextTower(nn.Module):
    """Token ids ``(batch, length)`` -> ``(batch, out_dim)``: a Transformer encoder, the mean over real tokens,
    a linear projection."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, n_layers: int, n_heads: int, out_dim: int):
        super().__init__()
        self.encoder = TransformerEncoder(vocab_size, max_len, d_model, n_layers, n_heads)
        self.projection = nn.Linear(d_model, out_dim)

    def forward(self, ids: torch.Tensor, key_is_real: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(ids, key_is_real)                     # (batch, length, d_model)
        weights = key_is_real.unsqueeze(-1).to(hidden.dtype)
        return self.projection((hidden * weights).sum(dim=1) / weights.sum(dim=1))


# ----------------------------------------------------------------------------------------------------
# 4-5. One space, one loss


def _gather_with_gradients(x: torch.Tensor) -> torch.Tensor:
    """``(local_batch, dim)`` -> ``(global_batch, dim)``, rank-major; gradients flow back to every rank's part.

    Each rank computes the same global loss; the all-gather's backward sums the ranks' gradients into each
    part, and DDP's averaging of parameter gradients then gives exactly the gradient of one process that saw
    the whole global batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def info_nce(audio_embeddings: torch.Tensor, text_embeddings: torch.Tensor, logit_scale: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Symmetric InfoNCE over a batch of matching pairs (pair ``i`` = audio ``i`` with text ``i``).

    ``logits = exp(logit_scale) * A @ T^T`` for unit-length ``A``, ``T`` ``(batch, dim)``; the loss is the mean
    of the row-wise cross-entropy (each clip must pick its own caption) and the column-wise one (each caption
    its own clip), both with the diagonal as the target. Under DDP the embeddings of all ranks are gathered
    first, so the batch is the global batch.

    Returns:
        ``(loss, metrics)``: metrics are the batch's top-1 accuracies in both directions and the temperature.
    """
    audio_embeddings = _gather_with_gradients(audio_embeddings)
    text_embeddings = _gather_with_gradients(text_embeddings)
    if audio_embeddings.shape != text_embeddings.shape or audio_embeddings.dim() != 2:
        raise ValueError(f"need (batch, dim) audio and text embeddings of the same shape, got "
                         f"{tuple(audio_embeddings.shape)} and {tuple(text_embeddings.shape)}")
    if len(audio_embeddings) < 2:
        raise ValueError("the contrastive loss needs at least 2 pairs in a batch: with one, there is no other "
                         "caption to tell it from (and the loss is 0 whatever the model does)")
    logits = logit_scale.exp() * audio_embeddings.float() @ text_embeddings.float().T          # (batch, batch)
    targets = torch.arange(len(logits), device=logits.device)
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    with torch.no_grad():
        metrics = {"audio_to_text_accuracy": (logits.argmax(dim=1) == targets).float().mean(),
                   "text_to_audio_accuracy": (logits.argmax(dim=0) == targets).float().mean(),
                   "temperature": (-logit_scale).exp()}
    return loss, metrics


class MuLan(nn.Module):
    """The two towers and a learned temperature (module docstring).

    Args:
        tokenizer: the :class:`CaptionTokenizer` the text tower reads.
        sample_rate: the audio rate the audio tower reads, in Hz.
        features: the log-mel front end (:class:`~mlm_lessons.config.AudioFeatureConfig`).
        config: tower sizes and training settings (:class:`~mlm_lessons.config.MuLanConfig`).
        embed_dim: the shared space's dimension (``tokens.mulan_dim``).
    """

    MAX_LOGIT_SCALE = math.log(100.0)   # as CLIP: a temperature below 0.01 makes training unstable

    def __init__(self, tokenizer: CaptionTokenizer, sample_rate: int, features: AudioFeatureConfig,
                 config: MuLanConfig, embed_dim: int, token_levels: int = 4, token_codebook_size: int = 256):
        super().__init__()
        self.tokenizer, self.sample_rate, self.features, self.config = tokenizer, sample_rate, features, config
        self.embed_dim, self.token_levels, self.token_codebook_size = embed_dim, token_levels, token_codebook_size
        self.audio_tower = AudioTower(config.audio_channels, embed_dim, features.n_mels)
        self.text_tower = TextTower(tokenizer.vocab_size, config.max_text_len, config.text_d_model,
                                    config.text_layers, config.text_heads, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        # The MuLan tokens' quantiser learns by k-means and EMA on fixed embeddings, never by gradients.
        self.token_quantizer = ResidualVQ(embed_dim, token_codebook_size, token_levels, dead_code_steps=2)
        self.register_buffer("token_quantizer_fitted", torch.tensor(False))

    @classmethod
    def from_config(cls, config: Config, tokenizer: CaptionTokenizer) -> "MuLan":
        return cls(tokenizer, config.data.sample_rate, config.features, config.mulan, config.tokens.mulan_dim,
                   config.tokens.mulan_rvq_levels, config.tokens.mulan_codebook_size)

    def _device(self) -> torch.device:
        return self.logit_scale.device

    def mel(self, audio, sample_rate: int | None = None) -> torch.Tensor:
        """Audio ``(samples,)`` or ``(batch, samples)`` -> scaled log-mel ``(batch, n_mels, frames)`` (silence 0,
        a full-scale tone about 1.6)."""
        audio = as_tensor(audio)
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise AudioError(f"MuLan's audio tower reads {self.sample_rate} Hz audio but got {sample_rate} Hz; convert "
                             f"it with mlm_lessons.audio.resample(audio, {sample_rate}, {self.sample_rate})")
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise AudioError(f"MuLan takes audio shaped (samples,) or (batch, samples), got {tuple(audio.shape)}; "
                             "mix stereo to mono with mlm_lessons.audio.to_mono")
        if audio.shape[-1] < self.features.n_fft:
            raise AudioError(f"{audio.shape[-1]} samples is too short for one spectrogram frame ({self.features.n_fft}"
                             " samples); pass at least that much audio")
        if not torch.isfinite(audio).all():
            raise AudioError(f"the audio contains {int((~torch.isfinite(audio)).sum())} NaN or infinite samples")
        return scaled_log_mel(audio.to(self._device()), self.sample_rate, self.features.n_fft,
                              self.features.hop_length, self.features.n_mels)

    def audio_embeddings(self, audio, sample_rate: int | None = None) -> torch.Tensor:
        """Unit-length ``(batch, embed_dim)`` embeddings of audio, with gradients (for training)."""
        return F.normalize(self.audio_tower(self.mel(audio, sample_rate)), dim=-1)

    def text_embeddings(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Unit-length ``(batch, embed_dim)`` embeddings of captions, with gradients (for training)."""
        ids, key_is_real = self.tokenizer.encode(texts, self.config.max_text_len)
        return F.normalize(self.text_tower(ids.to(self._device()), key_is_real.to(self._device())), dim=-1)

    @torch.no_grad()
    def embed_audio(self, audio, sample_rate: int | None = None, chunk: int = 64) -> torch.Tensor:
        """Unit-length ``(batch, embed_dim)`` embeddings of audio ``(samples,)`` or ``(batch, samples)``, ``chunk``
        clips at a time (so a large set needs no more memory than a small one)."""
        audio = as_tensor(audio)
        if audio.dim() != 2 or len(audio) <= chunk:
            return self.audio_embeddings(audio, sample_rate)
        return torch.cat([self.audio_embeddings(part, sample_rate) for part in audio.split(chunk)])

    @torch.no_grad()
    def embed_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Unit-length ``(batch, embed_dim)`` embeddings of one caption or a list of them."""
        return self.text_embeddings(texts)

    def forward(self, audio: torch.Tensor, texts: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Symmetric InfoNCE of a batch of ``(batch, samples)`` clips and their ``batch`` captions."""
        texts, audio = list(texts), as_tensor(audio)
        clips = 1 if audio.dim() == 1 else audio.shape[0]
        if len(texts) != clips:
            raise ValueError(f"{len(texts)} captions for {clips} clips: pass one caption per clip")
        with torch.no_grad():
            self.logit_scale.clamp_(max=self.MAX_LOGIT_SCALE)
        return info_nce(self.audio_embeddings(audio), self.text_embeddings(texts), self.logit_scale)


    # -- MuLan tokens --------------------------------------------------------------------------------

    @torch.no_grad()
    def fit_token_quantizer(self, audio_embeddings: torch.Tensor, passes: int = 20) -> None:
        """Fit the tokens' residual quantiser to ``(n, embed_dim)`` *audio* embeddings of a training set: k-means
        initialisation on the first pass, then ``passes - 1`` EMA passes over all of them.

        Audio only, on purpose: the stages train on audio tokens, so every code a caption can be given must be
        one that clips get too. (Fitted on audio and text together, the codebook keeps separate codes for the
        two clouds of the modality gap, and captions get codes no clip has.)
        """
        if audio_embeddings.dim() != 2 or audio_embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"need (n, {self.embed_dim}) audio embeddings, got {tuple(audio_embeddings.shape)}")
        quantizer = self.token_quantizer.train()
        for _ in range(passes):
            quantizer(audio_embeddings.to(self._device()).unsqueeze(0))
        quantizer.eval()
        self.token_quantizer_fitted.fill_(True)

    def _tokens(self, embeddings: torch.Tensor) -> torch.Tensor:
        if not bool(self.token_quantizer_fitted):
            raise RuntimeError("the MuLan tokens' quantiser is not fitted yet: call fit_token_quantizer with the "
                               "audio embeddings of a training set")
        return self.token_quantizer.encode(embeddings.unsqueeze(1))[:, :, 0]           # (batch, levels)

    @torch.no_grad()
    def audio_tokens(self, audio, sample_rate: int | None = None) -> torch.Tensor:
        """MuLan tokens of audio: ``(batch, token_levels)`` int64, the conditioning the stages train on."""
        return self._tokens(self.embed_audio(audio, sample_rate))

    @torch.no_grad()
    def text_tokens(self, texts: str | Sequence[str]) -> torch.Tensor:
        """MuLan tokens of captions: ``(batch, token_levels)`` int64, the conditioning used to generate."""
        return self._tokens(self.embed_text(texts))

    # -- files ---------------------------------------------------------------------------------------

    def config_dict(self) -> dict:
        return {"sample_rate": self.sample_rate, "embed_dim": self.embed_dim, "token_levels": self.token_levels,
                "token_codebook_size": self.token_codebook_size, "features": dataclasses.asdict(self.features),
                "mulan": dataclasses.asdict(self.config)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model with its tokenizer (float16 weights; the token codebooks stay float32), atomically."""
        save_atomically({"format": MULAN_FORMAT, "config": self.config_dict(), "tokenizer": self.tokenizer.to_str(),
                         "model": half_state_dict(self, keep_float32=("token_quantizer.",))}, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MuLan":
        """Read a file written by :meth:`save` (in eval mode)."""
        payload = load_tagged_file(path, MULAN_FORMAT, "MuLan checkpoint", "MuLan")
        settings = dict(payload["config"])
        model = cls(CaptionTokenizer.from_str(payload["tokenizer"]),
                    features=saved_config_section(AudioFeatureConfig, settings.pop("features"), "features"),
                    config=saved_config_section(MuLanConfig, settings.pop("mulan"), "MuLan"), **settings)
        load_half_state_dict(model, payload["model"], source=f"MuLan checkpoint {path}")
        return model.eval()


# ----------------------------------------------------------------------------------------------------
# 6. Using the space


def recall_at_k(similarity: torch.Tensor, k: int, targets: torch.Tensor | None = None) -> float:
    """Fraction of queries (rows) whose correct item (column ``targets[i]``, default ``i``) is among the ``k``
    most similar columns. Chance is about ``k / columns``."""
    if similarity.dim() != 2 or not 1 <= k <= similarity.shape[1]:
        raise ValueError(f"need a (queries, gallery) similarity matrix and 1 <= k <= gallery size; got shape "
                         f"{tuple(similarity.shape)} and k={k}")
    targets = torch.arange(len(similarity), device=similarity.device) if targets is None else targets
    top = similarity.topk(k, dim=1).indices                                           # (queries, k)
    return float((top == targets[:, None]).any(dim=1).float().mean())


@torch.no_grad()
def zero_shot_classify(model: MuLan, audio, class_names: Sequence[str],
                       template: str | Sequence[str] = "a {} melody") -> tuple[torch.Tensor, torch.Tensor]:
    """Tag clips with no trained classifier: embed one prompt per class (``template.format(name)``) and give
    each clip the class whose prompt is most similar.

    ``template`` may be a list of templates (CLIP's *prompt ensembling*): each class is then the mean of its
    prompts' unit embeddings, normalised again, which evens out the quirks of any one wording.

    Returns:
        ``(predictions (batch,) int64 into class_names, similarities (batch, classes))``.
    """
    templates = [template] if isinstance(template, str) else list(template)
    if not templates or any("{}" not in text for text in templates):
        raise ValueError(f"each template must contain '{{}}' where the class name goes, got {template!r}")
    if not class_names:
        raise ValueError("no class names to choose between")
    prompts = torch.stack([model.embed_text([text.format(name) for name in class_names])
                           for text in templates])                                    # (templates, classes, dim)
    prompts = F.normalize(prompts.mean(dim=0), dim=-1)
    similarities = model.embed_audio(audio) @ prompts.T                               # (batch, classes)
    return similarities.argmax(dim=1), similarities


# ----------------------------------------------------------------------------------------------------
# Training on SynthCaps pairs


class CaptionedCrops(Dataset):
    """(clip, caption) pairs: a random ``crop_samples`` crop of each clip, with one of its captions,
    ``crops_per_clip`` times per clip and epoch.

    Items are ``{"audio": (crop_samples,) float32, "caption": str}``; the crop and the caption are drawn from
    torch's global generator, which the trainer seeds and checkpoints, so runs repeat and resume exactly.
    """

    def __init__(self, clips: Sequence[torch.Tensor], captions_per_clip: Sequence[Sequence[str]], crop_samples: int,
                 crops_per_clip: int = 1):
        if len(clips) != len(captions_per_clip) or not clips:
            raise ValueError(f"need one list of captions per clip, got {len(captions_per_clip)} for {len(clips)} clips")
        self.clips = [as_tensor(clip) for clip in clips]
        short = [index for index, clip in enumerate(self.clips) if clip.shape[-1] < crop_samples]
        if short:
            raise ValueError(f"every clip must have at least {crop_samples} samples; clips {short[:5]} are shorter")
        self.captions = [list(options) for options in captions_per_clip]
        self.crop_samples, self.crops_per_clip = crop_samples, crops_per_clip

    def __len__(self) -> int:
        return len(self.clips) * self.crops_per_clip

    def __getitem__(self, index: int) -> dict:
        clip, options = self.clips[index % len(self.clips)], self.captions[index % len(self.clips)]
        start = int(torch.randint(0, clip.shape[-1] - self.crop_samples + 1, ()))
        caption = options[int(torch.randint(len(options), ()))]
        return {"audio": clip[start:start + self.crop_samples], "caption": caption}


def paraphrases(attributes, count: int, seed: int) -> list[str]:
    """``count`` SynthCaps captions of one clip's attributes, different wordings of the same facts."""
    return [caption_writer.caption(attributes, np.random.default_rng([seed, index])) for index in range(count)]


def tag_texts(attributes, count: int, seed: int) -> list[str]:
    """``count`` short texts of one clip in the style of tags: its lead instrument and 0 to 3 of its other
    MusicCaps aspects (never the uninformative "instrumental" and "no voice"), shuffled and joined by commas,
    e.g. "calming, violin".

    MuLan learned from short, noisy texts (video titles, tags, playlist names) as well as sentences. Trained
    on captions alone, a tower rates a prompt of one fact ("a flute melody") poorly: it has only seen texts
    that state ten. The lead instrument is in every tag text because it is what a short description names
    first, and because a contrastive loss learns easy facts (drums or none, tempo) long before timbre:
    texts that all name the instrument make telling instruments apart pay from the first step.
    """
    lead, *others = [tag for tag in caption_writer.aspects(attributes) if tag not in ("instrumental", "no voice")]
    texts = []
    for index in range(count):
        rng = np.random.default_rng([seed, 1, index])
        chosen = [lead] + [others[position] for position in
                           rng.choice(len(others), size=int(rng.integers(0, min(3, len(others)) + 1)), replace=False)]
        texts.append(", ".join(chosen[position] for position in rng.permutation(len(chosen))))
    return texts


def training_texts(record, config: MuLanConfig) -> list[str]:
    """The texts a SynthCaps clip may be paired with in training: its caption, ``config.paraphrases - 1``
    re-wordings of it and ``config.tag_texts`` tag texts (:func:`paraphrases`, :func:`tag_texts`)."""
    return [record.caption, *paraphrases(record.attributes, config.paraphrases - 1, record.seed),
            *tag_texts(record.attributes, config.tag_texts, record.seed)]


def mulan_train_config(config: Config, steps: int | None = None) -> Config:
    """``config`` with its ``train`` section set for MuLan: its own batch size, learning rate and warm-up."""
    section = config.mulan
    train = dataclasses.replace(config.train, batch_size=section.batch_size, learning_rate=section.learning_rate,
                                warmup_steps=section.warmup_steps,
                                max_steps=steps if steps is not None else config.train.max_steps)
    return dataclasses.replace(config, train=train)


def mulan_objective(model: MuLan, batch: dict):
    """The trainer's ``loss_fn``: symmetric InfoNCE of a batch ``{"audio": (batch, samples), "caption": [str]}``."""
    return model(batch["audio"], batch["caption"])


def train_mulan(config: Config, clips: Sequence[torch.Tensor], captions_per_clip: Sequence[Sequence[str]],
                out_dir: str | os.PathLike | None = None, *, tokenizer: CaptionTokenizer | None = None,
                extra_captions: Sequence[str] = (), steps: int | None = None, resume: bool = True,
                progress: bool = True):
    """Train MuLan on (clip, caption) pairs with the package's :class:`~mlm_lessons.train.Trainer`.

    Args:
        clips: ``(samples,)`` waveforms at ``config.data.sample_rate``.
        captions_per_clip: for each clip, the captions it may be paired with (one drawn per visit).
        tokenizer: the caption tokenizer; default: trained on all the captions and ``extra_captions`` (keep it:
            a resumed run must use the same one, and it is saved in ``out_dir/tokenizer.json``).
        extra_captions: more text for the default tokenizer's vocabulary only, never trained on (the
            command line adds the MusicCaps captions when the file is present, so their words split into
            fewer, more meaningful pieces).

    Returns:
        ``(model, history)``: the trained :class:`MuLan` in eval mode and the loss history.
    """
    config = mulan_train_config(config, steps)
    tokenizer_file = Path(out_dir) / "tokenizer.json" if out_dir is not None else None
    if tokenizer is None and tokenizer_file is not None and tokenizer_file.exists() and resume:
        tokenizer = CaptionTokenizer.from_str(tokenizer_file.read_text())
    if tokenizer is None:
        tokenizer = CaptionTokenizer.train([*(text for options in captions_per_clip for text in options),
                                            *extra_captions], config.mulan.vocab_size)
    if tokenizer_file is not None:
        tokenizer_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(tokenizer_file) as temporary:
            temporary.write_text(tokenizer.to_str())
    torch.manual_seed(config.train.seed)
    model = MuLan.from_config(config, tokenizer)
    crop_samples = round(config.mulan.crop_seconds * config.data.sample_rate)
    crops_per_clip = max(1, -(-config.train.batch_size // len(clips)))   # at least one full batch per epoch
    data = CaptionedCrops(clips, captions_per_clip, crop_samples, crops_per_clip)
    trainer = Trainer(model, config, data, mulan_objective, out_dir=out_dir, resume=resume and out_dir is not None,
                      progress=progress)
    history = trainer.fit()
    return model.eval(), history
