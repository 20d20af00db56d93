# %% [markdown]
# # Lesson 00 — Welcome, and audio as data
#
# **Build MusicLM** is a course in ten notebooks. Each one builds one idea that Google's
# [MusicLM](https://arxiv.org/abs/2301.11325) (Agostinelli et al., 2023) depends on, first from
# scratch in small cells and then as part of the tested `mlm_lessons` package; the last notebook
# assembles the pieces into a text-to-music pipeline.
#
# **Goals of this lesson.** By the end you can
# 1. say what a digital waveform is and why 16,000 numbers make one second of sound;
# 2. predict when sampling goes wrong (aliasing) and hear it happen;
# 3. compute a short-time Fourier transform and a log-mel spectrogram by hand and check them
#    against the library;
# 4. load the course's music data, **SynthCaps**, and the real **MusicCaps** captions, and describe
#    what people say about music.
#
# **Prerequisites.** Python and NumPy; a first acquaintance with PyTorch (section 1 is a short
# primer on the three parts of it the course uses); a little linear algebra (a dot product) and
# complex numbers ($e^{i\theta} = \cos\theta + i\sin\theta$). No GPU: every lesson runs on a laptop
# CPU in about three minutes.
#
# ## How to use the course
# | # | notebook | what you build |
# |---|---|---|
# | 00 | audio as data (this one) | waveforms, sampling, STFT, mel; the course data |
# | 01 | attention & transformers | attention from scratch, an encoder–decoder on melodies |
# | 02 | autoregressive models | a decoder-only language model and its sampling |
# | 03 | GANs | adversarial training; the discriminator as a learned loss |
# | 04 | VAEs and the ELBO | latent variable models and the evidence lower bound |
# | 05 | vector quantisation & SoundStream | a neural audio codec and its tokens |
# | 06 | w2v-BERT & semantic tokens | self-supervised audio features and k-means tokens |
# | 07 | MuLan | a joint text–music embedding trained contrastively |
# | 08 | the MusicLM stages | semantic, coarse and fine token models |
# | 09 | the full pipeline | text → music, and how to evaluate it |
#
# Run the cells in order (*Run → Run All Cells* works too). Cells marked **Exercise** are yours:
# replace the `raise NotImplementedError()` with your code and run the test cell below it; the
# tests check properties of your answer, not its exact text. Everything you build here also
# lives in `mlm_lessons`, so a later lesson never depends on your exercise being right.

# %% [markdown]
# ## Set-up
# One cell holds every setting of the lesson. The defaults suit a laptop CPU; on a machine with
# a GPU you would change `PRESET` (this lesson does no training, so the CPU is all it needs).
# `runtime.set_up_lesson` seeds every random generator, sets the CPU threads and the figure format,
# and says what it chose; every lesson starts with it.
#
# Below it, the map of the whole course: **MusicLM in one picture**. At the top, training: each
# music clip becomes three sequences of tokens (from MuLan, w2v-BERT and SoundStream), and three
# transformers learn to predict them. At the bottom, inference: a text prompt becomes MuLan tokens,
# the stages generate semantic then acoustic tokens, and SoundStream's decoder turns those into a
# waveform. Every lesson opens with this picture, its own part highlighted; this one is about the
# two ends of it, the audio.

# %%
import math
import textwrap
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchaudio
from IPython.display import display

from mlm_lessons import audio, captions, datasets, diagrams, runtime, synth, viz

PRESET = "tiny"                 # "tiny" on a CPU; "small" on one GPU (see mlm_lessons.config)
DEVICE = "cpu"                  # nothing here trains, so the CPU is all this lesson needs
SEED = 0
DATA_ROOT = Path("..") / "data"

run = runtime.set_up_lesson(PRESET, DEVICE, SEED, threads=2)
SAMPLE_RATE = run.sample_rate
diagrams.musiclm_diagram(highlight="audio")
plt.show()

# %% [markdown]
# ## 1. PyTorch in three ideas
#
# The course is written in [PyTorch](https://pytorch.org/tutorials/beginner/basics/intro.html). It
# leans on three parts of it, and if they are new to you, the next three cells are the part you need;
# PyTorch's own "Learn the Basics" tutorial goes further.
#
# **Tensors.** A tensor is an $n$-dimensional array with a data type (`dtype`) and a `device` (the
# CPU, or a GPU). A second of audio is a `(time,)` tensor, a batch of clips `(batch, time)`, a batch
# of spectrograms `(batch, mel bands, frames)`; the docstrings of the package give every tensor's
# shape in this form. Arithmetic **broadcasts** as in NumPy: shapes are lined up from the right, and
# a dimension of size 1 is stretched to match, so one gain per clip scales every sample of its clip.

