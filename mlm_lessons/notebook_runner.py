"""Execute lesson notebooks in place so their stored outputs match the code on main.

The notebooks are stored with outputs (readable on GitHub, checked by nbval). This
is the one command that produces those outputs: it runs each notebook top to
bottom in a fresh kernel from the notebook's own folder, numbers the cells from 1,
and writes the result atomically.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from mlm_lessons.atomic import atomic_path


def execute_notebook(path: str | os.PathLike, timeout_per_cell: int = 600,
                     kernel_name: str = "python3") -> float:
    """Run ``path`` top to bottom and store its outputs; returns wall-clock seconds.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed; the file is left unchanged.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no notebook at {path}")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout_per_cell, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    with atomic_path(path) as tmp:
        nbformat.write(notebook, str(tmp))
    return seconds
