"""SoundStream: causal, shaped as documented, at the configured bitrate, saved and loaded safely, trainable
with the one Trainer, and refusing bad input with a message; the mu-law baseline behaves as its maths says."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from mlm_lessons import config, metrics, soundstream
from mlm_lessons.audio import AudioError
from mlm_lessons.train import CheckpointMismatchError, load_checkpoint, save_atomically

SAMPLE_RATE = 16_000


def micro_config(**codec_changes) -> config.Config:
    """The tiny preset's token layout with a codec narrow enough to train in seconds."""
    tiny = config.get_preset("tiny")
    codec = dataclasses.replace(tiny.codec, channels=4, latent_dim=16, discriminator_channels=4,
                                crop_seconds=0.16, batch_size=4, adversarial_start_step=3, **codec_changes)
    tokens = dataclasses.replace(tiny.tokens, codebook_size=32)
    return dataclasses.replace(tiny, codec=codec, tokens=tokens)


def clips(count=4, seconds=0.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    frequencies = 200 + 600 * torch.rand(count, 1, generator=generator)
    return list(0.5 * torch.sin(2 * math.pi * frequencies * time) * torch.exp(-2 * time))


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return soundstream.SoundStream.from_config(micro_config()).eval()


def test_encoder_and_decoder_are_causal():
    tiny = config.get_preset("tiny").codec
    encoder = soundstream.Encoder(4, tiny.strides, 8)
    decoder = soundstream.Decoder(4, tiny.strides, 8)
    audio = torch.randn(1, 1, 3200)
    changed = audio.clone()
    changed[..., 1600:] += torch.randn(1600)                    # change the future from frame 5 on
    torch.testing.assert_close(encoder(audio)[..., :5], encoder(changed)[..., :5])
    assert (encoder(audio)[..., 5:] - encoder(changed)[..., 5:]).abs().max() > 1e-2
    latents = torch.randn(1, 8, 10)
    later = latents.clone()
    later[..., 5:] += torch.randn(8, 5)
    torch.testing.assert_close(decoder(latents)[..., :1600], decoder(later)[..., :1600])


def test_codes_and_audio_have_the_documented_shapes(codec):
    audio = torch.stack(clips(2))                               # (2, 8000): 25 frames of 320 samples
    codes = codec.encode(audio)
    assert codes.shape == (2, codec.num_levels, 25) and codes.dtype == torch.int64
    assert codec.decode(codes).shape == (2, 8000)
    assert codec.decode(codes[:, :1]).shape == (2, 8000)        # fewer levels: a lower bitrate
    output = codec(audio)
    assert output.audio.shape == (2, 8000) and output.quantizer_loss.dim() == 0


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_bitrate_is_frame_rate_times_levels_times_bits(name):
    preset = config.get_preset(name)
    tokens = preset.tokens
    model = soundstream.SoundStream(preset.data.sample_rate, tokens.soundstream_frame_rate, tokens.rvq_levels,
                                    tokens.codebook_size, dataclasses.replace(preset.codec, channels=2, latent_dim=4))
    assert model.hop_length * tokens.soundstream_frame_rate == preset.data.sample_rate
    assert model.bitrate == tokens.soundstream_frame_rate * tokens.rvq_levels * math.log2(tokens.codebook_size)
    assert {"tiny": 1_600, "paper": 6_000}.get(name, model.bitrate) == model.bitrate


def test_strides_that_do_not_match_the_frame_rate_are_refused():
    with pytest.raises(ValueError, match=r"strides \(2, 4, 5\) give 40 samples per frame.*needs 320"):
        soundstream.SoundStream(16_000, 50, 4, 32, config.CodecConfig(strides=(2, 4, 5)))


def test_bad_audio_and_codes_are_clear_errors(codec):
    good = torch.stack(clips(1))
    with pytest.raises(AudioError, match=r"at 16000 Hz but the audio is at 24000 Hz.*resample"):
        codec.encode(good, sample_rate=24_000)
    with pytest.raises(AudioError, match=r"not a whole number of frames of 320 samples; pass pad=True"):
        codec.encode(good[:, :1000])
    assert codec.encode(good[:, :1000], pad=True).shape[-1] == 4
    with pytest.raises(AudioError, match="NaN"):
        codec.encode(torch.full((1, 320), float("nan")))
    with pytest.raises(AudioError, match=r"\(samples,\) or \(batch, samples\)"):
        codec.encode(torch.zeros(1, 2, 320))
    codes = codec.encode(good)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 32\)"):
        codec.decode(codes + 32)
    with pytest.raises(ValueError, match=r"codes have 5 levels but this codec has 4"):
        codec.decode(torch.zeros(1, 5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="codes must be integers"):
        codec.decode(codes.float())


def test_save_and_load_round_trip_and_refuse_another_config(codec, tmp_path):
    path = codec.save(tmp_path / "codec.pt")
    loaded = soundstream.SoundStream.load(path)
    audio = torch.stack(clips(1))
    torch.testing.assert_close(loaded.encode(audio), codec.encode(audio))
    torch.testing.assert_close(loaded.reconstruct(audio), codec.reconstruct(audio), atol=2e-3, rtol=0)

    payload = torch.load(path, weights_only=True)
    payload["config"]["codec"]["channels"] = 8                  # a checkpoint of a wider codec
    save_atomically(payload, tmp_path / "wider.pt")
    with pytest.raises(CheckpointMismatchError, match="different shape"):
        soundstream.SoundStream.load(tmp_path / "wider.pt")


def test_a_checkpoint_older_than_a_config_field_still_loads(codec, tmp_path):
    payload = torch.load(codec.save(tmp_path / "codec.pt"), weights_only=True)
    del payload["config"]["codec"]["feature_weight"]            # as if written before the field existed
    save_atomically(payload, tmp_path / "old.pt")
    loaded = soundstream.SoundStream.load(tmp_path / "old.pt")
    assert loaded.codec_config.feature_weight == config.CodecConfig().feature_weight
    payload["config"]["codec"]["from_the_future"] = 1
    save_atomically(payload, tmp_path / "new.pt")
    with pytest.raises(CheckpointMismatchError, match="from_the_future"):
        soundstream.SoundStream.load(tmp_path / "new.pt")


def test_discriminators_give_logits_and_features_the_gan_losses_accept():
    training = soundstream.CodecTraining.from_config(micro_config())
    real, fake = torch.stack(clips(2)), torch.randn(2, 8000) * 0.1
    real_logits, real_features = training.discriminate(real)
    fake_logits, fake_features = training.discriminate(fake)
    assert len(real_logits) == 4 and all(logits.shape[0] == 2 for logits in real_logits)  # 3 waveform + 1 STFT
    from mlm_lessons import gan
    assert gan.discriminator_loss(real_logits, fake_logits).item() > 0
    assert gan.feature_matching_loss(real_features, fake_features).item() > 0


def test_multi_scale_mel_loss_is_zero_for_a_copy_and_has_gradients():
    real = torch.stack(clips(2))
    assert soundstream.multi_scale_mel_loss(real, real, SAMPLE_RATE).item() == 0.0
    estimate = (real + 0.05 * torch.randn_like(real)).requires_grad_()
    loss = soundstream.multi_scale_mel_loss(estimate, real, SAMPLE_RATE)
    loss.backward()
    assert loss.item() > 0 and estimate.grad.abs().sum() > 0


def test_a_short_training_run_lowers_the_reconstruction_loss_and_starts_the_discriminator_late(tmp_path):
    preset = dataclasses.replace(micro_config(), train=dataclasses.replace(
        config.get_preset("tiny").train, log_every=1, checkpoint_every=0))
    training, history = soundstream.train_codec(preset, clips(8), tmp_path / "run", steps=12, progress=False)
    reconstruction = [row["codec/reconstruction"] for row in history]
    assert reconstruction[-1] < reconstruction[0]
    assert [("discriminator/loss" in row) for row in history] == [row["step"] > 3 for row in history]
    assert "codec/adversarial" in history[-1] and "codec/adversarial" not in history[0]
    loaded = soundstream.SoundStream.load(tmp_path / "run" / "last.pt")   # the trainer's own checkpoint
    audio = torch.stack(clips(1))
    torch.testing.assert_close(loaded.encode(audio), training.codec.encode(audio))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 12


def test_mu_law_baseline_bitrate_and_quality_ordering():
    audio = torch.stack(clips(2, seconds=0.25))
    nearly_lossless = soundstream.mu_law_codec(audio, SAMPLE_RATE, SAMPLE_RATE, 16)
    assert metrics.si_snr(nearly_lossless, audio).min() > 40
    coarse = soundstream.mu_law_codec(audio, SAMPLE_RATE, 4_000, 4)
    finer = soundstream.mu_law_codec(audio, SAMPLE_RATE, 4_000, 8)
    assert metrics.si_snr(finer, audio).mean() > metrics.si_snr(coarse, audio).mean()
    decoded, setting = soundstream.best_mu_law_codec(audio, SAMPLE_RATE, 1_600)
    assert decoded.shape == audio.shape and setting["bits"] * setting["codec_rate"] <= 1_600
    with pytest.raises(ValueError, match="bits must be between 1 and 16"):
        soundstream.mu_law_codec(audio, SAMPLE_RATE, 4_000, 0)


def test_a_training_step_runs_under_bf16_autocast_and_keeps_float32_codebooks():
    preset = micro_config()
    preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, bf16=True, log_every=1,
                                                                     checkpoint_every=0))
    training, history = soundstream.train_codec(preset, clips(4), steps=4, progress=False)
    assert all(math.isfinite(row["codec/loss"]) for row in history) and "discriminator/loss" in history[-1]
    assert all(level.codebook.dtype == torch.float32 for level in training.codec.quantizer.levels)


