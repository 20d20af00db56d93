# %% [markdown]
# # Lesson 04 — Variational autoencoders and the ELBO
#
# A GAN (lesson 03) learns to *sample* but gives no way to ask how likely a sound is, and no map
# from a sound back to its code. A **variational autoencoder** (Kingma & Welling, 2014) has both:
# an encoder that turns a spectrogram into a distribution over a small latent code, a decoder that
# turns a code back into a spectrogram, and one training objective, the **evidence lower bound**
# (ELBO), that is a bound on the log-likelihood of the data. MusicLM's tokens come from a
# different autoencoder, SoundStream, whose bottleneck is *quantised* rather than Gaussian
# (lesson 05); this lesson builds the continuous version and the probability it rests on.
#
# **Goals.** By the end you can
# 1. derive the ELBO from $\log p(x)$, and say exactly what the gap between them is;
# 2. explain why maximising the ELBO means *minimising* reconstruction error plus a KL term;
# 3. write the reparameterisation trick and the closed-form Gaussian KL and check them;
# 4. train an autoencoder and a VAE on spectrograms of notes, sample new notes, walk the latent
#    space while listening, and measure the trade-off that $\beta$ controls.
#
# **Prerequisites.** Lesson 00 (log-mel spectrograms, Griffin-Lim) and lesson 03's convolutional
# networks; Gaussian densities, expectations, and the KL divergence
# $\mathrm{KL}(q \,\|\, p) = \mathbb E_q[\log q - \log p] \ge 0$.

# %% [markdown]
# ## Set-up
# The one cell to change is below. The defaults train every model of this lesson on a CPU in
# about a minute; on a GPU set `DEVICE = "cuda"` and raise `STEPS_SCALE`.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import ipywidgets as widgets
from IPython.display import display
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from mlm_lessons import config, instrument_classifier, vae, viz
from mlm_lessons.config import TrainConfig
from mlm_lessons.train import Trainer

# ---- the one cell to change: scale and device ------------------------------------------------
PRESET = "tiny"          # the course scale (see mlm_lessons.config)
DEVICE = "cpu"           # "cuda" on a GPU machine
STEPS_SCALE = 1          # multiply every training run's length (e.g. 4 on a GPU)
SEED = 0
LATENT_DIM = 8
# -----------------------------------------------------------------------------------------------

np.random.seed(SEED)
torch.manual_seed(SEED)
torch.set_num_threads(1)   # these models are small: one thread is as fast, and not slowed by a busy machine
plt.rcParams["figure.dpi"] = 72
viz.use_compact_inline_figures()
SAMPLE_RATE = config.get_preset(PRESET).data.sample_rate
print(f"preset {PRESET!r}, device {DEVICE!r}, audio at {SAMPLE_RATE} Hz, latent codes of {LATENT_DIM} numbers")

# %% [markdown]
# ## 1. The data: one note per patch
# Ten instruments, 25 pitches (MIDI 48–72), two velocities: 500 single notes rendered by
# `mlm_lessons.synth`, each a log-mel patch of 64 mel bands × 32 frames (half a second), scaled to
# zero mean and unit variance. Single notes make a clean test: a good generative model of them
# should produce notes you can name the instrument of.

# %%
notes = vae.note_mel_patches(pitches=range(48, 73))
print(f"{len(notes)} patches of shape {tuple(notes[0].shape)}; normalised log-power = (log-mel - {notes.mean:.2f}) / {notes.std:.2f}")
fig, axes = plt.subplots(1, 10, figsize=(15, 2.4), sharey=True)
for column, ax in enumerate(axes):
    viz.show_patch(notes[column * 50 + 24][0], ax=ax)
    ax.set(title=notes.instruments[column], xlabel="frame")
    ax.title.set_fontsize(8)
axes[0].set_ylabel("mel band")
plt.suptitle("one note (MIDI 60) per instrument", y=1.04)
plt.show()

# %% [markdown]
# ## 2. An autoencoder first
# An **autoencoder** squeezes each patch through a bottleneck: an encoder (strided convolutions,
# as in lesson 03's discriminator) maps the 2,048 numbers of a patch to a code $z$ of 8, and a
# decoder (transposed convolutions, like lesson 03's generator) maps the code back. Training
# minimises the squared reconstruction error $\|x - \hat x\|^2$.

# %%
torch.manual_seed(SEED)
autoencoder = vae.ConvAutoencoder(latent_dim=LATENT_DIM, patch_shape=notes.patch_shape)
settings = TrainConfig(batch_size=32, max_steps=1500 * STEPS_SCALE, learning_rate=2e-3, weight_decay=0.0,
                       warmup_steps=20, device=DEVICE, log_every=50, checkpoint_every=0, seed=SEED)
