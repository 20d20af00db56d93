"""No autograded exercise can be passed by typing constants: its test cell raises for every such submission.

A hidden test that ``collapsed_hits = 8`` or ``return 4025`` passes gives the points to a student who copied a
number. For each exercise (a ``# %% solution`` cell followed by its ``# %% tests`` cell) of every lesson, this
file builds the submissions a student could type without solving anything and asserts that the test cell,
hidden tests included, raises for each of them (a test cell that raises scores 0 under nbgrader):

* every name the solution binds that is not a function is bound to the value the reference solution gave it;
* every function it binds is ``lambda *args, **kwargs: VALUE``, VALUE one of the values that function returned
  while the reference ran the tests (a few distinct ones, each tried in turn), or ``None``.

A solution that binds only values can always be typed, so such an exercise fails at once: it must ask for a
function and test it on fresh inputs.

Executing whole lessons takes minutes, so each exercise runs on a *dependency slice* of its lesson: the
set-up cell (the first code cell that imports), and, for every free name the solution and test cells read,
the latest earlier cell that binds it, recursively. The slice must run within :data:`SLICE_TIME_LIMIT_S`
(an exercise that needs a trained model or the course data is to be redesigned to need only cheap cells), and
the reference solution must pass its own test on it, or the harness itself is wrong. Both fail with a message
naming the cells.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import functools
import pickle
import random
import signal
import time
import types
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from _build_notebook import build_notebook

ROOT = Path(__file__).resolve().parent.parent
LESSON_SOURCES = sorted((ROOT / "tools" / "lessons").glob("0[0-9]_*.py"))
SLICE_TIME_LIMIT_S = 20.0
"""Seconds a dependency slice may take: the cheap cells of a lesson run in well under a second each."""
RUN_TIME_LIMIT_S = 20.0
"""Seconds the solution and test cells may take in one run (a test looping on a constant is cut off)."""
VALUES_PER_FUNCTION = 4
"""Distinct recorded return values tried per function, spread from the first call to the last."""



# --- the lesson as cells, and the exercises in it ------------------------------------------------

class Exercise(NamedTuple):
    """One autograded exercise of a lesson source: its cells, and where its solution and test cells are."""

    label: str                      # "00/ex2_downsample"
    cells: list                     # every cell of the lesson (nbformat cells, as the builder makes them)
    lines: list[int]                # the line of each cell's marker in the source
    solutions: tuple[int, ...]      # indices of the solution cells since the previous test cell
    test: int                       # index of the test cell


def exercises_of(text: str, lesson: str) -> list[Exercise]:
    """The autograded exercises of a lesson source, in order (manually graded answers have no test)."""
    cells = build_notebook.parse_cells(text)
    lines = [number for number, line in enumerate(text.splitlines(), 1) if line.startswith("# %%")]
    found, solutions = [], []
    for index, cell in enumerate(cells):
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta:
            continue
        if meta["solution"]:
            solutions.append(index)
        elif meta["grade"]:
            named_by = cells[solutions[0]] if solutions else cell
            found.append(Exercise(f"{lesson}/{named_by.metadata.nbgrader['grade_id']}",
                                  cells, lines, tuple(solutions), index))
            solutions = []
    return found


def _lesson_exercises(paths: list[Path]) -> list[Exercise]:
    return [exercise for path in paths for exercise in exercises_of(path.read_text(), path.stem[:2])]


def describe_cell(exercise: Exercise, index: int) -> str:
    """A cell as a lesson author finds it: its line in the source and its first line of code."""
    first = next((line.strip() for line in exercise.cells[index].source.splitlines()
                  if line.strip() and not line.lstrip().startswith("#")), "")
    return f"line {exercise.lines[index]} ({first[:60]})"


# --- names: what a cell reads and binds -----------------------------------------------------------

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _stored(node: ast.AST) -> set[str]:
    """Names a statement binds in the scope it runs in (not inside the functions or comprehensions it holds).

    ``x.attribute = ...`` and ``x[key] = ...`` count as binding ``x``: the cell changes what ``x`` is."""
    names = set()

    def visit(child: ast.AST) -> None:
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(child.name)
            return
        if isinstance(child, (ast.Lambda, *_COMPREHENSIONS)):
            return
        if isinstance(child, ast.alias):
            names.add((child.asname or child.name).split(".")[0])
        elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store):
            names.add(child.id)
        elif isinstance(child, (ast.Attribute, ast.Subscript)) and isinstance(child.ctx, ast.Store):
            base = child
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if isinstance(base, ast.Name):
                names.add(base.id)
        for grandchild in ast.iter_child_nodes(child):
            visit(grandchild)

    visit(node)
    return names


def _reads(node: ast.AST) -> tuple[set[str], set[str]]:
    """Names a statement reads that its own scopes do not bind: (read when it runs, read later by the
    functions it defines)."""
    now, later = set(), set()

    def local_names(scope: ast.AST) -> set[str]:
        """Every name a function or comprehension binds inside (a superset of its locals is close enough)."""
        names = set()
        for node in ast.walk(scope):
            if isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node is not scope:
                names.add(node.name)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
        return names

    def visit(child: ast.AST, bound: frozenset, into: set) -> None:
        if isinstance(child, _SCOPES):
            # decorators and defaults are read when the def runs; the body only when the function is called
            for expression in [*getattr(child, "decorator_list", []), *child.args.defaults,
                               *child.args.kw_defaults]:
                if expression is not None:
                    visit(expression, bound, into)
            inner = bound | local_names(child)
            for statement in child.body if isinstance(child.body, list) else [child.body]:
                visit(statement, inner, later)
            return
        if isinstance(child, _COMPREHENSIONS):   # run at once, with loop variables of its own
            inner = bound | local_names(child)
            for grandchild in ast.iter_child_nodes(child):
                visit(grandchild, inner, into)
            return
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load) and child.id not in bound:
            into.add(child.id)
        for grandchild in ast.iter_child_nodes(child):
            visit(grandchild, bound, into)

    visit(node, frozenset(), now)
    return now, later


def free_names(source: str) -> set[str]:
    """Names a cell reads before (or without) binding them itself, builtins excepted.

    Statements are followed in order, into the bodies of loops, conditions, ``with`` and ``try``, so that a
    name a loop binds before reading it is not free; names read by functions the cell defines are free
    unless the cell binds them anywhere (the functions run later)."""
    free, deferred, bound = set(), set(), set()

    def read(node: ast.AST) -> None:
        now, later = _reads(node)
        free.update(now - bound)
        deferred.update(later)

    def block(statements: list[ast.stmt]) -> None:
        for statement in statements:
            if isinstance(statement, (ast.For, ast.AsyncFor)):
                read(statement.iter)
                bound.update(_stored(statement.target))
                block(statement.body + statement.orelse)
            elif isinstance(statement, (ast.While, ast.If)):
                read(statement.test)
                block(statement.body + statement.orelse)
            elif isinstance(statement, (ast.With, ast.AsyncWith)):
                for item in statement.items:
                    read(item.context_expr)
                    if item.optional_vars is not None:
                        bound.update(_stored(item.optional_vars))
                block(statement.body)
            elif isinstance(statement, ast.Try):
                block(statement.body)
                for handler in statement.handlers:
                    if handler.type is not None:
                        read(handler.type)
                    bound.update([handler.name] if handler.name else [])
                    block(handler.body)
                block(statement.orelse + statement.finalbody)
            else:
                read(statement)
                bound.update(_stored(statement))

    block(ast.parse(source).body)
    return (free | (deferred - bound)) - set(dir(builtins))


def bound_names(source: str) -> set[str]:
    """Names a cell binds at the top level."""
    return set().union(*(_stored(statement) for statement in ast.parse(source).body))


def dependency_slice(exercise: Exercise) -> list[int]:
    """The earlier cells an exercise needs, in lesson order: the set-up cell, and for each free name of the
    exercise's cells (and, in turn, of the cells added) the latest earlier code cell that binds it."""
    code = [i for i, cell in enumerate(exercise.cells) if cell.cell_type == "code"]
    setup = next(i for i in code if any(isinstance(node, (ast.Import, ast.ImportFrom))
                                        for node in ast.parse(exercise.cells[i].source).body))
    targets = [*exercise.solutions, exercise.test]
    chosen, pending, seen = {setup}, [], set()
    for index in [setup, *targets]:
        pending += [(name, index) for name in free_names(exercise.cells[index].source)]
    while pending:
        name, before = pending.pop()
        if (name, before) in seen:
            continue
        seen.add((name, before))
        binder = next((i for i in reversed(code) if i < before and name in bound_names(exercise.cells[i].source)),
                      None)
        if binder is None or binder in targets or binder in chosen:
            continue
        chosen.add(binder)
        pending += [(free, binder) for free in free_names(exercise.cells[binder].source)]
    return sorted(chosen - set(targets))


