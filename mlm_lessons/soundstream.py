"""SoundStream: a neural audio codec whose codes are MusicLM's acoustic tokens.

SoundStream (Zeghidour et al., 2021) is an autoencoder with a *quantised* bottleneck, trained like a
GAN. MusicLM's authors trained one on the Free Music Archive (24 kHz, 50 frames per second, 12 RVQ
levels of 1,024 codes: 6 kbps) and froze it; its codes are what the coarse and fine stages predict,
and its decoder is what finally turns predicted codes into sound. The codec has three parts::

    audio (batch, samples) --encoder--> (batch, frames, latent_dim) --RVQ--> codes (batch, levels, frames)
                                                                              |
    audio (batch, samples) <--decoder-- (batch, frames, latent_dim) <--sum of code vectors

* **Encoder** (SEANet-style, fully convolutional and causal): a convolution, then one block per stride
  ``s``: three residual units with dilations 1, 3, 9 (their receptive fields grow 1, 3, 9 times, so
  together they see a wide context cheaply) and a strided convolution that divides the time axis by
  ``s`` and doubles the channels. The strides' product is the number of samples per frame (320 at
  16 kHz / 50 Hz, 480 at 24 kHz / 50 Hz).
* **Residual vector quantiser** (:mod:`mlm_lessons.quantize`): each frame's vector becomes one code per
  level; quantiser dropout makes one model serve 1 to ``num_levels`` levels, i.e. several bitrates.
* **Decoder**: the encoder mirrored, with transposed convolutions that multiply time by each stride.

*Causal* means every output sample depends only on present and past input samples (left padding
only), so the codec can stream with no look-ahead. ``tests/test_soundstream.py`` checks it.

**Two designs, one interface.** The above is the paper's design, and the defaults of
:class:`~mlm_lessons.config.CodecConfig`. At a laptop's scale its waveform decoder learns harmonics too
slowly to keep an instrument's timbre, so ``CodecConfig`` can swap each part for the time-frequency
design of Vocos and DAC, with the same shapes and bitrate: ``encoder="mel"`` and ``decoder="istft"``
(:mod:`mlm_lessons.time_frequency`: ConvNeXt blocks at the frame rate, reading log-mel frames and
predicting STFT frames), ``quantizer="factorised"`` (:class:`~mlm_lessons.quantize.FactorisedResidualVQ`:
unit-length codes looked up in 8 dimensions) and ``discriminators="vocos"`` (:class:`PeriodDiscriminator`
per period and an :class:`STFTDiscriminator` per resolution). ``bench/bench_codec_designs.py`` trains
both for the same CPU time and asks an attribute judge which keeps the instrument.

**Bitrate.** ``frame_rate x levels x log2(codebook_size)`` bits per second: the paper's
50 x 12 x 10 = 6,000 bit/s; the course's ``tiny`` codec 50 x 4 x 8 = 1,600 bit/s.

**Training** (:func:`codec_objectives`) alternates two objectives with the package's one
:class:`~mlm_lessons.train.Trainer`:

* the *codec* minimises a multi-scale mel reconstruction loss plus a waveform L1 term (weighted heavily
  in the ``tiny`` preset, so that a short run learns the waveform and not only its spectrum), the RVQ's
  commitment loss and, after ``adversarial_start_step``, the adversarial (hinge) and feature-matching
  losses of :mod:`mlm_lessons.gan` against two discriminators;
* the *discriminators* learn to tell real clips from the codec's reconstructions: a multi-resolution
  waveform discriminator (the same network on the audio at 1x, 1/2 and 1/4 rate, as in MelGAN) and an
  STFT discriminator that judges the complex spectrogram (real and imaginary parts as two channels).

The reconstruction loss alone gives muffled audio (it averages over what it cannot predict); the
discriminators punish that, as lesson 03 showed. Starting them after a warm-up lets the codec first
learn roughly what to reconstruct.

The module ends with a non-learned baseline at the same bitrate, :func:`mu_law_codec` (a lower
sample rate and fewer bits per sample), which lesson 05 and ``bench/bench_codec.py`` measure against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from mlm_lessons import gan
from mlm_lessons.datasets import AudioCrops
from mlm_lessons.audio import AudioError, as_tensor, log_mel
from mlm_lessons.config import CodecConfig, Config
from mlm_lessons.metrics import multi_scale_mel_distance
from mlm_lessons.quantize import FactorisedResidualVQ, ResidualVQ
from mlm_lessons.time_frequency import ISTFTDecoder, MelEncoder
from mlm_lessons.train import (Trainer, half_state_dict, load_checkpoint, load_half_state_dict, save_atomically,
                               saved_config_section)

CODEC_FORMAT = "mlm_lessons.soundstream/1"
DILATIONS = (1, 3, 9)
RECONSTRUCTION_SCALES = (256, 512, 1024, 2048)  # FFT sizes of the multi-scale mel loss (hop = n_fft / 4)


# ----------------------------------------------------------------------------------------------------
# Causal convolutions


class CausalConv1d(nn.Conv1d):
    """A ``Conv1d`` padded on the left only, so output ``t`` sees inputs ``<= t`` (``<= t * stride + ...``).

    With ``stride`` dividing the input length ``T``, the output has exactly ``T / stride`` steps.

    Shapes: ``(batch, in_channels, T) -> (batch, out_channels, T / stride)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.dilation[0] * (self.kernel_size[0] - 1) + 1 - self.stride[0]
        return super().forward(F.pad(x, (left, 0)))


