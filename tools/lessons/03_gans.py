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
# 3. write the alternating discriminator/generator step by hand and check it against the course's
#    `Trainer`; train a GAN on 2-D data, watch the generated distribution move onto the target,
#    measure how many modes it covers, provoke **mode collapse** and fix it, over several seeds;
# 4. train a convolutional GAN on spectrograms of single notes and listen to it;
# 5. explain why a discriminator is a *learned loss*, and how SoundStream uses one.
#
# **Prerequisites.** Lesson 00 (log-mel spectrograms); PyTorch modules and optimisers; the
# logistic sigmoid $\sigma(a) = 1/(1 + e^{-a})$ and binary cross-entropy.

# %% [markdown]
# ## Set-up
# Everything you might want to change is in the next cell. On a CPU the defaults train every model
# of the lesson in about two minutes; with a GPU set `DEVICE = "cuda"` and raise `STEPS_SCALE` for
# better samples.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from IPython.display import display
from torch.utils.data import TensorDataset

from mlm_lessons import diagrams, gan, instrument_classifier, runtime, vae, viz
from mlm_lessons.config import TrainConfig
from mlm_lessons.train import Trainer

# ---- the one cell to change: scale and device ------------------------------------------------
PRESET = "tiny"          # the course scale (see mlm_lessons.config)
DEVICE = "cpu"           # "cuda" on a GPU machine
STEPS_SCALE = 1          # multiply every training run's length (e.g. 4 on a GPU)
SEED = 0
# -----------------------------------------------------------------------------------------------

run = runtime.set_up_lesson(PRESET, DEVICE, SEED, threads=1)   # seeds, one CPU thread, compact figures
SAMPLE_RATE = run.sample_rate
diagrams.musiclm_diagram(highlight="gan")
plt.show()

# %% [markdown]
# The picture above is the whole of MusicLM, as every lesson opens with it. No box in it is a GAN,
# yet the blue ones owe their quality to one: SoundStream's encoder, quantiser and decoder were
# trained together with discriminators that judged the decoder's output, the adversarial training
# of this lesson. At generation time (bottom row) the decoder alone turns the acoustic tokens $A$
# into a waveform; the discriminators are no longer needed and not drawn.

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
# everything it learns arrives as gradients through the discriminator. The picture below is one
# such training step, as this lesson will write it by hand in section 3.

# %%
diagrams.gan_training_diagram()
plt.show()

# %% [markdown]
# Follow the arrows of each half; the dashed ones carry gradients back.
# 1. **Discriminator step** (top). Noise $z$ goes through $G$ *without recording a graph*
#    (`torch.no_grad()`), so the fake $\tilde x$ is just a batch of numbers, like the real batch $x$
#    beside it. $D$ scores both, its loss rewards high logits on $x$ and low ones on $\tilde x$, and
#    the gradient stops at $D$: only $D$'s weights change. Without the `no_grad`, the backward pass
#    would run on into $G$ and compute gradients nobody uses.
# 2. **Generator step** (bottom). Fresh noise, and this time $G$ keeps its graph. $G$'s loss depends
#    only on $D(G(z))$; no real data appears. Its gradient has to pass *through* $D$ to reach $G$ (that
#    is how $D$'s judgement becomes $G$'s training signal), so $D$'s weights receive gradients too. They
#    must not move: only the generator's optimiser takes a step, and $D$'s gradients are cleared
#    before its next step.
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

def new_ring_gan(seed, minibatch_std=False):
    """A fresh 2-D GAN whose initial weights depend only on `seed`."""
    torch.manual_seed(seed)
    return gan.GAN(gan.MLPGenerator(latent_dim=2), gan.MLPDiscriminator(minibatch_std=minibatch_std), latent_dim=2)

def adam_pair(model, d_lr=1e-3, g_lr=1e-3):
    """One optimiser per player, each holding only its own player's parameters."""
    return {"discriminator": torch.optim.Adam(model.discriminator.parameters(), lr=d_lr, betas=(0.5, 0.999)),
            "generator": torch.optim.Adam(model.generator.parameters(), lr=g_lr, betas=(0.5, 0.999))}

# %% [markdown]
# ### One training step, by hand
# Here is the step of the diagram in section 1, in PyTorch, with the losses you wrote in section 2.
# The two details the diagram stressed are the two commented lines: the fake batch of the
# discriminator's step is made under `torch.no_grad()`, and each player's update is taken by an
# optimiser that holds that player's parameters only.

