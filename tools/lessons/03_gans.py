# %% [markdown]
# # Lesson 03 — Generative adversarial networks
#
# MusicLM does not contain a GAN. Its audio comes out of the decoder of **SoundStream**
# (Zeghidour et al., 2021), a neural codec, and that decoder learned to produce convincing
# waveforms because, during training, a set of *discriminators* kept telling it where its output
# did not sound real. That is a GAN's training signal, and this lesson builds it from the ground up.
#
# **Goals.** By the end you can
# 1. state the GAN game, its optimal discriminator, and why the generator is trained with the
#    *non-saturating* loss rather than the one in the game;
# 2. write the non-saturating, hinge and least-squares losses and check them against
#    `mlm_lessons.gan`;
# 3. train a GAN on 2-D data, watch the generated distribution move onto the target, measure how
#    many modes it covers, provoke **mode collapse** and fix it;
# 4. train a convolutional GAN on spectrograms of single notes and listen to it;
# 5. explain why a discriminator is a *learned loss*, and how SoundStream uses one.
#
# **Prerequisites.** Lesson 00 (log-mel spectrograms); PyTorch modules and optimisers; the
# logistic sigmoid $\sigma(a) = 1/(1 + e^{-a})$ and binary cross-entropy.

# %% [markdown]
# ## Set-up
# Everything you might want to change is in the next cell. On a CPU the defaults train every model
# of the lesson in about a minute and a half; with a GPU set `DEVICE = "cuda"` and raise
# `STEPS_SCALE` for better samples.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from torch.utils.data import TensorDataset

from mlm_lessons import config, gan, instrument_classifier, vae, viz
from mlm_lessons.config import TrainConfig
from mlm_lessons.train import Trainer

# ---- the one cell to change: scale and device ------------------------------------------------
PRESET = "tiny"          # the course scale (see mlm_lessons.config)
DEVICE = "cpu"           # "cuda" on a GPU machine
STEPS_SCALE = 1          # multiply every training run's length (e.g. 4 on a GPU)
SEED = 0
# -----------------------------------------------------------------------------------------------

np.random.seed(SEED)
torch.manual_seed(SEED)
torch.set_num_threads(1)   # these models are small: one thread is as fast, and not slowed by a busy machine
plt.rcParams["figure.dpi"] = 72
viz.use_compact_inline_figures()
SAMPLE_RATE = config.get_preset(PRESET).data.sample_rate
print(f"preset {PRESET!r}, device {DEVICE!r}, audio at {SAMPLE_RATE} Hz")

# %% [markdown]
# ## 1. The game
#
# A **generator** $G$ turns noise $z \sim \mathcal N(0, I)$ into a sample $G(z)$; we never write
# down its density $p_G$, we only sample from it. A **discriminator** $D$ looks at a sample and
# outputs a logit $D(x)$; $\sigma(D(x))$ is its probability that $x$ came from the data rather
# than from $G$. Goodfellow et al. (2014) set the two against each other in one value function:
# $$\min_G \max_D \; V(D, G) = \mathbb E_{x \sim p_\text{data}}\big[\log \sigma(D(x))\big]
#   + \mathbb E_{z}\big[\log\big(1 - \sigma(D(G(z)))\big)\big].$$
# For $D$ this is the log-likelihood of a binary classifier (real = 1, fake = 0). For a fixed $G$
# the best classifier is, point by point,
# $$\sigma(D^*(x)) = \frac{p_\text{data}(x)}{p_\text{data}(x) + p_G(x)},$$
# and substituting it gives $V(D^*, G) = -\log 4 + 2\,\mathrm{JS}(p_\text{data} \,\|\, p_G)$: the
# generator, playing against a perfect discriminator, minimises the Jensen–Shannon divergence
# to the data, which is zero only when $p_G = p_\text{data}$. There $\sigma(D^*) = 1/2$ everywhere:
# the discriminator can only guess.
#
# **In practice** the two are trained in turns by gradient steps: one step of $D$ on a batch of
# real and generated samples, then one step of $G$ through $D$. The generator never sees the data;
# everything it learns arrives as gradients through the discriminator.
#
# ### Why the generator does not use the game's loss
# Early in training $G$ is bad, $D$ easily spots its samples and $D(G(z)) \ll 0$. The game's
# generator loss $\log(1 - \sigma(D(G(z))))$ is *flat* there: its gradient
# $-\sigma(D(G(z)))$ vanishes. Goodfellow et al. therefore train $G$ to *maximise*
# $\log \sigma(D(G(z)))$ instead, the **non-saturating** loss $-\log\sigma(D(G(z)))$, with the same
# fixed point and a gradient near $-1$ exactly where $G$ needs it. Two later variants are common in
# audio: the **hinge** loss (used by MelGAN, SoundStream and EnCodec), where $D$ stops pushing once
# real logits exceed $+1$ and fake ones fall below $-1$, and the **least-squares** loss (LSGAN, Mao
# et al. 2017; used by HiFi-GAN), which regresses real logits to 1 and fake ones to 0.
#
# | loss | discriminator minimises | generator minimises |
# |---|---|---|
# | minimax (the game) | $-\log\sigma(D(x)) - \log(1-\sigma(D(G(z))))$ | $\log(1-\sigma(D(G(z))))$ |
# | non-saturating | same | $-\log\sigma(D(G(z)))$ |
# | hinge | $\max(0, 1 - D(x)) + \max(0, 1 + D(G(z)))$ | $-D(G(z))$ |
# | least squares | $(D(x) - 1)^2 + D(G(z))^2$ | $(D(G(z)) - 1)^2$ |
#
# ## 2. The losses from scratch
# $-\log\sigma(a)$ overflows for very negative $a$ if computed literally; `softplus(-a)` $=
# \log(1 + e^{-a})$ is the same number, computed stably. Each loss averages over the batch.

