"""The spectrogram-frame encoder and decoder: one latent per codec frame, frames centred where the codec's are,
an iSTFT head that inverts the STFT exactly, finite on silence, loud and short clips, and trainable."""

import math

import pytest
import torch

from mlm_lessons.time_frequency import ConvNeXtBlock, ISTFTDecoder, MelEncoder

SAMPLE_RATE, HOP = 16_000, 320


def test_shapes_one_latent_per_frame_and_one_hop_of_samples_per_latent():
    torch.manual_seed(0)
    encoder, decoder = MelEncoder(SAMPLE_RATE, HOP, latent_dim=12, dim=16, blocks=2), ISTFTDecoder(HOP, 12, 16, 2)
    audio = torch.randn(3, 1, 25 * HOP)
    latents = encoder(audio)
    assert latents.shape == (3, 12, 25)
    assert decoder(latents).shape == (3, 1, 25 * HOP)


def test_the_encoders_frame_t_is_centred_on_sample_t_times_hop():
    """A click at sample 7 x hop puts its energy in mel frame 7 and no other: frames line up with codes."""
    encoder = MelEncoder(SAMPLE_RATE, HOP, latent_dim=4, dim=8, blocks=1)
    click = torch.zeros(1, 1, 20 * HOP)
    click[..., 7 * HOP] = 1.0
    energy = encoder.mel(click.squeeze(1))[..., :-1].sum(1)[0]     # (frames,) as the encoder reads them
    assert energy.shape == (20,) and int(energy.argmax()) == 7


def test_the_istft_head_inverts_the_stft_of_the_same_frames():
    """Given the true STFT of a clip (its frames centred on t x hop, one per latent), the decoder's inverse
    returns the clip exactly, all of it: the alignment and the length are right, whatever a network predicts."""
    decoder = ISTFTDecoder(HOP, latent_dim=4, dim=8, blocks=1)
    audio = torch.randn(2, 30 * HOP)
    truth = torch.stft(audio, decoder.n_fft, HOP, window=decoder.window, center=True, return_complex=True)
    decoder.spectrum = lambda latents: truth[..., :latents.shape[-1]]     # 30 of the 31 centred frames
    torch.testing.assert_close(decoder(torch.zeros(2, 4, 30)).squeeze(1), audio, atol=1e-5, rtol=1e-5)


def test_the_decoders_spectrum_has_bounded_positive_magnitudes():
    torch.manual_seed(0)
    decoder = ISTFTDecoder(HOP, latent_dim=4, dim=8, blocks=1)
    spectrum = decoder.spectrum(1e4 * torch.randn(1, 4, 5))       # a diverged latent: no inf, no NaN
    assert spectrum.shape == (1, 2 * HOP + 1, 5) and spectrum.dtype == torch.complex64
    assert torch.isfinite(spectrum.abs()).all() and spectrum.abs().max() <= math.exp(7.0) * 1.0001


@pytest.mark.parametrize("name, audio", [("silence", torch.zeros(1, 1, 10 * HOP)),
                                         ("clipped", torch.randn(1, 1, 10 * HOP).mul(20).clamp(-1, 1)),
                                         ("one frame", torch.randn(1, 1, HOP))])
def test_silent_clipped_and_one_frame_clips_give_finite_latents_and_audio(name, audio):
    """The mel's floor keeps silence finite; zero padding lets a clip shorter than the window be read."""
    torch.manual_seed(0)
    encoder, decoder = MelEncoder(SAMPLE_RATE, HOP, 8, 16, 1), ISTFTDecoder(HOP, 8, 16, 1)
    latents = encoder(audio)
    assert latents.shape[-1] == audio.shape[-1] // HOP and torch.isfinite(latents).all(), name
    assert torch.isfinite(decoder(latents)).all(), name


def test_convnext_block_starts_near_the_identity_and_every_part_learns():
    torch.manual_seed(0)
    block = ConvNeXtBlock(16, layer_scale=1e-3)
    x = torch.randn(2, 16, 9)
    torch.testing.assert_close(block(x), x, atol=0.05, rtol=0)
    block(x).pow(2).sum().backward()
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in block.parameters())


def test_encoder_and_decoder_fit_a_clip_and_run_under_bf16_autocast():
    """A few Adam steps on one clip lower the log-magnitude error: gradients reach both through the FFTs."""
    torch.manual_seed(0)
    encoder, decoder = MelEncoder(SAMPLE_RATE, HOP, 8, 16, 1), ISTFTDecoder(HOP, 8, 16, 1)
    time = torch.arange(8 * HOP) / SAMPLE_RATE
    audio = (0.5 * torch.sin(2 * math.pi * 440 * time)).view(1, 1, -1)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-2)

    def spectral_error():
        estimate = decoder(encoder(audio)).squeeze(1)
        magnitudes = [torch.stft(signal, 512, 128, window=torch.hann_window(512), return_complex=True).abs()
                      for signal in (estimate, audio.squeeze(1))]
        return (magnitudes[0].add(1e-4).log() - magnitudes[1].add(1e-4).log()).abs().mean()

    first = spectral_error()
    for _ in range(30):
        optimizer.zero_grad()
        loss = spectral_error()
        loss.backward()
        optimizer.step()
    assert spectral_error() < 0.7 * first
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = decoder(encoder(audio))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