def test_the_shipped_codec_loads_and_is_the_one_the_documented_command_makes():
    path = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "soundstream-tiny.pt"
    codec = soundstream.SoundStream.load(path)
    assert codec.config_dict() == soundstream.SoundStream.from_config(config.get_preset("tiny")).config_dict(), (
        "the tiny preset's codec changed: retrain data/checkpoints/soundstream-tiny.pt with the command in README.md")
    assert codec.encode(torch.zeros(3_200)).shape == (1, 4, 10)


# ----------------------------------------------------------------------------------------------------
# The time-frequency design: log-mel encoder, factorised codes, iSTFT decoder, Vocos's discriminators

TIME_FREQUENCY = dict(encoder="mel", decoder="istft", quantizer="factorised", discriminators="vocos",
                      convnext_dim=16, convnext_blocks=1, code_dim=4)


def test_the_time_frequency_codec_has_the_same_calls_shapes_and_bitrate():
    torch.manual_seed(0)
    seanet = soundstream.SoundStream.from_config(micro_config()).eval()
    codec = soundstream.SoundStream.from_config(micro_config(**TIME_FREQUENCY)).eval()
    assert codec.bitrate == seanet.bitrate == 50 * 4 * 5                     # 32 codes: 5 bits a code
    audio = torch.stack(clips(2))                                            # 25 frames of 320 samples
    codes = codec.encode(audio)
    assert codes.shape == seanet.encode(audio).shape == (2, 4, 25)
    assert codec.decode(codes).shape == (2, 8000) and codec.decode(codes[:, :1]).shape == (2, 8000)
    output = codec.train()(audio)
    assert output.audio.shape == (2, 8000) and output.quantizer_loss.requires_grad


