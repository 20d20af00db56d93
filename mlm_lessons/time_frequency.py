"""A codec's encoder and decoder that work on spectrogram frames: why the course's codec keeps the instrument.

SoundStream's SEANet decoder (:mod:`mlm_lessons.soundstream`) builds the waveform sample by sample: transposed
convolutions multiply 50 frames per second up to 16,000 samples, and every harmonic of every note must come
out of them at the right frequency *and* phase. That is learnable, but slowly: after 40 minutes of CPU
training the course's SEANet codec still smeared the harmonics that tell a flute from a violin, and an
attribute judge named the instrument of only 16% of its reconstructions (issue 25 of the course).

Vocos (Siuzdak, 2023) decodes one step up the abstraction instead. A frame of codes becomes one *frame of a
spectrogram*, the magnitude and phase of every frequency bin, and the inverse STFT (``torch.istft``: an
inverse FFT per frame, windowed and overlap-added) turns frames into samples. A harmonic is then one bin's
magnitude, learnt as easily as any other number, and the network never up-samples: it runs at the frame
rate, 320 times fewer steps than the audio. The encoder can do the same in reverse: read a log-mel
spectrogram whose hop is one codec frame, so each mel frame becomes one latent vector. Both are stacks of
**ConvNeXt blocks** (Liu et al., 2022), the block Vocos uses::

    x (batch, dim, frames) -> depthwise Conv1d (kernel 7) -> LayerNorm -> Linear dim -> 3 dim -> GELU
                           -> Linear 3 dim -> dim -> x scale (learnt, starts small) -> + x

The encoder (:class:`MelEncoder`)::

    audio (batch, 1, samples) -> log-mel, hop = samples per frame -> Conv1d -> ConvNeXt blocks -> latents

and the decoder (:class:`ISTFTDecoder`)::

    latents (batch, latent_dim, frames) -> Conv1d -> ConvNeXt blocks -> Linear to n_fft + 2 numbers a frame
        -> magnitude = exp(first half), phase = second half -> magnitude * e^(i phase) -> iSTFT -> audio

Both share SEANet's interface (the same shapes in and out), so :class:`~mlm_lessons.soundstream.SoundStream`
takes either pair, chosen by ``CodecConfig.encoder`` and ``CodecConfig.decoder``. Frame ``t`` of both is
centred on sample ``t x hop_length``; neither is causal (the mel and the iSTFT windows reach half a window
ahead), which a codec that need not stream can afford. The phase is the hard part of a spectrogram to
predict; the multi-scale mel loss ignores it, so the adversarial losses that follow a warm-up
(:func:`mlm_lessons.soundstream.codec_objectives`) are what make it sound natural.

Shapes: audio ``(batch, 1, samples)``, latents ``(batch, latent_dim, frames)`` with ``samples = frames x
hop_length``, as in :mod:`mlm_lessons.soundstream`.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

WINDOW_HOPS = 4              # the STFT window of encoder and decoder spans four frames, as in Vocos
LOG_MAGNITUDE_LIMIT = 7.0    # exp(7) ~ 1100: far above any real bin's magnitude, stops an early overflow
LOG_MEL_FLOOR = 1e-5         # power floor before the encoder's log, so silence is finite


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block over time: ``(batch, dim, frames) -> (batch, dim, frames)`` (module docstring).

    The depthwise convolution mixes neighbouring frames within each channel; the two linear layers mix
    channels within each frame. The learnt per-channel scale starts at ``layer_scale`` (small), so each
    block starts close to the identity and a deep stack trains stably.
    """

    def __init__(self, dim: int, expansion: int = 3, kernel_size: int = 7, layer_scale: float = 0.1):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.expand = nn.Linear(dim, expansion * dim)
        self.contract = nn.Linear(expansion * dim, dim)
        self.scale = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x).transpose(1, 2)                      # (batch, frames, dim)
        h = self.contract(nn.functional.gelu(self.expand(self.norm(h))))
        return x + (self.scale * h).transpose(1, 2)


