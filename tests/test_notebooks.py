"""Static checks of the stored lessons (nbval executes them; these check their form).

* each notebook is what ``tools/build_notebook.py`` makes from its text source, so the
  two cannot drift apart;
* stored outputs exist with execution counts (nbval needs them; GitHub shows them);
* exercises use nbgrader's format: every solution cell has markers and is followed by
  a graded test cell with points; a manually graded answer is a prose cell with points;
* each notebook is stored as JupyterLab saves it, so opening a lesson does not change it.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from _build_notebook import build_notebook

ROOT = Path(__file__).resolve().parent.parent
LESSON_SOURCES = sorted((ROOT / "tools" / "lessons").glob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))



def test_every_lesson_source_has_a_notebook_and_back():
    assert LESSON_SOURCES, "no lessons found in tools/lessons"
    assert {p.stem for p in LESSON_SOURCES} == {p.stem for p in NOTEBOOKS}


@pytest.mark.parametrize("source", LESSON_SOURCES, ids=lambda p: p.stem)
def test_notebook_matches_its_source(source):
    stored = nbformat.read(ROOT / "notebooks" / f"{source.stem}.ipynb", as_version=4)
    built = build_notebook.parse_cells(source.read_text())
    def form(cell):   # what the source decides: the kind of cell, its text and its nbgrader settings
        return cell.cell_type, cell.source, cell.metadata.get("nbgrader")

    assert [form(c) for c in stored.cells] == [form(c) for c in built], (
        f"notebooks/{source.stem}.ipynb differs from {source.relative_to(ROOT)}; rebuild it with "
        f"python tools/build_notebook.py {source.relative_to(ROOT)} && make notebooks"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_stored_as_jupyterlab_saves_them(path):
    """JupyterLab names the kernel "Python 3 (ipykernel)", nbgrader's extension saves whole points as
    integers, and the file is nbformat's serialisation: a lesson opened and autosaved stays unchanged."""
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    assert raw["metadata"]["kernelspec"] == build_notebook.KERNELSPEC
    points = [cell["metadata"]["nbgrader"]["points"] for cell in raw["cells"]
              if "points" in cell["metadata"].get("nbgrader", {})]
    assert not [value for value in points if isinstance(value, float) and value.is_integer()], (
        f"{path.name} stores whole points as floats (2.0); JupyterLab would rewrite them as 2")
    assert text == nbformat.writes(nbformat.reads(text, as_version=4)) + "\n"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stored_in_order(path):
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name} is not executed top to bottom; run make notebooks"
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{path.name} stores an error output: {errors[0].get('ename')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercises_use_the_nbgrader_format(path):
    cells = nbformat.read(path, as_version=4).cells
    grade_ids = []
    for index, cell in enumerate(cells):
        meta = cell.metadata.get("nbgrader")
        if not meta:
            continue
        grade_ids.append(meta["grade_id"])
        if meta["solution"] and meta["grade"]:   # a manually graded answer: a model answer, no test of its own
            assert cell.cell_type == "markdown" and meta["points"] > 0 and not meta["locked"], (
                f"manually graded answer {meta['grade_id']} in {path.name} is not a prose cell with points")
        elif meta["solution"]:
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
            following = next(c for c in cells[index + 1:] if c.cell_type == "code")
            test_meta = following.metadata.get("nbgrader", {})
            assert test_meta.get("grade") and test_meta.get("points", 0) > 0, (
                f"solution cell {meta['grade_id']} in {path.name} is not followed by a graded test cell")
        elif meta["grade"]:
            assert meta["locked"] and "assert" in cell.source
    assert grade_ids, f"{path.name} has no exercises"
    assert len(grade_ids) == len(set(grade_ids)), f"duplicate grade_id in {path.name}"


@pytest.mark.parametrize("source", LESSON_SOURCES, ids=lambda p: p.stem)
def test_widget_labels_have_room(source):
    """ipywidgets cuts a description longer than its default 8em width ("flute → gu…"): a widget with a
    description must size it with style={"description_width": "initial"}."""
    import ast

    code = "\n".join(line for line in source.read_text().splitlines() if not line.startswith("%"))
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.endswith("Slider"):
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            if "description" in keywords:
                style = keywords.get("style")
                assert style is not None and "description_width" in ast.unparse(style), (
                    f"{source.name}, line {node.lineno}: give the slider's description room with "
                    "style={'description_width': 'initial'}")


def test_make_lab_trusts_the_lessons_before_opening_them(tmp_path, monkeypatch):
    """Untrusted, JupyterLab strips a lesson's stored audio players and widgets; `make lab` runs the
    `trust` step first, whose command signs a stored lesson as trusted."""
    from nbformat.sign import NotebookNotary

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab: trust\b", makefile, re.M), "make lab must run the trust step first"
    command = re.search(r"^trust:.*\n\t(.+)$", makefile, re.M).group(1)
    assert command == "$(VENV)/bin/jupyter trust notebooks/*.ipynb"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))     # a signature database of our own
    lesson = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], lesson)
    assert not NotebookNotary().check_signature(nbformat.read(lesson, as_version=4))   # as in a fresh clone
    subprocess.run([sys.executable, "-m", "jupyter", "trust", str(lesson)], check=True, env=os.environ,
                   capture_output=True)
    assert NotebookNotary().check_signature(nbformat.read(lesson, as_version=4))


def test_the_float_kernels_check_runs_what_make_test_runs_under_every_supported_setting():
    """tools/check_float_kernels.py runs the unit tests and nbval with the Makefile's own flags, under each
    ATEN_CPU_CAPABILITY this CPU can run (``default`` first, never one above the CPU's own)."""
    spec = importlib.util.spec_from_file_location("check_float_kernels", ROOT / "tools" / "check_float_kernels.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    makefile = (ROOT / "Makefile").read_text()
    nbval_flags = re.search(r"^nbval:.*\n\t\$\(PY\) -m pytest (.+) notebooks/ -q$", makefile, re.M).group(1).split()
    (unit_name, unit), (_, lessons) = check.commands(["03", "05"], unit=True)
    assert unit[1:4] == ["-m", "pytest", "tests/"]
    assert lessons[3:3 + len(nbval_flags)] == nbval_flags
    assert [Path(path).name[:2] for path in lessons if path.endswith(".ipynb")] == ["03", "05"]
    supported = check.supported_capabilities()
    assert supported[0] == "default" and torch.backends.cpu.get_cpu_capability().lower() in supported + ["default"]
    assert re.search(r"^unit-plain-kernels:.*\n\tATEN_CPU_CAPABILITY=default OMP_NUM_THREADS=1 ", makefile, re.M)
    assert re.search(r"^test: unit unit-plain-kernels nbval\b", makefile, re.M)
