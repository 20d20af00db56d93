# %% [markdown]
# # Lesson 05 — Vector quantisation and the SoundStream codec
#
# From here on the course builds MusicLM's own parts, and the first is the one that makes sound.
# MusicLM never predicts a waveform. Its last two stages predict **acoustic tokens**, small integers
# at 50 per second, and a neural codec, **SoundStream** (Zeghidour et al., 2021), turns those integers
# back into audio. The codec is an autoencoder like lesson 04's, with one change that makes tokens
# possible: its bottleneck is *quantised*. Every frame of the encoder's output is replaced by the
# nearest vector in a learned table, and only that vector's index is kept.
#
# **Goals.** By the end you can
# 1. explain vector quantisation, the straight-through estimator, and the codebook and commitment
#    losses, and check your own versions against `mlm_lessons.quantize`;
# 2. show codebook collapse and fix it with k-means initialisation, EMA updates and dead-code
#    replacement, measured over several seeds;
# 3. explain residual vector quantisation (RVQ), quantiser dropout and the bitrate arithmetic of
#    MusicLM's 6 kbps codec and of ours;
# 4. train a small SoundStream on the course music, load a longer-trained one, listen to it at 1 to
#    4 levels, and measure it against a non-learned codec at the same bitrate.
#
# **Prerequisites.** Lesson 03 (discriminators, hinge and feature-matching losses) and lesson 04
# (autoencoders); convolutions with stride and dilation.

# %%
import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display

from mlm_lessons import audio, config, datasets, diagrams, metrics, quantize, runtime, soundstream, viz

# ---- the one cell to change: scale and device ------------------------------------------------
PRESET = "tiny"          # the course scale (see mlm_lessons.config)
DEVICE = "cpu"           # "cuda" on a GPU machine
STEPS_SCALE = 1          # multiply the brief codec training (e.g. 50 on a GPU)
SEED = 0
# -----------------------------------------------------------------------------------------------

run = runtime.set_up_lesson(PRESET, DEVICE, SEED)   # seeds every generator, one CPU thread, compact figures
PRESET_CONFIG, SAMPLE_RATE = run.preset, run.sample_rate
diagrams.musiclm_diagram(highlight="soundstream")
plt.show()

# %% [markdown]
# The picture above is the whole of MusicLM; this lesson builds the blue boxes. In training, the
# SoundStream encoder turns music into acoustic tokens $A$ that the coarse and fine stages learn to
# predict; at generation time, the SoundStream decoder turns their predictions into a waveform.
#
# ## 1. From a VAE to a VQ-VAE
# Lesson 04's VAE mapped each input to a *Gaussian* over a continuous code. A **VQ-VAE**
# (van den Oord et al., 2017) keeps an encoder and a decoder but replaces the continuous code by a
# discrete one. A **codebook** holds $K$ vectors $c_1, \dots, c_K$; the encoder's output $z$ is
# replaced by its nearest code,
# $$k^\star = \arg\min_k \|z - c_k\|^2, \qquad q = c_{k^\star},$$
# and only the integer $k^\star$ needs to be stored or predicted: $\log_2 K$ bits. That integer is
# what a language model can predict, one token at a time, with lesson 02's machinery.
#
# The squared distance expands to $\|z\|^2 - 2\,z\cdot c_k + \|c_k\|^2$, so the distances from a
# whole batch to the whole codebook are one matrix product. Here is a codebook of 8 codes in the
# plane and the region each code wins (its *Voronoi cell*):

# %%
def my_nearest_codes(vectors, codebook):
    """(n, dim), (K, dim) -> (n,) index of the nearest code."""
    squared = (vectors ** 2).sum(-1, keepdim=True) - 2 * vectors @ codebook.T + (codebook ** 2).sum(-1)
    return squared.argmin(-1)

toy_codebook = torch.randn(8, 2, generator=torch.Generator().manual_seed(SEED)) * 1.5
grid = torch.stack(torch.meshgrid(torch.linspace(-4, 4, 200), torch.linspace(-4, 4, 200), indexing="xy"), -1).reshape(-1, 2)
grid_codes = my_nearest_codes(grid, toy_codebook)
torch.testing.assert_close(grid_codes, quantize.nearest_codes(grid, toy_codebook))

fig, ax = plt.subplots(figsize=(4.5, 4))
ax.imshow(grid_codes.reshape(200, 200).numpy(), origin="lower", extent=(-4, 4, -4, 4), cmap="tab10", alpha=0.35)
ax.scatter(*toy_codebook.T, color="black", marker="x", s=60, label="codes $c_k$")
for index, (x, y) in enumerate(toy_codebook.tolist()):
    ax.annotate(str(index), (x, y), textcoords="offset points", xytext=(5, 5))
