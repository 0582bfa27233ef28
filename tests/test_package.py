"""The package as users get it: which backend runs, one API in both, shipped typing files."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys

import pytest

import shimpid
from _helpers import PURE_ONLY
from shimpid import _common, _pure
from shimpid._common import env_flag

# What each backend provides of the public API (the rest is written once, over the backend).
PUBLIC = ["PidRecord", "PidFileWriter", "is_process_alive", "process_start_time"]


def test_selected_backend():
    if PURE_ONLY:
        assert shimpid.BACKEND == "python"
        assert shimpid.PidRecord is _pure.PidRecord
    else:
        # the extension must be what runs: a silent fallback would hide a broken build
        assert shimpid.BACKEND == "cython"
        assert shimpid.PidRecord is importlib.import_module("shimpid._speedups").PidRecord


@pytest.mark.skipif(
    not env_flag("SHIMPID_NO_EXTENSIONS"),
    reason="the extension was built; this checks an install without it",
)
def test_pure_install_has_no_extension():
    with pytest.raises(ImportError):
        importlib.import_module("shimpid._speedups")


def test_environment_variable_forces_pure():
    code = "import shimpid, shimpid._pure as p\n"
    code += "print(shimpid.BACKEND, p.PidRecord is shimpid.PidRecord)"
    env = dict(os.environ, SHIMPID_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(shimpid.__file__)),
    )
    assert out.stdout.split() == ["python", "True"]


def test_exports():
    for name in shimpid.__all__:
        assert hasattr(shimpid, name), name
    assert issubclass(shimpid.StorageError, OSError)
    assert shimpid.StorageError is _common.StorageError


PUBLISHED = """
import pickle, shimpid
for name in shimpid.__all__:
    value = getattr(shimpid, name)
    if isinstance(value, type):
        assert value.__module__ == "shimpid", (name, value.__module__)
        assert repr(value) == f"<class 'shimpid.{name}'>", repr(value)
        assert pickle.loads(pickle.dumps(value)) is value, name
for value in (shimpid.PidRecord, shimpid.PidFileWriter):  # refused as subclasses by that name
    try:
        type("Sub", (value,), {})
    except TypeError as err:
        assert f"'shimpid.{value.__name__}'" in str(err), err
    else:
        raise AssertionError(f"{value} was subclassed")
for value in (shimpid.PidRecord(5, 6), shimpid.Verified(5), shimpid.Legacy(5), shimpid.Absent(),
              shimpid.StorageError("bad"), shimpid.AlreadyLocked("/x", 5),
              shimpid.AlreadyRunning("/x", 5, "why")):
    copy = pickle.loads(pickle.dumps(value))
    assert type(copy) is type(value) and str(copy) == str(value), value
print(shimpid.BACKEND)
"""


@pytest.mark.parametrize("pure", [False, True], ids=["default", "pure"])
def test_public_classes_show_as_shimpid(pure):
    """Reprs, tracebacks, pickles and documentation name shimpid.X, not a private module, in
    either backend (the extension's types are renamed when the backend is chosen)."""
    env = dict(os.environ)
    if pure:
        env["SHIMPID_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", PUBLISHED],
        env=env,
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(shimpid.__file__)),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python" if pure or PURE_ONLY else "cython"]


def public_members(cls) -> list[str]:
    return sorted(n for n in dir(cls) if not n.startswith("_"))


