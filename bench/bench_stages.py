"""MusicLM's three stages (lesson 08) on the CPU: training and sampling speed, and the cascade's real-time factor.

    python bench/bench_stages.py [--steps 3] [--threads 1] [--skip-small]

Speed does not depend on what a model has learned, so the stages here are freshly initialised ones of each
preset's sizes, fed random but valid tokens. Every figure stands beside a baseline from the same run:

1. **Training**: target tokens per second of one optimiser step (forward, next-token cross-entropy, backward,
   AdamW) at each stage's window (``config.stages``), for the ``tiny`` preset and, unless ``--skip-small``,
   the ``small`` one (batch 2 on a CPU). The ratio is against tiny's semantic stage.
2. **Sampling**: new tokens per second with and without the KV cache, at batch 1 and batch 8, for each tiny
   stage generating its whole window; the ratio is cached over uncached.
3. **The cascade**: wall-clock seconds (one thread) per second of music to go from MuLan tokens to a waveform
   (``musiclm.cascade``: semantic, then coarse, then fine, then the SoundStream decoder) at tiny sizes, for one
   4-s clip, longer than the coarse and fine windows, which slide; below 1 is faster than real time.
Nothing is asserted. Run time on 2 shared cores, one thread: about 2 minutes (30 s with --skip-small).
"""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from mlm_lessons import config, musiclm, runtime, soundstream  # noqa: E402


def random_codes(kind: musiclm.TokenKind, batch: int, seconds: float, generator: torch.Generator) -> torch.Tensor:
    frames = 1 if kind.frame_rate is None else round(seconds * kind.frame_rate)
    return torch.randint(kind.codebook_size, (batch, frames, kind.levels), generator=generator)


def conditions(stage: musiclm.Stage, batch: int, seconds: float, generator: torch.Generator) -> dict:
    layout = stage.layout
    return {name: random_codes(layout.prefix.kinds[name], batch, seconds, generator) for name in layout.prefix_kinds}


def time_training(preset: config.Config, name: str, batch: int, steps: int) -> float:
    """Target tokens per second of one training step."""
    torch.manual_seed(0)
    seconds = preset.stages.seconds(name)
    stage = musiclm.Stage.from_config(preset, name).train()
    generator = torch.Generator().manual_seed(0)
    layout = stage.layout
    prefix = layout.prefix_ids(conditions(stage, batch, seconds, generator))
    target = layout.target_ids(random_codes(layout.target.kinds[name], batch, seconds, generator))
    optimizer = torch.optim.AdamW(stage.parameters(), lr=1e-4)

    def step():
        loss, _ = stage.loss(prefix, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()                                                  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch * (target.shape[1] - 1) / (time.perf_counter() - started)


def time_sampling(stage: musiclm.Stage, batch: int, use_cache: bool) -> float:
    """New tokens per second generating the stage's whole window."""
    name = stage.layout.name
    seconds = PRESET.stages.seconds(name)
    kind = stage.layout.target.kinds[name]
    frames = round(seconds * kind.frame_rate)
    generator = torch.Generator().manual_seed(0)
    given = conditions(stage, batch, seconds, generator)
    stage.generate(given, min(frames, 2), generator=generator, use_cache=use_cache)          # warm-up
    started = time.perf_counter()
    stage.generate(given, frames, generator=generator, use_cache=use_cache)
    return batch * frames * kind.levels / (time.perf_counter() - started)


PRESET = config.get_preset("tiny")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per stage")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-small", action="store_true", help="time the tiny preset only")
    args = parser.parse_args()
    runtime.seed_and_threads(0, args.threads)
    print(f"{os.cpu_count()} core(s), torch {torch.__version__}, {args.threads} thread(s); load average "
          f"{os.getloadavg()[0]:.1f} (other work inflates every time alike)")

    print("\n1. Training: target tokens per second of one optimiser step, each stage at its window")
    presets = [("tiny", PRESET, PRESET.train.batch_size)]
    if not args.skip_small:
        small = config.get_preset("small")
        presets.append(("small", small, 2))
    baseline = None
    print(f"{'preset':<7} {'stage':<9} {'window':>7} {'batch':>6} {'tokens/s':>10} {'/ tiny semantic':>16}")
    for preset_name, preset, batch in presets:
        for name in musiclm.STAGES:
            rate = time_training(preset, name, batch, args.steps)
            baseline = baseline or rate
            print(f"{preset_name:<7} {name:<9} {preset.stages.seconds(name):>6g}s {batch:>6} {rate:>10.0f} "
                  f"{rate / baseline:>15.2f}x")

    print("\n2. Sampling (tiny): new tokens per second over each stage's whole window")
    print(f"{'stage':<9} {'batch':>6} {'cached':>10} {'uncached':>10} {'cached / uncached':>18}")
    torch.manual_seed(0)
    stages = {name: musiclm.Stage.from_config(PRESET, name).eval() for name in musiclm.STAGES}
    for name, stage in stages.items():
        for batch in (1, 8):
            cached, uncached = time_sampling(stage, batch, True), time_sampling(stage, batch, False)
            print(f"{name:<9} {batch:>6} {cached:>10.0f} {uncached:>10.0f} {cached / uncached:>17.1f}x")

    print("\n3. The cascade (tiny, batch 1, one thread): seconds per second of music, MuLan tokens -> waveform")
    seconds = PRESET.data.clip_seconds                  # longer than the coarse and fine windows: they slide
    generator = torch.Generator().manual_seed(0)
    codec = soundstream.SoundStream.from_config(PRESET).eval()
    mulan_tokens = random_codes(musiclm.token_kinds(PRESET)["mulan"], 1, seconds, generator)
    temperatures = {name: PRESET.stages.temperature(name) for name in musiclm.STAGES}
    started = time.perf_counter()
    tokens = musiclm.cascade(stages, mulan_tokens, seconds, temperatures, generator=generator)
    timings = {"stages": time.perf_counter() - started}
    started = time.perf_counter()
    with torch.no_grad():
        wave = codec.decode(tokens["acoustic"].transpose(1, 2))
    timings["decoder"] = time.perf_counter() - started
    audio_seconds = wave.shape[-1] / PRESET.data.sample_rate
    for name, spent in timings.items():
        print(f"  {name:<9} {spent:6.2f} s  ({spent / audio_seconds:.2f} s per second of music)")
    total = sum(timings.values())
    print(f"  total     {total:6.2f} s for {audio_seconds:g} s of music: real-time factor {total / audio_seconds:.2f} "
          "(below 1: faster than real time)")

if __name__ == "__main__":
    main()