# %%
def gan_step(model, real, d_optimizer, g_optimizer, kind="hinge"):
    """One alternating step on a batch of real points: D first, then G. Returns (D's loss, G's loss)."""
    # 1. the discriminator step
    with torch.no_grad():                                    # the fake is a constant: no graph through G
        fake = model.generator(torch.randn(len(real), model.latent_dim))
    d_loss = my_discriminator_loss(model.discriminator(real), model.discriminator(fake), kind)
    model.zero_grad(set_to_none=True)                        # clear every gradient left from before
    d_loss.backward()
    d_optimizer.step()                                       # moves D only
    # 2. the generator step, on fresh noise
    fake = model.generator(torch.randn(len(real), model.latent_dim))
    g_loss = my_generator_loss(model.discriminator(fake), kind)
    model.zero_grad(set_to_none=True)
    g_loss.backward()                                        # gradients reach G *through* D ...
    g_optimizer.step()                                       # ... but only G moves
    return d_loss.item(), g_loss.item()

by_hand = new_ring_gan(SEED)
hand_optimizers = adam_pair(by_hand)
d_parameters = {id(p) for p in hand_optimizers["discriminator"].param_groups[0]["params"]}
g_parameters = {id(p) for p in hand_optimizers["generator"].param_groups[0]["params"]}
assert d_parameters == {id(p) for p in by_hand.discriminator.parameters()} and d_parameters.isdisjoint(g_parameters)

# %% [markdown]
# Now train with it for a few hundred steps on batches of 256 ring points, and train an identical
# model (same seed, same batches) with the course's `Trainer` and `gan.gan_objectives`, which the
# rest of the course uses. The package's objectives do exactly what `gan_step` does, in the same
# order and with the same random draws, so on a CPU the two runs should agree step for step:

# %%
HAND_STEPS = 200
batches = [(ring[start:start + 256],) for start in range(0, len(ring), 256)]   # 32 batches, used in turn
torch.manual_seed(SEED)
hand_losses = [gan_step(by_hand, batches[step % len(batches)][0], hand_optimizers["discriminator"],
                        hand_optimizers["generator"]) for step in range(HAND_STEPS)]

by_trainer = new_ring_gan(SEED)
settings = TrainConfig(batch_size=256, max_steps=HAND_STEPS, device="cpu", grad_clip=None, log_every=1,
                       checkpoint_every=0, seed=SEED)   # the CPU, where both do the same arithmetic
trainer_history = Trainer(by_trainer, settings, batches, gan.gan_objectives("hinge", real_key=0),
                          optimizers=adam_pair(by_trainer), lr_schedule="constant", progress=False).fit()
trainer_losses = [(row["discriminator/loss"], row["generator/loss"]) for row in trainer_history]

np.testing.assert_allclose(hand_losses, trainer_losses, rtol=1e-4, atol=1e-5)
for mine, theirs in zip(by_hand.parameters(), by_trainer.parameters()):
    torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
print(f"{HAND_STEPS} steps by hand and by the Trainer: the same losses at every step and the same weights "
      f"at the end (D's loss {hand_losses[-1][0]:.3f} vs {trainer_losses[-1][0]:.3f})")

# %% [markdown]
# From here on the `Trainer` runs the loop: it adds what a long run needs (logging, gradient
# clipping, checkpoints, several GPUs) around the same step. `train_gan` below trains in a few
# chunks and keeps a picture of the generated points after each. The first real run, with the
# hinge loss, the one SoundStream uses:

# %%
def train_gan(model, steps, kind="non_saturating", d_lr=1e-3, g_lr=1e-3, data=ring, batch_size=256, snapshots=1,
              seed=SEED):
    """Train with the course's Trainer in `snapshots` chunks; returns (history, generated points after each chunk)."""
    optimizers = adam_pair(model, d_lr, g_lr)
    history, pictures = [], []
    chunk = steps // snapshots
    for index in range(snapshots):
        settings = TrainConfig(batch_size=batch_size, max_steps=chunk, device=DEVICE, grad_clip=None, log_every=50,
                               checkpoint_every=0, seed=seed + index)
        trainer = Trainer(model, settings, TensorDataset(data), gan.gan_objectives(kind, real_key=0),
                          optimizers=optimizers, lr_schedule="constant", progress=False)
        history += [{**row, "step": row["step"] + index * chunk} for row in trainer.fit()]
        with torch.no_grad():
            model.generator.eval()
            pictures.append(model.generator(fixed_noise.to(DEVICE)).cpu())
            model.generator.train()
    return history, pictures

balanced = new_ring_gan(SEED)
BALANCED_STEPS = 2000 * STEPS_SCALE
history, pictures = train_gan(balanced, BALANCED_STEPS, kind="hinge", snapshots=4)
coverage = gan.mode_coverage(pictures[-1], centers, STD)
print(f"after {BALANCED_STEPS} steps: {coverage['modes_covered']} of 8 modes covered, "
      f"{coverage['high_quality']:.0%} of samples within 3 std of a mode")
assert coverage["modes_covered"] >= 6

# %% [markdown]
# The same 1,000 noise vectors, pushed through the generator after each quarter of training (grey:
# the data). Watch the cloud of generated points move onto the ring and split into blobs; by the
# end at least six of the eight modes are covered (asserted above; section 4 shows how much such
# counts vary from one seed to the next).