# %%
# NBVAL_CHECK_OUTPUT
def my_discriminator_loss(real_logits, fake_logits, kind):
    if kind == "non_saturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "least_squares":
        return ((real_logits - 1) ** 2).mean() + (fake_logits ** 2).mean()
    raise ValueError(kind)

def my_generator_loss(fake_logits, kind):
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "least_squares":
        return ((fake_logits - 1) ** 2).mean()
    raise ValueError(kind)

real_logits, fake_logits = torch.randn(64) + 1, torch.randn(64) - 1
for kind in ["non_saturating", "hinge", "least_squares"]:
    torch.testing.assert_close(my_discriminator_loss(real_logits, fake_logits, kind),
                               gan.discriminator_loss(real_logits, fake_logits, kind))
    torch.testing.assert_close(my_generator_loss(fake_logits, kind), gan.generator_loss(fake_logits, kind))
print("our three losses equal mlm_lessons.gan's")

# %% [markdown]
# The package's versions also accept a **list** of logits, one tensor per discriminator, and
# average the discriminators' losses. SoundStream judges each clip with several discriminators at
# once (waveforms at three time scales, and an STFT), each giving logits of its own shape; the
# same two functions serve it in lesson 05.
#
# Now the claim about saturation, measured: the gradient of each generator loss with respect to the
# logit $D(G(z))$, for a generator that is bad ($D(G(z)) = -6$), so-so ($0$) and good ($+3$).

# %%
# NBVAL_CHECK_OUTPUT
def generator_gradient(logit, kind):
    fake = torch.tensor([logit], requires_grad=True)
    gan.generator_loss(fake, kind).backward()
    return fake.grad.item()

print(f"{'D(G(z))':>8} |" + "".join(f"{kind:>15}" for kind in gan.LOSS_KINDS))
for logit in [-6.0, 0.0, 3.0]:
    print(f"{logit:>8.1f} |" + "".join(f"{generator_gradient(logit, kind):>15.4f}" for kind in gan.LOSS_KINDS))
assert all(generator_gradient(logit, kind) < 0 for logit in (-6.0, 0.0) for kind in gan.LOSS_KINDS)
assert {kind for kind in gan.LOSS_KINDS if generator_gradient(3.0, kind) > 0} == {"least_squares"}
assert abs(generator_gradient(-6.0, "minimax")) < 0.01 < min(abs(generator_gradient(-6.0, k))
                                                           for k in gan.LOSS_KINDS if k != "minimax")

