"""Graded exercises: student versions, validation and headless grading, on top of nbgrader.

The notebooks in ``notebooks/`` are the *instructor* versions. Their exercises use nbgrader's
own format: a solution cell (nbgrader metadata ``solution: true``) holding ``### BEGIN SOLUTION``
/ ``### END SOLUTION`` regions, followed by an autograded test cell (``grade: true``, ``points``,
``grade_id``) whose ``### BEGIN HIDDEN TESTS`` region students never see. A lesson may also hold
nbgrader *manually graded answers*: markdown cells (``grade: true``, ``solution: true``, ``points``)
whose instructor text is a model answer or marking guide. This module adds only
what a course without a full nbgrader set-up (course directory, gradebook database, exchange)
needs, and does it with nbgrader's own pieces:

* :func:`build_student_versions` applies the preprocessors of ``nbgrader generate_assignment``
  (locking, clearing solutions, outputs and hidden tests, checksums) to each notebook;
* :func:`validate` runs nbgrader's :class:`~nbgrader.validator.Validator`, the engine of
  ``nbgrader validate [--invert]``;
* :func:`grade_submission` does what ``nbgrader autograde`` does for one notebook: it puts the
  instructor's test cells back into the submission (nbgrader's *OverwriteCells* idea, with the
  instructor notebook standing in for the gradebook), runs it headless with nbclient in a fresh
  kernel under a memory limit and a per-cell and an overall time limit, in a temporary folder
  without notebooks, audits the kernel before and after each test (:mod:`mlm_lessons.grading_guard`),
  and scores each test cell with nbgrader's own rule (:func:`nbgrader.utils.determine_grade`). A
  broken or tampering submission scores zero where it is broken, with the reason; it never stops
  the grader. Manually graded answers are not scored: the report lists each with its points and
  the student's text, apart from the autograded total, for a person to grade. What this protects
  and what needs isolation: ``docs/instructors.md``.

Command line (see :func:`add_commands`)::

    python -m mlm_lessons assignments build --out dist/student/
    python -m mlm_lessons assignments grade SUBMISSION.ipynb|FOLDER [--json grades.json]
    python -m mlm_lessons assignments validate NOTEBOOK.ipynb [--invert]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbconvert.filters import strip_ansi
from nbgrader import utils as nbgrader_utils
from nbgrader.preprocessors import (
    CheckCellMetadata,
    ClearHiddenTests,
    ClearMarkScheme,
    ClearOutput,
    ClearSolutions,
    ComputeChecksums,
    LockCells,
)
from nbgrader.validator import Validator
from traitlets.config import Config

from mlm_lessons.atomic import atomic_path
from mlm_lessons.grading_guard import (AUDIT_MARK, MISSING, audit_source, import_statements, kernel_command, names_read,
                                      reference_descriptions)

COURSE_NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
"""The instructor notebooks this package ships with (the repository's ``notebooks/``)."""

CELL_TIMEOUT_S = 180
"""Default seconds one cell may run when grading: a whole lesson's CPU budget."""

TOTAL_TIMEOUT_S = 900
"""Default seconds one submission may run in all, so a stuck kernel cannot stall a class's grading."""

MEMORY_LIMIT_GB = 8
"""Default data memory of a grading kernel, in GiB: a lesson needs about 2; a runaway allocation meets a
``MemoryError`` in its cell instead of the machine's out-of-memory killer."""

# ``nbgrader generate_assignment``'s preprocessors, in its order, minus three: IncludeHeaderFooter
# and InstantiateTests do nothing without a header/footer or ``### AUTOTEST`` lines (which the
# course does not use; the latter would also need a kernel), and SaveCells writes to the gradebook
# database that this module replaces by the instructor notebook itself. ClearHiddenTests comes
# after the first checksums, as in nbgrader, so checksums are recomputed after it.
STUDENT_VERSION_PREPROCESSORS = (
    LockCells,
    ClearSolutions,
    ClearOutput,
    CheckCellMetadata,
    ComputeChecksums,
    ClearHiddenTests,
    ClearMarkScheme,
    ComputeChecksums,
    CheckCellMetadata,
)

ANSWER_PROMPT = ClearSolutions.text_stub.default_value
"""What a manually graded answer holds in a student version ("YOUR ANSWER HERE", nbgrader's prompt)."""

TO_GRADE_BY_HAND = "to grade by hand"
"""The reason a report gives for a manually graded answer that awaits a person."""

# nbgrader Validator's error for a solution cell left unchanged (a manually graded answer not given).
_NO_RESPONSE = "You did not provide a response."

# The execute reply nbclient reports for a cell it had to interrupt; its name marks a timeout.
_TIMEOUT_ERROR_NAME = "CellTimeoutError"


class NotANotebookError(ValueError):
    """A file given to the grader could not be read as a Jupyter notebook."""


# --------------------------------------------------------------------------------------------
# Student versions
# --------------------------------------------------------------------------------------------

def make_student_version(instructor: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of an instructor notebook (the input is not modified).

    Solution regions become ``raise NotImplementedError()`` stubs, a manually graded answer's
    text (the model answer) becomes nbgrader's prompt :data:`ANSWER_PROMPT`, hidden tests and
    outputs are removed, test cells are locked, and nbgrader checksums are recorded so that
    ``nbgrader validate`` can tell when a student edited a test cell.

    Raises:
        RuntimeError / nbgrader ValidationError: malformed nbgrader regions or metadata.
    """
    notebook = copy.deepcopy(instructor)
    resources: dict[str, Any] = {}
    for preprocessor_class in STUDENT_VERSION_PREPROCESSORS:
        notebook, resources = preprocessor_class().preprocess(notebook, resources)
    # Stored widget state is output too, and may show the instructor's results.
    notebook.metadata.pop("widgets", None)
    return notebook


def build_student_versions(notebooks: list[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """Write the student version of each instructor notebook to ``out_dir``, under the same name.

    Returns the paths written. Each file is written atomically, so an interrupted build never
    leaves a half-written notebook that still contains solutions.

    Raises:
        FileNotFoundError: a notebook does not exist.
        ValueError: a notebook's nbgrader regions or metadata are malformed (the message names it).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in map(Path, notebooks):
        instructor = read_notebook(path)
        try:
            student = make_student_version(instructor)
        except Exception as err:  # nbgrader raises RuntimeError and its own ValidationError
            raise ValueError(f"{path}: cannot make a student version: {err}") from err
        target = out_dir / path.name
        _write_atomically(student, target)
        written.append(target)
    return written


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

class Validation(NamedTuple):
    """Outcome of :func:`validate`: ``ok`` is what was asked for; ``message`` says why not."""

    ok: bool
    message: str


class _ValidatorInFolder(Validator):
    """nbgrader's Validator, running the kernel in a chosen folder instead of the notebook's.

    A student version in ``dist/student/`` must run where the lesson runs (``notebooks/``), so
    that its relative paths such as ``../data`` resolve as they will for students.
    """

    def __init__(self, working_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.working_dir = working_dir

    def _preprocess(self, nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
        # Validator.validate wraps this in chdir(notebook's folder); nbconvert starts the kernel
        # in the current folder, so changing it once more is all it takes.
        with nbgrader_utils.chdir(str(self.working_dir)):
            return super()._preprocess(nb)


def validate(path: str | os.PathLike, invert: bool = False, *, execute: bool = True,
             working_dir: str | os.PathLike | None = None,
             cell_timeout: int = CELL_TIMEOUT_S) -> Validation:
    """``nbgrader validate`` on one notebook, as a result rather than printed text.

    A manually graded answer fails it only when left as the student version's prompt (nbgrader
    checks its checksum, which only a student version has), so an instructor version passes.

    Args:
        path: the notebook.
        invert: like ``nbgrader validate --invert``: succeed when *no* test cell passes, which is
            what a student version must do.
        execute: run the notebook in a fresh kernel (nbgrader's behaviour). ``False`` judges the
            outputs stored in the file instead, which is instant for the course's notebooks
            because ``make notebooks`` stores their outputs and nbval re-checks them.
        working_dir: folder the kernel runs in; default: the notebook's own folder.
        cell_timeout: seconds each cell may run (nbgrader's default of 30 is too short for
            lessons that train models).

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    settings: dict[str, Any] = {"invert": invert}
    if not execute:
        settings["preprocessors"] = [CheckCellMetadata]
    validator = _ValidatorInFolder(Path(working_dir or path.parent).resolve(),
                                   config=Config({"Execute": {"timeout": cell_timeout}}), **settings)
    results = validator.validate(str(path))

    if results.get("type_changed"):
        return Validation(False, f"{len(results['type_changed'])} nbgrader cell(s) changed type")
    if results.get("changed"):
        return Validation(False, f"{len(results['changed'])} test cell(s) were edited")
    if invert:
        passed = results.get("passed", [])
        if passed:
            return Validation(False, f"{len(passed)} test cell(s) pass without a solution; the first:\n"
                                     + passed[0]["source"])
        return Validation(True, "no test cell passes")
    failed = results.get("failed", [])
    # nbgrader fails a manually graded answer left as its prompt, with this error and no other
    unanswered = [cell for cell in failed if cell["raw_error"] == _NO_RESPONSE]
    failed_tests = [cell for cell in failed if cell not in unanswered]
    blank_answers = f"{len(unanswered)} manually graded answer(s) not given" if unanswered else ""
    if failed_tests:
        first = failed_tests[0]
        return Validation(False, f"{len(failed_tests)} test cell(s) fail; the first:\n{first['source']}\n"
                                 f"error: {strip_ansi(first['raw_error']).strip().splitlines()[-1]}"
                                 + (f"\n{blank_answers}" if blank_answers else ""))
    if unanswered:
        return Validation(False, blank_answers)
    return Validation(True, "every test cell passes")


# --------------------------------------------------------------------------------------------
# Grading
# --------------------------------------------------------------------------------------------

class _Exercise(NamedTuple):
    """One autograded test cell of the instructor notebook, and the solution cells it checks."""

    grade_id: str
    max_points: float
    solution_ids: tuple[str, ...]


def find_instructor_notebook(submission: str | os.PathLike,
                             notebooks_dir: str | os.PathLike = COURSE_NOTEBOOKS) -> Path:
    """The instructor notebook a submission answers, found by file name.

    ``00_audio_as_data.ipynb`` matches ``notebooks/00_audio_as_data.ipynb``; so does a name that
    contains it, such as ``alice_00_audio_as_data.ipynb`` (learning platforms rename uploads).

    Raises:
        ValueError: no instructor notebook, or more than one, matches.
    """
    stem = Path(submission).stem
    candidates = sorted(Path(notebooks_dir).glob("*.ipynb"))
    exact = [path for path in candidates if path.stem == stem]
    if exact:
        return exact[0]
    contained = [path for path in candidates if path.stem in stem]
    if len(contained) == 1:
        return contained[0]
    if not contained:
        known = ", ".join(path.name for path in candidates) or "none"
        raise ValueError(f"no instructor notebook in {notebooks_dir} matches {Path(submission).name} "
                         f"(known: {known}); rename the file or pass --source")
    raise ValueError(f"{Path(submission).name} matches several instructor notebooks "
                     f"({', '.join(p.name for p in contained)}); pass --source")


def grade_submission(path: str | os.PathLike,
                     instructor_notebook: str | os.PathLike | nbformat.NotebookNode | None = None, *,
                     cell_timeout: float = CELL_TIMEOUT_S, total_timeout: float = TOTAL_TIMEOUT_S,
                     memory_limit_gb: float = MEMORY_LIMIT_GB, lesson_folder: str | os.PathLike | None = None,
                     notebooks_dir: str | os.PathLike = COURSE_NOTEBOOKS) -> dict:
    """Run a student's notebook headless against the instructor's tests and score each exercise.

    The submission's own cells are kept, except that every locked cell (each autograded test
    cell among them) is replaced by the instructor's version, matched by ``grade_id``, and
    restored if it was deleted: an edited or dropped test is the instructor's again, and hidden
    tests come back.

    It runs in a fresh kernel (its own process, under ``memory_limit_gb``) whose working folder is
    a temporary copy of the lesson's surroundings: links to the files beside the instructor
    notebook and to the folders beside that folder (so ``melody.txt`` and ``../data`` resolve as in
    the lesson), but no notebook. Before and after each test cell the kernel is audited
    (:mod:`mlm_lessons.grading_guard`): notebook code found in the machinery that runs and reports
    cells, or a name the test reads that no longer means what it means in a clean interpreter,
    scores that test zero with what was found. The instructor notebook is read before the run and
    compared after it: a submission that changed it scores zero and the file is put back.

    A test cell earns its points by nbgrader's rule: no error and nothing written to stderr. An
    exercise whose solution cell was deleted scores zero. Exceptions, timeouts, a dead kernel or
    a failure of the grader itself score zero with the reason; they are never raised.

    Manually graded answers are the student's cells as submitted (never overwritten) and are not
    scored: each is listed under ``"manual"`` with ``points`` ``None`` and the reason
    :data:`TO_GRADE_BY_HAND`, except one left as the prompt or emptied (0, as nbgrader scores an
    unchanged answer) or deleted (0). ``total`` and ``max_total`` are the autograded points only.

    Args:
        path: the submission.
        instructor_notebook: the notebook it answers, as a file or already read (then no file is
            compared after the run; see ``--source -`` in ``docs/instructors.md``); default: found by
            name in ``notebooks_dir``.
        cell_timeout: seconds a cell may run before it is interrupted.
        total_timeout: seconds the whole submission may run; cells after that are not run.
        memory_limit_gb: the kernel's data memory, in GiB (0: no limit); an allocation beyond it fails
            in the cell that makes it.
        lesson_folder: the folder whose files the lesson reads by relative path; default: the
            instructor notebook's folder (``notebooks_dir`` for a notebook given already read).
        notebooks_dir: where to look for the instructor notebook.

    Returns:
        ``{"notebook", "total", "max_total", "exercises": [{"grade_id", "points", "max_points",
        "passed", "reason"}], "manual": [{"grade_id", "points", "max_points", "reason", "answer"}]}``,
        with ``reason`` ``None`` for a passed exercise and ``answer`` the text of a manually graded
        answer (``None`` when its cell was deleted).

    Raises:
        FileNotFoundError: no such submission or instructor notebook.
        NotANotebookError: the submission is not a readable notebook.
        ValueError: no matching instructor notebook, or it has no autograded tests.
    """
    path = Path(path)
    if isinstance(instructor_notebook, nbformat.NotebookNode):
        source, instructor, instructor_bytes = None, instructor_notebook, None
        lesson_folder = Path(lesson_folder or notebooks_dir)
    else:
        source = Path(instructor_notebook or find_instructor_notebook(path, notebooks_dir))
        instructor_bytes = source.read_bytes() if source.is_file() else None
        instructor = read_notebook(source)
        lesson_folder = Path(lesson_folder or source.resolve().parent)
    exercises = _exercises(instructor)
    if not exercises:
        raise ValueError(f"{source or 'the instructor notebook'} has no autograded test cells to grade with")
    submission = read_notebook(path)

    present_ids = {_grade_id(cell) for cell in submission.cells}
    notebook = _overwrite_protected_cells(submission, instructor)
    with _working_folder(lesson_folder) as working_dir:
        tests = {index: names_read(cell.source) for index, cell in enumerate(notebook.cells) if _is_test_cell(cell)}
        reference = _reference_descriptions(tuple(import_statements(
            [cell.source for cell in instructor.cells if cell.cell_type == "code"])),
            tuple(sorted({name for names in tests.values() for name in names})), str(working_dir))
        outcomes = _execute(notebook, working_dir=working_dir, cell_timeout=cell_timeout,
                            total_timeout=total_timeout, memory_limit=int(memory_limit_gb * 2**30),
                            tests=tests, reference=reference)
    if instructor_bytes is not None and source.read_bytes() != instructor_bytes:
        with atomic_path(source) as tmp:
            tmp.write_bytes(instructor_bytes)
        return _zero_report(path, instructor, "the submission changed the instructor notebook, which was put back")

    cells_by_id = {_grade_id(cell): (index, cell) for index, cell in enumerate(notebook.cells)
                   if _grade_id(cell) is not None}
    results = []
    for exercise in exercises:
        deleted = [sid for sid in exercise.solution_ids if sid not in present_ids]
        index, test_cell = cells_by_id[exercise.grade_id]
        if deleted:
            points, reason = 0.0, "solution cell deleted"
        else:
            points, reason = _score_test_cell(test_cell, outcomes[index])
            failed_solution = _first_failed_solution(exercise, cells_by_id, outcomes)
            if reason and failed_solution:
                reason += f" (after solution cell {failed_solution})"
        results.append({"grade_id": exercise.grade_id, "points": points, "max_points": exercise.max_points,
                        "passed": points == exercise.max_points, "reason": reason})
    return {"notebook": str(path), "total": sum(r["points"] for r in results),
            "max_total": sum(e.max_points for e in exercises), "exercises": results,
            "manual": [_manual_result(answer, submission) for answer in _manual_answers(instructor)]}


def grade_folder(folder: str | os.PathLike,
                 instructor_notebook: str | os.PathLike | nbformat.NotebookNode | None = None, *,
                 notebooks_dir: str | os.PathLike = COURSE_NOTEBOOKS, **options: Any) -> list[dict]:
    """Grade every ``*.ipynb`` under ``folder`` (sorted, checkpoints skipped), one report each.

    A file that is not a readable notebook scores zero on every exercise rather than stopping the
    class's grading. ``options`` are those of :func:`grade_submission` (limits, ``lesson_folder``).

    Raises:
        FileNotFoundError: no such folder.
        ValueError: a submission matches no instructor notebook (a misnamed file is the
            instructor's to fix, not the student's zero).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder at {folder}")
    submissions = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    # Match every file before running any, so a misnamed one stops the run at once, not hours in.
    sources = [instructor_notebook or find_instructor_notebook(path, notebooks_dir) for path in submissions]
    reports = []
    for submission, source in zip(submissions, sources):
        try:
            reports.append(grade_submission(submission, source, notebooks_dir=notebooks_dir, **options))
        except NotANotebookError as err:
            reason = f"not graded: not a readable notebook ({type(err.__cause__).__name__})"
            instructor = source if isinstance(source, nbformat.NotebookNode) else read_notebook(source)
            reports.append(_zero_report(submission, instructor, reason))
    return reports


def format_report(report: dict) -> str:
    """A report as a table a person reads: one line per exercise, one per manually graded answer
    (``?`` points while it awaits grading by hand), then the autograded total."""
    manual = report["manual"]
    width = max([len("exercise")] + [len(e["grade_id"]) for e in report["exercises"] + manual])
    lines = [f"{report['notebook']}",
             f"  {'exercise':<{width}}  {'points':>9}  result"]
    for exercise in report["exercises"]:
        points = f"{exercise['points']:g}/{exercise['max_points']:g}"
        lines.append(f"  {exercise['grade_id']:<{width}}  {points:>9}  {exercise['reason'] or 'passed'}")
    for answer in manual:
        points = f"{'?' if answer['points'] is None else format(answer['points'], 'g')}/{answer['max_points']:g}"
        lines.append(f"  {answer['grade_id']:<{width}}  {points:>9}  {answer['reason']}")
    points = f"{report['total']:g}/{report['max_total']:g}"
    total = f"  {'total':<{width}}  {points:>9}"
    if manual:
        total += f"  autograded; {points_to_grade_by_hand(report):g} points to grade by hand"
    lines.append(total)
    return "\n".join(lines)


def points_to_grade_by_hand(report: dict) -> float:
    """The points of a report's manually graded answers that await a person (not the unanswered ones)."""
    return sum(answer["max_points"] for answer in report["manual"] if answer["points"] is None)


def _exercises(instructor: nbformat.NotebookNode) -> list[_Exercise]:
    """Autograded test cells in order, each with the solution cells since the previous one.

    Manually graded answers are not exercises (see :func:`_manual_answers`); nbgrader "task" cells,
    which the course does not use, are ignored.
    """
    exercises, pending_solutions = [], []
    for cell in instructor.cells:
        if "nbgrader" not in cell.metadata:
            continue
        if nbgrader_utils.is_solution(cell) and not nbgrader_utils.is_grade(cell):
            pending_solutions.append(_grade_id(cell))
        elif _is_test_cell(cell):
            exercises.append(_Exercise(_grade_id(cell), float(cell.metadata.nbgrader["points"]),
                                       tuple(pending_solutions)))
            pending_solutions = []
    return exercises


def _is_test_cell(cell: nbformat.NotebookNode) -> bool:
    """An autograded test cell: a graded code cell that is not also a solution."""
    return cell.cell_type == "code" and nbgrader_utils.is_grade(cell) and not nbgrader_utils.is_solution(cell)


def _manual_answers(instructor: nbformat.NotebookNode) -> list[tuple[str, float]]:
    """The manually graded answers (graded solution cells), in order, as ``(grade_id, points)``."""
    return [(_grade_id(cell), float(cell.metadata.nbgrader["points"])) for cell in instructor.cells
            if "nbgrader" in cell.metadata and nbgrader_utils.is_grade(cell) and nbgrader_utils.is_solution(cell)]


def _manual_result(answer: tuple[str, float], submission: nbformat.NotebookNode) -> dict:
    """A manually graded answer's entry in a report: awaiting a person, or 0 if left blank or deleted."""
    grade_id, max_points = answer
    cell = next((cell for cell in submission.cells if _grade_id(cell) == grade_id), None)
    if cell is None:
        points, reason, text = 0.0, "answer cell deleted", None
    elif cell.source.strip() in ("", ANSWER_PROMPT):
        points, reason, text = 0.0, "not answered", cell.source
    else:
        points, reason, text = None, TO_GRADE_BY_HAND, cell.source
    return {"grade_id": grade_id, "points": points, "max_points": max_points, "reason": reason, "answer": text}


def _grade_id(cell: nbformat.NotebookNode) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _overwrite_protected_cells(submission: nbformat.NotebookNode,
                               instructor: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook to execute: the submission with the instructor's locked cells put back.

    Solution cells, manually graded answers among them, are never locked (nbgrader's
    :func:`~nbgrader.utils.is_locked`), so they stay the student's.

    Locked cells (every autograded test cell is one) replace the submission's cell of the same
    ``grade_id``; a deleted one is inserted after the nearest earlier nbgrader cell that is
    present, as nbgrader's OverwriteCells does with ``add_missing_cells``. Duplicated locked cells
    are kept once. Outputs are cleared and the instructor's kernel is used.
    """
    protected = {_grade_id(cell): cell for cell in instructor.cells if nbgrader_utils.is_locked(cell)}
    merged, placed = [], set()
    for cell in submission.cells:
        grade_id = _grade_id(cell)
        if grade_id in protected:
            if grade_id in placed:
                continue
            cell = protected[grade_id]
            placed.add(grade_id)
        merged.append(copy.deepcopy(cell))

    instructor_ids = [_grade_id(cell) for cell in instructor.cells if _grade_id(cell) is not None]
    for position, grade_id in enumerate(instructor_ids):
        if grade_id not in protected or grade_id in placed:
            continue
        merged_ids = [_grade_id(cell) for cell in merged]
        earlier_present = [i for i in instructor_ids[:position] if i in merged_ids]
        insert_at = merged_ids.index(earlier_present[-1]) + 1 if earlier_present else 0
        merged.insert(insert_at, copy.deepcopy(protected[grade_id]))
        placed.add(grade_id)

    notebook = nbformat.v4.new_notebook(metadata=copy.deepcopy(instructor.metadata))
    for cell in merged:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.cells = merged
    return notebook


class _CellOutcome(NamedTuple):
    """How one executed (or skipped) code cell ended: ``error`` is None when it ran cleanly."""

    error: str | None
    ran: bool = True


_GRADING_KERNEL = "mlm-lessons-grading"


@contextlib.contextmanager
def _working_folder(lesson_folder: Path):
    """A temporary folder to grade in, laid out like the lesson's surroundings without its notebooks:
    ``ROOT/<lesson folder>/`` (the working directory) links to each file in ``lesson_folder`` that is not a
    notebook, and ``ROOT/<other folder>`` to each entry beside it, so relative paths (``melody.txt``,
    ``../data``) resolve as they do in the lesson. Removed afterwards."""
    lesson_folder = lesson_folder.resolve()
    with tempfile.TemporaryDirectory(prefix="mlm-lessons-grading-") as root:
        working_dir = Path(root) / lesson_folder.name
        working_dir.mkdir()
        for entry in lesson_folder.iterdir():
            if entry.suffix != ".ipynb" and entry.name != ".ipynb_checkpoints":
                (working_dir / entry.name).symlink_to(entry)
        for entry in lesson_folder.parent.iterdir():
            if entry != lesson_folder and not (Path(root) / entry.name).exists():
                (Path(root) / entry.name).symlink_to(entry)
        yield working_dir


@functools.lru_cache(maxsize=16)
def _reference_descriptions(imports: tuple[str, ...], names: tuple[str, ...], cwd: str) -> dict[str, str]:
    """:func:`~mlm_lessons.grading_guard.reference_descriptions`, once per lesson in a class's grading."""
    return reference_descriptions(list(imports), list(names), cwd=cwd)


def _kernel_manager(folder: Path, memory_limit: int) -> AsyncKernelManager:
    """A kernel manager whose kernel runs :data:`~mlm_lessons.grading_guard.LAUNCHER` (its kernel spec is
    written to ``folder``)."""
    spec_dir = folder / "kernels" / _GRADING_KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": kernel_command(memory_limit), "display_name": "mlm_lessons grading", "language": "python"}))
    return AsyncKernelManager(kernel_name=_GRADING_KERNEL,
                              kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder / "kernels")]))


def _execute(notebook: nbformat.NotebookNode, *, working_dir: Path, cell_timeout: float, total_timeout: float,
             memory_limit: int = 0, tests: dict[int, list[str]] | None = None,
             reference: dict[str, str] | None = None) -> dict[int, _CellOutcome]:
    """Run the code cells in order in a fresh grading kernel; their outcomes by cell index.

    Errors in cells are recorded and execution goes on (``allow_errors``). A cell running past
    its time is interrupted and the next cell runs. Once the overall time is spent, or the kernel
    dies, or anything else goes wrong, the remaining cells are recorded as not run, with why.
    Each cell of ``tests`` (index -> the names it reads) is audited before and after it runs, the
    names compared with ``reference``; what the audits find is the test's error.
    """
    tests, reference = tests or {}, reference or {}
    replies: dict[int, dict] = {}

    def record_reply(cell, cell_index, execute_reply):  # nbclient's on_cell_executed hook
        replies[cell_index] = execute_reply

    client = NotebookClient(
        notebook, km=_kernel_manager(working_dir.parent, memory_limit), allow_errors=True,
        interrupt_on_timeout=True, shutdown_kernel="immediate",
        # Without this, nbclient would wait for the interrupted cell's reply, forever if the
        # submission ignores KeyboardInterrupt; with it, it moves on to the next cell.
        error_on_timeout={"ename": _TIMEOUT_ERROR_NAME, "evalue": "", "traceback": []},
        resources={"metadata": {"path": str(working_dir)}}, on_cell_executed=record_reply)

    def audit(names: list[str]) -> list[str]:
        """What one audit of the kernel finds: problems, and names that differ from the reference."""
        cell = nbformat.v4.new_code_cell(audit_source(names))
        client.timeout = max(1, math.floor(min(60, deadline - time.monotonic())))
        notebook.cells.append(cell)  # nbclient stores an executed cell back at its index
        try:
            client.execute_cell(cell, len(notebook.cells) - 1, store_history=False)
        finally:
            notebook.cells.pop()
        lines = [line for output in cell.outputs if output.output_type == "stream"
                 for line in output.text.splitlines() if line.startswith(AUDIT_MARK)]
        if not lines:
            return ["the grader's audit of the kernel did not run as written (the notebook changes how cells run)"]
        report = json.loads(lines[-1][len(AUDIT_MARK):])
        found = list(report["problems"])
        for name, description in report["names"].items():
            expected = reference.get(name, MISSING)
            if MISSING not in (expected, description) and description != expected:
                found.append(f"{name} is {description}, not {expected}")
        return found

    outcomes: dict[int, _CellOutcome] = {}
    pending = [index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    deadline = time.monotonic() + total_timeout
    stop_reason = None
    try:
        with client.setup_kernel():
            while pending:
                index = pending[0]
                remaining = deadline - time.monotonic()
                if remaining < 1:
                    stop_reason = f"not run: grading time limit of {total_timeout:g} s reached"
                    break
                tampering = audit(tests[index]) if index in tests else []
                client.timeout = max(1, math.floor(min(cell_timeout, deadline - time.monotonic())))
                try:
                    client.execute_cell(notebook.cells[index], index)
                except DeadKernelError:
                    outcomes[pending.pop(0)] = _CellOutcome("the kernel died while running this cell")
                    stop_reason = "not run: the kernel died in an earlier cell"
                    break
                error = _reply_error(replies.get(index), client.timeout)
                if index in tests:
                    tampering += [problem for problem in audit(tests[index]) if problem not in tampering]
                if tampering:
                    more = f"; and {len(tampering) - 3} more" if len(tampering) > 3 else ""
                    shown = "; ".join(tampering[:3]) + more
                    error = f"the submission changed how tests run: {shown}"
                outcomes[pending.pop(0)] = _CellOutcome(error)
    except Exception as err:  # the grader must report, never crash, whatever the submission did
        stop_reason = f"not run: grader error: {type(err).__name__}: {err}"
    for index in pending:
        outcomes[index] = _CellOutcome(stop_reason, ran=False)
    return outcomes


def _reply_error(reply: dict | None, timeout: int) -> str | None:
    """The error an execute reply reports, as ``"Name: message"``; None when the cell succeeded."""
    if reply is None or reply["content"]["status"] != "error":
        return None
    content = reply["content"]
    if content["ename"] == _TIMEOUT_ERROR_NAME:
        return f"timed out after {timeout} s"
    return f"{content['ename']}: {content['evalue']}" if content["evalue"] else content["ename"]


def _score_test_cell(cell: nbformat.NotebookNode, outcome: _CellOutcome) -> tuple[float, str | None]:
    """Points for an executed test cell (nbgrader's rule) and, unless full marks, the reason."""
    if outcome.error is not None:
        return 0.0, outcome.error
    points, max_points = nbgrader_utils.determine_grade(cell)
    if points == max_points:
        return float(points), None
    stderr = "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    if stderr:
        return float(points), f"wrote to stderr, which nbgrader counts as failing: {stderr.strip().splitlines()[-1]}"
    return float(points), "partial credit"


def _first_failed_solution(exercise: _Exercise, cells_by_id: dict, outcomes: dict[int, _CellOutcome]) -> str | None:
    """The first of an exercise's solution cells that failed, as ``"ID: Name: message"``, or None."""
    for solution_id in exercise.solution_ids:
        index, _ = cells_by_id[solution_id]
        outcome = outcomes.get(index)
        if outcome is not None and outcome.ran and outcome.error:
            return f"{solution_id}: {outcome.error}"
    return None


def _zero_report(submission: Path, instructor: nbformat.NotebookNode, reason: str) -> dict:
    """A report giving zero on every exercise and manually graded answer, for the same reason."""
    exercises = _exercises(instructor)
    return {"notebook": str(submission), "total": 0.0, "max_total": sum(e.max_points for e in exercises),
            "exercises": [{"grade_id": e.grade_id, "points": 0.0, "max_points": e.max_points,
                           "passed": False, "reason": reason} for e in exercises],
            "manual": [{"grade_id": grade_id, "points": 0.0, "max_points": points, "reason": reason, "answer": None}
                       for grade_id, points in _manual_answers(instructor)]}


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def read_notebook(path: str | os.PathLike) -> nbformat.NotebookNode:
    """Read a notebook (nbformat 4).

    Raises:
        FileNotFoundError: no such file.
        NotANotebookError: the file is not JSON in Jupyter's notebook format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises JSON, Unicode and its own reader errors
        raise NotANotebookError(f"{path} is not a readable notebook ({type(err).__name__})") from err


def _write_atomically(notebook: nbformat.NotebookNode, target: Path) -> None:
    """Write to a temporary file beside ``target`` and rename it, so readers never see half a file."""
    with atomic_path(target) as tmp:
        nbformat.write(notebook, str(tmp))


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``assignments build|grade|validate`` on the package's command line."""
    assignments = subparsers.add_parser(
        "assignments", help="student versions, validation and grading of the exercises",
        description="Graded exercises with nbgrader's format; see docs/instructors.md.")
    commands = assignments.add_subparsers(dest="assignments_command", required=True)

    build = commands.add_parser("build", help="write student versions (no solutions, hidden tests or outputs)")
    build.add_argument("notebooks", nargs="*", help="instructor notebooks (default: notebooks/*.ipynb)")
    build.add_argument("--out", default="dist/student", help="output folder (default: dist/student)")
    build.set_defaults(run=_build_command)

    grade = commands.add_parser("grade", help="run submissions headless and score each exercise")
    grade.add_argument("submissions", nargs="+", help="submitted notebooks, or folders of them")
    grade.add_argument("--source", help="the instructor notebook (default: found by file name in notebooks/); "
                       "'-' reads it from standard input, for grading where the file is hidden")
    grade.add_argument("--lesson-folder", metavar="DIR",
                       help="the folder whose files the lesson reads (default: the instructor notebook's)")
    grade.add_argument("--json", metavar="PATH", help="also write the report(s) as JSON ('-' for stdout)")
    grade.add_argument("--timeout", type=float, default=CELL_TIMEOUT_S,
                       help=f"seconds a cell may run (default: {CELL_TIMEOUT_S})")
    grade.add_argument("--total-timeout", type=float, default=TOTAL_TIMEOUT_S,
                       help=f"seconds a submission may run in all (default: {TOTAL_TIMEOUT_S})")
    grade.add_argument("--memory-limit", type=float, default=MEMORY_LIMIT_GB, metavar="GB",
                       help=f"data memory of each submission's kernel, in GiB; 0 for none (default: {MEMORY_LIMIT_GB})")
    grade.set_defaults(run=_grade_command)

    check = commands.add_parser("validate", help="nbgrader validate, run in the lesson's folder")
    check.add_argument("notebooks", nargs="+", help="instructor or student versions")
    check.add_argument("--invert", action="store_true", help="succeed only if no test passes (student versions)")
    check.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S,
                       help=f"seconds a cell may run (default: {CELL_TIMEOUT_S})")
    check.set_defaults(run=_validate_command)


def _build_command(args: argparse.Namespace) -> None:
    notebooks = args.notebooks or sorted(COURSE_NOTEBOOKS.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no notebooks in {COURSE_NOTEBOOKS}")
    for path in build_student_versions(notebooks, args.out):
        print(f"wrote {path}")


def _grade_command(args: argparse.Namespace) -> None:
    options = {"cell_timeout": args.timeout, "total_timeout": args.total_timeout, "memory_limit_gb": args.memory_limit,
               "lesson_folder": args.lesson_folder}
    source = args.source
    if source == "-":   # read once, before any submission runs: the file itself may be out of reach
        try:
            source = nbformat.reads(sys.stdin.read(), as_version=4)
        except Exception as err:
            raise NotANotebookError(f"--source -: standard input is not a notebook ({type(err).__name__})") from err
    if args.json and args.json != "-":   # before grading anything: a class's grading takes a while
        json_path = Path(args.json)
        if json_path.is_dir():
            raise ValueError(f"--json {json_path} is a folder; name the file to write, e.g. "
                             f"{json_path / 'grades.json'}")
        if not json_path.parent.is_dir():
            raise ValueError(f"--json {json_path}: there is no folder {json_path.parent} to write it in")
    reports = []
    for target in map(Path, args.submissions):
        if target.is_dir():
            reports += grade_folder(target, source, **options)
        else:
            reports.append(grade_submission(target, source, **options))
    if not reports:
        raise ValueError(f"no notebooks (*.ipynb) found in {', '.join(args.submissions)}; point grade at the "
                         "submitted notebooks or the folder that holds them")
    # With "--json -" the JSON alone goes to stdout, so it can be piped; the tables go to stderr.
    table_stream = sys.stderr if args.json == "-" else sys.stdout
    print("\n\n".join(format_report(report) for report in reports), file=table_stream)
    if len(reports) > 1:
        print("\nsummary", file=table_stream)
        for report in reports:
            by_hand = points_to_grade_by_hand(report)
            pending = f"  (and {by_hand:g} points to grade by hand)" if by_hand else ""
            print(f"  {report['total']:>6g}/{report['max_total']:<6g} {report['notebook']}{pending}",
                  file=table_stream)
    if args.json:
        # One submission given as a file: its report; several or a folder: a list of reports.
        single = len(args.submissions) == 1 and not Path(args.submissions[0]).is_dir()
        text = json.dumps(reports[0] if single else reports, indent=2) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            with atomic_path(args.json) as tmp:
                tmp.write_text(text)


def _validate_command(args: argparse.Namespace) -> None:
    failures = 0
    for path in map(Path, args.notebooks):
        try:  # a student version runs where its lesson runs, so that relative paths resolve
            working_dir = find_instructor_notebook(path).parent
        except ValueError:
            working_dir = path.parent
        outcome = validate(path, invert=args.invert, working_dir=working_dir, cell_timeout=args.timeout)
        print(f"{path}: {'ok' if outcome.ok else 'FAILED'}: {outcome.message}")
        failures += not outcome.ok
    if failures:
        raise SystemExit(1)
