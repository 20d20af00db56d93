"""Generative adversarial networks: the players, the losses, and a measure of mode collapse.

A GAN (Goodfellow et al., 2014) trains two networks against each other:

* the **generator** ``G`` maps noise ``z ~ N(0, I)`` to a sample ``G(z)``; for images and
  spectrograms it *up-samples* (transposed convolutions), growing a small latent grid into a big one;
* the **discriminator** ``D`` is a classifier (convolutional for images and audio) that outputs a
  *logit*, large for inputs it believes are real and small for generated ones.

``D`` is trained to tell real from fake; ``G`` is trained to make ``D`` call its samples real. The
losses live in three functions, :func:`discriminator_loss`, :func:`generator_loss` and
:func:`feature_matching_loss`, and they are the same ones SoundStream's adversarial training
(lesson 05) uses, which is why every one of them accepts either one tensor or a **list** of tensors,
one per discriminator (SoundStream judges audio with several: a multi-scale waveform discriminator
and an STFT discriminator). With a list, each discriminator's loss is the mean over all its outputs
(every time step or patch it judged), and the discriminators' losses are averaged, as in Zeghidour et
al. (2021), eq. (1)-(2)::

    real_logits = [d(real) for d in discriminators]        # list of (batch, ...) tensors
    fake_logits = [d(fake.detach()) for d in discriminators]
    loss_d = discriminator_loss(real_logits, fake_logits, kind="hinge")

Loss kinds (``x`` real, ``G(z)`` fake, ``D`` the logit, ``sigma`` the logistic sigmoid):

==================  =======================================================  =============================
kind                discriminator minimises                                   generator minimises
==================  =======================================================  =============================
``minimax``         ``-log sigma(D(x)) - log(1 - sigma(D(G(z))))``            ``log(1 - sigma(D(G(z))))``
``non_saturating``  same as minimax                                          ``-log sigma(D(G(z)))``
``hinge``           ``max(0, 1 - D(x)) + max(0, 1 + D(G(z)))``               ``-D(G(z))``
``least_squares``   ``(D(x) - 1)^2 + D(G(z))^2``                              ``(D(G(z)) - 1)^2``
==================  =======================================================  =============================

``minimax`` is Goodfellow's original game, kept to show why it is not used: its generator gradient
vanishes exactly when the generator is bad (``D(G(z))`` very negative). The others are what people
train with: non-saturating (Goodfellow et al. 2014, sec. 3), hinge (Lim & Ye 2017; SoundStream's
adversarial loss) and least-squares (Mao et al. 2017; HiFi-GAN, EnCodec).

The module also holds the small models of lesson 03 (MLPs for 2-D toy data, a DCGAN-style pair for
log-mel patches), a minibatch-standard-deviation layer that counters mode collapse, and the
ring-of-Gaussians data with its mode-coverage measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LOSS_KINDS = ("minimax", "non_saturating", "hinge", "least_squares")

Logits = torch.Tensor | Sequence[torch.Tensor]


# ----------------------------------------------------------------------------------------------------
# Losses


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown GAN loss kind {kind!r}; choose one of {LOSS_KINDS}")


def _as_list(logits: Logits, name: str) -> list[torch.Tensor]:
    """One tensor or a sequence of them (one per discriminator) -> a non-empty list of float tensors."""
    items = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if not items:
        raise ValueError(f"{name} is empty; pass one tensor or one tensor per discriminator")
    for index, item in enumerate(items):
        if not isinstance(item, torch.Tensor):
            raise ValueError(f"{name}[{index}] is a {type(item).__name__}, not a tensor of logits")
        if not item.is_floating_point():
            raise ValueError(f"{name}[{index}] has dtype {item.dtype}; logits must be floating point")
        if item.numel() == 0:
            raise ValueError(f"{name}[{index}] has shape {tuple(item.shape)}: no logits to score")
    return items


def discriminator_loss(real_logits: Logits, fake_logits: Logits, kind: str = "hinge") -> torch.Tensor:
    """The discriminator's loss: low when real logits are high and fake logits low.

    Args:
        real_logits: ``D(x)`` for real data: a ``(batch, ...)`` tensor, or a list of them, one per
            discriminator (shapes may differ between discriminators: per-time-step or per-patch logits).
        fake_logits: ``D(G(z))``, the same structure as ``real_logits``. Detach the fake samples
            before the discriminator sees them, so this loss does not reach the generator.
        kind: ``"minimax"`` / ``"non_saturating"`` (the same binary cross-entropy for ``D``),
            ``"hinge"`` or ``"least_squares"``.

    Returns:
        Scalar: mean over each discriminator's outputs, then mean over discriminators.
    """
    _check_kind(kind)
    real_list, fake_list = _as_list(real_logits, "real_logits"), _as_list(fake_logits, "fake_logits")
    if len(real_list) != len(fake_list):
        raise ValueError(f"got logits from {len(real_list)} discriminator(s) for real data but "
                         f"{len(fake_list)} for fake data; pass one tensor per discriminator for each")
    losses = []
    for real, fake in zip(real_list, fake_list):
        if kind in ("minimax", "non_saturating"):
            # -log sigma(D(x)) = softplus(-D(x)) and -log(1 - sigma(D)) = softplus(D): stable for any logit.
            loss = F.softplus(-real).mean() + F.softplus(fake).mean()
        elif kind == "hinge":
            # Once a real logit is above +1 (a fake below -1) it no longer pushes: D stops at a margin.
            loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        else:  # least_squares: regress real logits to 1 and fake ones to 0
            loss = (real - 1).pow(2).mean() + fake.pow(2).mean()
        losses.append(loss)
    return torch.stack(losses).mean()


def generator_loss(fake_logits: Logits, kind: str = "hinge") -> torch.Tensor:
    """The generator's adversarial loss: low when the discriminator scores its samples as real.

    Args:
        fake_logits: ``D(G(z))`` *without* detaching (gradients must flow back into ``G``); a
            ``(batch, ...)`` tensor or a list of them, one per discriminator.
        kind: as in :func:`discriminator_loss`.

    Returns:
        Scalar; its gradient with respect to every fake logit is negative (raising ``D(G(z))``
        lowers the loss) for every kind, except that ``least_squares`` stops pushing at the target 1.
    """
    _check_kind(kind)
    losses = []
    for fake in _as_list(fake_logits, "fake_logits"):
        if kind == "minimax":
            # log(1 - sigma(D)) = -softplus(D): flat (no gradient) where D(G(z)) << 0, i.e. early on.
            loss = -F.softplus(fake).mean()
        elif kind == "non_saturating":
            loss = F.softplus(-fake).mean()      # -log sigma(D): steep exactly where G is bad
        elif kind == "hinge":
            loss = -fake.mean()
        else:
            loss = (fake - 1).pow(2).mean()
        losses.append(loss)
    return torch.stack(losses).mean()


def feature_matching_loss(real_features: Sequence, fake_features: Sequence) -> torch.Tensor:
    """L1 distance between the discriminator's inner activations on real and on generated data.

    The discriminator's hidden layers are features it *learned* for telling real from fake; asking
    the generator to reproduce them (Salimans et al. 2016; MelGAN; SoundStream's ``L_feat``) is a
    learned reconstruction loss. Real features are targets and are detached.

    Args:
        real_features: the feature maps of one discriminator, a list of ``(batch, ...)`` tensors
            (one per layer), or a list of such lists, one per discriminator.
        fake_features: the same structure for the generated data, paired example by example with
            the real data (in SoundStream: the codec's output for the same input clip).

    Returns:
        Scalar: mean absolute difference per layer, averaged over layers and discriminators.
    """
    real_groups, fake_groups = _feature_groups(real_features, "real_features"), \
        _feature_groups(fake_features, "fake_features")
    if len(real_groups) != len(fake_groups):
        raise ValueError(f"real_features come from {len(real_groups)} discriminator(s), fake_features from "
                         f"{len(fake_groups)}")
    per_layer = []
    for disc, (real_layers, fake_layers) in enumerate(zip(real_groups, fake_groups)):
        if len(real_layers) != len(fake_layers):
            raise ValueError(f"discriminator {disc}: {len(real_layers)} real feature maps but "
                             f"{len(fake_layers)} fake ones")
        for layer, (real, fake) in enumerate(zip(real_layers, fake_layers)):
            if real.shape != fake.shape:
                raise ValueError(f"discriminator {disc}, layer {layer}: real features {tuple(real.shape)} and "
                                 f"fake features {tuple(fake.shape)} differ; feature matching compares "
                                 "the same examples, so both must have the same shape")
            per_layer.append((fake - real.detach()).abs().mean())
    return torch.stack(per_layer).mean()


def _feature_groups(features: Sequence, name: str) -> list[list[torch.Tensor]]:
    """A list of tensors (one discriminator) or a list of lists (several) -> list of lists."""
    if isinstance(features, torch.Tensor):
        raise ValueError(f"{name} must be a list of feature maps (one per layer), not a single tensor; "
                         "wrap it in a list")
    groups = list(features)
    if not groups:
        raise ValueError(f"{name} is empty")
    if all(isinstance(item, torch.Tensor) for item in groups):
        groups = [groups]
    for group in groups:
        if isinstance(group, torch.Tensor) or not all(isinstance(t, torch.Tensor) for t in group) or not group:
            raise ValueError(f"{name} must be a list of tensors or a list of non-empty lists of tensors")
    return [list(group) for group in groups]


# ----------------------------------------------------------------------------------------------------
# Toy 2-D data and how much of it a generator covers


def ring_centers(num_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """``(num_modes, 2)`` points evenly spaced on a circle."""
    angles = 2 * math.pi * torch.arange(num_modes) / num_modes
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def ring_of_gaussians(num_samples: int, num_modes: int = 8, radius: float = 2.0, std: float = 0.05,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The classic mode-collapse benchmark: a mixture of Gaussians placed around a circle.

    Returns:
        ``(num_samples, 2)`` float32 points, each from a uniformly chosen mode.
    """
    if num_samples < 1 or num_modes < 1 or std <= 0:
        raise ValueError(f"need num_samples >= 1, num_modes >= 1 and std > 0; got {num_samples}, "
                         f"{num_modes}, {std}")
    modes = torch.randint(num_modes, (num_samples,), generator=generator)
    noise = torch.randn(num_samples, 2, generator=generator)
    return ring_centers(num_modes, radius)[modes] + std * noise


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float,
                  num_stds: float = 3.0, min_fraction: float = 0.25) -> dict[str, float]:
    """How many modes of a mixture a set of samples covers, and how many samples are on a mode.

    A sample is *high quality* when it lies within ``num_stds`` standard deviations of its nearest
    mode's centre; a mode is *covered* when it receives at least ``min_fraction`` of its fair share
    (``len(samples) / num_modes``) of high-quality samples. This is the measure of the unrolled-GAN
    and VEEGAN papers (Metz et al. 2017; Srivastava et al. 2017).

    Args:
        samples: ``(num_samples, dim)``.
        centers: ``(num_modes, dim)``.

    Returns:
        ``{"modes_covered": int, "high_quality": fraction in [0, 1], "per_mode": list of counts}``.
    """
    if samples.dim() != 2 or centers.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples must be (num_samples, dim) and centers (num_modes, dim) with the same dim; "
                         f"got {tuple(samples.shape)} and {tuple(centers.shape)}")
    distances = torch.cdist(samples.float(), centers.float())            # (num_samples, num_modes)
    nearest_distance, nearest_mode = distances.min(dim=1)
    on_mode = nearest_distance <= num_stds * std
    per_mode = torch.bincount(nearest_mode[on_mode], minlength=len(centers))
    fair_share = len(samples) / len(centers)
    return {"modes_covered": int((per_mode >= min_fraction * fair_share).sum()),
            "high_quality": float(on_mode.float().mean()),
            "per_mode": per_mode.tolist()}


