"""MuLan (lesson 07) on held-out SynthCaps: retrieval, zero-shot tagging, and the cost of a training step.

    python bench/bench_mulan.py [--checkpoint data/checkpoints/mulan-tiny.pt] [--galleries 3] [--skip-timing]
        [--tiny-steps 5] [--small-steps 2] [--small-batch 0] [--threads 1]

Every figure stands beside a baseline measured in the same run. Nothing is asserted.

1. **Retrieval on held-out galleries.** ``--galleries`` galleries of 100 SynthCaps clips that no model was
   trained on (training data is planned with seed 0; gallery ``g`` is ``plan_synthcaps(100, seed=g)`` for
   ``g = 1, 2, 3``, rendered in memory by ``render_planned(planned, 4.0, 16000)``), each clip paired with its
   own caption. Audio is embedded with ``model.embed_audio`` in chunks of 50, captions with ``model.embed_text``;
   the similarity is ``text @ audio.T``. Reported per gallery and as the mean over galleries: text->audio
   recall@1 and recall@10 and audio->text recall@1 (:func:`mlm_lessons.mulan.recall_at_k`); chance is k / 100.
2. **Zero-shot tagging** of the same clips (300 by default; :func:`mlm_lessons.mulan.zero_shot_classify`, in
   chunks of 50 clips): the lead instrument among ``synth.INSTRUMENTS`` with the template "a {} melody" and with
   the ensemble ["a {} melody", "{}", "a song led by a {}"] (chance 10%), and the mood among ``synth.MOODS``
   with "a {} song" (chance 1/6). Galleries balance leads and moods, so chance is also the majority baseline.
3. **The baseline** of tables 1 and 2: an untrained MuLan of the checkpoint's configuration and tokenizer
   (``torch.manual_seed(0)``, then the ``MuLan`` constructor with the loaded model's settings), scored on the
   same clips with the same prompts. Ratios are trained / untrained (> 1: training helped) and trained / chance.
4. **Training step time** (skip with ``--skip-timing``) at the ``tiny`` and ``small`` presets
   (``MuLan.from_config``; ``small`` uses the default :class:`~mlm_lessons.config.MuLanConfig`): a tokenizer
   trained on the training texts of the batch's clips (``CaptionTokenizer.train(texts, mulan.vocab_size)`` on
   ``mulan.training_texts``: SynthCaps' wording saturates at about 580 subwords, as in a run without the
   MusicCaps captions, below the presets' 2,000), a batch of ``mulan.crop_seconds`` SynthCaps clips (planned
   with seed 4) rendered at 16 kHz with their captions, and steps as the trainer runs them: ``loss, metrics =
   model(audio, captions)``, backward, AdamW step. Two untimed warm-up steps, then ``--tiny-steps`` /
   ``--small-steps`` timed steps; the table gives the median. The ``tiny`` step also runs under
   ``torch.autocast("cpu", dtype=torch.bfloat16)`` on a second fresh model, the two taking turns step by step
   so both see the same machine load. The baseline is tiny in float32: the last column is seconds per clip
   over tiny float32's (for bf16, its step time over float32's: < 1 is faster). ``small`` runs at its preset
   batch (64) unless ``--small-batch`` says otherwise.

Targets (printed at the end, met or NOT met): mean text->audio recall@1 >= 0.5; zero-shot instrument accuracy
>= 80% (the better of the two instrument templates, named).

The checkpoint is made by

    python -m mlm_lessons train --preset tiny --stage mulan --num-clips 2400 --steps 3000 --out runs/mulan-tiny \\
        --export data/checkpoints/mulan-tiny.pt

Without it the bench says so, skips tables 1 to 3 and runs table 4 (its targets read "not measured").
Run time on 2 shared CPU cores, one thread: about a minute (30 s of it table 4; --skip-timing leaves 30 s).
"""

import os

# Pin the math libraries before torch loads them; --threads sets torch's own limit below.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from timing import median_step_seconds  # noqa: E402

from mlm_lessons import datasets, mulan, runtime, synth  # noqa: E402
from mlm_lessons.config import get_preset  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPOSITORY / "data/checkpoints/mulan-tiny.pt"
TRAIN_COMMAND = ("python -m mlm_lessons train --preset tiny --stage mulan --num-clips 2400 --steps 3000 "
                 "--out runs/mulan-tiny --export data/checkpoints/mulan-tiny.pt")
GALLERY_SIZE = 100
GALLERY_SECONDS = 4.0
CHUNK = 50                                  # clips per embed_audio call
INSTRUMENT_TEMPLATES = {"a {} melody": "a {} melody",
                        "ensemble of 3": ["a {} melody", "{}", "a song led by a {}"]}
