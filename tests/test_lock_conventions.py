"""PidFileLock as users of ``pid``, python-daemon and lockfile expect it: a running daemon of
another tool is never taken over, the file goes at exit, and the peers' options (a timeout for
``with``, a decorator, the directory made, the owner, an exact mode, subclasses). Both
backends, real processes."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shimpid
from _helpers import require_or_skip, run_in_child, script_prelude
from shimpid import AlreadyLocked, AlreadyRunning, Verified, _lock, _rundir


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


def test_mode_is_exact_whatever_the_umask(locking, pid_path):
    old = os.umask(0o077)
    try:
        for mode in (0o644, 0o640, 0o600):
            with locking(pid_path, mode=mode):
                assert os.stat(pid_path).st_mode & 0o7777 == mode
    finally:
        os.umask(old)


def test_the_owner_can_be_set(locking, pid_path):
    if os.geteuid() != 0:
        require_or_skip("setting another owner needs root")
    with locking(pid_path, uid=65534, gid=65534):
        info = os.stat(pid_path)
        assert (info.st_uid, info.st_gid) == (65534, 65534)
    with locking(pid_path, gid=65534):
        info = os.stat(pid_path)
        assert (info.st_uid, info.st_gid) == (os.geteuid(), 65534)
    for bad in (-2, 2**32, "0"):
        with pytest.raises((ValueError, TypeError)):
            locking(pid_path, uid=bad)


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


def test_large_ids_and_set_id_modes(locking, pid_path):
    if os.geteuid() != 0:
        require_or_skip("setting another owner needs root")
    with locking(pid_path, uid=3_000_000_000, gid=3_000_000_000):
        info = os.stat(pid_path)
        assert (info.st_uid, info.st_gid) == (3_000_000_000, 3_000_000_000)
    with locking(pid_path, mode=0o2644, gid=65534, secure=False):  # owner first, then the mode
        assert os.stat(pid_path).st_mode & 0o7777 == 0o2644


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