# ----------------------------------------------------------------------------------------------------
# Models for 2-D data


class MinibatchStd(nn.Module):
    """Append how varied the batch is as one extra feature (Karras et al. 2018, "minibatch stddev").

    A collapsed generator outputs near-identical samples; one example at a time, a discriminator
    cannot see that. This layer gives it the batch's spread, averaged over features, as an extra
    input, so a batch with too little variety is easy to call fake, and the generator is pushed to
    spread out. Works on ``(batch, features)`` and on ``(batch, channels, height, width)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2:
            raise ValueError("MinibatchStd needs a batch of at least 2 examples to measure their spread")
        spread = x.std(dim=0, unbiased=False).mean()                      # one number for the batch
        extra = spread.expand(x.shape[0], 1, *x.shape[2:])
        return torch.cat([x, extra], dim=1)


class MLPGenerator(nn.Module):
    """``(batch, latent_dim)`` noise -> ``(batch, data_dim)`` points, through ReLU layers."""

    def __init__(self, latent_dim: int = 2, data_dim: int = 2, hidden: int = 128, num_layers: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        layers, width = [], latent_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"MLPGenerator expects noise of shape (batch, {self.latent_dim}), got {tuple(z.shape)}")
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """``(batch, data_dim)`` points -> ``(batch,)`` logits; optionally sees the batch's spread.

    Args:
        minibatch_std: give the network the batch's spread (a :class:`MinibatchStd` on its input).
    """

    def __init__(self, data_dim: int = 2, hidden: int = 128, num_layers: int = 3, minibatch_std: bool = False):
        super().__init__()
        self.data_dim = data_dim
        # For points in a plane the most telling summary of a batch is the spread of the points
        # themselves, so the layer goes first (on images it goes last, after the features are learned).
        layers, width = ([MinibatchStd()], data_dim + 1) if minibatch_std else ([], data_dim)
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"MLPDiscriminator expects points of shape (batch, {self.data_dim}), "
                             f"got {tuple(x.shape)}")
        return self.net(x).squeeze(1)


class GAN(nn.Module):
    """The two players in one module, so the training loop can hold and checkpoint both.

    ``sample(n)`` draws ``n`` generated examples (no gradients); :func:`gan_objectives` gives the
    ``loss_fn`` dict for :class:`mlm_lessons.train.Trainer`.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim

    def noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(batch_size, latent_dim)`` standard normal noise on the model's device."""
        device = next(self.parameters()).device
        return torch.randn(batch_size, self.latent_dim, generator=generator).to(device)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        was_training = self.generator.training
        self.generator.eval()
        samples = self.generator(self.noise(num_samples, generator))
        self.generator.train(was_training)
        return samples