ae_history = Trainer(autoencoder, settings, notes, vae.autoencoder_objective(), progress=False).fit()
autoencoder.eval()
with torch.no_grad():
    ae_codes = autoencoder.encode(notes.patches)
    ae_mse = F.mse_loss(autoencoder.decode(ae_codes), notes.patches).item()
print(f"autoencoder: reconstruction error {ae_mse:.3f} per mel bin (the data's variance is 1)")

# %% [markdown]
# It reconstructs well. Can it *generate*? A generator needs a distribution to draw codes from,
# and the autoencoder never said what its codes look like. The best we can do is fit one after the
# fact, a Gaussian with the codes' mean and spread per dimension, and decode draws from it:

# %%
code_mean, code_std = ae_codes.mean(0), ae_codes.std(0)
with torch.no_grad():
    ae_samples = autoencoder.decode(code_mean + code_std * torch.randn(10, LATENT_DIM, generator=torch.Generator().manual_seed(SEED)))
fig, axes = plt.subplots(1, 10, figsize=(15, 2.4), sharey=True)
for column, ax in enumerate(axes):
    viz.show_patch(ae_samples[column, 0], ax=ax)
    ax.set(title=f"AE sample {column + 1}", xlabel="frame")
    ax.title.set_fontsize(8)
axes[0].set_ylabel("mel band")
plt.show()

# %% [markdown]
# Many look like notes: this data set is simple, and a Gaussian fitted after the fact happens
# to describe the codes fairly well (section 5 measures it). But nothing in the autoencoder's
# training made it so. The codes' scale and shape are whatever the network found, nothing asked
# the decoder to make sense of codes between those of real notes, and the model assigns no
# probability to anything, so two autoencoders cannot be compared as models of the data. The VAE
# makes the code distribution part of the model and trains on a bound on the likelihood.
#
# ## 3. The VAE and its evidence lower bound
# A VAE is a **latent-variable model**: draw a code $z \sim p(z) = \mathcal N(0, I)$, then a
# patch $x \sim p_\theta(x \mid z)$, here a Gaussian centred on the decoder's output,
# $p_\theta(x \mid z) = \mathcal N(x;\ \mathrm{dec}_\theta(z),\ \sigma^2 I)$. Its likelihood
# $p_\theta(x) = \int p(z)\, p_\theta(x \mid z)\, dz$ is what we would like to maximise, but the
# integral over all codes is intractable, and so is the posterior
# $p_\theta(z \mid x) = p(z)\,p_\theta(x \mid z) / p_\theta(x)$.
#
# **Derivation.** Take *any* distribution $q(z)$ over codes. For every $z$,
# $\log p_\theta(x) = \log p_\theta(x, z) - \log p_\theta(z \mid x)$. Average both sides over $z \sim q$
# (the left side does not depend on $z$) and add and subtract $\log q(z)$:
# $$\log p_\theta(x) = \underbrace{\mathbb E_{q}\Big[\log \frac{p_\theta(x, z)}{q(z)}\Big]}_{\mathrm{ELBO}(q)}
#   + \underbrace{\mathbb E_{q}\Big[\log \frac{q(z)}{p_\theta(z \mid x)}\Big]}_{\mathrm{KL}(q \,\|\, p_\theta(z \mid x))\ \ge\ 0}.$$
# So the ELBO is a lower bound on the log-evidence, and the gap is exactly how far $q$ is from the
# true posterior. Splitting $p_\theta(x, z) = p_\theta(x \mid z)\, p(z)$ inside the ELBO gives the
# form we train with:
# $$\mathrm{ELBO}(q) = \mathbb E_{q}\big[\log p_\theta(x \mid z)\big] - \mathrm{KL}\big(q(z) \,\|\, p(z)\big).$$
#
# **Why maximising it minimises reconstruction error.** With the Gaussian decoder,
# $\log p_\theta(x \mid z) = -\frac{1}{2\sigma^2}\|x - \mathrm{dec}_\theta(z)\|^2 - \frac{D}{2}\log(2\pi\sigma^2)$.
# The reconstruction term enters the ELBO with a **plus** sign as a log-likelihood, which is *minus*
# the squared error. Maximising the ELBO is therefore minimising
# $$\frac{1}{2\sigma^2}\,\mathbb E_q\|x - \mathrm{dec}_\theta(z)\|^2 + \mathrm{KL}\big(q(z) \,\|\, p(z)\big),$$
# reconstruction error plus a penalty for codes that stray from the prior.
#
# **Amortised inference.** Instead of optimising a separate $q$ for every patch, an encoder network
# outputs it: $q_\phi(z \mid x) = \mathcal N\big(\mu_\phi(x), \mathrm{diag}(\sigma^2_\phi(x))\big)$, a
# **diagonal** Gaussian, with one mean and one variance per latent dimension.
#
# ### The gap, on a model where we can compute everything
# For a *linear* decoder, $x = Wz + b + \text{noise}$ (probabilistic PCA, Tipping & Bishop 1999),
# $\log p(x)$ and the true posterior are Gaussian and exact, and so is the ELBO of any Gaussian $q$
# (`vae.LinearGaussianModel`). We move $q$'s mean and standard deviation away from the true
# posterior's and watch the bound.

