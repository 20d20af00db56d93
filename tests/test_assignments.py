"""Graded exercises: student versions, nbgrader validation and headless grading.

Two kinds of notebook are checked:

* ``tests/fixtures/assignments/scales.ipynb``, a three-exercise lesson in the course's nbgrader
  format, with one manually graded answer, that executes in under a second. Everything that needs
  a kernel is proved on it: the instructor version validates, the student version fails
  validation, and a folder of sample submissions made from the student version (full, partial,
  wrong, exception, infinite loop, deleted cells, an edited test, a dying kernel, a file that is
  not a notebook) grades as expected in one command, the manual answer kept as the student wrote
  it and left to grade by hand.
* every lesson in ``notebooks/``, checked without executing it (see each test's docstring for
  why and for what stands in for execution), so the tests pass as lessons appear.
"""

import argparse
import ast
import copy
import io
import json
import shutil
from pathlib import Path

import nbformat
import pytest

from mlm_lessons import assignments
from mlm_lessons.notebook_runner import execute_notebook
from _build_notebook import build_notebook

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "assignments" / "scales.ipynb"
LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 3  # the infinite-loop submission costs this much


def run_command(*argv: str) -> None:
    """Parse and run an ``assignments`` command as ``python -m mlm_lessons`` will."""
    parser = argparse.ArgumentParser(prog="python -m mlm_lessons")
    assignments.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["assignments", *argv])
    args.run(args)


def grade_ids(notebook, *, graded: bool) -> list[str]:
    return [c.metadata.nbgrader["grade_id"] for c in notebook.cells
            if "nbgrader" in c.metadata and c.metadata.nbgrader["grade"] == graded]


def is_manual_answer(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("solution") and meta.get("grade"))


def secret_lines(notebook) -> set[str]:
    """Lines inside solution and hidden-test regions, or in a manually graded answer (the model answer),
    that appear nowhere else in the notebook."""
    inside, outside = set(), set()
    for cell in notebook.cells:
        if is_manual_answer(cell):
            inside |= {line.strip() for line in cell.source.splitlines() if line.strip()}
            continue
        region = None
        for line in cell.source.splitlines():
            text = line.strip()
            if text in ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS"):
                region = text
            elif text in ("### END SOLUTION", "### END HIDDEN TESTS"):
                region = None
            elif text:
                (inside if region else outside).add(text)
    return inside - outside


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assignments.build_student_versions([FIXTURE, *LESSONS], out)
    return out


# --- student versions --------------------------------------------------------------------------

@pytest.mark.parametrize("instructor_path", [FIXTURE, *LESSONS], ids=lambda p: p.stem)
def test_student_version_hides_solutions_hidden_tests_and_outputs(instructor_path, student_dir):
    instructor = nbformat.read(instructor_path, as_version=4)
    student_path = student_dir / instructor_path.name
    student = nbformat.read(student_path, as_version=4)
    text = student_path.read_text()

    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    # Whole lines, not substrings: a secret line such as "stop_token=melody.EOS)" may be part of a longer
    # visible line (the exercise's statement quotes the call it asks for).
    student_lines = {line.strip() for cell in student.cells for line in cell.source.splitlines()}
    leaked = [line for line in secret_lines(instructor) if line in student_lines]
    assert not leaked, f"solution or hidden-test text in the student version: {leaked[:3]}"
    assert not [c for c in student.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]

    # Same cells in the same order; only nbgrader cells differ, and they are stubbed or locked.
    assert len(student.cells) == len(instructor.cells)
    for theirs, ours in zip(instructor.cells, student.cells):
        meta = ours.metadata.get("nbgrader")
        if meta is None:
            assert ours.source == theirs.source
        elif is_manual_answer(ours):  # nbgrader's prompt for a manual answer, left editable
            assert ours.source == assignments.ANSWER_PROMPT and meta["checksum"] and not meta["locked"]
        elif meta["solution"]:
            assert "raise NotImplementedError()" in ours.source and meta["checksum"]
        elif meta["grade"]:
            assert ours.metadata["editable"] is False and ours.metadata["deletable"] is False
            assert meta["checksum"] and meta["points"] == theirs.metadata.nbgrader["points"]


