"""SI-SNR, the multi-scale mel distance and codebook statistics give the values their definitions say."""

import math

import numpy as np
import pytest
import torch

from mlm_lessons import metrics
from mlm_lessons.audio import AudioError


def _tone(seconds=0.5, sample_rate=16_000, frequency=440.0):
    time = torch.arange(int(seconds * sample_rate)) / sample_rate
    return 0.5 * torch.sin(2 * math.pi * frequency * time)


def test_si_snr_of_an_orthogonal_mixture_is_the_power_ratio_in_db():
    reference = _tone()
    noise = _tone(frequency=1000.0)            # orthogonal to the reference over whole periods
    noise = noise - (noise @ reference) / (reference @ reference) * reference
    noise = noise * (reference.norm() / noise.norm()) * 0.1     # 20 dB below the signal
    assert metrics.si_snr(reference + noise, reference).item() == pytest.approx(20.0, abs=0.05)


def test_si_snr_ignores_scale_but_not_noise():
    reference = _tone()
    noisy = reference + 0.05 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    assert metrics.si_snr(3.0 * noisy, reference).item() == pytest.approx(metrics.si_snr(noisy, reference).item(),
                                                                           abs=1e-3)
    noisier = reference + 0.2 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(0))
    assert metrics.si_snr(noisier, reference) < metrics.si_snr(noisy, reference)
    batch = torch.stack([noisy, noisier])
    assert metrics.si_snr(batch, torch.stack([reference, reference])).shape == (2,)


def test_mel_distance_is_zero_for_a_copy_and_grows_with_distortion():
    reference = _tone()
    assert metrics.multi_scale_mel_distance(reference, reference, 16_000).item() == 0.0
    slightly = metrics.multi_scale_mel_distance(reference + 0.01 * _tone(frequency=3000.0), reference, 16_000)
    more = metrics.multi_scale_mel_distance(reference + 0.1 * _tone(frequency=3000.0), reference, 16_000)
    assert 0 < slightly < more


def test_codebook_usage_and_perplexity_known_values():
    uniform = torch.arange(16).repeat(10)
    assert metrics.codebook_usage(uniform, 32) == 0.5
    assert metrics.codebook_perplexity(uniform, 32) == pytest.approx(16.0, rel=1e-5)
    collapsed = torch.zeros(100, dtype=torch.long)
    assert metrics.codebook_perplexity(collapsed, 32) == pytest.approx(1.0)
    assert metrics.codebook_usage(collapsed, 32) == 1 / 32


def test_bad_inputs_are_clear_errors():
    with pytest.raises(AudioError, match="same shape"):
        metrics.si_snr(torch.zeros(10), torch.zeros(11))
    with pytest.raises(AudioError, match="NaN"):
        metrics.si_snr(torch.full((10,), float("nan")), torch.zeros(10))
    with pytest.raises(AudioError, match="at least 2048 samples"):
        metrics.multi_scale_mel_distance(torch.zeros(1000), torch.zeros(1000), 16_000)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 8\)"):
        metrics.codebook_usage(torch.tensor([0, 9]), 8)
    with pytest.raises(ValueError, match="integer"):
        metrics.codebook_perplexity(torch.tensor([0.5]), 8)


def test_chroma_finds_the_pitch_class_of_a_tone_in_any_octave():
    for frequency, name in ((440.0, "A"), (261.63, "C"), (523.25, "C"), (196.0, "G"), (311.13, "D#")):
        classes = metrics.chroma(_tone(1.0, frequency=frequency), 16_000)                   # (1, frames, 12)
        assert classes.shape[-1] == 12 and torch.allclose(classes.norm(dim=-1), torch.ones(classes.shape[1]))
        assert metrics.CHROMA_NAMES[int(classes.mean(dim=1).argmax())] == name
    assert metrics.chroma(torch.zeros(4096), 16_000).abs().sum() == 0           # silence stays 0, not NaN