def shape(fn) -> list[tuple]:
    """Parameter names, kinds and defaults: annotations exist only in the pure module."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_extension_has_the_pure_backends_api(extension):
    for name in PUBLIC:
        ours, pure = getattr(extension, name), getattr(_pure, name)
        if not inspect.isclass(pure):
            assert shape(ours) == shape(pure), name
            continue
        assert public_members(ours) == public_members(pure), name
        for member in public_members(pure):
            if isinstance(inspect.getattr_static(pure, member), property):
                assert not callable(getattr(ours, member, None)), f"{name}.{member}"
            else:  # constructors are compared through at(); Cython's __init__ has no signature
                assert shape(getattr(ours, member)) == shape(getattr(pure, member)), (
                    f"{name}.{member}"
                )


def _doc(obj) -> str:
    # An extension type's docstring starts with its signature for inspect ("X(...)\n--\n\n").
    doc = getattr(obj, "__doc__", None) or ""
    if "\n--\n\n" in doc:
        doc = doc.split("\n--\n\n", 1)[1]
    return inspect.cleandoc(doc)


def test_the_extension_says_what_the_pure_backend_says(extension):
    """The pure backend's docstrings are the reference (the documentation site shows them): the
    extension's classes, methods and functions carry the same text, so ``help()`` says the same
    whichever backend runs. (Its data attributes, ``path`` and the like, have no docstrings.)"""
    for name in PUBLIC:
        ours, pure = getattr(extension, name), getattr(_pure, name)
        assert _doc(ours) == _doc(pure), name
        if inspect.isclass(pure):
            for member in public_members(pure):
                theirs = inspect.getattr_static(pure, member)
                if not isinstance(theirs, property):
                    assert _doc(getattr(ours, member)) == _doc(getattr(pure, member)), (
                        f"{name}.{member}"
                    )


@pytest.mark.parametrize(
    "change",
    [
        "PID_MAX = 2**22",
        "PASSING_ERRNOS = frozenset({errno.EMFILE})",
        "NOT_A_PROCESS_ERRNOS |= {errno.EPERM}",
    ],
)
def test_the_extension_refuses_another_commons_rules(extension, change):
    """What the C code holds of _common's rules (its limits, its errno sets) is checked against
    _common at import: an extension built against other rules fails to load, never applies
    them."""
    script = (
        "import errno, shimpid._common as c\n"  # (pure: the package has not loaded the extension)
        f"c.{change}\n"
        "import shimpid._speedups\n"
    )
    env = dict(os.environ, SHIMPID_PURE_PYTHON="1", PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert "ImportError: shimpid._speedups was built against another shimpid._common" in (
        result.stderr
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the link strips on Linux")
def test_the_compiled_module_ships_without_its_debugging_sections(extension):
    """1.7 MB with them, about 300 KB without: kept only by traced (coverage) and sanitized
    builds, whose reports want them."""
    with open(extension.__file__, "rb") as f:
        data = f.read()
    if env_flag("SHIMPID_TRACE") or b"__asan_" in data or b"__ubsan_" in data:
        pytest.skip("a traced or sanitized build keeps its debugging sections")
    assert b".debug_info" not in data
    assert len(data) < 512 * 1024


def test_typing_files_are_shipped():
    here = os.path.dirname(shimpid.__file__)
    assert os.path.exists(os.path.join(here, "py.typed"))
    assert os.path.exists(os.path.join(here, "_speedups.pyi"))
    assert os.path.exists(os.path.join(here, "_speedups.pxd"))


def test_import_is_light():
    """What every spawner and every CLI call pays: beyond what ``import subprocess`` loads, no
    asyncio (31 ms), dataclasses, typing (the benchmark times it: bench/test_import.py)."""

    def loaded_by(module):
        code = (
            f"import sys; before = set(sys.modules); import {module}; "
            "print(' '.join(sorted(set(sys.modules) - before)))"
        )
        return set(
            subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                cwd=os.path.dirname(__file__),
            ).stdout.split()
        )

    added = loaded_by("shimpid") - loaded_by("subprocess")
    for heavy in ("asyncio", "dataclasses", "typing", "re", "inspect", "ctypes", "json"):
        assert heavy not in added, f"import shimpid imports {heavy}"
    assert "shimpid._rundir" not in added and "shimpid._handle" not in added


def test_lazy_names_arrive_on_first_use():
    assert shimpid.clean is shimpid._rundir.clean
    assert shimpid.ProcessHandle is shimpid._handle.ProcessHandle
    assert {"clean", "ProcessHandle", "Removal"} <= set(dir(shimpid))
    with pytest.raises(AttributeError):
        shimpid.no_such_name  # noqa: B018


def test_signatures_of_the_extensions_types(impl):
    writer = ["path", "atomic", "mode", "identity_line", "capability"]
    for cls, names in [
        (impl.PidRecord, ["pid", "start_time"]),
        (shimpid.PidFileReader, ["path"]),
        (impl.PidFileWriter, writer),
    ]:
        assert list(inspect.signature(cls).parameters) == names


# An extension built in place against an older _common: a name its module code reads is gone.
STALE = """
import importlib.abc, importlib.util, sys
class Stale(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "shimpid._speedups" else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise AttributeError("module 'shimpid._common' has no attribute 'gone'")
sys.meta_path.insert(0, Stale())
"""


MISSING = "import sys; sys.modules['shimpid._speedups'] = None"


@pytest.mark.parametrize("block", [MISSING, STALE], ids=["missing", "stale"])
def test_a_missing_extension_is_said_once(tmp_path, block):
    """On CPython, a package without its extension (installed without a compiler), or with one
    that cannot load, warns, and SHIMPID_PURE_PYTHON=1 chooses the pure backend silently;
    elsewhere (PyPy) the pure backend is the only one, and chosen silently."""
    code = block + "\nimport warnings; warnings.simplefilter('always')\n"
    code += "import shimpid; print(shimpid.BACKEND)"
    # sys.path as this run has it: the desk's PYTHONPATH=.. means nothing from tmp_path
    env = dict(os.environ, SHIMPID_PURE_PYTHON="0", PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.stdout == "python\n", result.stderr
    if sys.implementation.name != "cpython":
        assert result.stderr == ""
        return
    assert "RuntimeWarning: shimpid: the C extension is not available: " in result.stderr
    assert "circular import" not in result.stderr
    assert "SHIMPID_PURE_PYTHON=1" in result.stderr
    env["SHIMPID_PURE_PYTHON"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert (result.stdout, result.stderr) == ("python\n", "")


def test_version():
    assert shimpid.__version__.count(".") == 2
    out = subprocess.run(
        [sys.executable, "-m", "shimpid", "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(__file__),
    ).stdout
    assert out == f"shimpid {shimpid.__version__} ({shimpid.BACKEND} backend)\n"
