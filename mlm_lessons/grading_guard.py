"""Inside a grading kernel: a memory limit, and an audit of the kernel before and after each test.

A graded notebook runs in the same Python process as the instructor's tests, so it can change how they run:
append an input transformer that turns every later cell into ``pass``, replace ``builtins.abs`` or
``math.isclose`` by a function that always agrees, shadow ``abs`` in the notebook's namespace, install an
exception handler that swallows failures, or send ``sys.stderr`` to ``sys.stdout``. The grader
(:mod:`mlm_lessons.assignments`) looks for this class of attack in general, not one trick at a time, with
two checks run in the kernel right before and right after every test cell:

1. **No notebook code in the machinery.** Nothing defined by a cell (a function, lambda, method, class or
   callable object whose code was compiled from the notebook) may sit where it changes how cells run or how
   their results are reported: the builtins, ``sys``'s hooks, IPython's input and AST transformers, its event
   callbacks and custom exception handler, and the methods and attributes of the objects that run cells
   and send their output (the shell, the kernel, its session, the compiler, the display hook and publisher,
   ``sys.stdout`` and ``sys.stderr``); nor may a thread started by the notebook be running. ``sys.stderr``
   must still be the kernel's standard error (nbgrader fails a test that writes to it).
2. **The test's names mean what they mean in a clean interpreter.** Every name a test cell reads (``abs``,
   ``np.allclose``, ``torch.testing.assert_close``) is resolved in the notebook's namespace and described
   (what kind of object, which module and function, which source file); the grader compares each
   description with the one a fresh Python process gives after running only the instructor notebook's
   import statements (:func:`reference_descriptions`). Names that process does not know (the student's own
   functions, the lesson's variables) are not compared.

The kernel also starts under :data:`LAUNCHER`: a memory limit (``RLIMIT_DATA``, which a list or tensor too big
for it meets as a ``MemoryError`` in that cell) and an audit hook that makes ``sys.addaudithook`` do nothing
(Python drops a new hook when an existing one raises ``RuntimeError`` for it), since a hook added by the
notebook would see, and could act on, every later compile and exec.

What this cannot do: the submission runs arbitrary code in the process it is graded in, and a cheat written
against this module's source can hide from checks that run in that process. The audits stop every general
way of tampering that is known here; ``docs/instructors.md`` says what needs a container.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import json
import subprocess
import sys
import tempfile
import threading
import types
from pathlib import Path

AUDIT_MARK = "mlm-lessons-grading-audit:"
"""Prefix of the one line an audit prints: the grader finds its report by it."""

LAUNCHER = """\
import sys
limit = int(sys.argv.pop(1))
if limit > 0:
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (ValueError, OSError):  # an OS that does not enforce it (macOS): the overall time limit remains
        pass


def refuse_audit_hooks(event, args):
    if event == "sys.addaudithook":
        raise RuntimeError("a graded notebook may not add audit hooks")


sys.addaudithook(refuse_audit_hooks)
del refuse_audit_hooks
from ipykernel import kernelapp
kernelapp.launch_new_instance()
"""
"""The grading kernel's program (``python -c LAUNCHER MEMORY_LIMIT -f CONNECTION_FILE``)."""


def kernel_command(memory_limit: int) -> list[str]:
    """The command line of a grading kernel, for a kernel spec's ``argv``: ``memory_limit`` bytes of data
    (0: no limit) and the connection file jupyter_client fills in."""
    return [sys.executable, "-c", LAUNCHER, str(int(memory_limit)), "-f", "{connection_file}"]


# ----------------------------------------------------------------------------------------------------
# What a test cell reads, and what the instructor's notebook imports (run by the grader, outside the kernel)


def names_read(source: str) -> list[str]:
    """The dotted names a cell reads, each prefix included: ``np.testing.assert_close(x, y)`` gives ``np``,
    ``np.testing`` and ``np.testing.assert_close``. A cell that does not parse (IPython magics) reads none."""
    tree = _parse(source)
    if tree is None:
        return []
    names = set()
    for node in ast.walk(tree):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            chain = [node.id, *reversed(parts)]
            names.update(".".join(chain[:length]) for length in range(1, len(chain) + 1))
    return sorted(names)