def test_an_answer_marker_makes_a_manually_graded_answer_that_students_never_see(tmp_path):
    """``# %% answer ID POINTS`` in a lesson source: nbgrader's manually graded answer (a prose cell with
    points), whose model answer the student version replaces by nbgrader's prompt; the lesson still validates."""
    source = ("# %%\nx = 1\n"
              "# %% answer ex1_why 3\n# Model answer: because the *octave* doubles the frequency.\n")
    instructor = nbformat.v4.new_notebook(cells=build_notebook.parse_cells(source))
    answer = instructor.cells[1]
    assert answer.cell_type == "markdown"
    assert answer.source == "Model answer: because the *octave* doubles the frequency."
    assert answer.metadata == {"nbgrader": {"grade": True, "solution": True, "locked": False, "task": False,
                                            "grade_id": "ex1_why", "points": 3, "schema_version": 3}}
    assert assignments.make_student_version(instructor).cells[1].source == assignments.ANSWER_PROMPT
    nbformat.write(instructor, tmp_path / "lesson.ipynb")
    assert assignments.validate(tmp_path / "lesson.ipynb", execute=False).ok


def test_build_writes_only_finished_files_and_names_a_broken_notebook(tmp_path):
    broken = nbformat.read(FIXTURE, as_version=4)
    solution = next(c for c in broken.cells if c.metadata.get("nbgrader", {}).get("solution"))
    solution.source = solution.source.replace("### END SOLUTION", "")
    nbformat.write(broken, tmp_path / "broken.ipynb")

    run_command("build", str(FIXTURE), "--out", str(tmp_path / "out"))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["scales.ipynb"]  # no temporary files
    with pytest.raises(ValueError, match="broken.ipynb: cannot make a student version: no end solution"):
        assignments.build_student_versions([tmp_path / "broken.ipynb"], tmp_path / "out")
    assert not (tmp_path / "out" / "broken.ipynb").exists()


# --- validation --------------------------------------------------------------------------------

def test_fixture_instructor_version_validates_and_student_version_fails(student_dir):
    """Executed with nbgrader's Validator, in the lesson's folder (the fixture reads melody.txt)."""
    assert assignments.validate(FIXTURE) == (True, "every test cell passes")
    student = student_dir / FIXTURE.name
    fails = assignments.validate(student, working_dir=FIXTURE.parent)
    assert not fails.ok and "3 test cell(s) fail" in fails.message and "NotImplementedError" in fails.message
    assert fails.message.endswith("\n1 manually graded answer(s) not given")
    assert assignments.validate(student, invert=True, working_dir=FIXTURE.parent).ok


def test_validation_on_stored_outputs_sees_a_failed_test(tmp_path):
    """The kernel-free validation used for the lessons below gives nbgrader's verdict on a stored run."""
    for name in ("scales.ipynb", "melody.txt"):
        shutil.copy(FIXTURE.parent / name, tmp_path / name)
    executed = tmp_path / "scales.ipynb"
    execute_notebook(executed, timeout_per_cell=CELL_TIMEOUT_S)
    assert assignments.validate(executed, execute=False).ok

    notebook = nbformat.read(executed, as_version=4)
    _cell(notebook, "ex2_major_scale_tests").outputs = [nbformat.v4.new_output(
        "error", ename="AssertionError", evalue="D major has F# and C#", traceback=["AssertionError: D major"])]
    nbformat.write(notebook, executed)
    outcome = assignments.validate(executed, execute=False)
    assert not outcome.ok and "1 test cell(s) fail" in outcome.message and "AssertionError" in outcome.message


