"""Builds the Cython extension where it can be built, and fails loudly where it should and cannot.

The extension is skipped, leaving the pure-Python backend, when:
- ``SHIMPID_NO_EXTENSIONS`` is set to a value other than ``0`` (CI's pure run uses this);
- the interpreter is not CPython (PyPy and others run the fallback);
- the platform has no POSIX headers (Windows).
Anywhere else a compile error fails the build: a silent fallback would hide a broken build.
"""

import os
import sys

from setuptools import setup


def want_extension() -> bool:
    if os.environ.get("SHIMPID_NO_EXTENSIONS", "0") not in ("", "0"):
        return False
    if sys.implementation.name != "cpython":
        return False
    return os.name == "posix"


ext_modules = []
if want_extension():
    from Cython.Build import cythonize
    from setuptools import Extension

    ext_modules = cythonize(
        [Extension("shimpid._speedups", ["shimpid/_speedups.pyx"])],
        compiler_directives={"language_level": "3"},
    )

setup(ext_modules=ext_modules)
