"""The SoundStream codec on the CPU: quality against bitrate, coding speed, and the cost of a training step.

    python bench/bench_codec.py [--checkpoint data/checkpoints/soundstream-tiny.pt] [--threads 2] [--quick]

Three tables, each beside a baseline measured in the same run. Nothing is asserted.

1. **Quality against bitrate** on the held-out clips (the ``test`` split of ``data/synthcaps-tiny``, every
   clip, full length): the trained codec keeping 1, 2, ..., ``num_levels`` RVQ levels, scored by mean
   SI-SNR (dB, higher is better) and mean multi-scale mel distance (lower is better) of
   ``codec.reconstruct(audio, num_levels=levels)`` against the original; beside it the mu-law baseline
   at the same bitrate (:func:`mlm_lessons.soundstream.best_mu_law_codec`, which picks the bit depth and
   sample rate with the lowest mel distance on these clips; the choice is printed).
2. **Encode and decode speed** as a multiple of real time (seconds of audio per second of compute), batch 1
   and batch 8 of 4-second clips, for the ``tiny`` codec (the checkpoint's, or a freshly built one when
   there is no checkpoint) and a freshly built ``small`` codec (random weights: the speed does not depend
   on them), with the mu-law round trip for reference.
3. **One training step** at the ``tiny`` and ``small`` presets: both objectives (discriminator step, then
   codec step with the adversarial and feature-matching terms on, i.e. past ``adversarial_start_step``),
   each forward + backward + gradient clipping + Adam step, wired as :func:`train_codec` wires them, in
   float32 on random crops of the preset's codec batch size and crop length.

Timings are best-of-N (``bench/timing.py``) on a possibly shared machine: compare rows of one run.
"""

import argparse
import math
import os
import platform
import time
from pathlib import Path

import torch

from timing import best_time

from mlm_lessons import runtime
from mlm_lessons.config import get_preset
from mlm_lessons.datasets import SynthCapsDataset, ensure_synthcaps
from mlm_lessons.metrics import multi_scale_mel_distance, si_snr
from mlm_lessons.soundstream import CodecTraining, SoundStream, best_mu_law_codec, codec_objectives, mu_law_codec

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPOSITORY / "data/checkpoints/soundstream-tiny.pt"
FALLBACK_CHECKPOINT = REPOSITORY / "runs/soundstream-tiny/last.pt"
TRAIN_COMMAND = ("python -m mlm_lessons train --preset tiny --stage soundstream --steps 2500 "
                 "--out runs/soundstream-tiny --export data/checkpoints/soundstream-tiny.pt")
SPEED_SECONDS = 4.0


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def find_checkpoint(requested: Path) -> Path | None:
    """``requested`` if it exists, else the training run's ``last.pt`` if that exists (said aloud), else None."""
    if requested.is_file():
        return requested
    print(f"no codec checkpoint at {shown(requested)}", end="")
    if FALLBACK_CHECKPOINT.is_file():
        print(f"; using the training run's {shown(FALLBACK_CHECKPOINT)} instead")
        return FALLBACK_CHECKPOINT
    print(f" nor at {shown(FALLBACK_CHECKPOINT)}")
    return None


def describe_checkpoint(path: Path) -> str:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    step = payload.get("step") if isinstance(payload, dict) else None
    kind = f"trainer checkpoint at step {step}" if step is not None else "exported codec"
    return f"{shown(path)} ({kind})"