def test_the_time_frequency_codec_saves_loads_and_an_old_file_loads_as_the_papers_design(codec, tmp_path):
    torch.manual_seed(0)
    new = soundstream.SoundStream.from_config(micro_config(**TIME_FREQUENCY)).eval()
    loaded = soundstream.SoundStream.load(new.save(tmp_path / "codec.pt"))
    audio = torch.stack(clips(1))
    assert isinstance(loaded.decoder, soundstream.ISTFTDecoder) and torch.equal(loaded.encode(audio), new.encode(audio))
    torch.testing.assert_close(loaded.reconstruct(audio), new.reconstruct(audio), atol=2e-3, rtol=0)
    payload = torch.load(codec.save(tmp_path / "seanet.pt"), weights_only=True)
    for field in ("encoder", "decoder", "quantizer", "discriminators", "convnext_dim", "convnext_blocks", "code_dim"):
        del payload["config"]["codec"][field]                    # a file written before these fields existed
    save_atomically(payload, tmp_path / "old.pt")
    old = soundstream.SoundStream.load(tmp_path / "old.pt")
    assert isinstance(old.decoder, soundstream.Decoder) and torch.equal(old.encode(audio), codec.encode(audio))
    with pytest.raises(ValueError, match="codec.decoder must be one of 'seanet', 'istft', got 'vocoder'"):
        micro_config(decoder="vocoder")