# --- running cells in-process ----------------------------------------------------------------------

class OutOfTime(BaseException):
    """Raised in the running cell when its time is up (a BaseException, so no ``except Exception`` in
    lesson code swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def interrupt(signum, frame):
        raise OutOfTime

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def lesson_process_state():
    """Undo what a lesson's cells change in this process: figures and their settings, torch's thread count
    (the set-up cell sets it), and the global random generators."""
    threads = torch.get_num_threads()
    with matplotlib.rc_context(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(plt, "show", lambda *args, **kwargs: None)   # Agg cannot show; a lesson calls it
        patch.chdir(ROOT / "notebooks")                              # lessons read ../data
        try:
            yield
        finally:
            plt.close("all")
            torch.set_num_threads(threads)


def _reseed() -> None:
    """The same global random state before every run, so the reference and the cheats meet the same draws."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def _run_cell(exercise: Exercise, index: int, namespace: dict) -> None:
    source = exercise.cells[index].source
    exec(compile(source, f"<{exercise.label} cell at line {exercise.lines[index]}>", "exec"), namespace)


def _copy(value: Any) -> Any:
    """A deep copy where one can be made (modules, generators and the like are shared instead)."""
    try:
        return copy.deepcopy(value)
    except Exception:  # deepcopy raises TypeError, pickling and library errors for objects it cannot copy
        return value


