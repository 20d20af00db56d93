"""The audio toolkit: I/O round trips, resampling, mel features, and clear errors."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from mlm_lessons import audio


def tone(freq_hz=440.0, seconds=0.5, sample_rate=16_000, amplitude=0.5):
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    return amplitude * torch.sin(2 * math.pi * freq_hz * t)


def peak_frequency(wave, sample_rate):
    spectrum = np.abs(np.fft.rfft(np.asarray(wave)))
    return np.argmax(spectrum) * sample_rate / len(wave)


def test_save_load_round_trip_within_16_bit_precision(tmp_path):
    wave = tone()
    path = audio.save_audio(tmp_path / "tone.wav", wave, 16_000)
    loaded, rate = audio.load_audio(path)
    assert rate == 16_000 and loaded.shape == wave.shape and loaded.dtype == torch.float32
    assert (loaded - wave).abs().max() < 2 / 2**15
    assert path.stat().st_mode & 0o044, "others on a shared machine can read the file"


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    path = audio.save_audio(tmp_path / "clip.wav", tone(), 16_000)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sf, "write", crash)
    with pytest.raises(KeyboardInterrupt):
        audio.save_audio(path, tone(880.0), 16_000)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip.wav"]


def test_load_mixes_stereo_to_mono_and_resamples(tmp_path):
    left, right = tone(440.0, sample_rate=22_050), tone(440.0, sample_rate=22_050, amplitude=0.1)
    path = audio.save_audio(tmp_path / "stereo.flac", torch.stack([left, right]), 22_050)
    stereo, _ = audio.load_audio(path, mono=False)
    assert stereo.shape == (2, left.numel())
    mono, rate = audio.load_audio(path, sample_rate=16_000)
    assert rate == 16_000 and mono.dim() == 1
    assert abs(mono.numel() - 8_000) <= 1
    assert abs(peak_frequency(mono, 16_000) - 440.0) < 4.0
    assert mono.abs().max() == pytest.approx(0.3, abs=0.01)


def test_resample_removes_content_above_new_nyquist():
    # 7 kHz is fine at 16 kHz but above the 4 kHz Nyquist limit of 8 kHz audio: a
    # band-limited resampler must remove it rather than alias it down to 1 kHz.
    high = tone(7_000.0, seconds=1.0)
    down = audio.resample(high, 16_000, 8_000)
    interior = down[500:-500]  # the filter's edges see a truncated window
    assert interior.abs().max() < 0.01


@pytest.mark.parametrize(
    "wave, rate, expected, message",
    [
        (torch.zeros(0), 16_000, None, "empty"),
        (torch.tensor([0.0, float("nan"), 0.1]), 16_000, None, "NaN"),
        (torch.zeros(2, 2, 10), 16_000, None, "shape"),
        (torch.zeros(100, 2), 16_000, None, "transpose"),
        (torch.zeros(100), 0, None, "positive"),
        (torch.zeros(100), 22_050, 16_000, "resample"),
    ],
)
def test_bad_audio_gets_a_clear_error(wave, rate, expected, message):
    with pytest.raises(audio.AudioError, match=message):
        audio.check_audio(wave, rate, expected)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no audio file"):
        audio.load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_text("not audio")
    with pytest.raises(audio.AudioError, match="cannot read"):
        audio.load_audio(junk)
    with pytest.raises(audio.AudioError, match="format"):
        audio.save_audio(tmp_path / "clip.mp3", tone(), 16_000)


def test_log_mel_shapes_and_where_a_tone_lands():
    sample_rate, hop = 16_000, 256
    low, high = tone(300.0, seconds=1.0), tone(3_000.0, seconds=1.0)
    mel = audio.log_mel(torch.stack([low, high]), sample_rate, hop_length=hop, n_mels=64)
    assert mel.shape == (2, 64, 16_000 // hop + 1)
    low_band, high_band = mel[0].mean(-1).argmax(), mel[1].mean(-1).argmax()
    assert low_band < high_band  # mel bands are ordered by frequency
    silence = audio.log_mel(torch.zeros(1_000), sample_rate)
    assert torch.allclose(silence, torch.full_like(silence, math.log(1e-5)))


def test_stft_frames_and_parseval_like_energy_ordering():
    spec = audio.stft(tone(1_000.0, seconds=1.0), n_fft=512, hop_length=128)
    assert spec.shape == (257, 16_000 // 128 + 1) and spec.is_complex()
    assert spec.abs().mean(-1).argmax().item() == round(1_000 / (16_000 / 512))


def test_mel_to_audio_recovers_pitch():
    wave = tone(500.0, seconds=1.0)
    rebuilt = audio.mel_to_audio(audio.log_mel(wave, 16_000, n_mels=128), 16_000, n_iter=16)
    assert abs(peak_frequency(rebuilt, 16_000) - 500.0) < 30.0


def test_peak_normalize():
    assert audio.peak_normalize(tone(amplitude=0.1), 0.9).abs().max() == pytest.approx(0.9)
    assert torch.equal(audio.peak_normalize(torch.zeros(10)), torch.zeros(10))


@pytest.mark.parametrize("freq, rate, expected", [(440, 16_000, 440), (7_000, 8_000, 1_000),
                                                   (9_000, 8_000, 1_000), (4_000, 8_000, 4_000)])
def test_aliased_frequency_matches_the_sampled_spectrum(freq, rate, expected):
    assert audio.aliased_frequency(freq, rate) == expected
    # the prediction is what an FFT of the sampled tone actually shows
    t = np.arange(rate) / rate
    assert peak_frequency(np.cos(2 * np.pi * freq * t), rate) == pytest.approx(expected, abs=1.0)


def test_scaled_log_mel_puts_silence_at_zero_and_full_scale_at_order_one():
    silence = audio.scaled_log_mel(torch.zeros(1, 16_000), 16_000, n_fft=1024, hop_length=256, n_mels=64)
    assert silence.shape == (1, 64, 63) and silence.abs().max() == 0
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(16_000) / 16_000)[None]
    loudest = audio.scaled_log_mel(tone, 16_000, n_fft=1024, hop_length=256, n_mels=64).max()
    assert 1 < loudest < 2   # inputs of order one
    with torch.autocast("cpu", dtype=torch.bfloat16):   # computed in float32 whatever the autocast
        assert audio.scaled_log_mel(tone, 16_000, 1024, 256, 64).dtype == torch.float32


def test_integer_pcm_is_scaled_like_libsndfile_reads_it(tmp_path):
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    torch.testing.assert_close(audio.as_tensor(pcm), torch.tensor([0.0, 0.5, -1.0, 32767 / 32768]))
    torch.testing.assert_close(audio.as_tensor(np.array([128, 255, 0], dtype=np.uint8)),
                               torch.tensor([0.0, 127 / 128, -1.0]))
    assert audio.as_tensor([0, 1, 2]).tolist() == [0.0, 1.0, 2.0]          # plain ints are values, not PCM
    tone = (0.5 * np.sin(np.linspace(0, 200, 4000)) * 32767).astype(np.int16)
    audio.save_audio(tmp_path / "pcm.wav", tone, 16_000)
    loaded, _ = audio.load_audio(tmp_path / "pcm.wav")
    assert loaded.abs().max() == pytest.approx(0.5, abs=1e-3)               # not a full-scale square wave
    torch.testing.assert_close(audio.log_mel(tone, 16_000), audio.log_mel(tone / 32768.0, 16_000))


def test_log_mel_bad_input_is_one_clear_line():
    wave = torch.zeros(16_000)
    for rate in (0, None, -8, 16.5):
        with pytest.raises(audio.AudioError, match="sample rate as a positive integer"):
            audio.log_mel(wave, rate)
    with pytest.raises(audio.AudioError, match=r"more than n_fft // 2 = 512 samples per clip, got 300"):
        audio.log_mel(torch.zeros(300), 16_000)
    with pytest.raises(audio.AudioError, match=r"looks like \(time, channels\).*to_mono"):
        audio.log_mel(torch.zeros(16_000, 2), 16_000)


def test_ogg_files_are_written_with_vorbis(tmp_path):
    tone = 0.3 * torch.sin(torch.linspace(0, 2000, 16_000))
    audio.save_audio(tmp_path / "tone.ogg", tone, 16_000)
    loaded, rate = audio.load_audio(tmp_path / "tone.ogg")
    assert rate == 16_000 and abs(loaded.shape[0] - 16_000) < 100 and loaded.abs().max() == pytest.approx(0.3, abs=0.05)
