"""GAN losses (signs of their gradients, lists of discriminators, feature matching), models, mode coverage."""

import pytest
import torch
from torch.utils.data import TensorDataset

from mlm_lessons import gan
from mlm_lessons.config import TrainConfig
from mlm_lessons.train import Trainer


def logits_with_grad(*values):
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


# --- losses -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", gan.LOSS_KINDS)
def test_generator_loss_pushes_fake_logits_up(kind):
    fake = logits_with_grad(-3.0, -0.5, 0.0, 0.5)   # below 1, where least squares still pushes
    gan.generator_loss(fake, kind).backward()
    assert (fake.grad < 0).all(), f"{kind}: lowering the loss must raise D(G(z)), got grads {fake.grad}"


@pytest.mark.parametrize("kind", gan.LOSS_KINDS)
def test_discriminator_loss_pushes_real_up_and_fake_down(kind):
    # inside the hinge margin, and fakes above 0 where least squares (target 0) still pushes them down
    real, fake = logits_with_grad(-0.5, 0.0, 0.5), logits_with_grad(0.2, 0.5, 0.9)
    gan.discriminator_loss(real, fake, kind).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()


def test_minimax_generator_loss_saturates_where_non_saturating_does_not():
    fake = logits_with_grad(-8.0)          # a bad generator: D is sure its sample is fake
    gan.generator_loss(fake, "minimax").backward()
    saturated = fake.grad.abs().item()
    fake = logits_with_grad(-8.0)
    gan.generator_loss(fake, "non_saturating").backward()
    assert saturated < 1e-3, "log(1 - D(G(z))) is flat where the generator is bad"
    assert fake.grad.abs().item() > 0.99, "-log D(G(z)) is steepest there"


def test_losses_match_their_formulas():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -2.0])
    bce = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    torch.testing.assert_close(gan.discriminator_loss(real, fake, "non_saturating"), bce)
    torch.testing.assert_close(gan.discriminator_loss(real, fake, "hinge"), torch.tensor((0 + 2) / 2 + (1.5 + 0) / 2))
    torch.testing.assert_close(gan.discriminator_loss(real, fake, "least_squares"),
                               torch.tensor((1 + 4) / 2 + (0.25 + 4) / 2))
    torch.testing.assert_close(gan.generator_loss(fake, "non_saturating"), -torch.log(torch.sigmoid(fake)).mean())
    torch.testing.assert_close(gan.generator_loss(fake, "hinge"), torch.tensor(0.75))
    torch.testing.assert_close(gan.generator_loss(fake, "minimax"), torch.log(1 - torch.sigmoid(fake)).mean())


def test_hinge_discriminator_is_satisfied_beyond_the_margin():
    assert gan.discriminator_loss(torch.tensor([1.5, 3.0]), torch.tensor([-1.0, -4.0]), "hinge").item() == 0.0


def test_lists_of_discriminators_average_their_losses():
    """SoundStream-style: logits of different shapes from several discriminators."""
    real = [torch.randn(4, 10), torch.randn(4, 3, 7)]
    fake = [torch.randn(4, 10), torch.randn(4, 3, 7)]
    for kind in gan.LOSS_KINDS:
        expected = (gan.discriminator_loss(real[0], fake[0], kind) + gan.discriminator_loss(real[1], fake[1], kind)) / 2
        torch.testing.assert_close(gan.discriminator_loss(real, fake, kind), expected)
        torch.testing.assert_close(gan.generator_loss(fake, kind),
                                   (gan.generator_loss(fake[0], kind) + gan.generator_loss(fake[1], kind)) / 2)


def test_feature_matching_is_l1_averaged_over_layers_and_discriminators():
    real = [[torch.zeros(2, 3), torch.zeros(2, 4, 5)], [torch.zeros(2, 6)]]
    fake = [[torch.ones(2, 3), 2 * torch.ones(2, 4, 5)], [3 * torch.ones(2, 6)]]
    torch.testing.assert_close(gan.feature_matching_loss(real, fake), torch.tensor(2.0))
    single = gan.feature_matching_loss(real[0], fake[0])   # one discriminator: a flat list of layers
    torch.testing.assert_close(single, torch.tensor(1.5))


