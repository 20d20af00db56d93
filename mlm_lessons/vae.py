"""Autoencoders and variational autoencoders on log-mel patches, and the evidence lower bound.

A VAE (Kingma & Welling, 2014) is a latent-variable model ``p(x, z) = p(z) p(x | z)`` with a
standard normal prior ``p(z) = N(0, I)`` and a decoder network giving ``p(x | z)``; here a Gaussian
with mean ``decoder(z)`` and a fixed standard deviation ``decoder_std`` per mel bin. Its log-evidence
``log p(x)`` is intractable, so an encoder network proposes an approximate posterior
``q(z | x) = N(mean(x), diag(exp(log_var(x))))`` (a *diagonal* Gaussian, one mean and one variance
per latent dimension) and the two are trained together to maximise the **ELBO**::

    log p(x) = ELBO(x) + KL(q(z | x) || p(z | x))          (so ELBO <= log p(x): KL >= 0)
    ELBO(x)  = E_q[log p(x | z)]  -  KL(q(z | x) || p(z))
             = -(reconstruction error) - (how far q strays from the prior)

Maximising the ELBO therefore *minimises* the reconstruction error and the KL term. The β-VAE
(Higgins et al., 2017) weights the KL term by ``beta``: larger ``beta``, a smoother latent space and
blurrier reconstructions.

This module has the pieces in the order lesson 04 builds them: the data (:func:`note_mel_patches`,
single notes of every instrument as normalised log-mel patches, also used by lesson 03's GAN), the
reparameterisation trick, the closed-form KL, the Gaussian log-likelihood, :func:`elbo_terms`, the
models (:class:`ConvAutoencoder`, :class:`ConvVAE`), their ``Trainer`` objectives, latent
interpolation for the lesson's slider, and :class:`LinearGaussianModel` (probabilistic PCA), a model
whose ``log p(x)`` and true posterior are exact, to check the ELBO against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from mlm_lessons import audio, synth

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------------------------------
# Data: one note per patch, every instrument at several pitches


class NoteMelPatches(Dataset):
    """Normalised log-mel patches of single notes, with their instrument and pitch.

    ``dataset[i]`` is a ``(1, n_mels, frames)`` float32 patch (zero mean, unit variance over the
    whole set), ready for a convolutional network; the labels are in ``instrument_ids`` and
    ``pitches``. :meth:`to_log_mel` and :meth:`to_audio` undo the normalisation and invert a patch
    to sound (Griffin-Lim).

    Attributes:
        patches: ``(num_notes, 1, n_mels, frames)``.
        instrument_ids: ``(num_notes,)`` int64 indices into ``instruments``.
        pitches: ``(num_notes,)`` int64 MIDI notes.
        instruments: instrument names.
        mean, std: the normalisation constants (log-power units).
    """

    def __init__(self, patches, instrument_ids, pitches, instruments, mean, std, sample_rate, hop_length, n_fft):
        self.patches, self.instrument_ids, self.pitches = patches, instrument_ids, pitches
        self.instruments = list(instruments)
        self.mean, self.std = float(mean), float(std)
        self.sample_rate, self.hop_length, self.n_fft = sample_rate, hop_length, n_fft

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.patches[index]

    @property
    def patch_shape(self) -> tuple[int, int]:
        return tuple(self.patches.shape[2:])

    def to_log_mel(self, patch: torch.Tensor) -> torch.Tensor:
        """``(..., 1, n_mels, frames)`` or ``(n_mels, frames)`` normalised -> log-mel (same shape, squeezed)."""
        patch = patch.detach().cpu()
        while patch.dim() > 2 and patch.shape[0] == 1:
            patch = patch[0]
        return patch * self.std + self.mean

    def to_audio(self, patch: torch.Tensor, n_iter: int = 32) -> torch.Tensor:
        """A normalised ``(1, n_mels, frames)`` patch -> ``(time,)`` waveform via Griffin-Lim."""
        log_mel_spec = self.to_log_mel(patch)
        if log_mel_spec.dim() != 2:
            raise ValueError(f"to_audio takes one patch, (1, n_mels, frames); got {tuple(patch.shape)}")
        wave = audio.mel_to_audio(log_mel_spec, self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                                  n_iter=n_iter)
        return audio.peak_normalize(wave)


def note_mel_patches(instruments=synth.INSTRUMENTS, pitches=range(48, 73, 2), velocities=(0.6, 0.9),
                     sample_rate: int = 16_000, frames: int = 32, n_mels: int = 64, n_fft: int = 1024,
                     hop_length: int = 256) -> NoteMelPatches:
    """Render one note per (instrument, pitch, velocity) and turn each into a log-mel patch.

    A note lasts ``(frames - 1) * hop_length`` samples (0.5 s by default) so that :func:`audio.log_mel`
    gives exactly ``frames`` frames; the key is released at 80% of it, so each patch has an onset, a
    sustain and a release. Everything is deterministic.

    Returns:
        a :class:`NoteMelPatches` of ``len(instruments) * len(pitches) * len(velocities)`` patches.
    """
    instruments, pitches, velocities = list(instruments), list(pitches), list(velocities)
    if not instruments or not pitches or not velocities:
        raise ValueError("need at least one instrument, one pitch and one velocity")
    seconds = (frames - 1) * hop_length / sample_rate
    specs, instrument_ids, note_pitches = [], [], []
    for instrument_id, instrument in enumerate(instruments):
        for pitch in pitches:
            for velocity_index, velocity in enumerate(velocities):
                wave = synth.render_note(instrument, int(pitch), seconds, sample_rate, velocity=velocity,
                                         seed=velocity_index)
                specs.append(audio.log_mel(torch.from_numpy(wave), sample_rate, n_fft, hop_length, n_mels))
                instrument_ids.append(instrument_id)
                note_pitches.append(int(pitch))
    log_mels = torch.stack(specs)[:, None, :, :frames]                   # (notes, 1, n_mels, frames)
    mean, std = log_mels.mean(), log_mels.std()
    return NoteMelPatches((log_mels - mean) / std, torch.tensor(instrument_ids), torch.tensor(note_pitches),
                          instruments, mean, std, sample_rate, hop_length, n_fft)


# ----------------------------------------------------------------------------------------------------
# The probabilistic pieces


def _check_mean_log_var(mean: torch.Tensor, log_var: torch.Tensor) -> None:
    if mean.shape != log_var.shape:
        raise ValueError(f"mean {tuple(mean.shape)} and log_var {tuple(log_var.shape)} must have the same shape")
    if mean.dim() != 2:
        raise ValueError(f"mean and log_var must be (batch, latent_dim), got {tuple(mean.shape)}")


def reparameterize(mean: torch.Tensor, log_var: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``z ~ N(mean, diag(exp(log_var)))`` as ``mean + std * eps`` with ``eps ~ N(0, I)``.

    Sampling ``z`` directly would leave no path for gradients back to the encoder; written this way
    the randomness sits in ``eps`` and ``z`` is a differentiable function of ``mean`` and ``log_var``.

    Shapes: ``(batch, latent_dim)`` each -> ``(batch, latent_dim)``.
    """
    _check_mean_log_var(mean, log_var)
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
    return mean + torch.exp(0.5 * log_var) * eps


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, diag(exp(log_var))) || N(0, I))`` in closed form, in nats.

    Per dimension, ``KL = 0.5 * (var + mean**2 - 1 - log var)``: zero exactly when ``mean = 0`` and
    ``var = 1``, positive otherwise. Dimensions are independent, so their KLs add.

    Shapes: ``(batch, latent_dim)`` each -> ``(batch,)``.
    """
    _check_mean_log_var(mean, log_var)
    return 0.5 * (log_var.exp() + mean.pow(2) - 1.0 - log_var).sum(dim=1)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """``log N(x; mean, std**2 I)`` summed over every dimension but the first, in nats.

    With a fixed ``std`` this is ``-(squared error) / (2 std**2)`` plus a constant: maximising the
    likelihood is minimising the squared reconstruction error.

    Shapes: ``(batch, ...)`` and the same -> ``(batch,)``.
    """
    if x.shape != mean.shape:
        raise ValueError(f"x {tuple(x.shape)} and its predicted mean {tuple(mean.shape)} must have the same shape")
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    if (std <= 0).any():
        raise ValueError("the decoder's standard deviation must be positive")
    per_element = -0.5 * ((x - mean) / std).pow(2) - torch.log(std) - 0.5 * LOG_2PI
    return per_element.flatten(1).sum(dim=1)


@dataclass
class ELBOTerms:
    """The ELBO of each example and its two parts, in nats; all ``(batch,)``.

    ``elbo = log_likelihood - kl``; :meth:`loss` is what training minimises.
    """

    log_likelihood: torch.Tensor   # one-sample estimate of E_q[log p(x | z)]
    kl: torch.Tensor               # KL(q(z | x) || p(z)), exact
    squared_error: torch.Tensor    # sum of squared reconstruction errors, the part that depends on z

    @property
    def elbo(self) -> torch.Tensor:
        return self.log_likelihood - self.kl

    def loss(self, beta: float = 1.0) -> torch.Tensor:
        """Scalar ``mean(-log_likelihood + beta * kl)``: the negative (β-weighted) ELBO."""
        return (-self.log_likelihood + beta * self.kl).mean()


def elbo_terms(x: torch.Tensor, reconstruction: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor,
               decoder_std: float | torch.Tensor) -> ELBOTerms:
    """The ELBO of a Gaussian-decoder VAE from one forward pass.

    Args:
        x: ``(batch, ...)`` data.
        reconstruction: ``(batch, ...)`` the decoder's mean for a sample ``z ~ q(z | x)``.
        mean, log_var: ``(batch, latent_dim)`` the encoder's ``q(z | x)``.
        decoder_std: the standard deviation of ``p(x | z)`` (a number or broadcastable tensor).
    """
    return ELBOTerms(log_likelihood=gaussian_log_likelihood(x, reconstruction, decoder_std),
                     kl=gaussian_kl(mean, log_var),
                     squared_error=(x - reconstruction).pow(2).flatten(1).sum(dim=1))


# ----------------------------------------------------------------------------------------------------
# Models


def _check_patches(x: torch.Tensor, patch_shape: tuple[int, int], who: str) -> None:
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != tuple(patch_shape):
        raise ValueError(f"{who} expects patches of shape (batch, 1, {patch_shape[0]}, {patch_shape[1]}), "
                         f"got {tuple(x.shape)}")


class ConvEncoder(nn.Module):
    """``(batch, 1, n_mels, frames)`` -> ``(batch, out_features)``: strided convolutions, then a linear map."""

    def __init__(self, out_features: int, patch_shape: tuple[int, int] = (64, 32), channels: int = 16,
                 num_downsamples: int = 3):
        super().__init__()
        factor = 2 ** num_downsamples
        if patch_shape[0] % factor or patch_shape[1] % factor:
            raise ValueError(f"patch_shape {patch_shape} must be divisible by 2**num_downsamples = {factor}")
        layers, width_in, width_out = [], 1, channels
        for _ in range(num_downsamples):
            layers += [nn.Conv2d(width_in, width_out, kernel_size=4, stride=2, padding=1), nn.SiLU()]
            width_in, width_out = width_out, width_out * 2
        self.convs = nn.Sequential(*layers)
        self.linear = nn.Linear(width_in * (patch_shape[0] // factor) * (patch_shape[1] // factor), out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


class ConvDecoder(nn.Module):
    """``(batch, latent_dim)`` -> ``(batch, 1, n_mels, frames)``: a linear map to a small grid, then
    transposed convolutions that each double its height and width (the encoder in mirror image)."""

    def __init__(self, latent_dim: int, patch_shape: tuple[int, int] = (64, 32), channels: int = 16,
                 num_upsamples: int = 3):
        super().__init__()
        factor = 2 ** num_upsamples
        self.grid = (patch_shape[0] // factor, patch_shape[1] // factor)
        self.start_channels = channels * 2 ** (num_upsamples - 1)
        self.linear = nn.Linear(latent_dim, self.start_channels * self.grid[0] * self.grid[1])
        layers, width = [], self.start_channels
        for index in range(num_upsamples):
            last = index == num_upsamples - 1
            layers += [nn.SiLU(), nn.ConvTranspose2d(width, 1 if last else width // 2, kernel_size=4, stride=2,
                                                     padding=1)]
            width //= 2
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.linear(z).view(-1, self.start_channels, *self.grid))


class ConvAutoencoder(nn.Module):
    """A deterministic autoencoder: patch -> code ``z`` -> patch, trained on squared error alone.

    Shapes: ``encode`` ``(batch, 1, n_mels, frames)`` -> ``(batch, latent_dim)``; ``decode`` back.
    """

    outputs_per_latent = 1   # the VAE's encoder gives two numbers per latent dimension

    def __init__(self, latent_dim: int = 16, patch_shape: tuple[int, int] = (64, 32), channels: int = 16):
        super().__init__()
        self.latent_dim, self.patch_shape = latent_dim, tuple(patch_shape)
        self.encoder = ConvEncoder(self.outputs_per_latent * latent_dim, patch_shape, channels)
        self.decoder = ConvDecoder(latent_dim, patch_shape, channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _check_patches(x, self.patch_shape, type(self).__name__)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"decode expects codes of shape (batch, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@dataclass
class VAEOutput:
    """What one VAE forward pass gives: the reconstruction and the posterior it came from."""

    reconstruction: torch.Tensor   # (batch, 1, n_mels, frames): decoder mean at z
    mean: torch.Tensor             # (batch, latent_dim)
    log_var: torch.Tensor          # (batch, latent_dim)
    z: torch.Tensor                # (batch, latent_dim): the reparameterised sample


class ConvVAE(ConvAutoencoder):
    """A VAE with a diagonal-Gaussian encoder and a fixed-variance Gaussian decoder.

    The encoder outputs ``2 * latent_dim`` numbers per patch: the mean and the log-variance of
    ``q(z | x)``. Predicting the *log*-variance keeps the variance positive without a constraint.

    Args:
        decoder_std: standard deviation of ``p(x | z)`` in normalised units. It sets how many nats a
            unit of squared error costs (``1 / (2 decoder_std**2)``), and so, like ``beta``, how much
            the model values reconstruction over a simple latent code.
    """

    outputs_per_latent = 2

    def __init__(self, latent_dim: int = 16, patch_shape: tuple[int, int] = (64, 32), channels: int = 16,
                 decoder_std: float = 0.3):
        if decoder_std <= 0:
            raise ValueError(f"decoder_std must be positive, got {decoder_std}")
        super().__init__(latent_dim, patch_shape, channels)
        self.decoder_std = decoder_std

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch, 1, n_mels, frames)`` -> ``(mean, log_var)``, each ``(batch, latent_dim)``."""
        _check_patches(x, self.patch_shape, type(self).__name__)
        mean, log_var = self.encoder(x).chunk(2, dim=1)
        return mean, log_var

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        mean, log_var = self.encode(x)
        z = reparameterize(mean, log_var, generator)
        return VAEOutput(self.decode(z), mean, log_var, z)

    def elbo_terms(self, x: torch.Tensor, generator: torch.Generator | None = None) -> ELBOTerms:
        output = self(x, generator)
        return elbo_terms(x, output.reconstruction, output.mean, output.log_var, self.decoder_std)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``z ~ N(0, I)``: ``(num_samples, 1, n_mels, frames)`` (the decoder's mean)."""
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.latent_dim, generator=generator).to(device)
        return self.decode(z)


