"""The child-side path, proven: no heap allocation after fork(), and a C-level API for others.

The allocation probe (tests/probe/count_malloc.c) is preloaded into a fresh interpreter run with
PYTHONMALLOC=malloc, so Python object allocations reach malloc() and are counted too. It counts
between two markers; the test calibrates it first (nothing between the markers counts zero, an
allocation counts more), so that a zero for write_current() means something.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time

import pytest

import shimpid
from _helpers import (
    PURE_ONLY,
    bound_reader,
    cached_build,
    proc_state,
    reap,
    require_or_skip,
)
from shimpid._common import env_flag

HERE = os.path.dirname(os.path.abspath(__file__))


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (cc) to build the test probes")
    return cc


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> str:
    library = tmp_path_factory.mktemp("probe") / "count_malloc.so"
    subprocess.run(
        [
            compiler(),
            "-shared",
            "-fPIC",
            "-O2",
            "-o",
            str(library),
            os.path.join(HERE, "probe", "count_malloc.c"),
            "-ldl",
        ],
        check=True,
    )
    return str(library)


SCRIPT = """
import importlib, os, subprocess, sys, threading
sys.path[:0] = {path!r}
impl = importlib.import_module({module!r})
ARM, DISARM = 0o7770, 0o7771
umask = os.umask
writer = impl.PidFileWriter.at({pidfile!r})
write_current = writer.write_current

# Other threads allocating as fast as they can: at fork() one may hold the malloc lock.
done = threading.Event()
def churn():
    while not done.is_set():
        [bytes(64) for _ in range(100)]

churners = [threading.Thread(target=churn) for _ in range(2)]
for thread in churners:
    thread.start()

pid = os.fork()
if pid == 0:
    umask(ARM); umask(DISARM)                        # 1. nothing: must count 0
    umask(ARM); b = bytearray(100); umask(DISARM)    # 2. one allocation: must count > 0
    umask(ARM); write_current(); umask(DISARM)       # 3. the child-side write
    umask(ARM); writer.write_current(); umask(DISARM)  # 4. the same, looked up in the child
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status

def child_side():
    umask(ARM); write_current(); umask(DISARM)      # 5. the same, as a preexec_fn

subprocess.Popen(["true"], preexec_fn=child_side).wait()
# Joined, not left as daemons: CPython 3.10 can crash (SIGSEGV) finalizing while daemon
# threads still allocate.
done.set()
for thread in churners:
    thread.join()
"""


def count_allocations(impl, probe, tmp_path) -> list[int]:
    out = tmp_path / "counts"
    script = SCRIPT.format(path=sys.path, module=impl.__name__, pidfile=str(tmp_path / "shim.pid"))
    env = dict(os.environ, LD_PRELOAD=probe, PYTHONMALLOC="malloc", SHIMPID_PROBE_OUT=str(out))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [int(line) for line in out.read_text().split()]


@pytest.mark.skipif(
    sys.implementation.name != "cpython",
    reason="the probe counts malloc(); PyPy's allocator does not go through it",
)
@pytest.mark.skipif(env_flag("SHIMPID_TRACE"), reason="a traced build (coverage) allocates")
@pytest.mark.skipif(
    env_flag("SHIMPID_SANITIZER"),
    reason="the probe's malloc counter replaces the sanitizer's allocator (.ci/asan)",
)
def test_write_current_allocates_nothing_after_fork(impl, probe, tmp_path):
    empty, allocating, forked, looked_up, preexec = count_allocations(impl, probe, tmp_path)
    assert empty == 0, "calibration: nothing between the markers must count zero"
    assert allocating > 0, "calibration: an allocation between the markers must count"
    if impl.__name__.endswith("_speedups"):
        # The method looked up in the child too: nothing (a __getattr__ anywhere in the
        # writer's classes would cost CPython's method fast path, and a bound method here).
        assert forked == looked_up == preexec == 0
    else:
        # The pure fallback makes Python objects on this path; the probe sees them.
        assert forked > 0 and looked_up > 0 and preexec > 0


EXTENSION_SETUP = """
from setuptools import setup, Extension
from Cython.Build import cythonize
setup(ext_modules=cythonize([Extension("fork_write", ["fork_write.pyx"])],
                            compiler_directives={"language_level": "3"}, quiet=True),
      script_args=["build_ext", "--inplace", "-q"])
"""


@pytest.fixture(scope="module")
def fork_write():
    """tests/capi/fork_write.pyx, built against the installed shimpid/_speedups.pxd."""
    if PURE_ONLY:
        pytest.skip("SHIMPID_PURE_PYTHON is set: there is no extension to cimport")
    try:
        import Cython
        import setuptools
    except ImportError:
        require_or_skip("Cython and setuptools are needed to build the C-API test extension")
    import shimpid._speedups

    # Cython finds _speedups.pxd where shimpid is imported from (site-packages, under tox).
    root = os.path.dirname(os.path.dirname(shimpid._speedups.__file__))
    source = os.path.join(HERE, "capi", "fork_write.pyx")
    flags = "\0".join(os.environ.get(name, "") for name in ("CC", "CFLAGS", "LDFLAGS", "LDSHARED"))
    inputs = [sys.version.encode(), Cython.__version__.encode(), setuptools.__version__.encode()]
    inputs += [EXTENSION_SETUP.encode(), flags.encode()]
    for name in (
        source,
        os.path.join(root, "shimpid", "_speedups.pxd"),
        shimpid._speedups.__file__,
    ):
        with open(name, "rb") as f:
            inputs.append(f.read())

    def compile_it(build):
        shutil.copy(source, build)
        (build / "setup.py").write_text(EXTENSION_SETUP)
        env = dict(os.environ, PYTHONPATH=root)
        result = subprocess.run(
            [sys.executable, "setup.py"], cwd=build, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr

    build = cached_build("capi", inputs, compile_it)
    sys.path.insert(0, str(build))
    try:
        import fork_write

        yield fork_write
    finally:
        sys.path.remove(str(build))


def test_c_api_writes_from_a_child_forked_without_the_gil(fork_write, pid_path):
    from shimpid import _speedups

    writer = _speedups.PidFileWriter.at(pid_path)
    pid = fork_write.fork_and_write(writer)
    deadline = time.monotonic() + 30
    try:
        while proc_state(pid) != "Z":  # wait for it to exit, without reaping it
            assert time.monotonic() < deadline, "the child did not exit"
        with bound_reader(_speedups):
            record = shimpid.PidFileReader.at(pid_path).read()
        assert record == _speedups.PidRecord(pid, _speedups.process_start_time(pid))
    finally:
        status = reap(pid)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_c_api_reports_errno(fork_write, tmp_path):
    from shimpid import _speedups

    (tmp_path / "gone").mkdir()
    writer = _speedups.PidFileWriter.at(tmp_path / "gone" / "shim.pid")
    (tmp_path / "gone").rmdir()
    pid = fork_write.fork_and_write(writer)
    status = reap(pid)
    assert os.WEXITSTATUS(status) == 2  # ENOENT, returned as -ENOENT and exited with


def test_pxd_is_installed_beside_the_extension():
    if PURE_ONLY:
        pytest.skip("SHIMPID_PURE_PYTHON is set")
    from shimpid import _speedups

    here = os.path.dirname(_speedups.__file__)
    assert os.path.exists(os.path.join(here, "_speedups.pxd"))
    assert sysconfig.get_config_var("EXT_SUFFIX") in os.path.basename(_speedups.__file__)