def import_statements(sources: list[str]) -> list[str]:
    """Every absolute ``import``/``from ... import`` statement in the cells ``sources``, as source lines."""
    statements = []
    for source in sources:
        tree = _parse(source)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and not node.level):
                statement = ast.unparse(node)
                if statement not in statements:
                    statements.append(statement)
    return statements


def _parse(source: str) -> ast.Module | None:
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


_REFERENCE_PROGRAM = """\
import json, sys
from mlm_lessons import grading_guard
request = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for statement in request["imports"]:
    try:
        exec(statement, namespace)
    except Exception:
        pass
print(json.dumps({name: grading_guard.describe(grading_guard.resolve(name, namespace))
                  for name in request["names"]}))
"""


def reference_descriptions(imports: list[str], names: list[str], cwd: str | Path | None = None,
                           timeout: float = 300) -> dict[str, str]:
    """:func:`describe` of each of ``names`` in a fresh Python process that ran only ``imports``.

    Raises:
        RuntimeError: the process failed (its last line of standard error says why).
    """
    result = subprocess.run([sys.executable, "-c", _REFERENCE_PROGRAM], input=json.dumps(
        {"imports": imports, "names": names}), capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"the grader's reference interpreter failed: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------
# Describing objects (in the kernel and in the reference process alike)

MISSING = "not defined"


def resolve(name: str, namespace: dict) -> object:
    """``name`` (dotted) looked up in ``namespace``, then in the builtins, without running any code of the
    objects on the way (no properties, no ``__getattr__``); :data:`MISSING` where a part is not found."""
    head, *rest = name.split(".")
    if head in namespace:
        obj = namespace[head]
    elif head in vars(builtins):
        obj = vars(builtins)[head]
    else:
        return MISSING
    for part in rest:
        try:
            obj = inspect.getattr_static(obj, part)
        except AttributeError:
            return MISSING
    return obj


def describe(obj: object) -> str:
    """What ``obj`` is, in words that are equal across processes for the same library object: its type, the
    module and qualified name it was defined under and the file of its code; modules by name and file;
    other values by type only (their contents may change legitimately)."""
    if isinstance(obj, str) and obj == MISSING:
        return MISSING
    if from_notebook(obj):
        return "defined in the notebook"
    unwrapped = _unwrapped(obj)
    if unwrapped is not obj:  # a library's own wrapper is what it wraps (notebook code inside is still found)
        return describe(unwrapped)
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__} ({getattr(obj, '__file__', None) or 'built in'})"
    kind = type(obj)
    if not (callable(obj) or isinstance(obj, (staticmethod, classmethod, property))):
        return f"a {kind.__module__}.{kind.__qualname__}"
    code = getattr(obj, "__code__", None)
    where = f" in {code.co_filename}" if code is not None else ""
    return (f"{kind.__module__}.{kind.__qualname__} {getattr(obj, '__module__', None)}."
            f"{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}{where}")


def _unwrapped(obj: object) -> object:
    """The function a ``functools.wraps`` wrapper wraps, through every layer; ``obj`` itself otherwise.

    Libraries wrap some of their own functions while they run: importing ``torch._dynamo``, which training
    does, replaces ``torch.manual_seed`` with a wrapper defined in ``torch/_compile.py``. Described by its
    wrapper, a test cell's ``torch.manual_seed`` would differ from the fresh interpreter's and the grader
    would score an honest submission 0.
    """
    if not callable(obj):
        return obj
    try:
        return inspect.unwrap(obj)
    except ValueError:  # a cycle of __wrapped__ attributes
        return obj


def from_notebook(obj: object) -> bool:
    """Whether ``obj`` is code a notebook cell defined: a function or class of ``__main__``, or a callable
    (function, method, ``functools.partial``, callable instance) whose code was compiled from a cell."""
    if isinstance(obj, type):
        return obj.__module__ == "__main__"
    if getattr(obj, "__module__", None) == "__main__" and callable(obj):
        return True
    candidates = (obj, getattr(obj, "__func__", None), getattr(obj, "func", None))
    if callable(obj) and not isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
        candidates += (getattr(type(obj), "__call__", None),)
        if type(obj).__module__ == "__main__":
            return True
    for candidate in candidates:
        code = getattr(candidate, "__code__", None)
        if isinstance(code, types.CodeType) and _cell_file(code.co_filename):
            return True
    return False


