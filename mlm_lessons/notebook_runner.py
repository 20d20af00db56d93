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

from mlm_lessons.atomic import atomic_path


class LessonCellError(RuntimeError):
    """A cell of a lesson failed: which cell, its first line and the error, in a few lines."""


def execute_notebook(path: str | os.PathLike, timeout_per_cell: int = 600,
                     kernel_name: str = "python3") -> float:
    """Run ``path`` top to bottom and store its outputs; returns wall-clock seconds.

    Raises:
        LessonCellError: a cell failed (its number, first line and error); the file is left unchanged.
    """
    import nbformat          # here, not above: the command line imports this module for LessonCellError
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no notebook at {path}")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout_per_cell, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as err:
        raise LessonCellError(_failed_cell_summary(path, notebook, err)) from None
    seconds = time.perf_counter() - start
    with atomic_path(path) as tmp:
        nbformat.write(notebook, str(tmp))
    return seconds


def _failed_cell_summary(path: Path, notebook: nbformat.NotebookNode, err: CellExecutionError) -> str:
    """``path: cell [N] (line "...") failed: Name: value`` and where to look, from the failing cell."""
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    failed = next((number for number, cell in enumerate(code, start=1)
                   if any(output.get("output_type") == "error" for output in cell.get("outputs", []))), None)
    where = "a cell"
    if failed is not None:
        first_line = next((line for line in code[failed - 1].source.splitlines() if line.strip()), "")
        where = f"code cell {failed} (\"{first_line[:70]}\")"
    value = str(err.evalue).strip().splitlines()[0][:300] if str(err.evalue).strip() else ""
    return (f"{path}: {where} failed with {err.ename}{': ' + value if value else ''}\n"
            f"  open the notebook and run it to that cell to see the whole traceback; the file is unchanged")