def test_chroma_agreement_rewards_the_same_notes_and_ignores_timbre_and_octave():
    a, c = _tone(1.0, frequency=440.0), _tone(1.0, frequency=261.63)
    a_brighter = sum(level * _tone(1.0, frequency=f) for level, f in ((0.6, 440.0), (0.4, 880.0), (0.2, 1760.0)))
    assert metrics.chroma_agreement(a, a, 16_000) > 0.99
    assert metrics.chroma_agreement(a_brighter, a, 16_000) > 0.95
    assert metrics.chroma_agreement(c, a, 16_000) < 0.2
    melody = torch.cat([_tone(0.5, frequency=440.0), _tone(0.5, frequency=261.63)])
    reversed_melody = torch.cat([_tone(0.5, frequency=261.63), _tone(0.5, frequency=440.0)])   # other order
    both = metrics.chroma_agreement(torch.stack([melody, reversed_melody]), torch.stack([melody, melody]), 16_000)
    assert both.shape == (2,) and both[0] > 0.99 and both[1] < 0.4
    noise = torch.randn(16_000, generator=torch.Generator().manual_seed(0))
    assert abs(float(metrics.chroma_agreement(noise, a_brighter, 16_000))) < 0.15    # flat chroma: no agreement
    with pytest.raises(AudioError, match="same shape"):
        metrics.chroma_agreement(a, c[:8000], 16_000)
    with pytest.raises(AudioError, match="at least n_fft"):
        metrics.chroma(torch.zeros(100), 16_000)


# ---- Distributions of clips (lesson 09)

def _gaussian_sample(n, mean, variances, seed):
    """``n`` draws of ``N(mean, diag(variances))``, float64, ``(n, dim)``."""
    noise = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return mean + variances.sqrt() * noise


