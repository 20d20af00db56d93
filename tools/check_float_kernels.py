"""Run the unit tests and the lessons under every float-kernel setting this CPU supports, and each thread count.

A learner's laptop is any CPU: PyTorch picks its vectorised kernels (ATen's "CPU capability") by what the
processor offers, so the same lesson adds up its floats in another order on an Intel laptop with AVX-512,
an older one with AVX2, or an Apple machine, and again in another order with one thread or two. A result
that rests on the order (an exact float comparison, the ending of a short GAN run) passes on the machine
that stored the notebook and fails in front of a learner. This check finds such results before a
learner does: run it before resolving any lesson work.

    python tools/check_float_kernels.py                      # everything: about 25 minutes a setting
    python tools/check_float_kernels.py --lessons 03 05      # the unit tests and two lessons
    python tools/check_float_kernels.py --no-unit --threads 1 --capabilities default

``ATEN_CPU_CAPABILITY`` can lower the kernels PyTorch uses, never raise them, so the settings are
``default`` (plain C++ loops, what a CPU without vector units gets) and each level up to this CPU's own.
``OMP_NUM_THREADS`` sets the threads: PyTorch reads it, and so does :func:`mlm_lessons.runtime.seed_and_threads`,
which caps a lesson's threads at it. Every setting runs in a fresh process; the table at the end gives
each one's verdict and time, and the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPABILITY_LEVELS = ["default", "avx2", "avx512"]    # ATen's x86 levels, lowest first


def supported_capabilities() -> list[str]:
    """The ``ATEN_CPU_CAPABILITY`` values this CPU can run: ``default`` and every x86 level up to its own."""
    # Asked in a fresh process without the variable, which would otherwise report the level it forces.
    environment = {key: value for key, value in os.environ.items() if key != "ATEN_CPU_CAPABILITY"}
    own = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=environment, capture_output=True, text=True, check=True).stdout.strip().lower()
    if own not in CAPABILITY_LEVELS:                   # e.g. Apple silicon or other Arm: only "default" lowers it
        return ["default"] if own == "default" else ["default", own]
    return CAPABILITY_LEVELS[: CAPABILITY_LEVELS.index(own) + 1]


def commands(lessons: list[str] | None, unit: bool) -> list[tuple[str, list[str]]]:
    """(name, command) for the unit tests and the lessons under nbval, as the Makefile runs them."""
    python = sys.executable
    runs = []
    if unit:
        runs.append(("unit tests", [python, "-m", "pytest", "tests/", "-q", "-p", "no:cacheprovider"]))
    notebooks = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "notebooks").glob("*.ipynb"))
    if lessons:
        notebooks = [path for path in notebooks if Path(path).name[:2] in lessons]
        missing = sorted(set(lessons) - {Path(path).name[:2] for path in notebooks})
        if missing:
            raise SystemExit(f"no lesson numbered {', '.join(missing)} in notebooks/; give two digits, e.g. --lessons 03")
    if notebooks:
        runs.append((f"lessons under nbval ({len(notebooks)})",
                     [python, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with",
                      "tests/nbval_sanitize.cfg", "-q", "-p", "no:cacheprovider", *notebooks]))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capabilities", nargs="+", metavar="LEVEL",
                        help="ATEN_CPU_CAPABILITY values to run (default: every one this CPU supports)")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], metavar="N",
                        help="OMP_NUM_THREADS values to run (default: 1 2)")
    parser.add_argument("--lessons", nargs="+", metavar="NN", help="only these lessons, by number (default: all)")
    parser.add_argument("--no-unit", action="store_true", help="skip the unit tests")
    args = parser.parse_args(argv)

    supported = supported_capabilities()
    capabilities = args.capabilities or supported
    unknown = [level for level in capabilities if level not in supported]
    if unknown:
        parser.error(f"this CPU cannot run ATEN_CPU_CAPABILITY={', '.join(unknown)}; it supports {', '.join(supported)}")
    if any(threads < 1 for threads in args.threads):
        parser.error("--threads takes positive integers, e.g. --threads 1 2")

    results = []
    for capability in capabilities:
        for threads in args.threads:
            environment = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "OMP_NUM_THREADS": str(threads)}
            for name, command in commands(args.lessons, unit=not args.no_unit):
                setting = f"ATEN_CPU_CAPABILITY={capability} OMP_NUM_THREADS={threads}"
                print(f"\n=== {name}, {setting} ===", flush=True)
                start = time.perf_counter()
                passed = subprocess.run(command, cwd=ROOT, env=environment).returncode == 0
                results.append((setting, name, passed, time.perf_counter() - start))

    print(f"\n{'setting':<44} {'what':<26} {'verdict':<7} seconds")
    for setting, name, passed, seconds in results:
        print(f"{setting:<44} {name:<26} {'passed' if passed else 'FAILED':<7} {seconds:7.0f}")
    return 0 if all(passed for _, _, passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