def test_validate_command_reports_each_notebook_and_fails_on_a_failure(student_dir, capsys):
    run_command("validate", str(FIXTURE))
    assert capsys.readouterr().out == f"{FIXTURE}: ok: every test cell passes\n"
    with pytest.raises(SystemExit) as exit_info:
        run_command("validate", str(student_dir / FIXTURE.name), "--timeout", str(CELL_TIMEOUT_S))
    assert exit_info.value.code == 1 and ": FAILED: 3 test cell(s) fail" in capsys.readouterr().out


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_validates_on_its_stored_outputs(lesson):
    """``nbgrader validate`` of each lesson, judged on the outputs stored in it.

    Re-executing a lesson costs up to its 3-minute CPU budget (lesson 00 also renders the course
    data on first run), twice per lesson with the student version: far beyond this file's
    one-minute budget. It is not needed: ``make notebooks`` stores each lesson's outputs from
    a real run, nbval re-runs every lesson in ``make test``, and test_notebooks checks that the
    stored run is complete and in order. What remains is nbgrader's verdict on that run, which
    its Validator gives without a kernel.
    """
    notebook = nbformat.read(lesson, as_version=4)
    unexecuted = [c.metadata.nbgrader["grade_id"] for c in notebook.cells if c.cell_type == "code"
                  and c.metadata.get("nbgrader", {}).get("grade") and c.execution_count is None]
    assert not unexecuted, f"test cells without stored outputs: {unexecuted}; run make notebooks"
    outcome = assignments.validate(lesson, execute=False)
    assert outcome.ok, outcome.message


def _top_level_bindings(source: str) -> set[str]:
    """Names a cell binds at module level (not names local to its functions or comprehensions)."""
    names = set()

    class Bindings(ast.NodeVisitor):
        def visit_FunctionDef(self, node):
            names.add(node.name)  # and do not descend: its locals are not the notebook's

        visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

        def visit_Lambda(self, node):
            pass

        visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_Lambda

        def visit_Name(self, node):
            if isinstance(node.ctx, ast.Store):
                names.add(node.id)

        def visit_alias(self, node):
            names.add((node.asname or node.name).split(".")[0])

    Bindings().visit(ast.parse(source))
    return names


def _stubbed_functions(source: str) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)
            and any(isinstance(n, ast.Raise) and "NotImplementedError" in ast.unparse(n) for n in ast.walk(node))}


@pytest.mark.parametrize("instructor_path", [FIXTURE, *LESSONS], ids=lambda p: p.stem)
def test_every_student_test_cell_depends_on_a_removed_solution(instructor_path, student_dir):
    """Each visible test uses a name that the student version leaves undefined or stubbed.

    That is why a student version fails ``nbgrader validate`` (proved by execution on the
    fixture above), checked here without the minutes of executing each lesson: a test cell that
    uses none of those names would pass on the blank student version and give free points.
    """
    instructor = nbformat.read(instructor_path, as_version=4)
    student = nbformat.read(student_dir / instructor_path.name, as_version=4)
    unimplemented: set[str] = set()
    for theirs, ours in zip(instructor.cells, student.cells):
        meta = ours.metadata.get("nbgrader", {})
        if is_manual_answer(ours):  # prose for a person to grade: no test depends on it
            continue
        if meta.get("solution"):
            unimplemented |= _top_level_bindings(theirs.source) - _top_level_bindings(ours.source)
            unimplemented |= _stubbed_functions(ours.source)
        elif meta.get("grade"):
            used = {n.id for n in ast.walk(ast.parse(ours.source)) if isinstance(n, ast.Name)}
            assert used & unimplemented, (
                f"{meta['grade_id']} in {instructor_path.name} passes without a solution: it uses none of "
                f"{sorted(unimplemented)}")
            unimplemented = set()


# --- grading -----------------------------------------------------------------------------------