# %%
generator = torch.Generator().manual_seed(SEED)
ppca = vae.LinearGaussianModel(weight=torch.tensor([[1.5], [-0.8]], dtype=torch.float64),
                               bias=torch.zeros(2, dtype=torch.float64), noise_std=0.5)
x = torch.tensor([[1.2, -0.2]], dtype=torch.float64)
log_evidence = ppca.log_marginal(x).item()
post_mean, post_cov = ppca.posterior(x)
post_std = post_cov.sqrt().item()

shifts = torch.linspace(-1.5, 1.5, 121, dtype=torch.float64)
elbo_by_mean = torch.stack([ppca.elbo(x, post_mean + shift, post_cov)[0] for shift in shifts])
stds = torch.linspace(0.1, 1.2, 121, dtype=torch.float64)
elbo_by_std = torch.stack([ppca.elbo(x, post_mean, (s ** 2).view(1, 1))[0] for s in stds])

fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
for ax, xs, elbos, label in [(axes[0], post_mean.item() + shifts, elbo_by_mean, "mean of q"),
                             (axes[1], stds, elbo_by_std, "standard deviation of q")]:
    ax.axhline(log_evidence, color="k", label="log p(x) (exact)")
    ax.plot(xs, elbos, color="C0", label="ELBO(q)")
    ax.fill_between(xs, elbos, log_evidence, color="C1", alpha=0.3, label="gap = KL(q || p(z|x))")
    ax.set(xlabel=label, ylim=(log_evidence - 3, log_evidence + 0.5))
axes[0].axvline(post_mean.item(), color="grey", linestyle=":", label="true posterior")
axes[1].axvline(post_std, color="grey", linestyle=":")
axes[0].set(ylabel="nats", title="moving q's mean (std at the posterior's)")
axes[1].set(title="changing q's spread (mean at the posterior's)")
axes[0].legend(fontsize=8, loc="lower center")
plt.tight_layout()
plt.show()
best = ppca.elbo(x, post_mean, post_cov).item()
print(f"log p(x) = {log_evidence:.4f}; ELBO at the true posterior = {best:.4f}; elsewhere it is lower")

# %% [markdown]
# The ELBO touches $\log p(x)$ only when $q$ *is* the posterior. Training a VAE moves both: the
# decoder raises $\log p_\theta(x)$, the encoder narrows the gap. (With a latent of one dimension
# the posterior is a one-dimensional Gaussian, so a Gaussian $q$ can match it exactly. With several
# correlated dimensions a *diagonal* $q$ cannot, and a gap remains; `tests/test_vae.py` checks that.)
#
# ## 4. The two pieces that make it trainable
# **The reparameterisation trick.** The ELBO's first term is an expectation over $z \sim q_\phi$,
# estimated with one sample per patch. Sampling is not differentiable in $\phi$, but
# $z = \mu + \sigma \odot \varepsilon$ with $\varepsilon \sim \mathcal N(0, I)$ is the same random
# variable and *is* differentiable in $\mu$ and $\sigma$: the randomness moved into $\varepsilon$.
# The encoder outputs $\log\sigma^2$, so the variance is positive without a constraint.
#
# **The KL term in closed form.** Between a diagonal Gaussian and $\mathcal N(0, I)$, dimension by dimension,
# $$\mathrm{KL} = \tfrac12 \sum_j \big(\sigma_j^2 + \mu_j^2 - 1 - \log \sigma_j^2\big),$$
# no sampling needed. Both from scratch, checked against the package, and the closed form checked
# against a Monte Carlo estimate $\mathbb E_q[\log q(z) - \log p(z)]$ from 200,000 samples:

# %%
# NBVAL_CHECK_OUTPUT
def my_reparameterize(mean, log_var, eps):
    return mean + torch.exp(0.5 * log_var) * eps

def my_gaussian_kl(mean, log_var):
    return 0.5 * (log_var.exp() + mean ** 2 - 1 - log_var).sum(dim=1)

mean, log_var = torch.tensor([[0.5, -1.0, 0.0]]), torch.tensor([[0.3, -0.7, 0.0]])
torch.testing.assert_close(my_gaussian_kl(mean, log_var), vae.gaussian_kl(mean, log_var))
eps = torch.randn(1, 3, generator=torch.Generator().manual_seed(SEED))
torch.testing.assert_close(my_reparameterize(mean, log_var, eps),
                           vae.reparameterize(mean, log_var, torch.Generator().manual_seed(SEED)))