# %%
# NBVAL_CHECK_OUTPUT
t = torch.arange(16_000) / 16_000                           # (time,): one second of sample times
clips = torch.stack([torch.sin(2 * math.pi * f * t) for f in (220.0, 440.0, 880.0)])  # (batch, time)
gains = torch.tensor([0.1, 0.5, 1.0])                      # (batch,): one loudness per clip
scaled = gains[:, None] * clips                            # (batch, 1) * (batch, time) -> (batch, time)
peaks = scaled.abs().amax(dim=1)                           # the loudest sample of each clip
print(f"clips {tuple(clips.shape)} {clips.dtype} on {clips.device}; peaks after scaling {peaks.tolist()}")
assert torch.allclose(peaks, gains)

# %% [markdown]
# **Autograd.** A tensor created with `requires_grad=True` records every operation done with it, and
# `loss.backward()` runs the record backwards (the chain rule) to leave $\partial\,\text{loss} /
# \partial\,\text{tensor}$ in its `.grad`. Below, a quiet tone $q$ should be scaled by a gain $g$ to match
# a loud one $l$, with the loss $L(g) = \text{mean}\big((g\,q - l)^2\big)$. By hand,
# $\partial L / \partial g = \text{mean}\big(2\,(g\,q - l)\,q\big)$; autograd must agree. Then the
# **training loop** that every model of the course runs, in its five steps: clear the old gradients,
# compute the loss (the *forward* pass), `backward()`, and let the optimiser `step()` the parameters.

# %%
quiet, loud = 0.2 * clips[1], 0.6 * clips[1]               # the same 440 Hz tone, 3 times louder
gain = torch.tensor(1.0, requires_grad=True)
loss = ((gain * quiet - loud) ** 2).mean()
loss.backward()
by_hand = (2 * (gain.detach() * quiet - loud) * quiet).mean()
print(f"dL/dg: autograd {gain.grad.item():.5f}, by hand {by_hand.item():.5f}")
assert torch.isclose(gain.grad, by_hand)

optimizer = torch.optim.SGD([gain], lr=10.0)
for step in range(30):
    optimizer.zero_grad()                       # 1. forget the last step's gradients (they accumulate)
    loss = ((gain * quiet - loud) ** 2).mean()  # 2. forward: the loss of the current gain
    loss.backward()                             # 3. backward: d loss / d gain into gain.grad
    optimizer.step()                            # 4. update: gain -= lr * gain.grad
print(f"learned gain {gain.item():.4f} (the answer is 3), loss {loss.item():.2e}")
assert abs(gain.item() - 3.0) < 1e-3

# %% [markdown]
# **Modules.** An `nn.Module` bundles **parameters** (tensors to learn, wrapped in `nn.Parameter`)
# with the `forward` computation that uses them. `model(x)` calls `forward`; `model.parameters()`
# hands every parameter, however deeply nested, to an optimiser; `model.state_dict()` is what a
# checkpoint saves. Every model of the course, from a two-layer network to the SoundStream codec, is a
# module built of modules. Here is a learnable gain followed by a soft clipper (`tanh`), the shape of
# a guitar distortion pedal:

# %%
class Gain(torch.nn.Module):
    """Multiplies a (batch, time) waveform by one learnable gain, kept positive as the exp of its log."""

    def __init__(self):
        super().__init__()
        self.log_gain = torch.nn.Parameter(torch.zeros(()))

    def forward(self, wave):
        return self.log_gain.exp() * wave

pedal = torch.nn.Sequential(Gain(), torch.nn.Tanh())
print(pedal)
print({name: tuple(parameter.shape) for name, parameter in pedal.named_parameters()})
assert pedal(clips).shape == clips.shape and len(list(pedal.parameters())) == 1

# %% [markdown]
# ## 2. Sound as numbers
#
# Sound is a pressure wave. A microphone turns pressure into a voltage and an
# analogue-to-digital converter measures that voltage $f_s$ times a second, the **sample rate**.
# A digital recording is just the list of measurements $x[n] = x(n / f_s)$, $n = 0, 1, 2, \dots$
#
# The simplest sound is a pure tone, $x(t) = A \sin(2\pi f t)$: amplitude $A$ (loudness),
# frequency $f$ in hertz (pitch). Musical pitches are spaced geometrically: each octave doubles
# the frequency and is divided into 12 equal semitones, so MIDI note $m$ sounds at
# $$f(m) = 440\,\text{Hz} \cdot 2^{(m - 69)/12},$$
# with $m = 69$ the A above middle C. Let us make one second of that A.

# %%
def sine(frequency_hz, seconds=1.0, sample_rate=SAMPLE_RATE, amplitude=0.5):
    """A pure tone as a (time,) float32 tensor."""
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return amplitude * torch.sin(2 * math.pi * frequency_hz * t)

a4 = sine(440.0)
print(f"{a4.numel()} samples, dtype {a4.dtype}, range [{a4.min():.2f}, {a4.max():.2f}]")

# %% [markdown]
# Sixteen thousand numbers. Plotted against time, the first 10 ms show 4.4 periods of the wave;
# the dots are the samples, the line is what the loudspeaker will reconstruct between them.