# %%
logits = torch.linspace(-6, 4, 200, requires_grad=True)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
for kind in gan.LOSS_KINDS:
    per_example = torch.stack([gan.generator_loss(logit[None], kind) for logit in logits])
    gradient, = torch.autograd.grad(per_example.sum(), logits)
    axes[0].plot(logits.detach(), per_example.detach(), label=kind)
    axes[1].plot(logits.detach(), gradient, label=kind)
axes[0].set(xlabel="discriminator logit on a generated sample, D(G(z))", ylabel="generator loss",
            title="generator losses", ylim=(-5, 8))
axes[1].set(xlabel="D(G(z))", ylabel="d loss / d D(G(z))", title="their gradients: minimax is flat on the left",
            ylim=(-3, 1))
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# For a bad or so-so generator every gradient is negative: lowering any of these losses raises
# $D(G(z))$, i.e. makes the discriminator believe the sample. Only the minimax loss fades to nothing
# when $D(G(z))$ is very negative, the state every generator starts in. For a good generator the
# least-squares gradient turns *positive* (the table's last row): its target is a logit of 1, not
# "as real as possible", so it pulls a logit of 3 back down; the other three still push it up.
#
# ## 3. A GAN on 2-D data
# The data: eight Gaussian blobs on a circle, the standard test of whether a generator finds *all*
# the modes of a distribution. Generator and discriminator are small MLPs; the generator maps 2-D
# noise to 2-D points. We train with the hinge loss, the one SoundStream uses.

# %%
STD = 0.05
centers = gan.ring_centers(8, radius=2.0)
ring = gan.ring_of_gaussians(8192, std=STD, generator=torch.Generator().manual_seed(SEED))
fixed_noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(SEED))  # watch the same z move

def train_gan(model, steps, kind="non_saturating", d_lr=1e-3, g_lr=1e-3, data=ring, batch_size=256, snapshots=1):
    """Train with the course's Trainer in `snapshots` chunks; returns (history, generated points after each chunk)."""
    optimizers = {"discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=d_lr, betas=(0.5, 0.999)),
                  "generator": torch.optim.Adam(model.generator.parameters(), lr=g_lr, betas=(0.5, 0.999))}
    history, pictures = [], []
    chunk = steps // snapshots
    for index in range(snapshots):
        settings = TrainConfig(batch_size=batch_size, max_steps=chunk, device=DEVICE, grad_clip=None, log_every=50,
                               checkpoint_every=0, seed=SEED + index)
        trainer = Trainer(model, settings, TensorDataset(data), gan.gan_objectives(kind, real_key=0),
                          optimizers=optimizers, lr_schedule="constant", progress=False)
        history += [{**row, "step": row["step"] + index * chunk} for row in trainer.fit()]
        with torch.no_grad():
            model.generator.eval()
            pictures.append(model.generator(fixed_noise.to(DEVICE)).cpu())
            model.generator.train()
    return history, pictures

torch.manual_seed(SEED)
balanced = gan.GAN(gan.MLPGenerator(latent_dim=2), gan.MLPDiscriminator(), latent_dim=2)
history, pictures = train_gan(balanced, 3000 * STEPS_SCALE, kind="hinge", snapshots=6)
coverage = gan.mode_coverage(pictures[-1], centers, STD)
print(f"after {3000 * STEPS_SCALE} steps: {coverage['modes_covered']} of 8 modes covered, "
      f"{coverage['high_quality']:.0%} of samples within 3 std of a mode")

# %% [markdown]
# The same 1,000 noise vectors, pushed through the generator after each sixth of training (grey:
# the data). Watch the cloud of generated points move onto the ring and split into blobs.

# %%
fig, axes = plt.subplots(1, 6, figsize=(15, 2.8), sharex=True, sharey=True)
for index, (ax, points) in enumerate(zip(axes, pictures)):
    ax.scatter(*ring[:1000].T, s=2, c="lightgrey", label="data")
    ax.scatter(*points.T, s=2, c="C3", label="generated")
    covered = gan.mode_coverage(points, centers, STD)["modes_covered"]
    ax.set(title=f"step {(index + 1) * 500 * STEPS_SCALE}: {covered}/8 modes", xlabel="x1", aspect="equal",
           xlim=(-3, 3), ylim=(-3, 3))
axes[0].set_ylabel("x2")
axes[0].legend(loc="lower left", fontsize=7, markerscale=3)
plt.tight_layout()
plt.show()