ax.set(title="8 codes and the cells they win", xlabel="dimension 1", ylabel="dimension 2")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# ### The straight-through estimator
# The $\arg\min$ has no useful gradient: moving $z$ a little changes $q$ not at all (or jumps it to
# another code), so the decoder's gradient would never reach the encoder. VQ-VAE's answer is to
# pretend, in the backward pass only, that quantisation was the identity:
# $$\hat z = z + \operatorname{sg}(q - z), \qquad \text{value } \hat z = q, \qquad \frac{\partial \hat z}{\partial z} = I,$$
# where $\operatorname{sg}$ is stop-gradient (`.detach()`). The decoder sees $q$; the encoder
# receives the gradient that was meant for $q$. Written small and checked against the package:

# %%
def my_straight_through(z, q):
    return z + (q - z).detach()

vq = quantize.VectorQuantizer(2, 8, kmeans_init=False, seed=SEED).eval()   # eval: look up, don't learn
z = torch.randn(4, 3, 2, requires_grad=True)                                # (batch, frames, dim)
weights = torch.randn(4, 3, 2)
output = vq(z)
(output.quantized * weights).sum().backward()
package_grad, z.grad = z.grad.clone(), None
(my_straight_through(z, vq.decode(output.codes)) * weights).sum().backward()
torch.testing.assert_close(output.quantized, vq.decode(output.codes))   # the value is the code...
torch.testing.assert_close(z.grad, weights)                              # ...the gradient passes straight through
torch.testing.assert_close(package_grad, weights)
print("straight-through: value = nearest code, gradient = identity (mine and the package's)")

# %% [markdown]
# ### Two more losses
# Nothing so far moves the codebook, and nothing stops the encoder's outputs from drifting away
# from it. VQ-VAE adds two terms to the reconstruction loss:
# $$\mathcal L = \mathcal L_\text{rec} + \underbrace{\|\operatorname{sg}(z) - q\|^2}_{\text{codebook loss}} + \beta\,\underbrace{\|z - \operatorname{sg}(q)\|^2}_{\text{commitment loss}}.$$
# The codebook loss moves each *used* code towards the vectors it stands for; the commitment loss
# (weight $\beta$) keeps the encoder close to its codes.
#
# ## 2. Codebook collapse, and its three cures
# The codebook loss only moves a code that wins some vectors. A code that starts far from the data
# wins nothing, so it never moves and never will: it is **dead**. With a random initial codebook most
# codes can die this way, and a codebook of 32 codes behaves like one of 8: fewer bits, worse
# reconstructions. SoundStream uses three cures (section 3.2 of the paper):
#
# 1. **k-means initialisation**: start the codebook at the k-means centroids of the first batch;
# 2. **EMA updates** (VQ-VAE's appendix): instead of the codebook loss, keep running averages of the
#    count $N_k$ and the sum $m_k$ of the vectors each code wins, and set $c_k = m_k / N_k$, an online
#    k-means;
# 3. **dead-code replacement**: a code unused for a number of steps is moved onto a random vector of
#    the current batch.
#
# We quantise 2-D data with 16 clusters with a codebook of 32 codes. The codebook starts at random
# around the origin, away from the data, as an untrained encoder's outputs are away from wherever the
# codes happen to be. We train it by gradient descent on the codebook loss, then switch to EMA, then
# add dead-code replacement, then k-means initialisation (SoundStream's recipe). No encoder here: the
# vectors stay put, which isolates the codebook's own dynamics. Each variant runs with three seeds,
# since how many codes die depends on the draw.

# %%
def cluster_data(num_points, seed):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1).reshape(-1, 2)
    centres = (centres - 1.5) * 2.5 + 8.0                 # a 4 x 4 grid of clusters, far from the origin
    which = torch.randint(0, 16, (num_points,), generator=generator)
    return centres[which] + 0.35 * torch.randn(num_points, 2, generator=generator)

VARIANTS = {   # name: VectorQuantizer settings
    "random init, codebook loss": dict(ema=False, kmeans_init=False, dead_code_steps=0),
    "random init, EMA": dict(ema=True, kmeans_init=False, dead_code_steps=0),
    "+ dead-code replacement": dict(ema=True, kmeans_init=False, dead_code_steps=10),
    "+ k-means init (SoundStream)": dict(ema=True, kmeans_init=True, dead_code_steps=10),
}

def train_codebook(settings, seed, steps=300):
    """Quantise batches of 2-D points; returns the quantiser and held-out (MSE, fraction of codes used)."""
    quantizer = quantize.VectorQuantizer(2, 32, commitment_weight=0.0, seed=seed, **settings)
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=0.05) if not settings["ema"] else None
    for step in range(steps):
        batch = cluster_data(256, seed=1000 * seed + step).unsqueeze(0)     # (1, 256 frames, 2)
        loss = quantizer(batch).loss
        if optimizer:
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    held_out = cluster_data(4000, seed=999).unsqueeze(0)
    quantizer.eval()
    codes = quantizer.encode(held_out)
    mse = F.mse_loss(quantizer.decode(codes), held_out).item()
    return quantizer, mse, metrics.codebook_usage(codes, 32)