def _cell(notebook, grade_id):
    return next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _answer(notebook, grade_id, source):
    """A copy of ``notebook`` with the solution cell ``grade_id`` holding ``source``."""
    notebook = copy.deepcopy(notebook)
    _cell(notebook, grade_id).source = source
    return notebook


def _delete(notebook, grade_id):
    notebook = copy.deepcopy(notebook)
    notebook.cells.remove(_cell(notebook, grade_id))
    return notebook


WRONG_MIDI_TO_HZ = ("def midi_to_hz(midi_note):\n"  # right at A4 and on every octave, so the visible
                    "    return 440.0 * 2.0 ** ((midi_note - 69) // 12)")  # tests pass; middle C is wrong
WRONG_MAJOR_SCALE = ("def major_scale(root):\n"  # the white keys from the root: right for C only
                     "    return [n for n in range(root, root + 13) if n % 12 in (0, 2, 4, 5, 7, 9, 11)]")
FULL_MARKS = {"ex1_midi_to_hz_tests": (2, None), "ex2_major_scale_tests": (3, None), "ex3_span_tests": (1, None)}
NOT_IMPLEMENTED_3 = "NameError: name 'melody_span' is not defined (after solution cell ex3_span: NotImplementedError)"

# Submission file name -> expected (points, reason) per exercise; None as reason means passed.
EXPECTED = {
    "full": FULL_MARKS,
    "partial": {**FULL_MARKS, "ex2_major_scale_tests": (0, "NotImplementedError"),
                "ex3_span_tests": (0, NOT_IMPLEMENTED_3)},
    "wrong": {**FULL_MARKS, "ex1_midi_to_hz_tests": (0, "AssertionError: middle C is about 261.63 Hz"),
              "ex2_major_scale_tests": (0, "AssertionError: D major has F# and C#")},
    "exception": {**FULL_MARKS, "ex2_major_scale_tests": (0, "IndexError: list index out of range")},
    "infinite_loop": {**FULL_MARKS, "ex1_midi_to_hz_tests": (0, f"timed out after {CELL_TIMEOUT_S} s")},
    "deleted_solution": {**FULL_MARKS, "ex2_major_scale_tests": (0, "solution cell deleted")},
    "deleted_test": {**FULL_MARKS, "ex3_span_tests": (0, "AssertionError: the melody spans one octave")},
    "edited_test": {**FULL_MARKS, "ex1_midi_to_hz_tests": (0, "AssertionError: middle C is about 261.63 Hz")},
    "kernel_death": {**FULL_MARKS, "ex3_span_tests": (
        0, "not run: the kernel died in an earlier cell (after solution cell ex3_span: "
           "the kernel died while running this cell)")},
    "not_a_notebook": {name: (0, "not graded: not a readable notebook (NotJSONError)") for name in FULL_MARKS},
}


MANUAL_ID = "ex4_why_one_pattern"
STUDENT_ANSWER = "Every major scale is the same steps above its root, so adding the root moves the pattern."
# Submission file name -> expected (points, reason, answer text) of the manually graded answer.
EXPECTED_MANUAL = {**{name: (None, "to grade by hand", STUDENT_ANSWER) for name in EXPECTED},
                   "partial": (0, "not answered", assignments.ANSWER_PROMPT),
                   "deleted_solution": (0, "answer cell deleted", None),
                   "not_a_notebook": (0, "not graded: not a readable notebook (NotJSONError)", None)}