@pytest.mark.parametrize("name, audio", [("100 samples, shorter than one window", torch.rand(100) - 0.5),
                                         ("silence", torch.zeros(4000)), ("clipped", torch.randn(4000).clamp(-1, 1))])
def test_the_time_frequency_codec_reconstructs_short_silent_and_clipped_audio(name, audio):
    torch.manual_seed(0)
    codec = soundstream.SoundStream.from_config(micro_config(**TIME_FREQUENCY)).eval()
    out = codec.reconstruct(audio)
    assert out.shape == (1, len(audio)) and torch.isfinite(out).all(), name
    with pytest.raises(AudioError, match="works at 16000 Hz but the audio is at 24000 Hz"):
        codec.reconstruct(audio, sample_rate=24_000)


def test_vocos_discriminators_judge_every_period_and_resolution_and_train():
    preset = micro_config(**TIME_FREQUENCY)
    training = soundstream.CodecTraining.from_config(preset)
    real, fake = torch.stack(clips(2)), torch.randn(2, 8000) * 0.1
    real_logits, real_features = training.discriminate(real)
    fake_logits, fake_features = training.discriminate(fake)
    assert len(real_logits) == len(soundstream.PERIODS) + len(soundstream.STFT_DISCRIMINATOR_SIZES)
    assert [logits.shape[-1] for logits in real_logits[:len(soundstream.PERIODS)]] == list(soundstream.PERIODS)
    from mlm_lessons import gan
    assert gan.discriminator_loss(real_logits, fake_logits).item() > 0
    assert gan.feature_matching_loss(real_features, fake_features).item() > 0
    codec_names = {name for name, _ in training.codec.named_parameters()}
    assert len(training.discriminator_parameters()) == len(list(training.parameters())) - len(codec_names)

    preset = dataclasses.replace(preset, train=dataclasses.replace(preset.train, log_every=1, checkpoint_every=0))
    held_out = torch.stack(clips(4, seed=5))

    def held_out_loss(codec):
        return soundstream.multi_scale_mel_loss(codec.eval().reconstruct(held_out), held_out, SAMPLE_RATE).item()

    torch.manual_seed(preset.train.seed)                    # train_codec builds the same codec from this seed
    before = held_out_loss(soundstream.SoundStream.from_config(preset))
    training, history = soundstream.train_codec(preset, clips(8), steps=30, progress=False)
    assert held_out_loss(training.codec) < 0.95 * before and "codec/adversarial" in history[-1]


def test_a_quantiser_warm_up_trains_the_codec_unquantised_then_quantises():
    codec = soundstream.SoundStream.from_config(micro_config(**dict(TIME_FREQUENCY, quantizer="ema"),
                                                             quantizer_warmup_steps=2)).train()
    audio = torch.stack(clips(2))
    commitments = []
    for step in range(3):
        latents = codec.encoder(audio[:, None]).transpose(1, 2)
        out = codec.quantizer(latents)
        commitments.append(out.metrics["commitment"].item())
        assert torch.equal(out.quantized, latents) == (step < 2)
    assert commitments[:2] == [0.0, 0.0] and commitments[2] > 0
    with pytest.raises(ValueError, match="only the 'ema' quantiser"):
        config.CodecConfig(quantizer="factorised", quantizer_warmup_steps=10)
    with pytest.raises(ValueError, match="quantizer_warmup_steps must be >= 0"):
        config.CodecConfig(quantizer_warmup_steps=-1)


def test_a_run_shorter_than_twice_the_warm_up_warms_up_for_half_of_it_and_still_quantises():
    preset = micro_config(**dict(TIME_FREQUENCY, quantizer="ema"), quantizer_warmup_steps=1000)
    training, history = soundstream.train_codec(preset, clips(4), steps=6, progress=False)
    quantizer = training.codec.quantizer
    assert quantizer.warmup_steps == 3 and quantizer.quantising
    assert history[-1]["codec/commitment"] > 0 and history[-1]["step"] == 6
    assert training.codec.codec_config.quantizer_warmup_steps == 1000          # the saved config keeps the preset's