# %% [markdown]
# The losses of an adversarial game do not fall to zero: each player's progress raises the other's
# loss. A healthy run hovers near the values at equilibrium, where the discriminator can only
# guess and outputs $D = 0$ everywhere: for the hinge loss, $D$'s loss is then $1 + 1 = 2$ and
# $G$'s is $0$.

# %%
fig, ax = plt.subplots(figsize=(7, 3))
viz.plot_history(history, keys=["discriminator/loss", "generator/loss"], ax=ax, smooth=3,
                 title="2-D GAN: each player's loss")
ax.axhline(2.0, color="C0", linestyle=":", linewidth=1)
ax.axhline(0.0, color="C1", linestyle=":", linewidth=1)
ax.set_ylabel("loss (dotted: equilibrium)")
plt.show()

# %% [markdown]
# ## 4. Mode collapse, and one remedy
# The generator's best reply to a *fixed* discriminator is to put all its samples where $D$ is
# highest: a single point. Alternating small steps usually stops that from happening, but when the
# generator moves faster than the discriminator can follow, it chases $D$'s current favourite
# spot, the discriminator learns to reject it, and the generator jumps elsewhere. It covers one or
# two modes at a time: **mode collapse**. We provoke it by giving the generator a learning rate
# three times the discriminator's, this time with the non-saturating loss of Goodfellow et al.
#
# One remedy, from progressive GANs (Karras et al., 2018), is to let the discriminator see the
# *batch* rather than single samples: `gan.MinibatchStd` appends the batch's standard deviation as
# an extra input feature. A collapsed batch has almost none, so it is easy to call fake, and the
# generator is pushed to spread out. Same data, same learning rates, one extra input:

# %%
def collapse_experiment(minibatch_std):
    torch.manual_seed(SEED)
    model = gan.GAN(gan.MLPGenerator(latent_dim=2), gan.MLPDiscriminator(minibatch_std=minibatch_std), latent_dim=2)
    _, pictures = train_gan(model, 2500 * STEPS_SCALE, d_lr=3e-4, g_lr=9e-4, snapshots=5)
    return pictures

collapsing, remedied = collapse_experiment(False), collapse_experiment(True)
for name, snapshots in [("plain discriminator", collapsing), ("with minibatch std", remedied)]:
    modes = [gan.mode_coverage(points, centers, STD)["modes_covered"] for points in snapshots]
    print(f"{name:>20}: modes covered every 500 steps {modes}")
plain_modes = [gan.mode_coverage(points, centers, STD)["modes_covered"] for points in collapsing]
assert max(plain_modes) <= 1 and gan.mode_coverage(remedied[-1], centers, STD)["modes_covered"] == 8

# %%
fig, axes = plt.subplots(2, 5, figsize=(14, 5.6), sharex=True, sharey=True)
for row, (name, snapshots) in enumerate([("plain D", collapsing), ("minibatch std", remedied)]):
    for column, points in enumerate(snapshots):
        ax = axes[row, column]
        ax.scatter(*ring[:1000].T, s=2, c="lightgrey")
        ax.scatter(*points.T, s=2, c="C3" if row == 0 else "C2")
        covered = gan.mode_coverage(points, centers, STD)["modes_covered"]
        ax.set(title=f"{name}, step {(column + 1) * 500 * STEPS_SCALE}: {covered}/8", aspect="equal",
               xlim=(-3, 3), ylim=(-3, 3))
for ax in axes[1]:
    ax.set_xlabel("x1")
for ax in axes[:, 0]:
    ax.set_ylabel("x2")
plt.tight_layout()
plt.show()

# %% [markdown]
# In the top row all 1,000 samples sit on one thin curve that wanders from mode to mode, never
# covering more than one at a time; the bottom row ends with all eight (both asserted above). Other
# remedies you will meet: unrolling the discriminator's updates (Metz et al., 2017), packing several
# samples into one discriminator input (PacGAN, Lin et al., 2018), spectral
# normalisation, and simply a discriminator that learns at least as fast as the generator
# (the two-time-scale rule, Heusel et al., 2017).
#
# ## 5. A GAN that makes sounds
# Now the same game on spectrograms. The data are single notes of the ten SynthCaps instruments at
# 25 pitches, each a log-mel patch of 64 mel bands × 32 frames (half a second), normalised to zero
# mean and unit variance: `vae.note_mel_patches` renders them (lesson 04 uses them too).
#
# The two networks now look like the ones in every image GAN since DCGAN (Radford et al., 2016):
# * the **discriminator** is a convolutional *classifier*: strided convolutions halve the patch
#   three times, a linear layer gives one logit;
# * the **generator** runs the other way: a linear layer makes a small $8 \times 4$ grid from the
#   noise, and three *transposed* convolutions each double it, up to $64 \times 32$.