def _fresh_namespace(namespace: dict) -> dict:
    """A copy of a slice's namespace for one run, so that a run that changes an object (trains a model in
    place) does not change it for the next."""
    memo: dict = {}
    fresh = {}
    for name, value in namespace.items():
        try:
            fresh[name] = copy.deepcopy(value, memo)
        except Exception:  # as in _copy
            fresh[name] = value
    return fresh


def _fingerprint(value: Any) -> bytes | str:
    try:
        return pickle.dumps(value)
    except Exception:  # unpicklable values are told apart by their text
        return repr(value)


def _summary(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def _spread(values: list, count: int) -> list:
    """Up to ``count`` of ``values``, evenly spread from the first to the last (hidden tests call last)."""
    if len(values) <= count:
        return values
    return [values[round(k * (len(values) - 1) / (count - 1))] for k in range(count)]


# --- the verdict on one exercise --------------------------------------------------------------------

class Verdict(NamedTuple):
    """What :func:`judge` found: ``kind`` is "ok" or names the defect; ``message`` is for the lesson author."""

    kind: str
    message: str


def judge(exercise: Exercise, slice_time_limit: float = SLICE_TIME_LIMIT_S) -> Verdict:
    """Run the exercise's slice, the reference, and every constant submission; the first defect found."""
    cells = dependency_slice(exercise)
    namespace: dict = {"__name__": "__main__"}
    timings: list[str] = []
    with lesson_process_state():
        try:
            with time_limit(slice_time_limit):
                for index in cells:
                    started = time.perf_counter()
                    try:
                        _run_cell(exercise, index, namespace)
                    finally:
                        timings.append(f"{describe_cell(exercise, index)}: {time.perf_counter() - started:.1f} s")
        except OutOfTime:
            not_reached = [describe_cell(exercise, index) for index in cells[len(timings):]]
            return Verdict("slice too expensive", (
                f"{exercise.label}: the cells it depends on take over {slice_time_limit:g} s; make the exercise "
                f"depend only on cheap cells. Its slice, with seconds until the limit: " + "; ".join(timings)
                + (f"; not reached: {'; '.join(not_reached)}" if not_reached else "")))
        except Exception as err:  # a lesson cell may raise anything
            return Verdict("slice fails", f"{exercise.label}: its dependency slice raised {type(err).__name__}: "
                                          f"{err} (cells run: {'; '.join(timings)})")
        return _judge_on_slice(exercise, namespace, cells)


def _judge_on_slice(exercise: Exercise, namespace: dict, cells: list[int]) -> Verdict:
    solution_names = set().union(*(bound_names(exercise.cells[i].source) for i in exercise.solutions))
    reference = _fresh_namespace(namespace)
    returned: dict[str, list] = {}
    _reseed()
    try:
        with time_limit(RUN_TIME_LIMIT_S):
            for index in exercise.solutions:
                _run_cell(exercise, index, reference)
            functions = sorted(name for name in solution_names if isinstance(reference.get(name), types.FunctionType))
            values = {name: _copy(reference[name]) for name in sorted(solution_names - set(functions))
                      if name in reference}
            for name in functions:
                reference[name] = _recording(reference[name], returned.setdefault(name, []))
            _run_cell(exercise, exercise.test, reference)
    except (Exception, OutOfTime) as err:
        failure = f"over {RUN_TIME_LIMIT_S:g} s" if isinstance(err, OutOfTime) else f"{type(err).__name__}: {err}"
        return Verdict("reference fails", (
            f"{exercise.label}: the reference solution fails its own test on the dependency slice ({failure}); "
            f"the slice misses a cell or the harness is wrong. Slice: "
            + "; ".join(describe_cell(exercise, i) for i in cells)))

    if not functions:
        return Verdict("only values", (
            f"{exercise.label}: the solution binds only values ({', '.join(sorted(values))}), so a submission "
            f"that types them passes whatever the test checks; ask for a function and test it on fresh inputs"))
    candidates = {name: _spread(_distinct(returned[name]), VALUES_PER_FUNCTION) for name in functions}
    rounds = max(len(found) for found in candidates.values())
    cheats = [{name: found[min(k, len(found) - 1)] if found else None for name, found in candidates.items()}
              for k in range(rounds)]
    cheats.append(dict.fromkeys(functions))
    for constants in cheats:
        if _cheat_passes(exercise, namespace, values, constants):
            typed = [f"{name} = {_summary(value)}" for name, value in values.items()]
            typed += [f"{name} returns {_summary(value)} whatever it is given" for name, value in constants.items()]
            return Verdict("constant passes", (
                f"{exercise.label}: a submission that types constants passes the tests ({'; '.join(typed)}); "
                f"test the functions on fresh inputs, not on fixed numbers"))
    return Verdict("ok", f"{exercise.label}: {len(cheats)} constant submissions, each fails the test")


def _recording(function: types.FunctionType, returned: list):
    @functools.wraps(function)
    def recorded(*args, **kwargs):
        value = function(*args, **kwargs)
        returned.append(_copy(value))
        return value

    return recorded


def _distinct(values: list) -> list:
    seen, kept = set(), []
    for value in values:
        key = _fingerprint(value)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept


def _cheat_passes(exercise: Exercise, namespace: dict, values: dict, constants: dict) -> bool:
    """Whether the test cell runs to the end with the solution replaced by typed values and constant functions."""
    cheat = _fresh_namespace(namespace)
    cheat.update({name: _copy(value) for name, value in values.items()})
    for name, value in constants.items():
        cheat[name] = lambda *args, _value=value, **kwargs: _copy(_value)
    _reseed()
    try:
        with time_limit(RUN_TIME_LIMIT_S):
            _run_cell(exercise, exercise.test, cheat)
    except (Exception, OutOfTime):  # any error, a failed assertion or a cut-off loop, scores 0
        return False
    return True


# --- the lessons ------------------------------------------------------------------------------------

EXERCISES = _lesson_exercises(LESSON_SOURCES)


def test_lessons_have_exercises_to_check():
    assert len({exercise.label[:2] for exercise in EXERCISES}) == len(LESSON_SOURCES) == 10


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda exercise: exercise.label)
def test_no_submission_that_types_constants_passes_the_tests(exercise):
    kind, message = judge(exercise)
    assert kind == "ok", message