def gan_objectives(kind: str = "non_saturating", real_key: str | int | None = None):
    """The two named objectives of a GAN, ready for ``Trainer(loss_fn=...)``.

    Args:
        kind: the loss kind for both players (see :data:`LOSS_KINDS`).
        real_key: where the real examples are in a batch: ``None`` if the batch *is* the tensor,
            an index for tuples (``TensorDataset`` yields ``(x,)``), or a key for dict batches.

    Returns:
        ``{"discriminator": fn, "generator": fn}``, each ``fn(gan, batch) -> (loss, metrics)``;
        the discriminator's metrics are its mean logits on real and fake data.
    """
    _check_kind(kind)

    def real_of(batch):
        return batch if real_key is None else batch[real_key]

    def discriminator_objective(gan: GAN, batch):
        real = real_of(batch)
        with torch.no_grad():                  # this phase updates D only: no graph through G
            fake = gan.generator(gan.noise(real.shape[0]))
        real_logits, fake_logits = gan.discriminator(real), gan.discriminator(fake)
        loss = discriminator_loss(real_logits, fake_logits, kind)
        return loss, {"real_logit": real_logits.mean(), "fake_logit": fake_logits.mean()}

    def generator_objective(gan: GAN, batch):
        fake = gan.generator(gan.noise(real_of(batch).shape[0]))
        return generator_loss(gan.discriminator(fake), kind), {}

    return {"discriminator": discriminator_objective, "generator": generator_objective}