collapse_results = {name: [train_codebook(settings, seed) for seed in range(3)] for name, settings in VARIANTS.items()}
print(f"{'variant':<28} | {'held-out MSE (3 seeds)':<24} | codes used of 32 (3 seeds)")
for name, runs in collapse_results.items():
    print(f"{name:<28} | {', '.join(f'{mse:.3f}' for _, mse, _ in runs):<24} | "
          f"{', '.join(f'{round(usage * 32)}' for _, _, usage in runs)}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), sharex=True, sharey=True)
points = cluster_data(2000, seed=999)
for ax, (name, runs) in zip(axes, collapse_results.items()):
    quantizer, mse, usage = runs[0]
    used = torch.bincount(quantizer.encode(points.unsqueeze(0)).flatten(), minlength=32) > 0
    ax.scatter(*points.T, s=2, color="lightgrey")
    codebook = quantizer.codebook.detach()
    ax.scatter(*codebook[used].T, color="C0", marker="x", s=40, label="used code")
    ax.scatter(*codebook[~used].T, color="C3", marker="o", facecolors="none", s=40, label="dead code")
    ax.set(title=f"{name}\n{round(usage * 32)} codes used, MSE {mse:.3f}", xlabel="dimension 1")
    ax.title.set_fontsize(9)
axes[0].set_ylabel("dimension 2")
axes[0].legend(loc="upper left", fontsize=8)
plt.suptitle("seed 0: where the 32 codes end up (grey: the data)", y=1.04)
plt.show()

# %%
mean_usage = {name: np.mean([usage for _, _, usage in runs]) for name, runs in collapse_results.items()}
mean_mse = {name: np.mean([mse for _, mse, _ in runs]) for name, runs in collapse_results.items()}
names = list(VARIANTS)
for name in names[:2]:
    assert all(usage <= 0.25 for _, _, usage in collapse_results[name]), f"{name}: at most a quarter of the codes live"
for name in names[2:]:
    assert all(usage > 0.95 for _, _, usage in collapse_results[name]), f"{name}: every code in use"
assert mean_mse[names[-1]] < 0.1 * mean_mse[names[0]]
print(f"codes used, mean over seeds: {mean_usage[names[0]]:.0%} with a random codebook, "
      f"{mean_usage[names[-1]]:.0%} with all three cures; held-out MSE {mean_mse[names[0]]:.3f} -> {mean_mse[names[-1]]:.3f}")

# %% [markdown]
# With a random start, the code nearest the data wins every point, moves onto the data and keeps
# winning; the others never win anything, so neither gradients nor EMA ever move them. On every
# seed at most a quarter of the codebook is in use (the assertions above check each claim on all
# three seeds). EMA alone does not help: it only updates codes that win. Dead-code replacement does:
# it moves unused codes onto data, where they start winning, and every code ends up in use.
# k-means initialisation gets there from the first step, and the quantisation error falls more
# than tenfold. SoundStream uses all three; EMA's contribution shows in a real codec, where the
# encoder's outputs move while the codebook learns, and running averages follow them more steadily
# than gradient steps.
#
# ## 3. Residual vector quantisation
# How many codes would a codec need? SoundStream at 6 kbps spends 120 bits on each of its 50 frames
# per second. One codebook with 120 bits per frame would hold $2^{120}$ vectors: impossible to store
# or learn. **Residual VQ** uses $L$ small codebooks in sequence; each quantises what the previous
# ones left over:
# $$r_0 = z, \qquad q_\ell = \mathrm{VQ}_\ell(r_\ell), \qquad r_{\ell+1} = r_\ell - q_\ell, \qquad \hat z = q_0 + q_1 + \dots + q_{L-1}.$$
# That is $L \log_2 K$ bits per frame from only $L \cdot K$ stored vectors (MusicLM: 12 levels of 1,024
# codes). The first level captures the coarse shape, each later one a finer correction, which is why
# MusicLM calls the first levels *coarse* and the rest *fine* and models them in separate stages.
#
# Each level can only reduce what is left (a level at worst picks the code nearest the residual).
# We fit an 8-level RVQ of 64 codes per level to real vectors, the 64-band log-mel frames of the
# course music (one vector per 16 ms), and plot the held-out error after each level:

# %%
data_root = datasets.ensure_synthcaps(PRESET, progress=False)
train_clips = [item["audio"] for item in datasets.SynthCapsDataset(data_root, "train", sample_rate=SAMPLE_RATE)]
test_set = datasets.SynthCapsDataset(data_root, "test", sample_rate=SAMPLE_RATE)
test_clips = torch.stack([item["audio"] for item in test_set])
print(f"{len(train_clips)} training clips and {len(test_clips)} held-out clips of {test_clips.shape[1] / SAMPLE_RATE:.0f} s")

def mel_frames(clips):
    """(clips, samples) -> (1, frames, 64) log-mel frames, standardised with the training frames' statistics."""
    return audio.log_mel(clips, SAMPLE_RATE).transpose(1, 2).reshape(1, -1, 64)

train_frames, test_frames = mel_frames(torch.stack(train_clips[:48])), mel_frames(test_clips)
frame_mean, frame_std = train_frames.mean((0, 1)), train_frames.std((0, 1))
train_frames, test_frames = (train_frames - frame_mean) / frame_std, (test_frames - frame_mean) / frame_std
rvq = quantize.ResidualVQ(64, 64, num_levels=8, dead_code_steps=5, seed=SEED)
for step in range(40):
    rvq(train_frames[:, torch.randperm(train_frames.shape[1], generator=torch.Generator().manual_seed(step))[:2048]])
rvq.eval()
errors = (rvq.residual_errors(test_frames) / test_frames.var()).tolist()
fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(range(1, 9), errors, marker="o")
ax.set(yscale="log", xlabel="RVQ levels used", ylabel="error / variance of the frames",
       title="residual error after each level (held-out clips)")
plt.show()
assert all(later <= earlier for earlier, later in zip(errors, errors[1:])), "each level can only remove error"
print("relative error after levels 1..8: " + ", ".join(f"{error:.3f}" for error in errors))

# %% [markdown]
# The error falls with every level, fast at first and then more slowly: each level removes a share
# of what is left. Every level costs the same $\log_2 K$ bits, so the first levels are the best value
# per bit.
#
# **Quantiser dropout.** SoundStream trains with a random number of levels for each example
# (between 1 and $L$), so its decoder learns to work from the first $n$ levels alone, and one model
# serves several bitrates: send fewer levels, get coarser audio. `ResidualVQ(...,
# quantizer_dropout=True)` does this in training mode; in eval mode every level is used.

# %%
dropout_rvq = quantize.ResidualVQ(4, 16, num_levels=4, quantizer_dropout=True, seed=SEED)
vectors = torch.randn(6, 5, 4)
dropout_rvq.train()
quantized_in_training = dropout_rvq(vectors).quantized
levels_used = [next(n for n in range(1, 5) if torch.allclose(quantized_in_training[i],
                                                             dropout_rvq.decode(dropout_rvq.encode(vectors[i:i + 1], n))[0]))
               for i in range(6)]
dropout_rvq.eval()
torch.testing.assert_close(dropout_rvq(vectors).quantized, dropout_rvq.decode(dropout_rvq.encode(vectors)))
assert len(set(levels_used)) > 1, "in training, examples of one batch use different numbers of levels"
print(f"levels used by the 6 examples of one training batch: {levels_used}; in eval mode: all 4")

# %% [markdown]
# ## 4. Bitrate arithmetic
# A frame of $L$ levels with $K$ codes each carries $L \log_2 K$ bits; at $f$ frames per second
# the codec sends
# $$\text{bitrate} = f \times L \times \log_2 K \ \text{bit/s}.$$

# %%
# NBVAL_CHECK_OUTPUT
def bitrate(frame_rate, levels, codebook_size):
    return frame_rate * levels * np.log2(codebook_size)

paper_tokens, ours = config.get_preset("paper").tokens, PRESET_CONFIG.tokens
paper_bits = bitrate(paper_tokens.soundstream_frame_rate, paper_tokens.rvq_levels, paper_tokens.codebook_size)
our_bits = bitrate(ours.soundstream_frame_rate, ours.rvq_levels, ours.codebook_size)
assert paper_bits == 6_000
for name, sample_rate, bits in [("MusicLM's SoundStream", 24_000, paper_bits), (f"ours ({PRESET})", SAMPLE_RATE, our_bits)]:
    pcm = sample_rate * 16
    print(f"{name:<22}: {bits:>6,.0f} bit/s; 16-bit PCM at {sample_rate // 1000} kHz is {pcm:,} bit/s, {pcm / bits:.0f}x more")
print(f"MusicLM: 50 frames/s x 12 levels x 10 bits; ours: {ours.soundstream_frame_rate} x {ours.rvq_levels} x "
      f"{np.log2(ours.codebook_size):.0f} bits; coarse levels {paper_tokens.coarse_levels} (paper), {ours.coarse_levels} (ours)")

# %% [markdown]
# ## 5. The SoundStream codec
# The codec wraps the RVQ between a convolutional encoder and decoder:

# %%
codec_settings = PRESET_CONFIG.codec
diagrams.soundstream_diagram(num_levels=ours.rvq_levels, codebook_size=ours.codebook_size, strides=codec_settings.strides,
                             sample_rate=SAMPLE_RATE, frame_rate=ours.soundstream_frame_rate)
plt.show()

# %% [markdown]
# - **Encoder**: a convolution, then for each stride $s$ three *residual units*
#   $x + \mathrm{conv}_{1\times1}(\mathrm{ELU}(\mathrm{conv}_{7,\ \text{dilation } d}(\mathrm{ELU}(x))))$ with
#   dilations $d = 1, 3, 9$ (together they see a context 27 times wider than one kernel, cheaply),
#   and a strided convolution that divides time by $s$ and doubles the channels. The strides
#   $2 \cdot 4 \cdot 5 \cdot 8 = 320$ turn 16,000 samples per second into 50 frames.
# - **Decoder**: the mirror image, with transposed convolutions that multiply time back.
# - **Causal**: every convolution is padded on the left only, so an output never depends on a
#   future input. SoundStream was built to stream speech with low latency; for MusicLM the point is
#   that the token at frame $t$ describes the audio up to frame $t$.
# - **Losses**: a multi-scale mel reconstruction loss (FFT sizes 256 to 2048: short windows judge
#   timing, long ones pitch), a waveform L1 term, the RVQ's commitment loss, and, after a
#   warm-up, lesson 03's hinge adversarial and feature-matching losses against two discriminators:
#   one on the waveform at three resolutions, one on the complex STFT.
#
# A causal convolution from scratch, checked against the package, and the whole encoder checked for
# causality by changing the future and watching the past:

# %%
def my_causal_conv(x, weight, dilation=1):
    """x (batch, in, T), weight (out, in, kernel) -> (batch, out, T), looking only backwards."""
    left = dilation * (weight.shape[-1] - 1)
    return F.conv1d(F.pad(x, (left, 0)), weight, dilation=dilation)

layer = soundstream.CausalConv1d(3, 5, 7, dilation=3, bias=False)
x = torch.randn(2, 3, 100)
torch.testing.assert_close(my_causal_conv(x, layer.weight, dilation=3), layer(x))

codec = soundstream.SoundStream.from_config(PRESET_CONFIG)
noise = torch.randn(1, 1, 3_200)
changed = noise.clone()
changed[..., 1_600:] += 1.0                    # change the second half (frames 5-9)
with torch.no_grad():
    before, after = codec.encoder(noise), codec.encoder(changed)
torch.testing.assert_close(before[..., :5], after[..., :5])
count = lambda module: sum(p.numel() for p in module.parameters())
training_model = soundstream.CodecTraining.from_config(PRESET_CONFIG)
print(f"frames 0-4 unchanged by a change from sample 1,600 on: the encoder is causal\n"
      f"parameters: encoder {count(codec.encoder):,}, decoder {count(codec.decoder):,}, "
      f"discriminators {count(training_model) - count(training_model.codec):,}; bitrate {codec.bitrate:,.0f} bit/s")

# %% [markdown]
# ### Train it (briefly)
# `soundstream.train_codec` runs the package's one `Trainer` with two objectives, as lesson 03's
# GAN did: a discriminator step and a codec step on every batch of random half-second crops. The
# discriminator objective starts late (`objective_start_steps`), and the codec's adversarial terms
# switch on at the same step: a codec that cannot yet reconstruct anything gains nothing from a
# critic. Here we train for a short while, with the adversarial terms from step 20 so you see both
# phases.

# %%
brief = dataclasses.replace(
    PRESET_CONFIG, codec=dataclasses.replace(codec_settings, adversarial_start_step=20 * STEPS_SCALE),
    train=dataclasses.replace(PRESET_CONFIG.train, device=DEVICE, log_every=5, checkpoint_every=0, seed=SEED))
brief_training, brief_history = soundstream.train_codec(brief, train_clips, steps=40 * STEPS_SCALE, progress=False)
fig, axes = plt.subplots(1, 2, figsize=(12, 3))
viz.plot_history(brief_history, keys=["codec/reconstruction"], ax=axes[0], title="multi-scale mel loss")
viz.plot_history(brief_history, keys=["discriminator/loss", "codec/adversarial"], ax=axes[1],
                 title="hinge losses (from the start step on)")
axes[0].set_ylabel("loss")
plt.tight_layout()
plt.show()
first, last = brief_history[0]["codec/reconstruction"], brief_history[-1]["codec/reconstruction"]
assert last < first
print(f"reconstruction loss {first:.2f} -> {last:.2f} in {brief_history[-1]['step']} steps")

# %% [markdown]
# Forty steps are only a start (listen to the result in section 6 if you skip the cell below). A
# usable codec needs thousands of steps, too many for this lesson's three minutes on a CPU, so we load one
# trained for longer with the same code ("load if present, else train"). It was made by one command
# (38 minutes of CPU time, one thread, on a 2-core machine):
#
#     python -m mlm_lessons train --preset tiny --stage soundstream --steps 2000 \
#         --out runs/soundstream-tiny --export data/checkpoints/soundstream-tiny.pt

# %%
checkpoint = datasets.default_data_root() / "checkpoints" / f"soundstream-{PRESET}.pt"
if checkpoint.exists():
    codec = soundstream.SoundStream.load(checkpoint)
    print(f"loaded the longer-trained codec from {checkpoint.relative_to(datasets.default_data_root().parent)}")
else:
    codec = brief_training.codec
    print(f"no {checkpoint.name}: using the briefly trained codec; run the command above to make the better one")
codec = codec.eval()

# %% [markdown]
# ## 6. Listen at 1, 2, 3 and 4 levels
# One held-out clip, encoded once; then decoded from its first level alone, from two, and so on
# (quantiser dropout is what makes every prefix decodable). Each level adds 400 bit/s.

# %%
clip = test_clips[0, : 2 * SAMPLE_RATE]                     # two seconds
codes = codec.encode(clip, sample_rate=SAMPLE_RATE)          # (1, levels, frames)
print(f"codes: shape {tuple(codes.shape)} (batch, levels, frames); first frames of each level:\n{codes[0, :, :8]}")
versions = {"original": clip}
for levels in range(1, codec.num_levels + 1):
    versions[f"{levels} level{'s' * (levels > 1)}, {codec.bitrate_at(levels):,.0f} bit/s"] = codec.decode(codes[:, :levels])[0]
fig, axes = plt.subplots(1, len(versions), figsize=(16, 2.8), sharey=True)
for ax, (name, wave) in zip(axes, versions.items()):
    viz.plot_spectrogram(wave, SAMPLE_RATE, ax=ax, title=name)
    ax.title.set_fontsize(9)
plt.tight_layout()
plt.show()
display(*(viz.play(wave, SAMPLE_RATE) for wave in versions.values()))

# %% [markdown]
# ## 7. Against a codec that learned nothing
# Is a learned codec worth it? A fair opponent spends the same bits without learning: **mu-law**
# coding, as in telephony. Lower the sample rate, then store each sample with a few bits on a
# logarithmic scale: $r$ samples per second at $b$ bits is $r \times b$ bit/s. At each of our
# bitrates `soundstream.best_mu_law_codec` tries bit depths from 2 to 8 and keeps the best. We
# score both on all held-out clips with `metrics.si_snr` (waveform fidelity, in dB, higher is better)
# and `metrics.multi_scale_mel_distance` (spectral fidelity, lower is better).

# %%
all_codes = codec.encode(test_clips, sample_rate=SAMPLE_RATE)
comparison = []
for levels in range(1, codec.num_levels + 1):
    bits = codec.bitrate_at(levels)
    decoded = codec.decode(all_codes[:, :levels])
    baseline, setting = soundstream.best_mu_law_codec(test_clips, SAMPLE_RATE, bits)
    comparison.append({"levels": levels, "bitrate": bits, "mu_law": setting,
                       "codec_si_snr": metrics.si_snr(decoded, test_clips).mean().item(),
                       "mu_law_si_snr": metrics.si_snr(baseline, test_clips).mean().item(),
                       "codec_mel": metrics.multi_scale_mel_distance(decoded, test_clips, SAMPLE_RATE).mean().item(),
                       "mu_law_mel": metrics.multi_scale_mel_distance(baseline, test_clips, SAMPLE_RATE).mean().item()})
print(f"{'bit/s':>6} | {'mu-law setting':<16} | {'SI-SNR codec':>12} | {'SI-SNR mu-law':>13} | {'mel codec':>9} | {'mel mu-law':>10}")
for row in comparison:
    setting = f"{row['mu_law']['codec_rate']} Hz x {row['mu_law']['bits']} bit"
    print(f"{row['bitrate']:>6,.0f} | {setting:<16} | {row['codec_si_snr']:>10.2f}dB | {row['mu_law_si_snr']:>11.2f}dB | "
          f"{row['codec_mel']:>9.3f} | {row['mu_law_mel']:>10.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
rates = [row["bitrate"] for row in comparison]
for ax, key, label in [(axes[0], "si_snr", "SI-SNR (dB, higher is better)"), (axes[1], "mel", "mel distance (lower is better)")]:
    ax.plot(rates, [row[f"codec_{key}"] for row in comparison], marker="o", label="SoundStream (learned)")
    ax.plot(rates, [row[f"mu_law_{key}"] for row in comparison], marker="s", label="mu-law (not learned)")
    ax.set(xlabel="bitrate (bit/s)", ylabel=label, title=label.split(" (")[0] + " against bitrate, held-out clips")
    ax.legend()
plt.tight_layout()
plt.show()
mel_gain = 1 - comparison[-1]["codec_mel"] / comparison[0]["codec_mel"]
snr_gain = comparison[-1]["codec_si_snr"] - comparison[0]["codec_si_snr"]
if checkpoint.exists():   # the claims below are about the longer-trained codec
    assert all(row["codec_mel"] < 0.5 * row["mu_law_mel"] for row in comparison), "codec: under half mu-law's mel distance"
    assert all(row["codec_si_snr"] > row["mu_law_si_snr"] for row in comparison), "codec: higher SI-SNR at every bitrate"
    margins = [row["codec_si_snr"] - row["mu_law_si_snr"] for row in comparison]
    assert margins == sorted(margins, reverse=True), "the SI-SNR margin shrinks as the bitrate grows"
    assert all(row["codec_si_snr"] < 0 for row in comparison), "still more noise than signal, sample by sample"
    assert 0 < mel_gain < 0.1 and snr_gain > 0, "levels 2-4 help, modestly"
print(f"from 1 to {codec.num_levels} levels: mel distance {mel_gain:.1%} lower, SI-SNR {snr_gain:+.1f} dB")
mu_law_full, _ = soundstream.best_mu_law_codec(clip, SAMPLE_RATE, codec.bitrate)
display(viz.play(mu_law_full, SAMPLE_RATE))

# %% [markdown]
# The learned codec wins on both measures at every bitrate (the assertions above check each claim):
#
# - **Mel distance**: less than half of mu-law's at every bitrate. At 1,600 bit/s mu-law must drop
#   to a few hundred samples per second, so everything above a few hundred hertz is gone (listen to
#   it above, and compare the spectrograms); the codec spends its bits on the whole spectrum.
# - **SI-SNR**: higher at every bitrate, by a wide margin at 400 bit/s and a small one at 1,600,
#   where mu-law keeps the bass *waveform* sample by sample; in this music the bass and the low
#   partials hold most of the energy, which is what SI-SNR weighs.
#
# The codec's SI-SNR is still below 0 dB: more error than signal, sample by sample. A mel loss
# ignores phase, so a codec trained on it alone reproduces the spectrum with a waveform that drifts
# freely (the first version of this codec, trained without a strong waveform term, had a mel
# distance of 1.73 and an SI-SNR of about -40 dB at every bitrate). The `tiny` preset therefore adds a heavily weighted waveform L1 term,
# which taught it the low-frequency waveform within 2,000 steps. And its levels 2 to 4 add only a
# little (the mel distance and SI-SNR gains printed above): a small decoder trained briefly is the
# limit, not the bits. SoundStream's paper trains far longer and serves 3 to 18 kbps from one model,
# with quality rising with the bitrate; training this codec longer (`STEPS_SCALE`, or the command of
# section 5 with more `--steps` on a GPU) is the first thing to try.
#
# > **Fact check: did MusicLM train a GAN?** Lesson 03 said that MusicLM "reuses a trained
# > SoundStream; it does not train a GAN of its own". That is wrong about the codec. MusicLM's authors
# > trained their own SoundStream on the Free Music Archive (24 kHz, 50 frames per second, 12 levels
# > of 1,024 codes; Agostinelli et al., 2023), and a SoundStream is trained with the adversarial and
# > feature-matching losses of this lesson (Zeghidour et al., 2021). What is true: the codec was trained first and then frozen, and the three
# > language-model stages that generate the tokens train with cross-entropy alone, no discriminator.
#
# ## Exercises
# **Exercise 1 (2 points).** Write `my_quantize(vectors, codebook)` returning the nearest codes'
# *vectors* and their indices, `(n, dim), (K, dim) -> ((n, dim), (n,))`, without `torch.cdist`.

# %% solution ex1_quantize
def my_quantize(vectors, codebook):
    ### BEGIN SOLUTION
    distances = (vectors ** 2).sum(-1, keepdim=True) - 2 * vectors @ codebook.T + (codebook ** 2).sum(-1)
    indices = distances.argmin(-1)
    return codebook[indices], indices
    ### END SOLUTION

# %% tests ex1_quantize_tests 2
book = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.5]])
points = torch.tensor([[0.9, 1.2], [-1.5, 0.0], [0.1, -0.1]])
quantized_points, indices = my_quantize(points, book)
assert indices.tolist() == [1, 2, 0]
assert torch.equal(quantized_points, book[[1, 2, 0]])
### BEGIN HIDDEN TESTS
many = torch.randn(500, 6)
codebook_6 = torch.randn(40, 6)
assert torch.equal(my_quantize(many, codebook_6)[1], quantize.nearest_codes(many, codebook_6))
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (3 points).** Write `my_residual_encode(vectors, codebooks)`: residual VQ with a list
# of `(K, dim)` codebooks, returning the codes `(n, levels)` and the reconstruction `(n, dim)` (the
# sum of the chosen codes). You may use `my_quantize`.

