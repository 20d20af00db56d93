"""w2v-BERT training throughput at the ``tiny`` and ``small`` presets, in float32 and under bfloat16 autocast.

    python bench/bench_w2v_bert.py [--presets tiny small] [--small-batch 4] [--steps 5] [--device cpu] [--threads 1]

For each preset, builds :class:`mlm_lessons.w2v_bert.W2VBert` from the preset (``W2VBert.from_config``) and
times whole training steps as the trainer runs them: ``model(audio).loss`` (both self-supervised losses and
the quantiser's commitment loss), backward, an AdamW step. The audio is ``0.1 * randn(batch, samples)``
with ``samples`` one training crop (``w2v_bert.crop_seconds`` rounded to whole 40 ms frames): the cost of a
step does not depend on what the audio sounds like. The batch is the preset's ``w2v_bert.batch_size`` for
``tiny``; ``small`` is meant for a GPU (batch 64), so on the CPU it runs ``--small-batch`` crops by default.

Each preset gets two fresh models (same seed, same crops): one trained in float32 (the baseline), one under
``torch.autocast(device, dtype=torch.bfloat16)``. Each runs one untimed warm-up step (the quantiser's k-means
initialisation happens there, as on the first training step), then ``--steps`` timed steps, the two models
taking turns step by step so both see the same machine load; the table gives the median step. The last
column is the bf16 time over the float32 time (< 1: bf16 is faster). On ``--device cuda`` every step ends
with ``torch.cuda.synchronize()`` before the clock is read.
Nothing is asserted.
"""

import os

# Pin the math libraries before torch loads them; --threads sets torch's own limit below.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from timing import median_step_seconds  # noqa: E402

from mlm_lessons import runtime  # noqa: E402
from mlm_lessons.config import get_preset  # noqa: E402
from mlm_lessons.w2v_bert import W2VBert  # noqa: E402


def training_step(preset_name: str, batch: int, device: torch.device, bf16: bool):
    """A fresh model of the preset and a function running one training step on it; and the shapes."""
    config = get_preset(preset_name)
    torch.manual_seed(config.train.seed)
    model = W2VBert.from_config(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.w2v_bert.learning_rate)
    samples = round(config.w2v_bert.crop_seconds * model.frame_rate) * model.samples_per_frame
    audio = torch.randn(batch, samples, generator=torch.Generator().manual_seed(0)).mul_(0.1).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model(audio).loss
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    shapes = {"parameters": model.num_parameters(), "frames": batch * (samples // model.samples_per_frame),
              "audio_seconds": batch * samples / model.sample_rate, "crop_seconds": samples / model.sample_rate,
              "layers": model.num_layers, "d_model": model.config.d_model}
    return step, shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--small-batch", type=int, default=4,
                        help="crops per step at the small preset (its own batch_size, 64, is meant for a GPU); "
                             "0 uses the preset's")
    parser.add_argument("--tiny-batch", type=int, default=0, help="crops per step at tiny; 0 uses the preset's (16)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration, after one warm-up step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-bf16", action="store_true", help="float32 only")
    args = parser.parse_args()
    runtime.seed_and_threads(0, args.threads)
    device = torch.device(args.device)
    started = time.perf_counter()

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{os.cpu_count()} core(s), {platform.machine()}, {torch.get_num_threads()} torch thread(s)")
    print(f"device: {device} ({where}); torch {torch.__version__}; median of {args.steps} timed step(s) after one "
          "warm-up step; a step = forward + backward + AdamW")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if device.type == "cpu" and load > (os.cpu_count() or 1) - args.threads + 0.5:
        print(f"load average {load:.1f} before starting: other processes compete for the cores, so times are "
              "inflated (float32 and bf16 alike)")
    print()
    header = (f"{'preset':6s} {'params':>8s} {'layers x d':>10s} {'batch':>5s} {'crop s':>6s} {'frames/step':>11s} | "
              f"{'fp32 s/step':>11s} {'frames/s':>8s} {'audio s/s':>9s} | "
              f"{'bf16 s/step':>11s} {'frames/s':>8s} {'audio s/s':>9s} {'bf16/fp32':>9s}")
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        own_batch = get_preset(preset).w2v_bert.batch_size
        batch = {"small": args.small_batch, "tiny": args.tiny_batch}.get(preset, 0) or own_batch
        fp32_step, shapes = training_step(preset, batch, device, bf16=False)
        steps = {"fp32": fp32_step}
        if not args.no_bf16:
            steps["bf16"] = training_step(preset, batch, device, bf16=True)[0]
        seconds = median_step_seconds(steps, args.steps)
        shape = f"{shapes['layers']} x {shapes['d_model']}"
        line = (f"{preset:6s} {shapes['parameters'] / 1e6:7.2f}M {shape:>10s} {batch:5d} {shapes['crop_seconds']:6.2f} "
                f"{shapes['frames']:11d}")
        for name in ("fp32", "bf16"):
            if name in seconds:
                line += (f" | {seconds[name]:11.3f} {shapes['frames'] / seconds[name]:8.0f} "
                         f"{shapes['audio_seconds'] / seconds[name]:9.2f}")
            else:
                line += f" | {'-':>11s} {'-':>8s} {'-':>9s}"
        line += f" {seconds['bf16'] / seconds['fp32']:8.2f}x" if "bf16" in seconds else f" {'-':>9s}"
        print(line + (f"   (preset batch {own_batch})" if batch != own_batch else ""))
    print("\nparams: model.num_parameters(); layers x d: Conformer blocks x d_model; frames/step: batch x 25 Hz frames "
          "per crop; s/step: median wall time of one training step; audio s/s: seconds of training audio per second "
          "of wall time; bf16/fp32: the bf16-autocast step time over the float32 one (the baseline).")
    print(f"\nbench wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
