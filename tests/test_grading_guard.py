"""The grading kernel's audit (``mlm_lessons.grading_guard``), piece by piece; the grader under attack, end to
end, is in ``test_assignments.py``."""

import math
import os
import pathlib
import tempfile

from mlm_lessons import grading_guard
from mlm_lessons.grading_guard import MISSING, describe, from_notebook, resolve


def test_names_read_are_every_prefix_of_every_dotted_name_a_cell_loads():
    source = "%matplotlib inline\nz = abs(np.testing.assert_close(x, y.mean()))"
    assert grading_guard.names_read(source) == sorted(
        ["abs", "np", "np.testing", "np.testing.assert_close", "x", "y", "y.mean"])  # not z: it is stored
    assert grading_guard.names_read("def broken(:") == []


def test_import_statements_are_the_absolute_imports_of_all_cells_once():
    cells = ["import numpy as np\nfrom pathlib import Path", "def f():\n    import math\n    from . import x",
             "import numpy as np", "!pip list"]
    assert grading_guard.import_statements(cells) == ["import numpy as np", "from pathlib import Path",
                                                      "import math"]


def test_a_fresh_process_describes_library_names_as_this_one_does():
    imports = ["import math", "from pathlib import Path", "import mlm_lessons.metrics as metrics"]
    names = ["abs", "math", "math.isclose", "Path", "Path.exists", "metrics.frechet_distance", "answer", "math.nope"]
    namespace = {"math": math, "Path": pathlib.Path, "metrics": __import__("mlm_lessons.metrics").metrics}
    reference = grading_guard.reference_descriptions(imports, names)
    assert reference == {name: describe(resolve(name, namespace)) for name in names}
    assert reference["answer"] == reference["math.nope"] == MISSING
    assert "builtins.abs" in reference["abs"] and "math.isclose" in reference["math.isclose"]


def test_code_compiled_from_a_cell_is_from_the_notebook_and_library_code_is_not():
    cell_file = os.path.join(tempfile.gettempdir(), "ipykernel_4242", "1234.py")
    namespace = {"__name__": "numpy"}  # a module name that hides where the code came from
    exec(compile("def isclose(a, b):\n    return True\nclass Fake:\n    def __call__(self):\n        pass\n",
                 cell_file, "exec"), namespace)
    assert from_notebook(namespace["isclose"]) and from_notebook(namespace["Fake"]())
    exec(compile("def helper():\n    pass\n", "/somewhere/site-packages/lib.py", "exec"), namespace)
    assert not from_notebook(namespace["helper"])
    assert not any(from_notebook(obj) for obj in (abs, math.isclose, pathlib.Path, describe, print))
    assert describe(resolve("isclose", namespace)) == "defined in the notebook"


def test_a_library_wrapper_is_described_as_what_it_wraps_and_a_wrapped_cell_function_is_still_found():
    """torch replaces ``torch.manual_seed`` with a ``functools.wraps`` wrapper of its own once ``torch._dynamo``
    loads (training does): an honest test cell reading it must not look like a cheat. A library wrapper around
    code from a cell must still be found."""
    import torch

    assert describe(torch._disable_dynamo(torch.random.manual_seed)) == describe(torch.random.manual_seed)
    cell_file = os.path.join(tempfile.gettempdir(), "ipykernel_4242", "77.py")
    namespace = {}
    exec(compile("def manual_seed(seed):\n    return None\n", cell_file, "exec"), namespace)
    assert describe(torch._disable_dynamo(namespace["manual_seed"])) == "defined in the notebook"