# %%
fig, ax = plt.subplots(figsize=(8, 2.5))
viz.plot_waveform(a4, SAMPLE_RATE, ax=ax, seconds=(0, 0.01), title="A4 = 440 Hz, first 10 ms")
ax.plot(np.arange(160) / SAMPLE_RATE, a4[:160], ".", markersize=3, label="samples")
ax.legend(loc="upper right")
plt.show()
viz.play(a4, SAMPLE_RATE)

# %% [markdown]
# Real instruments are not pure tones. A note from a violin or a piano is a sum of
# **harmonics** at integer multiples of the fundamental, and their relative strengths, with how
# they change over time (the **envelope**), are most of what makes a *timbre*. The course's
# renderer, `mlm_lessons.synth`, builds its instruments from exactly these ingredients. Here are
# three of them playing the same A4: the same period (2.27 ms) in every waveform, a different
# shape within it, and so a different set of harmonics.

# %%
leads = ["flute", "violin", "distorted electric guitar"]
fig, axes = plt.subplots(2, 3, figsize=(12, 4.5))
notes = {}
for column, lead in enumerate(leads):
    notes[lead] = torch.from_numpy(synth.render_note(lead, pitch=69, seconds=1.0, sample_rate=SAMPLE_RATE))
    viz.plot_waveform(notes[lead], SAMPLE_RATE, ax=axes[0, column], seconds=(0.5, 0.51), title=f"{lead}: 10 ms")
    spectrum = torch.fft.rfft(notes[lead][4_000:12_000] * torch.hann_window(8_000)).abs()
    freqs = torch.fft.rfftfreq(8_000, 1 / SAMPLE_RATE)
    axes[1, column].plot(freqs, 20 * torch.log10(spectrum / spectrum.max() + 1e-6), linewidth=0.8)
    axes[1, column].set(xlim=(0, 5_000), ylim=(-80, 5), xlabel="frequency (Hz)", ylabel="dB re. max",
                        title="harmonics at multiples of 440 Hz")
plt.tight_layout()
plt.show()
display(*(viz.play(notes[lead], SAMPLE_RATE) for lead in leads))

# %% [markdown]
# ## 3. Sampling and aliasing
#
# How fast must we sample? The **Nyquist–Shannon theorem** says a signal containing no
# frequency above $B$ is determined exactly by samples taken at $f_s > 2B$. The limit
# $f_s / 2$ is the **Nyquist frequency**: 8 kHz for our 16 kHz audio, 12 kHz for the 24 kHz
# audio MusicLM generates.
#
# Above it, sampling lies. The samples of $\cos(2\pi f n / f_s)$ are identical to those of
# $\cos(2\pi (f_s - f) n / f_s)$, because $\cos(2\pi n - \theta) = \cos\theta$ for integer $n$. A
# 7 kHz tone sampled at 8 kHz therefore comes out as a 1 kHz tone: it **aliases**.
# `audio.aliased_frequency` folds any frequency into the band $[0, f_s/2]$; let us check its
# prediction against what a Fourier transform of the samples actually shows.

# %%
# NBVAL_CHECK_OUTPUT
def peak_frequency(wave, sample_rate):
    spectrum = np.abs(np.fft.rfft(np.asarray(wave)))
    return np.argmax(spectrum) * sample_rate / len(wave)

low_rate = 8_000
for tone_hz in [440, 3_000, 5_000, 7_000]:
    heard = peak_frequency(sine(tone_hz, sample_rate=low_rate), low_rate)
    predicted = audio.aliased_frequency(tone_hz, low_rate)
    print(f"{tone_hz:>5} Hz sampled at {low_rate} Hz -> heard at {heard:6.0f} Hz (predicted {predicted:6.0f} Hz)")
    assert abs(heard - predicted) <= 1

# %% [markdown]
# Listen: a rising sweep from 100 Hz to 11 kHz, sampled properly at 24 kHz and then naively at
# 8 kHz. In the naive version the pitch climbs to 4 kHz, *turns round* and falls, then climbs
# again: every frequency above Nyquist is folded back into the band. This is why every
# resampler (including `audio.resample`, which uses torchaudio's windowed-sinc filter) removes
# content above the new Nyquist frequency *before* it drops samples.

# %%
def sweep(sample_rate, seconds=2.0, start_hz=100.0, end_hz=11_000.0):
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    phase = 2 * math.pi * (start_hz * t + (end_hz - start_hz) * t**2 / (2 * seconds))
    return 0.4 * torch.sin(phase)

proper, naive = sweep(24_000), sweep(8_000)
fig, axes = plt.subplots(1, 2, figsize=(11, 3))
viz.plot_spectrogram(proper, 24_000, ax=axes[0], title="sampled at 24 kHz (MusicLM's rate)")
viz.plot_spectrogram(naive, 8_000, ax=axes[1], title="sampled at 8 kHz: folds at 4 kHz")
plt.tight_layout()
plt.show()
display(viz.play(proper, 24_000), viz.play(naive, 8_000))

