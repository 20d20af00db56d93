"""SI-SNR, the multi-scale mel distance and codebook statistics give the values their definitions say."""

import math

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