@pytest.fixture(scope="module")
def graded_folder(student_dir, tmp_path_factory):
    """Sample submissions made from the student version, graded by one command; name -> report."""
    folder = tmp_path_factory.mktemp("submissions")
    instructor = nbformat.read(FIXTURE, as_version=4)
    blank = nbformat.read(student_dir / FIXTURE.name, as_version=4)
    full = blank
    for grade_id in grade_ids(instructor, graded=False):
        full = _answer(full, grade_id, _cell(instructor, grade_id).source)
    full = _answer(full, MANUAL_ID, STUDENT_ANSWER)
    cheating = _answer(full, "ex1_midi_to_hz", WRONG_MIDI_TO_HZ)
    _cell(cheating, "ex1_midi_to_hz_tests").source = "assert True"

    submissions = {
        "full": full,
        "partial": _answer(blank, "ex1_midi_to_hz", _cell(instructor, "ex1_midi_to_hz").source),
        "wrong": _answer(_answer(full, "ex1_midi_to_hz", WRONG_MIDI_TO_HZ), "ex2_major_scale", WRONG_MAJOR_SCALE),
        "exception": _answer(full, "ex2_major_scale", "def major_scale(root):\n    steps = [0, 2, 4, 5, 7, 9, 11]\n"
                                                      "    return [root + steps[i] for i in range(8)]"),
        "infinite_loop": _answer(full, "ex1_midi_to_hz", "def midi_to_hz(midi_note):\n    while True:\n        pass"),
        "deleted_solution": _delete(_delete(full, "ex2_major_scale"), MANUAL_ID),
        "deleted_test": _delete(_answer(full, "ex3_span", "melody_span = 11"), "ex3_span_tests"),
        "edited_test": cheating,
        "kernel_death": _answer(full, "ex3_span", "import os\nos._exit(1)"),
    }
    for name, notebook in submissions.items():
        nbformat.write(notebook, folder / f"{name}.ipynb")
    (folder / "not_a_notebook.ipynb").write_text("my answers are in the email")

    report_path = folder.parent / f"{folder.name}-grades.json"
    run_command("grade", str(folder), "--source", str(FIXTURE), "--timeout", str(CELL_TIMEOUT_S),
                "--json", str(report_path))
    return {Path(r["notebook"]).stem: r for r in json.loads(report_path.read_text())}


@pytest.mark.parametrize("name", EXPECTED)
def test_sample_submission_grades_as_expected(name, graded_folder):
    report = graded_folder[name]
    expected = EXPECTED[name]
    assert {e["grade_id"]: (e["points"], e["reason"]) for e in report["exercises"]} == expected
    assert report["total"] == sum(points for points, _ in expected.values()) and report["max_total"] == 6
    assert all(e["passed"] == (e["points"] == e["max_points"]) for e in report["exercises"])


@pytest.mark.parametrize("name", EXPECTED)
def test_a_manual_answer_is_kept_as_written_and_left_to_grade_by_hand(name, graded_folder):
    """The student's text is reported, never the instructor's model answer; the autograded total excludes it."""
    [answer] = graded_folder[name]["manual"]
    assert answer["grade_id"] == MANUAL_ID and answer["max_points"] == 2
    assert (answer["points"], answer["reason"], answer["answer"]) == EXPECTED_MANUAL[name]


def test_every_sample_submission_has_a_report(graded_folder):
    assert sorted(graded_folder) == sorted(EXPECTED)


def test_grading_table_shows_each_exercise_and_total(capsys):
    run_command("grade", str(FIXTURE), "--source", str(FIXTURE))
    table = capsys.readouterr().out
    assert "ex2_major_scale_tests        3/3  passed" in table
    assert "ex4_why_one_pattern          ?/2  to grade by hand" in table
    assert table.rstrip().endswith("total                        6/6  autograded; 2 points to grade by hand")


def test_overall_time_limit_stops_a_stuck_submission(student_dir, tmp_path):
    looping = _answer(nbformat.read(FIXTURE, as_version=4), "ex1_midi_to_hz",
                      "def midi_to_hz(midi_note):\n    while True:\n        pass")
    nbformat.write(looping, tmp_path / "scales.ipynb")
    report = assignments.grade_submission(tmp_path / "scales.ipynb", FIXTURE, cell_timeout=60, total_timeout=3)
    reasons = [e["reason"] for e in report["exercises"]]
    assert reasons[0].startswith("timed out after")  # its limit was what was left of the 3 s
    assert reasons[1:] == ["not run: grading time limit of 3 s reached"] * 2


