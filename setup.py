"""Builds the Cython extension where it can be built, and the pure-Python package where not.

The extension is skipped, leaving the pure-Python backend, when:
- ``SHIMPID_NO_EXTENSIONS`` is set to a value other than ``0`` (CI's pure run uses this);
- the interpreter is not CPython (PyPy and others run the fallback);
- the platform has no POSIX headers (Windows).

Anywhere else a failed compile (no C compiler, as in the python:3.x-slim images; no Python
headers) installs the pure backend with a warning that says what it costs and how to get the
extension, as markupsafe and pyyaml do. ``SHIMPID_REQUIRE_EXTENSION=1`` makes a failed compile a
failed install instead: CI sets it, so that a broken build can never pass as a pure one.
``SHIMPID_TRACE=1`` builds the extension with Cython's line tracing, for coverage of the .pyx
(``tox -e coverage``): much slower, never for an install.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


def flag(name: str) -> bool:
    # shimpid._common.env_flag's rule (the build cannot import the package it builds)
    return os.environ.get(name, "0") not in ("", "0")


def want_extension() -> bool:
    if flag("SHIMPID_NO_EXTENSIONS"):
        return False
    if sys.implementation.name != "cpython":
        return False
    return os.name == "posix"


class BuildFailed(Exception):
    pass


class optional_build_ext(build_ext):
    """build_ext, whose failure (anything: no compiler, no headers) is reported as BuildFailed."""

    def run(self):
        try:
            super().run()
        except Exception as err:
            raise BuildFailed(err) from err

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:
            raise BuildFailed(err) from err


WARNING = """
==========================================================================================
shimpid: the C extension could not be built ({reason}).
Installing the pure-Python backend: the same API and behaviour, but slower (several times, for
most operations: the documentation's benchmarks page has the figures), and the child-side
write_current() allocates, so it is not safe after fork() in a threaded program.
To get the extension: install a C compiler and the Python headers (Debian: gcc python3-dev),
then reinstall. SHIMPID_NO_EXTENSIONS=1 installs the pure backend without trying.
==========================================================================================
"""


def run_setup(with_extension: bool) -> None:
    ext_modules = []
    if with_extension:
        from Cython.Build import cythonize
        from setuptools import Extension

        trace = flag("SHIMPID_TRACE")
        # Without its debugging sections the module is 256 KB, not 1.7 MB (auditwheel strips
        # too); kept for traced and sanitized builds, whose reports want them.
        strip = (
            sys.platform.startswith("linux")
            and not trace
            and "-fsanitize" not in os.environ.get("CFLAGS", "")
        )
        ext_modules = cythonize(
            [
                Extension(
                    "shimpid._speedups",
                    ["shimpid/_speedups.pyx"],
                    define_macros=[("CYTHON_TRACE_NOGIL", "1")] if trace else [],
                    extra_link_args=["-Wl,--strip-debug"] if strip else [],
                )
            ],
            compiler_directives={"language_level": "3", "linetrace": trace},
            force=trace,  # a traced build and an untraced one never share a .c file
        )
    setup(
        ext_modules=ext_modules,
        cmdclass={"build_ext": optional_build_ext},
        # the man page (docs/generate_cli_files.py) in <prefix>/share/man, where man finds it
        data_files=[("share/man/man1", ["docs/shimpid.1"])],
    )


if not want_extension():
    run_setup(False)
else:
    try:
        run_setup(True)
    except BuildFailed as err:
        if flag("SHIMPID_REQUIRE_EXTENSION"):
            raise
        print(WARNING.format(reason=err), file=sys.stderr)
        run_setup(False)