# %%
fig, axes = plt.subplots(1, 4, figsize=(11, 3), sharex=True, sharey=True)
for index, (ax, points) in enumerate(zip(axes, pictures)):
    ax.scatter(*ring[:1000].T, s=2, c="lightgrey", label="data")
    ax.scatter(*points.T, s=2, c="C3", label="generated")
    covered = gan.mode_coverage(points, centers, STD)["modes_covered"]
    ax.set(title=f"step {(index + 1) * BALANCED_STEPS // 4}: {covered}/8 modes", xlabel="x1", aspect="equal",
           xlim=(-3, 3), ylim=(-3, 3))
axes[0].set_ylabel("x2")
axes[0].legend(loc="lower left", fontsize=7, markerscale=3)
plt.tight_layout()
plt.show()

# %% [markdown]
# The losses of an adversarial game do not fall to zero: each player's progress raises the other's
# loss. What to compare them with are their values at equilibrium, where the discriminator can only
# guess and outputs $D = 0$ everywhere: for the hinge loss, $D$'s loss is then $1 + 1 = 2$ and
# $G$'s is $0$ (the dotted lines). Over the last third of this run both losses stay near them
# (asserted under the plot: on average within 0.25 of 2 and within 0.5 of 0).

# %%
fig, ax = plt.subplots(figsize=(7, 3))
viz.plot_history(history, keys=["discriminator/loss", "generator/loss"], ax=ax, smooth=3,
                 title="2-D GAN: each player's loss")