# %% solution ex2_residual_encode
def my_residual_encode(vectors, codebooks):
    ### BEGIN SOLUTION
    residual, total, codes = vectors, torch.zeros_like(vectors), []
    for codebook in codebooks:
        quantized, indices = my_quantize(residual, codebook)
        residual, total = residual - quantized, total + quantized
        codes.append(indices)
    return torch.stack(codes, dim=1), total
    ### END SOLUTION

# %% tests ex2_residual_encode_tests 3
reference_rvq = quantize.ResidualVQ(8, 32, num_levels=3, kmeans_init=False, seed=1).eval()
sample = torch.randn(50, 8)
my_codes, my_reconstruction = my_residual_encode(sample, [level.codebook for level in reference_rvq.levels])
assert my_codes.shape == (50, 3)
assert torch.equal(my_codes, reference_rvq.encode(sample.unsqueeze(0))[0].T), "the same codes as the package"
### BEGIN HIDDEN TESTS
torch.testing.assert_close(my_reconstruction, reference_rvq.decode(my_codes.T.unsqueeze(0))[0])
one_level = my_residual_encode(sample, [reference_rvq.levels[0].codebook])[1]
assert (sample - my_reconstruction).pow(2).sum() <= (sample - one_level).pow(2).sum()
other_rvq = quantize.ResidualVQ(6, 16, num_levels=4, kmeans_init=False, seed=7).eval()   # a fresh quantiser
other_sample = torch.randn(23, 6, generator=torch.Generator().manual_seed(8))
other_codes, other_reconstruction = my_residual_encode(other_sample, [level.codebook for level in other_rvq.levels])
assert torch.equal(other_codes, other_rvq.encode(other_sample.unsqueeze(0))[0].T)
torch.testing.assert_close(other_reconstruction, other_rvq.decode(other_codes.T.unsqueeze(0))[0])
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (2 points).** Write `my_si_snr(estimate, reference)` for `(time,)` tensors, in dB: make
# both zero-mean, project the estimate on the reference,
# $s = \frac{\langle \hat x, x\rangle}{\|x\|^2} x$, call the rest $e = \hat x - s$, and return
# $10 \log_{10} \|s\|^2 / \|e\|^2$.

