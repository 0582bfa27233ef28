"""Helpers for tests that need real processes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shimpid._common import env_flag

# The pure backend alone (the tox *-pure environments): every test of the extension skips.
PURE_ONLY = env_flag("SHIMPID_PURE_PYTHON")
# CI's depth: more property-test examples and longer races (a desk run stays quick).
THOROUGH = env_flag("SHIMPID_THOROUGH")


def rounds(quick: int, thorough: int) -> int:
    """How many times a race or storm test repeats: ``thorough`` in CI, ``quick`` elsewhere."""
    return thorough if THOROUGH else quick


def require_or_skip(reason: str) -> None:
    """Skip for want of an optional tool, or fail where SHIMPID_REQUIRE_ALL=1 (CI) says so."""
    if env_flag("SHIMPID_REQUIRE_ALL"):
        pytest.fail(f"{reason} (SHIMPID_REQUIRE_ALL=1)")
    pytest.skip(reason)


def cached_build(name: str, inputs: list[bytes], build: Callable[[Path], None]) -> Path:
    """The directory ``build(directory)`` filled, reused while ``inputs`` (sources, tools, the
    recipe: everything that changes the result) stay the same: the
    Rust oracle and the C-API extension cost seconds to compile, at every run otherwise.

    Kept in tests/.cache (the checkout's, never a shared /tmp path a local user could plant);
    a build is renamed into place whole, so a run that is killed or races another leaves none
    half made.
    """
    digest = hashlib.sha256()
    for part in inputs:
        digest.update(len(part).to_bytes(8, "little") + part)
    root = Path(__file__).parent / ".cache"
    final = root / f"{name}-{digest.hexdigest()[:20]}"
    if final.is_dir():
        return final
    root.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        build(work)
        os.rename(work, final)
    except BaseException as error:
        shutil.rmtree(work, ignore_errors=True)
        # Another run's rename won the race: take that one (but never swallow an interrupt).
        if not final.is_dir() or not isinstance(error, Exception):
            raise
    return final


def stop(child: subprocess.Popen) -> None:
    """Kill (if it still runs), reap and close a child the test started: nothing left open."""
    if child.poll() is None:
        child.kill()
    child.wait()
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            stream.close()


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()[0].decode()


def reap(pid: int, timeout: float = 30) -> int:
    """Wait for a child the test forked and return its wait status; one still running after
    ``timeout`` seconds is killed, reaped, and fails the test: a stuck child (under ASan, a
    fork() can leave one stuck in malloc) fails a test, never hangs the session."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} did not finish within {timeout} s")
        time.sleep(0.005)


def read_within(fd: int, timeout: float = 30) -> bytes:
    """One os.read() of a pipe, which must have something (or its end) within ``timeout``."""
    if not select.select([fd], [], [], timeout)[0]:
        raise AssertionError(f"nothing to read within {timeout} s")
    return os.read(fd, 65536)


def run_in_child(fn, *, timeout: float = 30) -> tuple[int, bytes]:
    """Run ``fn(write_fd)`` in a forked child; return its exit status code and what it wrote.

    The child exits with ``os._exit``, never back into pytest, whatever ``fn`` does.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            fn(write_fd)
        except BaseException as err:  # report, never unwind into pytest
            try:
                os.write(write_fd, f"{type(err).__name__}: {err}".encode())
            except OSError:
                pass
            code = 70
        os._exit(code)
    os.close(write_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while chunk := read_within(read_fd, max(deadline - time.monotonic(), 0)):
            chunks.append(chunk)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"child did not finish within {timeout} s") from None
    finally:
        os.close(read_fd)
    status = reap(pid, max(deadline - time.monotonic(), 1))
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status), b"".join(chunks)
    return os.WEXITSTATUS(status), b"".join(chunks)


@contextlib.contextmanager
def bound_reader(impl) -> Iterator[None]:
    """Within it, shimpid.PidFileReader reads through backend ``impl`` (the reader is written
    once, over whichever backend shimpid._reader._backend names)."""
    from shimpid import _reader

    saved = _reader._backend
    _reader._backend = impl
    try:
        yield
    finally:
        _reader._backend = saved


def script_prelude(impl, level: int | None = None) -> str:
    """Lines that make a ``python -c`` script import ``impl`` (as ``impl``) as this test does,
    with shimpid.PidFileReader reading through it."""
    lines = [
        "import importlib, json, os, subprocess, sys, time",
        f"sys.path[:0] = {sys.path!r}",
        f"impl = importlib.import_module({impl.__name__!r})",
        "import shimpid, shimpid._reader",
        "shimpid._reader._backend = impl",
    ]
    if level is not None:
        lines.append(f"impl._set_pidfd_level({level})")
    return "\n".join(lines) + "\n"


def run_in_pid_namespace(
    script: str, *, mount_proc: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``python -c script`` as pid 1 of a new pid namespace, killed with everything it
    started when it ends: a test that could signal the wrong process harms only its own.

    ``mount_proc=False`` leaves the host's /proc in place, as a careless ``unshare`` does.
    Skips (or fails, under SHIMPID_REQUIRE_ALL=1) where namespaces cannot be made here.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        require_or_skip("unshare (util-linux) not found: no pid namespace for this test")
    args = [unshare, "--pid", "--fork", "--kill-child"]
    if mount_proc:
        args.append("--mount-proc")
    probe = subprocess.run([*args, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        require_or_skip(f"cannot make a pid namespace here: {probe.stderr.strip()}")
    return subprocess.run(
        [*args, sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


def require_pidfd_level(impl, level: int, what: str = "pidfs (Linux 6.9+)") -> None:
    """Skip unless ``impl`` can work at ``level`` (shimpid._common.PIDFS, PIDFD): a Python
    without os.pidfd_open (PyPy) just skips; a kernel without it is a missing capability."""
    if impl._pidfd_level() >= level:
        return
    if not hasattr(os, "pidfd_open"):
        pytest.skip(f"this Python has no os.pidfd_open: no {what}")
    require_or_skip(f"this kernel offers no {what}")


HERE = os.path.dirname(os.path.abspath(__file__))


def build_probe(name: str, directory, *flags: str) -> str:
    """Compile tests/probe/<name>.c into directory; the path of the program (or library)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (cc) to build the test probes")
    out = os.path.join(str(directory), name)
    subprocess.run(
        [cc, "-O2", "-o", out, os.path.join(HERE, "probe", f"{name}.c"), *flags], check=True
    )
    return out


def flock_holder(path) -> subprocess.Popen:
    """A process holding an exclusive flock() on path, as flock(1) does, and nothing else."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\n"
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    if child.stdout.readline() != "locked\n":
        stop(child)
        pytest.fail("the flock() holder did not start")
    return child