def test_submission_is_matched_to_its_lesson_by_file_name(tmp_path):
    lessons = FIXTURE.parent
    assert assignments.find_instructor_notebook(tmp_path / "scales.ipynb", lessons) == FIXTURE
    assert assignments.find_instructor_notebook(tmp_path / "alice_scales_v2.ipynb", lessons) == FIXTURE
    with pytest.raises(ValueError, match="no instructor notebook .* matches chords.ipynb .*pass --source"):
        assignments.find_instructor_notebook(tmp_path / "chords.ipynb", lessons)


def test_grader_misuse_is_an_error_not_a_zero(tmp_path):
    """Errors the command line turns into exit status 2 with the message (a failing submission exits 0)."""
    with pytest.raises(FileNotFoundError, match="no notebook at"):
        run_command("grade", str(tmp_path / "missing.ipynb"), "--source", str(FIXTURE))
    (tmp_path / "scales.ipynb").write_text("{not json")
    with pytest.raises(assignments.NotANotebookError, match="is not a readable notebook"):
        run_command("grade", str(tmp_path / "scales.ipynb"), "--source", str(FIXTURE))
    with pytest.raises(ValueError, match="has no autograded test cells"):
        assignments.grade_submission(FIXTURE, instructor_notebook=_notebook_without_tests(tmp_path))


def _notebook_without_tests(folder: Path) -> Path:
    path = folder / "prose.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("no exercises")]), path)
    return path