z = vae.reparameterize(mean.expand(200_000, 3), log_var.expand(200_000, 3), torch.Generator().manual_seed(SEED))
q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
monte_carlo = (q.log_prob(z) - torch.distributions.Normal(0.0, 1.0).log_prob(z)).sum(1).mean()
print(f"KL closed form {my_gaussian_kl(mean, log_var).item():.3f} nats; Monte Carlo {monte_carlo.item():.2f} nats")

# %% [markdown]
# ## 5. Training the VAE
# `vae.ConvVAE` is the autoencoder above with an encoder that outputs $2 \times 8$ numbers per patch
# ($\mu$ and $\log\sigma^2$). Its loss, `vae.vae_objective(beta)`, is the negative ELBO per patch
# in nats, with the KL term weighted by $\beta$ (1 for the true ELBO).
#
# The decoder's $\sigma$ is fixed at 1. That is a choice, not a fact about the data, and it matters.
# With $\sigma$ fixed, the negative ELBO is $\frac{1}{2\sigma^2}\|x - \hat x\|^2 + \beta\,\mathrm{KL}$
# plus a constant; multiplying it by $\sigma^2$ changes no gradient's direction, so **$\sigma$ and
# $\beta$ are one knob**: only $\beta\sigma^2$ matters. After training, the reconstruction residual has
# a standard deviation of about 0.2 (printed below), so $\sigma = 1, \beta = 1$ trains like the
# better-fitting $\sigma \approx 0.2$ with $\beta \approx 25$: a strong pull towards the prior. Learning
# $\sigma$ with the rest would set it near the residual's size, and the $\beta$ of section 7 then means
# what it says.

# %%
def train_vae(beta, steps=1500):
    torch.manual_seed(SEED)
    model = vae.ConvVAE(latent_dim=LATENT_DIM, patch_shape=notes.patch_shape, decoder_std=1.0)
    settings = TrainConfig(batch_size=32, max_steps=steps * STEPS_SCALE, learning_rate=2e-3, weight_decay=0.0,
                           warmup_steps=20, device=DEVICE, log_every=50, checkpoint_every=0, seed=SEED)
    history = Trainer(model, settings, notes, vae.vae_objective(beta), progress=False).fit()
    return model.eval(), history

def evaluate(model):
    """Mean ELBO, KL (nats per patch) and reconstruction error (per mel bin, at the posterior mean)."""
    with torch.no_grad():
        terms = model.elbo_terms(notes.patches, torch.Generator().manual_seed(SEED))
        mean, _ = model.encode(notes.patches)
        mse = F.mse_loss(model.decode(mean), notes.patches).item()
    return {"elbo": terms.elbo.mean().item(), "kl": terms.kl.mean().item(), "mse": mse}

model, history = train_vae(beta=1.0)
scores = evaluate(model)
CONSTANT = -0.5 * 2048 * math.log(2 * math.pi)   # the likelihood's -D/2 log(2 pi) (log sigma = 0 at sigma = 1)
print(f"VAE: ELBO {scores['elbo']:.1f} nats per patch = {scores['elbo'] / 2048:.3f} per mel bin "
      f"({scores['elbo'] - CONSTANT:.1f} without the constant {CONSTANT:.1f}); "
      f"KL {scores['kl']:.1f} nats; reconstruction error {scores['mse']:.3f} per mel bin")
residual_std = scores["mse"] ** 0.5
print(f"residual standard deviation {residual_std:.2f}: sigma = 1 with beta = 1 trains like "
      f"sigma = {residual_std:.2f} with beta = {1 / residual_std ** 2:.0f}")
assert 0.18 < residual_std < 0.23   # "about 0.2" in the text: beta between 19 and 31

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3))
viz.plot_history(history, keys=["mse"], ax=axes[0], title="reconstruction error (per mel bin)", log_y=True)
viz.plot_history(history, keys=["kl"], ax=axes[1], title="KL(q(z|x) || p(z)) (nats per patch)")
axes[0].set_ylabel("squared error")
axes[1].set_ylabel("nats")
plt.tight_layout()
plt.show()

# %% [markdown]
# The KL starts low (the codes say little about each note), rises as the decoder learns to use
# them, and levels off while the reconstruction keeps improving: the encoder settles how much
# information about each note is worth its price in nats. Now the point of it all: decode draws
# from the **prior**, $z \sim \mathcal N(0, I)$, and listen to a few. What is shown and played as a
# "prior sample" is the decoder's *mean* $\hat x(z)$ for each draw, as is usual: a sample of $x$
# itself would add Gaussian noise of $\sigma = 1$ to every mel bin, several times the patches' own
# variation.