# --- the harness itself: it fails what it should, and passes what it should -------------------------

def _synthetic(solution: str, tests: str, extra_cells: str = "") -> Exercise:
    source = (f"# %%\nimport random\n{extra_cells}"
              f"# %% solution ex1\n{solution}\n# %% tests ex1_tests 1\n{tests}\n")
    [exercise] = exercises_of(source, "synthetic")
    return exercise


DOUBLE = "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"


def test_a_test_that_checks_only_a_fixed_number_is_passable_by_a_constant():
    kind, message = judge(_synthetic(DOUBLE, "assert double(21) == 42"))
    assert kind == "constant passes" and "double returns 42 whatever it is given" in message


def test_a_function_tested_on_fresh_inputs_is_accepted_and_unneeded_cells_are_not_run():
    """The cell that raises is not in the slice (nothing reads ``unused``); the cell binding ``OFFSET`` is."""
    extra = ("# %%\nunused = 1\nraise RuntimeError('this cell is not needed')\n"
             "# %%\nOFFSET = 0\n")
    tests = "for x in random.sample(range(1000), 5):\n    assert double(x) == 2 * x + OFFSET"
    assert judge(_synthetic(DOUBLE, tests, extra)) == ("ok", "synthetic/ex1: 5 constant submissions, each fails "
                                                              "the test")


def test_a_solution_that_binds_only_values_is_reported():
    kind, message = judge(_synthetic("### BEGIN SOLUTION\nanswer = 6 * 7\n### END SOLUTION", "assert answer == 42"))
    assert kind == "only values" and "ask for a function and test it on fresh inputs" in message


def test_an_expensive_slice_is_reported_with_its_cells():
    extra = "# %%\nimport time\nwhile True:\n    time.sleep(0.01)\nslow = 1\n"
    kind, message = judge(_synthetic(DOUBLE, "assert double(slow) == 2", extra), slice_time_limit=0.5)
    assert kind == "slice too expensive" and "line 3 (import time)" in message


def test_a_reference_that_fails_its_own_test_is_reported_as_a_harness_problem():
    kind, message = judge(_synthetic(DOUBLE, "assert double(2) == 5, 'two doubled'"))
    assert kind == "reference fails" and "(AssertionError: two doubled)" in message