def parameter_count(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


# ----------------------------------------------------------------------------------------------------
# 1. Quality against bitrate


def load_test_clips(sample_rate: int, limit: int | None) -> torch.Tensor:
    """The test split of SynthCaps tiny as ``(clips, samples)`` (cropped to the shortest clip if they differ)."""
    dataset = SynthCapsDataset(ensure_synthcaps("tiny", progress=False), split="test", sample_rate=sample_rate)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    clips = [dataset[index]["audio"] for index in range(count)]
    shortest = min(clip.shape[-1] for clip in clips)
    if any(clip.shape[-1] != shortest for clip in clips):
        print(f"(test clips differ in length; all cropped to the shortest, {shortest} samples)")
    return torch.stack([clip[:shortest] for clip in clips])


def quality_table(codec: SoundStream, clips: torch.Tensor, batch: int) -> dict:
    """Print table 1; return the mu-law setting chosen at the codec's full bitrate."""
    sr = codec.sample_rate
    print(f"\n1. Quality against bitrate: {len(clips)} test clip(s) of SynthCaps tiny x "
          f"{clips.shape[-1] / sr:g} s at {sr} Hz; codec {codec.num_levels} levels x {codec.codebook_size} codes "
          f"at {codec.frame_rate} frames/s")
    print(f"{'levels':>6s} {'bit/s':>6s} | {'SI-SNR (dB)':>11s} {'mu-law':>7s} {'better?':>8s} | "
          f"{'mel dist':>8s} {'mu-law':>7s} {'better?':>8s} | {'mu-law chosen':>22s}")
    for levels in range(1, codec.num_levels + 1):
        bitrate = codec.bitrate_at(levels)
        decoded = torch.cat([codec.reconstruct(chunk, num_levels=levels) for chunk in clips.split(batch)])
        baseline, choice = best_mu_law_codec(clips, sr, bitrate)
        snr, base_snr = si_snr(decoded, clips).mean().item(), si_snr(baseline, clips).mean().item()
        mel = multi_scale_mel_distance(decoded, clips, sr).mean().item()
        base_mel = multi_scale_mel_distance(baseline, clips, sr).mean().item()
        chosen = f"{choice['bits']} bit x {choice['codec_rate']} Hz"
        print(f"{levels:6d} {bitrate:6.0f} | {snr:11.2f} {base_snr:7.2f} {'yes' if snr > base_snr else 'NO':>8s} | "
              f"{mel:8.3f} {base_mel:7.3f} {'yes' if mel < base_mel else 'NO':>8s} | {chosen:>22s}")
    print("SI-SNR: higher is better; mel dist: multi-scale log-mel L1, lower is better. The mu-law baseline "
          "resamples to codec_rate and keeps `bit` bits per sample (codec_rate x bits = the bitrate), choosing "
          "the depth with the lowest mel distance on these very clips (an oracle choice, in its favour).")
    return choice


# ----------------------------------------------------------------------------------------------------
# 2. Encode and decode speed


def speed_table(codecs: dict[str, SoundStream], repeats: int, mu_law: dict, batches=(1, 8)) -> None:
    """Print table 2; ``mu_law`` is the baseline's ``{"bits", "codec_rate"}``."""
    sr = next(iter(codecs.values())).sample_rate
    bits, rate = mu_law["bits"], mu_law["codec_rate"]
    samples = int(SPEED_SECONDS * sr)
    generator = torch.Generator().manual_seed(0)
    print(f"\n2. Coding speed on the CPU, {torch.get_num_threads()} torch thread(s): seconds of audio per second "
          f"of compute (x real time), {SPEED_SECONDS:g} s clips at {sr} Hz, best of {repeats}")
    print(f"{'coder':42s} {'batch':>5s} {'encode':>9s} {'decode':>9s} {'round trip':>11s} {'time / mu-law':>14s}")
    for batch in batches:
        audio = 0.3 * torch.randn(batch, samples, generator=generator).clamp(-3, 3) / 3
        seconds = batch * SPEED_SECONDS
        baseline_s = best_time(lambda: mu_law_codec(audio, sr, rate, bits), repeats)
        print(f"{f'mu-law, {bits} bit x {rate} Hz (baseline)':42s} {batch:5d} {'':>9s} {'':>9s} "
              f"{seconds / baseline_s:10.0f}x {'1x':>14s}")
        for name, codec in codecs.items():
            codes = codec.encode(audio)
            encode_s = best_time(lambda: codec.encode(audio), repeats)
            decode_s = best_time(lambda: codec.decode(codes), repeats)
            round_s = encode_s + decode_s
            print(f"{name:42s} {batch:5d} {seconds / encode_s:8.1f}x {seconds / decode_s:8.1f}x "
                  f"{seconds / round_s:10.1f}x {round_s / baseline_s:13.0f}x")
    print("round trip = encode + decode at full depth (x real time: > 1 keeps up with playback); time / mu-law = "
          "round-trip time over the mu-law coder's (a resampling filter and a table lookup, no weights) at the "
          "same batch.")


# ----------------------------------------------------------------------------------------------------
# 3. One training step


def training_step_row(preset_name: str, repeats: int, warm_up: bool) -> float:
    config = get_preset(preset_name)
    codec_config = config.codec
    sr = config.data.sample_rate
    hop_length = math.prod(codec_config.strides)
    crop = max(1, round(codec_config.crop_seconds * sr / hop_length)) * hop_length
    batch_size = codec_config.batch_size
    torch.manual_seed(config.train.seed)
    training = CodecTraining.from_config(config).train()
    objectives, _ = codec_objectives(codec_config, sr)
    betas = (0.5, 0.9)  # as train_codec
    optimizers = {"discriminator": torch.optim.Adam(training.discriminator_parameters(), lr=codec_config.learning_rate,
                                                    betas=betas),
                  "codec": torch.optim.Adam(training.codec.parameters(), lr=codec_config.learning_rate, betas=betas)}
    step = codec_config.adversarial_start_step  # both objectives on, adversarial terms included
    grad_clip = config.train.grad_clip
    real = 0.3 * torch.randn(batch_size, crop).clamp(-3, 3) / 3

    def optimise(name: str, loss_fn) -> None:
        training.zero_grad(set_to_none=True)
        output = loss_fn(training, real, step=step) if name == "codec" else loss_fn(training, real)
        loss = output[0] if isinstance(output, tuple) else output
        loss.backward()
        parameters = [p for group in optimizers[name].param_groups for p in group["params"] if p.grad is not None]
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        optimizers[name].step()

    # Step by step: an untimed warm-up step (if asked), then ``repeats`` timed ones; each objective is timed on
    # its own inside the step, and the step time is their sum (the best step, not the sum of the best parts).
    times = {name: [] for name in objectives}
    for _ in range(repeats + warm_up):
        for name, loss_fn in objectives.items():
            began = time.perf_counter()
            optimise(name, loss_fn)
            times[name].append(time.perf_counter() - began)
    timed = {name: values[int(warm_up):] for name, values in times.items()}
    total = min(sum(parts) for parts in zip(*timed.values()))
    parts = {name: min(values) for name, values in timed.items()}
    codec_params = parameter_count(training.codec)
    disc_params = sum(parameter.numel() for parameter in training.discriminator_parameters())
    audio_seconds = batch_size * crop / sr
    print(f"{preset_name:6s} {codec_params / 1e6:9.2f}M {disc_params / 1e6:9.2f}M {batch_size:5d} "
          f"{crop:6d} ({crop / sr:4.2f} s) {parts['discriminator']:9.3f} {parts['codec']:9.3f} {total:9.3f} "
          f"{audio_seconds / total:9.2f}")
    return total


def training_table(presets: dict[str, tuple[int, bool]]) -> None:
    """``presets``: name -> (timed steps, whether an untimed warm-up step comes first)."""
    counts = "; ".join(f"{preset}: best of {steps} step(s)" + (" after a warm-up step" if warm_up else ", no warm-up")
                       for preset, (steps, warm_up) in presets.items())
    print(f"\n3. One codec training step on the CPU (float32, {torch.get_num_threads()} thread(s)): discriminator "
          f"step + codec step with adversarial terms, random crops; {counts}")
    print(f"{'preset':6s} {'codec':>10s} {'discrim.':>10s} {'batch':>5s} {'crop (samples)':>15s} "
          f"{'disc s':>9s} {'codec s':>9s} {'step s':>9s} {'audio s/s':>9s}")
    times = {}
    for preset, (steps, warm_up) in presets.items():
        times[preset] = training_step_row(preset, steps, warm_up)
    if len(times) == 2:
        print(f"small / tiny step time: {times['small'] / times['tiny']:.1f}x (tiny is the baseline)")
    print("codec, discrim.: parameters; disc s, codec s: each objective alone (forward, backward, clip, Adam); "
          "step s: both in turn, as the Trainer runs them; audio s/s: seconds of training audio per second.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="an exported codec or a trainer checkpoint (default: the shipped tiny codec)")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="4 test clips, fewer repeats, tiny training step only")
    args = parser.parse_args()
    runtime.seed_and_threads(0, args.threads)
    started = time.perf_counter()
    print(f"machine: {os.cpu_count()} core(s), {platform.machine()} {platform.system()}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); python {platform.python_version()}"
          + ("; --quick" if args.quick else ""))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        print(f"load average {load:.1f} before starting"
              + (f": the machine is busy ({load:.1f} > {os.cpu_count()} cores), so the timings below are inflated "
                 "by other processes" if load > (os.cpu_count() or 1) else ""))

    tiny_config = get_preset("tiny")
    path = find_checkpoint(args.checkpoint)
    codec = None
    mu_law = {"bits": 4, "codec_rate": 400}  # at the tiny codec's 1,600 bit/s, unless table 1 chooses otherwise
    if path is None:
        print(f"make one with:\n    {TRAIN_COMMAND}\nskipping table 1 (quality against bitrate)")
    else:
        codec = SoundStream.load(path)
        print(f"codec: {describe_checkpoint(path)}, {parameter_count(codec) / 1e6:.2f}M parameters, "
              f"{codec.bitrate:.0f} bit/s at full depth")
        clips = load_test_clips(codec.sample_rate, 4 if args.quick else None)
        mu_law = quality_table(codec, clips, batch=8)

    if codec is None:
        torch.manual_seed(0)
        codec = SoundStream.from_config(tiny_config).eval()
        tiny_name = "tiny codec (fresh, untrained)"
    else:
        tiny_name = "tiny codec (checkpoint)"
    small_config = get_preset("small")
    small = SoundStream.from_config(small_config).eval()
    codecs = {f"{tiny_name}, {codec.bitrate:.0f} bit/s": codec,
              f"small codec (fresh), {small.bitrate:.0f} bit/s": small}
    speed_table(codecs, repeats=1 if args.quick else 3, mu_law=mu_law)

    # A small step takes about a minute on 2 cores: one step, timed cold (its one-off costs are small beside it).
    training_table({"tiny": (1, True)} if args.quick else {"tiny": (3, True), "small": (1, False)})
    print(f"\nbench wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