# %%
samples = model.sample(10, torch.Generator().manual_seed(SEED))
with torch.no_grad():
    reconstructions = model.decode(model.encode(notes.patches[[24, 124, 274, 374]])[0])
fig, axes = plt.subplots(2, 10, figsize=(15, 4.6), sharey=True)
for column in range(10):
    viz.show_patch(samples[column, 0], ax=axes[0, column])
    axes[0, column].set_title(f"prior sample {column + 1}", fontsize=8)
for column, (index, rebuilt) in enumerate(zip([24, 124, 274, 374], reconstructions)):
    viz.show_patch(notes[index][0], ax=axes[1, 2 * column])
    axes[1, 2 * column].set_title(f"{notes.instruments[index // 50]}", fontsize=8)
    viz.show_patch(rebuilt[0], ax=axes[1, 2 * column + 1])
    axes[1, 2 * column + 1].set_title("its reconstruction", fontsize=8)
for ax in axes[1, 8:]:
    ax.axis("off")
axes[0, 0].set_ylabel("mel band")
axes[1, 0].set_ylabel("mel band")
plt.tight_layout()
plt.show()
display(*(viz.play(notes.to_audio(samples[index]), SAMPLE_RATE) for index in range(3)))

# %% [markdown]
# ### Are the samples recognisable instruments?
# Ears are the final judge; a number helps. We train a classifier on the real notes (lesson 03's
# recipe: any convolutional network with ten outputs, here `vae.ConvEncoder`) and ask it about
# 500 prior samples of the VAE and 500 samples of the autoencoder with its fitted Gaussian: how many
# it recognises with confidence above 0.8, and which instruments those are.

# %%
classifier = instrument_classifier.train_instrument_classifier(notes, steps=400, device=DEVICE, seed=SEED)

def recognised(patches):
    """Fraction classified with confidence > 0.8, and how many of each instrument among them."""
    return instrument_classifier.recognised(classifier, patches, threshold=0.8)

with torch.no_grad():
    vae_samples = model.sample(500, torch.Generator().manual_seed(1))
    ae_random = autoencoder.decode(code_mean + code_std * torch.randn(500, LATENT_DIM, generator=torch.Generator().manual_seed(1)))
    reconstruction_accuracy = (classifier(model.decode(model.encode(notes.patches)[0])).argmax(1)
                               == notes.instrument_ids).float().mean().item()
vae_recognised, vae_found = recognised(vae_samples)
ae_recognised, ae_found = recognised(ae_random)
print(f"classifier on VAE reconstructions of the notes: {reconstruction_accuracy:.0%} name the right instrument")
print(f"VAE prior samples recognised: {vae_recognised:.0%}, covering {int((vae_found > 0).sum())} instruments")
print(f"AE samples (fitted Gaussian) recognised: {ae_recognised:.0%}, covering {int((ae_found > 0).sum())} instruments")
print("VAE samples by instrument:", ", ".join(f"{n} {c}" for n, c in zip(notes.instruments, vae_found.tolist())))
assert vae_recognised > 0.5 and (vae_found > 0).all() and abs(vae_recognised - ae_recognised) < 0.1

# %% [markdown]
# Most prior samples are recognisably one instrument, and every instrument occurs. The
# autoencoder with its fitted Gaussian scores about the same on data this simple: by this measure
# the VAE's advantage is not sharper samples. It is that its prior is part of the model rather
# than an afterthought, and that its training objective is a bound on $\log p(x)$, a number that
# lets us compare models, as the $\beta$ table below does.

# %% [markdown]
# ## 6. The latent space
# Each note's posterior mean $\mu_\phi(x)$ is a point in 8 dimensions. Two views in the plane,
# coloured by instrument: PCA (a linear projection: distances are honest, clusters may overlap)
# and t-SNE (non-linear: neighbourhoods are honest, distances between clusters are not).

# %%
with torch.no_grad():
    latent_means = model.encode(notes.patches)[0].numpy()
projections = {"PCA": PCA(n_components=2).fit_transform(latent_means),
               "t-SNE": TSNE(n_components=2, perplexity=30, init="pca", random_state=SEED).fit_transform(latent_means)}
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
colours = plt.get_cmap("tab10")
for ax, (name, points) in zip(axes, projections.items()):
    for instrument_id, instrument in enumerate(notes.instruments):
        chosen = (notes.instrument_ids == instrument_id).numpy()
        ax.scatter(*points[chosen].T, s=8, color=colours(instrument_id), label=instrument)
    ax.set(title=f"VAE latent means, {name}", xlabel=f"{name} 1", ylabel=f"{name} 2")
axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2)
plt.tight_layout()
plt.show()

