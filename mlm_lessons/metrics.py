"""Numbers that say how good a reconstruction or a codebook is.

Lesson 05 measures its codec with three of them, and lesson 09 adds the paper's FAD, KLD and MCC:

* **SI-SNR** (scale-invariant signal-to-noise ratio, Le Roux et al. 2019), in dB. Project the
  estimate onto the reference, ``target = (<estimate, reference> / ||reference||^2) reference``; what is
  left, ``estimate - target``, is noise: ``10 log10(||target||^2 / ||noise||^2)``. Scaling the estimate
  does not change it; 0 dB means as much noise as signal. It rewards getting the *waveform* right,
  phase included, so a codec that sounds right with a shifted phase can still score low.
* **Multi-scale mel distance**: the mean absolute difference of log-mel spectrograms, averaged over
  several FFT sizes (short windows judge timing, long ones pitch). It ignores phase, as ears mostly do;
  it is the loss SoundStream's decoder is trained with and a better proxy for what a listener hears.
* **Codebook usage and perplexity**: of ``codebook_size`` codes, the fraction a batch of codes uses,
  and ``exp(entropy)`` of their empirical distribution, the number of equally likely codes that would
  have the same entropy. A collapsed codebook has perplexity near 1; a perfectly used one near
  ``codebook_size``.
* **Chroma agreement** (lesson 08): how much two clips play the same notes at the same times. A
  *chromagram* folds a spectrogram's frequencies onto the 12 pitch classes of the octave (C, C#, ...,
  B): frame ``t`` says how much of each pitch class sounds then, whatever the octave or the timbre.
  The agreement of two equally long clips is the mean over frames of the *correlation* of their chroma
  vectors (each centred on its mean over the 12 classes, then the cosine): 1 when the same pitch
  classes stand out at the same moments, about 0 for unrelated notes, and 0 for noise, whose chroma is
  flat (a plain cosine would give noise about 0.7 against any music). It ignores timbre, so it asks
  whether a generated clip kept a melody, not whether it sounds like the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mlm_lessons.audio import AudioError, log_mel

MEL_SCALES = (256, 512, 1024, 2048)  # FFT sizes of the multi-scale mel distance (hop = n_fft / 4)


def _paired_audio(estimate: torch.Tensor, reference: torch.Tensor, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    estimate, reference = torch.as_tensor(estimate).float(), torch.as_tensor(reference).float()
    if estimate.shape != reference.shape:
        raise AudioError(f"{who}: estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} must "
                         "have the same shape; trim both to the shorter length first")
    if estimate.dim() not in (1, 2) or estimate.shape[-1] == 0:
        raise AudioError(f"{who} expects (time,) or (batch, time) audio, got shape {tuple(estimate.shape)}")
    if not (torch.isfinite(estimate).all() and torch.isfinite(reference).all()):
        raise AudioError(f"{who} got NaN or infinite samples")
    return estimate, reference


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB.

    Args:
        estimate, reference: ``(time,)`` or ``(batch, time)`` waveforms of the same shape. Both are made
            zero-mean first.

    Returns:
        ``()`` or ``(batch,)``: higher is better; +inf only for a perfect copy (capped by ``eps``).
    """
    estimate, reference = _paired_audio(estimate, reference, "si_snr")
    estimate = estimate - estimate.mean(-1, keepdim=True)
    reference = reference - reference.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def multi_scale_mel_distance(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int,
                             scales: Sequence[int] = MEL_SCALES, n_mels: int = 64) -> torch.Tensor:
    """Mean absolute log-mel difference (natural log), averaged over FFT sizes ``scales``.

    Args:
        estimate, reference: ``(time,)`` or ``(batch, time)`` waveforms of the same shape.

    Returns:
        ``()`` or ``(batch,)``: 0 for identical audio; differentiable, so it doubles as a training loss.
    """
    estimate, reference = _paired_audio(estimate, reference, "multi_scale_mel_distance")
    if estimate.shape[-1] < max(scales):
        raise AudioError(f"multi_scale_mel_distance needs at least {max(scales)} samples (its longest FFT); "
                         f"got {estimate.shape[-1]}; pass longer clips or smaller scales")
    distances = []
    for n_fft in scales:
        settings = dict(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)
        distances.append((log_mel(estimate, **settings) - log_mel(reference, **settings)).abs().mean((-2, -1)))
    return torch.stack(distances).mean(0)