ax.axhline(2.0, color="C0", linestyle=":", linewidth=1)
ax.axhline(0.0, color="C1", linestyle=":", linewidth=1)
ax.set_ylabel("loss (dotted: equilibrium)")
plt.show()
last_third = history[2 * len(history) // 3:]
assert abs(np.mean([row["discriminator/loss"] for row in last_third]) - 2.0) < 0.25
assert abs(np.mean([row["generator/loss"] for row in last_third])) < 0.5

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
# generator is pushed to spread out. Same data, same learning rates, one extra input.
#
# Whether and when a GAN collapses depends on its random start and on the order of its batches, and
# the game amplifies small differences: on another machine, rounding alone can change the run. So
# we train each version from three seeds and claim only what holds for all of them. Each run takes
# 1,200 steps on batches of 128; we record how many modes the 1,000 fixed noise vectors cover after
# every quarter of training.

# %%
COLLAPSE_STEPS, COLLAPSE_SEEDS = 1200 * STEPS_SCALE, [SEED, SEED + 1, SEED + 2]

def collapse_experiment(seed, minibatch_std):
    """A GAN whose generator learns 3x faster than its discriminator; returns the generated points at 4 snapshots."""
    model = new_ring_gan(seed, minibatch_std)
    _, snapshots = train_gan(model, COLLAPSE_STEPS, d_lr=3e-4, g_lr=9e-4, batch_size=128, snapshots=4, seed=seed)
    return snapshots

def modes_covered(snapshots):
    return [gan.mode_coverage(points, centers, STD)["modes_covered"] for points in snapshots]

collapse_snapshots = {(seed, remedy): collapse_experiment(seed, remedy)      # remedy: minibatch std or not
                      for seed in COLLAPSE_SEEDS for remedy in (False, True)}
collapse_runs = {key: modes_covered(snapshots) for key, snapshots in collapse_snapshots.items()}
collapsing, remedied = collapse_snapshots[(SEED, False)], collapse_snapshots[(SEED, True)]   # drawn below

print(f"modes covered after each {COLLAPSE_STEPS // 4} steps")
print(f"{'seed':>4} | {'plain discriminator':<22} | with minibatch std")
for seed in COLLAPSE_SEEDS:
    print(f"{seed:>4} | {str(collapse_runs[(seed, False)]):<22} | {collapse_runs[(seed, True)]}")
plain_most = [max(collapse_runs[(seed, False)]) for seed in COLLAPSE_SEEDS]    # the most at any snapshot
remedy_final = [collapse_runs[(seed, True)][-1] for seed in COLLAPSE_SEEDS]    # at the end
print(f"\nplain, most modes at once in a run: mean {np.mean(plain_most):.1f}, range {min(plain_most)}-{max(plain_most)}")
print(f"minibatch std, modes at the end:    mean {np.mean(remedy_final):.1f}, range {min(remedy_final)}-{max(remedy_final)}")
assert max(plain_most) <= 2 and min(remedy_final) >= 5

# %%
fig, axes = plt.subplots(2, 4, figsize=(11.5, 5.8), sharex=True, sharey=True)
for row, (name, snapshots) in enumerate([("plain D", collapsing), ("minibatch std", remedied)]):
    for column, points in enumerate(snapshots):
        ax = axes[row, column]
        ax.scatter(*ring[:1000].T, s=2, c="lightgrey")
        ax.scatter(*points.T, s=2, c="C3" if row == 0 else "C2")
        covered = gan.mode_coverage(points, centers, STD)["modes_covered"]
        ax.set(title=f"{name}, step {(column + 1) * COLLAPSE_STEPS // 4}: {covered}/8", aspect="equal",
               xlim=(-3, 3), ylim=(-3, 3))
for ax in axes[1]:
    ax.set_xlabel("x1")
for ax in axes[:, 0]:
    ax.set_ylabel("x2")
plt.tight_layout()
plt.show()

# %% [markdown]
# The figure shows seed 0's two runs (the 1,000 fixed noise vectors after each quarter of training).
# What the table shows for every seed, and the cell above asserts: without help, the generator's
# samples bunch up and never cover more than two of the eight modes at once, in any snapshot of
# any run; with minibatch standard deviation, every run ends with at least five modes covered. How
# many exactly, and how soon, changes from seed to seed: that spread is why a single run proves
# little about a GAN trick. Other
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
def new_note_gan(seed):
    torch.manual_seed(seed)
    return gan.GAN(gan.ConvGenerator(latent_dim=32, patch_shape=notes.patch_shape),
                   gan.ConvDiscriminator(patch_shape=notes.patch_shape), latent_dim=32)

note_gan = new_note_gan(SEED)
for name, part in [("generator", note_gan.generator), ("discriminator", note_gan.discriminator)]:
    print(f"{name}: {sum(p.numel() for p in part.parameters()):,} parameters")
print("generator:", tuple(note_gan.noise(4).shape), "->", tuple(note_gan.generator(note_gan.noise(4)).shape))

# %% [markdown]
# Trained with the hinge loss, SoundStream's choice, through the same `Trainer`: two named
# objectives, two optimisers.

# %%
NOTE_STEPS = 300 * STEPS_SCALE

def train_note_gan(model, seed):
    settings = TrainConfig(batch_size=32, max_steps=NOTE_STEPS, device=DEVICE, grad_clip=None, log_every=25,
                           checkpoint_every=0, seed=seed)
    return Trainer(model, settings, notes, gan.gan_objectives("hinge"), optimizers=adam_pair(model, 5e-4, 5e-4),
                   lr_schedule="constant", progress=False).fit()

note_history = train_note_gan(note_gan, SEED)
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

def instrument_scores(model):
    """Classify 500 samples: (fraction confidently one instrument, count per instrument among those)."""
    with torch.no_grad():
        generated_notes = model.sample(500, torch.Generator().manual_seed(1))
    return instrument_classifier.recognised(classifier, generated_notes, threshold=0.8)

fraction, found = instrument_scores(note_gan)
print(f"{fraction:.0%} of 500 generated notes are confidently one instrument")
print(f"instruments found among them: {int((found > 0).sum())} of {len(notes.instruments)}")
print(", ".join(f"{name} {count}" for name, count in zip(notes.instruments, found.tolist())))

# %% [markdown]
# An instrument with no samples at all would be a dropped mode: the audio version of section 4. One
# GAN proves little, so we train two more from other seeds (the same recipe) and score them the
# same way:

# %%
note_gans, note_scores = {SEED: note_gan}, {SEED: (fraction, found)}
for seed in COLLAPSE_SEEDS[1:]:
    note_gans[seed] = new_note_gan(seed)
    train_note_gan(note_gans[seed], seed)
    note_scores[seed] = instrument_scores(note_gans[seed])
print(f"{'seed':>4} | recognised | instruments present | samples of the rarest present instrument")
for seed, (recognised_fraction, counts) in note_scores.items():
    print(f"{seed:>4} | {recognised_fraction:>10.0%} | {int((counts > 0).sum()):>19} | {int(counts[counts > 0].min()):>6}")
fractions = [score[0] for score in note_scores.values()]
present = [int((score[1] > 0).sum()) for score in note_scores.values()]
print(f"recognised: mean {np.mean(fractions):.0%}, range {min(fractions):.0%}-{max(fractions):.0%}; "
      f"instruments present: mean {np.mean(present):.1f}, range {min(present)}-{max(present)}")
assert min(fractions) > 0.7 and min(present) >= 8
assert all(counts.max() >= 2 * counts[counts > 0].min() for _, counts in note_scores.values())   # uneven

# %% [markdown]
# In every seed, more than 70% of the samples are confidently one instrument, and at least eight of
# the ten instruments occur (asserted above). The counts per instrument are far from equal, though:
# in every seed the commonest instrument has at least twice the samples of the rarest one present.
# A GAN covers the modes of real sounds unevenly; a longer run or a minibatch-std discriminator
# would be the next things to try.

# %% [markdown]
# ## 6. The discriminator as a learned loss
# Why would a codec want a discriminator? Because the obvious loss, squared error to the target,
# rewards the wrong thing. Compare two imitations of a real note $x$:
# * $x$ **blurred** along the frequency axis: close in squared error, but the harmonics are smeared,
#   and it sounds dull and noisy;
# * the **same instrument two semitones higher**: a perfectly real note, yet far from $x$ in
#   squared error, since every harmonic has moved.
#
# Squared error prefers the blur. What do the trained discriminators say? We ask all three note
# GANs of section 5, since one run of a GAN proves little: the discriminator's mean logit (its
# verdict: the higher, the more real), the share of imitations it calls real (logit above 0), and
# the feature-matching distance to $x$ that the end of this section turns into a loss.

# %%
index = torch.tensor([i for i in range(len(notes)) if notes.pitches[i] <= 70 and i % 2 == 0])
target = notes.patches[index]
two_semitones_up = notes.patches[index + 4]          # 2 velocities per pitch: +4 is +2 semitones
kernel = torch.tensor([1.0, 4, 6, 4, 1]).div(16).view(1, 1, 5, 1)
blurred = F.conv2d(F.pad(target, (0, 0, 2, 2), mode="replicate"), kernel)
blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), kernel)
blur_error, up_error = F.mse_loss(blurred, target).item(), F.mse_loss(two_semitones_up, target).item()
print(f"squared error to x: blurred {blur_error:.3f}, 2 semitones up {up_error:.3f}\n")

