"""The paper's SoundStream against the course's time-frequency codec, trained for the same CPU time: which keeps the instrument?

    python bench/bench_codec_designs.py [--minutes 15] [--threads 1] [--designs paper time-frequency ...]
                                        [--shipped data/checkpoints/soundstream-tiny.pt] [--quick]

Each design is trained from scratch by :func:`mlm_lessons.soundstream.train_codec` on the train split of the
2,400-clip tiny SynthCaps set (rendered once into ``data/synthcaps-tiny-2400``), for about ``--minutes`` of
CPU time each (the step count is set from the speed of a few timed steps), with the reconstruction losses
alone (the adversarial terms start after a warm-up longer than a short run). Then each reconstructs the same
held-out clips (the first 120 of the ``test`` split), and the shipped attribute judge
(``data/checkpoints/attributes-tiny.pt``, trained on clean clips) names each reconstruction's instrument,
mood and tempo band. The judge's accuracy on the clean clips themselves is the first row: the ceiling. The
shipped codec (trained on the same train split by the command in README.md) is judged on the same clips,
in the row after it; ``--designs`` with no names judges it alone.

Designs (each the ``tiny`` preset's codec section with these fields changed):

* ``paper``: SoundStream as published: SEANet encoder and waveform decoder, EMA residual VQ whose levels
  start from k-means on the first batch, every example drawing its levels (quantiser dropout 1.0), the
  multi-scale waveform and STFT discriminators, and the waveform L1 term weighted as the course's first
  codec did (60: with less, 2,000 CPU steps teach the spectrum but not the waveform);
* ``time-frequency``: the course's codec: log-mel ConvNeXt encoder, ConvNeXt decoder with an iSTFT head
  (Vocos), the same EMA residual VQ after an unquantised warm-up (a third of the run) whose latents its
  k-means clusters, half the examples drawing their levels (DAC's share), period and multi-resolution
  STFT discriminators, no waveform term;
* ``time-frequency-dac``: the same with DAC's factorised, unit-length codes learnt by gradient instead of
  the EMA codebooks (no warm-up: it has no k-means start).

Both have the tiny preset's token layout (50 frames/s, 4 levels x 256 codes: 1,600 bit/s). Printed per
design: parameters, bitrate, steps, minutes and steps per second of training; the judge's accuracy on the
reconstructions; and the multi-scale mel distance to the clean clips keeping 1, 2, ..., all levels
(lower is better; each level should lower it). Nothing is asserted; timings come from a machine that may
be shared, so compare rows of one run.
"""

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import torch

from mlm_lessons import runtime, soundstream
from mlm_lessons.audio import load_audio
from mlm_lessons.config import get_preset
from mlm_lessons.datasets import ensure_synthcaps, read_synthcaps_manifest
from mlm_lessons.evaluation import ATTRIBUTES, AttributeClassifier, attribute_targets
from mlm_lessons.metrics import multi_scale_mel_distance

from bench_codec import REPOSITORY

JUDGE = REPOSITORY / "data/checkpoints/attributes-tiny.pt"
SHIPPED = REPOSITORY / "data/checkpoints/soundstream-tiny.pt"
NO_ADVERSARY = 10**9  # an adversarial_start_step no short run reaches
TIME_FREQUENCY = dict(encoder="mel", decoder="istft", discriminators="vocos", waveform_weight=0.0,
                      quantizer_dropout=0.5)
DESIGNS = {
    "paper": dict(encoder="seanet", decoder="seanet", quantizer="ema", discriminators="soundstream",
                  quantizer_dropout=1.0, quantizer_warmup_steps=0, waveform_weight=60.0),
    "time-frequency": dict(TIME_FREQUENCY, quantizer="ema"),
    "time-frequency-dac": dict(TIME_FREQUENCY, quantizer="factorised", quantizer_warmup_steps=0),
}
WARMUP_SHARE = 1 / 3  # of a short run's steps, for the designs whose quantiser has a warm-up


def design_config(name: str, crop_seconds: float, steps: int = 0):
    """The tiny preset with the design's codec fields, 1-s crops, no adversarial terms in a short run, and
    (``"ema"`` quantisers with a warm-up) a warm-up of a third of ``steps``."""
    tiny = get_preset("tiny")
    codec = dataclasses.replace(tiny.codec, **DESIGNS[name], adversarial_start_step=NO_ADVERSARY,
                                crop_seconds=crop_seconds)
    if "quantizer_warmup_steps" not in DESIGNS[name]:
        codec = dataclasses.replace(codec, quantizer_warmup_steps=round(WARMUP_SHARE * steps))
    return dataclasses.replace(tiny, codec=codec)


def steps_for(config, clips, seconds: float, probe_steps: int) -> tuple[int, float]:
    """How many steps fill ``seconds`` at the speed of ``probe_steps`` timed steps, and that speed (steps/s)."""
    began = time.perf_counter()
    soundstream.train_codec(config, clips, steps=probe_steps, progress=False)
    speed = probe_steps / (time.perf_counter() - began)
    return max(probe_steps, round(seconds * speed)), speed