def autoencoder_objective():
    """``Trainer`` loss for :class:`ConvAutoencoder`: mean squared error per mel bin."""
    def objective(model: ConvAutoencoder, batch: torch.Tensor):
        return F.mse_loss(model(batch), batch)
    return objective


def vae_objective(beta: float = 1.0):
    """``Trainer`` loss for :class:`ConvVAE`: the negative β-ELBO per patch (nats).

    Logs ``elbo`` (with β = 1, the true bound), ``kl`` and ``mse`` (per mel bin) as metrics.
    """
    if beta < 0:
        raise ValueError(f"beta must be non-negative, got {beta}")

    def objective(model: ConvVAE, batch: torch.Tensor):
        terms = model.elbo_terms(batch)
        mse = terms.squared_error.mean() / batch[0].numel()
        return terms.loss(beta), {"elbo": terms.elbo.mean(), "kl": terms.kl.mean(), "mse": mse}
    return objective


# ----------------------------------------------------------------------------------------------------
# Walking the latent space


def interpolate_latents(z_start: torch.Tensor, z_end: torch.Tensor, positions) -> torch.Tensor:
    """Points on the straight line from ``z_start`` (position 0) to ``z_end`` (position 1).

    Args:
        z_start, z_end: ``(latent_dim,)``.
        positions: a number or a sequence/tensor of numbers in [0, 1].

    Returns:
        ``(len(positions), latent_dim)`` (``(latent_dim,)`` for a single number).
    """
    if z_start.shape != z_end.shape or z_start.dim() != 1:
        raise ValueError(f"z_start and z_end must be (latent_dim,) vectors of the same size; got "
                         f"{tuple(z_start.shape)} and {tuple(z_end.shape)}")
    t = torch.as_tensor(positions, dtype=z_start.dtype)
    if ((t < 0) | (t > 1)).any() or not torch.isfinite(t).all():
        raise ValueError(f"positions must lie in [0, 1], got {positions}")
    return torch.lerp(z_start, z_end, t[..., None]) if t.dim() else torch.lerp(z_start, z_end, t)