def judge(discriminator):
    """(mean logit, share judged real, feature-matching distance to x) for the blur and for the note up."""
    with torch.no_grad():
        _, target_features = discriminator(target, return_features=True)
        verdicts = []
        for imitation in (blurred, two_semitones_up):
            logits, features = discriminator(imitation, return_features=True)
            verdicts.append((logits.mean().item(), (logits > 0).float().mean().item(),
                             gan.feature_matching_loss(target_features, features).item()))
    return verdicts

print(f"{'seed':>4} | {'mean logit: blur, up':>20} | {'judged real: blur, up':>21} | feature matching: blur, up")
judged = {}
for seed, model in note_gans.items():
    model.eval()
    judged[seed] = judge(model.discriminator)
    model.train()
    (blur_logit, blur_real, blur_features), (up_logit, up_real, up_features) = judged[seed]
    print(f"{seed:>4} | {blur_logit:9.2f}, {up_logit:8.2f} | {blur_real:10.0%}, {up_real:8.0%} | "
          f"{blur_features:17.3f}, {up_features:.3f}")
logit_gaps = [up[0] - blur[0] for blur, up in judged.values()]
print(f"\nthe note up's logit minus the blur's: mean {np.mean(logit_gaps):.2f}, "
      f"range {min(logit_gaps):.2f} to {max(logit_gaps):.2f}")
assert blur_error < up_error
assert np.mean(logit_gaps) > 0.25                               # on average, D prefers the real note
for (_, _, blur_features), (_, _, up_features) in judged.values():
    assert blur_features < up_features                          # feature matching prefers the blur...
    assert up_error / blur_error > up_features / blur_features  # ...by less than squared error does

# %% [markdown]
# On average over the three runs, the discriminator's verdict turns the order round: the real note
# two semitones up gets a higher logit than the blur (the mean gap is asserted to be above 0.25).
# The range column is the caution. A GAN's discriminator ends training close to indifferent, since
# the generator keeps fooling it, and in a single run its preference can be small: in one of our
# runs (seed 0, on a CPU with AVX2 kernels) the two imitations scored almost the same, while on other
# runs the gap was above one. The verdict is a useful but noisy signal, which is one reason
# SoundStream uses several discriminators and never uses one alone.
#
# Look at the last column too: **feature matching prefers the blur** in every run, if by a smaller
# margin than squared error (the ratios are asserted above). That is no contradiction. It compares the
# discriminator's features of the imitation with those of *this* note $x$, so it is a distance to the
# target, like squared error, only measured in features learned for telling real from fake, where
# the blur's smeared harmonics cost more than in raw pixels. Only the discriminator's verdict (middle
# column) asks "is it real?" rather than "is it $x$?", and only it prefers, on average, the other,
# real note.
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
# **Exercise 1 (2 points): derive.** Section 2 measured the gradients of the generator losses with
# autograd. Derive them instead. Write `generator_loss_gradient(logits, kind)`: for a 1-D tensor of
# logits $a = D(G(z))$, one per generated sample, return the derivative of each sample's own loss
# (the expressions in the table of section 1) with respect to its $a$, for the four kinds of
# `gan.LOSS_KINDS`. Use only `torch.sigmoid` and arithmetic, no autograd. A fact you will need:
# $\frac{d}{da}\log\sigma(a) = 1 - \sigma(a)$.

