"""``make demo``: the course's MusicLM, text in and music out, from a fresh clone on a CPU.

The demo is the whole course on one page. It loads the tiny pipeline shipped in ``data/checkpoints/`` (six
parts, a few MB, remade by ``python -m mlm_lessons train --stage all``), asks it for a handful of clips
described in words, and writes what a class needs to listen and look: a wav per prompt, the spectrograms in
one PNG, the prompts as text, and an ``index.html`` that plays them.

A generated clip alone says little: is that a violin? is it calm? So beside each one the page puts a
**reference**: a SynthCaps clip that lesson 00's synthesiser renders from the attributes the prompt names
(lead instrument, mood, tempo, backing). It is what the prompt asks for, in the kind of clip the model learnt
from, and the listener compares the two.

This file is read top to bottom like the demo runs:

1. **Prompts.** :data:`DEMO_PROMPTS` pairs each text with the attribute choices of its reference
   (``synth.sample_attributes(rng, **choices)``), spread over lead instruments and all six moods. A prompt of
   your own, given as bare text, gets its choices from its words (:func:`choices_from_text`); one that names
   no instrument the synthesiser plays gets no reference rather than a random clip posing as one.
2. **Generation.** All prompts go to :meth:`~mlm_lessons.pipeline.MusicLM.generate` in one batch (each step of
   each stage runs for every prompt at once) with one seed, so the same call makes the same page.
3. **References**, rendered at the length the pipeline made (it rounds to whole semantic frames) so the two
   columns line up, and a rough score: how often MuLan picks a clip's own prompt (:func:`mulan_agreement`).
4. **Files.** Each is written atomically, the page last, so a page never names a clip that is not there.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")  # headless: the demo writes files, it never opens a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from mlm_lessons import audio, captions, synth, viz  # noqa: E402
from mlm_lessons.atomic import atomic_path  # noqa: E402

# ----------------------------------------------------------------------------------------------------
# 1. Prompts

#: A prompt and the attribute choices of its reference (keyword arguments of :func:`synth.sample_attributes`).
DemoPrompt = tuple[str, dict]

#: The demo's prompts: MusicCaps-style sentences like the captions the model trained on, over eight lead
#: instruments and all six moods. Each text says what its choices fix, and a tempo word only where the mood or
#: ``tempo_bpm`` settles the tempo, so its reference is what it asks for (``tests/test_demo.py`` checks).
DEMO_PROMPTS: tuple[DemoPrompt, ...] = (
    ("a calming violin melody backed by a distorted guitar riff",
     dict(lead="violin", mood="calming", backing=("riff",), backing_instrument="distorted electric guitar")),
    ("an energetic trumpet tune at a fast tempo, with a bass line and drums",
     dict(lead="trumpet", mood="energetic", backing=("bass", "drums"))),
    ("a sad piano melody in a minor key, accompanied by a warm synth pad",
     dict(lead="piano", mood="sad", mode="minor", backing=("pad",))),
    ("a happy flute melody at a medium tempo, accompanied by a bass line and drums",
     dict(lead="flute", mood="happy", tempo_bpm=104, backing=("bass", "drums"))),
    ("a mysterious organ melody over a soft pad holding the chords",
     dict(lead="organ", mood="mysterious", backing=("pad",))),
    ("an aggressive synth lead melody backed by a distorted guitar riff and drums",
     dict(lead="synth lead", mood="aggressive", backing=("riff", "drums"),
          backing_instrument="distorted electric guitar")),
    ("a calming acoustic guitar melody played solo, with no other instruments",
     dict(lead="acoustic guitar", mood="calming", backing=())),
    ("a happy marimba tune at a fast tempo, with drums",
     dict(lead="marimba", mood="happy", tempo_bpm=144, backing=("drums",))),
)


def _first_mention(text: str, names: dict[str, Sequence[str]]) -> str | None:
    """The key of ``names`` whose words occur first in ``text`` as whole words (``fast`` is not in
    ``breakfast``), or ``None``."""
    found = [(match.start(), key) for key, words in names.items() for word in words
             if (match := re.search(rf"\b{re.escape(word)}\b", text))]
    return min(found)[1] if found else None


def choices_from_text(text: str) -> dict | None:
    """The attribute choices a free prompt names in SynthCaps' words, for its reference: the lead (the
    instrument named first, under any name captions use, e.g. ``"distorted guitar"``), the mood (or a synonym:
    ``"soothing"``), a tempo word (``"fast"``, ``"mid-tempo"``: the middle of its bpm range) and ``"major"`` or
    ``"minor"``. What it does not name is left to :func:`synth.sample_attributes`.

    Returns ``None`` when no lead instrument is named: a reference drawn at random would pose as the prompt.
    """
    text = text.lower()
    lead = _first_mention(text, captions.LEAD_NAMES)
    if lead is None:
        return None
    choices: dict = {"lead": lead}
    if (mood := _first_mention(text, captions.MOOD_WORDS)) is not None:
        choices["mood"] = mood
    if (tempo := _first_mention(text, captions.TEMPO_MARKERS)) is not None:
        choices["tempo_bpm"] = sum(synth.TEMPO_RANGES[tempo]) // 2
    if (mode := _first_mention(text, {"major": ("major",), "minor": ("minor",)})) is not None:
        choices["mode"] = mode
    return choices


def _check_prompts(prompts) -> list[tuple[str, dict | None]]:
    """``prompts`` as ``(text, choices or None)`` pairs, every choice checked, before a minute of generating.

    Raises:
        ValueError: no prompts, a prompt that is not text or is blank, or choices the synthesiser refuses.
    """
    if prompts is None:
        return [(text, dict(choices)) for text, choices in DEMO_PROMPTS]
    if isinstance(prompts, str) or (isinstance(prompts, tuple) and len(prompts) == 2 and isinstance(prompts[1], dict)):
        prompts = [prompts]                           # one prompt, not a sequence of one-letter prompts
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts: give at least one description of the music, e.g. 'a calming violin melody' "
                         "(or none at all for the demo's own)")
    checked = []
    for index, prompt in enumerate(prompts):
        pair = isinstance(prompt, (tuple, list)) and len(prompt) == 2
        text, choices = prompt if pair else (prompt, None)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt {index} must be a description in words (or a (text, attribute choices) "
                             f"pair), got {prompt!r}")
        if not pair:
            choices = choices_from_text(text)
        elif choices is not None:
            if not isinstance(choices, dict):
                raise ValueError(f"prompt {index}'s attribute choices must be a dict such as {{'lead': 'violin'}}, "
                                 f"got {choices!r}")
            try:
                synth.sample_attributes(np.random.default_rng(0), **choices)
            except ValueError as err:
                raise ValueError(f"prompt {index}'s attribute choices: {err}") from None
        checked.append((text, choices))
    return checked


def _check_seconds_and_seed(seconds, seed) -> tuple[float, int]:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds <= 0:
        raise ValueError(f"seconds must be a length of music above 0, got {seconds!r}")
    # numpy's generators, which render the references, take no negative seed.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    return float(seconds), int(seed)


def _load_pipeline(pipeline):
    """The MusicLM to use, and how the page names it."""
    from mlm_lessons import pipeline as pipelines  # the six parts load only when a demo runs, not on import

    if pipeline is None:
        return pipelines.shipped_pipeline(), "the tiny pipeline shipped in data/checkpoints/"
    if isinstance(pipeline, pipelines.MusicLM):
        return pipeline, "the MusicLM given to the demo"
    if isinstance(pipeline, (str, os.PathLike)):
        return pipelines.MusicLM.load(pipeline), f"the pipeline in {pipeline}"
    raise ValueError(f"pipeline must be a MusicLM, a pipeline folder (train --stage all writes OUT/pipeline) or "
                     f"None for the shipped one, got a {type(pipeline).__name__}")


# ----------------------------------------------------------------------------------------------------
# 2-4. The demo


class DemoClip(NamedTuple):
    """One row of the page: a prompt, its generated clip and its reference (``None`` for a prompt without)."""

    prompt: str
    generated_file: str
    generated: torch.Tensor                     # (samples,) float32
    reference_file: str | None = None
    reference: np.ndarray | None = None         # (samples,) float32
    reference_attributes: synth.SynthAttributes | None = None


def write_demo(out_dir: str | os.PathLike = "data/demo", prompts: Sequence[str | DemoPrompt] | None = None,
               seconds: float = 4.0, seed: int = 0, pipeline=None, progress: bool = True) -> Path:
    """Generate a clip per prompt, render its reference, and write both with spectrograms and a page.

    Args:
        out_dir: folder for ``generated-NN.wav``, ``reference-NN.wav``, ``spectrograms.png``, ``prompts.tsv``
            and ``index.html`` (made if missing; an earlier demo's files of those names are replaced).
        prompts: texts, or ``(text, attribute choices)`` pairs; ``None``: :data:`DEMO_PROMPTS`. A bare text's
            reference is rendered from the words it uses (:func:`choices_from_text`).
        seconds: length of each clip (the pipeline rounds it to whole semantic frames, 0.04 s).
        seed: the same prompts, seconds, seed and pipeline make the same files.
        pipeline: a :class:`~mlm_lessons.pipeline.MusicLM`, a pipeline folder, or ``None`` for the shipped one.
        progress: show a progress bar on stderr. Nothing is printed.

    Returns:
        the path of ``index.html``.

    Raises:
        ValueError: no prompts, a blank one, ``seconds`` <= 0 (or beyond the pipeline's limit), a negative
            ``seed``, a prompt MuLan cannot read, or a missing or damaged pipeline
            (:class:`~mlm_lessons.pipeline.PipelineError`).
        OSError: ``out_dir`` cannot be made or written (e.g. it is a file), before anything is generated.
    """
    prompts = _check_prompts(prompts)
    seconds, seed = _check_seconds_and_seed(seconds, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Four steps of very different lengths: elapsed time, no rate or estimate (it would be wrong).
    with tqdm(total=4, disable=not progress, desc="demo: loading the pipeline",
              bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]") as bar:
        model, source = _load_pipeline(pipeline)
        bar.update()

        bar.set_description(f"demo: generating {len(prompts)} clips of {seconds:g} s in one batch")
        generated = model.generate([text for text, _ in prompts], seconds=seconds, seed=seed,
                                   batch_size=len(prompts))
        # A 16-bit wav cannot hold a sample beyond +-1 (libsndfile clips or wraps it); the codec seldom overshoots.
        generated = generated.clamp(-1.0, 1.0)
        sample_rate, samples = model.sample_rate, generated.shape[1]
        bar.update()

        bar.set_description("demo: rendering the references")
        # One generator for every reference's attributes, as for a SynthCaps dataset: same seed, same page.
        rng = np.random.default_rng(seed)
        clips = []
        for index, ((text, choices), wave) in enumerate(zip(prompts, generated)):
            clip = DemoClip(text, f"generated-{index:02d}.wav", wave)
            audio.save_audio(out_dir / clip.generated_file, wave, sample_rate)
            if choices is not None:
                attrs = synth.sample_attributes(rng, **choices)
                reference = synth.render(attrs, samples / sample_rate, sample_rate, seed=seed * 1_000 + index)
                clip = clip._replace(reference_file=f"reference-{index:02d}.wav", reference=reference,
                                     reference_attributes=attrs)
                audio.save_audio(out_dir / clip.reference_file, reference, sample_rate)
            clips.append(clip)
        agreement = mulan_agreement(model, clips)
        bar.update()

        bar.set_description("demo: drawing the spectrograms")
        _write_spectrograms(out_dir / "spectrograms.png", clips, sample_rate)
        with atomic_path(out_dir / "prompts.tsv") as tmp:
            tmp.write_text(_tsv(clips), encoding="utf-8")
        page = out_dir / "index.html"
        with atomic_path(page) as tmp:
            tmp.write_text(_page(clips, model, source, agreement, seconds=samples / sample_rate, seed=seed),
                           encoding="utf-8")
        bar.update()
    return page


def mulan_agreement(model, clips: Sequence[DemoClip]) -> dict[str, tuple[int, int]] | None:
    """How often MuLan, given a clip, picks that clip's own prompt among the demo's prompts: ``{"generated":
    (right, clips), "reference": (right, clips)}`` (the paper's MuLan cycle consistency, as a count). ``None``
    with fewer than two prompts (nothing to pick between) or clips shorter than one MuLan spectrogram frame."""
    if len(clips) < 2 or len(clips[0].generated) < model.mulan.features.n_fft:
        return None
    columns = {"generated": [(index, clip.generated) for index, clip in enumerate(clips)],
               "reference": [(index, torch.as_tensor(clip.reference)) for index, clip in enumerate(clips)
                             if clip.reference is not None]}
    texts = model.mulan.embed_text([clip.prompt for clip in clips])
    agreement = {}
    for column, pairs in columns.items():
        if pairs:
            own = torch.tensor([index for index, _ in pairs])
            picked = (model.mulan.embed_audio(torch.stack([wave for _, wave in pairs])) @ texts.T).argmax(1).cpu()
            agreement[column] = (int((picked == own).sum()), len(pairs))
    return agreement


def _one_line(text: str) -> str:
    """A prompt on one line with single spaces: a tab or newline in it would break the TSV's columns."""
    return " ".join(text.split())


def _describe(attrs: synth.SynthAttributes) -> str:
    """What a reference is made of, in one line: ``violin lead, distorted electric guitar riff, 72 bpm ...``."""
    backing = [f"{attrs.backing_instrument} riff" if part == "riff" else part for part in attrs.backing]
    lead = attrs.lead if attrs.lead.endswith("lead") else f"{attrs.lead} lead"       # not "synth lead lead"
    return ", ".join([lead, *(backing or ["solo"]), f"{attrs.tempo_bpm} bpm ({attrs.tempo_category})",
                      f"{attrs.key} {attrs.mode}", attrs.mood, attrs.loudness])


def _tsv(clips: Sequence[DemoClip]) -> str:
    rows = ["generated\treference\treference attributes\tprompt"]
    rows += ["\t".join((clip.generated_file, clip.reference_file or "",
                        _describe(clip.reference_attributes) if clip.reference_attributes else "",
                        _one_line(clip.prompt))) for clip in clips]
    return "\n".join(rows) + "\n"


def _write_spectrograms(path: Path, clips: Sequence[DemoClip], sample_rate: int) -> None:
    """One PNG, a row per prompt: the reference on the left, the generated clip on the right."""
    height = 2.4 * len(clips) + 0.5
    fig, axes = plt.subplots(len(clips), 2, figsize=(12, height), squeeze=False)
    for index, (row, clip) in enumerate(zip(axes, clips)):
        if clip.reference is None:
            row[0].axis("off")
            row[0].text(0.5, 0.5, "no reference: the prompt names no instrument\nthe synthesiser plays",
                        ha="center", va="center", fontsize=9)
        else:
            viz.plot_spectrogram(clip.reference, sample_rate, ax=row[0])
        # The prompt goes over the left column only, shortened: a title wider than its column runs into the next.
        text = _one_line(clip.prompt)
        row[0].set_title(f"{index:02d}. {text if len(text) <= 72 else text[:69] + '...'}", fontsize=9, loc="left")
        viz.plot_spectrogram(clip.generated, sample_rate, ax=row[1])
        row[1].set_title(clip.generated_file, fontsize=9, loc="left")
    fig.suptitle("left: the reference, rendered by the synthesiser        right: generated by MusicLM", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))          # leave the suptitle its own strip
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=64, format="png")      # noisy spectrograms compress badly: keep the PNG near 1 MB
    plt.close(fig)


def _player(file: str) -> str:
    return f'<audio controls preload="none" src="{html.escape(file)}"></audio>'


def _page(clips: Sequence[DemoClip], model, source: str, agreement, seconds: float, seed: int) -> str:
    """``index.html``: the prompts with two players each, how well they agree, what to listen for, what the model
    can and cannot do, and how to make your own."""
    config, tokens = model.config, model.config.tokens
    kbps = tokens.soundstream_frame_rate * tokens.rvq_levels * math.log2(tokens.codebook_size) / 1_000
    parts = (model.codec, model.semantic_tokenizer.encoder, model.mulan, *model.stages.values())
    millions = sum(weights.numel() for part in parts for weights in part.parameters()) / 1e6
    rows = []
    for clip in clips:
        if clip.reference is None:
            reference = "<td class=none>no reference: the prompt names no instrument the synthesiser plays</td>"
        else:
            reference = (f"<td>{_player(clip.reference_file)}<br>"
                         f"<small>{html.escape(_describe(clip.reference_attributes))}</small></td>")
        rows.append(f"<tr><td>{html.escape(clip.prompt)}</td>{reference}<td>{_player(clip.generated_file)}</td></tr>")
    judged = ""
    if agreement:
        right, total = agreement["generated"]
        judged = (f"<p><b>Did it follow the prompts?</b> Given each generated clip, MuLan (the pipeline's own model "
                  f"of text and music) picks the right one of these {len(clips)} prompts for {right} of {total}")
        if "reference" in agreement:
            judged += " clips, and for {} of {} references".format(*agreement["reference"])
        judged += (f"; by chance it would for about 1 in {len(clips)}. A rough judge, and not an independent one: "
                   "the stages were conditioned on this MuLan. Your ears decide.</p>")
    return f"""<!doctype html>
<html lang="en"><meta charset="utf-8"><title>MusicLM demo</title>
<style>
body {{ font-family: sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; }} td, th {{ border-top: 1px solid #ccc; padding: .5em; vertical-align: top; }}
th {{ text-align: left; }} td.none, small {{ color: #666; }} pre {{ background: #f4f4f4; padding: .6em; }}
</style>
<h1>MusicLM: music from text, on a CPU</h1>
<p>Each row is a prompt. <b>Generated</b> is what {html.escape(source)} made from the words alone: MuLan
turned them into tokens, the semantic, coarse and fine stages wrote the music as tokens, and the SoundStream
decoder turned those into sound ({seconds:g} s per clip, seed {seed}). <b>Reference</b> is what the prompt
asks for, rendered by the course's synthesiser from the attributes listed under it: the kind of clip the
model learnt from. Play the reference, then the generated clip.</p>
<table>
<tr><th>prompt</th><th>reference (synthesiser)</th><th>generated (MusicLM)</th></tr>
{chr(10).join(rows)}
</table>
{judged}
<h2>What to listen for</h2>
<ul>
<li><b>Pace and mood</b>: calming and sad prompts ask for slow, soft music; energetic, happy and aggressive
ones for faster, louder, busier music. In the spectrograms, drums are vertical stripes and held notes
horizontal lines.</li>
<li><b>The lead instrument</b>: a bowed violin, a breathy flute, a plucked guitar, a brassy trumpet, the
knock of a marimba, the buzz of a synth lead.</li>
<li><b>The backing</b>: a bass, a riff, a pad, drums, or the lead alone, as the prompt says.</li>
</ul>

<h2>What this model can and cannot do</h2>
<p>This is the course's <i>{html.escape(config.name)}</i> MusicLM: its six parts hold {millions:.1f} million
parameters in all and were trained in hours on a CPU, on {config.data.clip_seconds:g}-second synthetic
SynthCaps clips whose captions use a small vocabulary: ten instruments, six moods, tempo, key and backing.
It follows prompts in those words some of the time and in some respects, and misses others: another seed
gives another try. It cannot sing, nor follow words it never read (jazz, saxophone, a choir); its melodies
wander after a few seconds rather than return to a theme; and it sounds only as good as its codec, {tokens.rvq_levels}
levels of {tokens.codebook_size} codes ({kbps:g} kbit/s) at {model.sample_rate / 1000:g} kHz, hence the
grainy, muffled tone of even its best clips. The paper's MusicLM is hundreds of times bigger and learnt
from 280,000 hours of real music.</p>

<h2>Make your own</h2>
<pre>python -m mlm_lessons generate "a sad piano melody at a slow tempo" --out clip.wav
python -m mlm_lessons demo --prompt "a happy flute melody" --prompt "an aggressive organ riff" --seed 1
python -m mlm_lessons train --stage all --out runs/mine      # every part again: hours on a CPU
python -m mlm_lessons demo --pipeline runs/mine/pipeline</pre>
<p>A prompt of your own gets a reference made from the instrument, mood, tempo and key words it uses.</p>

<h2>Spectrograms</h2>
<p>A row per prompt: the reference on the left, the generated clip on the right; time runs across,
frequency up. Harmonics stack as parallel lines, a note's start is a bright edge, noise is an even haze.</p>
<img src="spectrograms.png" alt="spectrograms of every reference and generated clip" style="max-width:100%">
</html>
"""
