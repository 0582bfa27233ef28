"""PidFileLock's policy (``shimpid/_lock.py``, one code whatever the backend), as users of ``pid``,
python-daemon and lockfile expect it: a running daemon of another tool is never taken over, the
file goes at exit, the peers' options (a timeout for ``with``, a decorator, the directory made,
subclasses), errors, contention, and ``shimpid lock``. Real processes, once, on the run's
backend; the lock's system calls are in test_lock.py."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import shimpid
from _helpers import (
    flock_holder,
    require_or_skip,
    run_in_child,
    run_in_pid_namespace,
    script_prelude,
    stop,
)
from shimpid import Absent, AlreadyLocked, AlreadyRunning, Verified, _common, _lock, _rundir


@pytest.fixture(scope="session")
def impl(backend):
    """The run's backend, for every test here (and the fixtures they take): once, not twice."""
    return backend


def lock_script(impl, path, body: str) -> str:
    """A ``python -c`` script whose ``lock`` is a PidFileLock of path with impl, then body."""
    return (
        script_prelude(impl)
        + textwrap.dedent(f"""
        import shimpid
        from shimpid import _lock, _rundir
        _lock._backend = _rundir._backend = impl
        lock = _lock.PidFileLock({str(path)!r})
        """)
        + textwrap.dedent(body)
    )


def started(args, **kwargs) -> subprocess.Popen:
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, **kwargs)
    assert child.stdout.readline() == "ready\n"
    return child


def no_temporary_files(directory) -> bool:
    return not [name for name in os.listdir(directory) if name.startswith(".")]


# ---- a running process's file is not stale ----------------------------------------------------


def test_a_file_naming_a_running_process_is_refused_unless_asked(impl, locking, tmp_path, sleeper):
    """Nobody holds it locked, but its process runs: a Verified record, or one without a
    fingerprint (another tool's) whose pid is alive. Taking it over could run two instances."""
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode()
    boot = b"shimpid boot=%s\n" % shimpid._common.CURRENT_BOOT_ID.encode()
    cases = {
        "verified": live,
        "verified, boot id": live + b"\n" + boot,
        "one line (python-daemon, pid)": f"{sleeper.pid}\n".encode(),
        "one line, no newline": str(sleeper.pid).encode(),
    }
    for name, data in cases.items():
        path = tmp_path / f"{name}.pid"
        path.write_bytes(data)
        inode = os.stat(path).st_ino
        with pytest.raises(AlreadyRunning) as refused:
            locking(path).acquire(timeout=0)
        err = refused.value
        assert isinstance(err, AlreadyLocked) and err.errno == errno.EWOULDBLOCK, name
        assert err.pid == sleeper.pid and err.filename == str(path), name
        assert f"names process {sleeper.pid}, which is running" in str(err), name
        assert "take_over_running=True" in str(err), name
        with pytest.raises(AlreadyRunning), locking(path):
            pass
        # untouched: the same file, the same bytes, nothing left beside it
        assert path.read_bytes() == data and os.stat(path).st_ino == inode, name
        assert no_temporary_files(tmp_path), name
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is AlreadyRunning and (copy.pid, str(copy)) == (err.pid, str(err))
        with locking(path, take_over_running=True) as lock:
            assert lock.holder() == Verified(os.getpid()), name
        assert not path.exists(), name
    assert sleeper.poll() is None


def test_a_new_empty_file_is_being_written_not_stale(locking, pid_path, monkeypatch):
    """lockfile and TimeoutPIDLockFile create the file, then write the pid: a file that is
    empty and new is waited for (as a holder that does not name itself), then refused; once
    older than FRESH_EMPTY, an empty file is stale."""
    monkeypatch.setattr(_lock, "FRESH_EMPTY", 0.5)
    pid_path.write_bytes(b"")
    start = time.monotonic()
    with pytest.raises(AlreadyRunning) as refused:
        locking(pid_path).acquire(timeout=0)
    assert time.monotonic() - start >= _lock.UNNAMED_HOLDER_GRACE
    assert refused.value.pid is None and "its writer may be at work" in str(refused.value)
    assert pid_path.read_bytes() == b""
    with locking(pid_path, timeout=30) as lock:  # taken once it is old enough to be stale
        assert time.monotonic() - start >= 0.4
        assert lock.holder() == Verified(os.getpid())


def test_this_process_own_record_is_taken_over(impl, locking, pid_path):
    """A record of this very process (written by a PidFileWriter, or by another tool) is
    no other instance."""
    for data in (impl.PidRecord.current().encode(), f"{os.getpid()}\n".encode()):
        pid_path.write_bytes(data)
        with locking(pid_path) as lock:
            assert lock.holder() == Verified(os.getpid())