# %% [markdown]
# ## 4. From waveform to spectrogram
#
# ### The discrete Fourier transform
# The DFT of $N$ samples measures how much of each frequency $k f_s / N$ they contain:
# $$X[k] = \sum_{n=0}^{N-1} x[n]\, e^{-2\pi i k n / N}, \qquad k = 0, \dots, N-1.$$
# Each $X[k]$ is a dot product of the signal with a complex sinusoid, so the whole transform is
# one matrix product. Written out, it is four lines; the FFT computes the same numbers in
# $O(N \log N)$ instead of $O(N^2)$.

# %%
def dft(x):
    """Discrete Fourier transform of a (N,) real signal, as a (N,) complex tensor."""
    n = torch.arange(len(x), dtype=torch.float64)
    basis = torch.exp(-2j * math.pi * torch.outer(n, n) / len(x))  # (N, N) complex sinusoids
    return basis @ x.to(torch.complex128)

frame = a4[:512].double()
torch.testing.assert_close(dft(frame), torch.fft.fft(frame))
print("our DFT equals torch.fft.fft")

# %% [markdown]
# ### The short-time Fourier transform
# A whole song's DFT tells *which* frequencies occur but not *when*. The STFT cuts the signal
# into overlapping frames of `n_fft` samples, `hop_length` apart, multiplies each by a smooth
# window $w$ (a Hann window, so the frame edges do not add spurious frequencies), and takes the
# DFT of each:
# $$X[m, k] = \sum_{n=0}^{N-1} w[n]\, x[n + mH]\, e^{-2\pi i k n / N}.$$
# Because the input is real, bins $k > N/2$ mirror bins below, so we keep $N/2 + 1$ of them. We
# also pad the signal by $N/2$ at both ends (reflecting it) so frame $m$ is *centred* on sample
# $mH$: that is `torch.stft`'s convention, and the package's `audio.stft`.