class CausalConvTranspose1d(nn.ConvTranspose1d):
    """A transposed convolution that multiplies time by ``stride`` (kernel ``2 * stride``), trimmed on the
    right so output ``t`` depends only on inputs ``<= t / stride``.

    Shapes: ``(batch, in_channels, T) -> (batch, out_channels, T * stride)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out[..., : x.shape[-1] * self.stride[0]]


class ResidualUnit(nn.Module):
    """``x + conv1x1(elu(dilated_conv7(elu(x))))``: SEANet's residual unit, width-preserving."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.layers = nn.Sequential(nn.ELU(), CausalConv1d(channels, channels, 7, dilation=dilation),
                                    nn.ELU(), CausalConv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


# ----------------------------------------------------------------------------------------------------
# Encoder and decoder


class Encoder(nn.Module):
    """Audio ``(batch, 1, samples)`` -> latent frames ``(batch, latent_dim, samples / prod(strides))``."""

    def __init__(self, channels: int, strides: Sequence[int], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [CausalConv1d(1, channels, 7)]
        width = channels
        for stride in strides:
            layers += [ResidualUnit(width, dilation) for dilation in DILATIONS]
            layers += [nn.ELU(), CausalConv1d(width, 2 * width, 2 * stride, stride=stride)]
            width *= 2
        layers += [nn.ELU(), CausalConv1d(width, latent_dim, 3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.layers(audio)


class Decoder(nn.Module):
    """Latent frames ``(batch, latent_dim, frames)`` -> audio ``(batch, 1, frames * prod(strides))``."""

    def __init__(self, channels: int, strides: Sequence[int], latent_dim: int):
        super().__init__()
        width = channels * 2 ** len(strides)
        layers: list[nn.Module] = [CausalConv1d(latent_dim, width, 7)]
        for stride in reversed(strides):
            layers += [nn.ELU(), CausalConvTranspose1d(width, width // 2, 2 * stride, stride=stride)]
            width //= 2
            layers += [ResidualUnit(width, dilation) for dilation in DILATIONS]
        layers += [nn.ELU(), CausalConv1d(width, 1, 7)]
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)


# ----------------------------------------------------------------------------------------------------
# The codec


@dataclasses.dataclass
class CodecOutput:
    """What :meth:`SoundStream.forward` returns."""

    audio: torch.Tensor                 # (batch, samples) the reconstruction
    codes: torch.Tensor                 # (batch, levels, frames) int64
    quantizer_loss: torch.Tensor        # scalar: the RVQ's commitment (and codebook) loss
    metrics: dict[str, torch.Tensor]    # the RVQ's statistics (perplexity per level, ...)


class SoundStream(nn.Module):
    """Encoder, residual vector quantiser and decoder (see the module docstring).

    Args:
        sample_rate: the audio rate in Hz that the codec reads and writes.
        frame_rate: frames (tokens per level) per second; ``sample_rate / frame_rate`` must equal the
            product of ``codec.strides``.
        num_levels, codebook_size: the RVQ's depth and codes per level.
        codec: widths, strides, quantiser settings (a :class:`~mlm_lessons.config.CodecConfig`).

    Build it from a preset with :meth:`from_config`; read and write it with :meth:`save` / :meth:`load`.
    """

    def __init__(self, sample_rate: int, frame_rate: int, num_levels: int, codebook_size: int,
                 codec: CodecConfig = CodecConfig(), seed: int = 0):
        super().__init__()
        hop_length = math.prod(codec.strides)
        if sample_rate != frame_rate * hop_length:
            raise ValueError(
                f"the strides {codec.strides} give {hop_length} samples per frame, but {sample_rate} Hz at "
                f"{frame_rate} frames per second needs {sample_rate / frame_rate:g}; choose strides whose "
                f"product is sample_rate / frame_rate")
        self.sample_rate, self.frame_rate, self.hop_length = sample_rate, frame_rate, hop_length
        self.num_levels, self.codebook_size = num_levels, codebook_size
        self.codec_config = codec
        if codec.encoder == "mel":
            self.encoder = MelEncoder(sample_rate, hop_length, codec.latent_dim, codec.convnext_dim,
                                      codec.convnext_blocks)
        else:
            self.encoder = Encoder(codec.channels, codec.strides, codec.latent_dim)
        shared = dict(quantizer_dropout=codec.quantizer_dropout, commitment_weight=codec.commitment_weight,
                      dead_code_steps=codec.dead_code_steps, seed=seed)
        if codec.quantizer == "factorised":
            self.quantizer = FactorisedResidualVQ(codec.latent_dim, codebook_size, num_levels, code_dim=codec.code_dim,
                                                  **shared)
        else:
            self.quantizer = ResidualVQ(codec.latent_dim, codebook_size, num_levels, decay=codec.ema_decay,
                                        warmup_steps=codec.quantizer_warmup_steps, **shared)
        if codec.decoder == "istft":
            self.decoder = ISTFTDecoder(hop_length, codec.latent_dim, codec.convnext_dim, codec.convnext_blocks)
        else:
            self.decoder = Decoder(codec.channels, codec.strides, codec.latent_dim)

    @classmethod
    def from_config(cls, config: Config) -> "SoundStream":
        """The codec a preset describes: ``data.sample_rate``, ``tokens.soundstream_frame_rate``,
        ``tokens.rvq_levels``, ``tokens.codebook_size`` and the ``codec`` section."""
        return cls(config.data.sample_rate, config.tokens.soundstream_frame_rate, config.tokens.rvq_levels,
                   config.tokens.codebook_size, config.codec, seed=config.train.seed)

    @property
    def bitrate(self) -> float:
        """Bits per second at full depth: ``frame_rate x num_levels x log2(codebook_size)``."""
        return self.bitrate_at(self.num_levels)

    def bitrate_at(self, num_levels: int) -> float:
        """Bits per second when only the first ``num_levels`` RVQ levels are kept."""
        return self.frame_rate * num_levels * math.log2(self.codebook_size)

    # -- input checks --------------------------------------------------------------------------------

    def _check_audio(self, audio, sample_rate: int | None, pad: bool) -> torch.Tensor:
        """``(samples,)`` or ``(batch, samples)`` -> ``(batch, 1, samples)`` on the codec's device."""
        audio = as_tensor(audio)
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise AudioError(f"this codec works at {self.sample_rate} Hz but the audio is at {sample_rate} Hz; "
                             f"convert it with mlm_lessons.audio.resample(audio, {sample_rate}, {self.sample_rate})")
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise AudioError(f"the codec takes audio shaped (samples,) or (batch, samples), got shape "
                             f"{tuple(audio.shape)}; mix stereo to mono with mlm_lessons.audio.to_mono")
        if audio.shape[-1] == 0:
            raise AudioError("the audio is empty (0 samples)")
        if not torch.isfinite(audio).all():
            raise AudioError(f"the audio contains {int((~torch.isfinite(audio)).sum())} NaN or infinite samples")
        remainder = audio.shape[-1] % self.hop_length
        if remainder:
            if not pad:
                raise AudioError(
                    f"{audio.shape[-1]} samples is not a whole number of frames of {self.hop_length} samples; "
                    f"pass pad=True to pad with silence to {audio.shape[-1] + self.hop_length - remainder}, "
                    "or trim the audio")
            audio = F.pad(audio, (0, self.hop_length - remainder))
        return audio.unsqueeze(1).to(next(self.parameters()).device)

    def _check_codes(self, codes) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.dim() == 2:
            codes = codes.unsqueeze(0)
        if codes.dim() != 3:
            raise ValueError(f"codes must be shaped (batch, levels, frames) or (levels, frames), got shape "
                             f"{tuple(codes.shape)}")
        if codes.is_floating_point() or codes.is_complex():
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        if not 1 <= codes.shape[1] <= self.num_levels:
            raise ValueError(f"codes have {codes.shape[1]} levels but this codec has {self.num_levels}; "
                             f"pass between 1 and {self.num_levels} levels (the first ones)")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}); got values from {int(codes.min())} "
                             f"to {int(codes.max())}")
        return codes.long().to(next(self.parameters()).device)

    # -- the three calls -----------------------------------------------------------------------------

    def forward(self, audio: torch.Tensor, num_levels: int | None = None) -> CodecOutput:
        """Encode, quantise and decode a batch, as in training.

        Args:
            audio: ``(batch, samples)``, samples a multiple of ``hop_length``.
            num_levels: RVQ levels to use (default: all; in training mode quantiser dropout may use fewer).
        """
        audio = self._check_audio(audio, None, pad=False)
        latents = self.encoder(audio).transpose(1, 2)                  # (batch, frames, latent_dim)
        quantized = self.quantizer(latents, num_levels=num_levels)
        reconstruction = self.decoder(quantized.quantized.transpose(1, 2))
        return CodecOutput(reconstruction.squeeze(1), quantized.codes, quantized.loss, quantized.metrics)

    @torch.no_grad()
    def encode(self, audio, num_levels: int | None = None, sample_rate: int | None = None,
               pad: bool = False) -> torch.Tensor:
        """Audio ``(samples,)`` or ``(batch, samples)`` -> codes ``(batch, levels, frames)`` int64.

        Args:
            num_levels: keep only the first ``num_levels`` levels (a lower bitrate).
            sample_rate: the audio's rate, checked against the codec's when given.
            pad: pad with silence to a whole number of frames instead of refusing.
        """
        audio = self._check_audio(audio, sample_rate, pad)
        latents = self.encoder(audio).transpose(1, 2)
        return self.quantizer.encode(latents, num_levels=num_levels)

    @torch.no_grad()
    def decode(self, codes) -> torch.Tensor:
        """Codes ``(batch, levels, frames)`` (the first ``levels`` of the RVQ) -> audio ``(batch, samples)``."""
        codes = self._check_codes(codes)
        return self.decoder(self.quantizer.decode(codes).transpose(1, 2)).squeeze(1)

    @torch.no_grad()
    def reconstruct(self, audio, num_levels: int | None = None, sample_rate: int | None = None) -> torch.Tensor:
        """``decode(encode(audio))`` trimmed to the input's length: ``(batch, samples)``."""
        length = as_tensor(audio).shape[-1]
        return self.decode(self.encode(audio, num_levels, sample_rate, pad=True))[..., :length]

    # -- files ---------------------------------------------------------------------------------------

    def config_dict(self) -> dict:
        """What :meth:`load` needs to rebuild this codec."""
        return {"sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "num_levels": self.num_levels,
                "codebook_size": self.codebook_size, "codec": dataclasses.asdict(self.codec_config)}

    def save(self, path: str | os.PathLike, half: bool = True) -> Path:
        """Write the codec alone (no discriminators, no optimiser state) atomically.

        ``half`` stores float weights as float16, halving the file; :meth:`load` returns float32.
        """
        state = half_state_dict(self, keep_float32=("quantizer.",)) if half else self.state_dict()
        save_atomically({"format": CODEC_FORMAT, "config": self.config_dict(), "model": state}, path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SoundStream":
        """Rebuild a codec written by :meth:`save` or from a :class:`~mlm_lessons.train.Trainer` checkpoint
        of :class:`CodecTraining` (its discriminators are dropped).

        A config written before a field existed loads with that field's default.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no codec checkpoint at {path}")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(payload, dict) and payload.get("format") == CODEC_FORMAT:
            settings = dict(payload["config"])
            codec = cls(codec=saved_config_section(CodecConfig, settings.pop("codec"), "codec"), **settings)
            state = payload["model"]
        else:
            checkpoint = load_checkpoint(path)  # a trainer checkpoint, or a clear error
            codec = cls.from_config(Config.from_dict(checkpoint["config"]))
            state = {key.removeprefix("codec."): value for key, value in checkpoint["model"].items()
                     if key.startswith("codec.")}
        load_half_state_dict(codec, state, source=f"codec checkpoint {path}")
        return codec.eval()


# ----------------------------------------------------------------------------------------------------
# Discriminators


class WaveformDiscriminator(nn.Module):
    """MelGAN-style discriminator on raw samples: strided grouped convolutions, one logit per step.

    ``(batch, 1, samples) -> (logits (batch, 1, steps), [feature maps])``.
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        widths = [channels, channels * 4, channels * 16, channels * 16]
        self.layers = nn.ModuleList([nn.Conv1d(1, widths[0], 15, padding=7)])
        for before, after in zip(widths, widths[1:]):
            groups = max(1, before // 4)
            self.layers.append(nn.Conv1d(before, after, 41, stride=4, padding=20, groups=groups))
        self.layers.append(nn.Conv1d(widths[-1], widths[-1], 5, padding=2))
        self.to_logits = nn.Conv1d(widths[-1], 1, 3, padding=1)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        x = audio
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.to_logits(x), features


class MultiResolutionDiscriminator(nn.Module):
    """The same architecture on the audio at 1x, 1/2 and 1/4 of its rate (average-pooled): coarser
    copies judge longer structure with the same receptive field."""

    def __init__(self, channels: int = 16, resolutions: int = 3):
        super().__init__()
        self.discriminators = nn.ModuleList([WaveformDiscriminator(channels) for _ in range(resolutions)])

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        outputs = []
        for index, discriminator in enumerate(self.discriminators):
            if index:
                audio = F.avg_pool1d(audio, 4, stride=2, padding=1, count_include_pad=False)
            outputs.append(discriminator(audio))
        return outputs


class STFTDiscriminator(nn.Module):
    """Judges the complex STFT (real and imaginary parts as two channels) with 2-D convolutions that
    down-sample frequency, as SoundStream's STFT discriminator does.

    ``(batch, 1, samples) -> (logits (batch, 1, frames', bins'), [feature maps])``.
    """

    def __init__(self, channels: int = 16, n_fft: int = 1024, hop_length: int = 256):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        widths = [2, channels, 2 * channels, 4 * channels, 4 * channels]
        self.layers = nn.ModuleList()
        for index, (before, after) in enumerate(zip(widths, widths[1:])):
            stride = (1, 1) if index == 0 else (1, 2)   # (time, frequency): halve the frequency axis
            self.layers.append(nn.Conv2d(before, after, (3, 7) if index == 0 else (3, 5), stride=stride,
                                         padding=(1, 3) if index == 0 else (1, 2)))
        self.to_logits = nn.Conv2d(widths[-1], 1, (3, 3), padding=(1, 1))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.autocast(audio.device.type, enabled=False):  # the FFT in float32
            spectrum = torch.stft(audio.squeeze(1).float(), self.n_fft, self.hop_length, window=self.window,
                                  return_complex=True)
        x = torch.stack([spectrum.real, spectrum.imag], dim=1).transpose(2, 3)  # (batch, 2, frames, bins)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.to_logits(x), features


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's discriminator of one period ``p`` (Kong et al., 2020): the samples are folded into ``p``
    columns, ``(batch, 1, samples / p, p)``, and 2-D convolutions of width 1 run down each column, so every
    column sees the samples ``p`` apart: a periodic structure (a pitch whose period is a multiple of ``p``)
    shows as a pattern down the columns, which a waveform discriminator would need a wide field to see.

    ``(batch, 1, samples) -> (logits (batch, 1, rows', p), [feature maps])``.
    """

    def __init__(self, period: int, channels: int = 16):
        super().__init__()
        self.period = period
        widths = [1, channels, 4 * channels, 16 * channels, 16 * channels]
        self.layers = nn.ModuleList(nn.Conv2d(before, after, (5, 1), stride=(3, 1) if index < 3 else 1,
                                              padding=(2, 0))
                                    for index, (before, after) in enumerate(zip(widths, widths[1:])))
        self.to_logits = nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, _, samples = audio.shape
        audio = F.pad(audio, (0, -samples % self.period), mode="reflect")
        x = audio.view(batch, 1, -1, self.period)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.to_logits(x), features


PERIODS = (2, 3, 5, 7, 11)                  # HiFi-GAN's: primes, so that the periods overlap little
STFT_DISCRIMINATOR_SIZES = (256, 512, 1024)  # FFT sizes of the "vocos" set's STFT discriminators (hop n_fft / 4)


class CodecTraining(nn.Module):
    """The codec and its discriminators in one module, as the :class:`~mlm_lessons.train.Trainer` wants it;
    after training, ``.codec`` is all that is kept.

    ``CodecConfig.discriminators`` picks the set: ``"soundstream"`` is the paper's (a multi-resolution waveform
    discriminator and one STFT discriminator); ``"vocos"`` is what Vocos and DAC use beside a spectrogram
    decoder: one :class:`PeriodDiscriminator` per period of ``PERIODS``, and an :class:`STFTDiscriminator` at
    each FFT size of ``STFT_DISCRIMINATOR_SIZES``, which together judge the phase the decoder predicts.
    """

    def __init__(self, codec: SoundStream, discriminator_channels: int = 16, discriminators: str = "soundstream"):
        super().__init__()
        self.codec, self.discriminator_set = codec, discriminators
        if discriminators == "vocos":
            self.period_discriminators = nn.ModuleList(PeriodDiscriminator(period, discriminator_channels)
                                                       for period in PERIODS)
            self.stft_discriminators = nn.ModuleList(STFTDiscriminator(discriminator_channels, n_fft, n_fft // 4)
                                                     for n_fft in STFT_DISCRIMINATOR_SIZES)
        else:
            self.waveform_discriminator = MultiResolutionDiscriminator(discriminator_channels)
            self.stft_discriminator = STFTDiscriminator(discriminator_channels)

    @classmethod
    def from_config(cls, config: Config) -> "CodecTraining":
        return cls(SoundStream.from_config(config), config.codec.discriminator_channels, config.codec.discriminators)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the codec: what the discriminators' optimiser updates."""
        return [parameter for name, parameter in self.named_parameters() if not name.startswith("codec.")]

    def discriminate(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """Every discriminator's logits and feature maps for ``(batch, samples)`` audio."""
        audio = audio.unsqueeze(1)
        if self.discriminator_set == "vocos":
            outputs = [discriminator(audio) for discriminator in [*self.period_discriminators,
                                                                  *self.stft_discriminators]]
        else:
            outputs = self.waveform_discriminator(audio) + [self.stft_discriminator(audio)]
        return [logits for logits, _ in outputs], [features for _, features in outputs]


# ----------------------------------------------------------------------------------------------------
# Losses and the two objectives


def multi_scale_mel_loss(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int,
                         scales: Sequence[int] = RECONSTRUCTION_SCALES) -> torch.Tensor:
    """SoundStream's reconstruction loss: over several FFT sizes, L1 between mel spectrograms plus L1
    between log-mel spectrograms (the first weighs loud parts, the second quiet ones).

    Args:
        estimate, reference: ``(batch, samples)``.

    Returns:
        Scalar, averaged over scales. Computed in float32 whatever the autocast setting.
    """
    with torch.autocast(estimate.device.type, enabled=False):
        estimate, reference = estimate.float(), reference.float()
        losses = []
        for n_fft in scales:
            settings = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=_mel_bands(n_fft))
            log_estimate, log_reference = log_mel(estimate, **settings), log_mel(reference, **settings)
            losses.append((log_estimate.exp() - log_reference.exp()).abs().mean()
                          + (log_estimate - log_reference).abs().mean())
        return torch.stack(losses).mean()


def _mel_bands(n_fft: int) -> int:
    """64 mel bands, fewer for short FFTs whose frequency bins are too coarse to fill 64 bands."""
    return min(64, n_fft // 8)


def codec_objectives(config: CodecConfig, sample_rate: int):
    """The two objectives of :class:`CodecTraining` for the :class:`~mlm_lessons.train.Trainer`.

    Returns ``({"discriminator": ..., "codec": ...}, {"discriminator": adversarial_start_step})``: pass the
    first as ``loss_fn`` (with one optimiser per name) and the second as ``objective_start_steps``. The
    batch is a ``(batch, samples)`` tensor of real audio.
    """

    def discriminator_loss(model: CodecTraining, real: torch.Tensor):
        with torch.no_grad(), _codebooks_frozen(model.codec):
            fake = model.codec(real).audio
        real_logits, _ = model.discriminate(real)
        fake_logits, _ = model.discriminate(fake)
        return gan.discriminator_loss(real_logits, fake_logits, kind="hinge")

    def codec_loss(model: CodecTraining, real: torch.Tensor, step: int):
        output = model.codec(real)
        reconstruction = multi_scale_mel_loss(output.audio, real, sample_rate)
        waveform = (output.audio.float() - real.float()).abs().mean()
        loss = reconstruction + config.waveform_weight * waveform + output.quantizer_loss
        metrics = {"reconstruction": reconstruction, "waveform_l1": waveform,
                   "quantizer": output.quantizer_loss, **output.metrics}
        if step >= config.adversarial_start_step:
            fake_logits, fake_features = model.discriminate(output.audio)
            with torch.no_grad():
                _, real_features = model.discriminate(real)
            adversarial = gan.generator_loss(fake_logits, kind="hinge")
            feature_matching = gan.feature_matching_loss(real_features, fake_features)
            loss = loss + config.adversarial_weight * adversarial + config.feature_weight * feature_matching
            metrics.update(adversarial=adversarial, feature_matching=feature_matching)
        return loss, metrics

    return ({"discriminator": discriminator_loss, "codec": codec_loss},
            {"discriminator": config.adversarial_start_step})


@contextlib.contextmanager
def _codebooks_frozen(codec: SoundStream) -> Iterator[None]:
    """Run the quantiser in eval mode (no EMA update, no dropout): the discriminator's phase must not
    move the codebooks a second time in the same step."""
    was_training = codec.quantizer.training
    codec.quantizer.eval()
    try:
        yield
    finally:
        codec.quantizer.train(was_training)


# ----------------------------------------------------------------------------------------------------
# A non-learned baseline


def mu_law_codec(audio, sample_rate: int, codec_rate: int, bits: int) -> torch.Tensor:
    """Telephone-style coding: resample to ``codec_rate`` Hz, mu-law quantise to ``bits`` bits per
    sample, decode and resample back. Its bitrate is ``codec_rate x bits`` bit/s.

    Args:
        audio: ``(samples,)`` or ``(batch, samples)`` at ``sample_rate``, in [-1, 1].

    Returns:
        The decoded audio, same shape as ``audio``.
    """
    audio = as_tensor(audio)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be between 1 and 16, got {bits}")
    if not 0 < codec_rate <= sample_rate:
        raise ValueError(f"codec_rate must be in (0, {sample_rate}] Hz, got {codec_rate}")
    low = torchaudio.functional.resample(audio, sample_rate, codec_rate)
    levels = 2 ** bits
    codes = torchaudio.functional.mu_law_encoding(low.clamp(-1, 1), levels)
    decoded = torchaudio.functional.mu_law_decoding(codes, levels)
    restored = torchaudio.functional.resample(decoded, codec_rate, sample_rate)
    length = audio.shape[-1]
    return F.pad(restored, (0, max(0, length - restored.shape[-1])))[..., :length]


def best_mu_law_codec(audio, sample_rate: int, bitrate: float, bit_depths: Sequence[int] = (2, 3, 4, 5, 6, 8),
                      score=None) -> tuple[torch.Tensor, dict]:
    """The strongest mu-law baseline at ``bitrate``: tries each bit depth (with ``codec_rate = bitrate /
    bits``) and keeps the one with the best ``score(decoded, audio)`` (default: lowest multi-scale mel
    distance, averaged over the batch). Returns the decoded audio and ``{"bits", "codec_rate"}``."""
    score = score or (lambda decoded, reference: -multi_scale_mel_distance(decoded, reference, sample_rate).mean())
    best = None
    for bits in bit_depths:
        codec_rate = int(bitrate // bits)
        if codec_rate < 100:  # below 100 Hz nothing of music survives
            continue
        decoded = mu_law_codec(audio, sample_rate, codec_rate, bits)
        value = float(score(decoded, as_tensor(audio)))
        if best is None or value > best[0]:
            best = (value, decoded, {"bits": bits, "codec_rate": codec_rate})
    if best is None:
        raise ValueError(f"{bitrate} bit/s leaves no bit depth in {tuple(bit_depths)} a rate of at least 100 Hz")
    return best[1], best[2]


# ----------------------------------------------------------------------------------------------------
# Training from a folder of clips


def _fit_quantizer_warmup(quantizer, max_steps: int, say: bool) -> None:
    """A run no longer than twice the quantiser's warm-up (``codec.quantizer_warmup_steps``) warms up for
    half its steps instead, so that its codebooks still start from k-means and learn: a quick try of a preset
    made for a long run gives a small codec, not one whose codes were never trained. The saved config
    keeps the preset's value."""
    if isinstance(quantizer, ResidualVQ) and quantizer.warmup_steps > max_steps // 2:
        if say:
            print(f"the quantiser's warm-up is cut from {quantizer.warmup_steps:,} to {max_steps // 2:,} steps, half of "
                  f"this run's {max_steps:,}")
        quantizer.warmup_steps = max_steps // 2


def codec_train_config(config: Config, steps: int | None = None) -> Config:
    """``config`` with its ``train`` section set for the codec: the codec's batch size and learning rate,
    no weight decay (a GAN's players are not regularised towards zero), and ``steps`` if given."""
    train = dataclasses.replace(config.train, batch_size=config.codec.batch_size,
                                learning_rate=config.codec.learning_rate, weight_decay=0.0,
                                max_steps=steps if steps is not None else config.train.max_steps)
    return dataclasses.replace(config, train=train)


def train_codec(config: Config, clips: Sequence[torch.Tensor], out_dir: str | os.PathLike | None = None, *,
                steps: int | None = None, resume: bool = True, progress: bool = True):
    """Train a SoundStream codec on ``clips`` with the package's :class:`~mlm_lessons.train.Trainer`.

    Args:
        config: a preset (its ``data``, ``tokens`` and ``codec`` sections shape the codec; see
            :func:`codec_train_config` for what is taken from ``train``).
        clips: ``(samples,)`` waveforms at ``config.data.sample_rate``, each at least one crop long.
        out_dir: where the trainer keeps ``last.pt``; with ``resume`` an interrupted run continues there.
        steps: optimiser steps (default: ``config.train.max_steps``).

    Returns:
        ``(training, history)``: the :class:`CodecTraining` module (``training.codec`` is the codec, in
        eval mode) and the trainer's loss history.
    """

    config = codec_train_config(config, steps)
    hop_length = math.prod(config.codec.strides)
    crop_samples = max(1, round(config.codec.crop_seconds * config.data.sample_rate / hop_length)) * hop_length
    crops_per_clip = max(1, -(-config.train.batch_size // len(clips)))  # at least one full batch per epoch
    data = AudioCrops(clips, crop_samples, crops_per_clip)
    torch.manual_seed(config.train.seed)
    training = CodecTraining.from_config(config)
    _fit_quantizer_warmup(training.codec.quantizer, config.train.max_steps, progress)
    objectives, starts = codec_objectives(config.codec, config.data.sample_rate)
    betas = (0.5, 0.9)  # as in SoundStream and most audio GANs: less momentum, a quicker game
    optimizers = {"discriminator": torch.optim.Adam(training.discriminator_parameters(), lr=config.train.learning_rate,
                                                    betas=betas),
                  "codec": torch.optim.Adam(training.codec.parameters(), lr=config.train.learning_rate,
                                            betas=betas)}
    trainer = Trainer(training, config, data, objectives, optimizers=optimizers, out_dir=out_dir,
                      resume=resume and out_dir is not None, progress=progress, objective_start_steps=starts)
    history = trainer.fit()
    training.codec.eval()
    return training, history
