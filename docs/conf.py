"""Sphinx configuration of the cmkd documentation (MyST Markdown pages, autodoc from the docstrings).

Build: ``sphinx-build -W -b html docs docs/_build/html`` (``pip install -e ".[docs]"``). The configuration
reference and the layer list are generated at build time from the code (``_ext/cmkd_docs.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))  # the checkout's package, installed or not

from cmkd.version import __version__  # noqa: E402

project = "cmkd"
author = "the cmkd authors"
copyright = "the cmkd authors, Apache-2.0"  # noqa: A001 - Sphinx's name
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "cmkd_docs",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links resolve, and -W fails on a broken one

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = False

html_theme = "alabaster"
html_title = f"cmkd {release}"
html_static_path: list[str] = []
html_theme_options = {"description": "cross-modal knowledge distillation under extreme data sparsity",
                      "fixed_sidebar": True}