# %% solution ex1_loss_gradient
def generator_loss_gradient(logits, kind):
    ### BEGIN SOLUTION
    if kind == "minimax":           # d/da log(1 - sigmoid(a)) = -sigmoid(a)
        return -torch.sigmoid(logits)
    if kind == "non_saturating":    # d/da -log sigmoid(a) = -(1 - sigmoid(a))
        return torch.sigmoid(logits) - 1
    if kind == "hinge":             # d/da -a
        return -torch.ones_like(logits)
    if kind == "least_squares":     # d/da (a - 1)^2
        return 2 * (logits - 1)
    raise ValueError(kind)
    ### END SOLUTION

# %% tests ex1_loss_gradient_tests 2
def autograd_gradient(logits, kind):
    """Each sample's derivative by autograd: the package's loss is a mean, so scale by the batch size."""
    logits = logits.detach().clone().requires_grad_(True)
    gan.generator_loss(logits, kind).backward()
    return logits.grad * len(logits)

logits = 4 * torch.randn(40, generator=torch.Generator().manual_seed(3))
for kind in gan.LOSS_KINDS:
    mine = generator_loss_gradient(logits, kind)
    assert mine.shape == logits.shape, f"{kind}: one derivative per logit"
    torch.testing.assert_close(mine, autograd_gradient(logits, kind), rtol=1e-4, atol=1e-5, msg=kind)
### BEGIN HIDDEN TESTS
extremes = torch.tensor([-30.0, -6.0, 0.0, 1.0, 3.0, 30.0])
for kind in gan.LOSS_KINDS:
    torch.testing.assert_close(generator_loss_gradient(extremes, kind), autograd_gradient(extremes, kind),
                               rtol=1e-4, atol=1e-5)
    more = torch.randn(7, generator=torch.Generator().manual_seed(17)) * 2
    torch.testing.assert_close(generator_loss_gradient(more, kind), autograd_gradient(more, kind), rtol=1e-4, atol=1e-5)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (3 points): derive.** Section 1 gave the best discriminator of the game, as a
# probability. Every loss of the table has its own best discriminator. At a single point $x$, where
# the data and the generator have densities $p_\text{data}$ and $p_G$, the discriminator's expected
# loss is $p_\text{data}\,\ell_\text{real}(D) + p_G\,\ell_\text{fake}(D)$, a function of one number
# $D = D(x)$ (for the non-saturating loss, $\ell_\text{real}(D) = -\log\sigma(D)$ and
# $\ell_\text{fake}(D) = -\log(1 - \sigma(D))$). Minimise it by hand for each loss, then write
# `optimal_output(p_data, p_model, kind)`: the minimising output $D^*$ (a logit for
# `"non_saturating"`; the raw output for `"least_squares"` and `"hinge"`), element by element, for
# tensors of positive densities of any shape.

# %% solution ex2_optimal_output
def optimal_output(p_data, p_model, kind):
    ### BEGIN SOLUTION
    if kind == "non_saturating":    # sigmoid(D*) = p_data / (p_data + p_model)
        return torch.log(p_data / p_model)
    if kind == "least_squares":     # minimise p_data (D - 1)^2 + p_model D^2
        return p_data / (p_data + p_model)
    if kind == "hinge":             # piecewise linear: the minimum sits at a corner, +1 or -1
        return torch.sign(p_data - p_model)
    raise ValueError(kind)
    ### END SOLUTION

# %% tests ex2_optimal_output_tests 3
def expected_loss(d, p_data, p_model, kind):
    """The discriminator's expected loss at one point, for outputs d (broadcast against the densities)."""
    if kind == "non_saturating":
        return p_data * F.softplus(-d) + p_model * F.softplus(d)
    if kind == "least_squares":
        return p_data * (d - 1) ** 2 + p_model * d ** 2
    return p_data * F.relu(1 - d) + p_model * F.relu(1 + d)

generator = torch.Generator().manual_seed(7)
p_data, p_model = torch.rand(30, generator=generator) + 0.02, torch.rand(30, generator=generator) + 0.02
candidates = torch.linspace(-6, 6, 4801)[:, None]                          # every output on a fine grid
for kind in ["non_saturating", "least_squares", "hinge"]:
    d_star = optimal_output(p_data, p_model, kind)
    assert d_star.shape == p_data.shape, f"{kind}: one output per point"
    best_on_grid = expected_loss(candidates, p_data, p_model, kind).min(dim=0).values
    assert (expected_loss(d_star, p_data, p_model, kind) <= best_on_grid + 1e-5).all(), \
        f"{kind}: some output on the grid has a lower expected loss than yours"
### BEGIN HIDDEN TESTS
grid = torch.rand(4, 5, generator=generator) + 0.05
other = torch.rand(4, 5, generator=generator) + 0.05
torch.testing.assert_close(optimal_output(grid, other, "non_saturating"), torch.log(grid / other))
torch.testing.assert_close(optimal_output(grid, other, "least_squares"), grid / (grid + other))
torch.testing.assert_close(optimal_output(grid, other, "hinge"), torch.sign(grid - other))
torch.testing.assert_close(torch.sigmoid(optimal_output(grid, other, "non_saturating")),
                           optimal_output(grid, other, "least_squares"))
