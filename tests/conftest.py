"""Every test that takes ``impl`` runs against both backends, each imported directly.

The Cython parameter imports ``shimpid._speedups`` itself, so a missing or broken extension fails
the run loudly instead of quietly testing the pure backend twice. It is skipped only when
``SHIMPID_PURE_PYTHON`` is set, which is how the pure-only tox environments say "there is no
extension here, on purpose".
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from hypothesis import HealthCheck, settings

import shimpid
from _helpers import (
    PURE_ONLY,
    THOROUGH,
    bound_reader,
    cached_build,
    proc_state,
    require_or_skip,
    script_prelude,
    stop,
)

# _pure too: tests compare it, as shimpid._pure, with the backend they run on, and the package
# loads it only where it is the backend.
from shimpid import _cli, _lock, _operate, _pure, _rundir  # noqa: F401

# Property tests: a few hundred examples at a desk, thousands in CI (SHIMPID_THOROUGH=1, which
# also lengthens the race tests: see _helpers.rounds). No deadline: these machines are noisy.
settings.register_profile(
    "quick",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("thorough" if THOROUGH else "quick")


def pytest_report_header(config: pytest.Config) -> list[str]:
    where = os.path.dirname(shimpid.__file__)
    mode = "pure backend only (SHIMPID_PURE_PYTHON)" if PURE_ONLY else "both backends"
    depth = "thorough (SHIMPID_THOROUGH)" if THOROUGH else "quick"
    return [
        f"shimpid {shimpid.__version__} from {where}: BACKEND={shimpid.BACKEND}, {mode}, {depth}"
    ]


@pytest.fixture(params=["pure", "cython"], scope="session")
def impl(request: pytest.FixtureRequest):
    if request.param == "cython":
        if PURE_ONLY:
            pytest.skip("SHIMPID_PURE_PYTHON is set: the pure backend is tested alone")
        return importlib.import_module("shimpid._speedups")
    return importlib.import_module("shimpid._pure")


@pytest.fixture(autouse=True)
def _reader_on_impl(request: pytest.FixtureRequest):
    """The one PidFileReader (shimpid._reader) reads through the backend a test takes as
    ``impl``; a test without ``impl`` keeps the run's backend."""
    if "impl" not in request.fixturenames:
        yield
        return
    with bound_reader(request.getfixturevalue("impl")):
        yield


@pytest.fixture(scope="session")
def backend():
    """The backend this run's shimpid uses (the extension, unless SHIMPID_PURE_PYTHON), imported
    directly as ``impl`` is: for code that is one whatever the backend, tested once."""
    return importlib.import_module("shimpid._pure" if PURE_ONLY else "shimpid._speedups")


@pytest.fixture(scope="session")
def extension():
    """The Cython backend, for the tests of its own fast paths against the general rules; the
    pure leg skips them (it would compare the pure backend with itself)."""
    if PURE_ONLY:
        pytest.skip("SHIMPID_PURE_PYTHON is set: the pure backend is tested alone")
    return importlib.import_module("shimpid._speedups")


@pytest.fixture
def locking(impl, monkeypatch):
    """PidFileLock asking ``impl`` for its verdicts (its system calls are one code)."""
    from shimpid import PidFileLock, _lock, _operate, _rundir

    monkeypatch.setattr(_lock, "_backend", impl)
    monkeypatch.setattr(_rundir, "_backend", impl)
    monkeypatch.setattr(_operate, "_backend", impl)
    return PidFileLock


def holder_script(impl, path, *, then: str = "time.sleep(60)") -> str:
    """A ``python -c`` script that takes the lock on path with impl, says "locked" (or why not)
    on stdout, then runs ``then``."""
    return script_prelude(impl) + textwrap.dedent(f"""
        from shimpid import _lock
        _lock._backend = impl
        lock = _lock.PidFileLock({str(path)!r})
        try:
            lock.acquire(timeout=0)
        except _lock.AlreadyLocked as err:
            print("held", err.pid, flush=True)
            sys.exit(1)
        print("locked", flush=True)
        {then}
        """)


