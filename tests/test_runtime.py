"""The runtime helper: seeds make draws repeat, threads are set and capped, bad arguments are named, and every
lesson and benchmark sets its runtime through it."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from mlm_lessons import config, runtime

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "tools" / "lessons").glob("*.py"))
BENCHES = sorted((ROOT / "bench").glob("bench_*.py"))
# A call at the start of a line: the lessons' markdown lines start with "#", so prose that names it does not match.
DIRECT_THREADS_CALL = re.compile(r"^\s*torch\.set_num_threads\(", re.MULTILINE)


@pytest.fixture(autouse=True)
def restore_runtime():
    # The helper changes process-wide state; put it back so that the other test modules run as they would alone.
    threads = torch.get_num_threads()
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def draws() -> tuple:
    """Five draws from each global generator the helper seeds: Python's, NumPy's and PyTorch's."""
    return ([random.random() for _ in range(5)], np.random.rand(5).tolist(), torch.rand(5).tolist())


def test_the_same_seed_repeats_every_generators_draws():
    """Seeding twice with one seed gives the same draws from random, numpy and torch; another seed gives others."""
    runtime.seed_and_threads(7, 1)
    first = draws()
    runtime.seed_and_threads(7, 1)
    assert draws() == first
    runtime.seed_and_threads(8, 1)
    other = draws()
    assert all(mine != theirs for mine, theirs in zip(other, first))


def test_set_up_lesson_seeds_like_seed_and_threads():
    """A lesson's set-up leaves the generators where ``seed_and_threads`` with its seed does."""
    runtime.set_up_lesson("tiny", "cpu", 3, quiet=True)
    after_set_up = draws()
    runtime.seed_and_threads(3, 1)
    assert draws() == after_set_up


@pytest.mark.parametrize("cores, asked, used", [(4, 1, 1), (4, 2, 2), (1, 2, 1), (2, 64, 2), (None, 4, 1)])
def test_threads_are_set_and_capped_at_the_core_count(monkeypatch, cores, asked, used):
    """torch uses the threads asked for, at most the machine's cores, and one where the count is unknown (None)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    runtime.seed_and_threads(0, asked)
    assert torch.get_num_threads() == used


@pytest.mark.parametrize("setting, used", [("1", 1), ("3", 3), ("64", 4), ("0", 4), ("two", 4), ("", 4)])
def test_omp_num_threads_lowers_the_cap(monkeypatch, setting, used):
    """OMP_NUM_THREADS, where a positive integer, caps the threads below the cores; anything else is ignored."""
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", setting)
    runtime.seed_and_threads(0, 8)
    assert torch.get_num_threads() == used


def test_threads_on_this_machine_are_capped():
    """On the real core count, asking for more threads than cores uses every core and no more."""
    cores = runtime.available_threads()
    runtime.seed_and_threads(0, cores + 1)
    assert torch.get_num_threads() == cores


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_a_bad_seed_is_named(seed):
    """A negative or non-integer seed raises ValueError naming ``seed``, in either entry point."""
    with pytest.raises(ValueError, match="seed must be"):
        runtime.seed_and_threads(seed, 1)
    with pytest.raises(ValueError, match="seed must be"):
        runtime.set_up_lesson("tiny", "cpu", seed, quiet=True)


@pytest.mark.parametrize("threads", [0, -2, 1.0, "2"])
def test_bad_threads_are_named(threads):
    """Fewer than one thread, or a non-integer count, raises ValueError naming ``threads``."""
    with pytest.raises(ValueError, match="threads must be"):
        runtime.seed_and_threads(0, threads)
    with pytest.raises(ValueError, match="threads must be"):
        runtime.set_up_lesson("tiny", "cpu", 0, threads, quiet=True)


def test_an_unknown_preset_is_named():
    """An unknown preset raises ValueError naming it and the presets that exist."""
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*tiny"):
        runtime.set_up_lesson("huge", "cpu", 0, quiet=True)


def test_an_unknown_device_is_named():
    """A device string torch cannot parse raises ValueError naming it."""
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        runtime.set_up_lesson("tiny", "gpu", 0, quiet=True)


def test_a_missing_gpu_is_an_error_not_a_fall_back(monkeypatch, capsys):
    """Asking for CUDA where there is none raises RuntimeError naming the device, and changes nothing first."""
    # Pretend there is no GPU, so that the test means the same on a GPU machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runtime.seed_and_threads(5, 1)
    before = draws()
    runtime.seed_and_threads(5, 1)
    with pytest.raises(RuntimeError, match="device 'cuda'"):
        runtime.set_up_lesson("tiny", "cuda", 6, threads=2)
    # The failed call neither re-seeded the generators nor printed a set-up line.
    assert draws() == before and torch.get_num_threads() == 1
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_set_up_lesson_returns_the_presets_settings(name):
    """The Runtime carries the named preset's Config, its sample rate, the resolved device and the seed."""
    run = runtime.set_up_lesson(name, "cpu", 11, quiet=True)
    assert run.preset == config.get_preset(name)
    assert run.sample_rate == config.get_preset(name).data.sample_rate
    assert run.device == torch.device("cpu") and run.seed == 11
    assert torch.get_num_threads() == 1


def test_set_up_lesson_prints_one_line_unless_quiet(capsys):
    """One printed line names the preset, the device and the sample rate; ``quiet=True`` prints nothing."""
    runtime.set_up_lesson("tiny", "cpu", 0)
    assert capsys.readouterr().out.splitlines() == ["preset 'tiny', device cpu, audio at 16000 Hz"]
    runtime.set_up_lesson("tiny", "cpu", 0, quiet=True)
    assert capsys.readouterr().out == ""


def test_set_up_lesson_makes_figures_compact(monkeypatch):
    """After the set-up, figures are drawn at 72 dpi (the lessons' stored size), whatever the setting was."""
    monkeypatch.setitem(plt.rcParams, "figure.dpi", 100.0)   # restored after the test
    runtime.set_up_lesson("tiny", "cpu", 0, quiet=True)
    assert plt.rcParams["figure.dpi"] == 72


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_every_lesson_sets_its_runtime_with_the_helper(lesson):
    """Each lesson's source calls ``runtime.set_up_lesson`` and never sets torch's threads by hand."""
    source = lesson.read_text()
    assert "runtime.set_up_lesson(PRESET, DEVICE, SEED" in source
    assert not DIRECT_THREADS_CALL.search(source)


@pytest.mark.parametrize("bench", BENCHES, ids=lambda path: path.stem)
def test_every_bench_sets_threads_with_the_helper(bench):
    """A bench with a ``--threads`` option sets them through ``runtime.seed_and_threads``; none calls torch's."""
    source = bench.read_text()
    assert not DIRECT_THREADS_CALL.search(source)
    if '"--threads"' in source:
        assert re.search(r"runtime\.seed_and_threads\(\w+, args\.threads\)", source)


def test_the_source_checks_see_the_course():
    """The two checks above have files to check: ten lessons, and benches with a ``--threads`` option."""
    assert len(LESSONS) == 10
    assert sum('"--threads"' in bench.read_text() for bench in BENCHES) >= 10