def test_a_waiting_acquire_takes_the_file_once_its_process_has_gone(impl, locking, pid_path):
    child = subprocess.Popen(["sleep", "0.3"])
    try:
        pid_path.write_text(f"{child.pid}\n")
        lock = locking(pid_path, timeout=0.05)
        start = time.monotonic()
        with pytest.raises(AlreadyRunning):
            lock.acquire()  # the constructor's timeout
        assert time.monotonic() - start >= 0.05
        lock.acquire(timeout=30)  # its process exits (a zombie is gone too): then it is ours
        assert time.monotonic() - start >= 0.2
        assert lock.holder() == Verified(os.getpid())
        lock.release()
    finally:
        child.wait()

    def wait_for_ever(out):  # timeout=None: no lock to wait on; it looks again until it is free
        waiter = subprocess.Popen(["sleep", "0.3"])
        pid_path.write_text(f"{waiter.pid}\n")
        locking(pid_path).acquire()
        os.write(out, b"%d" % waiter.poll())

    assert run_in_child(wait_for_ever) == (0, b"0")


def test_a_python_daemon_pid_file_is_never_taken_over(impl, locking, tmp_path):
    """The issue's case: a daemon holds python-daemon's TimeoutPIDLockFile (an exclusive
    create, no flock); a PidFileLock of the same path (as DaemonContext(pidfile=) takes it,
    or shimpid lock) must refuse it, never run beside it."""
    try:
        from daemon.pidfile import TimeoutPIDLockFile  # noqa: F401
    except ImportError:
        require_or_skip("python-daemon is not installed")
    path = tmp_path / "daemon.pid"
    daemon = started(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from daemon.pidfile import TimeoutPIDLockFile
                lock = TimeoutPIDLockFile({str(path)!r}, acquire_timeout=0)
                lock.acquire()
                print("ready", flush=True)
                sys.stdin.read()
                lock.release()
                """),
        ],
        stdin=subprocess.PIPE,
    )
    try:
        data = path.read_bytes()
        with pytest.raises(AlreadyRunning) as refused:
            locking(path).__enter__()  # what DaemonContext calls
        assert refused.value.pid == daemon.pid
        command = [sys.executable, "-m", "shimpid", "lock", str(path), "--", "true"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        if impl.BACKEND == "python":
            env["SHIMPID_PURE_PYTHON"] = "1"
        ran = subprocess.run(command, capture_output=True, text=True, env=env)
        assert ran.returncode == 1
        assert f"names process {daemon.pid}, which is running" in ran.stderr
        assert "--take-over-running" in ran.stderr
        assert path.read_bytes() == data and daemon.poll() is None
        ran = subprocess.run(
            [*command[:4], "--take-over-running", *command[4:]], capture_output=True, env=env
        )
        assert ran.returncode == 0, ran.stderr
    finally:
        daemon.stdin.close()
        daemon.wait()
        daemon.stdout.close()


# ---- the file goes at exit ----------------------------------------------------------------------


def test_the_file_goes_when_the_interpreter_exits(impl, tmp_path):
    path = tmp_path / "exit.pid"
    ran = subprocess.run(
        [sys.executable, "-c", lock_script(impl, path, "lock.acquire()\nprint('held')")],
        capture_output=True,
        text=True,
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "held\n", "")
    assert not path.exists() and no_temporary_files(tmp_path)


def test_a_forked_child_exiting_leaves_the_parents_file(impl, tmp_path):
    """A child forked while the lock is held runs atexit too when it exits: the lock and its
    file are the parent's, and stay."""
    path = tmp_path / "fork.pid"
    body = """
        lock.acquire()
        child = os.fork()
        if child == 0:
            sys.exit(0)  # atexit runs here too
        os.waitpid(child, 0)
        probe = _lock.PidFileLock(lock.path)
        print(os.path.exists(lock.path), probe.is_locked(), probe.read_pid() == os.getpid())
        """
    ran = subprocess.run(
        [sys.executable, "-c", lock_script(impl, path, body)], capture_output=True, text=True
    )
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "True True True\n", "")
    assert not path.exists()


def test_a_file_replaced_meanwhile_is_not_removed_at_exit(impl, tmp_path):
    path = tmp_path / "replaced.pid"
    body = f"""
        lock.acquire()
        with open({str(path) + ".new"!r}, "w") as f:
            f.write("1\\n")
        os.rename({str(path) + ".new"!r}, {str(path)!r})
        """
    ran = subprocess.run([sys.executable, "-c", lock_script(impl, path, body)], capture_output=True)
    assert ran.returncode == 0, ran.stderr
    assert path.read_bytes() == b"1\n"