# ----------------------------------------------------------------------------------------------------
# Models for log-mel patches (DCGAN-style)


class ConvGenerator(nn.Module):
    """Noise -> log-mel patch by up-sampling: a small grid grown by transposed convolutions.

    Each ``ConvTranspose2d(kernel 4, stride 2, padding 1)`` doubles height and width, the mirror image
    of the discriminator's strided convolutions (Radford et al. 2016, DCGAN).

    Args:
        patch_shape: ``(n_mels, frames)`` of the output, both divisible by ``2 ** num_upsamples``.

    Shapes: ``(batch, latent_dim)`` -> ``(batch, 1, n_mels, frames)``.
    """

    def __init__(self, latent_dim: int = 32, patch_shape: tuple[int, int] = (64, 32), channels: int = 64,
                 num_upsamples: int = 3):
        super().__init__()
        factor = 2 ** num_upsamples
        if patch_shape[0] % factor or patch_shape[1] % factor:
            raise ValueError(f"patch_shape {patch_shape} must be divisible by 2**num_upsamples = {factor}")
        self.latent_dim, self.patch_shape = latent_dim, tuple(patch_shape)
        self.start_channels = channels
        self.start_grid = (patch_shape[0] // factor, patch_shape[1] // factor)
        self.project = nn.Linear(latent_dim, channels * self.start_grid[0] * self.start_grid[1])
        blocks, width = [], channels
        for _ in range(num_upsamples - 1):
            blocks += [nn.BatchNorm2d(width), nn.ReLU(),
                       nn.ConvTranspose2d(width, width // 2, kernel_size=4, stride=2, padding=1)]
            width //= 2
        blocks += [nn.BatchNorm2d(width), nn.ReLU(), nn.ConvTranspose2d(width, 1, kernel_size=4, stride=2, padding=1)]
        self.upsample = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"ConvGenerator expects noise of shape (batch, {self.latent_dim}), got {tuple(z.shape)}")
        grid = self.project(z).view(-1, self.start_channels, *self.start_grid)
        return self.upsample(grid)


class ConvDiscriminator(nn.Module):
    """Log-mel patch -> realness logit: a convolutional classifier with strided (down-sampling) layers.

    ``forward(x)`` returns ``(batch,)`` logits; ``forward(x, return_features=True)`` returns
    ``(logits, features)`` with the activation of every layer, for :func:`feature_matching_loss`.

    Shapes: ``(batch, 1, n_mels, frames)`` -> ``(batch,)``.
    """

    def __init__(self, patch_shape: tuple[int, int] = (64, 32), channels: int = 16, num_downsamples: int = 3,
                 minibatch_std: bool = False):
        super().__init__()
        self.patch_shape = tuple(patch_shape)
        self.layers = nn.ModuleList()
        width_in, width_out = 1, channels
        for _ in range(num_downsamples):
            # No batch norm in the discriminator: it would let examples of a batch see each other in a
            # way we do not control (MinibatchStd does that on purpose).
            self.layers.append(nn.Sequential(nn.Conv2d(width_in, width_out, kernel_size=4, stride=2, padding=1),
                                             nn.LeakyReLU(0.2)))
            width_in, width_out = width_out, width_out * 2
        self.minibatch_std = MinibatchStd() if minibatch_std else None
        grid = (patch_shape[0] // 2 ** num_downsamples) * (patch_shape[1] // 2 ** num_downsamples)
        self.head = nn.Linear((width_in + int(minibatch_std)) * grid, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != self.patch_shape:
            raise ValueError(f"ConvDiscriminator expects (batch, 1, {self.patch_shape[0]}, {self.patch_shape[1]}) "
                             f"patches, got {tuple(x.shape)}")
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        if self.minibatch_std is not None:
            x = self.minibatch_std(x)
        logits = self.head(x.flatten(1)).squeeze(1)
        return (logits, features) if return_features else logits
