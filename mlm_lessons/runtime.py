"""One call that sets up where and how a lesson or a benchmark runs: seeds, threads, device, figures.

Every lesson opens with the same few settings, and every benchmark needs some of them; written out
ten times, they drifted (two threads here, one there, a device string compared by hand). Now each
lesson's first cell is::

    PRESET, DEVICE, SEED = "tiny", "cpu", 0      # the one cell to change
    run = runtime.set_up_lesson(PRESET, DEVICE, SEED)
    # preset 'tiny', device cpu, audio at 16000 Hz

and a benchmark calls :func:`seed_and_threads`. The returned :class:`Runtime` carries the preset's
:class:`~mlm_lessons.config.Config`, the resolved ``torch.device`` and the sample rate, so a lesson
reads them from one place.
"""

from __future__ import annotations

import dataclasses
import os
import random

import numpy as np
import torch

from mlm_lessons import config
from mlm_lessons.train import resolve_device


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What a lesson runs with: its preset's settings, the device its models go to, and its seed."""

    preset: config.Config
    device: torch.device
    seed: int

    @property
    def sample_rate(self) -> int:
        """The course audio's sample rate in Hz (16,000 in the course presets, 24,000 in the paper one)."""
        return self.preset.data.sample_rate


def seed_and_threads(seed: int, threads: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators with ``seed``; use ``threads`` CPU threads.

    ``threads`` is capped at the machine's core count, so a lesson written for two cores still runs on
    one, and at ``OMP_NUM_THREADS`` where that is set to a positive integer, the usual way to ask a
    numerical program for fewer threads (the float-kernels check runs every lesson with it set to 1, as
    on a one-core laptop). The small models of the course are about as fast on one thread, and one
    thread is not slowed down when the machine is busy: that is why lessons from 03 on use one.

    Raises:
        ValueError: for a negative seed or fewer than one thread (both would fail later, less clearly).
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(min(threads, available_threads()))


def available_threads() -> int:
    """The machine's core count, or ``OMP_NUM_THREADS`` where that asks for fewer; 1 where neither is known."""
    cores = os.cpu_count() or 1
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    return min(cores, int(asked)) if asked.isdigit() and int(asked) > 0 else cores


def set_up_lesson(preset: str = "tiny", device: str = "cpu", seed: int = 0, threads: int = 1,
                  *, quiet: bool = False) -> Runtime:
    """Set a lesson's runtime and say what it is in one printed line.

    Seeds every generator and sets the threads (:func:`seed_and_threads`), resolves ``device``
    (``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``; asking for a GPU that is not there is an error),
    and makes inline figures compact: 72 dpi, stored as JPEG, which keeps a lesson's file small.

    Args:
        preset: a name from :data:`mlm_lessons.config.PRESETS` ("tiny" on a CPU, "small" on one GPU).
        device: where the lesson's models train and run.
        seed: the seed of every global generator.
        threads: CPU threads for PyTorch (capped at the core count).
        quiet: skip the printed line.

    Returns:
        The :class:`Runtime`: ``run.preset``, ``run.device``, ``run.seed``, ``run.sample_rate``.
    """
    settings = config.get_preset(preset)
    resolved = resolve_device(device)
    seed_and_threads(seed, threads)
    _compact_inline_figures()
    run = Runtime(preset=settings, device=resolved, seed=seed)
    if not quiet:
        print(f"preset {preset!r}, device {resolved}, audio at {run.sample_rate} Hz")
    return run


def _compact_inline_figures() -> None:
    # Imported here: benchmarks and the command line use this module without Jupyter or a display.
    import matplotlib.pyplot as plt

    from mlm_lessons import viz

    plt.rcParams["figure.dpi"] = 72
    viz.use_compact_inline_figures()