# %%
def my_stft(x, n_fft=1024, hop_length=256):
    """STFT of a (time,) signal -> (n_fft // 2 + 1, frames) complex."""
    padded = torch.nn.functional.pad(x[None, None], (n_fft // 2, n_fft // 2), mode="reflect")[0, 0]
    frames = padded.unfold(0, n_fft, hop_length)                   # (frames, n_fft)
    window = torch.hann_window(n_fft)
    return torch.fft.rfft(frames * window, dim=-1).T               # (n_fft // 2 + 1, frames)

clip_attrs = synth.sample_attributes(np.random.default_rng(SEED), lead="piano", backing=("bass",), mood="calming")
clip = torch.from_numpy(synth.render(clip_attrs, seconds=4.0, sample_rate=SAMPLE_RATE, seed=SEED))
ours, package = my_stft(clip), audio.stft(clip)
torch.testing.assert_close(ours, package, atol=1e-4, rtol=1e-4)
print(f"STFT of a 4 s clip: {tuple(ours.shape)} = (frequency bins, frames); matches audio.stft")

# %% [markdown]
# The magnitude $|X[m, k]|$ in decibels is the **spectrogram**: time across, frequency up. The
# window length sets a trade-off you can see: a long window resolves close frequencies but
# smears fast events; a short one does the opposite (the uncertainty principle of signal
# processing). Compare the piano's harmonics, horizontal lines, with the note onsets, vertical
# edges.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3))
for ax, n_fft in zip(axes, [256, 2048]):
    viz.plot_spectrogram(clip, SAMPLE_RATE, ax=ax, n_fft=n_fft, hop_length=n_fft // 4, max_hz=4_000,
                         title=f"n_fft = {n_fft} ({1000 * n_fft / SAMPLE_RATE:.0f} ms window)")
plt.tight_layout()
plt.show()
print(captions.caption(clip_attrs, np.random.default_rng(SEED)))

# %% [markdown]
# ### The mel scale
# Musical pitch is logarithmic in frequency: 100 → 200 Hz and 1,000 → 2,000 Hz are both an
# octave. The **mel scale** is something else: it comes from listeners asked to mark equal steps of
# *perceived pitch distance* (Stevens, Volkmann & Newman, 1937), and their steps are nearly
# equal in hertz below about 1 kHz and nearly equal in ratio above it. In the common "HTK" form
# $$\text{mel}(f) = 2595 \log_{10}\!\left(1 + \frac{f}{700}\right),$$
# the octave 100 → 200 Hz spans about 133 mel and the octave 1,000 → 2,000 Hz about 521 (checked
# below): the low octave gets a quarter of the room. The Slaney form used by librosa and by
# `audio.log_mel` is exactly linear below 1 kHz and logarithmic above. A **mel filterbank** is a set
# of triangular filters equally spaced in mel; multiplying
# the power spectrogram by it pools the linear-frequency bins into a few dozen perceptual bands.
# Let us build the HTK version and check it against torchaudio.

# %%
def hz_to_mel(f):
    return 2595.0 * torch.log10(1.0 + f / 700.0)

def mel_to_hz(m):
    return 700.0 * (10 ** (m / 2595.0) - 1.0)

def mel_filterbank(n_fft, n_mels, sample_rate):
    """Triangular filters, shape (n_fft // 2 + 1, n_mels), peaks equally spaced in mel."""
    bin_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges_hz = mel_to_hz(torch.linspace(hz_to_mel(torch.tensor(0.0)), hz_to_mel(torch.tensor(sample_rate / 2)),
                                        n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)

low_octave = (hz_to_mel(torch.tensor(200.0)) - hz_to_mel(torch.tensor(100.0))).item()
high_octave = (hz_to_mel(torch.tensor(2000.0)) - hz_to_mel(torch.tensor(1000.0))).item()
print(f"100 -> 200 Hz: {low_octave:.0f} mel; 1,000 -> 2,000 Hz: {high_octave:.0f} mel")
assert round(low_octave) == 133 and round(high_octave) == 521

ours = mel_filterbank(1024, 64, SAMPLE_RATE)
reference = torchaudio.functional.melscale_fbanks(513, 0.0, SAMPLE_RATE / 2, 64, SAMPLE_RATE, mel_scale="htk")
torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)
print(f"filterbank {tuple(ours.shape)} matches torchaudio's")

fig, ax = plt.subplots(figsize=(8, 2.5))
ax.plot(torch.linspace(0, SAMPLE_RATE / 2, 513), ours[:, ::4])
ax.set(xlabel="frequency (Hz)", ylabel="weight", title="every 4th of 64 mel filters: narrow at the bottom, wide at the top")
plt.show()

# %% [markdown]
# ### Log-mel spectrograms
# Taking the log of the pooled power compresses its enormous dynamic range (a whisper and a
# shout differ by a factor of about $10^6$ in power) into something a neural network can digest.
# The result, a `(n_mels, frames)` image, is the input of MuLan's audio tower (lesson 07) and of
# the classifier behind the evaluation metrics (lesson 09). Can you still hear the music in it?
# Griffin-Lim (Griffin & Lim, 1984) guesses the phase the mel image threw away; the result is
# recognisable but "phasey", which is one reason MusicLM generates *codec tokens* (lesson 05),
# not spectrograms.

# %%
mel = audio.log_mel(clip, SAMPLE_RATE, n_mels=64)
rebuilt = audio.mel_to_audio(mel, SAMPLE_RATE, n_iter=32)
fig, ax = plt.subplots(figsize=(8, 3))
viz.plot_mel(mel, SAMPLE_RATE, ax=ax, title=f"log-mel spectrogram, {tuple(mel.shape)}")
plt.show()
three_seconds = 3 * SAMPLE_RATE  # players embed the audio in the notebook: keep them short
display(viz.play(clip[:three_seconds], SAMPLE_RATE), viz.play(rebuilt[:three_seconds], SAMPLE_RATE))

# %% [markdown]
# ## 5. The course data: SynthCaps
#
# MusicLM was trained on 280,000 hours of music, which nobody can download for a course. So the
# course makes its own: `mlm_lessons.synth` renders music from a seed and a set of **known
# attributes** (lead instrument, backing, tempo, key and mode, register, loudness, mood), and
# `mlm_lessons.captions` describes each clip in the style of MusicCaps. Because we know the
# attributes exactly, later lessons can *measure* whether generated music follows its text.
#
# The first call renders the `tiny` preset (a few hundred short clips) into `data/`; later calls
# just read it. The same command works from a terminal:
# `python -m mlm_lessons data --preset tiny --out data/synthcaps-tiny`.

# %%
dataset_dir = datasets.ensure_synthcaps(PRESET, root=DATA_ROOT)
splits = {name: datasets.SynthCapsDataset(dataset_dir, split=name) for name in ["train", "valid", "test"]}
print({name: len(split) for name, split in splits.items()})

# %% [markdown]
# Each example is a dictionary: the audio, its caption, the MusicCaps-style aspect list, and the
# attributes the renderer used.

# %%
example = splits["train"][0]
print(f"audio {tuple(example['audio'].shape)} at {SAMPLE_RATE} Hz")
print("caption:   ", example["caption"])
print("aspects:   ", example["aspects"])
print("attributes:", example["attributes"])
viz.play(example["audio"][:three_seconds], SAMPLE_RATE)

# %% [markdown]
# A few more, with their spectrograms. Listen for the lead instrument, then read the caption.

# %%
fig, axes = plt.subplots(3, 1, figsize=(9, 7))
players = []
for ax, index in zip(axes, [1, 2, 3]):
    item = splits["train"][index]
    viz.plot_spectrogram(item["audio"], SAMPLE_RATE, ax=ax, max_hz=5_000)
    ax.set_title(textwrap.fill(item["caption"], 130), fontsize=8, loc="left")
    players.append(viz.play(item["audio"][: 2 * SAMPLE_RATE], SAMPLE_RATE))
plt.tight_layout()
plt.show()
display(*players)

# %% [markdown]
# How balanced is the data? A dataset where one instrument dominates teaches a model to play that
# instrument. Counting attributes is the first thing to do with any new dataset.

# %%
attributes = [splits["train"][i]["attributes"] for i in range(len(splits["train"]))]
fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, key in zip(axes, ["lead", "mood", "mode"]):
    counts = Counter(row[key] for row in attributes).most_common()
    ax.barh([name for name, _ in counts][::-1], [n for _, n in counts][::-1])
    ax.set(title=f"train clips by {key}", xlabel="clips")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. MusicCaps: what people say about music
#
# MusicCaps (Agostinelli et al., 2023) is the evaluation set released with MusicLM: 5,521
# ten-second YouTube excerpts, each described by a professional musician with a free-text
# **caption** and an **aspect list** of short tags. Only the text is distributed (CC BY-SA 4.0);
# the audio stays on YouTube. The course reads the CSV from a path: set the environment variable
# `MUSICCAPS_CSV`, or place it at `../shared/data/musiccaps-public.csv` beside the project.
# Without it, this section falls back to a small sample file with the same columns.

# %%
musiccaps_csv = datasets.find_musiccaps_csv()
if musiccaps_csv is None:
    musiccaps_csv = Path("..") / "tests" / "fixtures" / "musiccaps-sample.csv"
    print("MusicCaps not found; using the small sample file instead")
records = datasets.load_musiccaps(musiccaps_csv)
print(f"{len(records)} captions from {musiccaps_csv.name}")
print(records[0].caption)

# %% [markdown]
# The most frequent aspects are the vocabulary a text-to-music model must understand: genres,
# instruments, moods, tempo words, and, prominently, *recording quality* ("low quality"), which
# reminds us that MusicLM learned from YouTube audio.

# %%
aspect_counts = datasets.aspect_counts(records)
top = aspect_counts.most_common(20)
fig, ax = plt.subplots(figsize=(8, 5))
ax.barh([name for name, _ in top][::-1], [n for _, n in top][::-1])
ax.set(title="20 most frequent MusicCaps aspects", xlabel="captions mentioning the aspect")
plt.show()
words_per_caption = [len(record.caption.split()) for record in records]
print(f"median caption length {np.median(words_per_caption):.0f} words; "
      f"median {np.median([len(r.aspect_list) for r in records]):.0f} aspects per clip")

# %% [markdown]
# How much of that vocabulary does SynthCaps speak? Its captions use MusicCaps' most frequent
# tempo, mood and instrument words, so a model trained on SynthCaps learns a (small) subset of
# the real task's language.

# %%
synth_aspects = Counter(a for i in range(len(splits["train"])) for a in splits["train"][i]["aspects"])
shared = sorted(set(synth_aspects) & set(aspect_counts), key=lambda a: -aspect_counts[a])
print(f"SynthCaps uses {len(synth_aspects)} distinct aspects; {len(shared)} of them also occur in the captions above")
print("most frequent shared aspects:", ", ".join(shared[:12]))

# %% [markdown]
# ## Exercises
# Each exercise has a solution cell for you to fill in and a test cell worth the points shown. The
# tests call your functions on inputs you have not seen, so compute, don't copy numbers.
#
# **Exercise 1 (2 points): derive.** Invert the pitch formula of section 2. Write
# `hz_to_midi(frequency_hz)`, the (fractional) MIDI note of a frequency, and
# `cents_from_nearest(frequency_hz)`, how far the frequency is from the nearest equal-tempered note
# in **cents** (hundredths of a semitone, in $[-50, 50)$; 445 Hz is about 20 cents sharp of A4). Both
# take and return tensors of any shape.

# %% solution ex1_hz_to_midi
def hz_to_midi(frequency_hz):
    ### BEGIN SOLUTION
    return 69 + 12 * torch.log2(torch.as_tensor(frequency_hz, dtype=torch.float64) / 440.0)
    ### END SOLUTION

def cents_from_nearest(frequency_hz):
    ### BEGIN SOLUTION
    semitones = hz_to_midi(frequency_hz)
    return 100 * (semitones - torch.round(semitones))
    ### END SOLUTION

# %% tests ex1_hz_to_midi_tests 2
assert abs(float(hz_to_midi(torch.tensor(440.0))) - 69) < 1e-6, "A4 = 440 Hz is MIDI 69"
assert abs(float(cents_from_nearest(torch.tensor(445.0))) - 19.56) < 0.05, "445 Hz is about 19.6 cents sharp"
generator = torch.Generator().manual_seed(2024)
notes = torch.randint(21, 109, (50,), generator=generator).double()
frequencies = 440.0 * 2.0 ** ((notes - 69) / 12)
assert torch.allclose(torch.as_tensor(hz_to_midi(frequencies), dtype=torch.float64), notes, atol=1e-6)
### BEGIN HIDDEN TESTS
offsets = torch.rand(50, generator=generator, dtype=torch.float64) * 98 - 49   # cents, away from the +-50 edge
detuned = frequencies * 2.0 ** (offsets / 1200)
assert torch.allclose(torch.as_tensor(cents_from_nearest(detuned), dtype=torch.float64), offsets, atol=1e-4)
assert tuple(torch.as_tensor(hz_to_midi(detuned.reshape(5, 10))).shape) == (5, 10), "any shape in, same shape out"
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (3 points): implement.** Section 3 showed what keeping every `factor`-th sample does
# to a tone above the new Nyquist frequency: it folds back as a tone that was never played. Write
# `downsample(wave, factor)` that does it properly: first remove every frequency at or above the new
# Nyquist frequency (`sample_rate / factor / 2`, i.e. every DFT bin at or above
# `len(wave) / (2 * factor)`: zero those bins of `torch.fft.rfft(wave)` and go back with
# `torch.fft.irfft(..., n=len(wave))`), *then* keep every `factor`-th sample. (`audio.resample` does
# the same with a smoother filter; do not call it here.) Before you run the tests, predict where
# a 3 kHz tone sampled at 16 kHz would land if you only kept every fourth sample.

# %% solution ex2_downsample
def downsample(wave, factor):
    ### BEGIN SOLUTION
    spectrum = torch.fft.rfft(wave)
    spectrum[math.ceil(len(wave) / (2 * factor)):] = 0
    return torch.fft.irfft(spectrum, n=len(wave))[::factor]
    ### END SOLUTION

# %% tests ex2_downsample_tests 3
kept = downsample(sine(1_000, sample_rate=16_000), 4)      # 1 kHz is below the new 2 kHz Nyquist: kept
assert kept.shape == (4_000,), "one sample in four"
assert abs(peak_frequency(kept, 4_000) - 1_000) <= 1 and abs(kept.abs().max() - 0.5) < 0.02
removed = downsample(sine(3_000, sample_rate=16_000), 4)   # 3 kHz is above it: removed, not folded to 1 kHz
assert removed.abs().max() < 0.01, "a tone above the new Nyquist frequency must vanish"
### BEGIN HIDDEN TESTS
generator = torch.Generator().manual_seed(7)
for _ in range(6):
    factor = [2, 4, 5, 8][int(torch.randint(4, (1,), generator=generator))]   # each divides 16,000
    nyquist = 16_000 // factor // 2
    below = int(torch.randint(100, nyquist - 100, (1,), generator=generator))
    above = int(torch.randint(nyquist + 100, 7_900, (1,), generator=generator))
    out = downsample(sine(below, sample_rate=16_000), factor)
    assert out.shape == (16_000 // factor,)
    assert abs(peak_frequency(out, 16_000 // factor) - below) <= 1 and abs(out.abs().max() - 0.5) < 0.02
    assert downsample(sine(above, sample_rate=16_000), factor).abs().max() < 0.01
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (3 points): debug.** A colleague wrote the loudness curve below: one value per STFT
# frame, $10 \log_{10}\big(\tfrac{1}{N}\sum_n (w[n]\,x_m[n])^2 + 10^{-10}\big)$ dB, with the Hann
# window $w$ and the centred frames of `my_stft`. It has two bugs: it gives fewer values than
# `audio.stft` has frames, and a tone 50 times louder comes out about 68 dB louder instead of
# $20 \log_{10} 50 \approx 34$ dB. Copy it into the solution cell, find both bugs and fix them.
#
# ```python
# def frame_energy_db(wave, n_fft=1024, hop_length=256):
#     frames = wave.unfold(0, n_fft, hop_length) * torch.hann_window(n_fft)
#     return 20 * torch.log10(frames.pow(2).mean(-1) + 1e-10)
# ```

# %% solution ex3_energy
def frame_energy_db(wave, n_fft=1024, hop_length=256):
    ### BEGIN SOLUTION
    padded = torch.nn.functional.pad(wave[None, None], (n_fft // 2, n_fft // 2), mode="reflect")[0, 0]
    frames = padded.unfold(0, n_fft, hop_length) * torch.hann_window(n_fft)
    return 10 * torch.log10(frames.pow(2).mean(-1) + 1e-10)
    ### END SOLUTION

# %% tests ex3_energy_tests 3
noise = 0.1 * torch.randn(12_345, generator=torch.Generator().manual_seed(3))
assert frame_energy_db(noise).shape == (audio.stft(noise).shape[-1],), "one value per STFT frame"
quiet_then_loud = torch.cat([0.01 * sine(440.0, 0.5), 0.5 * sine(440.0, 0.5)])
curve = frame_energy_db(quiet_then_loud)
assert abs((curve[-5:].mean() - curve[:5].mean()).item() - 20 * math.log10(50)) < 1.0, "50x louder is 34 dB"
### BEGIN HIDDEN TESTS
generator = torch.Generator().manual_seed(11)
for _ in range(3):
    ratio = float(torch.empty(()).uniform_(2, 200, generator=generator))
    length = int(torch.randint(4_000, 20_000, (1,), generator=generator))
    wave = torch.cat([0.002 * sine(300.0, length / 16_000), 0.002 * ratio * sine(300.0, length / 16_000)])
    curve = frame_energy_db(wave, n_fft=512, hop_length=128)
    assert curve.shape == (audio.stft(wave, n_fft=512, hop_length=128).shape[-1],)
    assert abs((curve[-5:].mean() - curve[:5].mean()).item() - 20 * math.log10(ratio)) < 1.0
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 4 (2 points): implement.** Counting attributes is the first thing to do with a new
# dataset (section 5). Write `count_attribute(examples, key)`: given any iterable of examples shaped
# like SynthCaps' (dictionaries with an `"attributes"` dictionary), return a `Counter` from each value
# of `attributes[key]` to the number of examples that have it. Then try it on `splits["train"]` with
# `"lead"` or `"mood"` in a cell of your own.

# %% solution ex4_counts
def count_attribute(examples, key):
    ### BEGIN SOLUTION
    return Counter(example["attributes"][key] for example in examples)
    ### END SOLUTION

# %% tests ex4_counts_tests 2
toy = [{"attributes": {"lead": "flute", "mood": "calm"}}, {"attributes": {"lead": "piano", "mood": "calm"}},
       {"attributes": {"lead": "flute", "mood": "happy"}}]
assert count_attribute(toy, "lead") == Counter({"flute": 2, "piano": 1})
assert count_attribute(toy, "mood") == Counter({"calm": 2, "happy": 1})
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(5)
values = [str(v) for v in rng.choice(["a", "b", "c", "d"], size=40)]
fake = ({"attributes": {"tempo": value}, "audio": None} for value in values)   # a generator, read once
assert count_attribute(fake, "tempo") == Counter(values)
assert count_attribute([], "lead") == Counter()
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 5 (2 points, graded by hand): explain.** A friend proposes storing the course's
# 16 kHz clips at 4 kHz, by keeping every fourth sample, "since every melody note is below 1 kHz".
# Using what you measured in sections 2–4, say in a few sentences what a listener would lose, and
# what they would hear that was never played. Write your answer in the next cell.

# %% answer ex5_sample_rate 2
# *Model answer and marking guide.* 1 point: the harmonics above the new 2 kHz Nyquist frequency are lost, and
# with them much of the timbre (section 2: the violin's and the guitar's harmonics reach 5 kHz;
# the pitch survives, the instruments start to sound alike). 1 point: without a low-pass filter
# first, those harmonics do not disappear but fold back below 2 kHz (aliasing, section 3) as
# inharmonic tones at frequencies no instrument played; filtering first (exercise 2) removes them.

# %% [markdown]
# ## What you built
# - The PyTorch you need: tensors and broadcasting, autograd checked against a derivative by hand,
#   the five-step training loop, and a module of your own.
# - Tones, harmonics and timbre as numbers: a waveform is samples of pressure at a fixed rate, and
#   content above half that rate aliases, as you measured and heard.
# - A DFT, an STFT and an HTK mel filterbank from scratch, each checked against the library; the
#   STFT trades time resolution against frequency resolution, and a log-mel spectrogram pools it into
#   perceptual bands and compresses its range: the standard input of audio networks.
# - The course data: SynthCaps gives music with known attributes and MusicCaps-style captions, so
#   "does the music match the text?" becomes measurable; MusicCaps shows the language of the real task.
#
# **A common misconception.** A spectrogram is often described as "the sound itself". It is
# not: a magnitude spectrogram discards phase, and the Griffin-Lim cell above shows what that
# costs. MusicLM therefore works in the token space of a neural codec, SoundStream (Zeghidour et
# al., 2021), whose decoder produces waveforms directly.
#
# **Check your understanding.** (1) A 7 kHz tone is recorded at 11,025 Hz: at what frequency does it
# appear, and why can no later processing tell it apart from a real tone there? (2) You double the STFT's
# window length: what improves, what gets worse, and by how much? (3) Mel bands are narrow at the
# bottom and wide at the top (an octave is 133 mel low down, 521 higher up, measured above): whose
# harmonics does a 64-band log-mel keep apart better, a 110 Hz bass's or an 880 Hz flute's, and why?
# (4) A caption says "fast"; SynthCaps stores a tempo in bpm. What would you need to check that the
# word is right?
#
# **Going further.** Julius O. Smith, *Spectral Audio Signal Processing* (online book) for the
# STFT; Stevens, Volkmann & Newman (1937) for the mel scale; the MusicCaps card on Kaggle for the
# dataset. Next: **lesson 01**, attention and transformers.
