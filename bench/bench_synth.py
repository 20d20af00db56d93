"""How fast does SynthCaps render? Real-time factor per lead instrument on ONE core.

    python bench/bench_synth.py [--seconds 4] [--clips-per-instrument 5] [--sample-rate 16000]

The real-time factor is seconds of audio rendered per second of wall-clock time
(100x = a 4 s clip in 40 ms). Each instrument is timed over clips with randomly
sampled backing, tempo and mood, so the figure includes the whole mix. Target:
>= 100x at 16 kHz, so the tiny dataset (240 clips x 4 s) renders in ~10 s.
"""

import os

# Pin every math library to one thread *before* numpy/scipy load them.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from mlm_lessons import synth  # noqa: E402

TARGET_REAL_TIME_FACTOR = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (s)")
    parser.add_argument("--clips-per-instrument", type=int, default=5)
    parser.add_argument("--sample-rate", type=int, default=16_000)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    synth.render(synth.sample_attributes(rng), 0.5, args.sample_rate, seed=0)   # warm up imports and caches
    print(f"rendering {args.clips_per_instrument} x {args.seconds:g} s clips per lead at "
          f"{args.sample_rate} Hz, one thread")
    print(f"{'lead instrument':28s} {'real-time factor':>17s}")
    total_audio = total_wall = 0.0
    for lead in synth.INSTRUMENTS:
        wall = 0.0
        for clip in range(args.clips_per_instrument):
            attrs = synth.sample_attributes(rng, lead=lead)
            start = time.perf_counter()
            synth.render(attrs, args.seconds, args.sample_rate, seed=clip)
            wall += time.perf_counter() - start
        audio = args.clips_per_instrument * args.seconds
        total_audio, total_wall = total_audio + audio, total_wall + wall
        print(f"{lead:28s} {audio / wall:16.0f}x")
    overall = total_audio / total_wall
    verdict = "meets" if overall >= TARGET_REAL_TIME_FACTOR else "MISSES"
    print(f"{'overall':28s} {overall:16.0f}x  ({verdict} the {TARGET_REAL_TIME_FACTOR:.0f}x target; "
          f"{total_audio:.0f} s of audio in {total_wall:.2f} s)")


if __name__ == "__main__":
    main()
