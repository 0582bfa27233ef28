"""The documentation site: Sphinx, MyST (the guides are Markdown), Furo.

Built by ``tox -e docs`` with warnings as errors. The API reference is generated from the
docstrings (autodoc), the CLI reference from the argument parser (sphinx-argparse), and the
benchmark tables from the file the benchmark writes (``_ext/benchdata.py``).
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))
sys.path.insert(0, os.path.join(ROOT, "docs"))  # generate_cli_files: the parser, for the CLI page
# The pure backend is the specification: its signatures and docstrings are the reference.
os.environ["SHIMPID_PURE_PYTHON"] = "1"

import shimpid  # noqa: E402

project = "shimpid"
author = "The shimpid authors"
copyright = "2026, the shimpid authors"
release = version = shimpid.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinxarg.ext",
    "benchdata",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "README.md"]
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]
# sphinx-argparse registers a domain MyST cannot search for bare links: not a broken link.
suppress_warnings = ["myst.domains"]
# Every cross-reference must resolve (a broken one is a warning, and warnings fail the build).
nitpicky = True
nitpick_ignore_regex = [
    # The standard library's types in signatures: no intersphinx (the build runs offline).
    ("py:class", r"(os|subprocess|asyncio|signal|collections\.abc|typing|types)\..*"),
    ("py:class", r"(OSError|PermissionError|Path|StrOrBytesPath|(shimpid\._lock\.)?_NotGiven|Any)"),
    # Type aliases and type variables of the signatures (a path: str, bytes or os.PathLike).
    ("py:class", r"(shimpid\._common\.)?(PathArg|Read|Extras|Kept|P|R)"),
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"shimpid {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