# %%
notes = vae.note_mel_patches(pitches=range(48, 73))
print(f"{len(notes)} notes, patches of {notes.patch_shape} (mel bands, frames), instruments: {', '.join(notes.instruments)}")
torch.manual_seed(SEED)
note_gan = gan.GAN(gan.ConvGenerator(latent_dim=32, patch_shape=notes.patch_shape),
                   gan.ConvDiscriminator(patch_shape=notes.patch_shape), latent_dim=32)
for name, part in [("generator", note_gan.generator), ("discriminator", note_gan.discriminator)]:
    print(f"{name}: {sum(p.numel() for p in part.parameters()):,} parameters")
print("generator:", tuple(note_gan.noise(4).shape), "->", tuple(note_gan.generator(note_gan.noise(4)).shape))

# %% [markdown]
# Trained with the hinge loss, SoundStream's choice, through the same `Trainer`: two named
# objectives, two optimisers.

# %%
optimizers = {"discriminator": torch.optim.Adam(note_gan.discriminator.parameters(), lr=5e-4, betas=(0.5, 0.999)),
              "generator": torch.optim.Adam(note_gan.generator.parameters(), lr=5e-4, betas=(0.5, 0.999))}
settings = TrainConfig(batch_size=32, max_steps=800 * STEPS_SCALE, device=DEVICE, grad_clip=None, log_every=50,
                       checkpoint_every=0, seed=SEED)
note_history = Trainer(note_gan, settings, notes, gan.gan_objectives("hinge"), optimizers=optimizers,
                       lr_schedule="constant", progress=False).fit()
fig, ax = plt.subplots(figsize=(7, 3))
viz.plot_history(note_history, keys=["discriminator/real_logit", "discriminator/fake_logit"], ax=ax,
                 title="note GAN: the discriminator's mean logit on real and generated patches")
ax.set_ylabel("mean logit")
plt.show()

# %%
generated = note_gan.sample(10, torch.Generator().manual_seed(SEED)).cpu()
fig, axes = plt.subplots(2, 10, figsize=(15, 4), sharey=True)
for column in range(10):
    real_index = column * 50 + 24
    viz.show_patch(notes[real_index][0], ax=axes[0, column])
    axes[0, column].set_title(f"real: {notes.instruments[column]}", fontsize=7)
    viz.show_patch(generated[column, 0], ax=axes[1, column])
    axes[1, column].set_title(f"generated {column + 1}", fontsize=7)
    axes[1, column].set_xlabel("frame")
axes[0, 0].set_ylabel("mel band")
axes[1, 0].set_ylabel("mel band")
plt.tight_layout()
plt.show()
display(*(viz.play(notes.to_audio(generated[index]), SAMPLE_RATE) for index in range(3)))

# %% [markdown]
# Harmonics as horizontal lines, onsets and decays: the generator learned what a note looks like
# from the discriminator alone. (The audio is rebuilt from the mel patch by Griffin-Lim, so it
# sounds a little "phasey"; lesson 05's codec avoids that by generating waveforms.)
#
# Does it play *all* the instruments, or has it collapsed onto a few? A classifier trained on the
# real notes tells us which instrument each generated note resembles. Any convolutional network with
# ten outputs will do; `vae.ConvEncoder` is one. Small noise on its inputs keeps it from being
# thrown by a generated patch's imperfections. The recipe lives in
# `mlm_lessons.instrument_classifier`, because lesson 04 uses the same yardstick.

# %%
classifier = instrument_classifier.train_instrument_classifier(notes, steps=400, device=DEVICE, seed=SEED)
with torch.no_grad():
    generated_notes = note_gan.sample(500, torch.Generator().manual_seed(1))