def _random_rotation(dim, seed):
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def test_gaussian_statistics_are_the_sample_mean_and_unbiased_covariance():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    mean, covariance = metrics.gaussian_statistics(x)
    assert mean.dtype == covariance.dtype == torch.float64
    assert torch.allclose(mean, torch.tensor([3.0, 2.0], dtype=torch.float64))
    # deviations (-2, 0), (0, -2), (2, 2): sums of products 8, 4, 8, divided by n - 1 = 2
    assert torch.allclose(covariance, torch.tensor([[4.0, 2.0], [2.0, 4.0]], dtype=torch.float64))


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    mean_a, mean_b = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    var_a, var_b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = ((mean_a - mean_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum()   # 7.25 + 4 + 1 + 0
    distance = metrics.frechet_distance(mean_a, torch.diag(var_a), mean_b, torch.diag(var_b))
    assert distance == pytest.approx(float(expected), rel=1e-9) and float(expected) == pytest.approx(12.25)


def test_frechet_distance_matches_the_eigenvalue_formula_for_commuting_covariances():
    rotation = _random_rotation(6, seed=1)
    eigen_a = torch.tensor([0.1, 0.5, 1.0, 2.0, 3.0, 7.0], dtype=torch.float64)
    eigen_b = torch.tensor([4.0, 0.2, 1.0, 0.3, 5.0, 1.5], dtype=torch.float64)
    cov_a, cov_b = rotation @ torch.diag(eigen_a) @ rotation.T, rotation @ torch.diag(eigen_b) @ rotation.T
    assert not torch.allclose(cov_a, torch.diag(torch.diagonal(cov_a)))         # really full matrices
    mean_a = torch.randn(6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mean_b = torch.zeros(6, dtype=torch.float64)
    expected = float(((mean_a - mean_b) ** 2).sum() + ((eigen_a.sqrt() - eigen_b.sqrt()) ** 2).sum())
    assert metrics.frechet_distance(mean_a, cov_a, mean_b, cov_b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_zero_for_identical_statistics_symmetric_and_shifted_by_the_mean_gap():
    x = _gaussian_sample(50, torch.zeros(5), torch.ones(5), seed=3)
    mean, covariance = metrics.gaussian_statistics(x @ _random_rotation(5, seed=4))
    assert metrics.frechet_distance(mean, covariance, mean, covariance) == pytest.approx(0.0, abs=1e-9)
    mean_b, covariance_b = metrics.gaussian_statistics(_gaussian_sample(80, torch.ones(5), torch.full((5,), 3.0), 5))
    forward = metrics.frechet_distance(mean, covariance, mean_b, covariance_b)
    assert forward > 1 and metrics.frechet_distance(mean_b, covariance_b, mean, covariance) == pytest.approx(forward)
    shift = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0], dtype=torch.float64)
    # The same covariance on both sides leaves only the mean term: exactly ||shift||^2.
    assert metrics.frechet_distance(mean, covariance, mean + shift, covariance) == pytest.approx(
        float(shift @ shift), rel=1e-9)


def test_fad_of_samples_converges_to_the_closed_form_of_their_gaussians():
    dim = 8
    mean_a, mean_b = torch.zeros(dim), torch.full((dim,), 0.3)
    var_a, var_b = torch.linspace(0.5, 2.0, dim), torch.linspace(2.0, 0.5, dim)
    exact = float(((mean_a - mean_b) ** 2).sum() + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum())
    errors = {n: abs(metrics.frechet_audio_distance(_gaussian_sample(n, mean_a, var_a, seed=10),
                                                    _gaussian_sample(n, mean_b, var_b, seed=11)) - exact)
              for n in (200, 20_000)}
    assert errors[20_000] < errors[200] / 5 and errors[20_000] < 0.02 * exact
    same = metrics.frechet_audio_distance(_gaussian_sample(2000, mean_a, var_a, seed=12),
                                          _gaussian_sample(2000, mean_a, var_a, seed=13))
    different = metrics.frechet_audio_distance(_gaussian_sample(2000, mean_a, var_a, seed=12),
                                               _gaussian_sample(2000, mean_b, var_b, seed=13))
    assert 0 < same < 0.1 < 1 < different


def test_fad_with_fewer_clips_than_dimensions_is_finite_and_non_negative():
    generator = torch.Generator().manual_seed(20)
    small_a, small_b = torch.randn(10, 64, generator=generator), torch.randn(12, 64, generator=generator) + 0.5
    distance = metrics.frechet_audio_distance(small_a, small_b)
    assert math.isfinite(distance) and distance >= 16                           # the mean gap alone is 64 * 0.25
    assert metrics.frechet_audio_distance(small_a, small_a) == pytest.approx(0.0, abs=1e-6)


def test_a_failed_matrix_root_is_retried_with_a_ridge(monkeypatch):
    real_sqrtm, calls = metrics.linalg.sqrtm, []

    def failing_once(matrix):
        calls.append(matrix.copy())
        return np.full_like(matrix, np.inf) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(metrics.linalg, "sqrtm", failing_once)
    distance = metrics.frechet_distance(torch.zeros(2), torch.diag(torch.tensor([1.0, 4.0])),
                                        torch.zeros(2), torch.diag(torch.tensor([4.0, 1.0])))
    assert len(calls) == 2 and (np.diag(calls[1]) > np.diag(calls[0])).all()     # the retry added a ridge
    assert distance == pytest.approx(2.0, rel=1e-5)                      # (1 - 2)^2 + (2 - 1)^2, barely moved


def test_fad_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(n, dim\) matrix.*\(5,\)"):
        metrics.gaussian_statistics(torch.zeros(5))
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        metrics.gaussian_statistics(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.gaussian_statistics(torch.tensor([[0.0, float("inf")], [1.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        metrics.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match=r"must be \(3, 3\), got \(3, 3\) and \(2, 2\)"):
        metrics.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match="positive semi-definite"):
        metrics.frechet_distance(torch.zeros(2), torch.diag(torch.tensor([1.0, -1.0])), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="width 4 and 5.*same model"):
        metrics.frechet_audio_distance(torch.zeros(10, 4), torch.zeros(10, 5))


def test_paired_kl_divergence_known_values():
    reference = torch.tensor([[0.5, 0.5], [0.2, 0.8]], dtype=torch.float64)
    assert metrics.paired_kl_divergence(reference, reference) == pytest.approx(0.0, abs=1e-12)
    generated = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    # pair 1: 0.5 ln(0.5 / 0.9) + 0.5 ln(0.5 / 0.1) = ln(5 / 3); pair 2: 0; mean ln(5 / 3) / 2
    assert metrics.paired_kl_divergence(reference, generated, eps=0.0) == pytest.approx(math.log(5 / 3) / 2, rel=1e-9)
    assert metrics.paired_kl_divergence(reference, generated) == pytest.approx(math.log(5 / 3) / 2, rel=1e-4)
    assert metrics.paired_kl_divergence(generated, reference) != pytest.approx(math.log(5 / 3) / 2, rel=1e-2)
    missing = torch.tensor([[1.0, 0.0], [0.2, 0.8]])                 # a class the reference has, never generated
    assert math.isfinite(metrics.paired_kl_divergence(reference, missing)) and \
        metrics.paired_kl_divergence(reference, missing) > metrics.paired_kl_divergence(reference, generated)
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(30))
    assert metrics.paired_kl_divergence(logits.softmax(-1), logits.roll(1, 0).softmax(-1)) > 0


def test_paired_kl_divergence_bad_inputs_are_clear_errors():
    probabilities = torch.tensor([[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="softmax outputs"):
        metrics.paired_kl_divergence(probabilities, torch.tensor([[0.5, 0.6], [0.2, 0.8]]))
    with pytest.raises(ValueError, match="softmax outputs"):
        metrics.paired_kl_divergence(torch.tensor([[1.5, -0.5], [0.2, 0.8]]), probabilities)
    with pytest.raises(ValueError, match="same shape"):
        metrics.paired_kl_divergence(probabilities, probabilities[:1])
    with pytest.raises(ValueError, match="eps must be >= 0"):
        metrics.paired_kl_divergence(probabilities, probabilities, eps=-1e-3)


def test_mulan_cycle_consistency_is_the_mean_cosine_of_pairs():
    text = torch.randn(16, 128, generator=torch.Generator().manual_seed(40))
    scales = torch.rand(16, 1, generator=torch.Generator().manual_seed(41)) * 10 + 0.1
    assert metrics.mulan_cycle_consistency(text, scales * text) == pytest.approx(1.0)
    assert metrics.mulan_cycle_consistency(text, -text) == pytest.approx(-1.0)
    # cosines 1 / sqrt(2) and 0
    assert metrics.mulan_cycle_consistency(torch.tensor([[2.0, 0.0], [1.0, 0.0]]),
                                           torch.tensor([[1.0, 1.0], [0.0, 3.0]])) == pytest.approx(0.5 / math.sqrt(2))
    with pytest.raises(ValueError, match=r"\(16, 128\) and audio_embeddings \(15, 128\)"):
        metrics.mulan_cycle_consistency(text, text[:15])
    with pytest.raises(ValueError, match="row 1 of audio_embeddings is all zeros"):
        metrics.mulan_cycle_consistency(text[:2], torch.tensor([[1.0] * 128, [0.0] * 128]))


def test_nearest_neighbours_equal_brute_force_in_any_chunking():
    generator = torch.Generator().manual_seed(50)
    queries, keys = torch.randn(300, 16, generator=generator), torch.randn(500, 16, generator=generator)
    keys[123] = 4.0 * queries[7]                                      # a "memorised" clip, at another scale
    full = (queries / queries.norm(dim=-1, keepdim=True)) @ (keys / keys.norm(dim=-1, keepdim=True)).T
    for chunk in (1, 64, 299, 1024):
        similarities, indices = metrics.nearest_neighbours(queries, keys, k=1, chunk=chunk)
        assert similarities.shape == indices.shape == (300, 1)
        assert torch.equal(indices[:, 0], full.argmax(dim=-1))
        assert torch.allclose(similarities[:, 0], full.max(dim=-1).values, atol=1e-6)
    assert indices[7, 0] == 123 and similarities[7, 0] == pytest.approx(1.0, abs=1e-6)
    similarities, indices = metrics.nearest_neighbours(queries, keys, k=3, chunk=64)
    best = full.topk(3, dim=-1)
    assert torch.equal(indices, best.indices) and torch.allclose(similarities, best.values, atol=1e-6)
    assert (similarities[:, :-1] >= similarities[:, 1:]).all()         # most similar first


def test_nearest_neighbours_bad_inputs_are_clear_errors():
    queries, keys = torch.ones(4, 3), torch.ones(5, 3)
    for k in (0, 6):
        with pytest.raises(ValueError, match=rf"between 1 and the number of keys \(5\), got k={k}"):
            metrics.nearest_neighbours(queries, keys, k=k)
    with pytest.raises(ValueError, match="same width"):
        metrics.nearest_neighbours(queries, torch.ones(5, 4))
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        metrics.nearest_neighbours(queries, keys, chunk=0)
