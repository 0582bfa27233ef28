"""Parent-side recording: shimpid.spawn, writer.write_for and the asyncio variant."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import pytest

import shimpid
from _helpers import (
    proc_state,
    require_or_skip,
    run_in_child,
    run_in_pid_namespace,
    script_prelude,
)
from shimpid import Absent, StorageError, Verified, _common


def children() -> set[int]:
    """Pids of this process's children, live or zombie, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rpartition(b")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.add(int(entry))
    return found


@pytest.fixture
def no_stray_children():
    """The test must leave no child behind, reaped or not."""
    before = children()
    yield
    assert children() - before == set()


@pytest.fixture
def backend(impl, monkeypatch):
    """shimpid.spawn with ``impl``'s PidFileWriter (the package picks one at import)."""
    monkeypatch.setattr(shimpid._spawn, "PidFileWriter", impl.PidFileWriter)
    monkeypatch.setattr(shimpid._spawn, "process_start_time", impl.process_start_time)
    monkeypatch.setattr(shimpid._spawn, "_usable_directories", {})  # no other backend's writers
    return impl


def record_of(impl, path):
    return shimpid.PidFileReader.at(path).read()


# ---- shimpid.spawn -------------------------------------------------------------------------------


def test_spawn_records_a_live_child(backend, pid_path, no_stray_children):
    child = shimpid.spawn(["sleep", "60"], pid_path)
    try:
        assert record_of(backend, pid_path) == backend.PidRecord(
            child.pid, backend.process_start_time(child.pid)
        )
        assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(child.pid)
    finally:
        child.kill()
        child.wait()
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Absent()


def test_spawn_records_a_child_that_already_exited(backend, pid_path, no_stray_children):
    """The parent has not reaped it, so it still holds its pid and its start time."""
    child = shimpid.spawn(["true"], pid_path)
    record = record_of(backend, pid_path)
    assert record.pid == child.pid
    assert record.start_time == backend.process_start_time(child.pid)
    assert child.wait() == 0
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Absent()