fraction, found = instrument_classifier.recognised(classifier, generated_notes, threshold=0.8)
print(f"{fraction:.0%} of 500 generated notes are confidently one instrument")
print(f"instruments found among them: {int((found > 0).sum())} of {len(notes.instruments)}")
print(", ".join(f"{name} {count}" for name, count in zip(notes.instruments, found.tolist())))

# %% [markdown]
# An instrument with no samples at all is a dropped mode: the audio version of section 4.

# %% [markdown]
# ## 6. The discriminator as a learned loss
# Why would a codec want a discriminator? Because the obvious loss, squared error to the target,
# rewards the wrong thing. Compare two imitations of a real note $x$:
# * $x$ **blurred** along the frequency axis: close in squared error, but the harmonics are smeared,
#   and it sounds dull and noisy;
# * the **same instrument two semitones higher**: a perfectly real note, yet far from $x$ in
#   squared error, since every harmonic has moved.
#
# Squared error prefers the blur. The trained discriminator, which learned what real notes look
# like, does not:

# %%
index = torch.tensor([i for i in range(len(notes)) if notes.pitches[i] <= 70 and i % 2 == 0])
target = notes.patches[index]
two_semitones_up = notes.patches[index + 4]          # 2 velocities per pitch: +4 is +2 semitones
kernel = torch.tensor([1.0, 4, 6, 4, 1]).div(16).view(1, 1, 5, 1)
blurred = F.conv2d(F.pad(target, (0, 0, 2, 2), mode="replicate"), kernel)
blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), kernel)

note_gan.eval()
with torch.no_grad():
    _, target_features = note_gan.discriminator(target, return_features=True)
    print(f"{'imitation of x':>22} | squared error | D judges real | feature matching")
    judged = {}
    for name, imitation in [("blurred x", blurred), ("2 semitones up", two_semitones_up)]:
        logits, features = note_gan.discriminator(imitation, return_features=True)
        judged[name] = (F.mse_loss(imitation, target).item(), (logits > 0).float().mean().item(),
                        gan.feature_matching_loss(target_features, features).item())
        print(f"{name:>22} | {judged[name][0]:13.3f} | {judged[name][1]:13.0%} | {judged[name][2]:16.3f}")
note_gan.train();
(blur_error, blur_real, blur_features), (up_error, up_real, up_features) = judged.values()
assert blur_error < up_error and blur_real < up_real and blur_features < up_features
assert up_error / blur_error > up_features / blur_features   # feature matching separates them less

# %% [markdown]
# Look at the last column too: **feature matching also prefers the blur**, if by a smaller margin than
# squared error (the ratios are asserted above). That is no contradiction. It compares the
# discriminator's features of the imitation with those of *this* note $x$, so it is a distance to the
# target, like squared error, only measured in features learned for telling real from fake, where
# the blur's smeared harmonics cost more than in raw pixels. Only the discriminator's verdict (middle
# column) asks "is it real?" rather than "is it $x$?", and only it prefers the other, real note.
#
# A codec must reproduce *this* note, so it cannot drop the reconstruction loss: the other note is
# real but wrong. It cannot rely on it alone either, or it learns the blur. SoundStream's decoder
# therefore minimises a sum: a reconstruction loss on spectrograms, the adversarial
# `generator_loss(..., kind="hinge")` over a list of discriminators, and the **feature-matching
# loss**, the L1 distance between the discriminators' inner activations on the real clip and on its
# reconstruction. That last one is a reconstruction loss measured in features the discriminator
# *learned* for telling real from fake; it is `gan.feature_matching_loss`, and it accepts one list of
# feature maps per discriminator:

# %%
# NBVAL_CHECK_OUTPUT
torch.manual_seed(SEED)
discriminators = [gan.ConvDiscriminator(notes.patch_shape), gan.ConvDiscriminator(notes.patch_shape, channels=8)]
real_clips, reconstructions = notes.patches[:4], notes.patches[:4] + 0.1 * torch.randn(4, 1, 64, 32)
real_out = [d(real_clips, return_features=True) for d in discriminators]
fake_out = [d(reconstructions, return_features=True) for d in discriminators]
adversarial = gan.generator_loss([logits for logits, _ in fake_out], kind="hinge")
feature_matching = gan.feature_matching_loss([f for _, f in real_out], [f for _, f in fake_out])
print(f"{len(discriminators)} discriminators: adversarial loss is a scalar of shape {tuple(adversarial.shape)}, "
      f"feature matching over {sum(len(f) for _, f in real_out)} feature maps")

