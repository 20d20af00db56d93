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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)  # make the rename itself durable
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # POSIX only; elsewhere the rename is still atomic
        return
    descriptor = os.open(directory, os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
