"""VAE pieces: KL, reparameterisation, the ELBO against an exact log p(x), models, data, latent walks."""

import math

import pytest
import torch

from mlm_lessons import vae
from mlm_lessons.config import TrainConfig
from mlm_lessons.train import Trainer


# --- KL, reparameterisation, likelihood ---------------------------------------------------------------

def test_closed_form_kl_equals_its_monte_carlo_estimate():
    generator = torch.Generator().manual_seed(0)
    mean = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]], dtype=torch.float64)
    log_var = torch.tensor([[0.2, -1.0, 0.7], [-0.5, 0.0, 1.2]], dtype=torch.float64)
    z = vae.reparameterize(mean.expand(100_000, 2, 3).reshape(-1, 3), log_var.expand(100_000, 2, 3).reshape(-1, 3),
                           generator).view(100_000, 2, 3)
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    prior = torch.distributions.Normal(0.0, 1.0)
    monte_carlo = (q.log_prob(z) - prior.log_prob(z)).sum(-1).mean(0)      # E_q[log q(z) - log p(z)]
    closed_form = vae.gaussian_kl(mean, log_var)
    torch.testing.assert_close(monte_carlo, closed_form, atol=0.03, rtol=0.01)


def test_kl_is_zero_only_at_the_prior():
    assert vae.gaussian_kl(torch.zeros(1, 4), torch.zeros(1, 4)).item() == 0.0
    assert (vae.gaussian_kl(torch.tensor([[0.1, 0.0]]), torch.zeros(1, 2)) > 0).all()
    assert (vae.gaussian_kl(torch.zeros(1, 2), torch.tensor([[0.0, -0.1]])) > 0).all()


def test_reparameterised_samples_have_the_right_moments_and_gradients():
    mean = torch.tensor([[1.0, -2.0]], requires_grad=True)
    log_var = torch.tensor([[0.0, math.log(4.0)]], requires_grad=True)
    z = vae.reparameterize(mean.expand(50_000, 2), log_var.expand(50_000, 2), torch.Generator().manual_seed(1))
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 2.0]), atol=0.03, rtol=0)
    z.sum().backward()
    assert mean.grad is not None and log_var.grad is not None


def test_gaussian_log_likelihood_matches_torch_distributions():
    x, mean = torch.randn(3, 1, 4, 5), torch.randn(3, 1, 4, 5)
    expected = torch.distributions.Normal(mean, 0.7).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(vae.gaussian_log_likelihood(x, mean, 0.7), expected)


@pytest.mark.parametrize("call, message", [
    (lambda: vae.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4)), "same shape"),
    (lambda: vae.gaussian_kl(torch.zeros(3), torch.zeros(3)), r"\(batch, latent_dim\)"),
    (lambda: vae.reparameterize(torch.zeros(2, 3), torch.zeros(3, 2)), "same shape"),
    (lambda: vae.gaussian_log_likelihood(torch.zeros(2, 3), torch.zeros(2, 4), 1.0), "same shape"),
    (lambda: vae.gaussian_log_likelihood(torch.zeros(2, 3), torch.zeros(2, 3), 0.0), "positive"),
    (lambda: vae.vae_objective(beta=-1), "non-negative"),
    (lambda: vae.ConvVAE(decoder_std=0), "positive"),
])
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the ELBO against an exact log p(x) ---------------------------------------------------------------

@pytest.fixture
def ppca():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    bias = torch.randn(5, generator=generator, dtype=torch.float64)
    model = vae.LinearGaussianModel(weight, bias, noise_std=0.5)
    return model, model.sample(6, generator)


def test_log_marginal_is_the_integral_of_the_joint():
    """1-D latent and data: integrate p(z) p(x | z) over a fine grid."""
    model = vae.LinearGaussianModel(torch.tensor([[1.5]], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64),
                                    noise_std=0.4)
    x = torch.tensor([[1.2]], dtype=torch.float64)
    z = torch.linspace(-10, 10, 20_001, dtype=torch.float64)
    joint = (torch.distributions.Normal(0.0, 1.0).log_prob(z)
             + torch.distributions.Normal(1.5 * z + 0.3, 0.4).log_prob(x[0, 0])).exp()
    torch.testing.assert_close(model.log_marginal(x)[0], torch.trapezoid(joint, z).log())


def test_elbo_is_below_log_evidence_and_equal_at_the_true_posterior(ppca):
    model, x = ppca
    log_evidence = model.log_marginal(x)
    posterior_mean, posterior_cov = model.posterior(x)
    torch.testing.assert_close(model.elbo(x, posterior_mean, posterior_cov), log_evidence)
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):   # any other Gaussian q is strictly worse
        q_mean = posterior_mean + torch.randn(posterior_mean.shape, generator=generator, dtype=torch.float64)
        root = torch.randn(2, 2, generator=generator, dtype=torch.float64)
        q_cov = root @ root.T + 0.05 * torch.eye(2, dtype=torch.float64)
        assert (model.elbo(x, q_mean, q_cov) < log_evidence).all()


def test_the_gap_is_the_kl_to_the_true_posterior(ppca):
    model, x = ppca
    posterior_mean, posterior_cov = model.posterior(x)
    q_mean, q_cov = posterior_mean + 0.3, torch.diag(torch.tensor([0.2, 0.5], dtype=torch.float64))
    gap = model.log_marginal(x) - model.elbo(x, q_mean, q_cov)
    kl = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(q_mean, q_cov),
                                           torch.distributions.MultivariateNormal(posterior_mean, posterior_cov))
    torch.testing.assert_close(gap, kl)


