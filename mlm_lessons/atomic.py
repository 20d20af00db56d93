"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Everything the package writes (audio, manifests, checkpoints, notebooks, reports)
goes through :func:`atomic_path`, so an interrupted run (Ctrl-C, a crash, a full
disk) leaves the previous file intact and no truncated file that a later run would
trust.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    The temporary file lives in the same folder (a rename across file systems is not
    atomic) and is flushed to disk before the rename; if the block raises, it is
    deleted and ``path`` is untouched::

        with atomic_path("manifest.csv") as tmp:
            tmp.write_text(text)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)  # make the rename itself durable
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike, name: str = "*") -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left in ``folder`` (for files called ``name``, or
    all) when its process was killed outright (SIGKILL, power loss: no ``finally`` runs). A temporary whose
    process is still running is someone's write in progress and is left alone. Returns what was deleted."""
    removed = []
    for candidate in Path(folder).glob(f".{name}.*.tmp"):
        pid = candidate.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _process_is_running(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)                  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:              # it exists, under another user
        return True
    except OSError:                      # e.g. Windows, where signal 0 is not a probe: assume it runs
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # POSIX only; elsewhere the rename is still atomic
        return
    descriptor = os.open(directory, os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