@pytest.fixture
def hold(impl):
    """Start a process holding the lock on a path; it is killed at the end of the test."""
    children = []

    def start(path, **kwargs):
        child = subprocess.Popen(
            [sys.executable, "-c", holder_script(impl, path, **kwargs)],
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        assert child.stdout.readline() == "locked\n"
        return child

    yield start
    for child in children:
        stop(child)


@pytest.fixture
def pid_path(tmp_path):
    return tmp_path / "shim.pid"


@pytest.fixture
def sleeper():
    """A live child process (not reaped until the test ends)."""
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


@pytest.fixture
def zombie():
    """A child that has exited but is not reaped: it still holds its pid."""
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while proc_state(child.pid) != "Z":
        assert time.monotonic() < deadline, "child did not exit"
        time.sleep(0.005)
    yield child
    child.wait()


@pytest.fixture
def reaped_pid() -> int:
    """The pid of a child that has exited and been reaped: no process holds it now."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def shared_dir():
    """A directory that processes of other users can read (tmp_path is private to root)."""
    path = tempfile.mkdtemp(
        prefix="shimpid-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def other_user():
    """``(uid, gid)`` of a user made for this session, and removed after it, whatever happens:
    the other local user of the hostile tests (needs root; skipped without)."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to make another user")
    name = f"shimpid-t{os.getpid()}"
    subprocess.run(
        ["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        import pwd

        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)  # where userdel leaves it


@pytest.fixture(scope="session")
def oracle():
    """The reference's decode and stat parse, compiled with rustc, answering over a pipe.

    Skipped where rustc is missing, unless SHIMPID_REQUIRE_ALL=1 (set by CI) makes that a
    failure.
    """
    rustc = shutil.which("rustc")
    if rustc is None:
        require_or_skip("rustc not found: the Rust oracle cannot be built")
    source = os.path.join(os.path.dirname(__file__), "oracle", "reference_decode.rs")
    version = subprocess.run([rustc, "-vV"], capture_output=True, check=True).stdout
    command = [rustc, "--edition", "2021", "-O", source, "-o"]
    with open(source, "rb") as f:
        inputs = [f.read(), version, "\0".join(command).encode()]
    built = cached_build(
        "oracle",
        inputs,
        lambda out: subprocess.run([*command, str(out / "reference_decode")], check=True),
    )
    proc = subprocess.Popen(
        [built / "reference_decode"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )

    def ask(kind: str, data: bytes) -> str:
        proc.stdin.write(f"{kind}{data.hex()}\n".encode())
        proc.stdin.flush()
        return proc.stdout.readline().decode().rstrip("\n")

    yield ask
    proc.stdin.close()
    try:
        proc.wait(10)  # EOF ends it, unless a forked child that outlived its test holds the pipe
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


class Ran(tuple):
    """What a command-line run gave: ``(code, stdout, stderr)``, also as attributes."""

    __slots__ = ()

    def __new__(cls, code: int, stdout: str, stderr: str) -> Ran:
        return tuple.__new__(cls, (code, stdout, stderr))

    returncode = property(lambda self: self[0])
    stdout = property(lambda self: self[1])
    stderr = property(lambda self: self[2])


# Commands that only look at files and signal processes: they run in this interpreter, 50 times
# faster than in a new one. The others (spawn, lock: they start programs, handle signals, exec)
# run as ``python -m shimpid``, the real entry point.
IN_PROCESS = {"status", "show", "pid", "signal", "stop", "ls", "clean"}


@pytest.fixture
def cli(impl, monkeypatch):
    """The command line with ``impl``'s backend: ``cli(*args, fresh=False, **run_options)``
    gives a ``Ran``. ``fresh=True`` (or any ``subprocess.run`` option) takes a new interpreter:
    for what the command itself is (its pid, its parent, its signals)."""
    env = dict(
        os.environ,
        SHIMPID_PURE_PYTHON="1" if impl is shimpid._pure else "0",
        PYTHONPATH=os.pathsep.join(sys.path),
    )

    def run(*args, fresh=False, timeout=60, **options):
        argv = [
            os.fsdecode(arg) if isinstance(arg, (bytes, os.PathLike)) else str(arg) for arg in args
        ]
        if argv and argv[0] in IN_PROCESS and not fresh and set(options) <= {"cwd"}:
            return _in_process(impl, argv, monkeypatch, options.get("cwd"))
        done = subprocess.run(
            [sys.executable, "-m", "shimpid", *argv],
            env=options.pop("env", env),
            capture_output=True,
            text=True,
            timeout=timeout,
            **options,
        )
        return Ran(done.returncode, done.stdout, done.stderr)

    run.env = env
    run.backend = impl.BACKEND
    return run


def _in_process(impl, argv, monkeypatch, cwd=None) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    with monkeypatch.context() as patch:
        if cwd is not None:
            patch.chdir(cwd)
        for module in (_cli, _rundir, _lock, _operate):
            patch.setattr(module, "_backend", impl)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = _cli.main(argv)
            except SystemExit as exit:  # argparse: --help, a usage error
                code = exit.code
    return Ran(code, out.getvalue(), err.getvalue())
