"""Audio as data: reading, writing, checking and transforming waveforms.

Conventions used across the package:

* A waveform is a float32 ``torch.Tensor`` in [-1, 1], shaped ``(time,)`` for mono
  or ``(channels, time)`` for multichannel, always accompanied by its sample rate.
* Files are read and written with ``soundfile`` (libsndfile); torchaudio is used
  for resampling and mel spectrograms only.
* Every function that receives audio checks it first (:func:`check_audio`), so a
  wrong sample rate, an empty clip or a NaN fails here with a message that says how
  to fix it, rather than three modules later as a shape error.
"""

from __future__ import annotations

import math

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from mlm_lessons.atomic import atomic_path


class AudioError(ValueError):
    """Audio that cannot be used as given (wrong rate, shape, empty, NaN, ...)."""


#: Integer PCM as audio libraries return it (soundfile, scipy.io.wavfile): full scale, and the value of silence.
_PCM_SCALES = {torch.uint8: (128.0, 128.0), torch.int16: (32768.0, 0.0), torch.int32: (2.0 ** 31, 0.0)}


def as_tensor(wave) -> torch.Tensor:
    """Return ``wave`` (numpy array, list or tensor) as a float32 tensor, unchanged in shape.

    Integer PCM samples (uint8, int16, int32, as read by soundfile or scipy.io.wavfile) are scaled to
    [-1, 1), as libsndfile does, so that a 16-bit file's samples and the same file read as floats give the
    same audio. (Python ints and int64 are taken as values, not PCM.)
    """
    wave = wave if isinstance(wave, torch.Tensor) else torch.as_tensor(np.asarray(wave))
    if wave.dtype in _PCM_SCALES:
        full_scale, silence = _PCM_SCALES[wave.dtype]
        return (wave.float() - silence) / full_scale
    return wave.float() if wave.dtype != torch.float32 else wave


def check_audio(wave, sample_rate: int | None = None, expected_sample_rate: int | None = None,
                name: str = "audio") -> torch.Tensor:
    """Validate a waveform and return it as a float32 tensor.

    Args:
        wave: ``(time,)`` or ``(channels, time)`` samples.
        sample_rate: the rate ``wave`` is at, in Hz.
        expected_sample_rate: the rate the caller needs; a mismatch is an error
            that names :func:`resample` as the fix.
        name: what to call the audio in error messages.

    Raises:
        AudioError: on a wrong shape, no samples, NaN/inf, a non-positive or
            mismatched sample rate.
    """
    wave = as_tensor(wave)
    if wave.dim() not in (1, 2):
        raise AudioError(
            f"{name} must be shaped (time,) or (channels, time), got shape {tuple(wave.shape)}; "
            "for a batch, pass the clips one at a time or use the batched model API"
        )
    if wave.shape[-1] == 0:
        raise AudioError(f"{name} is empty (0 samples); check the file or the slice that produced it")
    if wave.dim() == 2 and wave.shape[0] > wave.shape[1]:
        raise AudioError(
            f"{name} has shape {tuple(wave.shape)}: more channels than samples, which usually means "
            "(time, channels) was passed; transpose it to (channels, time)"
        )
    if not torch.isfinite(wave).all():
        bad = int((~torch.isfinite(wave)).sum())
        raise AudioError(f"{name} contains {bad} NaN or infinite sample(s); fix the step that produced them")
    if sample_rate is not None and (not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0):
        raise AudioError(f"sample rate must be a positive integer in Hz, got {sample_rate!r}")
    if expected_sample_rate is not None and sample_rate is not None and sample_rate != expected_sample_rate:
        raise AudioError(
            f"{name} is at {sample_rate} Hz but {expected_sample_rate} Hz is needed; "
            f"convert it with mlm_lessons.audio.resample(wave, {sample_rate}, {expected_sample_rate})"
        )
    return wave