def test_sigterm_leaves_the_file_unless_exit_on_sigterm(impl, tmp_path):
    """By default SIGTERM ends the process at once: the file stays (unlocked, Absent: it never
    blocks). With exit_on_sigterm(), SIGTERM is a normal exit (143): ``with`` unwinds, the
    file goes."""
    path = tmp_path / "term.pid"
    for install, status, left in (
        ("", -signal.SIGTERM, True),
        ("shimpid.exit_on_sigterm()", 143, False),
    ):
        body = f"""
            {install}
            with lock:
                print("ready", flush=True)
                time.sleep(60)
            """
        child = started([sys.executable, "-c", lock_script(impl, path, body)])
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == status
        child.stdout.close()
        assert path.exists() == left
        if left:
            assert not _lock.is_locked(str(path))
            assert shimpid.PidFileReader.at(path).process_identity() == shimpid.Absent()
            path.unlink()


def test_exit_on_sigterm_returns_the_handler_it_replaces():
    def handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        assert shimpid.exit_on_sigterm(0) is handler
        with pytest.raises(SystemExit) as exited:
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert exited.value.code == 0
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- the peers' options --------------------------------------------------------------------------


def test_with_waits_the_constructors_timeout(impl, locking, pid_path):
    holder = started(
        [
            sys.executable,
            "-c",
            lock_script(
                impl,
                pid_path,
                """
            lock.acquire()
            print("ready", flush=True)
            time.sleep(0.4)
            """,
            ),
        ]
    )
    try:
        start = time.monotonic()
        with pytest.raises(AlreadyLocked), locking(pid_path):  # the default: try once
            pass
        assert time.monotonic() - start < 0.3
        assert locking(pid_path).timeout == 0 and locking(pid_path, timeout=2).timeout == 2
        with locking(pid_path, timeout=30) as lock:
            assert time.monotonic() - start >= 0.2
            assert lock.holder() == Verified(os.getpid())
    finally:
        holder.wait()
        holder.stdout.close()
    with pytest.raises(ValueError):
        locking(pid_path, timeout=-1)
    with pytest.raises(TypeError):
        locking(pid_path, timeout="soon")


def test_the_lock_works_as_a_decorator(locking, pid_path):
    lock = locking(pid_path)

    @lock
    def job(x):
        """A job."""
        assert lock.i_am_locking() and pid_path.exists()
        return x * 2

    assert job(4) == 8 and job(5) == 10
    assert job.__name__ == "job" and job.__doc__ == "A job."
    assert not pid_path.exists()
    with locking(pid_path), pytest.raises(AlreadyLocked):  # held elsewhere: as with would
        job(1)


def test_create_dir_makes_the_missing_directories(locking, tmp_path):
    path = tmp_path / "run" / "app" / "app.pid"
    with pytest.raises(OSError) as missing:  # as a writer's: the directory must be there
        locking(path)
    assert missing.value.errno == errno.ENOENT
    for secure in (False, True):
        with locking(path, create_dir=True, secure=secure) as lock:
            assert lock.holder() == Verified(os.getpid())
        assert (tmp_path / "run" / "app").is_dir()
        (tmp_path / "run" / "app").rmdir()


def test_create_dir_never_makes_anything_where_others_could_steer_it(locking, tmp_path):
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(_rundir.UntrustedPath):
        locking(open_to_all / "app" / "app.pid", create_dir=True, secure=True)
    assert not (open_to_all / "app").exists()


def test_the_lock_can_be_subclassed(locking, tmp_path):
    class Service(locking):
        def __init__(self, name):
            super().__init__(tmp_path / f"{name}.pid")
            self.name = name

    web = Service("web")
    with web:
        assert web.i_am_locking() and web.name == "web"
        assert repr(web).startswith("Service(") and "held" in repr(web)
    assert not (tmp_path / "web.pid").exists()
    with pytest.raises(TypeError):
        web.__init__("again")  # initialised once, as the base


def test_fileno_is_the_held_descriptor(locking, pid_path):
    lock = locking(pid_path)
    with pytest.raises(ValueError):
        lock.fileno()
    with lock:
        assert os.path.samestat(os.fstat(lock.fileno()), os.stat(pid_path))
    with pytest.raises(ValueError):
        lock.fileno()


# ---- found by a hostile review -------------------------------------------------------------------