@torch.no_grad()
def decode_walk(model: ConvAutoencoder, z_start: torch.Tensor, z_end: torch.Tensor,
                position: float) -> torch.Tensor:
    """The decoded patch at ``position`` in [0, 1] along the line from ``z_start`` to ``z_end``.

    The pure function behind lesson 04's slider: ``(1, n_mels, frames)``, normalised units.
    """
    was_training = model.training
    model.eval()
    patch = model.decode(interpolate_latents(z_start, z_end, float(position))[None])[0]
    model.train(was_training)
    return patch


# ----------------------------------------------------------------------------------------------------
# A model with an exact log p(x): probabilistic PCA


class LinearGaussianModel:
    """``z ~ N(0, I_k)``, ``x = W z + b + noise`` with ``noise ~ N(0, noise_std**2 I_d)`` (Tipping & Bishop 1999).

    A linear decoder makes everything a VAE can only approximate exact, which is what makes it
    the place to check the ELBO:

    * ``log p(x) = log N(x; b, W W^T + noise_std**2 I)``;
    * the posterior is Gaussian, ``p(z | x) = N(M^{-1} W^T (x - b), noise_std**2 M^{-1})`` with
      ``M = W^T W + noise_std**2 I``;
    * for any Gaussian ``q(z) = N(m, S)`` the ELBO has a closed form (:meth:`elbo`), and
      ``log p(x) - ELBO = KL(q || p(z | x))``.

    Args:
        weight: ``(data_dim, latent_dim)``; bias: ``(data_dim,)``. float64 is advised for checks.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, noise_std: float):
        if weight.dim() != 2 or bias.shape != (weight.shape[0],):
            raise ValueError(f"weight must be (data_dim, latent_dim) and bias (data_dim,); got "
                             f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        if noise_std <= 0:
            raise ValueError(f"noise_std must be positive, got {noise_std}")
        self.weight, self.bias, self.noise_std = weight, bias, float(noise_std)
        self.data_dim, self.latent_dim = weight.shape

    def _check_x(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"x must be (batch, {self.data_dim}), got {tuple(x.shape)}")

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(num_samples, self.latent_dim, generator=generator, dtype=self.weight.dtype)
        noise = torch.randn(num_samples, self.data_dim, generator=generator, dtype=self.weight.dtype)
        return z @ self.weight.T + self.bias + self.noise_std * noise

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)``: ``(batch, data_dim)`` -> ``(batch,)``."""
        self._check_x(x)
        covariance = self.weight @ self.weight.T + self.noise_std ** 2 * torch.eye(self.data_dim, dtype=x.dtype)
        return torch.distributions.MultivariateNormal(self.bias, covariance).log_prob(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact ``p(z | x)``: means ``(batch, latent_dim)`` and the shared covariance ``(latent_dim, latent_dim)``."""
        self._check_x(x)
        m = self.weight.T @ self.weight + self.noise_std ** 2 * torch.eye(self.latent_dim, dtype=x.dtype)
        m_inverse = torch.linalg.inv(m)
        return (x - self.bias) @ self.weight @ m_inverse.T, self.noise_std ** 2 * m_inverse

    def elbo(self, x: torch.Tensor, q_mean: torch.Tensor, q_covariance: torch.Tensor) -> torch.Tensor:
        """Exact ELBO for ``q(z) = N(q_mean, q_covariance)``.

        ``E_q[log p(x | z)] = -d/2 log(2 pi s^2) - (|x - W m - b|^2 + tr(W S W^T)) / (2 s^2)`` and
        ``KL(q || N(0, I)) = (tr S + |m|^2 - k - log det S) / 2``.

        Args:
            x: ``(batch, data_dim)``; q_mean: ``(batch, latent_dim)``;
            q_covariance: ``(latent_dim, latent_dim)`` or ``(batch, latent_dim, latent_dim)``.

        Returns:
            ``(batch,)``.
        """
        self._check_x(x)
        if q_mean.shape != (x.shape[0], self.latent_dim):
            raise ValueError(f"q_mean must be ({x.shape[0]}, {self.latent_dim}), got {tuple(q_mean.shape)}")
        q_covariance = q_covariance.expand(x.shape[0], self.latent_dim, self.latent_dim)
        variance = self.noise_std ** 2
        residual = x - q_mean @ self.weight.T - self.bias
        spread = torch.einsum("dk,bkl,dl->b", self.weight, q_covariance, self.weight)   # tr(W S W^T)
        expected_log_likelihood = (-0.5 * self.data_dim * (LOG_2PI + math.log(variance))
                                   - (residual.pow(2).sum(1) + spread) / (2 * variance))
        kl = 0.5 * (torch.diagonal(q_covariance, dim1=1, dim2=2).sum(1) + q_mean.pow(2).sum(1)
                    - self.latent_dim - torch.logdet(q_covariance))
        return expected_log_likelihood - kl