def load_audio(path: str | os.PathLike, sample_rate: int | None = None,
               mono: bool = True) -> tuple[torch.Tensor, int]:
    """Read an audio file.

    Args:
        path: any format libsndfile reads (wav, flac, ogg, ...).
        sample_rate: resample to this rate if given; otherwise keep the file's.
        mono: average the channels to one.

    Returns:
        ``(wave, sample_rate)`` where ``wave`` is float32 ``(time,)`` if ``mono`` else
        ``(channels, time)``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no audio file at {path}; check the path (relative to {Path.cwd()})")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (time, channels)
    except sf.LibsndfileError as err:
        raise AudioError(f"cannot read {path} as audio: {err}") from None
    wave = check_audio(torch.from_numpy(data.T.copy()), file_rate, name=str(path))
    if mono:
        wave = to_mono(wave)
    if sample_rate is not None and sample_rate != file_rate:
        wave = resample(wave, file_rate, sample_rate)
        file_rate = sample_rate
    return wave, int(file_rate)


def save_audio(path: str | os.PathLike, wave, sample_rate: int, subtype: str | None = None) -> Path:
    """Write a waveform atomically: to a temporary file beside ``path``, then renamed.

    An interrupted write therefore never leaves a truncated file under ``path``.

    Args:
        wave: ``(time,)`` or ``(channels, time)`` samples in [-1, 1]; louder samples
            are clipped by the integer encoding, so normalise first.
        sample_rate: in Hz.
        subtype: libsndfile encoding; default: 16-bit PCM for .wav and .flac (small files), Vorbis for .ogg.
    """
    path = Path(path)
    wave = check_audio(wave, sample_rate, name="audio to save")
    data = wave.detach().cpu().numpy()
    data = data.T if data.ndim == 2 else data  # soundfile wants (time, channels)
    file_format, default_subtype = _format_for(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), data, sample_rate, subtype=subtype or default_subtype, format=file_format)
    return path


#: File name suffix -> libsndfile's format and default encoding, for :func:`save_audio`.
FILE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def _format_for(path: Path) -> tuple[str, str]:
    """libsndfile's format and default encoding for a file name."""
    if path.suffix.lower() not in FILE_FORMATS:
        raise AudioError(f"cannot tell the format of {path.name!r}; use a .wav, .flac or .ogg name")
    return FILE_FORMATS[path.suffix.lower()]


def to_mono(wave) -> torch.Tensor:
    """``(channels, time)`` → ``(time,)`` by averaging channels; ``(time,)`` passes through."""
    wave = as_tensor(wave)
    return wave.mean(dim=0) if wave.dim() == 2 else wave


def resample(wave, orig_sample_rate: int, new_sample_rate: int) -> torch.Tensor:
    """Band-limited resampling (windowed sinc, torchaudio) of ``(..., time)`` audio."""
    wave = check_audio(wave, orig_sample_rate, name="audio to resample")
    check_audio(wave, new_sample_rate, name="audio to resample")
    if orig_sample_rate == new_sample_rate:
        return wave
    return torchaudio.functional.resample(wave, orig_sample_rate, new_sample_rate)