def test_a_lock_handed_to_a_child_is_not_released_at_exit(impl, tmp_path):
    """Given to a child (Popen(pass_fds=[lock.fileno()])), the lock is the child's too: the
    parent exiting must not remove the file from under it, or a second instance would start."""
    path = tmp_path / "handed.pid"
    gate_read, gate_write = os.pipe()  # the child lives until this test closes gate_write
    body = f"""
        lock.acquire()
        subprocess.Popen(["sh", "-c", "read x"], stdin={gate_read}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, pass_fds=[lock.fileno()])
        """
    try:
        ran = subprocess.run(
            [sys.executable, "-c", lock_script(impl, path, body)],
            capture_output=True,
            text=True,
            pass_fds=[gate_read],
        )
        assert ran.returncode == 0, ran.stderr
        assert path.exists() and _lock.is_locked(str(path))
        with pytest.raises(AlreadyLocked):
            _lock.PidFileLock(path).acquire(timeout=0)
    finally:
        os.close(gate_read)
        os.close(gate_write)  # the child reads its end of file, and exits: the lock goes
    deadline = time.monotonic() + 10
    while _lock.is_locked(str(path)):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_create_dir_checks_the_whole_way_for_a_relative_path(locking, tmp_path, monkeypatch):
    """As root with secure, a relative path is checked from /, not from the working
    directory: a directory above it that another user owns is refused."""
    if os.geteuid() != 0:
        require_or_skip("needs root, to give a directory to another user")
    theirs = tmp_path / "theirs"
    (theirs / "work").mkdir(parents=True)
    os.chown(theirs, 1000, 1000)
    monkeypatch.chdir(theirs / "work")
    with pytest.raises(_rundir.UntrustedPath):
        locking("run/app.pid", create_dir=True, secure=True)
    assert not (theirs / "work" / "run").exists()
    with pytest.raises(_rundir.UntrustedPath):  # the same without create_dir
        locking("app.pid", secure=True)


def test_nothing_is_made_for_a_path_that_names_no_file(locking, tmp_path):
    with pytest.raises(shimpid.StorageError):
        locking(f"{tmp_path}/a/b/", create_dir=True)
    assert not (tmp_path / "a").exists()


def test_as_root_a_lock_file_others_could_write_is_refused(locking, pid_path):
    for mode in (0o666, 0o664, 0o646):
        with pytest.raises(ValueError, match="lets group or others write"):
            locking(pid_path, mode=mode, secure=True)
    with locking(pid_path, mode=0o664, secure=False):
        assert os.stat(pid_path).st_mode & 0o777 == 0o664


def test_already_running_says_what_it_means_everywhere(pid_path):
    err = AlreadyRunning(str(pid_path), 5, "why")
    assert err.args == (errno.EWOULDBLOCK, err.strerror)
    assert "locked by" not in repr(err) and "names process 5, which is running" in repr(err)
    assert isinstance(err, AlreadyLocked) and err.pid == 5 and err.why == "why"


def test_a_long_wait_keeps_one_refusal(impl, locking, pid_path, sleeper, monkeypatch):
    """Each look at a running process's file while waiting replaces the last: memory does not
    grow with the wait."""
    pid_path.write_text(f"{sleeper.pid}\n")
    seen = []
    stale = _lock._stale

    def counting(refused, fd):
        answer = stale(refused, fd)
        seen.append(len(refused))
        return answer

    monkeypatch.setattr(_lock, "_stale", counting)
    with pytest.raises(AlreadyRunning):
        locking(pid_path).acquire(timeout=0.3)
    assert len(seen) > 3 and set(seen) == {1}


def test_slots_given_as_one_string_in_a_subclass(locking, pid_path):
    class Named(locking):
        __slots__ = "label"

    lock = Named(pid_path)
    assert not hasattr(lock, "label")
    lock.label = "x"
    assert lock.label == "x"


# ---- errors and arguments ------------------------------------------------------------------------


def test_already_locked_is_an_oserror_with_the_holder(locking, pid_path):
    with locking(pid_path), pytest.raises(OSError) as info:
        locking(pid_path).acquire(timeout=0)
    err = info.value
    assert type(err) is AlreadyLocked and err.errno == errno.EWOULDBLOCK
    assert err.pid == os.getpid() and err.filename == str(pid_path)
    assert f"locked by process {os.getpid()}" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), copy.errno, copy.pid, copy.filename) == (
        AlreadyLocked,
        err.errno,
        err.pid,
        err.filename,
    )


