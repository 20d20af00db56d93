"""Seeing and hearing: plots of waveforms, spectrograms and training curves, inline playback.

Every plotting function draws on an ``ax`` it is given (or a new one), labels its
axes with units, and returns the ``Axes`` so notebooks can add to it. Nothing here
calls ``plt.show()``: the caller decides, which keeps the functions usable headless
(``make demo`` saves figures with ``fig.savefig``).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from mlm_lessons import audio


def use_compact_inline_figures(quality: int = 85) -> None:
    """Show notebook figures as JPEG instead of PNG.

    Spectrograms are photographs, not line art: as JPEG they are about a fifth of the
    PNG size with no visible loss, which keeps lessons stored with outputs small.
    """
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("jpeg", pil_kwargs={"quality": quality})


def _new_axes(ax, figsize=(8, 2.5)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_waveform(wave, sample_rate: int, ax=None, title: str | None = None,
                  seconds: tuple[float, float] | None = None, **line_kwargs):
    """Plot amplitude against time.

    Args:
        wave: ``(time,)`` samples.
        seconds: optional ``(start, end)`` window to zoom into, in seconds.
    """
    wave = audio.check_audio(wave, sample_rate).detach().cpu()
    wave = audio.to_mono(wave).numpy()
    times = np.arange(len(wave)) / sample_rate
    if seconds is not None:
        keep = (times >= seconds[0]) & (times <= seconds[1])
        times, wave = times[keep], wave[keep]
    ax = _new_axes(ax)
    ax.plot(times, wave, linewidth=0.8, **line_kwargs)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("amplitude")
    ax.set_xlim(times[0], times[-1])
    if title:
        ax.set_title(title)
    return ax


def plot_spectrogram(wave, sample_rate: int, ax=None, title: str | None = None, n_fft: int = 1024,
                     hop_length: int = 256, max_hz: float | None = None, top_db: float = 80.0):
    """Linear-frequency STFT magnitude in dB (relative to the loudest bin), time on x."""
    wave = audio.to_mono(audio.check_audio(wave, sample_rate)).detach().cpu()
    magnitude = audio.stft(wave, n_fft, hop_length).abs()
    decibels = 20 * torch.log10(magnitude.clamp_min(1e-8) / magnitude.max().clamp_min(1e-8))
    decibels = decibels.clamp_min(-top_db).numpy()
    ax = _new_axes(ax, figsize=(8, 3))
    duration = len(wave) / sample_rate
    image = ax.imshow(decibels, origin="lower", aspect="auto", cmap="magma",
                      extent=(0, duration, 0, sample_rate / 2))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (Hz)")
    if max_hz:
        ax.set_ylim(0, max_hz)
    ax.figure.colorbar(image, ax=ax, label="dB re. max", pad=0.01)
    if title:
        ax.set_title(title)
    return ax


def plot_mel(log_mel_spec, sample_rate: int, hop_length: int = 256, ax=None, title: str | None = None):
    """Show a ``(n_mels, frames)`` log-mel spectrogram from :func:`mlm_lessons.audio.log_mel`."""
    spec = torch.as_tensor(log_mel_spec).detach().cpu().numpy()
    if spec.ndim != 2:
        raise ValueError(f"plot_mel expects (n_mels, frames), got shape {spec.shape}")
    ax = _new_axes(ax, figsize=(8, 3))
    duration = spec.shape[1] * hop_length / sample_rate
    image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                      extent=(0, duration, 0, spec.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    ax.figure.colorbar(image, ax=ax, label="log power", pad=0.01)
    if title:
        ax.set_title(title)
    return ax


#: Colour limits of :func:`show_patch`: normalised log-mel patches (zero mean, unit variance over a
#: data set) mostly fall inside, and a fixed scale lets real, reconstructed and generated patches be
#: compared by eye.
PATCH_VALUE_RANGE = (-1.5, 2.5)


def show_patch(patch, ax):
    """Draw one normalised log-mel patch, ``(n_mels, frames)`` or ``(1, n_mels, frames)``, on a fixed colour scale."""
    image = torch.as_tensor(patch).detach().cpu()
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 2:
        raise ValueError(f"show_patch expects (n_mels, frames) or (1, n_mels, frames), got shape {tuple(image.shape)}")
    low, high = PATCH_VALUE_RANGE
    ax.imshow(image.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high)
    return ax


def plot_history(history: Sequence[dict], keys: Iterable[str] = ("loss",), ax=None,
                 smooth: int = 1, log_y: bool = False, title: str | None = None):
    """Plot training curves from the loss history the training loop returns.

    Args:
        history: one dict per logged step with ``"step"`` and some of ``keys``; a curve starts at the first
            row that has its key (an objective that starts later has no keys before it starts).
        smooth: moving-average window in logged points (1 = raw).
    """
    ax = _new_axes(ax, figsize=(6, 3))
    for key in keys:
        points = [(row["step"], row[key]) for row in history if key in row]
        if not points:
            available = sorted(set().union(*history))
            raise KeyError(f"no {key!r} in the history; available keys: {available}")
        steps, values = map(np.asarray, zip(*points))
        if smooth > 1 and len(values) >= smooth:
            values = np.convolve(values, np.ones(smooth) / smooth, mode="valid")
            steps = steps[smooth - 1:]
        ax.plot(steps, values, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    if log_y:
        ax.set_yscale("log")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def play(wave, sample_rate: int, normalize: bool = True):
    """An inline player for a notebook (``IPython.display.Audio``).

    Args:
        wave: ``(time,)`` or ``(channels, time)``.
        normalize: scale to full range; pass False to hear true loudness differences.
    """
    from IPython.display import Audio

    wave = audio.check_audio(wave, sample_rate).detach().cpu().numpy()
    silent = not wave.any()  # IPython divides by the peak when normalising
    return Audio(wave, rate=sample_rate, normalize=normalize and not silent)


def plot_confusion(truth, predictions, labels: Sequence[str], ax=None, title: str | None = None):
    """A confusion matrix as a picture: row = true class, column = predicted class, each row normalised to
    sum to 1 and its count written in each cell. ``truth`` and ``predictions`` are ``(n,)`` class indices into
    ``labels``. Returns the axes; the accuracy is in the title."""
    truth, predictions = np.asarray(truth).ravel(), np.asarray(predictions).ravel()
    if truth.shape != predictions.shape or not len(truth):
        raise ValueError(f"need as many predictions as true labels (at least one), got {len(predictions)} and "
                         f"{len(truth)}")
    if min(truth.min(), predictions.min()) < 0 or max(truth.max(), predictions.max()) >= len(labels):
        raise ValueError(f"class indices must lie in [0, {len(labels)}) for {len(labels)} labels")
    counts = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(counts, (truth, predictions), 1)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax = _new_axes(ax, figsize=(5, 4.5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for row, column in zip(*np.nonzero(counts)):
        ax.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=7,
                color="white" if rates[row, column] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = float((truth == predictions).mean())
    ax.set_title(f"{title + ': ' if title else ''}accuracy {accuracy:.0%}")
    return ax
