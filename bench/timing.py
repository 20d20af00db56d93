"""Timing shared by the benchmarks (run as ``python bench/NAME.py``, so this imports as ``timing``)."""

import statistics
import time


def best_time(function, repeats: int = 3) -> float:
    """Best wall-clock seconds of ``repeats`` calls of ``function()``, after one untimed warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def median_step_seconds(steps: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each of ``steps`` (name -> function) over ``repeats`` calls, after ``warmup`` untimed
    rounds (k-means initialisations, allocator and kernel caches). The functions take turns call by call, so
    all of them see the same machine load."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}