@pytest.mark.parametrize("timeout", [-1, float("nan")])
def test_a_bad_timeout_is_refused(locking, pid_path, timeout):
    with pytest.raises(ValueError):
        locking(pid_path).acquire(timeout=timeout)
    with pytest.raises(TypeError):
        locking(pid_path).acquire(timeout="1")
    assert not pid_path.exists()


def test_a_lock_cannot_be_pickled_and_copies_as_itself(locking, pid_path):
    import copy

    lock = locking(pid_path)
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(lock)
    assert copy.copy(lock) is lock and copy.deepcopy(lock) is lock


def test_a_missing_directory_fails_when_the_lock_is_made(locking, tmp_path):
    with pytest.raises(shimpid.StorageError):
        locking(tmp_path / "missing" / "x.pid")


def test_a_child_forked_during_a_wait_never_keeps_the_lock_it_is_granted(locking, pid_path, hold):
    """Thread W waits (timeout=None) for a holder; the main thread forks a child meanwhile (a
    multiprocessing worker); the holder is killed, leaving its file. The child closed its copy
    of W's descriptor as it was forked: the lock the wait is granted is W's, and W takes it at
    once, not when the child exits."""
    holder = hold(pid_path)
    lock = locking(pid_path)
    took = []
    waiter = threading.Thread(target=lambda: (lock.acquire(), took.append(time.monotonic())))
    waiter.start()
    time.sleep(0.3)  # W is in flock(LOCK_EX) by now
    child = os.fork()
    if child == 0:
        time.sleep(6)
        os._exit(0)
    try:
        holder.kill()
        holder.wait()
        killed = time.monotonic()
        waiter.join(5)
        assert took and took[0] - killed < 3, "the wait was granted to the forked child"
        assert lock.i_am_locking()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        waiter.join(10)
        if lock.i_am_locking():
            lock.release()


def test_a_wait_that_finds_no_file_leaves_other_waits_listed(tmp_path):
    """The waits a forked child must close are listed each by itself: one that ends (here, no
    file to wait for) never takes another's entry off the list, even one as empty as its own."""
    another = _common.keep(os.open, b"/nonexistent", os.O_RDONLY)  # not opened yet: empty
    _lock._waiting[id(another)] = another
    try:
        missing = os.fsencode(tmp_path / "missing.pid")
        assert _lock._wait_for_holder(missing, "missing.pid") is False
        assert _lock._waiting == {id(another): another}
    finally:
        _lock._waiting.pop(id(another), None)


def test_a_lock_released_by_another_thread_as_i_am_locking_looks_is_no_error(
    locking, tmp_path, monkeypatch
):
    """Threads with their own locks: i_am_locking() (and acquire(None)) look at each held
    descriptor; one released meanwhile is passed over, not an EBADF."""
    mine, theirs = locking(tmp_path / "mine.pid"), locking(tmp_path / "theirs.pid")
    theirs.acquire()  # first: looked at first
    mine.acquire()
    real, released = os.fstat, []

    def released_first(fd):
        if not released:
            released.append(fd)
            theirs.release()  # (as another thread would, between the listing and the look)
        return real(fd)

    again = locking(tmp_path / "mine.pid")  # another object of the same file: it looks
    monkeypatch.setattr(_lock.os, "fstat", released_first)
    try:
        assert again.i_am_locking()
    finally:
        monkeypatch.undo()
        mine.release()
    assert released


# ---- other processes -----------------------------------------------------------------------------