MOOD_TEMPLATE = "a {} song"
RECALL_TARGET = 0.5
INSTRUMENT_TARGET = 0.8
TIMING_WARMUP = 2


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:7.1f}x" if baseline > 0 else f"{'-':>8s}"


# ----------------------------------------------------------------------------------------------------
# 1-3. Quality on held-out galleries


def render_galleries(count: int, sample_rate: int) -> list[dict]:
    """``count`` held-out galleries: ``{"seed", "audio" (100, samples), "captions", "leads", "moods"}``."""
    galleries = []
    for seed in range(1, count + 1):
        planned = datasets.plan_synthcaps(GALLERY_SIZE, seed)
        galleries.append({
            "seed": seed,
            "audio": datasets.render_planned(planned, GALLERY_SECONDS, sample_rate),
            "captions": [clip.caption for clip in planned],
            "leads": torch.tensor([synth.INSTRUMENTS.index(clip.attributes.lead) for clip in planned]),
            "moods": torch.tensor([synth.MOODS.index(clip.attributes.mood) for clip in planned]),
        })
    return galleries


def embed_audio(model: mulan.MuLan, audio: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.embed_audio(audio[start:start + CHUNK]) for start in range(0, len(audio), CHUNK)])


def retrieval(model: mulan.MuLan, gallery: dict) -> dict[str, float]:
    similarity = model.embed_text(gallery["captions"]) @ embed_audio(model, gallery["audio"]).T   # (text, audio)
    return {"text->audio R@1": mulan.recall_at_k(similarity, 1),
            "text->audio R@10": mulan.recall_at_k(similarity, 10),
            "audio->text R@1": mulan.recall_at_k(similarity.T, 1)}


CHANCE = {"text->audio R@1": 1 / GALLERY_SIZE, "text->audio R@10": 10 / GALLERY_SIZE,
          "audio->text R@1": 1 / GALLERY_SIZE}


def zero_shot(model: mulan.MuLan, audio: torch.Tensor, names, template) -> torch.Tensor:
    """Predicted class indices ``(clips,)``, classifying ``CHUNK`` clips at a time."""
    return torch.cat([mulan.zero_shot_classify(model, audio[start:start + CHUNK], list(names), template)[0]
                      for start in range(0, len(audio), CHUNK)])


def zero_shot_tasks(model: mulan.MuLan, audio: torch.Tensor, leads: torch.Tensor, moods: torch.Tensor) -> dict:
    """``{row name: (accuracy, chance, predictions, truth)}``."""
    rows = {}
    for name, template in INSTRUMENT_TEMPLATES.items():
        predictions = zero_shot(model, audio, synth.INSTRUMENTS, template)
        rows[f"instrument, {name}"] = (float((predictions == leads).float().mean()), 1 / len(synth.INSTRUMENTS),
                                       predictions, leads)
    predictions = zero_shot(model, audio, synth.MOODS, MOOD_TEMPLATE)
    rows[f"mood, {MOOD_TEMPLATE}"] = (float((predictions == moods).float().mean()), 1 / len(synth.MOODS),
                                      predictions, moods)
    return rows