def _cell_file(filename: str) -> bool:
    """Whether a code object's file name is a notebook cell's (ipykernel writes cells to a temporary folder
    ``ipykernel_<pid>``; IPython names them ``<ipython-input-...>``) or a string the notebook compiled."""
    return (filename.startswith(("<ipython-input-", "<string>"))
            or Path(filename).parent.name.startswith("ipykernel_") and filename.startswith(tempfile.gettempdir()))


# ----------------------------------------------------------------------------------------------------
# The audit (runs in the grading kernel)


def audit(names: list[str]) -> dict:
    """Look for notebook code in the machinery that runs and reports cells, and describe ``names`` as the
    notebook's namespace resolves them. Returns ``{"problems": [sentence, ...], "names": {name: description}}``.
    """
    shell = get_ipython()  # noqa: F821 (the kernel's global)
    problems = []

    def check(label: str, obj: object) -> None:
        if from_notebook(obj):
            problems.append(f"{label} is code from the notebook")

    for name, value in vars(builtins).items():
        check(f"builtins.{name}", value)
    for name in ("excepthook", "displayhook", "breakpointhook", "unraisablehook"):
        check(f"sys.{name}", getattr(sys, name, None))
    for label, hook in (("sys.settrace", sys.gettrace()), ("sys.setprofile", sys.getprofile()),
                        ("threading.settrace", threading.gettrace()), ("threading.setprofile", threading.getprofile())):
        check(f"a {label} hook", hook)
    for name in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers"):
        for transformer in getattr(shell, name):
            check(f"an entry of get_ipython().{name}", transformer)
    if shell.custom_exceptions:
        problems.append("get_ipython().set_custom_exc installed an exception handler")
    for event, callbacks in shell.events.callbacks.items():
        for callback in callbacks:
            check(f"a {event!r} event callback", callback)
    kernel = getattr(shell, "kernel", None)
    machinery = (("the shell", shell), ("the kernel", kernel),
                 ("the kernel's session", getattr(kernel, "session", None)), ("the compiler", shell.compile),
                 ("the display hook", shell.displayhook), ("the display publisher", shell.display_pub),
                 ("the input transformer", shell.input_transformer_manager),
                 ("sys.stdout", sys.stdout), ("sys.stderr", sys.stderr))
    for label, obj in machinery:
        if obj is None:
            continue
        for cls in type(obj).__mro__:
            check(f"the class of {label} ({cls.__qualname__})", cls)
            for attribute, value in vars(cls).items():
                check(f"{label}'s method {attribute}", value)
        for attribute, value in getattr(obj, "__dict__", {}).items():
            check(f"{label}'s attribute {attribute}", value)
    if sys.stderr is sys.stdout or getattr(sys.stderr, "name", None) != "stderr":
        problems.append("sys.stderr is no longer the kernel's standard error")
    for thread in threading.enumerate():
        for part in (getattr(thread, "_target", None), type(thread)):
            if from_notebook(part):
                problems.append(f"a thread started by the notebook ({thread.name}) is running")
                break
    namespace = vars(sys.modules["__main__"])
    return {"problems": sorted(set(problems)), "names": {name: describe(resolve(name, namespace)) for name in names}}


def audit_source(names: list[str]) -> str:
    """The code the grader runs in the kernel: this module's source, executed in a private namespace (a
    notebook may have replaced the functions of the module it imported), then one :data:`AUDIT_MARK` line."""
    source = _own_source()
    return (f"def _mlm_lessons_grading_audit():\n"
            f"    namespace = {{'__name__': 'mlm_lessons_grading_audit', 'get_ipython': get_ipython}}\n"
            f"    exec(compile({source!r}, {__file__!r}, 'exec'), namespace)\n"
            f"    return namespace['audit']({names!r})\n"
            f"print({AUDIT_MARK!r} + __import__('json').dumps(_mlm_lessons_grading_audit()))\n"
            f"del _mlm_lessons_grading_audit\n")


@functools.cache
def _own_source() -> str:
    """This module's source, read once: the grader sends it with every audit, two per test cell."""
    return Path(__file__).read_text(encoding="utf-8")