def test_contention_names_the_holder(locking, pid_path, hold):
    holder = hold(pid_path)
    lock = locking(pid_path)
    assert lock.is_locked() and not lock.i_am_locking()
    assert lock.holder() == Verified(holder.pid) and lock.read_pid() == holder.pid
    start = time.monotonic()
    with pytest.raises(AlreadyLocked) as info:
        lock.acquire(timeout=0)
    assert info.value.pid == holder.pid
    assert time.monotonic() - start < 0.5, "a verified holder fails a try at once"
    start = time.monotonic()
    with pytest.raises(AlreadyLocked):
        lock.acquire(timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 2


@pytest.mark.parametrize("timeout", [None, 10])
def test_a_waiting_acquire_gets_the_lock_when_the_holder_lets_go(locking, pid_path, hold, timeout):
    # The holder marks the moment it lets go: no clock of the test's decides (a loaded machine
    # can pause this process for longer than the holder holds on)
    marker = pid_path.with_name("letting-go")
    then = f"time.sleep(0.1); open({str(marker)!r}, 'w').close(); lock.release(); time.sleep(60)"
    holder = hold(pid_path, then=then)
    lock = locking(pid_path)
    start = time.monotonic()
    lock.acquire(timeout=timeout)
    assert lock.i_am_locking() and marker.exists() and time.monotonic() - start < 5
    assert lock.holder() == Verified(os.getpid())
    lock.release()
    assert holder.poll() is None


def test_pgrep_and_pkill_minus_l_accept_a_held_lock_only(locking, pid_path, hold):
    pgrep = shutil.which("pgrep")
    if pgrep is None:
        require_or_skip("pgrep (procps) is not installed")
    holder = hold(pid_path)
    said = subprocess.run([pgrep, "-L", "-F", str(pid_path)], capture_output=True, text=True)
    assert (said.returncode, said.stdout) == (0, f"{holder.pid}\n")
    assert subprocess.run([shutil.which("pkill"), "-0", "-L", "-F", str(pid_path)]).returncode == 0
    holder.kill()
    holder.wait()  # the file stays, unlocked: -L refuses it
    assert subprocess.run([pgrep, "-L", "-F", str(pid_path)], capture_output=True).returncode != 0


# ---- the command line ----------------------------------------------------------------------------


def test_shimpid_lock_runs_the_command_holding_the_lock(impl, cli, pid_path):
    run, env = cli, cli.env
    command = "echo fd=$SHIMPID_LOCK_FD; exec sleep 60"
    holder = subprocess.Popen(
        [sys.executable, "-m", "shimpid", "lock", str(pid_path), "--", "sh", "-c", command],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().startswith("fd=")
        # the record names the command itself: shimpid exec'd it
        assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(holder.pid)
        second = run("lock", pid_path, "--", "true")
        assert second.returncode == 1
        assert f"is locked by {holder.pid}" in second.stderr
        assert run("status", pid_path).stdout == f"verified {holder.pid} (locked by {holder.pid})\n"
        assert f"lock:             locked by {holder.pid}" in run("show", pid_path).stdout
        shown = json.loads(run("show", "--json", pid_path).stdout)
        assert (shown["locked"], shown["locked_by"]) == (True, holder.pid)
        listed = json.loads(run("ls", "--json", pid_path.parent).stdout)["files"]
        assert [(row["locked"], row["locked_by"]) for row in listed] == [(True, holder.pid)]
        waited = run("lock", "--timeout", "0.1", pid_path, "--", "true")
        assert waited.returncode == 1
    finally:
        stop(holder)
    # killed: the file stays, naming a dead process, and takes the next lock at once
    assert run("status", pid_path).stdout.startswith("absent ")
    assert run("lock", pid_path, "--", "true").returncode == 0
    assert not pid_path.exists() or run("status", pid_path).returncode == 1


def test_shimpid_lock_exit_codes(cli, pid_path, tmp_path):
    run = cli
    assert run("lock", pid_path, "--", "sh", "-c", "exit 7").returncode == 7
    missing = run("lock", pid_path, "--", "./no-such-command", cwd=tmp_path)
    assert missing.returncode == 127 and "command not found" in missing.stderr
    assert not pid_path.exists(), "given back, and removed, when the command cannot run"
    (tmp_path / "plain").write_text("not executable\n")
    assert run("lock", pid_path, "--", "./plain", cwd=tmp_path).returncode == 126
    (tmp_path / "garbage").write_bytes(b"\x7fELF garbage")
    os.chmod(tmp_path / "garbage", 0o755)
    assert run("lock", pid_path, "--", "./garbage", cwd=tmp_path).returncode == 126  # ENOEXEC
    assert run("lock", pid_path).returncode == 2
    assert run("lock", tmp_path / "missing" / "x.pid", "--", "true").returncode == 1
    assert run("lock", "--capability", "a\tb", pid_path, "--", "true").returncode == 2


# ---- python-daemon -------------------------------------------------------------------------------


DAEMON = """
import daemon, shimpid, sys, time
log = open(sys.argv[2], "a")
lock = shimpid.PidFileLock(sys.argv[1])
with daemon.DaemonContext(pidfile=lock, stdout=log, stderr=log):
    print("running", flush=True)
    time.sleep(60)
"""


DAEMON_TEST = """
import shimpid
path, log, daemon = sys.argv[1], sys.argv[2], sys.argv[3]
def start():  # through sh: python-daemon detaches only what init did not start
    return subprocess.run(["sh", "-c", '"$0" -c "$1" "$2" "$3"', sys.executable, daemon, path,
                           log], timeout=30).returncode
report = {"first": start()}
deadline = time.monotonic() + 20
reader = shimpid.PidFileReader.at(path)
while not (os.path.exists(path) and shimpid.PidFileLock(path).is_locked()
           and reader.process_identity() == shimpid.Verified(reader.read().pid)):
    assert time.monotonic() < deadline, "the daemon did not take the lock"
    time.sleep(0.02)
report["daemon"] = reader.read().pid
report["second"] = start()
while "pid file is locked by" not in open(log).read():  # the message: the second daemon dies
    assert time.monotonic() < deadline + 20, "the second daemon said nothing"
    time.sleep(0.02)
report["holder"] = shimpid.PidFileLock(path).read_pid()
stop = subprocess.run([sys.executable, "-m", "shimpid", "stop", path], capture_output=True,
                      text=True)
report["stop"] = [stop.returncode, stop.stdout]
report["left"] = os.path.exists(path)
report["locked"] = shimpid.PidFileLock(path).is_locked()
with open(log) as f:
    report["log"] = f.read()
print(json.dumps(report))
"""


def test_python_daemon_takes_the_lock_in_the_daemon(impl, tmp_path):
    try:
        import daemon  # noqa: F401
    except ImportError:
        require_or_skip("python-daemon is not installed")
    path, log, script = tmp_path / "daemon.pid", tmp_path / "log", tmp_path / "daemon.py"
    log.write_text("")
    script.write_text(DAEMON)
    os.chmod(tmp_path, 0o755)
    prelude = script_prelude(impl) + "os.environ['PYTHONPATH'] = os.pathsep.join(sys.path)\n"
    if impl is shimpid._pure:
        prelude += "os.environ['SHIMPID_PURE_PYTHON'] = '1'\n"
    code = prelude + f"sys.argv[1:] = {[str(path), str(log), DAEMON]!r}\n" + DAEMON_TEST
    out = run_in_pid_namespace(code)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["first"] == 0 and report["second"] == 0  # each detached at once
    assert report["holder"] == report["daemon"], report
    assert report["log"].count("running") == 1, report["log"]
    assert (
        f"AlreadyLocked: [Errno {errno.EWOULDBLOCK}] pid file is locked by process "
        f"{report['daemon']}" in report["log"]
    )
    assert report["stop"][0] == 0 and report["stop"][1].startswith(f"stopped {report['daemon']}")
    assert not report["left"] and not report["locked"]


OTHER_DAEMON = """
import daemon, sys, time
from daemon.pidfile import TimeoutPIDLockFile
log = open(sys.argv[2], "a")
with daemon.DaemonContext(pidfile=TimeoutPIDLockFile(sys.argv[1], 0), stdout=log, stderr=log):
    print("running", flush=True)
    time.sleep(60)
"""


BESIDE_TEST = """
path, log, other, ours = sys.argv[1:5]
def start(daemon):  # through sh: python-daemon detaches only what init did not start
    return subprocess.run(["sh", "-c", '"$0" -c "$1" "$2" "$3"', sys.executable, daemon, path,
                           log], timeout=30).returncode
report = {"other": start(other)}
deadline = time.monotonic() + 20
while not (os.path.exists(path) and open(path).read().strip()):
    assert time.monotonic() < deadline, "the other daemon wrote no pid file"
    time.sleep(0.02)
report["other pid"] = int(open(path).read())
report["ours"] = start(ours)
while "which is running" not in open(log).read():  # the message, not the traceback's start
    assert time.monotonic() < deadline + 20, "shimpid's daemon said nothing"
    time.sleep(0.02)
report["file"] = open(path).read()
with open(log) as f:
    report["log"] = f.read()
print(json.dumps(report))
"""


def test_a_daemon_of_another_tool_is_never_joined_by_a_second(impl, tmp_path):
    """The issue's case, with the real package: a daemon holds python-daemon's
    TimeoutPIDLockFile (an exclusive create, no flock); a DaemonContext with a PidFileLock of the
    same path must refuse to start beside it, and leave its file alone."""
    try:
        import daemon  # noqa: F401
    except ImportError:
        require_or_skip("python-daemon is not installed")
    path, log = tmp_path / "daemon.pid", tmp_path / "log"
    log.write_text("")
    os.chmod(tmp_path, 0o755)
    prelude = script_prelude(impl) + "os.environ['PYTHONPATH'] = os.pathsep.join(sys.path)\n"
    if impl is shimpid._pure:
        prelude += "os.environ['SHIMPID_PURE_PYTHON'] = '1'\n"
    argv = [str(path), str(log), OTHER_DAEMON, DAEMON]
    out = run_in_pid_namespace(prelude + f"sys.argv[1:] = {argv!r}\n" + BESIDE_TEST)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    assert report["other"] == 0 and report["ours"] == 0  # each detached at once
    assert report["log"].splitlines().count("running") == 1, report["log"]
    assert (
        f"shimpid.AlreadyRunning: [Errno {errno.EWOULDBLOCK}] pid file is not locked, but names "
        f"process {report['other pid']}, which is running" in report["log"]
    )
    assert report["file"] == f"{report['other pid']}\n"


def test_a_dropped_lock_object_keeps_the_lock_for_the_life_of_the_process(locking, pid_path):
    import gc

    locking(pid_path).acquire()  # the daemon idiom: held until the process ends
    gc.collect()

    def child(out):
        try:
            locking(pid_path).acquire(timeout=0)
        except AlreadyLocked as err:
            os.write(out, str(err.pid).encode())

    code, said = run_in_child(child)
    assert (code, said) == (0, str(os.getpid()).encode())
    # this test's process cannot give it back: free it as its exit would, by closing the file
    for fd in list(_lock._held):
        if os.path.exists(f"/proc/self/fd/{fd}") and os.path.samefile(
            f"/proc/self/fd/{fd}", pid_path
        ):
            del _lock._held[fd]
            os.close(fd)
    assert not locking(pid_path).is_locked()


def test_a_record_is_not_taken_for_the_lock_holder(impl, locking, pid_path, sleeper, cli):
    """A file naming a live process, locked by another: nobody is named as holding it."""
    impl.PidFileWriter.at(pid_path).write_for(sleeper.pid)  # verified, not a lock's file
    child = flock_holder(pid_path)
    try:
        lock = locking(pid_path)
        assert lock.is_locked() and lock.holder() == Absent() and lock.read_pid() is None
        if _lock.flock_holders(pid_path) is not None:  # /proc/locks tells who holds it
            assert _lock.flock_holders(pid_path) == {child.pid}
            run = cli
            assert run("status", pid_path).stdout == (
                f"verified {sleeper.pid} (locked by a process the file does not name)\n"
            )
    finally:
        stop(child)


def test_a_blocking_acquire_of_a_lock_this_process_holds_fails(locking, pid_path):
    with locking(pid_path):
        start = time.monotonic()
        with pytest.raises(AlreadyLocked) as info:
            locking(pid_path).acquire()  # would wait for itself for ever
        assert info.value.pid == os.getpid() and time.monotonic() - start < 5


def test_create_dir_checks_the_way_the_kernel_goes(locking, tmp_path):
    """``x/..`` goes through x: with create_dir, the walk checks x, as without it, and never a
    way made up by dropping it (another user's symlink there could later point anywhere)."""
    if os.geteuid() != 0:
        require_or_skip("needs root, to give a symlink to another user")
    shared = tmp_path / "shared"
    (shared / "theirs").mkdir(parents=True)
    shared.chmod(0o1777)  # sticky, as /tmp: each user's entries are their own
    (shared / "evil").symlink_to(shared / "theirs")
    os.lchown(shared / "evil", 65534, 65534)
    path = f"{shared}/evil/../run/app.pid"
    with pytest.raises(_rundir.UntrustedPath, match="evil: a symlink owned by uid 65534"):
        locking(path, create_dir=True, secure=True)
    assert not (shared / "run").exists()  # nothing made
    (shared / "run").mkdir()
    with pytest.raises(_rundir.UntrustedPath, match="evil: a symlink owned by uid 65534"):
        locking(path, secure=True)


def test_a_secure_lock_refuses_a_directory_others_can_write_to(locking, tmp_path, monkeypatch):
    """There another user could remove the held file, and a second instance lock a new one;
    a sticky directory (as /tmp) lets only the file's owner remove it. The way is walked once,
    with create_dir or without."""
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    walks = []
    real = _lock.open_directory
    monkeypatch.setattr(_lock, "open_directory", lambda *a, **k: walks.append(a) or real(*a, **k))
    for create_dir in (False, True):
        with pytest.raises(_rundir.UntrustedPath, match=r"app\.pid: it is in a directory"):
            locking(open_to_all / "app.pid", create_dir=create_dir, secure=True)
        assert len(walks) == 1
        walks.clear()
    assert os.listdir(open_to_all) == []
    with locking(open_to_all / "app.pid", secure=False) as lock:
        assert lock.holder() == Verified(os.getpid())
    open_to_all.chmod(0o1777)
    with locking(open_to_all / "app.pid", secure=True) as lock:
        assert lock.holder() == Verified(os.getpid())