def test_the_vae_elbo_estimate_agrees_with_the_exact_one(ppca):
    """The functions a VAE trains with (reparameterize, gaussian_kl, elbo_terms), on a linear decoder."""
    model, x = ppca
    q_mean = model.posterior(x)[0] + 0.2
    q_log_var = torch.tensor([[-1.0, -0.5]], dtype=torch.float64).expand_as(q_mean)
    samples = 50_000
    z = vae.reparameterize(q_mean.repeat(samples, 1), q_log_var.repeat(samples, 1), torch.Generator().manual_seed(3))
    terms = vae.elbo_terms(x.repeat(samples, 1), z @ model.weight.T + model.bias, q_mean.repeat(samples, 1),
                           q_log_var.repeat(samples, 1), model.noise_std)
    estimate = terms.elbo.view(samples, len(x)).mean(0)
    exact = model.elbo(x, q_mean, torch.diag_embed(q_log_var.exp()))
    torch.testing.assert_close(estimate, exact, atol=0.05, rtol=0.01)
    assert (estimate < model.log_marginal(x)).all()


def test_a_diagonal_posterior_leaves_a_gap_when_the_true_one_is_correlated(ppca):
    model, x = ppca
    _, posterior_cov = model.posterior(x)
    assert abs(posterior_cov[0, 1]) > 1e-3   # correlated, so no diagonal q is exact
    # The best diagonal q in KL(q || p) has the posterior mean and variances 1 / diag(precision).
    best_diagonal = torch.diag(1 / torch.linalg.inv(posterior_cov).diagonal())
    gap = model.log_marginal(x) - model.elbo(x, model.posterior(x)[0], best_diagonal)
    assert (gap > 1e-4).all()


# --- models, training and data --------------------------------------------------------------------------

def test_model_shapes():
    model = vae.ConvVAE(latent_dim=4)
    x = torch.randn(3, 1, 64, 32)
    output = model(x)
    assert output.reconstruction.shape == x.shape and output.mean.shape == output.log_var.shape == (3, 4)
    assert model.sample(2).shape == (2, 1, 64, 32)
    assert vae.ConvAutoencoder(latent_dim=4).encode(x).shape == (3, 4)
    terms = model.elbo_terms(x)
    assert terms.elbo.shape == terms.kl.shape == (3,) and terms.loss().dim() == 0


@pytest.mark.parametrize("call, message", [
    (lambda: vae.ConvVAE(4)(torch.randn(3, 64, 32)), r"\(batch, 1, 64, 32\)"),
    (lambda: vae.ConvAutoencoder(4).decode(torch.randn(3, 5)), r"\(batch, 4\)"),
    (lambda: vae.ConvEncoder(4, (60, 32)), "divisible"),
])
def test_models_reject_bad_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("make_model, objective", [
    (lambda: vae.ConvAutoencoder(latent_dim=4, channels=8), vae.autoencoder_objective()),
    (lambda: vae.ConvVAE(latent_dim=4, channels=8, decoder_std=0.5), vae.vae_objective(beta=1.0)),
])
def test_training_lowers_the_loss_on_a_fixed_batch(make_model, objective):
    torch.manual_seed(0)
    batch = vae.note_mel_patches(instruments=["violin", "marimba"], pitches=[55, 60, 65, 70], velocities=[0.8]).patches
    model = make_model()
    before = objective(model, batch)
    before = (before[0] if isinstance(before, tuple) else before).item()
    config = TrainConfig(batch_size=8, max_steps=60, learning_rate=3e-3, weight_decay=0.0, device="cpu",
                         log_every=10, checkpoint_every=0)
    Trainer(model, config, [batch], objective, progress=False).fit()
    after = objective(model, batch)
    after = (after[0] if isinstance(after, tuple) else after).item()
    assert after < 0.7 * before


def test_note_patches_are_normalised_and_labelled():
    data = vae.note_mel_patches(instruments=["violin", "marimba"], pitches=[60, 64], velocities=[0.8])
    assert len(data) == 4 and data[0].shape == (1, 64, 32) and data.patch_shape == (64, 32)
    assert data.instrument_ids.tolist() == [0, 0, 1, 1] and data.pitches.tolist() == [60, 64, 60, 64]
    assert abs(data.patches.mean().item()) < 1e-5 and abs(data.patches.std().item() - 1) < 1e-5
    log_mel = data.to_log_mel(data[2])
    assert log_mel.shape == (64, 32) and log_mel.max() > 0 > log_mel.min()
    assert data.to_audio(data[2], n_iter=4).shape == (31 * 256,)


def test_latent_walk_interpolates_between_its_ends():
    z_start, z_end = torch.zeros(3), torch.tensor([2.0, -4.0, 1.0])
    torch.testing.assert_close(vae.interpolate_latents(z_start, z_end, 0.25), torch.tensor([0.5, -1.0, 0.25]))
    line = vae.interpolate_latents(z_start, z_end, [0.0, 0.5, 1.0])
    assert line.shape == (3, 3)
    torch.testing.assert_close(line[0], z_start)
    torch.testing.assert_close(line[2], z_end)
    model = vae.ConvVAE(latent_dim=3, channels=8).eval()
    with torch.no_grad():
        torch.testing.assert_close(vae.decode_walk(model, z_start, z_end, 1.0), model.decode(z_end[None])[0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.interpolate_latents(z_start, z_end, 1.5)
    with pytest.raises(ValueError, match="same size"):
        vae.interpolate_latents(z_start, torch.zeros(4), 0.5)
