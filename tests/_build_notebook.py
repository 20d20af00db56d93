"""``tools/build_notebook.py`` loaded once as a module for the tests (``tools/`` is not a package)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "build_notebook", Path(__file__).resolve().parent.parent / "tools" / "build_notebook.py")
build_notebook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_notebook)