assert torch.allclose(optimal_output(grid, grid, "non_saturating"), torch.zeros(4, 5), atol=1e-6)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (2 points): debug.** A colleague wrote their own training step. It runs without an
# error and both networks change, yet the discriminator's updates do not follow its loss: what they
# follow keeps growing from step to step, and part of it even pushes $D$ towards believing the
# generator. Copy the step into the solution cell, find the bug and fix it; nothing else needs
# changing (in particular, it may keep reusing the fake batch for the generator's step).
#
# ```python
# def train_gan_step(model, real, d_optimizer, g_optimizer, kind="hinge"):
#     fake = model.generator(model.noise(len(real)))
#     d_loss = gan.discriminator_loss(model.discriminator(real), model.discriminator(fake.detach()), kind)
#     d_loss.backward()
#     d_optimizer.step()
#     g_optimizer.zero_grad()
#     g_loss = gan.generator_loss(model.discriminator(fake), kind)
#     g_loss.backward()
#     g_optimizer.step()
#     return d_loss.item(), g_loss.item()
# ```

# %% solution ex3_debug_step
def train_gan_step(model, real, d_optimizer, g_optimizer, kind="hinge"):
    ### BEGIN SOLUTION
    fake = model.generator(model.noise(len(real)))
    d_loss = gan.discriminator_loss(model.discriminator(real), model.discriminator(fake.detach()), kind)
    d_optimizer.zero_grad()           # the bug: D's gradients were never cleared, so they piled up, including
    d_loss.backward()                 # those the generator's step leaves on D (which point towards being fooled)
    d_optimizer.step()
    g_optimizer.zero_grad()
    g_loss = gan.generator_loss(model.discriminator(fake), kind)
    g_loss.backward()
    g_optimizer.step()
    return d_loss.item(), g_loss.item()
    ### END SOLUTION

# %% tests ex3_debug_step_tests 2
def tiny_gan(seed):
    torch.manual_seed(seed)
    return gan.GAN(gan.MLPGenerator(latent_dim=2, hidden=16, num_layers=2),
                   gan.MLPDiscriminator(hidden=16, num_layers=2), latent_dim=2)

def optimisers_of(model):
    return (torch.optim.Adam(model.discriminator.parameters(), lr=1e-2),
            torch.optim.Adam(model.generator.parameters(), lr=1e-2))

real = gan.ring_of_gaussians(64, generator=torch.Generator().manual_seed(11))
clean, dirty, untouched = tiny_gan(5), tiny_gan(5), tiny_gan(5)
for parameter in dirty.parameters():
    parameter.grad = torch.full_like(parameter, 100.0)          # left over from some earlier computation
for model in (clean, dirty):
    torch.manual_seed(12)
    optimisers = optimisers_of(model)
    for _ in range(3):
        train_gan_step(model, real, *optimisers)
for player in ("discriminator", "generator"):
    before = list(getattr(untouched, player).parameters())
    after = list(getattr(clean, player).parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), f"the {player} must learn"
for a, b in zip(clean.parameters(), dirty.parameters()):
    assert torch.allclose(a, b, atol=1e-6), "a step must not depend on gradients left from before it"
### BEGIN HIDDEN TESTS
mine, reference = tiny_gan(21), tiny_gan(21)
real = gan.ring_of_gaussians(32, generator=torch.Generator().manual_seed(22))
my_optimisers, (d_optimizer, g_optimizer) = optimisers_of(mine), optimisers_of(reference)
torch.manual_seed(23)
my_losses = [train_gan_step(mine, real, *my_optimisers) for _ in range(4)]
torch.manual_seed(23)
reference_losses = []
for _ in range(4):
    fake = reference.generator(reference.noise(len(real)))
    d_loss = gan.discriminator_loss(reference.discriminator(real), reference.discriminator(fake.detach()), "hinge")
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()
    g_optimizer.zero_grad()
    g_loss = gan.generator_loss(reference.discriminator(fake), "hinge")
    g_loss.backward()
    g_optimizer.step()
    reference_losses.append((d_loss.item(), g_loss.item()))
assert np.allclose(my_losses, reference_losses, atol=1e-5)
assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(mine.parameters(), reference.parameters()))
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 4 (2 points, graded by hand): predict.** In the balanced run of section 3, each
# training step updated the discriminator once and the generator once. Suppose instead the
# discriminator takes **five** steps (on five batches) for every generator step, with the same
# learning rates. Predict what happens (a) to the gradient the generator receives, with the minimax
# loss and with the hinge loss, and (b) to mode collapse, and explain why. Write your answer in the
# next cell.