# %% [markdown]
# In t-SNE each instrument forms its own strands (its notes, ordered by pitch); in the two linear
# directions of PCA they overlap. The instrument is encoded, but not along the two directions of
# largest variance.
#
# ### Walk it and listen
# Pick two notes, a flute and a distorted electric guitar at the same pitch, and decode points on
# the straight line between their codes. `vae.decode_walk(model, z_start, z_end, position)` is the
# whole computation (tested in `tests/test_vae.py`); the slider only calls it. First the walk in
# six steps, then the slider.

# %%
start_index, end_index = 50 + 24, 200 + 24      # flute and distorted guitar at MIDI 60
with torch.no_grad():
    z_start, z_end = model.encode(notes.patches[[start_index, end_index]])[0]
fig, axes = plt.subplots(1, 6, figsize=(14, 2.4), sharey=True)
for ax, position in zip(axes, np.linspace(0, 1, 6)):
    viz.show_patch(vae.decode_walk(model, z_start, z_end, position)[0], ax=ax)
    ax.set(title=f"position {position:.1f}", xlabel="frame")
axes[0].set_ylabel("mel band")
plt.suptitle("from flute (0) to distorted electric guitar (1)", y=1.05)
plt.show()

# %%
def show_walk(position=0.5):
    patch = vae.decode_walk(model, z_start, z_end, position)
    fig, ax = plt.subplots(figsize=(4, 2.6))
    viz.plot_mel(notes.to_log_mel(patch), SAMPLE_RATE, ax=ax, title=f"decoded at position {position:.2f}")
    plt.show()
    display(viz.play(notes.to_audio(patch), SAMPLE_RATE))

display(widgets.interactive(show_walk, position=widgets.FloatSlider(
    value=0.5, min=0.0, max=1.0, step=0.1, description="flute → guitar",
    style={"description_width": "initial"}, layout=widgets.Layout(width="420px"))))   # room for the whole label

# %% [markdown]
# ## 7. The β trade-off
# Weighting the KL term by $\beta$ (Higgins et al., 2017) trades reconstruction against a code
# that looks like the prior. Small $\beta$: sharper reconstructions, codes far from $\mathcal N(0, I)$,
# poorer prior samples. Large $\beta$: the opposite, until the codes carry little information at
# all. We train two more VAEs and measure, on the training notes, the true ELBO ($\beta = 1$), its
# KL term, the reconstruction error, and how many prior samples the classifier recognises.

# %%
results = {1.0: {**scores, "recognised": vae_recognised}}
for beta in [0.25, 4.0]:
    beta_model, _ = train_vae(beta)
    with torch.no_grad():
        recognised_fraction, _ = recognised(beta_model.sample(500, torch.Generator().manual_seed(1)))
    results[beta] = {**evaluate(beta_model), "recognised": recognised_fraction}
print(f"{'beta':>5} | {'ELBO (nats)':>11} | {'without constant':>16} | {'KL (nats)':>9} | {'recon. error':>12} | "
      "prior samples recognised")
for beta in sorted(results):
    row = results[beta]
    print(f"{beta:>5} | {row['elbo']:>11.1f} | {row['elbo'] - CONSTANT:>16.1f} | {row['kl']:>9.1f} | "
          f"{row['mse']:>12.3f} | {row['recognised']:>8.0%}")
kls, errors = [results[beta]["kl"] for beta in sorted(results)], [results[beta]["mse"] for beta in sorted(results)]
assert kls == sorted(kls, reverse=True) and errors == sorted(errors)
assert max(results, key=lambda beta: results[beta]["elbo"]) == 1.0

# %% [markdown]
# Read the table down the columns: as $\beta$ grows the KL (the information the code carries about
# each note, in nats) shrinks and the reconstruction error grows. The true ELBO is best at
# $\beta = 1$, the value for which it is the objective. Mind its size: almost all of it is the
# constant $-\tfrac D2 \log 2\pi$ of the Gaussian likelihood ($D = 2048$ mel bins, $\sigma = 1$); the
# differences between models sit in the few tens of nats that remain (the "without constant" column).
#
# ## Exercises
# **Exercise 1 (3 points).** Write `my_kl_diagonal(mean_q, log_var_q, mean_p, log_var_p)`, the KL
# divergence $\mathrm{KL}(q \,\|\, p)$ between two diagonal Gaussians, summed over the last
# dimension (shapes `(batch, latent_dim)` → `(batch,)`). Per dimension it is
# $\tfrac12\big(\log\frac{\sigma_p^2}{\sigma_q^2} + \frac{\sigma_q^2 + (\mu_q - \mu_p)^2}{\sigma_p^2} - 1\big)$.