def aliased_frequency(frequency_hz: float, sample_rate: int) -> float:
    """The frequency a pure tone appears at after sampling at ``sample_rate``.

    Sampling cannot tell ``f`` from ``f + k * sample_rate`` or from its mirror
    ``k * sample_rate - f``, so every tone folds into ``[0, sample_rate / 2]``
    (the Nyquist band). Below Nyquist a tone is unchanged.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if frequency_hz < 0:
        raise ValueError(f"frequency must be non-negative, got {frequency_hz}")
    folded = frequency_hz % sample_rate
    return float(min(folded, sample_rate - folded))


def peak_normalize(wave, peak: float = 0.9) -> torch.Tensor:
    """Scale so that the largest absolute sample equals ``peak`` (silence stays silent)."""
    wave = as_tensor(wave)
    biggest = wave.abs().max()
    return wave if biggest == 0 else wave * (peak / biggest)


@lru_cache(maxsize=16)
def _mel_transform(sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                   f_min: float, f_max: float | None) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
        f_min=f_min, f_max=f_max, power=2.0, norm="slaney", mel_scale="slaney",
    )


def stft(wave, n_fft: int = 1024, hop_length: int = 256) -> torch.Tensor:
    """Complex short-time Fourier transform with a Hann window.

    Args:
        wave: ``(..., time)``.

    Returns:
        ``(..., n_fft // 2 + 1, frames)`` complex, ``frames = time // hop_length + 1``.
    """
    wave = as_tensor(wave)
    window = torch.hann_window(n_fft, device=wave.device)
    return torch.stft(wave, n_fft, hop_length=hop_length, window=window, return_complex=True)


def log_mel(wave, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, n_mels: int = 64,
            f_min: float = 0.0, f_max: float | None = None, floor: float = 1e-5) -> torch.Tensor:
    """Log-mel spectrogram, the front end of MuLan's audio tower and of the metrics.

    Args:
        wave: ``(time,)`` or ``(batch, time)`` at ``sample_rate``.
        floor: power floor before the log, so silence maps to ``log(floor)`` not ``-inf``.

    Returns:
        ``(n_mels, frames)`` or ``(batch, n_mels, frames)`` natural-log power,
        ``frames = time // hop_length + 1``.
    """
    wave = as_tensor(wave)
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise AudioError(f"log_mel needs the sample rate as a positive integer in Hz, got {sample_rate!r}")
    if wave.dim() not in (1, 2) or wave.shape[-1] == 0:
        raise AudioError(f"log_mel expects (time,) or (batch, time) audio, got shape {tuple(wave.shape)}")
    if wave.shape[-1] <= n_fft // 2:
        hint = (f"; shape {tuple(wave.shape)} looks like (time, channels): transpose it, or mix it to mono with "
                "mlm_lessons.audio.to_mono(wave.T)" if wave.dim() == 2 and wave.shape[0] > wave.shape[1] else "")
        raise AudioError(f"log_mel needs more than n_fft // 2 = {n_fft // 2} samples per clip, got "
                         f"{wave.shape[-1]}{hint}")
    if not torch.isfinite(wave).all():
        raise AudioError("log_mel got NaN or infinite samples; fix the step that produced them")
    transform = _mel_transform(sample_rate, n_fft, hop_length, n_mels, f_min, f_max).to(wave.device)
    return torch.log(transform(wave).clamp_min(floor))


def scaled_log_mel(wave: torch.Tensor, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                   floor: float = 1e-5) -> torch.Tensor:
    """:func:`log_mel` of ``(batch, time)`` audio, computed in float32 whatever the autocast, and scaled so
    that silence (``log(floor)``) is 0 and a full-scale tone's band about 1.6: the order-one inputs that the
    learned encoders (w2v-BERT, MuLan's audio tower) read. Returns ``(batch, n_mels, frames)``."""
    with torch.autocast(wave.device.type, enabled=False):      # the STFT wants float32
        spectrogram = log_mel(wave.float(), sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                              floor=floor)
    silence = math.log(floor)
    return (spectrogram - silence) / -silence


def mel_to_audio(log_mel_spec: torch.Tensor, sample_rate: int, n_fft: int = 1024, hop_length: int = 256,
                 n_iter: int = 32, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """Invert :func:`log_mel` approximately: mel → linear magnitude → Griffin-Lim phase.

    Args:
        log_mel_spec: ``(n_mels, frames)`` as returned by :func:`log_mel`.

    Returns:
        ``(time,)`` waveform; phase is estimated, so expect a slightly "phasey" sound.
    """
    n_mels = log_mel_spec.shape[-2]
    power = log_mel_spec.exp()
    inverse_mel = torchaudio.transforms.InverseMelScale(
        n_stft=n_fft // 2 + 1, n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max,
        norm="slaney", mel_scale="slaney",
    )
    griffin_lim = torchaudio.transforms.GriffinLim(n_fft=n_fft, hop_length=hop_length, power=2.0,
                                                   n_iter=n_iter)
    return griffin_lim(inverse_mel(power))