# %% [markdown]
# ## Exercises
# **Exercise 1 (2 points).** Write `my_ls_discriminator_loss(real_logits, fake_logits)`, the
# least-squares discriminator loss of the table in section 1, without using `mlm_lessons.gan`.

# %% solution ex1_least_squares
def my_ls_discriminator_loss(real_logits, fake_logits):
    ### BEGIN SOLUTION
    return ((real_logits - 1) ** 2).mean() + (fake_logits ** 2).mean()
    ### END SOLUTION

# %% tests ex1_least_squares_tests 2
assert float(my_ls_discriminator_loss(torch.ones(5), torch.zeros(7))) == 0.0, "zero at its targets: real 1, fake 0"
real, fake = torch.tensor([0.0, 0.5], requires_grad=True), torch.tensor([0.3, 2.0], requires_grad=True)
my_ls_discriminator_loss(real, fake).backward()
assert (real.grad < 0).all() and (fake.grad > 0).all(), "real logits pushed up towards 1, fake ones down towards 0"
### BEGIN HIDDEN TESTS
a, b = torch.randn(9), torch.randn(11)
torch.testing.assert_close(my_ls_discriminator_loss(a, b), gan.discriminator_loss(a, b, "least_squares"))
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (3 points).** On a grid of points, the data and the generator have densities
# `p_data` and `p_model` (tensors of the same shape). Write `optimal_discriminator(p_data, p_model)`
# returning $\sigma(D^*(x))$ at each grid point, the best discriminator's probability of "real".

# %% solution ex2_optimal_d
def optimal_discriminator(p_data, p_model):
    ### BEGIN SOLUTION
    return p_data / (p_data + p_model)
    ### END SOLUTION

# %% tests ex2_optimal_d_tests 3
grid = torch.linspace(-5, 5, 1001)
p_data = torch.exp(-0.5 * grid ** 2) / np.sqrt(2 * np.pi)
assert torch.allclose(optimal_discriminator(p_data, p_data), torch.full_like(grid, 0.5)), "a perfect generator leaves D guessing"
p_model = torch.exp(-0.5 * (grid - 1) ** 2) / np.sqrt(2 * np.pi)
d_star = optimal_discriminator(p_data, p_model)
assert ((d_star > 0) & (d_star < 1)).all() and d_star[0] > 0.5 > d_star[-1], "D* prefers where the data is denser"
### BEGIN HIDDEN TESTS
dx = grid[1] - grid[0]
value = (p_data * torch.log(d_star)).sum() * dx + (p_model * torch.log(1 - d_star)).sum() * dx
mixture = 0.5 * (p_data + p_model)
js = 0.5 * (p_data * torch.log(p_data / mixture)).sum() * dx + 0.5 * (p_model * torch.log(p_model / mixture)).sum() * dx
assert abs(float(value - (-np.log(4) + 2 * js))) < 1e-3, "V(D*, G) = -log 4 + 2 JS"
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (3 points).** `gan.mode_coverage` asks for a fair share of samples per mode. Write
# the simpler `modes_hit(samples, centers, radius)`: how many modes have *at least one* sample
# within `radius` of their centre. Then use it on the collapsing run of section 4: store in
# `collapsed_hits` the number for its last snapshot, `collapsing[-1]`, with `radius=3 * STD`.

# %% solution ex3_modes_hit
def modes_hit(samples, centers, radius):
    ### BEGIN SOLUTION
    distances = torch.cdist(samples, centers)                # (samples, modes)
    return int((distances <= radius).any(dim=0).sum())
    ### END SOLUTION

### BEGIN SOLUTION
collapsed_hits = modes_hit(collapsing[-1], centers, 3 * STD)
### END SOLUTION

# %% tests ex3_modes_hit_tests 3
assert modes_hit(ring[:2000], centers, 3 * STD) == 8, "data from every mode hits all eight"
assert modes_hit(centers[2:3] + 0.01 * torch.randn(50, 2), centers, 3 * STD) == 1, "a collapsed batch hits one"
assert modes_hit(torch.zeros(10, 2), centers, 3 * STD) == 0, "the centre of the ring is far from every mode"
assert 0 <= collapsed_hits <= 8
### BEGIN HIDDEN TESTS
assert collapsed_hits >= gan.mode_coverage(collapsing[-1], centers, STD)["modes_covered"]
### END HIDDEN TESTS