def _code_counts(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    codes = torch.as_tensor(codes)
    if codes.dtype not in (torch.int32, torch.int64) or codes.numel() == 0:
        raise ValueError(f"codes must be a non-empty integer tensor, got {codes.dtype} of shape {tuple(codes.shape)}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}); got values from {int(codes.min())} to "
                         f"{int(codes.max())}")
    return torch.bincount(codes.reshape(-1), minlength=codebook_size).float()


def codebook_usage(codes: torch.Tensor, codebook_size: int) -> float:
    """Fraction of the ``codebook_size`` codes that occur at least once in ``codes`` (any shape)."""
    return (_code_counts(codes, codebook_size) > 0).float().mean().item()


def codebook_perplexity(codes: torch.Tensor, codebook_size: int) -> float:
    """``exp(entropy)`` of the codes' empirical distribution: 1 (one code) to ``codebook_size`` (uniform)."""
    probabilities = _code_counts(codes, codebook_size)
    probabilities = probabilities / probabilities.sum()
    entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum()
    return entropy.exp().item()


# ----------------------------------------------------------------------------------------------------
# Chroma (lesson 08)

CHROMA_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def chroma(audio: torch.Tensor, sample_rate: int, n_fft: int = 2048, hop_length: int = 512,
           lowest: float = 100.0, highest: float = 4000.0) -> torch.Tensor:
    """Chromagram: ``(time,)`` or ``(batch, time)`` audio -> ``(batch, frames, 12)``, each frame's STFT
    magnitudes between ``lowest`` and ``highest`` Hz averaged over the bins of each pitch class (the class
    of the nearest equal-tempered note; index 0 = C, 9 = A at 440 Hz), then scaled to unit length
    (silent frames stay 0). Averaging rather than summing keeps white noise flat, though the classes
    cover different numbers of bins.

    ``n_fft`` = 2048 at 16 kHz resolves 7.8 Hz, under a semitone above about 130 Hz; below ``lowest``
    bins span several semitones and are left out.
    """
    audio = torch.as_tensor(audio).float()
    if audio.dim() == 1:
        audio = audio[None]
    if audio.dim() != 2 or audio.shape[-1] < n_fft:
        raise AudioError(f"chroma expects (time,) or (batch, time) audio of at least n_fft={n_fft} samples, got "
                         f"shape {tuple(audio.shape)}")
    if not 0 < lowest < highest <= sample_rate / 2:
        raise AudioError(f"chroma needs 0 < lowest < highest <= sample_rate / 2, got {lowest}, {highest} at "
                         f"{sample_rate} Hz")
    spectrum = torch.stft(audio, n_fft, hop_length, window=torch.hann_window(n_fft, device=audio.device),
                          return_complex=True).abs()                                  # (batch, bins, frames)
    frequencies = torch.arange(spectrum.shape[1], device=audio.device) * sample_rate / n_fft
    used = (frequencies >= lowest) & (frequencies <= highest)
    midi = 69 + 12 * torch.log2(frequencies[used] / 440.0)
    pitch_class = torch.round(midi).long() % 12
    folding = torch.zeros(int(used.sum()), 12, device=audio.device)
    folding[torch.arange(len(pitch_class)), pitch_class] = 1.0                      # (used bins, 12)
    folding = folding / folding.sum(dim=0)      # a mean per class: white noise has a flat chroma, as it should
    classes = spectrum[:, used].transpose(1, 2) @ folding                           # (batch, frames, 12)
    return classes / classes.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def chroma_agreement(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean over frames of the correlation between the chroma vectors of two equally long clips: ``()`` or
    ``(batch,)`` in ``[-1, 1]``, 1 for the same pitch classes at the same times, 0 against a flat chroma
    (noise, silence; module docstring)."""
    estimate, reference = _paired_audio(estimate, reference, "chroma_agreement")

    def centred(classes):                                        # (batch, frames, 12), unit length or 0
        classes = classes - classes.mean(dim=-1, keepdim=True)
        return classes / classes.norm(dim=-1, keepdim=True).clamp_min(1e-8)

    correlation = (centred(chroma(estimate, sample_rate)) * centred(chroma(reference, sample_rate))).sum(dim=-1)
    agreement = correlation.mean(dim=-1)
    return agreement[0] if estimate.dim() == 1 else agreement