def quality_tables(model: mulan.MuLan, untrained: mulan.MuLan, galleries: list[dict]) -> dict:
    """Print tables 1 and 2 (with table 3's untrained baseline beside each figure); return the targets' figures."""
    began = time.perf_counter()
    scores = {"trained": [retrieval(model, gallery) for gallery in galleries],
              "untrained": [retrieval(untrained, gallery) for gallery in galleries]}
    print(f"\n1. Text-audio retrieval in held-out galleries of {GALLERY_SIZE} clips, each clip against its own "
          f"caption ({time.perf_counter() - began:.1f} s for both models)")
    line = (f"{'gallery':18s} {'metric':17s} | {'trained':>7s} {'untrained':>9s} {'chance':>6s} | "
            f"{'/ untrained':>11s} {'/ chance':>8s}")
    print(line)
    print("-" * len(line))
    means = {}
    names = list(CHANCE)
    rows = [(f"seed {gallery['seed']}", index) for index, gallery in enumerate(galleries)] + [
        (f"mean of {len(galleries)}", None)]
    for label, index in rows:
        for metric in names:
            if index is None:
                trained = statistics.fmean(score[metric] for score in scores["trained"])
                base = statistics.fmean(score[metric] for score in scores["untrained"])
                means[metric] = trained
            else:
                trained, base = scores["trained"][index][metric], scores["untrained"][index][metric]
            print(f"{label if metric == names[0] else '':18s} {metric:17s} | {trained:7.3f} {base:9.3f} "
                  f"{CHANCE[metric]:6.3f} | {ratio(trained, base):>11s} {ratio(trained, CHANCE[metric]):>8s}")

    began = time.perf_counter()
    audio = torch.cat([gallery["audio"] for gallery in galleries])
    leads = torch.cat([gallery["leads"] for gallery in galleries])
    moods = torch.cat([gallery["moods"] for gallery in galleries])
    trained_rows = zero_shot_tasks(model, audio, leads, moods)
    untrained_rows = zero_shot_tasks(untrained, audio, leads, moods)
    print(f"\n2. Zero-shot tagging of the same {len(audio)} clips: accuracy of the class whose prompt is most "
          f"similar ({time.perf_counter() - began:.1f} s for both models)")
    line = (f"{'task, template':36s} | {'trained':>7s} {'untrained':>9s} {'chance':>6s} | "
            f"{'/ untrained':>11s} {'/ chance':>8s}")
    print(line)
    print("-" * len(line))
    for name, (accuracy, chance, _, _) in trained_rows.items():
        base = untrained_rows[name][0]
        print(f"{name:36s} | {accuracy:7.1%} {base:9.1%} {chance:6.1%} | {ratio(accuracy, base):>11s} "
              f"{ratio(accuracy, chance):>8s}")
    instrument_rows = {name: row for name, row in trained_rows.items() if name.startswith("instrument")}
    best = max(instrument_rows, key=lambda name: instrument_rows[name][0])
    _, _, predictions, truth = instrument_rows[best]
    per_class = ", ".join(f"{instrument} {float((predictions[truth == index] == index).float().mean()):.0%}"
                          for index, instrument in enumerate(synth.INSTRUMENTS))
    print(f"trained, per lead instrument ({best.removeprefix('instrument, ')}): {per_class}")
    return {"recall": means["text->audio R@1"], "instrument": instrument_rows[best][0],
            "instrument_template": best.removeprefix("instrument, ")}


# ----------------------------------------------------------------------------------------------------
# 4. Training step time


def training_step(preset_name: str, batch: int, bf16: bool):
    """A fresh MuLan of the preset, and a function running one training step of it on a fixed batch."""
    config = get_preset(preset_name)
    planned = datasets.plan_synthcaps(batch, seed=4)
    captions = [clip.caption for clip in planned]
    texts = [text for clip in planned for text in mulan.training_texts(clip, config.mulan)]
    tokenizer = mulan.CaptionTokenizer.train(texts, config.mulan.vocab_size)
    torch.manual_seed(config.train.seed)
    model = mulan.MuLan.from_config(config, tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.mulan.learning_rate,
                                  weight_decay=config.train.weight_decay)
    audio = datasets.render_planned(planned, config.mulan.crop_seconds, config.data.sample_rate)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss, _ = model(audio, captions)
        loss.backward()
        optimizer.step()

    shapes = {"parameters": sum(parameter.numel() for parameter in model.parameters()),
              "crop_seconds": audio.shape[-1] / config.data.sample_rate, "vocab": tokenizer.vocab_size,
              "n_mels": config.features.n_mels}
    return step, shapes


def timing_table(tiny_steps: int, small_steps: int, small_batch: int) -> None:
    began = time.perf_counter()
    tiny_batch = get_preset("tiny").mulan.batch_size
    small_own = get_preset("small").mulan.batch_size
    small_batch = small_batch or small_own
    tiny_fp32, tiny_shapes = training_step("tiny", tiny_batch, bf16=False)
    tiny_bf16, _ = training_step("tiny", tiny_batch, bf16=True)
    tiny = median_step_seconds({"fp32": tiny_fp32, "bf16": tiny_bf16}, tiny_steps, TIMING_WARMUP)
    small_fp32, small_shapes = training_step("small", small_batch, bf16=False)
    small = median_step_seconds({"fp32": small_fp32}, small_steps, TIMING_WARMUP)

    print(f"\n4. One MuLan training step (forward + symmetric InfoNCE + backward + AdamW) on CPU, median of "
          f"{tiny_steps} (tiny) / {small_steps} (small) timed steps after {TIMING_WARMUP} warm-up steps "
          f"({time.perf_counter() - began:.0f} s)")
    line = (f"{'preset':14s} {'params':>7s} {'vocab':>5s} {'mels':>4s} {'batch':>5s} {'crop s':>6s} | "
            f"{'s/step':>7s} {'clips/s':>7s} {'audio s/s':>9s} | {'/ tiny fp32':>11s}")
    print(line)
    print("-" * len(line))
    baseline_per_clip = tiny["fp32"] / tiny_batch
    rows = [("tiny, fp32", tiny_shapes, tiny_batch, tiny["fp32"]),
            ("tiny, bf16", tiny_shapes, tiny_batch, tiny["bf16"]),
            ("small, fp32", small_shapes, small_batch, small["fp32"])]
    for name, shapes, batch, seconds in rows:
        print(f"{name:14s} {shapes['parameters'] / 1e6:6.2f}M {shapes['vocab']:5d} {shapes['n_mels']:4d} {batch:5d} "
              f"{shapes['crop_seconds']:6.1f} | {seconds:7.3f} {batch / seconds:7.1f} "
              f"{batch * shapes['crop_seconds'] / seconds:9.1f} | {seconds / batch / baseline_per_clip:10.2f}x"
              + (f"   (preset batch {small_own})" if name.startswith("small") and batch != small_own else ""))
    print("params: every trainable parameter (the token quantiser's codebooks are buffers); vocab: the tokenizer's, "
          "trained on the batch's training texts (the preset allows up to its vocab_size); mels: log-mel bands; "
          "/ tiny fp32: seconds per clip over tiny float32's (for bf16 this is its step time over float32's, "
          "< 1: faster).")


# ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="an exported MuLan (MuLan.save)")
    parser.add_argument("--galleries", type=int, default=3,
                        help=f"held-out galleries of {GALLERY_SIZE} clips, planned with seeds 1, 2, ...")
    parser.add_argument("--skip-timing", action="store_true", help="skip table 4 (training step time)")
    parser.add_argument("--tiny-steps", type=int, default=5, help="timed tiny steps (fp32 and bf16 each)")
    parser.add_argument("--small-steps", type=int, default=2, help="timed small steps")
    parser.add_argument("--small-batch", type=int, default=0,
                        help="clips per small step; 0 uses the preset's mulan.batch_size (64)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.galleries < 1:
        parser.error("--galleries must be at least 1")
    runtime.seed_and_threads(0, args.threads)
    started = time.perf_counter()
    print(f"machine: {os.cpu_count()} core(s), {platform.machine()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > (os.cpu_count() or 1) - args.threads + 0.5:
        print(f"load average {load:.1f} before starting: other processes compete for the cores, so times are "
              "inflated (trained and untrained, tiny and small alike)")

    figures = None
    if not args.checkpoint.is_file():
        print(f"error: no MuLan checkpoint at {shown(args.checkpoint)}. Make one with\n    {TRAIN_COMMAND}\n"
              "or pass --checkpoint PATH. Skipping tables 1 to 3 (retrieval and zero-shot tagging).", file=sys.stderr)
    else:
        model = mulan.MuLan.load(args.checkpoint)
        torch.manual_seed(0)
        untrained = mulan.MuLan(model.tokenizer, model.sample_rate, model.features, model.config, model.embed_dim,
                                model.token_levels, model.token_codebook_size).eval()
        parameters = sum(parameter.numel() for parameter in model.parameters())
        print(f"checkpoint: {shown(args.checkpoint)} (MuLan, {parameters / 1e6:.2f}M parameters; audio ResNet "
              f"{model.config.audio_channels}, {model.features.n_mels} mels; text {model.config.text_layers} x "
              f"d_model {model.config.text_d_model}, vocabulary {model.tokenizer.vocab_size}; {model.embed_dim}-d "
              f"space; temperature {float(model.logit_scale.detach().neg().exp()):.3f})")
        print("baseline: the same architecture and tokenizer with random weights (torch.manual_seed(0))")
        began = time.perf_counter()
        galleries = render_galleries(args.galleries, model.sample_rate)
        print(f"galleries: {args.galleries} x {GALLERY_SIZE} clips of {GALLERY_SECONDS:.0f} s, planned with seeds "
              f"1..{args.galleries} (training uses seed 0), rendered in {time.perf_counter() - began:.1f} s")
        figures = quality_tables(model, untrained, galleries)

    if not args.skip_timing:
        timing_table(args.tiny_steps, args.small_steps, args.small_batch)

    print("\ntargets")
    targets = [(f"mean text->audio recall@1 over {args.galleries} gallery(ies) >= {RECALL_TARGET}",
                None if figures is None else figures["recall"], RECALL_TARGET, "{:.3f}"),
               ("zero-shot instrument accuracy >= 80%" + (f" ({figures['instrument_template']})" if figures else ""),
                None if figures is None else figures["instrument"], INSTRUMENT_TARGET, "{:.1%}")]
    for name, value, target, form in targets:
        verdict = ("not measured (no checkpoint)" if value is None else
                   f"{form.format(value)}: " + ("met" if value >= target else "NOT met"))
        print(f"  {name:58s} {verdict}")
    print(f"\nbench wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
