"""Turn a lesson written as a light "percent" script into a notebook.

Lessons are easier to review and diff as text, so each one is written as
``tools/lessons/NN_name.py`` with cells separated by marker lines:

    # %% [markdown]           a prose cell (each line starts with "# ")
    # %%                      a code cell
    # %% solution ID          an nbgrader solution cell with grade_id ID
    # %% tests ID POINTS      an nbgrader autograded test cell worth POINTS
    # %% answer ID POINTS     an nbgrader manually graded answer worth POINTS: a prose cell
                              (lines start with "# ") holding the model answer or marking
                              guide, which the student version replaces by "YOUR ANSWER HERE"

``python tools/build_notebook.py tools/lessons/00_audio_as_data.py`` writes
``notebooks/00_audio_as_data.ipynb`` without outputs; ``make notebooks`` then
executes it so the stored outputs match the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from mlm_lessons.atomic import atomic_path

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def _nbgrader(grade_id: str, *, solution: bool, points: int | float | None = None) -> dict:
    meta = {"grade": points is not None, "grade_id": grade_id, "locked": not solution,
            "schema_version": 3, "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _points(word: str) -> int | float:
    points = float(word)
    return int(points) if points.is_integer() else points   # as nbgrader's JupyterLab extension saves it


def _prose(body: str) -> str:
    return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())


def parse_cells(text: str) -> list:
    cells, header, lines = [], None, []

    def flush():
        if header is None:
            return
        body = "\n".join(lines).strip("\n")
        words = header[len("# %%"):].split()
        if words[:1] == ["[markdown]"]:
            cells.append(nbformat.v4.new_markdown_cell(_prose(body)))
        elif len(words) == 2 and words[0] == "solution":
            cells.append(nbformat.v4.new_code_cell(body, metadata=_nbgrader(words[1], solution=True)))
        elif len(words) == 3 and words[0] == "tests":
            cells.append(nbformat.v4.new_code_cell(
                body, metadata=_nbgrader(words[1], solution=False, points=_points(words[2]))))
        elif len(words) == 3 and words[0] == "answer":   # nbgrader's "Manually graded answer"
            cells.append(nbformat.v4.new_markdown_cell(
                _prose(body), metadata=_nbgrader(words[1], solution=True, points=_points(words[2]))))
        elif words:
            raise ValueError(f"unknown cell marker {header!r}; see the module docstring for the forms")
        else:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            header, lines = line, []
        else:
            lines.append(line)
    flush()
    return cells


def build(source: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = parse_cells(source.read_text())
    notebook.metadata.update({   # the names JupyterLab writes when it saves, so opening a lesson changes nothing
        "kernelspec": KERNELSPEC,
        "language_info": {"name": "python"},
    })
    target = ROOT / "notebooks" / f"{source.stem}.ipynb"
    with atomic_path(target) as temporary:   # an interrupted build never leaves half a lesson
        nbformat.write(notebook, str(temporary))
    return target


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(build(Path(name)))
