"""``make demo``: a page of captioned SynthCaps clips to look at and listen to.

Until the full pipeline exists this is the course's "main job": it exercises the
renderer, the captioner, the audio toolkit and the plots end to end, headless,
and leaves behind something to show a class: wav files, one PNG of their
spectrograms, the captions as text, and an ``index.html`` that plays them.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the demo writes files, it never opens a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mlm_lessons import audio, captions, synth, viz  # noqa: E402
from mlm_lessons.atomic import atomic_path  # noqa: E402

# A spread of lead instruments, backings and moods so the page shows the range.
DEMO_CHOICES: tuple[dict, ...] = (
    dict(lead="violin", mood="calming", backing=("riff",), backing_instrument="distorted electric guitar"),
    dict(lead="flute", mood="happy"),
    dict(lead="piano", mood="sad"),
    dict(lead="distorted electric guitar", mood="energetic"),
    dict(lead="organ", mood="mysterious"),
    dict(lead="acoustic guitar", mood="calming"),
    dict(lead="trumpet", mood="happy"),
    dict(lead="marimba", mood="energetic"),
)


def _attributes_for(index: int, rng: np.random.Generator) -> synth.SynthAttributes:
    return synth.sample_attributes(rng, **DEMO_CHOICES[index % len(DEMO_CHOICES)])


def write_demo(out_dir: str | os.PathLike = "data/demo", num_clips: int = 6, seed: int = 0,
               seconds: float = 6.0, sample_rate: int = 16_000) -> Path:
    """Render ``num_clips`` captioned clips into ``out_dir``; returns the path of ``index.html``."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    clips = []
    for index in range(num_clips):
        attrs = _attributes_for(index, rng)
        wave = synth.render(attrs, seconds=seconds, sample_rate=sample_rate, seed=seed * 1_000 + index)
        name = f"clip-{index:02d}.wav"
        audio.save_audio(out_dir / name, wave, sample_rate)
        clips.append((name, wave, captions.caption(attrs, rng)))

    fig, axes = plt.subplots(num_clips, 1, figsize=(10, 2.6 * num_clips), squeeze=False)
    for ax, (name, wave, text) in zip(axes[:, 0], clips):
        viz.plot_spectrogram(wave, sample_rate, ax=ax, max_hz=sample_rate / 2)
        ax.set_title(f"{name}: {text}", fontsize=9, loc="left", wrap=True)
    fig.tight_layout()
    with atomic_path(out_dir / "spectrograms.png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)

    lines = [f"{name}\t{text}" for name, _, text in clips]
    with atomic_path(out_dir / "captions.tsv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    rows = "\n".join(
        f'<li><p>{html.escape(text)}</p><audio controls src="{name}"></audio></li>' for name, _, text in clips
    )
    page = (
        "<!doctype html><meta charset='utf-8'><title>SynthCaps demo</title>"
        "<h1>SynthCaps: procedural music with MusicCaps-style captions</h1>"
        f"<ol>{rows}</ol><img src='spectrograms.png' alt='spectrogram of each clip' style='max-width:100%'>"
    )
    index = out_dir / "index.html"
    with atomic_path(index) as tmp:
        tmp.write_text(page)
    return index