# %% solution ex1_kl_diagonal
def my_kl_diagonal(mean_q, log_var_q, mean_p, log_var_p):
    ### BEGIN SOLUTION
    return 0.5 * (log_var_p - log_var_q + (log_var_q.exp() + (mean_q - mean_p) ** 2) / log_var_p.exp() - 1).sum(-1)
    ### END SOLUTION

# %% tests ex1_kl_diagonal_tests 3
m, lv = torch.randn(4, 3), torch.randn(4, 3)
assert torch.allclose(my_kl_diagonal(m, lv, m, lv), torch.zeros(4), atol=1e-6), "KL(q || q) = 0"
assert torch.allclose(my_kl_diagonal(m, lv, torch.zeros(4, 3), torch.zeros(4, 3)), vae.gaussian_kl(m, lv), atol=1e-5), \
    "with a standard normal p it is the closed form of section 4"
### BEGIN HIDDEN TESTS
m2, lv2 = torch.randn(4, 3), torch.randn(4, 3)
reference = torch.distributions.kl_divergence(torch.distributions.Normal(m, (0.5 * lv).exp()),
                                              torch.distributions.Normal(m2, (0.5 * lv2).exp())).sum(-1)
assert torch.allclose(my_kl_diagonal(m, lv, m2, lv2), reference, atol=1e-4)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 2 (2 points).** Write `my_negative_elbo(x, reconstruction, mean, log_var, decoder_std, beta)`
# returning, per example (shape `(batch,)`), the loss of section 3: minus the Gaussian
# log-likelihood of `x` around `reconstruction` (summed over all other dimensions, constants
# included) plus `beta` times the KL to the standard normal. Mind the signs.

# %% solution ex2_negative_elbo
def my_negative_elbo(x, reconstruction, mean, log_var, decoder_std, beta=1.0):
    ### BEGIN SOLUTION
    squared_error = (x - reconstruction).pow(2).flatten(1).sum(1)
    dimensions = x[0].numel()
    log_likelihood = -squared_error / (2 * decoder_std ** 2) - dimensions * np.log(decoder_std) - 0.5 * dimensions * np.log(2 * np.pi)
    return -log_likelihood + beta * vae.gaussian_kl(mean, log_var)
    ### END SOLUTION

# %% tests ex2_negative_elbo_tests 2
x_batch, rebuilt = notes.patches[:3], notes.patches[:3] + 0.1
m, lv = torch.randn(3, LATENT_DIM), torch.randn(3, LATENT_DIM)
terms = vae.elbo_terms(x_batch, rebuilt, m, lv, 0.7)
assert torch.allclose(my_negative_elbo(x_batch, rebuilt, m, lv, 0.7), -terms.elbo, rtol=1e-4), "beta = 1: minus the ELBO"
assert (my_negative_elbo(x_batch, rebuilt + 0.5, m, lv, 0.7) > my_negative_elbo(x_batch, rebuilt, m, lv, 0.7)).all(), \
    "a worse reconstruction must cost more"
### BEGIN HIDDEN TESTS
assert torch.allclose(my_negative_elbo(x_batch, rebuilt, m, lv, 0.7, beta=3.0) - my_negative_elbo(x_batch, rebuilt, m, lv, 0.7),
                      2 * terms.kl, rtol=1e-4)
### END HIDDEN TESTS

# %% [markdown]
# **Exercise 3 (2 points).** Straight lines through a Gaussian latent space pass near its centre,
# where typical codes never are (in many dimensions, samples of $\mathcal N(0, I)$ lie near a sphere).
# Write `slerp(z_start, z_end, t)`, spherical interpolation: with $\Omega$ the angle between the
# two vectors, $\frac{\sin((1-t)\Omega)}{\sin\Omega} z_\text{start} + \frac{\sin(t\Omega)}{\sin\Omega} z_\text{end}$.

# %% solution ex3_slerp
def slerp(z_start, z_end, t):
    ### BEGIN SOLUTION
    cosine = torch.dot(z_start, z_end) / (z_start.norm() * z_end.norm())
    omega = torch.arccos(cosine.clamp(-1, 1))
    return (torch.sin((1 - t) * omega) * z_start + torch.sin(t * omega) * z_end) / torch.sin(omega)
    ### END SOLUTION

# %% tests ex3_slerp_tests 2
a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
assert abs(slerp(a, b, 0.5).norm().item() - 3.0) < 1e-4, "between vectors of equal length, slerp keeps the length"
### BEGIN HIDDEN TESTS
assert torch.allclose(slerp(a, b, 0.5), torch.tensor([1.5, 1.5, 0.0]) * 2 ** 0.5, atol=1e-4)
### END HIDDEN TESTS