# %% solution ex3_si_snr
def my_si_snr(estimate, reference):
    ### BEGIN SOLUTION
    estimate, reference = estimate - estimate.mean(), reference - reference.mean()
    target = (estimate @ reference) / (reference @ reference) * reference
    return 10 * torch.log10(target.pow(2).sum() / (estimate - target).pow(2).sum())
    ### END SOLUTION

# %% tests ex3_si_snr_tests 2
signal = torch.sin(torch.linspace(0, 60, 4000))
noisy_signal = signal + 0.1 * torch.randn(4000, generator=torch.Generator().manual_seed(0))
assert abs(float(my_si_snr(noisy_signal, signal)) - float(metrics.si_snr(noisy_signal, signal))) < 1e-3
assert abs(float(my_si_snr(5 * noisy_signal, signal)) - float(my_si_snr(noisy_signal, signal))) < 1e-3, "scale-invariant"
### BEGIN HIDDEN TESTS
assert abs(float(my_si_snr(noisy_signal + 3.0, signal)) - float(my_si_snr(noisy_signal, signal))) < 1e-3, "offset-invariant"
generator = torch.Generator().manual_seed(9)
for noise_level in (0.01, 0.3, 2.0):
    reference = torch.randn(3000, generator=generator)
    estimate = reference + noise_level * torch.randn(3000, generator=generator)
    assert abs(float(my_si_snr(estimate, reference)) - float(metrics.si_snr(estimate, reference))) < 1e-3