# %% [markdown]
# ## Summary
# - A GAN trains a generator through a discriminator's judgement. Against the optimal
#   discriminator the generator minimises the Jensen–Shannon divergence to the data.
# - The game's own generator loss saturates where the generator is bad; the non-saturating,
#   hinge and least-squares losses do not. All push $D(G(z))$ up while the generator is bad; the
#   least-squares loss stops at its target logit of 1 and pulls a higher one back down.
# - GANs can drop modes. On the ring of eight Gaussians, a generator faster than its discriminator
#   collapsed, and letting the discriminator see the batch's spread (minibatch standard deviation)
#   brought back all eight modes. The measured figures are printed below.
# - A trained discriminator is a learned loss. It accepts a different real note and rejects a
#   blurred copy of the target, which squared error ranks the other way round. SoundStream's decoder
#   trains on reconstruction + adversarial + feature-matching losses, the functions of `mlm_lessons.gan`.

# %%
print("measured in this run:")
print(f"  balanced 2-D GAN: {gan.mode_coverage(pictures[-1], centers, STD)['modes_covered']}/8 modes, "
      f"{gan.mode_coverage(pictures[-1], centers, STD)['high_quality']:.0%} of samples on a mode")
for name, run in [("generator 3x faster, plain D", collapsing), ("generator 3x faster, minibatch std", remedied)]:
    result = gan.mode_coverage(run[-1], centers, STD)
    print(f"  {name}: {result['modes_covered']}/8 modes, {result['high_quality']:.0%} on a mode")
print(f"  note GAN: {fraction:.0%} of samples confidently classified, "
      f"{int((found > 0).sum())}/10 instruments present")

# %% [markdown]
# > **Fact check: where GANs come from.** A common description attributes GANs to the
# > transformer paper, "Attention Is All You Need". In fact GANs were introduced by Goodfellow et
# > al., *Generative Adversarial Nets*, NeurIPS 2014; the transformer paper (Vaswani et al., 2017)
# > is about attention and contains no adversarial training.
#
# > **Fact check: which network is which.** A common description has the generator as the
# > convolutional classifier. In fact the **discriminator** is the classifier (here a stack of
# > strided convolutions ending in one logit), and the **generator** is the network that
# > *up-samples* noise into data, with transposed convolutions in DCGAN (Radford et al., 2016) and
# > in our note GAN.
#
# > **Fact check: GANs in SoundStream.** SoundStream (Zeghidour et al., 2021) trains its decoder
# > with a wave-based multi-scale discriminator and an STFT-based discriminator, hinge-style
# > adversarial losses and a feature-matching loss, on top of a multi-scale spectral
# > reconstruction loss. MusicLM's authors (Agostinelli et al., 2023) trained their own SoundStream,
# > adversarially, on the Free Music Archive, then froze it: the three MusicLM stages are trained
# > without a discriminator, but the codec whose decoder turns their tokens into sound is a GAN's
# > generator. (A common summary says MusicLM "does not train a GAN"; of its stages that is true, of
# > the system it is not.)
#
# **Check your understanding.** (1) Early in training $D(G(z)) = -6$: compute the minimax and the
# non-saturating gradients and say which generator learns. (2) The least-squares gradient is positive at
# $D(G(z)) = 3$: what does that do to a generator that is already fooling $D$? (3) Your GAN covers one
# mode at a time and hops between them: name two remedies and what each changes in the game. (4) Why
# can a codec not be trained with the adversarial loss alone, and why not with the reconstruction loss
# alone?
#
# **Going further.** Goodfellow's NeurIPS 2016 tutorial (arXiv:1701.00160); Mescheder et al. 2018,
# *Which training methods for GANs do actually converge?*; Kumar et al. 2019, MelGAN, and Kong et
# al. 2020, HiFi-GAN, for GAN vocoders; Metz et al. 2017 (unrolled GANs) on mode collapse.
# Next: **lesson 04**, variational autoencoders and the ELBO.
