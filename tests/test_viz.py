"""Plots label their axes and draw what they are given; playback embeds the right rate."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mlm_lessons import audio, viz  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_waveform_plot_spans_the_clip():
    ax = viz.plot_waveform(torch.zeros(16_000), 16_000, title="silence")
    assert ax.get_xlabel() == "time (s)" and ax.get_title() == "silence"
    assert ax.get_xlim() == pytest.approx((0, 15_999 / 16_000))


def test_spectrogram_and_mel_plots_have_units():
    wave = torch.randn(8_000) * 0.1
    ax = viz.plot_spectrogram(wave, 16_000, max_hz=4_000)
    assert ax.get_ylabel() == "frequency (Hz)" and ax.get_ylim() == (0, 4_000)
    ax = viz.plot_mel(audio.log_mel(wave, 16_000), 16_000)
    assert ax.get_ylabel() == "mel band"
    with pytest.raises(ValueError, match="n_mels, frames"):
        viz.plot_mel(torch.zeros(1, 2, 3), 16_000)


def test_history_plot_smooths_and_reports_missing_keys():
    history = [{"step": s, "loss": 1.0 / (s + 1)} for s in range(20)]
    ax = viz.plot_history(history, smooth=5)
    (line,) = ax.get_lines()
    assert len(line.get_xdata()) == 16
    with pytest.raises(KeyError, match="available keys"):
        viz.plot_history(history, keys=("accuracy",))


def test_play_embeds_a_wav_at_the_sample_rate():
    player = viz.play(torch.zeros(1_600), 16_000)
    assert player.data[:4] == b"RIFF"
    assert int.from_bytes(player.data[24:28], "little") == 16_000
    with pytest.raises(audio.AudioError):
        viz.play(torch.zeros(0), 16_000)


def test_patches_share_one_colour_scale():
    _, axes = plt.subplots(1, 2)
    viz.show_patch(torch.zeros(1, 64, 32), axes[0])
    viz.show_patch(torch.full((64, 32), 5.0), axes[1])
    for ax in axes:
        (image,) = ax.get_images()
        assert image.get_clim() == viz.PATCH_VALUE_RANGE and image.get_array().shape == (64, 32)
    with pytest.raises(ValueError, match="n_mels, frames"):
        viz.show_patch(torch.zeros(2, 64, 32), axes[0])


def test_plot_confusion_counts_rows_and_names_the_accuracy():
    ax = viz.plot_confusion([0, 0, 1, 2], [0, 1, 1, 2], ["a", "b", "c"], title="toy")
    assert ax.get_title() == "toy: accuracy 75%"
    image = ax.images[0].get_array()
    assert image[0, 0] == 0.5 and image[0, 1] == 0.5 and image[1, 1] == 1 and image[2, 2] == 1
    assert sorted(text.get_text() for text in ax.texts) == ["1", "1", "1", "1"]
    with pytest.raises(ValueError, match="class indices"):
        viz.plot_confusion([0, 3], [0, 1], ["a", "b", "c"])
    with pytest.raises(ValueError, match="as many predictions"):
        viz.plot_confusion([0, 1], [0], ["a", "b"])