# %% answer ex4_five_d_steps 2
# *Model answer and marking guide.* 1 point, gradients: with more steps per round, $D$ gets closer
# to the best discriminator for the current generator, so it separates real from fake more
# confidently and $D(G(z))$ becomes very negative on the generator's samples. With the minimax loss
# that is exactly where the gradient $-\sigma(D(G(z)))$ vanishes (section 2), so the generator
# learns more slowly or stalls; the hinge (and non-saturating) generator losses keep a gradient of
# about $-1$ there and still learn. (Accept: a near-optimal $D$ makes the generator follow the
# divergence the theory of section 1 describes; with real and generated points far apart that
# divergence gives weak gradients, Arjovsky & Bottou 2017.)
# 1 point, mode collapse: it becomes *less* likely. Collapse in section 4 came from a generator
# moving faster than its discriminator and chasing $D$'s momentary favourite spot; a discriminator
# that keeps up quickly learns to reject a batch bunched on one mode, so the generator gains
# nothing by collapsing (the same reasoning as the two-time-scale rule, and why WGAN trains its
# critic 5 times per generator step). The cost: roughly three times the compute per generator step.

# %% [markdown]
# ## What you built
# - **The losses**, from scratch: minimax, non-saturating, hinge and least squares, equal to
#   `mlm_lessons.gan`'s. Against the optimal discriminator the generator minimises the
#   Jensen–Shannon divergence to the data; the game's own generator loss saturates where the
#   generator is bad, the other three do not, and the least-squares loss pulls a logit above its
#   target of 1 back down.
# - **The training step**, by hand: a discriminator step on a fake batch made under `no_grad`, then a
#   generator step whose gradient passes through a discriminator that does not move. It gave the same
#   losses, step for step, as the course's `Trainer` with `gan.gan_objectives`.
# - **A GAN on the ring of eight Gaussians**, and **mode collapse** provoked and measured over three
#   seeds: with a generator three times faster than its discriminator, no run covered more than two
#   modes at once; letting the discriminator see the batch's spread (minibatch standard deviation)
#   ended every run with at least five.
# - **A GAN that makes notes**, scored by an instrument classifier over three seeds: most samples are
#   recognisably one instrument, and at least eight instruments occur in every seed, unevenly.
# - **The discriminator as a learned loss.** Averaged over three runs, a trained one gives a different
#   real note a higher verdict than a blurred copy of the target, which squared error ranks the other
#   way round; in a single run the preference can be small. SoundStream's decoder
#   trains on reconstruction + adversarial + feature-matching losses, the functions of `mlm_lessons.gan`.
#
# The figures measured in this run:

# %%
print("measured in this run:")
print(f"  balanced 2-D GAN (seed {SEED}): {coverage['modes_covered']}/8 modes, "
      f"{coverage['high_quality']:.0%} of samples on a mode")
print(f"  generator 3x faster, plain D: at most {max(plain_most)} modes at once over seeds {COLLAPSE_SEEDS}")
print(f"  generator 3x faster, minibatch std: {min(remedy_final)}-{max(remedy_final)} modes at the end")
print(f"  note GAN: {min(fractions):.0%}-{max(fractions):.0%} of samples confidently classified, "
      f"{min(present)}-{max(present)} of 10 instruments present")
print(f"  discriminators' verdict, the note up's logit minus the blur's: mean {np.mean(logit_gaps):.2f} "
      f"over seeds {list(judged)}")

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
# **Going further.**
# - Goodfellow et al. 2014, *Generative Adversarial Nets*, [arXiv:1406.2661](https://arxiv.org/abs/1406.2661),
#   and Goodfellow's NeurIPS 2016 tutorial, [arXiv:1701.00160](https://arxiv.org/abs/1701.00160).
# - Radford et al. 2016, DCGAN, [arXiv:1511.06434](https://arxiv.org/abs/1511.06434); Mao et al. 2017,
#   least-squares GANs, [arXiv:1611.04076](https://arxiv.org/abs/1611.04076).
# - Mode collapse: Metz et al. 2017, unrolled GANs, [arXiv:1611.02163](https://arxiv.org/abs/1611.02163);
#   Karras et al. 2018, progressive GANs and minibatch standard deviation,
#   [arXiv:1710.10196](https://arxiv.org/abs/1710.10196); Lin et al. 2018, PacGAN,
#   [arXiv:1712.04086](https://arxiv.org/abs/1712.04086); Heusel et al. 2017, the two-time-scale rule,
#   [arXiv:1706.08500](https://arxiv.org/abs/1706.08500).
# - Which GAN training methods converge: Mescheder et al. 2018, [arXiv:1801.04406](https://arxiv.org/abs/1801.04406).
# - GANs for audio: Kumar et al. 2019, MelGAN, [arXiv:1910.06711](https://arxiv.org/abs/1910.06711); Kong et
#   al. 2020, HiFi-GAN, [arXiv:2010.05646](https://arxiv.org/abs/2010.05646); Zeghidour et al. 2021,
#   SoundStream, [arXiv:2107.03312](https://arxiv.org/abs/2107.03312).
#
# Next: **lesson 04**, variational autoencoders and the ELBO.