def test_grade_says_when_there_is_nothing_to_grade_or_nowhere_to_write(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no notebooks .* found in .*empty"):
        run_command("grade", str(empty))
    # A bad --json is found before any grading starts, not after the whole class has run.
    submission = tmp_path / "never-run.ipynb"
    with pytest.raises(ValueError, match="--json .* is a folder; name the file"):
        run_command("grade", str(submission), "--json", str(tmp_path))
    with pytest.raises(ValueError, match="there is no folder"):
        run_command("grade", str(submission), "--json", str(tmp_path / "missing" / "grades.json"))


# --- the grader under attack ---------------------------------------------------------------------
# Each cheat below is a complete answer except for the first exercise, which it answers wrongly and then
# makes its test pass by changing the kernel the tests run in. Without the audits, each earned that test's
# points; now every test from there on scores zero (the kernel stays changed), saying what was found.

ALMOST_RIGHT_MIDI_TO_HZ = ("def midi_to_hz(midi_note):\n"  # off by a millionth at A4 and A5 only: the
                           "    exact = 440.0 * 2.0 ** ((midi_note - 69) / 12)\n"  # octave and middle C pass
                           "    return exact * (1.000001 if midi_note in (69, 81) else 1.0)")
CHEATS = {  # name -> (code put before the wrong midi_to_hz, the exercise's wrong answer, what the reason says)
    "input_transformer": ("get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])",
                          WRONG_MIDI_TO_HZ, "the grader's audit of the kernel did not run as written"),
    "patched_builtin": ("import builtins\nbuiltins.abs = lambda x: 0", WRONG_MIDI_TO_HZ,
                        "builtins.abs is code from the notebook"),
    "shadowed_builtin": ("abs = lambda x: 0", WRONG_MIDI_TO_HZ,
                         "abs is defined in the notebook, not builtins.builtin_function_or_method builtins.abs"),
    "patched_library": ("import math\nmath.isclose = lambda *args, **kwargs: True", ALMOST_RIGHT_MIDI_TO_HZ,
                        "math.isclose is defined in the notebook, not builtins.builtin_function_or_method"),
    "patched_during_test": ("", "def midi_to_hz(midi_note):\n    import builtins\n"
                                "    builtins.abs = lambda x: 0\n    return 440.0",
                            "builtins.abs is code from the notebook"),
    "exception_handler": ("get_ipython().set_custom_exc((AssertionError,), lambda *args, **kwargs: None)",
                          WRONG_MIDI_TO_HZ, "get_ipython().set_custom_exc installed an exception handler"),
    "hidden_traceback": ("get_ipython().showtraceback = lambda *args, **kwargs: None", WRONG_MIDI_TO_HZ,
                         "the shell's attribute showtraceback is code from the notebook"),
    "event_callback": ("import builtins\nget_ipython().events.register(\n"
                       "    'pre_run_cell', lambda *args: setattr(builtins, 'abs', lambda x: 0))",
                       WRONG_MIDI_TO_HZ, "a 'pre_run_cell' event callback is code from the notebook"),
    "thread": ("import builtins, threading, time\n"
               "def keep_patching():\n    while True:\n        builtins.abs = lambda x: 0\n        time.sleep(0.001)\n"
               "threading.Thread(target=keep_patching, daemon=True).start()",
               WRONG_MIDI_TO_HZ, "a thread started by the notebook"),
    "stderr_redirect": ("import sys\nsys.stderr = sys.stdout", WRONG_MIDI_TO_HZ,
                        "sys.stderr is no longer the kernel's standard error"),
}


NAME_CHEATS = ("shadowed_builtin", "patched_library")  # abs and math.isclose: only the first test reads them


@pytest.fixture(scope="module")
def attacked(student_dir, tmp_path_factory):
    """The cheats, an instructor-notebook rewrite and a memory bomb, graded by one command against a copy of
    the fixture lesson; name -> report, plus the copy's path and its bytes before grading."""
    lesson = tmp_path_factory.mktemp("lesson")
    shutil.copy(FIXTURE, lesson / FIXTURE.name)
    shutil.copy(FIXTURE.parent / "melody.txt", lesson / "melody.txt")
    source = lesson / FIXTURE.name
    instructor = nbformat.read(FIXTURE, as_version=4)
    full = nbformat.read(student_dir / FIXTURE.name, as_version=4)
    for grade_id in grade_ids(instructor, graded=False):
        full = _answer(full, grade_id, _cell(instructor, grade_id).source)
    submissions = {name: _answer(full, "ex1_midi_to_hz", f"{setup}\n{answer}")
                   for name, (setup, answer, _) in CHEATS.items()}
    rewrite = ("import json, pathlib\n"
               f"path = pathlib.Path({str(source)!r})\n"
               "notebook = json.loads(path.read_text())\n"
               "for cell in notebook['cells']:\n"
               "    if cell['metadata'].get('nbgrader', {}).get('grade'):\n"
               "        cell['source'] = 'assert True'\n"
               "path.write_text(json.dumps(notebook))\n")
    # Sorted by name, the rewrite runs first: the later submissions must still meet the real tests.
    submissions["a_instructor_rewrite"] = _answer(full, "ex1_midi_to_hz", rewrite + WRONG_MIDI_TO_HZ)
    # 5 GiB: more than the 4 GiB limit given below, less than the machine has (so only the limit stops it)
    submissions["memory_bomb"] = _answer(full, "ex3_span", "hoard = bytearray(5 * 2**30)\nmelody_span = 12")
    submissions["audit_hook"] = _answer(full, "ex2_major_scale", (
        "import sys\nheard = []\nsys.addaudithook(lambda event, args: heard.append(event))\n"
        "exec('1')\nassert not heard, 'the audit hook was added'\n") + _cell(instructor, "ex2_major_scale").source)
    submissions["lists_its_folder"] = _answer(full, "ex1_midi_to_hz", "import os\nfolder = sorted(os.listdir('.'))\n"
                                              + _cell(instructor, "ex1_midi_to_hz").source)
    submissions["lists_its_folder"].cells.insert(-1, nbformat.v4.new_code_cell(
        "assert folder == ['melody.txt'], folder"))
    folder = tmp_path_factory.mktemp("attacks")
    for name, notebook in submissions.items():
        nbformat.write(notebook, folder / f"{name}.ipynb")
    before = source.read_bytes()
    report_path = folder.parent / "attack-grades.json"
    run_command("grade", str(folder), "--source", str(source), "--timeout", "60", "--memory-limit", "4",
                "--json", str(report_path))
    reports = {Path(r["notebook"]).stem: r for r in json.loads(report_path.read_text())}
    return reports, source, before


def _results(report):
    return {e["grade_id"]: (e["points"], e["reason"]) for e in report["exercises"]}


@pytest.mark.parametrize("name", CHEATS)
def test_a_cheat_that_changes_the_kernel_scores_zero_on_what_it_cheated(name, attacked):
    reports, _, _ = attacked
    results = _results(reports[name])
    points, reason = results.pop("ex1_midi_to_hz_tests")
    assert points == 0 and reason.startswith("the submission changed how tests run: ") and CHEATS[name][2] in reason
    if name in NAME_CHEATS:  # a changed name matters only to the tests that read it
        assert results == {k: v for k, v in FULL_MARKS.items() if k != "ex1_midi_to_hz_tests"}
    else:                    # a changed kernel, to every test that runs in it
        assert all(p == 0 and r.startswith("the submission changed how tests run: ") for p, r in results.values())


def test_a_submission_that_rewrites_the_instructor_notebook_scores_zero_and_the_file_is_restored(attacked):
    reports, source, before = attacked
    assert {reason for _, reason in _results(reports["a_instructor_rewrite"]).values()} == {
        "the submission changed the instructor notebook, which was put back"}
    assert reports["a_instructor_rewrite"]["total"] == 0
    assert source.read_bytes() == before
    # graded after it, by the real tests: the wrong answer fails the hidden test
    assert _results(reports["patched_builtin"])["ex1_midi_to_hz_tests"][0] == 0


def test_a_submission_runs_in_a_folder_without_notebooks(attacked):
    reports, _, _ = attacked
    assert reports["lists_its_folder"]["total"] == 6, _results(reports["lists_its_folder"])


def test_memory_beyond_the_limit_fails_in_its_cell_and_grading_goes_on(attacked):
    reports, _, _ = attacked
    results = _results(reports["memory_bomb"])
    assert results["ex3_span_tests"][0] == 0 and "MemoryError" in results["ex3_span_tests"][1]
    assert results["ex1_midi_to_hz_tests"] == (2, None) and results["ex2_major_scale_tests"] == (3, None)


def test_a_submission_cannot_add_an_audit_hook(attacked):
    """sys.addaudithook does nothing in a grading kernel: the hook never hears the exec after it."""
    reports, _, _ = attacked
    assert _results(reports["audit_hook"]) == FULL_MARKS


def test_the_instructor_notebook_can_come_from_standard_input(student_dir, tmp_path, monkeypatch, capsys):
    """``--source -``: the notebook is read once, before grading, so its file can be hidden from submissions."""
    instructor = nbformat.read(FIXTURE, as_version=4)
    full = nbformat.read(student_dir / FIXTURE.name, as_version=4)
    for grade_id in grade_ids(instructor, graded=False):
        full = _answer(full, grade_id, _cell(instructor, grade_id).source)
    nbformat.write(full, tmp_path / "anything.ipynb")  # no name to match: the source is given
    monkeypatch.setattr("sys.stdin", io.StringIO(FIXTURE.read_text()))
    run_command("grade", str(tmp_path / "anything.ipynb"), "--source", "-", "--lesson-folder", str(FIXTURE.parent),
                "--json", "-")
    assert json.loads(capsys.readouterr().out)["total"] == 6
    monkeypatch.setattr("sys.stdin", io.StringIO("not a notebook"))
    with pytest.raises(assignments.NotANotebookError, match="--source -: standard input is not a notebook"):
        run_command("grade", str(tmp_path / "anything.ipynb"), "--source", "-")
