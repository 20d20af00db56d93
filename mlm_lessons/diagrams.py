"""Diagrams of the models, drawn by code so that they can be redrawn whenever the code changes.

Every lesson opens with :func:`musiclm_diagram`, "MusicLM in one picture" with that lesson's part
highlighted. Lesson 01 draws a Transformer block with :func:`transformer_block_diagram` and its
encoder–decoder with :func:`encoder_decoder_diagram`, lesson 02 the generation loop with
:func:`autoregressive_loop_diagram`, lesson 03 a GAN's two training steps with
:func:`gan_training_diagram` and lesson 04 the VAE with :func:`vae_diagram`; the codec lesson explains
SoundStream with :func:`soundstream_diagram`, the w2v-BERT lesson its encoder with
:func:`w2v_bert_diagram`, the MuLan lesson its two towers with :func:`mulan_diagram` and the stages
lesson its token layouts with :func:`stage_layouts_diagram`.
All are plain matplotlib (rounded boxes, arrows and labels; no graphviz, no image files), and every
number in a label comes from an argument or from the papers, so a figure cannot quietly disagree with
the code::

    soundstream_diagram()                                      # the course's codec: 1600 bit/s
    soundstream_diagram(num_levels=12, codebook_size=1024,     # the paper's codec: 6000 bit/s
                        strides=(3, 4, 5, 8), sample_rate=24_000)
    w2v_bert_diagram()                                         # the course's w2v-BERT: 2 + 2 blocks
    w2v_bert_diagram(contrastive_layers=8, mlm_layers=16,      # the paper's: tokens from layer 15
                     token_layer=15, num_clusters=1024)
    mulan_diagram()                                            # the course's MuLan: 64-d, 4 × 256 tokens
    stage_layouts_diagram(musiclm.stage_layouts(config))       # lesson 08: what each stage reads
    musiclm_diagram(highlight="soundstream")                   # "... — this lesson: SoundStream"
    transformer_block_diagram(cross_attention=True, n_heads=8) # a decoder block of lesson 01's model
    autoregressive_loop_diagram(use_cache=False)               # lesson 02: the whole prefix every step

Like :mod:`mlm_lessons.viz`, each function draws on an ``ax`` it is given (or on a new figure) and
returns the ``Axes``; nothing calls ``plt.show()``. On its own figure one data unit is one inch, which
is why the layouts below are written in inches; text is placed in points, so it stays the right size
whatever the scale.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle
from matplotlib.path import Path

# One palette for every diagram: each part has a light tint to fill its boxes and a strong shade for
# their edges (or their fill, when a lesson highlights that part).
_PALETTE = {
    "audio": ("#f1f1f1", "#5f5f5f"),
    "soundstream": ("#dae7f4", "#1f66a8"),
    "quantiser": ("#d3eeec", "#137d78"),
    "discriminator": ("#f8dedb", "#b03a2e"),
    "w2v_bert": ("#dcefdc", "#2b8a4a"),
    "mulan": ("#ebe0f3", "#7a3fa0"),
    "stages": ("#fde3c8", "#d0650c"),
    "model": ("#e4e7f6", "#3b4ba0"),  # a generic network: MLPs, generators, VAE encoders and decoders
    "norm": ("#f7f0d0", "#94780c"),
    "latent": ("#f6e0ee", "#a3366f"),
}
_GREYED = ("#f4f4f4", "#cdcdcd", "#a3a3a3")  # face, edge, text of the parts a lesson is not about
_INK = "#262626"
_ARROW = "#555555"
_LOSS = _PALETTE["discriminator"][1]
_TITLE_SIZE = 9.5
_DETAIL_SIZE = 8.5


def soundstream_diagram(ax=None, num_levels: int = 4, codebook_size: int = 256,
                        strides: tuple[int, ...] = (2, 4, 5, 8), sample_rate: int = 16_000,
                        frame_rate: int = 50):
    """SoundStream (Zeghidour et al., 2021) as a left-to-right block diagram, with its training losses.

    Waveform -> encoder -> latent frames -> residual VQ (``num_levels`` quantisers, each quantising the
    residual of the one above, giving codes of shape levels x frames) -> sum of code vectors -> decoder
    -> waveform; below, the two discriminators that compare real clips with reconstructions. The caption
    gives the bitrate, ``frame_rate x num_levels x log2(codebook_size)``. The defaults are the course's
    ``tiny`` codec; ``num_levels=12, codebook_size=1024, strides=(3, 4, 5, 8), sample_rate=24_000``
    is the paper's (MusicLM's).

    Raises:
        ValueError: when ``sample_rate / prod(strides)`` is not ``frame_rate``.
    """
    samples_per_frame = math.prod(strides)
    if sample_rate != frame_rate * samples_per_frame:
        raise ValueError(f"strides {'·'.join(map(str, strides))} give {samples_per_frame} samples per "
                         f"frame, so {sample_rate} Hz makes {sample_rate / samples_per_frame:g} frames per "
                         f"second, not {frame_rate}")
    ax = _canvas(ax, 13, 5.5, "SoundStream: a neural audio codec (Zeghidour et al., 2021)")
    rate = f"{sample_rate / 1000:g} kHz"
    row = 3.45  # the height of the signal path, left to right

    # Encoder, quantiser and decoder learn together from the two losses, so one frame holds them.
    ax.add_patch(FancyBboxPatch((1.3, 2.05), 10.3, 2.67, boxstyle="round,pad=0,rounding_size=0.15",
                                facecolor="none", edgecolor="#9a9a9a", linestyle=(0, (4, 3)), linewidth=1))
    ax.text(1.42, 2.12, "codec: trained end to end", fontsize=_DETAIL_SIZE, style="italic",
            color="#777777", va="bottom")

    _waveform(ax, (0.65, row), "audio in", rate)
    _arrow(ax, (1.15, row), (1.5, row))
    strides_text = "·".join(map(str, strides))
    _box(ax, (2.55, row), (2.1, 1.55), "Encoder",
         f"causal SEANet convs\nstrides {strides_text} = {samples_per_frame}\nsamples per frame\n"
         f"residual units with\ndilations 1, 3, 9", colors=_colors("soundstream"))
    _arrow(ax, (3.6, row), (3.95, row))
    _latent_frames(ax, (4.35, row + 0.15), frame_rate)

    rows, height = _residual_vq(ax, num_levels, codebook_size, left=5.1, right=7.3, bottom=2.12, top=4.65)
    _arrow(ax, (4.75, row + 0.15), (5.22, row + 0.15), (5.22, rows[0]), (5.52, rows[0]))
    _codes(ax, rows, height, left=7.5, right=8.35, source=7.18)

    # Decoding looks each code up in its level's codebook and adds the vectors (every level's row
    # joins the sum): the RVQ's approximation of the latent frame.
    bus = 8.47
    for y in rows:
        _arrow(ax, (8.35, y), (bus, y), style="-")
    _arrow(ax, (bus, rows[0]), (bus, rows[-1]), style="-")
    _arrow(ax, (bus, row), (8.74, row))
    ax.add_patch(Circle((8.98, row), 0.24, facecolor=_PALETTE["quantiser"][0],
                        edgecolor=_PALETTE["quantiser"][1], linewidth=1.3))
    ax.text(8.98, row, "Σ", fontsize=14, ha="center", va="center", color=_INK)
    _text_block(ax, (8.98, row - 0.6), "", "sum of\ncode vectors", _INK)
    _arrow(ax, (9.22, row), (9.55, row))
    _box(ax, (10.5, row), (1.9, 1.35), "Decoder",
         f"transposed convs\nstrides {'·'.join(map(str, reversed(strides)))}\nmirror of the encoder",
         colors=_colors("soundstream"))
    _arrow(ax, (11.45, row), (11.85, row))
    _waveform(ax, (12.35, row), "audio out", rate)

    # Losses. Reconstruction compares input and output on mel spectrograms at several resolutions...
    _arrow(ax, (0.65, 4.05), (0.65, 4.95), (12.35, 4.95), (12.35, 4.05), color=_LOSS, style="<|-|>",
           linestyle=(0, (4, 3)))
    _on_line(ax, (6.5, 4.95), "multi-scale mel reconstruction loss (input vs reconstruction)", _LOSS)
    # ...while two discriminators see real clips and reconstructions, and their verdicts train the codec.
    _box(ax, (9.45, 1.18), (2.2, 0.75), "multi-resolution\nwaveform discriminator",
         "audio at 1×, ½×, ¼× rate", colors=_colors("discriminator"), title_size=9)
    _box(ax, (11.85, 1.18), (1.95, 0.75), "STFT\ndiscriminator", "complex spectrogram",
         colors=_colors("discriminator"), title_size=9)
    _arrow(ax, (12.35, 2.85), (12.35, 1.555))
    _arrow(ax, (12.35, 2.85), (12.35, 1.82), (9.95, 1.82), (9.95, 1.555))
    _on_line(ax, (11.15, 1.82), "reconstruction", _INK)
    _arrow(ax, (0.65, 2.85), (0.65, 0.4), (8.95, 0.4), (8.95, 0.805))
    _arrow(ax, (0.65, 2.85), (0.65, 0.4), (11.35, 0.4), (11.35, 0.805))
    _on_line(ax, (4.8, 0.4), "real audio", _INK)
    _arrow(ax, (8.35, 1.18), (7.0, 1.18), (7.0, 2.05), color=_LOSS, linestyle=(0, (4, 3)))
    ax.text(7.1, 1.6, "hinge adversarial +\nfeature matching", fontsize=_DETAIL_SIZE, color=_LOSS,
            va="center", linespacing=1.15)

    bits_per_code = math.log2(codebook_size)
    bitrate = frame_rate * num_levels * bits_per_code
    ax.text(1.3, 1.35, "bitrate = frame rate × levels × log2(codebook size)\n"
            f"= {frame_rate} × {num_levels} × log2({codebook_size}) = {bitrate:g} bit/s",
            fontsize=10, color=_INK, va="center", linespacing=1.4)
    return ax


def _residual_vq(ax, num_levels, codebook_size, left, right, bottom, top):
    """The residual VQ as a stack of quantisers joined by residual arrows.

    Returns the centre line of each level, top to bottom, and the height of a level's box.
    """
    tint, shade = _PALETTE["quantiser"]
    ax.add_patch(FancyBboxPatch((left, bottom), right - left, top - bottom,
                                boxstyle="round,pad=0,rounding_size=0.12", facecolor="white", edgecolor=shade,
                                linewidth=1.3))
    _text_block(ax, ((left + right) / 2, top - 0.25), "Residual VQ",
                f"{num_levels} levels × {codebook_size} codes", _INK)
    stack_top, stack_bottom = top - 0.5, bottom + 0.1
    pitch = (stack_top - stack_bottom) / num_levels
    height = min(0.28, pitch * 0.8)
    box_left, box_right, hook = left + 0.42, right - 0.12, left + 0.26
    rows = [stack_top - pitch * (level + 0.5) for level in range(num_levels)]
    for level, y in enumerate(rows, start=1):
        ax.add_patch(FancyBboxPatch((box_left, y - height / 2), box_right - box_left, height,
                                    boxstyle=f"round,pad=0,rounding_size={min(0.06, height / 3)}",
                                    facecolor=tint, edgecolor=shade, linewidth=1, gid=f"quantiser {level}"))
        # Level 1 quantises the latent frame; every later level quantises what the levels above missed
        # (the residual), which the hook from one level to the next carries.
        ax.text((box_left + box_right) / 2, y, f"level {level}: {'latent' if level == 1 else 'residual'}",
                fontsize=8, ha="center", va="center", color=_INK)
        if level > 1:
            above = rows[level - 2]
            _arrow(ax, (box_left, above - height / 4), (hook, above - height / 4), (hook, y + height / 4),
                   (box_left, y + height / 4), head=8)
    return rows, height


def _codes(ax, rows, height, left, right, source):
    """The codes as a grid, one row per level (filled by an arrow from its quantiser) and a few frames."""
    tint, shade = _PALETTE["quantiser"]
    frames = 5
    width = (right - left) / frames
    for y in rows:
        _arrow(ax, (source, y), (left, y), head=8)
        for frame in range(frames):
            ax.add_patch(Rectangle((left + frame * width, y - height / 2), width, height, facecolor=tint,
                                   edgecolor=shade, linewidth=0.8))
    _text_block(ax, ((left + right) / 2, rows[0] + height / 2 + 0.24), "", "codes\n(levels × frames)",
                _INK)


def _latent_frames(ax, center, frame_rate):
    """A few encoder output vectors as thin bars, one per frame."""
    x, y = center
    tint, shade = _PALETTE["soundstream"]
    for offset in np.linspace(-0.3, 0.3, 5):
        ax.add_patch(Rectangle((x + offset - 0.05, y - 0.4), 0.1, 0.8, facecolor=tint, edgecolor=shade,
                               linewidth=0.9))
    _text_block(ax, (x, y - 0.72), "", f"latent frames\n{frame_rate} per second", _INK)


def _waveform(ax, center, title, rate, width=1.0):
    """An audio box: a decaying oscillation drawn above its name and sample rate (or shape)."""
    x, y = center
    _box(ax, center, (width, 1.2), title, rate, colors=_colors("audio"), text_at=(x, y - 0.22))
    t = np.linspace(0, 1, 200)
    wave = np.sin(2 * np.pi * 7 * t) * np.exp(-2.5 * t) * (1 - t) ** 0.3
    ax.plot(x - 0.38 + 0.76 * t, y + 0.3 + 0.17 * wave, color=_PALETTE["soundstream"][1], linewidth=1.2)


def w2v_bert_diagram(ax=None, contrastive_layers: int = 2, mlm_layers: int = 2, token_layer: int = 3,
                     frame_rate: int = 25, num_clusters: int = 128):
    """w2v-BERT (Chung et al., 2021) as :mod:`mlm_lessons.w2v_bert` builds it, with its two training tasks.

    Along the top row: audio -> log-mel (``4 x frame_rate`` frames per second) -> feature encoder (two
    stride-2 convolutions, down to ``frame_rate``) -> features with masked spans replaced by noise ->
    contrastive module (``contrastive_layers`` Conformer blocks) -> masked-prediction module (``mlm_layers``
    blocks) -> logits over the target codes. Below, the unmasked path: per-clip normalised log-mel frames
    -> the quantiser (lesson 05's VectorQuantizer) -> target vectors ``q_t`` and their code ids. Dashed, the
    two losses that join the rows: the contrastive task (context vector vs ``q_t`` and distractors) and the
    masked-prediction task (cross-entropy on the code ids of masked frames). Above, highlighted, the layer
    ``token_layer`` (counted from 1 over the contrastive blocks, then the masked-prediction blocks; 0 is the
    feature encoder's output) whose embeddings k-means turns into ``num_clusters`` semantic tokens. The
    defaults are the course's ``tiny`` w2v-BERT; ``contrastive_layers=8, mlm_layers=16, token_layer=15,
    num_clusters=1024`` is the ``paper`` preset (MusicLM's tokens: the 7th masked-prediction layer).

    Raises:
        ValueError: when a module has no blocks, ``token_layer`` is not a layer (0 to
            ``contrastive_layers + mlm_layers``), or ``frame_rate`` or ``num_clusters`` is below 1.
    """
    num_layers = contrastive_layers + mlm_layers
    if contrastive_layers < 1 or mlm_layers < 1:
        raise ValueError(f"each module needs at least one Conformer block, got contrastive_layers="
                         f"{contrastive_layers} and mlm_layers={mlm_layers}")
    if not 0 <= token_layer <= num_layers:
        raise ValueError(f"token_layer={token_layer} is not a layer of this model (0, the feature encoder's "
                         f"output, to {num_layers}, the last Conformer block)")
    if frame_rate < 1 or num_clusters < 1:
        raise ValueError(f"frame_rate and num_clusters must be at least 1, got {frame_rate} and {num_clusters}")
    ax = _canvas(ax, 13, 5.5, "w2v-BERT: self-supervised audio encoder (Chung et al., 2021)")
    row, low = 3.1, 1.1  # the heights of the masked path (top) and of the target path (bottom)
    w2v, strong = _colors("w2v_bert"), _colors("w2v_bert", highlighted="w2v_bert")

    _waveform(ax, (0.65, row), "audio in", "unlabeled")
    _arrow(ax, (1.15, row), (1.4, row))
    _log_mel(ax, (1.875, row), 4 * frame_rate)  # two stride-2 convolutions: 4 mel frames per frame
    _arrow(ax, (2.35, row), (2.6, row))
    _box(ax, (3.4, row), (1.6, 1.3), "Feature encoder", f"two stride-2 Conv2d\n{4 * frame_rate} → "
         f"{frame_rate} frames/s", colors=w2v)
    _arrow(ax, (4.2, row), (4.55, row))
    _masked_frames(ax, (5.15, row))
    _arrow(ax, (5.75, row), (6.1, row))
    bars = {0: (3.85, row + 0.65)}  # layer 0 is the feature encoder's output, tapped from its box
    bars |= _conformer_module(ax, (7.1, row), "Contrastive module", 1, contrastive_layers, token_layer)
    _arrow(ax, (8.1, row), (8.6, row))
    bars |= _conformer_module(ax, (9.6, row), "Masked-prediction\nmodule", contrastive_layers + 1, mlm_layers,
                              token_layer)
    _arrow(ax, (10.6, row), (10.95, row))
    _logits(ax, (11.6, row))

    # The targets come from the same log-mel, never masked: the quantiser turns each frame's four mel
    # frames into a codebook vector q_t, whose index is the frame's code id.
    _arrow(ax, (1.875, row - 0.6), (1.875, low), (4.65, low))
    _on_line(ax, (3.25, low), "per-clip normalised\nlog-mel frames\n(never masked)", _INK)
    _box(ax, (5.6, low), (1.9, 0.95), "Quantiser", "lesson 05's VectorQuantizer\nEMA k-means codebook",
         colors=_colors("quantiser"))
    _arrow(ax, (6.55, low), (7.95, low))
    _vectors(ax, (8.35, low), "quantiser")
    _text_block(ax, (8.35, low - 0.62), "", "target vectors $q_t$", _INK)
    _arrow(ax, (8.75, low), (10.85, low))
    _on_line(ax, (9.8, low), "index in codebook", _INK)
    _code_ids(ax, (11.6, low))

    # The two losses, each joining what the model says about a masked frame to that frame's target.
    _arrow(ax, (8.35, row - 0.02), (8.35, low + 0.33), color=_LOSS, style="<|-|>", linestyle=(0, (4, 3)))
    ax.text(8.25, 1.95, "contrastive loss: pick $q_t$\namong distractors\n(cosine / temperature)",
            fontsize=_DETAIL_SIZE, color=_LOSS, ha="right", va="center", linespacing=1.15)
    _arrow(ax, (11.6, row - 0.78), (11.6, low + 0.2), color=_LOSS, style="<|-|>", linestyle=(0, (4, 3)))
    ax.text(11.5, 1.95, "masked-prediction loss:\ncross-entropy on the code\nids of masked frames",
            fontsize=_DETAIL_SIZE, color=_LOSS, ha="right", va="center", linespacing=1.15)
    ax.text(0.2, 0.42, "loss = contrastive + masked prediction",
            fontsize=_DETAIL_SIZE, color=_LOSS, va="center")

    # The token layer: its embeddings, clustered by k-means, are MusicLM's semantic tokens.
    x, top = bars[token_layer]
    tokens = (11.75, 4.7)
    _arrow(ax, (x, top), (x, tokens[1]), (tokens[0] - 1.1, tokens[1]), color=strong[1])
    module, block = (("contrastive", token_layer) if token_layer <= contrastive_layers
                     else ("masked-prediction", token_layer - contrastive_layers))
    where = ("the feature encoder's output" if token_layer == 0
             else f"block {block} of the\n{module} module")
    ax.text(x - 0.1, 4.3, f"layer {token_layer}: {where}", fontsize=_DETAIL_SIZE, color=strong[1],
            ha="right", va="center", linespacing=1.15)
    _box(ax, tokens, (2.2, 0.7), "k-means → semantic tokens",
         f"{num_clusters} clusters, {frame_rate} per second", colors=strong)

    ax.text(0.2, 0.17, "no text, no labels: the audio supervises itself", fontsize=_DETAIL_SIZE,
            style="italic", color="#777777", va="center")
    return ax


def _log_mel(ax, center, mel_rate=None, *, detail=None, width=0.95, part="w2v_bert"):
    """A log-mel box: a small spectrogram (mel bands up, frames across, in ``part``'s shade) over its
    name and frame rate (or ``detail``)."""
    x, y = center
    _box(ax, center, (width, 1.2), "log-mel", detail or f"{mel_rate} frames/s", colors=_colors("audio"),
         text_at=(x, y - 0.22))
    face, edge = (np.array(to_rgb(color)) for color in ("white", _PALETTE[part][1]))
    columns, bands, cell = 8, 4, 0.085
    for column in range(columns):
        for band in range(bands):
            level = 0.5 + 0.5 * math.sin(1.7 * column + 2.3 * band) * math.exp(-0.25 * band)
            ax.add_patch(Rectangle((x - columns * cell / 2 + column * cell, y + 0.12 + band * cell), cell, cell,
                                   facecolor=face + (edge - face) * 0.85 * level, edgecolor="none"))


def _masked_frames(ax, center):
    """Feature frames as thin bars, some spans hatched: replaced by noise before the Conformer blocks."""
    x, y = center
    tint, shade = _PALETTE["w2v_bert"]
    masked = {2, 3, 4, 7}
    for frame, offset in enumerate(np.linspace(-0.48, 0.48, 9)):
        ax.add_patch(Rectangle((x + offset - 0.045, y - 0.05), 0.09, 0.7,
                               facecolor=_GREYED[0] if frame in masked else tint,
                               edgecolor=_GREYED[2] if frame in masked else shade, linewidth=0.9,
                               hatch="////" if frame in masked else None,
                               gid="masked frame" if frame in masked else None))
    _text_block(ax, (x, y - 0.45), "", "masked spans → noise\n(≈ half the frames)", _INK)


def _conformer_module(ax, center, title, first, count, token_layer):
    """A module box: a row of Conformer blocks (bars, numbered when there is room) over its name.

    The bar of ``token_layer`` is drawn in the strong colour. Returns ``{layer: (x, top)}`` of its bars.
    """
    x, y = center
    width, height = 2.0, 1.5
    last = first + count - 1
    layers = f"layer {first}" if count == 1 else f"layers {first}–{last}"
    _box(ax, center, (width, height), title,
         f"{count} Conformer block{'s' * (count > 1)}\n{layers}", colors=_colors("w2v_bert"),
         text_at=(x, y - 0.33))
    tint, shade = _PALETTE["w2v_bert"]
    pitch = (width - 0.3) / count
    bar_width, top = min(pitch * 0.7, 0.34), y + 0.6
    bars = {}
    for layer in range(first, last + 1):
        left = x - width / 2 + 0.15 + pitch * (layer - first + 0.5)
        chosen = layer == token_layer
        ax.add_patch(Rectangle((left - bar_width / 2, y + 0.08), bar_width, top - y - 0.08,
                               facecolor=shade if chosen else tint, edgecolor=shade, linewidth=0.9,
                               gid=f"layer {layer}"))
        if pitch >= 0.3:
            ax.text(left, y + 0.34, str(layer), fontsize=8, ha="center", va="center",
                    color="white" if chosen else _INK)
        bars[layer] = (left, top)
    return bars


def _vectors(ax, center, part):
    """A few vectors as thin bars, one per frame, in ``part``'s colours."""
    x, y = center
    tint, shade = _PALETTE[part]
    for offset in np.linspace(-0.3, 0.3, 5):
        ax.add_patch(Rectangle((x + offset - 0.05, y - 0.3), 0.1, 0.6, facecolor=tint, edgecolor=shade,
                               linewidth=0.9))


def _logits(ax, center, part="w2v_bert", label="logits over\ntarget codes"):
    """A score per token, drawn as a small bar chart (in ``part``'s colours) over ``label``."""
    x, y = center
    tint, shade = _PALETTE[part]
    heights = (0.15, 0.3, 0.55, 0.2, 0.1, 0.35, 0.12)
    for index, bar in enumerate(heights):
        ax.add_patch(Rectangle((x - 0.42 + index * 0.12, y - 0.05), 0.09, bar, facecolor=tint, edgecolor=shade,
                               linewidth=0.9))
    ax.plot([x - 0.47, x + 0.45], [y - 0.05, y - 0.05], color=shade, linewidth=0.9)
    _text_block(ax, (x, y - 0.42), "", label, _INK)


def _code_ids(ax, center):
    """A row of integer code ids, one per frame."""
    x, y = center
    tint, shade = _PALETTE["quantiser"]
    width = 0.3
    for index, code in enumerate((17, 3, 3, 88, 41)):
        left = x + (index - 2.5) * width
        ax.add_patch(Rectangle((left, y - 0.18), width, 0.36, facecolor=tint, edgecolor=shade, linewidth=0.8))
        ax.text(left + width / 2, y, str(code), fontsize=8, ha="center", va="center", color=_INK)
    _text_block(ax, (x, y - 0.5), "", "target code ids", _INK)


def mulan_diagram(ax=None, audio_channels: tuple[int, ...] = (32, 64, 128, 128), text_layers: int = 2,
                  embed_dim: int = 64, token_levels: int = 4, codebook_size: int = 256):
    """MuLan (Huang et al., 2022) as :mod:`mlm_lessons.mulan` builds it: two towers, one embedding space.

    Along the top row, the audio tower: audio -> log-mel -> ResNet (one stage per entry of
    ``audio_channels``, each halving time and frequency) -> mean over time, the frequency bands kept side
    by side -> linear projection to ``embed_dim`` and unit length -> audio embeddings ``A``. Along the bottom
    row, the text tower: caption -> WordPiece subwords -> Transformer encoder (``text_layers`` layers) -> mean
    over the real tokens -> linear -> unit length -> text embeddings ``T``. On the right, the similarity matrix
    ``S = A T^T / tau`` of a batch of four (clip, caption) pairs, its diagonal (the matching pairs)
    highlighted, and the symmetric InfoNCE loss that trains both towers. Between the rows, the side branch
    to MusicLM: one residual VQ (``token_levels`` levels of ``codebook_size`` codes) turns either
    embedding into MuLan tokens. The defaults are the course's ``tiny`` MuLan; ``audio_channels=(32, 64,
    128, 256), text_layers=4, embed_dim=128, token_levels=12, codebook_size=1024`` is the ``paper`` preset.

    Raises:
        ValueError: when ``audio_channels`` is empty or holds a width below 1, or ``text_layers``,
            ``embed_dim``, ``token_levels`` or ``codebook_size`` is below 1.
    """
    audio_channels = tuple(audio_channels)
    if not audio_channels or min(audio_channels) < 1:
        raise ValueError(f"audio_channels needs at least one ResNet stage, each at least 1 channel wide, "
                         f"got {audio_channels}")
    for name, value in (("text_layers", text_layers), ("embed_dim", embed_dim), ("token_levels", token_levels),
                        ("codebook_size", codebook_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    ax = _canvas(ax, 14, 5.6, "MuLan: music and text in one embedding space (Huang et al., 2022)")
    top, low, middle = 4.1, 1.45, 2.775  # the audio row, the text row and the height between them
    mulan, grey = _colors("mulan"), _colors("audio")
    stages = len(audio_channels)

    # Audio tower, left to right: one vector per clip.
    _waveform(ax, (0.75, top), "audio", "(batch, samples)", width=1.2)
    _arrow(ax, (1.35, top), (1.6, top))
    _log_mel(ax, (2.25, top), detail="(n_mels × frames)", width=1.3, part="mulan")
    _arrow(ax, (2.9, top), (3.2, top))
    _tower(ax, (4.25, top), "ResNet audio tower",
           f"{stages} stage{'s' * (stages > 1)}, channels\n{', '.join(map(str, audio_channels))}\n"
           "each halves time and frequency", [0.5 * 0.78 ** stage for stage in range(stages)], square=True)
    _arrow(ax, (5.3, top), (5.6, top))
    _box(ax, (6.3, top), (1.4, 0.95), "mean over time", "frequency bands\nkept side by side", colors=mulan)
    _arrow(ax, (7.0, top), (7.3, top))
    _box(ax, (8.0, top), (1.4, 0.95), "linear →\nunit length", f"channels × bands\nto {embed_dim} dims",
         colors=mulan)
    _arrow(ax, (8.7, top), (8.95, top))
    _embeddings(ax, (9.35, top), f"$A$  audio embeddings\n(batch × {embed_dim})", above=True)

    # Text tower, the same shape: one vector per caption, in the same space.
    _box(ax, (0.75, low), (1.2, 1.0), "caption", "“a harpsichord\nwaltz”", colors=grey)
    _arrow(ax, (1.35, low), (1.6, low))
    _box(ax, (2.25, low), (1.3, 1.0), "WordPiece\nsubwords", "[CLS] a harp ##si\n##chord waltz [SEP]",
         colors=mulan, name="WordPiece subwords")
    _arrow(ax, (2.9, low), (3.2, low))
    _tower(ax, (4.25, low), "Transformer encoder",
           f"text tower, {text_layers} layer{'s' * (text_layers > 1)}\nover subword embeddings",
           [0.5] * text_layers, numbered=True)
    _arrow(ax, (5.3, low), (5.6, low))
    _box(ax, (6.3, low), (1.4, 0.95), "mean over\nreal tokens", "[PAD] left out", colors=mulan)
    _arrow(ax, (7.0, low), (7.3, low))
    _box(ax, (8.0, low), (1.4, 0.95), "linear →\nunit length", f"to {embed_dim} dims",
         colors=mulan, name="linear → unit length (text)")
    _arrow(ax, (8.7, low), (8.95, low))
    _embeddings(ax, (9.35, low), f"$T$  text embeddings\n(batch × {embed_dim})", above=False)

    # The batch's similarity matrix: rows are clips (A), columns captions (T); the diagonal pairs each
    # clip with its own caption.
    cell, size = 0.3, 4
    left, bottom = 10.55, middle - size * cell / 2
    tint, shade = _PALETTE["mulan"]
    for row in range(size):
        for column in range(size):
            ax.add_patch(Rectangle((left + column * cell, bottom + (size - 1 - row) * cell), cell, cell,
                                   facecolor=shade if row == column else tint, edgecolor=shade, linewidth=0.9,
                                   gid=f"similarity {row + 1},{column + 1}"))
    right, center = left + size * cell, left + size * cell / 2
    _arrow(ax, (9.75, top), (10.2, top), (10.2, middle), (left, middle))
    _arrow(ax, (9.75, low), (center, low), (center, bottom))
    _text_block(ax, (center, bottom + size * cell + 0.5), "$S = A\\,T^{\\top} / \\tau$",
                "rows: clips ($A$)\ncolumns: captions ($T$)\nτ: learned temperature", _INK)

    # The loss: each row is a softmax over captions, each column over clips, and both want the diagonal.
    _arrow(ax, (right, middle), (11.95, middle), color=_LOSS, linestyle=(0, (4, 3)))
    _box(ax, (12.9, middle), (1.9, 1.1), "symmetric InfoNCE",
         "each row and each\ncolumn picks its\ndiagonal", colors=("white", _LOSS, _LOSS))
    _legend_swatch(ax, (11.95, 1.6), shade, "matching pair:\na clip and its caption")
    _legend_swatch(ax, (11.95, 1.05), tint, "every other pair:\na negative")

    # The side branch to MusicLM: one quantiser, fitted on both kinds of embedding, gives MuLan tokens.
    _arrow(ax, (9.35, top - 0.33), (9.35, middle + 0.45))
    _arrow(ax, (9.35, low + 0.33), (9.35, middle - 0.45))
    _box(ax, (8.75, middle), (2.0, 0.9), "residual VQ →\nMuLan tokens",
         f"{token_levels} levels × {codebook_size} codes\n$M_A$ from audio, $M_T$ from text",
         colors=_colors("quantiser"), name="residual VQ → MuLan tokens")

    ax.text(0.2, 0.2, "trained on (clip, caption) pairs only: every other pair in the batch is a negative",
            fontsize=_DETAIL_SIZE, style="italic", color="#777777", va="center")
    return ax


def _tower(ax, center, title, detail, heights, *, square=False, numbered=False):
    """A tower box: a row of bars (its stages or layers; squares when ``square``, numbered from 1 when
    ``numbered`` and there is room) over its name, in MuLan's colours."""
    x, y = center
    width, height = 2.1, 1.5
    _box(ax, center, (width, height), title, detail, colors=_colors("mulan"), text_at=(x, y - 0.37))
    tint, shade = _PALETTE["mulan"]
    pitch = (width - 0.3) / len(heights)
    for index, bar in enumerate(heights):
        left = x - width / 2 + 0.15 + pitch * (index + 0.5)
        bar_width = min(pitch * 0.8, bar) if square else min(pitch * 0.7, 0.34)
        ax.add_patch(Rectangle((left - bar_width / 2, y + 0.08), bar_width, bar, facecolor=tint,
                               edgecolor=shade, linewidth=0.9))
        if numbered and pitch >= 0.3:
            ax.text(left, y + 0.08 + bar / 2, str(index + 1), fontsize=8, ha="center", va="center", color=_INK)


def _embeddings(ax, center, label, above):
    """A batch of four unit vectors as bars (one per clip or caption), named above or below."""
    x, y = center
    tint, shade = _PALETTE["mulan"]
    for offset in np.linspace(-0.27, 0.27, 4):
        ax.add_patch(Rectangle((x + offset - 0.05, y - 0.3), 0.1, 0.6, facecolor=tint, edgecolor=shade,
                               linewidth=0.9))
    _text_block(ax, (x, y + 0.62 if above else y - 0.62), "", label, _INK)


def _legend_swatch(ax, xy, color, text):
    """A small square of ``color`` with its meaning beside it."""
    x, y = xy
    ax.add_patch(Rectangle((x, y - 0.1), 0.2, 0.2, facecolor=color, edgecolor=_PALETTE["mulan"][1],
                           linewidth=0.9))
    ax.text(x + 0.3, y, text, fontsize=_DETAIL_SIZE, color=_INK, va="center", linespacing=1.15)


# What each lesson highlights in the big picture: the part (a key of _PALETTE) and its name in the title.
_LESSON_PARTS = {
    "audio": ("audio", "audio as data, the clips in and the waveform out"),
    "attention": ("stages", "attention, inside the three stage transformers"),  # built in lessons 01–02
    "autoregressive": ("stages", "next-token prediction, in the three stages"),
    "gan": ("soundstream", "adversarial training, which made SoundStream's decoder"),
    "vae": ("soundstream", "the autoencoder inside SoundStream"),
    "soundstream": ("soundstream", "SoundStream"),
    "w2v_bert": ("w2v_bert", "w2v-BERT"),
    "mulan": ("mulan", "MuLan"),
    "stages": ("stages", "the three stages"),
}


def musiclm_diagram(highlight: str | None = None, ax=None):
    """MusicLM (Agostinelli et al., 2023) in one picture: training on top, inference below.

    Training turns each audio clip into three token sequences (MuLan tokens ``M_A``, semantic tokens
    ``S``, acoustic tokens ``A``) on which the three stage transformers learn next-token prediction.
    Inference swaps the MuLan audio tower for the text tower, lets the stages generate ``S`` and then
    ``A``, and decodes ``A`` with SoundStream.

    Args:
        highlight: the part a lesson is about, drawn in a strong colour with the rest greyed, in
            the order of the lessons: ``"audio"`` (lesson 00: the clips in training, the text and the
            waveform in inference), ``"attention"`` (01) and ``"autoregressive"`` (02) (the stage
            transformers, built from attention and trained on next-token prediction), ``"gan"`` (03)
            and ``"vae"`` (04) (SoundStream, an autoencoder whose decoder adversarial training
            sharpened), ``"soundstream"``, ``"w2v_bert"``, ``"mulan"``, ``"stages"``; ``None``
            colours every part.

    Raises:
        ValueError: for any other ``highlight``.
    """
    if highlight is not None and highlight not in _LESSON_PARTS:
        raise ValueError(f"unknown highlight {highlight!r}; valid names: "
                         f"{', '.join(map(repr, _LESSON_PARTS))} or None")
    part, part_name = _LESSON_PARTS[highlight] if highlight else (None, "")
    title = "MusicLM in one picture" + (f" — this lesson: {part_name}" if highlight else "")
    ax = _canvas(ax, 15, 6.15, title)

    def colors(box_part):
        return _colors(box_part, highlighted=part)

    _band(ax, bottom=3.05, top=5.6, label="training")
    _band(ax, bottom=0.2, top=2.8, label="inference")

    # Training: every clip becomes three token sequences, one per branch...
    branches = (5.1, 4.33, 3.56)
    _box(ax, (1.5, 4.33), (1.05, 0.75), "audio", "music clip", colors=colors("audio"))
    for y in branches:
        _arrow(ax, (2.025, 4.33), (2.3, 4.33), (2.3, y), (2.55, y))
    for y, tower, tokeniser, tokens, tokens_detail, branch_part in zip(
            branches,
            (("MuLan audio tower", "128-d embedding"), ("w2v-BERT", "an intermediate layer"),
             ("SoundStream encoder", "24 kHz → 50 frames/s")),
            (("RVQ", "12 × 1024"), ("k-means", "1024 clusters"), ("RVQ", "12 × 1024")),
            ("$M_A$  MuLan audio tokens", "$S$  semantic tokens", "$A$  acoustic tokens"),
            ("12 per clip", "25 per second", "50 per second × 12 levels\n4 coarse + 8 fine"),
            ("mulan", "w2v_bert", "soundstream")):
        _box(ax, (3.55, y), (2.0, 0.6), *tower, colors=colors(branch_part))
        _arrow(ax, (4.55, y), (4.95, y))
        _box(ax, (5.6, y), (1.3, 0.6), *tokeniser, colors=colors(branch_part),
             name=f"{tokeniser[0]} ({tower[0]})")
        _arrow(ax, (6.25, y), (6.65, y))
        _box(ax, (7.75, y), (2.2, 0.66), tokens, tokens_detail, colors=colors(branch_part), rounding=0.3)
        _arrow(ax, (8.85, y), (9.4, y))
    # ...on which the three stages learn to predict the next token.
    greyed = part not in (None, "stages")
    _box(ax, (12.05, 4.33), (5.3, 2.2), "training the three stages",
         "decoder-only transformers, next-token prediction",
         colors=("white",) + (_GREYED[1:] if greyed else (_PALETTE["stages"][1], _INK)),
         text_at=(12.05, 5.15))
    for x, stage, detail in ((10.31, "semantic stage", "predicts $S$\ngiven $M_A$"),
                             (12.07, "coarse stage", "predicts $A$ levels 1–4\ngiven $M_A$ and $S$"),
                             (13.83, "fine stage", "predicts $A$ levels 5–12\ngiven levels 1–4")):
        _box(ax, (x, 4.03), (1.62, 1.1), stage, detail, colors=colors("stages"), name=f"{stage} (training)")

    # Inference: text in, waveform out, each box feeding the next.
    steps = (  # title, detail, part, width; tokens are the narrower, rounder boxes
        ("text", "“calm piano\nballad”", "audio", 1.0),
        ("MuLan\ntext tower", "128-d", "mulan", 1.1),
        ("RVQ", "12 × 1024", "mulan", 0.8),
        ("$M_T$", "12 tokens", "mulan", 0.75),
        ("semantic\nstage", "→ $S$", "stages", 1.05),
        ("$S$", "25 /s", "w2v_bert", 0.6),
        ("coarse\nstage", "levels 1–4", "stages", 1.05),
        ("fine\nstage", "levels 5–12", "stages", 1.05),
        ("$A$", "50 /s", "soundstream", 0.6),
        ("SoundStream\ndecoder", "→ 24 kHz", "soundstream", 1.2),
        ("waveform", "music", "audio", 1.05),
    )
    row, left, right = 1.35, 0.9, 14.75
    gap = (right - left - sum(width for *_, width in steps)) / (len(steps) - 1)
    middles = {}
    for title_text, detail, box_part, width in steps:
        is_token = title_text.startswith("$")
        _box(ax, (left + width / 2, row), (width, 0.62 if is_token else 0.8), title_text, detail,
             colors=colors(box_part), rounding=0.28 if is_token else 0.1)
        if middles:
            _arrow(ax, (left - gap, row), (left, row))
        middles[title_text] = left + width / 2
        left += width + gap
    # The coarse stage is conditioned on the MuLan tokens as well as on S (as in training)...
    m_t, coarse, a = middles["$M_T$"], middles["coarse\nstage"], middles["$A$"]
    _arrow(ax, (m_t, row + 0.31), (m_t, 2.35), (coarse, 2.35), (coarse, row + 0.4))
    _on_line(ax, ((m_t + coarse) / 2, 2.35), "$M_T$ conditions the coarse stage too", _INK)
    # ...and the decoder needs all twelve levels, so the coarse ones also go straight to A.
    _arrow(ax, (coarse, row - 0.4), (coarse, 0.55), (a, 0.55), (a, row - 0.31))
    _on_line(ax, ((coarse + a) / 2, 0.55), "levels 1–4", _INK)
    return ax


def stage_layouts_diagram(layouts: dict, semantic_frames: int = 3, ax=None):
    """What each MusicLM stage reads and predicts, token by token, for ``semantic_frames`` frames of music.

    Top: the tokens of one stretch of music on a common time axis: the clip's MuLan tokens (one frame
    for the whole clip), its semantic frames and its acoustic frames (coarse and fine RVQ levels), each
    acoustic cell numbered in the order its stage reads it (frame by frame, level by level). Below: the
    sequence of each stage, its prefix (conditioning, never predicted), ``BOS``, then the targets it
    predicts one at a time. Every count comes from ``layouts`` (:func:`mlm_lessons.musiclm.stage_layouts`):
    the kinds' levels and frame rates.

    Each token cell has the ``gid`` ``"<stage>/<prefix|target>/<kind>"`` (or ``"tokens/<kind>"`` at the
    top), so that tests can count them.
    """
    kinds = {}
    for layout in layouts.values():
        kinds.update(layout.prefix.kinds)
        kinds.update(layout.target.kinds)
    semantic_rate = kinds["semantic"].frame_rate
    ratio = round(kinds["coarse"].frame_rate / semantic_rate)
    acoustic_frames = semantic_frames * ratio
    seconds = semantic_frames / semantic_rate
    shade = {"mulan": _PALETTE["mulan"], "semantic": _PALETTE["w2v_bert"], "coarse": _PALETTE["soundstream"],
             "fine": _PALETTE["quantiser"]}
    cell = 0.3

    def frames_of(name):
        return 1 if kinds[name].frame_rate is None else round(seconds * kinds[name].frame_rate)

    rows = len(layouts)
    stage_lengths = [sum(frames_of(k) * kinds[k].levels for k in layout.prefix_kinds) + 1
                     + frames_of(layout.target_kind) * kinds[layout.target_kind].levels for layout in layouts.values()]
    width = max(12.0, 3.0 + cell * max(stage_lengths) + 3.2)
    height = 2.7 + rows * 0.7
    ax = _canvas(ax, width, height, f"What each stage reads and predicts: {seconds * 1000:g} ms of music "
                                   f"({semantic_frames} semantic frames)")

    def token_cell(x, y, name, gid, label="", strong=False):
        tint, edge = shade[name]
        ax.add_patch(Rectangle((x, y), cell * 0.94, cell * 0.94, facecolor=edge if strong else tint,
                               edgecolor=edge, linewidth=1.0, gid=gid))
        if label:
            ax.text(x + cell * 0.47, y + cell * 0.47, label, fontsize=6.5, ha="center", va="center",
                    color="white" if strong else _INK)

    # Top: the tokens of the stretch, on one time axis (an acoustic frame is one cell wide).
    top = height - 0.75
    left = 3.0
    ax.text(left - 0.2, top - 0.1, "the tokens of the stretch", fontsize=_TITLE_SIZE, fontweight="bold",
            ha="right", va="center", color=_INK)
    for level in range(kinds["mulan"].levels):
        token_cell(0.6 + level * cell, top - 0.55, "mulan", "tokens/mulan", f"M{level + 1}")
    ax.text(0.6 + kinds["mulan"].levels * cell / 2, top - 0.7, "MuLan: one frame\nfor the whole clip",
            fontsize=_DETAIL_SIZE - 1, ha="center", va="top", color=_INK)
    for frame in range(semantic_frames):
        tint, edge = shade["semantic"]
        ax.add_patch(Rectangle((left + frame * ratio * cell, top - 0.35), ratio * cell * 0.97, cell * 0.94,
                               facecolor=tint, edgecolor=edge, gid="tokens/semantic"))
        ax.text(left + (frame + 0.5) * ratio * cell, top - 0.35 + cell * 0.47, f"S{frame + 1}", fontsize=6.5,
                ha="center", va="center", color=_INK)
    ax.text(left + acoustic_frames * cell + 0.15, top - 0.2, f"semantic, {semantic_rate:g} frames/s",
            fontsize=_DETAIL_SIZE, va="center", color=_INK)
    order = {"coarse": 0, "fine": 0}
    level_rows = [("coarse", level) for level in range(kinds["coarse"].levels)] + \
                 [("fine", level) for level in range(kinds["fine"].levels)]
    numbers = {}
    for frame in range(acoustic_frames):
        for name, level in level_rows:
            order[name] += 1
            numbers[name, frame, level] = order[name]
    for row, (name, level) in enumerate(level_rows):
        y = top - 0.75 - row * cell
        for frame in range(acoustic_frames):
            token_cell(left + frame * cell, y, name, f"tokens/{name}", str(numbers[name, frame, level]))
        first = kinds["coarse"].levels if name == "fine" else 0
        ax.text(left - 0.1, y + cell / 2, f"{name} level {first + level + 1}", fontsize=_DETAIL_SIZE - 1,
                ha="right", va="center", color=_INK)
    ax.text(left + acoustic_frames * cell + 0.15, top - 0.75 - (len(level_rows) / 2 - 1) * cell,
            f"acoustic, {kinds['coarse'].frame_rate:g} frames/s:\nnumbers give the order a stage reads them",
            fontsize=_DETAIL_SIZE, va="center", color=_INK)

    # Below: each stage's sequence, prefix then BOS then targets.
    for row, layout in enumerate(layouts.values()):
        y = top - 0.75 - len(level_rows) * cell - 0.35 - row * 0.7
        ax.text(left - 0.2, y + cell / 2, f"{layout.name} stage", fontsize=_TITLE_SIZE, fontweight="bold",
                ha="right", va="center", color=_INK)
        x = left
        for name in layout.prefix_kinds:
            for _ in range(frames_of(name) * kinds[name].levels):
                token_cell(x, y, name, f"{layout.name}/prefix/{name}")
                x += cell
        ax.add_patch(Rectangle((x, y), cell * 0.94, cell * 0.94, facecolor="white", edgecolor=_INK,
                               gid=f"{layout.name}/bos"))
        ax.text(x + cell * 0.47, y + cell * 0.47, "B", fontsize=6.5, ha="center", va="center", color=_INK)
        x += cell
        for frame in range(frames_of(layout.target_kind)):
            for level in range(kinds[layout.target_kind].levels):
                label = (str(numbers[layout.target_kind, frame, level]) if layout.target_kind in order
                         else f"S{frame + 1}")
                token_cell(x, y, layout.target_kind, f"{layout.name}/target/{layout.target_kind}", label,
                           strong=True)
                x += cell
        reads = " + ".join(f"{frames_of(name) * kinds[name].levels} {name}" for name in layout.prefix_kinds)
        predicts = frames_of(layout.target_kind) * kinds[layout.target_kind].levels
        ax.text(x + 0.15, y + cell / 2, f"reads {reads} (its prefix)\npredicts {predicts} {layout.target_kind}, "
                "one at a time", fontsize=_DETAIL_SIZE, va="center", color=_INK)
    return ax


def transformer_block_diagram(ax=None, causal: bool = True, cross_attention: bool = False, n_heads: int = 4):
    """One block of the course's Transformer, as :class:`mlm_lessons.transformer.Block` builds it.

    The residual stream ``x`` rises from the input at the bottom; each sub-layer reads a LayerNorm of it
    and adds its output back (pre-norm, Xiong et al., 2020): ``x + self-attention(LN(x))``, causal (with
    its mask drawn) in a decoder and bidirectional in an encoder; then, with ``cross_attention``,
    ``x + cross-attention(LN(x), encoder output)``, the keys and values coming in from the side; then
    ``x + MLP(LN(x))``, a GELU MLP. Each attention box shows its ``n_heads`` heads side by side (``gid``
    ``"self-attention head i"`` or ``"cross-attention head i"``).

    Raises:
        ValueError: when ``n_heads`` is below 1.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be at least 1, got {n_heads}")
    heads = f"{n_heads} head{'s' * (n_heads > 1)}: " + r"$\mathrm{softmax}(QK^{\top}/\sqrt{d_{head}})\,V$"
    sublayers = [("self-attention", "causal multi-head\nself-attention" if causal else "multi-head\nself-attention",
                  f"{heads}\nconcatenated → out projection → dropout")]
    if cross_attention:
        sublayers.append(("cross-attention", "multi-head\ncross-attention",
                          f"{heads}\nqueries from x, keys and values\nfrom the encoder output"))
    sublayers.append(("MLP", "MLP", "Linear d_model → d_ff, GELU,\nLinear d_ff → d_model, dropout\n"
                                    "(d_ff = 4 × d_model by default)"))
    pitch, first = 1.9, 1.6  # the vertical distance between sub-layers; the height of the first
    top = first + pitch * (len(sublayers) - 1) + 0.95  # the last residual add
    ax = _canvas(ax, 9.5, top + 1.35, "One Transformer block, pre-norm (transformer.Block)")
    stream, norm_x, layer_x, layer_width = 1.35, 2.75, 5.45, 3.0

    _text_block(ax, (stream, 0.42), "input x", "(batch, time, d_model)", _INK)
    below = 0.62  # where the stream enters the next sub-layer
    for index, (kind, title, detail) in enumerate(sublayers):
        y = first + pitch * index
        add = y + 0.95
        # The stream runs straight up to the add: the residual path, untouched by the sub-layer.
        _arrow(ax, (stream, below), (stream, add - 0.17))
        ax.add_patch(Circle((stream, y), 0.045, facecolor=_ARROW, edgecolor=_ARROW))
        _arrow(ax, (stream, y), (norm_x - 0.55, y))
        _box(ax, (norm_x, y), (1.1, 0.55), "LayerNorm", colors=_colors("norm"), name=f"LayerNorm ({kind})")
        _arrow(ax, (norm_x + 0.55, y), (layer_x - layer_width / 2, y))
        attention = kind != "MLP"
        _box(ax, (layer_x, y), (layer_width, 1.3), title, detail,
             colors=_colors("stages" if attention else "model"), name=kind,
             text_at=(layer_x, y - 0.15) if attention else None)
        if attention:
            _heads(ax, (layer_x, y + 0.43), layer_width - 0.4, n_heads, kind)
        _arrow(ax, (layer_x, y + 0.65), (layer_x, add), (stream + 0.17, add))
        ax.add_patch(Circle((stream, add), 0.17, facecolor="white", edgecolor=_ARROW, linewidth=1.3))
        ax.text(stream, add, "+", fontsize=13, ha="center", va="center", color=_INK)
        ax.text(stream - 0.27, add, "residual add", fontsize=_DETAIL_SIZE, ha="right", va="center", color=_INK)
        below = add + 0.17
        if kind == "self-attention":
            _mask_icon(ax, (7.8, y + 0.2), causal)
        elif kind == "cross-attention":
            _arrow(ax, (9.35, y), (layer_x + layer_width / 2, y))
            _on_line(ax, (8.4, y), "encoder output\n(keys, values)", _INK)
    _arrow(ax, (stream, below), (stream, top + 0.6))
    ax.text(stream + 0.15, top + 0.5, "to the next block (after the last one: a final LayerNorm)",
            fontsize=_DETAIL_SIZE, va="center", color=_INK)
    return ax


def _heads(ax, center, width, n_heads, kind):
    """The heads of an attention box as a row of small cards, numbered when there is room."""
    x, y = center
    shade = _PALETTE["stages"][1]
    pitch = width / n_heads
    card = min(pitch * 0.85, 0.4)
    for head in range(n_heads):
        left = x - width / 2 + pitch * (head + 0.5)
        ax.add_patch(Rectangle((left - card / 2, y - 0.1), card, 0.2, facecolor="white", edgecolor=shade,
                               linewidth=0.9, gid=f"{kind} head {head + 1}"))
        if pitch >= 0.3:
            ax.text(left, y, f"h{head + 1}", fontsize=8, ha="center", va="center", color=_INK)


def _mask_icon(ax, center, causal):
    """A small attention mask (queries down, keys across), lower-triangular when ``causal``, with its rule."""
    x, y = center
    tint, shade = _PALETTE["stages"]
    size, cell = 5, 0.12
    left, bottom = x - size * cell / 2, y - size * cell / 2
    for query in range(size):
        for key in range(size):
            allowed = key <= query or not causal
            ax.add_patch(Rectangle((left + key * cell, bottom + (size - 1 - query) * cell), cell, cell,
                                   facecolor=shade if allowed else "white", edgecolor=tint, linewidth=0.6))
    ax.add_patch(Rectangle((left, bottom), size * cell, size * cell, facecolor="none", edgecolor=shade,
                           linewidth=1, gid="causal mask" if causal else "no mask"))
    rule = "causal mask:\nposition t sees\npositions ≤ t" if causal else "no mask: every\nposition sees\nevery other"
    _text_block(ax, (x, bottom - 0.3), "", rule, _INK)


def encoder_decoder_diagram(ax=None, n_layers: int = 2):
    """The encoder–decoder Transformer of lesson 01, as :class:`mlm_lessons.transformer.Seq2SeqTransformer`
    builds it (Vaswani et al., 2017, pre-norm).

    Left, bottom to top: source tokens -> embedding + sinusoidal positions -> ``n_layers`` encoder blocks
    (bidirectional self-attention, padding mask only) -> final LayerNorm -> the encoder output. Right: the
    target shifted right (``<bos>`` first) -> its own embedding + positions -> ``n_layers`` decoder blocks
    (causal self-attention, cross-attention, MLP) -> final LayerNorm -> linear head -> next-token logits.
    The encoder's final output feeds the cross-attention of every decoder block. Blocks have the ``gid``
    ``"encoder block i"`` and ``"decoder block i"``.

    Raises:
        ValueError: when ``n_layers`` is below 1.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be at least 1, got {n_layers}")
    pitch, first = 0.9, 3.05  # the height of a level, and of the first block
    final = first + n_layers * pitch
    ax = _canvas(ax, 11.5, final + 2.75, "The encoder–decoder Transformer (transformer.Seq2SeqTransformer)")
    encoder_x, decoder_x, width, bus = 2.7, 8.5, 2.7, 5.6
    grey, model, stack = _colors("audio"), _colors("model"), _colors("stages")
    blocks = [first + pitch * index for index in range(n_layers)]

    def column(x, boxes):
        """Boxes (title, detail, y, height, colours, name) up a column, each feeding the one above."""
        for (title, detail, y, height, colors, name), above in zip(boxes, [*boxes[1:], None]):
            _box(ax, (x, y), (width, height), title, detail, colors=colors, name=name)
            if above:
                _arrow(ax, (x, y + height / 2), (x, above[2] - above[3] / 2))

    column(encoder_x, [
        ("source tokens", "instruction + melody\n<up 3>  E4  d1  G4  d1 …", 0.95, 0.75, grey, None),
        ("token embedding", "+ sinusoidal positions", 2.0, 0.6, model, "token embedding (encoder)"),
        *[(f"encoder block {index + 1}", "self-attention (padding mask\nonly, sees everything) → MLP", y, 0.7,
           stack, None) for index, y in enumerate(blocks)],
        ("final LayerNorm", "", final, 0.45, _colors("norm"), "final LayerNorm (encoder)"),
        ("encoder output", "(source_len × d_model)", final + pitch, 0.6, model, None),
    ])
    column(decoder_x, [
        ("target, shifted right", "<bos>  G4  d1  Bb4  d1 …", 0.95, 0.75, grey, None),
        ("token embedding", "+ sinusoidal positions", 2.0, 0.6, model, "token embedding (decoder)"),
        *[(f"decoder block {index + 1}", "causal self-attention →\ncross-attention → MLP", y, 0.7, stack, None)
          for index, y in enumerate(blocks)],
        ("final LayerNorm", "", final, 0.45, _colors("norm"), "final LayerNorm (decoder)"),
        ("linear head", "d_model → vocabulary, tied\nto the token embedding", final + pitch, 0.6, model, None),
        ("next-token logits", "position t predicts token t + 1", final + 2 * pitch, 0.6, grey, None),
    ])
    # The encoder's final output, and nothing earlier, is the memory every decoder block reads.
    _arrow(ax, (encoder_x + width / 2, final + pitch), (bus, final + pitch), (bus, blocks[0]),
           (decoder_x - width / 2, blocks[0]))
    for y in blocks[1:]:
        _arrow(ax, (bus, y), (decoder_x - width / 2, y))
    _on_line(ax, (bus, final), "keys and values\nfor the cross-attention\nof every decoder block", _INK)
    for x, name, side in ((encoder_x, "encoder", -1), (decoder_x, "decoder", 1)):
        ax.add_patch(FancyBboxPatch((x - width / 2 - 0.12, first - 0.45), width + 0.24, n_layers * pitch,
                                    boxstyle="round,pad=0,rounding_size=0.12", facecolor="none",
                                    edgecolor="#9a9a9a", linestyle=(0, (4, 3)), linewidth=1))
        _text_block(ax, (x + side * (width / 2 + 0.75), first - 0.45 + n_layers * pitch / 2), name,
                    f"{n_layers} block{'s' * (n_layers > 1)}", _INK)
    ax.text(0.2, 0.22, "training: teacher forcing, every target position in one pass;  "
            "generating: one token at a time, from <bos> (lesson 02)", fontsize=_DETAIL_SIZE, style="italic",
            color="#777777", va="center")
    return ax


def autoregressive_loop_diagram(ax=None, use_cache: bool = True):
    """The generation loop of lesson 02, as :meth:`mlm_lessons.transformer.TransformerLM.generate` runs it.

    The sequence so far (prompt, then the tokens generated) -> the decoder-only model -> the logits of the
    last position -> temperature, top-k and top-p -> one sampled token, appended to the sequence; and round
    again. With ``use_cache`` a KV cache above the model holds every layer's keys and values of the past
    positions: each step writes the new position's and reads all of them, so only the new token goes
    through the model. Without it, the whole sequence goes through the model again at every step. The
    cost of a step is written beside.
    """
    title = "Generating one token at a time" + (", with a KV cache" if use_cache else ", without a cache")
    ax = _canvas(ax, 12.8, 5.0, title)
    row, loop = 2.0, 0.55
    stages = _colors("stages")

    # The sequence so far: the prompt, then what has been generated.
    _box(ax, (1.6, row), (2.4, 1.0), "sequence so far", "", colors=("white", _ARROW, _INK),
         text_at=(1.6, row + 0.25))
    for index in range(5):
        part = "audio" if index < 3 else "stages"
        ax.add_patch(Rectangle((0.75 + index * 0.34, row - 0.3), 0.3, 0.3, facecolor=_PALETTE[part][0],
                               edgecolor=_PALETTE[part][1], linewidth=0.9, gid="prompt token" if index < 3
                               else "generated token"))
        ax.text(0.9 + index * 0.34, row - 0.15, f"$x_{index + 1}$", fontsize=8, ha="center", va="center",
                color=_INK)
    ax.text(2.52, row - 0.15, "…", fontsize=_DETAIL_SIZE, ha="center", va="center", color=_INK)
    _arrow(ax, (2.8, row), (3.6, row))
    _on_line(ax, (3.2, row + 0.3), "step 1:\nthe prompt" if use_cache else "every step:\nall t tokens", _INK)
    _box(ax, (4.6, row), (2.0, 1.3), "decoder-only\nTransformer", "causal blocks, final\nLayerNorm, linear head",
         colors=stages)
    _arrow(ax, (5.6, row), (6.45, row))
    _logits(ax, (7.0, row), part="stages", label="logits for the\nlast position")
    _arrow(ax, (7.55, row), (8.2, row))
    _box(ax, (9.2, row), (2.0, 1.3), "temperature τ,\ntop-k, top-p",
         "divide by τ; keep the k\nlikeliest, or the fewest\nwith probability ≥ p", colors=_colors("model"))
    _arrow(ax, (10.2, row), (10.85, row))
    _box(ax, (11.65, row), (1.6, 1.0), "sample", "one token\n(τ = 0: argmax)", colors=_colors("model"))

    # Round again: the sampled token joins the sequence...
    _arrow(ax, (11.65, row - 0.5), (11.65, loop), (1.6, loop), (1.6, row - 0.5))
    _on_line(ax, (8.3, loop), "append the sampled token, and repeat", _INK)
    if use_cache:
        # ...and, with a cache, it is all the model needs to see: the past lives in the cache.
        _arrow(ax, (4.6, loop), (4.6, row - 0.65))
        _on_line(ax, (4.6, (loop + row - 0.65) / 2), "only the new token", _INK)
        cache = row + 1.85
        _kv_cache(ax, (4.6, cache))
        _arrow(ax, (4.15, row + 0.65), (4.15, cache - 0.55))
        ax.text(4.05, row + 1.0, "write the new\nposition's k, v", fontsize=_DETAIL_SIZE, ha="right", va="center",
                color=_INK, linespacing=1.15)
        _arrow(ax, (5.05, cache - 0.55), (5.05, row + 0.65))
        ax.text(5.15, row + 1.0, "read the k, v of\nall t positions", fontsize=_DETAIL_SIZE, va="center",
                color=_INK, linespacing=1.15)
        cost = "1 new position through every layer,\nattending to the t cached ones:\none row of attention"
    else:
        cost = "the whole prefix of t positions\nthrough every layer, again:\nt rows of attention, recomputed"
    _text_block(ax, (9.8, row + 1.85), "each step, at length t", cost, _INK)
    return ax


def _kv_cache(ax, center):
    """The KV cache: a row of keys and a row of values, one column per past position (the newest strong)."""
    x, y = center
    tint, shade = _PALETTE["stages"]
    _box(ax, center, (3.0, 1.1), "KV cache", "every layer's keys and values", colors=("white", shade, _INK),
         text_at=(x, y + 0.25))
    columns, cell = 6, 0.22
    for row, name in enumerate(("K", "V")):
        bottom = y - 0.2 - row * cell
        ax.text(x - columns * cell / 2 - 0.1, bottom + cell / 2, name, fontsize=8, ha="right", va="center",
                color=_INK)
        for column in range(columns):
            newest = column == columns - 1
            ax.add_patch(Rectangle((x - columns * cell / 2 + column * cell, bottom), cell, cell,
                                   facecolor=shade if newest else tint, edgecolor=shade, linewidth=0.8))


def gan_training_diagram(ax=None):
    """One training step of a GAN, as :func:`mlm_lessons.gan.gan_objectives` takes it: two steps in turn.

    Top, "1. discriminator step": noise ``z`` -> generator ``G`` (under ``torch.no_grad()``, so the fake
    ``G(z)`` is a constant) and real ``x`` from the data -> discriminator ``D`` -> logits on both -> D's loss,
    whose gradients update ``D`` only. Bottom, "2. generator step": ``z`` -> ``G`` -> ``D`` -> G's loss on
    ``D(G(z))``, whose gradient flows back through ``D`` (frozen: its optimiser does not step) into ``G``.
    In each panel the network that learns is drawn strong, the other grey, and the gradient path dashed
    in the learner's colour.
    """
    ax = _canvas(ax, 13.5, 6.6, "Training a GAN: two steps in turn (gan.gan_objectives)")
    generator, discriminator = _PALETTE["model"][1], _PALETTE["discriminator"][1]
    loss_colors = ("white", _LOSS, _LOSS)

    def panel(bottom, name, learner):
        ax.add_patch(FancyBboxPatch((0.15, bottom), 13.2, 2.75, boxstyle="round,pad=0,rounding_size=0.15",
                                    facecolor="#fafafa", edgecolor="#e2e2e2", linewidth=1, gid=name))
        ax.text(0.35, bottom + 2.5, name, fontsize=11, fontweight="bold", color=learner, va="center")

    def backward(*points, color):
        _arrow(ax, *points, color=color, linestyle=(0, (4, 3)))

    # 1. D learns to tell real from fake; the fake is made without a graph, so nothing reaches G.
    panel(3.3, "1. discriminator step", discriminator)
    row = 4.85
    _box(ax, (1.05, row), (1.3, 0.75), "noise z", "~ N(0, I)", colors=_colors("audio"), name="noise z (step 1)")
    _arrow(ax, (1.7, row), (2.15, row))
    _box(ax, (2.95, row), (1.6, 0.9), "generator G", "under no_grad:\nnot updated", colors=_GREYED,
         name="generator G (step 1)")
    _arrow(ax, (3.75, row), (4.1, row))
    _box(ax, (4.85, row), (1.5, 0.75), r"fake $\tilde{x} = G(z)$", "no graph: a constant", colors=_colors("audio"),
         name="fake (step 1)")
    _box(ax, (4.85, 3.85), (1.5, 0.65), "real x", "from the data", colors=_colors("audio"))
    _arrow(ax, (5.6, row), (6.25, row))
    _arrow(ax, (5.6, 3.85), (7.15, 3.85), (7.15, 4.3))
    _box(ax, (7.15, row), (1.8, 1.1), "discriminator D", "updated", colors=_colors("discriminator", "discriminator"),
         name="discriminator D (step 1)")
    _arrow(ax, (8.05, row + 0.12), (8.7, row + 0.12))
    backward((8.7, row - 0.18), (8.05, row - 0.18), color=discriminator)
    _box(ax, (9.45, row), (1.5, 0.75), r"$D(x),\ D(\tilde{x})$", "logits", colors=_colors("audio"),
         name="logits (step 1)")
    _arrow(ax, (10.2, row + 0.12), (10.65, row + 0.12))
    backward((10.65, row - 0.18), (10.2, row - 0.18), color=discriminator)
    _box(ax, (11.95, row), (2.6, 1.1), "D's loss", "hinge: max(0, 1 − D(x))\n" + r"+ max(0, 1 + D($\tilde{x}$))",
         colors=loss_colors)
    ax.text(9.45, 3.75, "- - ▸ gradients: only D's weights are updated", fontsize=_DETAIL_SIZE, color=discriminator,
            ha="center", va="center")

    # 2. G learns to fool D: the gradient passes through D, whose weights stay as they are.
    panel(0.3, "2. generator step", generator)
    row = 1.65
    _box(ax, (1.05, row), (1.3, 0.75), "noise z", "~ N(0, I)", colors=_colors("audio"), name="noise z (step 2)")
    _arrow(ax, (1.7, row), (2.15, row))
    _box(ax, (2.95, row), (1.6, 0.9), "generator G", "updated", colors=_colors("model", "model"),
         name="generator G (step 2)")
    for left, right in ((3.75, 4.1), (5.6, 6.25), (8.05, 8.7), (10.2, 10.65)):
        _arrow(ax, (left, row + 0.12), (right, row + 0.12))
        backward((right, row - 0.18), (left, row - 0.18), color=generator)
    _box(ax, (4.85, row), (1.5, 0.75), r"fake $\tilde{x} = G(z)$", "keeps its graph", colors=_colors("audio"),
         name="fake (step 2)")
    _box(ax, (7.15, row), (1.8, 1.1), "discriminator D", "frozen: not updated", colors=_GREYED,
         name="discriminator D (step 2)")
    _box(ax, (9.45, row), (1.5, 0.75), r"$D(G(z))$", "logits", colors=_colors("audio"), name="logits (step 2)")
    _box(ax, (11.95, row), (2.6, 1.1), "G's loss", r"hinge: $-D(G(z))$" + "\nno real data needed",
         colors=loss_colors)
    ax.text(6.6, 0.6, "- - ▸ gradient: flows back through D and the fake into G; only G's weights are updated",
            fontsize=_DETAIL_SIZE, color=generator, ha="center", va="center")
    return ax


def vae_diagram(ax=None, latent_dim: int = 8):
    """The variational autoencoder of lesson 04, as :class:`mlm_lessons.vae.ConvVAE` builds and trains it.

    A log-mel patch ``x`` -> encoder -> ``μ`` and ``log σ²`` (``latent_dim`` numbers each; ``gid`` ``"μ"``
    and ``"log σ²"``, one cell per number) -> ``z = μ + σ ⊙ ε``, with ``ε ~ N(0, I)`` drawn from outside
    (the reparameterisation: the gradient flows back through ``μ`` and ``σ``, never through the draw of
    ``ε``) -> decoder -> ``x̂``. The two loss terms: reconstruction ``‖x − x̂‖² / (2σ_x²)`` (``σ_x`` the
    decoder's fixed ``decoder_std``) and ``β · KL(q(z|x) ‖ N(0, I))`` in closed form; their sum is the
    negative ELBO (at ``β = 1``, up to a constant).

    Raises:
        ValueError: when ``latent_dim`` is below 1.
    """
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be at least 1, got {latent_dim}")
    ax = _canvas(ax, 14, 6.0, "A variational autoencoder (vae.ConvVAE): the reparameterisation and the ELBO")
    row, split = 3.4, 3.95  # the height of the data path; where the encoder's output splits in two
    model, latent = _colors("model"), _PALETTE["latent"][1]

    _log_mel(ax, (0.8, row), detail="x: a patch", width=1.2, part="model")
    _arrow(ax, (1.4, row), (1.85, row))
    _box(ax, (2.7, row), (1.7, 1.3), "encoder", f"strided convs (SiLU),\nlinear to 2 × {latent_dim}",
         colors=model)
    for y, name in ((row + 0.75, "μ"), (row - 0.75, "log σ²")):
        _arrow(ax, (3.55, row), (split, row), (split, y), (4.3, y))
        _vector(ax, (4.8, y), latent_dim, name)
    _text_block(ax, (4.8, row + 1.1), "", f"μ: {latent_dim} numbers", _INK)
    _text_block(ax, (4.8, row - 1.1), "", f"log σ²: {latent_dim} numbers", _INK)

    # The reparameterisation: z is a sum the gradient can pass through; the randomness enters as an input.
    _arrow(ax, (5.3, row + 0.75), (6.6, row + 0.75), (6.6, row + 0.45))
    _arrow(ax, (5.3, row - 0.75), (6.6, row - 0.75), (6.6, row - 0.45))
    ax.text(5.5, row - 0.97, "σ = exp(½ log σ²)", fontsize=_DETAIL_SIZE, va="center", color=_INK)
    _box(ax, (7.0, row), (1.8, 0.9), r"$z = \mu + \sigma \odot \varepsilon$", "reparameterisation",
         colors=_colors("latent"), name="reparameterisation")
    for y in (row + 0.6, row - 0.6):
        _arrow(ax, (6.1, row + 0.2 * np.sign(y - row)), (5.45, y), color=latent, linestyle=(0, (4, 3)))
    _text_block(ax, (4.8, row), "", "gradient flows\nback through μ and σ", latent)
    _vector(ax, (7.4, 1.75), latent_dim, "ε")
    _arrow(ax, (7.4, 1.95), (7.4, row - 0.45))
    _text_block(ax, (7.4, 1.35), "", r"$\varepsilon \sim \mathcal{N}(0, I)$", _INK)
    ax.text(7.95, 1.75, "drawn from outside, an input like x:\nno gradient flows through the draw",
            fontsize=_DETAIL_SIZE, va="center", color=latent, linespacing=1.15)
    _arrow(ax, (7.9, row), (8.3, row))
    _vector(ax, (8.8, row), latent_dim, "z")
    _text_block(ax, (8.8, row - 0.35), "", "z", _INK)
    _arrow(ax, (9.3, row), (9.75, row))
    _box(ax, (10.6, row), (1.7, 1.3), "decoder", "linear, then\ntransposed convs", colors=model)
    _arrow(ax, (11.45, row), (11.9, row))
    _log_mel(ax, (12.6, row), detail=r"$\hat{x}$: the mean", width=1.2, part="model")

    # The two terms of the loss.
    _arrow(ax, (0.8, row + 0.6), (0.8, 5.05), (12.6, 5.05), (12.6, row + 0.6), color=_LOSS, style="<|-|>",
           linestyle=(0, (4, 3)))
    _on_line(ax, (6.7, 5.05), r"reconstruction: $\|x - \hat{x}\|^2 / (2\sigma_x^2)$, with $\sigma_x$ the "
             "decoder's fixed std (decoder_std)", _LOSS)
    _arrow(ax, (split, row - 0.75), (split, 1.35), color=_LOSS, linestyle=(0, (4, 3)))
    _box(ax, (3.1, 0.9), (3.4, 0.9), "β · KL(q(z|x) ‖ N(0, I))",
         f"= β/2 · Σ (σ² + μ² − 1 − log σ²), summed\nover the {latent_dim} dimensions: exact, no sampling",
         colors=("white", _LOSS, _LOSS), name="KL")
    _text_block(ax, (11.0, 1.0), "loss = reconstruction + β · KL",
                "the negative ELBO (at β = 1, up to a constant),\nminimised over encoder and decoder together",
                _LOSS)
    return ax


def _vector(ax, center, size, name):
    """``size`` numbers as a row of cells, one inch long whatever ``size`` (``gid`` ``name``), in the latent's
    colours."""
    x, y = center
    tint, shade = _PALETTE["latent"]
    cell = 1.0 / size
    for index in range(size):
        ax.add_patch(Rectangle((x - 0.5 + index * cell, y - 0.14), cell, 0.28, facecolor=tint, edgecolor=shade,
                               linewidth=0.8 if size <= 32 else 0.3, gid=name))


def _band(ax, bottom, top, label):
    """A pale background band holding one row of the picture, named on its left."""
    ax.add_patch(FancyBboxPatch((0.15, bottom), 14.7, top - bottom,
                                boxstyle="round,pad=0,rounding_size=0.15", facecolor="#fafafa",
                                edgecolor="#e2e2e2", linewidth=1))
    ax.text(0.45, (bottom + top) / 2, label, rotation=90, fontsize=11, fontweight="bold", color="#6a6a6a",
            ha="center", va="center")


def _canvas(ax, width, height, title):
    """Hidden axes of ``width`` x ``height`` data units, titled inside at the top.

    A new figure gets ``figsize=(width, height)`` and axes that fill it, so that one unit is one inch.
    """
    if ax is None:
        ax = plt.figure(figsize=(width, height)).add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    ax.set_title(title, y=1 - 0.12 / height, va="top", pad=0, fontsize=13, fontweight="bold", color=_INK)
    return ax


def _colors(part, highlighted=None):
    """(face, edge, text) colours for a box of ``part``: its tint, or strong when it is highlighted, or
    grey when another part is."""
    tint, shade = _PALETTE[part]
    if highlighted is None:
        return tint, shade, _INK
    if part == highlighted:
        return shade, shade, "white"
    return _GREYED


def _box(ax, center, size, title, detail="", *, colors, name=None, rounding=0.1, title_size=_TITLE_SIZE,
         text_at=None):
    """A rounded box with a bold title over smaller detail lines (centred, or at ``text_at``).

    Its ``gid`` is ``name``, by default the title on one line, so that tests can find it.
    """
    face, edge, text_color = colors
    (x, y), (width, height) = center, size
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height,
                                boxstyle=f"round,pad=0,rounding_size={rounding}", facecolor=face,
                                edgecolor=edge, linewidth=1.3, gid=name or title.replace("\n", " ")))
    _text_block(ax, text_at or center, title, detail, text_color, title_size)


def _text_block(ax, xy, title, detail, color, title_size=_TITLE_SIZE):
    """A bold title over smaller detail lines, the whole block centred on ``xy``."""
    # Offsets in points rather than data units keep the lines apart at any scale of the axes.
    title_height = title_size * 1.3 * (title.count("\n") + 1) if title else 0
    detail_height = _DETAIL_SIZE * 1.3 * (detail.count("\n") + 1) if detail else 0
    top = (title_height + detail_height) / 2
    common = dict(xy=xy, textcoords="offset points", ha="center", va="top", color=color, linespacing=1.15)
    if title:
        ax.annotate(title, xytext=(0, top), fontsize=title_size, fontweight="bold", **common)
    if detail:
        ax.annotate(detail, xytext=(0, top - title_height), fontsize=_DETAIL_SIZE, **common)


def _arrow(ax, *points, color=_ARROW, style="-|>", linestyle="-", head=10):
    """An arrow along the straight segments through ``points``, its head (``head`` points) at the last.

    ``style="-"`` draws a plain line, ``"<|-|>"`` a head at both ends.
    """
    ax.add_patch(FancyArrowPatch(path=Path(points), arrowstyle=style, mutation_scale=head, color=color,
                                 linewidth=1.3, linestyle=linestyle, joinstyle="miter", capstyle="butt"))


def _on_line(ax, xy, text, color):
    """A label sitting on a line, with a white background that cuts the line where the text is."""
    ax.text(*xy, text, fontsize=_DETAIL_SIZE, color=color, ha="center", va="center",
            bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none"))
