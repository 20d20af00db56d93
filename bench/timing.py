"""Timing shared by the benchmarks (run as ``python bench/NAME.py``, so this imports as ``timing``)."""

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