def test_feature_matching_trains_the_generator_side_only():
    real = [torch.randn(2, 3, requires_grad=True)]
    fake = [torch.randn(2, 3, requires_grad=True)]
    gan.feature_matching_loss(real, fake).backward()
    assert real[0].grad is None and fake[0].grad is not None
    identical = [torch.ones(2, 3)]
    assert gan.feature_matching_loss(identical, identical).item() == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: gan.discriminator_loss(torch.zeros(2), torch.zeros(2), "wasserstein"), "unknown GAN loss kind"),
    (lambda: gan.generator_loss([], "hinge"), "empty"),
    (lambda: gan.discriminator_loss([torch.zeros(2)], [torch.zeros(2), torch.zeros(2)]), "1 discriminator"),
    (lambda: gan.generator_loss(torch.zeros(2, dtype=torch.long)), "floating point"),
    (lambda: gan.generator_loss([torch.zeros(2), "logits"]), "not a tensor"),
    (lambda: gan.feature_matching_loss([torch.zeros(2, 3)], [torch.zeros(2, 4)]), "same shape"),
    (lambda: gan.feature_matching_loss(torch.zeros(2), torch.zeros(2)), "not a single tensor"),
    (lambda: gan.feature_matching_loss([torch.zeros(1)], [torch.zeros(1), torch.zeros(1)]), "feature maps"),
])
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- losses decrease on a fixed batch -----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["non_saturating", "hinge", "least_squares"])
def test_each_player_lowers_its_loss_on_a_fixed_batch(kind):
    torch.manual_seed(0)
    real = gan.ring_of_gaussians(64, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(64, 2)
    generator, discriminator = gan.MLPGenerator(hidden=32), gan.MLPDiscriminator(hidden=32)

    d_opt = torch.optim.Adam(discriminator.parameters(), lr=1e-2)
    d_losses = []
    for _ in range(30):
        loss = gan.discriminator_loss(discriminator(real), discriminator(generator(noise).detach()), kind)
        d_opt.zero_grad()
        loss.backward()
        d_opt.step()
        d_losses.append(loss.item())
    assert d_losses[-1] < 0.5 * d_losses[0]

    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-2)
    g_losses = []
    for _ in range(30):   # against the now fixed discriminator
        loss = gan.generator_loss(discriminator(generator(noise)), kind)
        g_opt.zero_grad()
        loss.backward()
        g_opt.step()
        g_losses.append(loss.item())
    assert g_losses[-1] < g_losses[0]


def test_trainer_runs_both_objectives():
    torch.manual_seed(0)
    data = TensorDataset(gan.ring_of_gaussians(256, generator=torch.Generator().manual_seed(0)))
    model = gan.GAN(gan.MLPGenerator(hidden=16), gan.MLPDiscriminator(hidden=16, minibatch_std=True), latent_dim=2)
    optimizers = {"discriminator": torch.optim.Adam(model.discriminator.parameters(), 1e-3),
                  "generator": torch.optim.Adam(model.generator.parameters(), 1e-3)}
    config = TrainConfig(batch_size=64, max_steps=8, device="cpu", log_every=4, checkpoint_every=0)
    history = Trainer(model, config, data, gan.gan_objectives("hinge", real_key=0), optimizers=optimizers,
                      progress=False).fit()
    assert {"discriminator/loss", "generator/loss", "discriminator/real_logit"} <= set(history[-1])
    assert all(torch.isfinite(torch.tensor(row["generator/loss"])) for row in history)


# --- models and data ----------------------------------------------------------------------------------

def test_model_shapes_and_features():
    assert gan.MLPGenerator(latent_dim=3)(torch.randn(5, 3)).shape == (5, 2)
    assert gan.MLPDiscriminator(minibatch_std=True)(torch.randn(5, 2)).shape == (5,)
    generator, discriminator = gan.ConvGenerator(8, (64, 32)), gan.ConvDiscriminator((64, 32), minibatch_std=True)
    patches = generator(torch.randn(4, 8))
    assert patches.shape == (4, 1, 64, 32)
    logits, features = discriminator(patches, return_features=True)
    assert logits.shape == (4,) and [f.shape[1:] for f in features] == [(16, 32, 16), (32, 16, 8), (64, 8, 4)]
    assert gan.GAN(generator, discriminator, 8).sample(3).shape == (3, 1, 64, 32)


@pytest.mark.parametrize("call, message", [
    (lambda: gan.MLPGenerator(latent_dim=2)(torch.randn(4, 3)), r"\(batch, 2\)"),
    (lambda: gan.MLPDiscriminator()(torch.randn(4)), r"\(batch, 2\)"),
    (lambda: gan.ConvDiscriminator((64, 32))(torch.randn(4, 64, 32)), r"\(batch, 1, 64, 32\)"),
    (lambda: gan.ConvGenerator(8, (60, 32)), "divisible"),
    (lambda: gan.MinibatchStd()(torch.randn(1, 4)), "at least 2"),
])
def test_models_reject_bad_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_minibatch_std_sees_a_collapsed_batch():
    collapsed = torch.ones(8, 3)
    spread = torch.randn(8, 3)
    assert gan.MinibatchStd()(collapsed)[:, -1].abs().max() == 0
    assert (gan.MinibatchStd()(spread)[:, -1] > 0.3).all()


def test_mode_coverage_counts_modes_and_quality():
    centers = gan.ring_centers(8)
    everywhere = gan.ring_of_gaussians(4000, std=0.05, generator=torch.Generator().manual_seed(1))
    coverage = gan.mode_coverage(everywhere, centers, std=0.05)
    assert coverage["modes_covered"] == 8 and coverage["high_quality"] > 0.98
    collapsed = centers[3] + 0.01 * torch.randn(500, 2)
    coverage = gan.mode_coverage(collapsed, centers, std=0.05)
    assert coverage["modes_covered"] == 1 and coverage["per_mode"][3] == 500
    assert gan.mode_coverage(torch.zeros(100, 2), centers, std=0.05)["high_quality"] == 0.0
    with pytest.raises(ValueError, match="same dim"):
        gan.mode_coverage(torch.zeros(10, 3), centers, std=0.05)