# %% [markdown]
# ## Summary
# - $\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q \,\|\, p(z \mid x))$: the ELBO is a lower bound,
#   tight exactly when $q$ is the true posterior (checked on probabilistic PCA above).
# - $\mathrm{ELBO} = \mathbb E_q[\log p(x \mid z)] - \mathrm{KL}(q \,\|\, p(z))$; with a Gaussian
#   decoder, maximising it minimises squared reconstruction error plus the KL term.
# - The reparameterisation trick makes the sampled term differentiable; the KL between a diagonal
#   Gaussian and $\mathcal N(0, I)$ has a closed form.
# - The VAE's prior samples are recognisable notes of every instrument. On data this simple, an
#   autoencoder with a Gaussian fitted to its codes afterwards scores about the same; only the VAE
#   has a likelihood bound to compare models with. $\beta$ trades reconstruction error against the
#   information (KL) the codes carry.
#
# The figures measured in this run:

# %%
print(f"autoencoder reconstruction error: {ae_mse:.3f} per mel bin")
for beta in sorted(results):
    row = results[beta]
    print(f"VAE beta={beta}: ELBO {row['elbo']:.1f} nats/patch, KL {row['kl']:.1f} nats, "
          f"reconstruction error {row['mse']:.3f}, prior samples recognised {row['recognised']:.0%}")
print(f"instruments among recognised VAE samples (beta=1): {int((vae_found > 0).sum())} of 10; "
      f"autoencoder samples recognised: {ae_recognised:.0%}")

# %% [markdown]
# > **Fact check: the sign of the reconstruction term.** A common description writes the ELBO as
# > "reconstruction error minus KL" and says training maximises it, which would reward bad
# > reconstructions. In fact the ELBO contains the reconstruction term as a log-likelihood,
# > $+\mathbb E_q[\log p(x \mid z)]$, which is *minus* the reconstruction error (for a Gaussian
# > decoder, a negative multiple of the squared error). Maximising the ELBO minimises
# > reconstruction error plus KL (Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014,
# > eq. 3 and the Gaussian example of its appendix C).
#
# > **Fact check: the shape of the posterior.** A common description says a VAE's encoder
# > outputs a Gaussian mixture. In fact the standard VAE's approximate posterior is a single
# > Gaussian with diagonal covariance, $\mathcal N(\mu_\phi(x), \mathrm{diag}(\sigma^2_\phi(x)))$
# > (Kingma & Welling 2014), which is what makes the KL term closed-form. Mixture posteriors and
# > mixture priors exist as extensions (e.g. VampPrior, Tomczak & Welling 2018), not as the VAE.
#
# ### The bridge to lesson 05: when the latent is a codebook
# A VQ-VAE (van den Oord et al., 2017) keeps this lesson's encoder and decoder and changes the
# bottleneck. Instead of a Gaussian $q(z \mid x)$, the encoder's output snaps to the nearest of $K$
# learned vectors, a **codebook**; the code of a patch is an integer, a token. What changes:
#
# | | VAE (this lesson) | VQ-VAE (lesson 05) |
# |---|---|---|
# | latent | continuous $z \in \mathbb R^d$, sampled | one of $K$ codebook vectors, chosen by nearest neighbour |
# | posterior | $\mathcal N(\mu_\phi(x), \mathrm{diag}\,\sigma_\phi^2(x))$ | deterministic, one-hot on the nearest code |
# | KL to a uniform prior | varies, the price of each code | the constant $\log K$: it drops out of training |
# | gradient through the bottleneck | reparameterisation | straight-through estimator, plus codebook and commitment losses |
# | prior for sampling | fixed $\mathcal N(0, I)$ | learned afterwards: an autoregressive model over the tokens |
#
# The last row is the road to MusicLM: a codec (SoundStream, a VQ-VAE with a residual quantiser
# and a GAN's losses) turns music into tokens, and language models like lesson 02's learn their
# prior. Mind one name: VQ-VAE's commitment loss has a weight also called $\beta$, which keeps the
# encoder's outputs near their codes; it is a different knob from section 7's.
#
# **Check your understanding.** (1) Your VAE's ELBO is -1,955 nats per patch: how much of that is the
# likelihood's constant, and what would change it? (2) You halve the decoder's $\sigma$: how must
# $\beta$ change for training to stay the same, and why? (3) The KL term is zero for every
# patch: what has the model learned, and what do its prior samples look like? (4) Why can you
# sample from a VAE right after training, but from a VQ-VAE only after training one more model?
#
# **Going further.** Kingma & Welling, *An Introduction to Variational Autoencoders* (2019);
# Higgins et al. 2017 (β-VAE); van den Oord et al. 2017, *Neural Discrete Representation
# Learning* (VQ-VAE: a quantised bottleneck, the road to SoundStream); Rezende & Mohamed 2015
# (normalising flows for richer posteriors). Next: **lesson 05**, vector quantisation and
# SoundStream.