def test_spawn_passes_popen_arguments(backend, tmp_path, pid_path, no_stray_children):
    child = shimpid.spawn(
        ["sh", "-c", "pwd; echo $SHIMPID_X; cat"],
        pid_path,
        cwd=tmp_path,
        env={"SHIMPID_X": "x", "PATH": os.environ["PATH"]},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = child.communicate("in\n")
    assert out == f"{tmp_path}\nx\nin\n"
    assert isinstance(child, subprocess.Popen)
    assert record_of(backend, pid_path).pid == child.pid


@pytest.mark.parametrize("atomic", [True, False])
def test_spawn_with_a_prepared_writer(backend, pid_path, atomic, no_stray_children):
    writer = backend.PidFileWriter.at(pid_path, atomic=atomic)
    for _ in range(3):
        child = shimpid.spawn(["true"], writer)
        assert record_of(backend, pid_path).pid == child.pid
        child.wait()


def test_a_failed_record_kills_and_reaps_the_child(backend, pid_path, no_stray_children):
    pid_path.mkdir()  # the record cannot be renamed over a directory
    with pytest.raises(IsADirectoryError):
        shimpid.spawn(["sleep", "60"], pid_path, stdout=subprocess.PIPE)
    assert pid_path.is_dir() and os.listdir(pid_path.parent) == ["shim.pid"]


def test_a_bad_path_fails_before_anything_starts(backend, tmp_path, no_stray_children):
    marker = tmp_path / "ran"
    with pytest.raises(StorageError):
        shimpid.spawn(["touch", str(marker)], "/tmp/\0bad")
    for _ in range(5):  # a missing directory used to be found only after the child had run
        with pytest.raises(StorageError) as info:
            shimpid.spawn(["touch", str(marker)], tmp_path / "missing" / "shim.pid")
        assert info.value.errno == errno.ENOENT
    assert not marker.exists()


def spawn_each(directory: str) -> list:
    """spawn() in turn: atomic and in place where another's file is, in place where one's own
    is; each one's outcome, and how many Popen were made."""
    started = []

    class Counted(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            started.append(args)
            super().__init__(*args, **kwargs)

    out = []
    real, subprocess.Popen = subprocess.Popen, Counted
    try:
        for name, atomic in (("app.pid", True), ("app.pid", False), ("mine.pid", False)):
            try:
                shimpid.spawn(["true"], os.path.join(directory, name), atomic=atomic).wait()
                out.append("started")
            except OSError as err:
                out.append([type(err).__name__, err.errno, err.filename])
    finally:
        subprocess.Popen = real
    return [out, len(started)]


UNWRITABLE = """
from test_spawn import spawn_each
subprocess.run(["mount", "--bind", sys.argv[1], sys.argv[1]], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", sys.argv[1]], check=True)
print(json.dumps(spawn_each(sys.argv[1])))
"""


def test_a_directory_it_cannot_write_in_fails_before_anything_starts(
    backend, shared_dir, other_user
):
    """Not permitted (another user) or a read-only filesystem (a mount namespace of the test's
    own): the error the write would raise, before the child is started, not after it has run;
    an in-place writer whose file is there and writable writes it."""
    uid, gid = other_user
    directory = os.path.join(shared_dir, "locked")
    os.mkdir(directory, 0o755)  # root's: the other user may not add files
    mine = os.path.join(directory, "mine.pid")
    with open(mine, "w"):
        pass
    os.chown(mine, uid, gid)

    def as_other(out):
        backend._pidfd_level()  # found as root: the pure backend's ctypes is root's to read
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        os.write(out, json.dumps(spawn_each(directory)).encode())

    code, said = run_in_child(as_other)
    assert code == 0, said
    refused = ["PermissionError", errno.EACCES, os.path.join(directory, "app.pid")]
    assert json.loads(said) == [[refused, refused, "started"], 1]
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if subprocess.run([*namespace, "true"]).returncode:
        require_or_skip("cannot make a mount namespace here (unshare)")
    script = script_prelude(backend) + UNWRITABLE
    ran = subprocess.run(
        [*namespace, sys.executable, "-c", script, directory],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(__file__),
    )
    assert ran.returncode == 0, ran.stderr
    out, started = json.loads(ran.stdout)
    assert started == 0 and [failure[:2] for failure in out] == [["OSError", errno.EROFS]] * 3


@pytest.fixture(params=["disk", "tmpfs"])
def run_dir(request, tmp_path, shared_dir):
    """A new directory on disk (the extension checks it while the child starts: its atomic
    writes swap files) or on tmpfs (spawn copies the writer it made there first)."""
    path = (tmp_path if request.param == "disk" else pathlib.Path(shared_dir)) / "run"
    path.mkdir()
    return path


def test_a_directory_removed_since_the_last_spawn_kills_the_child(
    backend, run_dir, monkeypatch, no_stray_children
):
    """A directory spawn() has written in before is not checked before the child starts (off
    the spawn's critical path): one removed since is found as the record is written, the child
    is killed and reaped, the error is the one a check would give, and the next spawn there
    checks before starting anything."""
    key = (os.fsencode(run_dir), True, None)
    shimpid.spawn(["true"], run_dir / "first.pid").wait()
    assert key in shimpid._spawn._usable_directories
    shimpid.spawn(["true"], run_dir / "again.pid").wait()  # made while the child started
    assert record_of(backend, run_dir / "again.pid").pid > 0
    for name in ("first.pid", "again.pid"):
        (run_dir / name).unlink()
    run_dir.rmdir()
    started = []
    popen = subprocess.Popen

    def counting(*args, **kwargs):
        child = popen(*args, **kwargs)
        started.append(child)
        return child

    monkeypatch.setattr(shimpid._spawn.subprocess, "Popen", counting)
    with pytest.raises(StorageError) as info:  # what needs no filesystem is checked first
        shimpid.spawn(["sleep", "60"], run_dir / ("x" * 250 + ".pid"))
    assert info.value.errno == errno.ENAMETOOLONG and started == []
    with pytest.raises(StorageError) as info:
        shimpid.spawn(["sleep", "60"], run_dir / "second.pid")
    assert info.value.errno == errno.ENOENT and "directory unusable" in str(info.value)
    assert not isinstance(info.value.__context__, StorageError), "said once"
    assert len(started) == 1 and started[0].returncode == -signal.SIGKILL  # killed, reaped
    assert key not in shimpid._spawn._usable_directories
    with pytest.raises(StorageError):
        shimpid.spawn(["sleep", "60"], run_dir / "third.pid")
    assert len(started) == 1, "checked before starting anything"


def test_a_known_directory_writes_what_a_new_writer_writes(backend, run_dir):
    """The writer spawn() reuses for a known directory writes each file as PidFileWriter.at()
    would, with the call's own capability and atomicity (each its own entry)."""
    for capability, atomic in [(None, True), ("services-mux-v1", True), (None, False)]:
        for n in range(3):
            path = run_dir / f"{capability}-{atomic}-{n}.pid"
            child = shimpid.spawn(["true"], path, capability=capability, atomic=atomic)
            data = path.read_bytes()
            child.wait()
            assert data.startswith(f"{child.pid}\n".encode())
            assert backend.PidRecord.decode(data).pid == child.pid
            line3 = data.split(b"\n")[2]
            assert line3 == (capability or "").encode()
            assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]
        assert (os.fsencode(run_dir), atomic, capability) in shimpid._spawn._usable_directories
    if backend._pidfd_level() == _common.PIDFS:  # a known directory's writer asks the level anew
        old = backend._set_pidfd_level(_common.PIDFD)
        try:
            child = shimpid.spawn(["true"], run_dir / "no-pidfs.pid")
            child.wait()
        finally:
            backend._set_pidfd_level(old)
        assert b" pidfs=" not in (run_dir / "no-pidfs.pid").read_bytes()
        child = shimpid.spawn(["true"], run_dir / "pidfs.pid")
        child.wait()
        assert b" pidfs=" in (run_dir / "pidfs.pid").read_bytes()
    writer = backend.PidFileWriter.at(run_dir / "x.pid", capability="services-mux-v1")
    sibling = writer._sibling(os.fsencode(run_dir / "y.pid"), os.fsencode(run_dir / "y.pid"))
    assert (sibling.path, sibling.atomic, sibling.mode, sibling.capability) == (
        os.fsencode(run_dir / "y.pid"),
        True,
        0o644,
        "services-mux-v1",
    )
    for start in (17, 18):  # a new file, then one replaced (swapped, where the writer swaps)
        sibling.write(backend.PidRecord(4242, start))
        assert (run_dir / "y.pid").read_bytes().startswith(b"4242\n%d\nservices-mux-v1\n" % start)
    assert not (run_dir / "x.pid").exists()
    assert not [n for n in os.listdir(run_dir) if n.endswith(".tmp")]
    in_place = backend.PidFileWriter.at(run_dir / "x.pid", atomic=False)
    assert in_place._sibling(b"y", os.fsencode(run_dir / "y.pid")) is not None  # never swaps
    target = os.fsencode(run_dir / "nul\0/../y.pid")

    def write_through_a_sibling():  # the extension refuses it at once, the pure one's open()
        writer._sibling(target, target).write(backend.PidRecord(4242, 17))

    with pytest.raises(ValueError):  # C would stop at the NUL: another file than the one named
        write_through_a_sibling()
    assert not (run_dir / "nul").exists()


def test_a_sibling_asks_again_whether_it_may_swap_files(backend, tmp_path):
    """Where atomic writes swap files (the extension's, on disk: safe only in a directory
    nobody else can write to), a known directory's writer for a new name decides it anew."""
    writer = backend.PidFileWriter.at(tmp_path / "x.pid")
    if not getattr(writer, "_replace_by_exchange", False):  # the pure backend's never do
        pytest.skip("this backend never swaps files here: it always renames")
    name = os.fsencode(tmp_path / "y.pid")
    assert writer._sibling(name, name)._replace_by_exchange
    os.chmod(tmp_path, 0o777)
    try:
        assert not backend.PidFileWriter.at(tmp_path / "y.pid")._replace_by_exchange
        assert not writer._sibling(name, name)._replace_by_exchange  # as a new writer decides
    finally:
        os.chmod(tmp_path, 0o700)
    # spawn keeps the writer it made for the directory: once that is private again, a copy
    # swaps again (a kept copy that did not would never be asked)
    for n, mode in enumerate((0o700, 0o777, 0o700)):
        os.chmod(tmp_path, mode)
        shimpid.spawn(["true"], tmp_path / f"{n}.pid").wait()
    os.chmod(tmp_path, 0o700)
    kept = shimpid._spawn._usable_directories[(os.fsencode(tmp_path), True, None)]
    assert kept._sibling(name, name)._replace_by_exchange
    gone = tmp_path / "gone"
    gone.mkdir()
    in_gone = backend.PidFileWriter.at(gone / "x.pid")
    gone.rmdir()
    assert in_gone._sibling(b"y", os.fsencode(gone / "y.pid")) is None  # the full check says why


def test_a_relative_path_is_checked_before_starting_and_named_as_given(
    backend, tmp_path, monkeypatch, no_stray_children
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    for _ in range(2):  # the second time too: a relative path is always checked first
        shimpid.spawn(["true"], "run/rel.pid").wait()
    (tmp_path / "run" / "dir.pid").mkdir()
    with pytest.raises(IsADirectoryError) as info:
        shimpid.spawn(["true"], "run/dir.pid")
    assert info.value.filename == "run/dir.pid"


def test_spawn_converts_the_path_once_before_starting(backend, tmp_path, monkeypatch):
    """__fspath__ is the caller's code: it runs once, before the child starts, whether the
    writer is made before the child or while it starts."""
    order = []

    class Path:
        def __fspath__(self):
            order.append("fspath")
            return str(tmp_path / "conv.pid")

    popen = subprocess.Popen

    def noting(*args, **kwargs):
        order.append("popen")
        return popen(*args, **kwargs)

    monkeypatch.setattr(shimpid._spawn.subprocess, "Popen", noting)
    for _ in range(2):  # the second: the directory is known
        shimpid.spawn(["true"], Path()).wait()
    assert order == ["fspath", "popen"] * 2
    assert record_of(backend, tmp_path / "conv.pid").pid > 0


def test_spawn_of_a_missing_program_raises_and_writes_nothing(backend, pid_path):
    with pytest.raises(FileNotFoundError):
        shimpid.spawn(["/nonexistent/program"], pid_path)
    assert not pid_path.exists()


def test_many_threads_spawn_at_once(backend, tmp_path, no_stray_children):
    spawned, errors = [], []

    def worker(n):
        try:
            for i in range(10):
                path = tmp_path / f"{n}-{i}.pid"
                spawned.append((shimpid.spawn(["true"], path), path))
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(spawned) == 80
    for child, path in spawned:  # every child still unreaped: its identity is still readable
        assert record_of(backend, path) == backend.PidRecord(
            child.pid, backend.process_start_time(child.pid)
        )
    for child, _ in spawned:
        child.wait()


# ---- the start time told by the clock ------------------------------------------------------------


class Clock:
    """spawn's trust in the clock as a new process has it, and what it answered each spawn."""

    def __init__(self, monkeypatch):
        self.answers = []  # (the clock's readings before and after, the start time it told)
        self.module = shimpid._spawn
        self.CLOCK_CHECKS = self.module.CLOCK_CHECKS
        monkeypatch.setattr(self.module, "_clock_agreed", 0)
        monkeypatch.setattr(self.module, "_clock_disagreed", False)
        real = self.module.child_start_time

        def answering(pid, before, after):
            start = real(pid, before, after)
            self.answers.append((before, after, start))
            return start

        monkeypatch.setattr(self.module, "child_start_time", answering)

    @property
    def told(self):
        return sum(start is not None for *_, start in self.answers)

    @property
    def could_tell(self):
        """How many spawns' readings fell in one tick (under load, or where a spawn takes
        longer, fewer do)."""
        return sum(
            _common.start_time_between(before, after) is not None
            for before, after, _ in self.answers
        )

    @property
    def trusted(self):
        return self.module._clock_agreed >= self.CLOCK_CHECKS

    @property
    def disagreed(self):
        return self.module._clock_disagreed

    def enough(self, spawned, needed):
        """Whether the clock could tell ``needed`` start times in ``spawned`` spawns, each of
        which must have asked it."""
        assert len(self.answers) == spawned, "every spawn asks the clock"
        return self.could_tell >= needed

    def spawn_until(self, needed, spawn_and_check, limit=1000):
        """spawn_and_check(n) until the clock could tell ``needed`` start times (else skip)."""
        for n in range(limit):
            spawn_and_check(n)
            if self.enough(n + 1, needed):
                return
        pytest.skip(f"the clock could tell {self.could_tell} start times in {limit} spawns")


@pytest.fixture
def clock(monkeypatch):
    if not _common.TICK_NS:
        pytest.skip("start times are not counted in clock ticks here")
    return Clock(monkeypatch)


def test_the_clock_tells_a_start_time_only_from_within_one_tick(clock):
    tick, margin, start = _common.TICK_NS, _common.TICK_MARGIN_NS, 54321 * _common.TICK_NS
    between = _common.start_time_between
    assert between(start + margin, start + tick - margin - 1) == 54321
    assert between(start + margin - 1, start + 2 * margin) is None  # too near the tick's start
    assert between(start + 2 * margin, start + tick - margin) is None  # too near its end
    assert between(start + margin, start + tick + margin) is None  # across two ticks


def spawned_as_proc_shows(backend, tmp_path):
    """spawn(n): a child recorded as /proc shows it (checked before it is reaped)."""

    def spawn_and_check(n):
        path = tmp_path / f"{n}.pid"
        child = shimpid.spawn(["true"], path)
        try:
            start = backend.process_start_time(child.pid)
            assert record_of(backend, path) == backend.PidRecord(child.pid, start)
        finally:
            child.wait()
        path.unlink()

    return spawn_and_check


def test_spawn_trusts_the_clock_once_it_agrees_with_proc(
    backend, clock, tmp_path, no_stray_children
):
    clock.spawn_until(clock.CLOCK_CHECKS + 50, spawned_as_proc_shows(backend, tmp_path))
    assert clock.trusted and not clock.disagreed
    assert clock.told == clock.could_tell - clock.CLOCK_CHECKS  # each one after the checks


def test_a_clock_that_disagrees_with_proc_is_never_trusted(
    backend, clock, monkeypatch, tmp_path, no_stray_children
):
    # a system that counted ten ticks a second where /proc counts CLOCK_TICKS
    monkeypatch.setattr(_common, "TICK_NS", _common.TICK_NS * 10)
    clock.spawn_until(clock.CLOCK_CHECKS + 20, spawned_as_proc_shows(backend, tmp_path))
    assert clock.disagreed and clock.told == 0  # every record read from /proc


def test_a_clock_that_disagreed_once_is_never_trusted_again(
    backend, clock, monkeypatch, tmp_path, no_stray_children
):
    real, checks = backend.process_start_time, []

    def wrong_once(pid):  # the first check finds /proc saying otherwise, every later one agrees
        checks.append(pid)
        start = real(pid)
        return start + 1 if len(checks) == 1 else start

    monkeypatch.setattr(shimpid._spawn, "process_start_time", wrong_once)
    clock.spawn_until(clock.CLOCK_CHECKS + 20, spawned_as_proc_shows(backend, tmp_path))
    assert clock.disagreed and clock.told == 0
    assert len(checks) == 1  # no check after it


def test_a_check_that_cannot_be_made_is_no_agreement(
    backend, clock, monkeypatch, tmp_path, no_stray_children
):
    def unreadable(pid):  # as where /proc cannot be read
        raise PermissionError(errno.EACCES, "no /proc to read")

    monkeypatch.setattr(shimpid._spawn, "process_start_time", unreadable)
    clock.spawn_until(clock.CLOCK_CHECKS + 20, spawned_as_proc_shows(backend, tmp_path))
    assert not clock.trusted and not clock.disagreed and clock.told == 0


def test_a_start_time_given_to_the_writer_stands_for_procs(backend, pid_path, no_stray_children):
    if backend._pidfd_level() == _common.NO_PIDFD:
        pytest.skip("without pidfds the writer reads /proc whatever it is given")
    child = subprocess.Popen(["sleep", "60"])
    try:
        start = backend.process_start_time(child.pid)
        writer = backend.PidFileWriter.at(pid_path)
        writer._write_for(child.pid, start + 1)  # not its own: written as given, /proc not read
        assert record_of(backend, pid_path) == backend.PidRecord(child.pid, start + 1)
        writer._write_for(child.pid)
        assert record_of(backend, pid_path) == backend.PidRecord(child.pid, start)
    finally:
        child.kill()
        child.wait()


# ---- writer.write_for ----------------------------------------------------------------------------


REAPED_EARLY = """
import signal, shimpid._spawn as spawning
child = os.fork()
if child:  # pid 1 stays init, reaping orphans: the stranger below is not the test's child
    os._exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
spawning.PidFileWriter = impl.PidFileWriter
spawning.process_start_time = impl.process_start_time
read_clock, started = spawning.boot_clock, []

class Popen(subprocess.Popen):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        started.append(self.pid)

def clock():  # spawn's reading after the child started: it is reaped, its pid given again
    if len(started) == 1:
        deadline = time.monotonic() + 30
        for pid in (started[0], started[0] - 1):  # both free before the fork below
            while os.path.exists(f"/proc/{{pid}}"):
                assert time.monotonic() < deadline
                time.sleep(0.001)
        # The stranger: given the pid again and again until it has it (CI saw it missed once,
        # the cause unknown; a miss is a sleeper elsewhere, killed with the namespace)
        while not os.path.exists(f"/proc/{{started[0]}}"):
            assert time.monotonic() < deadline, [p for p in os.listdir("/proc") if p.isdigit()]
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(started[0] - 2))
            if os.fork() == 0:  # gets started[0] - 1, and its child, the stranger, started[0]
                if os.fork() == 0:
                    os.execvp("sleep", ["sleep", "60"])
                os._exit(0)
            for _ in range(100):
                if os.path.exists(f"/proc/{{started[0]}}"):
                    break
                time.sleep(0.001)
        started.append(None)
    return read_clock()

for _ in range(4):  # pids given and freed (reaped, before SIGCHLD is ignored)
    subprocess.run(["true"])
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps each child as it exits
if {proc}:
    spawning._waitid = None  # as on PyPy and macOS: /proc says who the parent is
os.chdir(os.path.dirname({path!r}))
writer = impl.PidFileWriter.at("app.pid")  # a prepared writer's relative path...
os.chdir("/")  # ...written where it was made (as a daemon's, which left for /)
spawning.boot_clock, subprocess.Popen = clock, Popen
try:
    shimpid.spawn(["true"], writer)
    outcome = "returned"
except ChildProcessError as err:
    outcome = str(err)
subprocess.Popen = Popen.__base__
time.sleep(0.1)
with open(f"/proc/{{started[0]}}/cmdline", "rb") as f:
    stranger = f.read()
print(json.dumps([outcome, stranger.decode(), os.path.exists({path!r})]))
"""


@pytest.mark.parametrize("proc", [False, True], ids=["waitid", "proc"])
def test_a_child_reaped_by_another_leaves_no_record_of_a_stranger(impl, tmp_path, proc):
    """spawn's one condition broken (SIGCHLD ignored): the child exits and is reaped before its
    identity is read, and another process has its pid by then. The record would name that
    stranger; it is removed, and ChildProcessError raised (in a pid namespace of the test's,
    which gives the pid again at once). Asked with waitid(), or where there is none (PyPy,
    macOS) by the parent /proc shows."""
    if os.geteuid() != 0:
        require_or_skip("needs root, for a pid namespace")
    path = str(tmp_path / "app.pid")
    script = script_prelude(impl) + REAPED_EARLY.format(path=path, proc=proc)
    result = run_in_pid_namespace(script)
    assert result.returncode == 0, result.stderr
    outcome, stranger, left = json.loads(result.stdout)
    assert stranger == "sleep\x0060\x00", "the pid was given to the stranger, who lives"
    assert outcome.startswith("[Errno 10] the child was reaped by another"), outcome
    assert outcome.endswith("record removed: 'app.pid'"), outcome
    assert not left


REAPED_AT_ONCE = """
import collections, signal
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps each child as it exits
count = collections.Counter()
for n in range(100):
    try:
        shimpid.spawn(["true"], os.path.join({directory!r}, f"{{n}}.pid"))
        count["returned"] += 1
    except OSError as err:
        count[type(err).__name__] += 1
print(json.dumps([count, sorted(os.listdir({directory!r}))]))
"""


def test_a_child_reaped_before_its_identity_is_read_is_one_error(backend, tmp_path):
    """SIGCHLD ignored: a child that exits at once is often reaped before spawn reads its
    identity (its pid then names nobody) or after: ChildProcessError either way, as the guide
    says, never ProcessLookupError for one and ChildProcessError for the other."""
    if os.geteuid() != 0:
        require_or_skip("needs root, for a pid namespace")
    script = script_prelude(backend) + REAPED_AT_ONCE.format(directory=str(tmp_path))
    result = run_in_pid_namespace(script)
    assert result.returncode == 0, result.stderr
    count, left = json.loads(result.stdout)
    assert set(count) <= {"returned", "ChildProcessError"}, count
    assert len(left) == count.get("returned", 0)


def test_write_for_a_posix_spawned_child(backend, pid_path, no_stray_children):
    if not hasattr(os, "posix_spawn"):
        pytest.skip("this Python has no os.posix_spawn (PyPy)")
    pid = os.posix_spawn("/bin/sleep", ["sleep", "60"], os.environ)
    try:
        backend.PidFileWriter.at(pid_path).write_for(pid)
        assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(pid)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_write_for_a_zombie_records_it(backend, pid_path, zombie):
    backend.PidFileWriter.at(pid_path).write_for(zombie.pid)
    assert record_of(backend, pid_path) == backend.PidRecord(
        zombie.pid, backend.process_start_time(zombie.pid)
    )
    assert proc_state(zombie.pid) == "Z"


@pytest.mark.parametrize("pid", [0, -1, 2**31, 2**32 - 1, 2**40])
def test_write_for_a_pid_that_names_no_process(backend, pid_path, pid):
    with pytest.raises(ProcessLookupError):
        backend.PidFileWriter.at(pid_path).write_for(pid)
    assert not pid_path.exists()


def test_write_for_a_reaped_child(backend, pid_path, reaped_pid):
    with pytest.raises(ProcessLookupError, match=str(reaped_pid)):
        backend.PidFileWriter.at(pid_path).write_for(reaped_pid)
    assert not pid_path.exists()


def test_write_for_takes_integers(backend, pid_path):
    with pytest.raises(TypeError):
        backend.PidFileWriter.at(pid_path).write_for(str(os.getpid()))


def test_write_for_a_write_error_names_the_file(backend, tmp_path):
    (tmp_path / "gone").mkdir()
    path = tmp_path / "gone" / "shim.pid"
    writer = backend.PidFileWriter.at(path)
    (tmp_path / "gone").rmdir()
    with pytest.raises(FileNotFoundError) as info:
        writer.write_for(os.getpid())
    assert info.value.filename == os.fspath(path)


# ---- asyncio -------------------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Runs a coroutine on asyncio's own event loop, then on uvloop's, which high-frequency
    async spawners often use."""
    if request.param == "asyncio":
        runner = asyncio.run
    else:
        if sys.implementation.name != "cpython":
            pytest.skip("uvloop runs on CPython only")
        try:
            import uvloop
        except ImportError:
            require_or_skip("uvloop is not installed (pip install uvloop)")
        runner = uvloop.run

    def run_within(coroutine):  # a wake-up that never comes fails the test, never hangs it
        return runner(asyncio.wait_for(coroutine, 60))

    return run_within


def test_asyncio_records_a_live_child(backend, run, pid_path, no_stray_children):
    async def main():
        process = await shimpid.create_subprocess_exec("sleep", "60", pidfile=pid_path)
        try:
            assert isinstance(process, asyncio.subprocess.Process)
            assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(process.pid)
        finally:
            process.kill()
            await process.wait()

    run(main())


def test_asyncio_passes_arguments(backend, run, pid_path, no_stray_children):
    async def main():
        process = await shimpid.create_subprocess_exec(
            "cat", pidfile=pid_path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate(b"hello")
        return process, out

    process, out = run(main())
    assert out == b"hello" and process.returncode == 0
    assert record_of(backend, pid_path).pid == process.pid


def test_asyncio_failed_record_kills_and_reaps(backend, run, pid_path, no_stray_children):
    pid_path.mkdir()

    async def main():
        with pytest.raises(IsADirectoryError):
            await shimpid.create_subprocess_exec(
                "sleep", "60", pidfile=pid_path, stdout=asyncio.subprocess.PIPE
            )

    run(main())


def test_asyncio_records_a_child_that_exits_at_once(backend, run, tmp_path, no_stray_children):
    """Reaping waits for the record: asyncio's own reaper could take the child first."""

    async def main():
        for n in range(30):
            path = tmp_path / f"{n}.pid"
            process = await shimpid.create_subprocess_exec("true", pidfile=path)
            record = record_of(backend, path)
            assert record.pid == process.pid and record.start_time is not None
            assert await process.wait() == 0
            assert shimpid.PidFileReader.at(path).process_identity() == Absent()

    run(main())


def test_asyncio_on_a_loop_that_watches_no_descriptors(backend, pid_path, no_stray_children):
    """Where the loop cannot watch the child's pidfd (add_reader refused), a thread reaps the
    child, and the pidfd is closed, not left open."""

    class Loop(asyncio.SelectorEventLoop):
        def add_reader(self, *args):
            raise NotImplementedError

    async def main():
        process = await shimpid.create_subprocess_exec("sh", "-c", "exit 3", pidfile=pid_path)
        assert record_of(backend, pid_path).pid == process.pid
        return await process.wait()

    loop = Loop()
    try:
        before = os.listdir("/proc/self/fd")
        assert loop.run_until_complete(asyncio.wait_for(main(), 60)) == 3
        assert os.listdir("/proc/self/fd") == before
    finally:
        loop.close()


def test_asyncio_exit_status_and_signals(backend, run, pid_path, no_stray_children):
    async def main():
        process = await shimpid.create_subprocess_exec("sh", "-c", "exit 7", pidfile=pid_path)
        assert await process.wait() == 7
        assert process.returncode == 7
        process = await shimpid.create_subprocess_exec("sleep", "60", pidfile=pid_path)
        process.terminate()
        assert await process.wait() == -15

    run(main())


def test_asyncio_from_many_tasks(backend, run, tmp_path, no_stray_children):
    async def one(n):
        path = tmp_path / f"{n}.pid"
        process = await shimpid.create_subprocess_exec("sleep", "60", pidfile=path)
        return process, path

    async def main():
        started = await asyncio.gather(*(one(n) for n in range(16)))
        try:
            for process, path in started:
                assert shimpid.PidFileReader.at(path).process_identity() == Verified(process.pid)
        finally:
            for process, _ in started:
                process.kill()
                await process.wait()

    run(main())


def test_asyncio_trusts_the_clock_as_spawn_does(backend, clock, run, tmp_path, no_stray_children):
    async def spawn_and_check(n):
        path = tmp_path / f"{n}.pid"
        process = await shimpid.create_subprocess_exec("sleep", "60", pidfile=path)
        try:  # asyncio reaps a child as it exits: this one runs until checked
            start = backend.process_start_time(process.pid)
            assert record_of(backend, path) == backend.PidRecord(process.pid, start)
        finally:
            process.kill()
            await process.wait()

    LIMIT = 300  # well inside run()'s 60 s, loaded

    async def main():
        for n in range(LIMIT):
            await spawn_and_check(n)
            if clock.enough(n + 1, clock.CLOCK_CHECKS + 20):
                return True
        return False

    if not run(main()):
        pytest.skip(f"the clock could tell {clock.could_tell} start times in {LIMIT} spawns")
    assert clock.trusted and clock.told == clock.could_tell - clock.CLOCK_CHECKS


def test_asyncio_bad_path_fails_before_anything_starts(backend, run, tmp_path, no_stray_children):
    async def main():
        with pytest.raises(StorageError):
            await shimpid.create_subprocess_exec("sleep", "60", pidfile="/tmp/\0bad")

    run(main())


@pytest.mark.parametrize(
    "bad",
    [
        {"text": True},
        {"shell": True},
        {"bufsize": 1},
        {"universal_newlines": True},
        {"encoding": "utf-8"},
    ],
)
def test_asyncio_refuses_what_asyncio_refuses(backend, run, pid_path, bad, no_stray_children):
    async def main():
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_exec("true", **bad)
        with pytest.raises(ValueError):
            await shimpid.create_subprocess_exec("true", pidfile=pid_path, **bad)

    run(main())
    assert not pid_path.exists()


def test_spawn_module_sees_the_selected_backend():
    assert shimpid._spawn.PidFileWriter is shimpid.PidFileWriter
    assert sys.modules["shimpid._spawn"] is shimpid._spawn


def test_asyncio_hundreds_at_once_and_a_cancelled_waiter(backend, run, tmp_path, no_stray_children):
    """300 concurrent spawns, each recorded; a waiter cancelled midway; nothing left behind."""

    async def one(n):
        path = tmp_path / f"{n}.pid"
        process = await shimpid.create_subprocess_exec("true", pidfile=path)
        record = record_of(backend, path)
        assert record.pid == process.pid and record.start_time is not None
        return await process.wait()

    async def main():
        sleeper = await shimpid.create_subprocess_exec("sleep", "60", pidfile=tmp_path / "s.pid")
        waiter = asyncio.ensure_future(sleeper.wait())
        codes = await asyncio.gather(*(one(n) for n in range(300)))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        sleeper.kill()
        assert await sleeper.wait() == -9
        return codes

    assert run(main()) == [0] * 300


REAPED_BY_POLL = """
import asyncio
child = os.fork()
if child:  # pid 1 stays init
    os._exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
for _ in range(4):  # pids given and freed: the one below the child's is free
    subprocess.run(["true"])

async def main():
    gate, opened = os.pipe()  # the child exits once the gate is closed: not before this says
    a = await shimpid.create_subprocess_exec(
        "sh", "-c", "read x; exit 5", pidfile={path!r}, stdin=gate
    )
    os.close(opened)
    deadline = time.monotonic() + 30
    while open(f"/proc/{{a.pid}}/stat").read().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.001)  # the loop does not run meanwhile: its reaper has not seen the exit
    # Popen.poll() reaps it, as transport.close() does, and send_signal() did before 3.13
    assert a._transport._proc.poll() == 5
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(a.pid - 1))
    b = subprocess.Popen(["sh", "-c", "sleep 0.5; exit 3"])
    code = await a.wait()  # (a wait for b's exit would have taken b's status: 3)
    return [b.pid == a.pid, code, b.wait()]

print(json.dumps(asyncio.run(main())))
"""


def test_asyncio_never_waits_for_a_child_that_took_a_reaped_childs_pid(impl, tmp_path):
    """A child reaped by Popen.poll() (close() asks it first) before the loop saw it exit:
    its pid may be another child's by then, whose exit the reaper must neither wait for (the
    loop would stall) nor take."""
    if os.geteuid() != 0:
        require_or_skip("needs root, for a pid namespace")
    if not hasattr(os, "pidfd_open"):  # (a reaper thread waits by pid: it reaps at once)
        pytest.skip("this Python has no os.pidfd_open (PyPy): the reaper is a thread")
    script = script_prelude(impl) + REAPED_BY_POLL.format(path=str(tmp_path / "a.pid"))
    result = run_in_pid_namespace(script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, 5, 3]
