"""Every test that takes ``impl`` runs against both backends, each imported directly.

The Cython parameter imports ``shimpid._speedups`` itself, so a missing or broken extension fails
the run loudly instead of quietly testing the pure backend twice. It is skipped only when
``SHIMPID_PURE_PYTHON`` is set, which is how the pure-only tox environments say "there is no
extension here, on purpose".
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import shimpid
from _helpers import PURE_ONLY, proc_state, require_or_skip


def pytest_report_header(config: pytest.Config) -> list[str]:
    where = os.path.dirname(shimpid.__file__)
    mode = "pure backend only (SHIMPID_PURE_PYTHON)" if PURE_ONLY else "both backends"
    return [f"shimpid {shimpid.__version__} from {where}: BACKEND={shimpid.BACKEND}, {mode}"]


@pytest.fixture(params=["pure", "cython"], scope="session")
def impl(request: pytest.FixtureRequest):
    if request.param == "cython":
        if PURE_ONLY:
            pytest.skip("SHIMPID_PURE_PYTHON is set: the pure backend is tested alone")
        return importlib.import_module("shimpid._speedups")
    return importlib.import_module("shimpid._pure")


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
    path = tempfile.mkdtemp(prefix="shimpid-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def oracle(tmp_path_factory):
    """The reference's decode and stat parse, compiled with rustc, answering over a pipe.

    Skipped where rustc is missing, unless SHIMPID_REQUIRE_ALL=1 (set by CI) makes that a
    failure.
    """
    rustc = shutil.which("rustc")
    if rustc is None:
        require_or_skip("rustc not found: the Rust oracle cannot be built")
    source = os.path.join(os.path.dirname(__file__), "oracle", "reference_decode.rs")
    binary = tmp_path_factory.mktemp("oracle") / "reference_decode"
    subprocess.run([rustc, "--edition", "2021", "-O", source, "-o", str(binary)], check=True)
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(kind: str, data: bytes) -> str:
        proc.stdin.write(f"{kind}{data.hex()}\n".encode())
        proc.stdin.flush()
        return proc.stdout.readline().decode().rstrip("\n")

    yield ask
    proc.stdin.close()
    proc.wait()
