"""The end of the README's test command (``tox``): which Pythons it ran, which it did not.

``tox`` tests the Python that runs it: ``ext`` (the extension built from source, every test on
both backends) and ``pure`` (an install without the extension). Other Pythons are tox
environments of their own, which CI runs; this says which of them this machine could run.
"""

from __future__ import annotations

import platform
import shutil
import sys

OTHERS = [f"3.{minor}" for minor in range(10, 16)]


def main() -> None:
    here = "{}.{}".format(*sys.version_info[:2])
    python = getattr(sys, "_base_executable", sys.executable)  # not the environment's copy
    print(
        f"this run tested {platform.python_implementation()} {platform.python_version()} "
        f"({python}): its results are tox's lines below"
    )
    print("  ext: the extension, every test on both backends; pure: an install without it")
    print("not run here (CI runs them all):")
    for version in OTHERS:
        if version == here:
            continue
        found = shutil.which(f"python{version}")
        env = f"py{version.replace('.', '')}"
        how = f"on PATH: tox -e {env}-ext,{env}-pure" if found else "not found on PATH"
        print(f"  CPython {version}: {how}")
    pypy = shutil.which("pypy3")
    print(f"  PyPy 3: {'on PATH: tox -e pypy3-pure' if pypy else 'not found on PATH'}")


if __name__ == "__main__":
    main()