### END HIDDEN TESTS

# %% [markdown]
# ## Summary
# - Vector quantisation replaces a vector by its nearest code, so it can be stored as $\log_2 K$ bits.
#   The straight-through estimator passes gradients through the $\arg\min$; the codebook and
#   commitment losses keep codes and encoder together.
# - Codebooks collapse; k-means initialisation, EMA updates and dead-code replacement keep every code
#   in use.
# - Residual VQ stacks small codebooks, each coding the previous one's error: $L \log_2 K$ bits per
#   frame. Quantiser dropout makes every prefix of levels decodable, so one codec serves many
#   bitrates. MusicLM's codec: $50 \times 12 \times 10 = 6$ kbps; ours $1.6$ kbps.
# - SoundStream is a causal convolutional autoencoder with an RVQ bottleneck, trained with mel
#   reconstruction, waveform, adversarial and feature-matching losses. Even a small, briefly trained
#   one beats a non-learned codec at the same bitrate, on mel distance by more than half and on
#   SI-SNR at every bitrate.
#
# The figures measured in this run:

# %%
print(f"codes used with a random codebook: {mean_usage[names[0]]:.0%}; with all three cures: {mean_usage[names[-1]]:.0%}")
for row in comparison:
    print(f"{row['bitrate']:>5,.0f} bit/s: SoundStream SI-SNR {row['codec_si_snr']:.2f} dB, mel {row['codec_mel']:.3f}; "
          f"mu-law SI-SNR {row['mu_law_si_snr']:.2f} dB, mel {row['mu_law_mel']:.3f}")

# %% [markdown]
# **Going further.** Zeghidour et al. 2021, *SoundStream* (the codec, RVQ, quantiser dropout);
# van den Oord et al. 2017, *Neural Discrete Representation Learning* (VQ-VAE, EMA in its
# appendix); Défossez et al. 2022, *High Fidelity Neural Audio Compression* (EnCodec, a close cousin
# with a multi-scale STFT discriminator); Kumar et al. 2023 (DAC: factorised, normalised codes that
# avoid collapse). Next: **lesson 06**, w2v-BERT and the semantic tokens that carry the music's
# long-term structure.