def judge_accuracy(judge: AttributeClassifier, audio: torch.Tensor, targets: dict) -> dict[str, float]:
    probabilities = judge.probabilities(audio)
    return {name: (probabilities[name].argmax(-1) == targets[name]).float().mean().item() for name in ATTRIBUTES}


def judged(codec, judge: AttributeClassifier, test_audio: torch.Tensor, targets: dict, sample_rate: int):
    """The judge's accuracy on the codec's full-depth reconstructions, and the mel distance keeping 1..L levels."""
    codec = codec.eval()
    distances = []
    for levels in range(1, codec.num_levels + 1):
        decoded = torch.cat([codec.reconstruct(chunk, num_levels=levels) for chunk in test_audio.split(16)])
        distances.append(multi_scale_mel_distance(decoded, test_audio, sample_rate).mean().item())
    return judge_accuracy(judge, decoded, targets), distances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training time per design (default 15)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--designs", nargs="*", default=list(DESIGNS), choices=list(DESIGNS),
                        help="designs to train (none: only judge the shipped codec)")
    parser.add_argument("--shipped", type=Path, default=SHIPPED,
                        help=f"a trained codec judged beside them (default {SHIPPED.relative_to(REPOSITORY)}; "
                             "skipped if missing)")
    parser.add_argument("--test-clips", type=int, default=120)
    parser.add_argument("--quick", action="store_true", help="20 s of training and 12 test clips: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.test_clips = 1 / 3, 12
    runtime.seed_and_threads(0, args.threads)
    print(f"machine: {os.cpu_count()} core(s), {platform.machine()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {args.minutes:g} min of training per design")

    folder = ensure_synthcaps("tiny", num_clips=2400, progress=True)
    records = read_synthcaps_manifest(folder)
    sample_rate = get_preset("tiny").data.sample_rate
    train = [load_audio(record.path, sample_rate=sample_rate)[0] for record in records if record.split == "train"]
    test = [record for record in records if record.split == "test"][:args.test_clips]
    test_audio = torch.stack([load_audio(record.path, sample_rate=sample_rate)[0] for record in test])
    targets = attribute_targets([record.attributes for record in test])
    judge = AttributeClassifier.load(JUDGE)
    print(f"{len(train)} training clips; judged on {len(test)} held-out test clips of {test_audio.shape[-1] / sample_rate:g} s")

    ceiling = judge_accuracy(judge, test_audio, targets)
    rows = []
    if args.shipped.exists():
        codec = soundstream.SoundStream.load(args.shipped)
        rows.append((f"shipped: {args.shipped.name}", sum(p.numel() for p in codec.parameters()), codec.bitrate,
                     None, None, None, *judged(codec, judge, test_audio, targets, sample_rate)))
    for name in args.designs:
        config = design_config(name, crop_seconds=1.0)
        steps, speed = steps_for(config, train, args.minutes * 60, probe_steps=5 if args.quick else 20)
        config = design_config(name, crop_seconds=1.0, steps=steps)
        runtime.seed_and_threads(0, args.threads)
        began = time.perf_counter()
        training, _ = soundstream.train_codec(config, train, steps=steps, progress=True)
        minutes = (time.perf_counter() - began) / 60
        codec = training.codec
        rows.append((name, sum(p.numel() for p in codec.parameters()), codec.bitrate, steps, minutes,
                     steps / (minutes * 60), *judged(codec, judge, test_audio, targets, sample_rate)))

    print(f"\n{'codec':28s} {'params':>7s} {'bit/s':>6s} {'steps':>6s} {'min':>5s} {'steps/s':>7s} | "
          f"{'instrument':>10s} {'mood':>5s} {'tempo':>5s} | mel distance keeping 1..L levels")
    print(f"{'clean clips':28s} {'':>7s} {'':>6s} {'':>6s} {'':>5s} {'':>7s} | {ceiling['instrument']:10.0%} "
          f"{ceiling['mood']:5.0%} {ceiling['tempo']:5.0%} | 0")
    for name, params, bitrate, steps, minutes, speed, accuracy, distances in rows:
        trained = (f"{steps:6d} {minutes:5.1f} {speed:7.2f}" if steps is not None
                   else f"{'':>6s} {'':>5s} {'':>7s}")   # the shipped codec: see README for how it was made
        print(f"{name:28s} {params / 1e6:6.2f}M {bitrate:6.0f} {trained} | "
              f"{accuracy['instrument']:10.0%} {accuracy['mood']:5.0%} {accuracy['tempo']:5.0%} | "
              + " ".join(f"{distance:.3f}" for distance in distances))
    print("instrument, mood, tempo: the judge's accuracy on the reconstructions (chance: 10%, 1/7 and 1/3); the "
          "clean clips' row is its ceiling. mel distance: multi-scale log-mel L1 to the clean clips.")


if __name__ == "__main__":
    main()