class ConvNeXtStack(nn.Module):
    """``in_dim -> dim`` by a convolution over 7 frames, then ``blocks`` ConvNeXt blocks and a LayerNorm:
    ``(batch, in_dim, frames) -> (batch, frames, dim)`` (channels last, ready for a linear head)."""

    def __init__(self, in_dim: int, dim: int, blocks: int):
        super().__init__()
        self.embed = nn.Conv1d(in_dim, dim, 7, padding=3)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(blocks)))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 in: CPU autocast runs linear layers in bfloat16 but not convolutions, which then refuse a
        # bfloat16 input (on a GPU, autocast casts the convolution itself).
        return self.norm(self.blocks(self.embed(x.float())).transpose(1, 2))


class MelEncoder(nn.Module):
    """Audio ``(batch, 1, samples)`` -> latents ``(batch, latent_dim, samples / hop_length)``.

    A log-mel spectrogram with one frame per codec frame (hop ``hop_length``, window ``4 x hop_length``,
    centred, so frame ``t`` is centred on sample ``t x hop_length``; the frame centred on the last sample
    is dropped), then a :class:`ConvNeXtStack` and a linear map to ``latent_dim``.

    Args:
        sample_rate: the audio's rate in Hz.
        hop_length: samples per frame (the codec's ``sample_rate / frame_rate``).
        latent_dim: size of each frame's output vector (what the RVQ quantises).
        dim: width of the ConvNeXt blocks.
        blocks: how many.
        n_mels: mel bands read per frame.
    """

    def __init__(self, sample_rate: int, hop_length: int, latent_dim: int, dim: int = 128, blocks: int = 4,
                 n_mels: int = 80):
        super().__init__()
        self.hop_length = hop_length
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=WINDOW_HOPS * hop_length,
                                                        hop_length=hop_length, n_mels=n_mels, center=True,
                                                        power=2.0, pad_mode="constant")
        self.stack = ConvNeXtStack(n_mels, dim, blocks)
        self.to_latent = nn.Linear(dim, latent_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.autocast(audio.device.type, enabled=False):      # the FFT and the log in float32
            mel = self.mel(audio.squeeze(1).float()).clamp_min(LOG_MEL_FLOOR).log()[..., :-1]
        return self.to_latent(self.stack(mel)).transpose(1, 2)      # (batch, latent_dim, frames)


class ISTFTDecoder(nn.Module):
    """Latents ``(batch, latent_dim, frames)`` -> audio ``(batch, 1, frames x hop_length)``.

    A :class:`ConvNeXtStack` at the frame rate, then a linear head that predicts, for every frame, the log
    magnitude and the phase of the ``n_fft / 2 + 1`` bins of an STFT with window ``n_fft = 4 x hop_length``;
    ``torch.istft`` overlap-adds them into samples. The magnitude is ``exp`` of its prediction (clamped at
    ``exp(7)``), so it is positive and spans the spectrum's orders of magnitude; the phase is used as an
    angle, ``e^(i phase)``, which has no discontinuity to learn across.

    Args:
        hop_length: samples per frame.
        latent_dim: size of each input vector.
        dim: width of the ConvNeXt blocks.
        blocks: how many.
    """

    def __init__(self, hop_length: int, latent_dim: int, dim: int = 128, blocks: int = 4):
        super().__init__()
        self.hop_length, self.n_fft = hop_length, WINDOW_HOPS * hop_length
        self.stack = ConvNeXtStack(latent_dim, dim, blocks)
        self.to_spectrum = nn.Linear(dim, self.n_fft + 2)           # log magnitude and phase per bin
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def spectrum(self, latents: torch.Tensor) -> torch.Tensor:
        """The complex STFT the decoder predicts: ``(batch, n_fft / 2 + 1, frames)`` complex64."""
        log_magnitude, phase = self.to_spectrum(self.stack(latents)).float().transpose(1, 2).chunk(2, dim=1)
        return torch.polar(log_magnitude.clamp(max=LOG_MAGNITUDE_LIMIT).exp(), phase)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.autocast(latents.device.type, enabled=False):    # the inverse FFT in float32
            spectrum = self.spectrum(latents)
            # Centred frames: torch.istft trims half a window at each end, and `length` asks for every frame's
            # hop of samples (the last frame's window still covers them, so no zeros are padded).
            audio = torch.istft(spectrum, self.n_fft, self.hop_length, window=self.window, center=True,
                                length=latents.shape[-1] * self.hop_length)
        return audio.unsqueeze(1)
