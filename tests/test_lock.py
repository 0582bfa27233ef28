"""PidFileLock's system calls (``_lock_try``, ``_lock_release``): one holder at a time, never
blocked by a stale file, nothing at the path damaged, across fork and exec, the file's mode and
owner. Real processes. The lock is one code whatever the backend (shimpid/_lock.py), so these
run once, on the run's backend; its policy is in test_lock_policy.py."""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import shimpid
from _helpers import (
    PURE_ONLY,
    flock_holder,
    proc_state,
    require_or_skip,
    rounds,
    run_in_child,
    script_prelude,
    stop,
)
from shimpid import Absent, AlreadyLocked, Verified, _common, _lock, _operate, _rundir

TOKEN = "services-mux-v1"


@pytest.fixture(scope="session")
def impl(backend):
    """The run's backend, for every test here (and the fixtures they take): once, not twice."""
    return backend


@pytest.fixture(params=["pure", "cython"])
def verdicts(request, monkeypatch):
    """Each backend in turn, as the one whose verdicts the lock asks (both, where a test's
    outcome is those verdicts): PidFileLock with it, as ``locking`` gives the run's."""
    if request.param == "cython" and PURE_ONLY:
        pytest.skip("SHIMPID_PURE_PYTHON is set: the pure backend is tested alone")
    judge = importlib.import_module(f"shimpid._{'pure' if request.param == 'pure' else 'speedups'}")
    for module in (_lock, _rundir, _operate):
        monkeypatch.setattr(module, "_backend", judge)
    return judge


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# ---- one process ---------------------------------------------------------------------------------


def test_acquire_writes_this_process_record_and_release_removes_it(impl, locking, pid_path):
    lock = locking(pid_path, capability=TOKEN)
    assert not lock.is_locked() and not lock.i_am_locking()
    lock.acquire()
    assert lock.i_am_locking() and lock.is_locked()
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.read() == impl.PidRecord.current()
    assert reader.process_identity() == Verified(os.getpid())
    assert reader.read_capability() == TOKEN
    assert reader.read_boot_id() == _common.CURRENT_BOOT_ID
    if impl._pidfd_level() == _common.PIDFS:
        assert reader.read_pidfs_id() is not None
    assert lock.holder() == Verified(os.getpid()) and lock.read_pid() == os.getpid()
    assert "held" in repr(lock)
    lock.release()
    assert not pid_path.exists() and not lock.is_locked() and not lock.i_am_locking()
    assert lock.holder() == Absent() and lock.read_pid() is None
    assert [name for name in os.listdir(pid_path.parent)] == []  # no temporary file left


def test_a_lock_is_never_taken_twice(locking, pid_path):
    with locking(pid_path) as lock:
        with pytest.raises(AlreadyLocked) as same:
            lock.acquire(timeout=0)
        with pytest.raises(AlreadyLocked) as other:  # another object, the same process
            locking(pid_path).acquire(timeout=0)
        assert same.value.pid == other.value.pid == os.getpid()
        assert lock.i_am_locking()
        assert locking(pid_path).i_am_locking(), "this process holds it, whatever the object"
    assert not pid_path.exists()
    lock.release()  # not held: nothing, as pid.PidFile.close()
    locking(pid_path).release()
    assert not pid_path.exists() and not lock.i_am_locking()


def test_a_release_interrupted_before_the_file_goes_keeps_the_lock_known_here(
    locking, pid_path, monkeypatch
):
    """A handler that raises at _lock_release's entry leaves the lock held (release() may be
    called again): this process still knows it holds it, and another object's acquire()
    with no timeout says AlreadyLocked instead of waiting on it for ever."""
    lock = locking(pid_path)
    lock.acquire(timeout=0)
    release = _lock._lock_release

    def interrupted(*args):
        monkeypatch.setattr(_lock, "_lock_release", release)
        raise KeyboardInterrupt  # as a handler raising at the function's entry

    monkeypatch.setattr(_lock, "_lock_release", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lock.release()
    assert lock.i_am_locking() and locking(pid_path).i_am_locking()
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("waited on its own lock"))
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        with pytest.raises(AlreadyLocked):
            locking(pid_path).acquire(timeout=None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    lock.release()
    assert not pid_path.exists() and not lock.i_am_locking()


def test_what_is_at_the_path_is_never_damaged(locking, tmp_path):
    (tmp_path / "dir.pid").mkdir()
    os.mkfifo(tmp_path / "fifo.pid")
    (tmp_path / "target").write_text("precious\n")
    (tmp_path / "link.pid").symlink_to(tmp_path / "target")
    for name, code in [
        ("dir.pid", errno.EISDIR),
        ("fifo.pid", errno.ENXIO),
        ("link.pid", errno.ELOOP),
    ]:
        with pytest.raises(OSError) as info:
            locking(tmp_path / name).acquire(timeout=0)
        assert info.value.errno == code and info.value.filename == str(tmp_path / name)
    assert (tmp_path / "dir.pid").is_dir() and (tmp_path / "link.pid").is_symlink()
    assert (tmp_path / "target").read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["dir.pid", "fifo.pid", "link.pid", "target"]


def test_release_leaves_a_file_that_is_no_longer_ours(impl, locking, pid_path, sleeper):
    lock = locking(pid_path)
    lock.acquire()
    os.unlink(pid_path)
    impl.PidFileWriter.at(pid_path).write_for(sleeper.pid)  # someone else's, against the rules
    lock.release()
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(sleeper.pid)


# ---- other processes -----------------------------------------------------------------------------


def test_a_killed_holder_leaves_a_file_that_never_blocks(impl, locking, pid_path, hold):
    holder = hold(pid_path)
    holder.kill()
    holder.wait()
    assert pid_path.exists() and not locking(pid_path).is_locked()
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Absent()
    start = time.monotonic()
    with locking(pid_path) as lock:
        assert time.monotonic() - start < 0.5
        assert lock.holder() == Verified(os.getpid())


TAKEN_NAMES = """
from shimpid import PidFileLock
path = sys.argv[1]
directory = os.path.dirname(path)
planted = {f".shim.pid.{os.getpid()}.{n}.tmp" for n in range(40)}  # more than a try tries
for name in planted:
    open(os.path.join(directory, name), "w").close()
try:
    PidFileLock(path).acquire(timeout=0)
except FileExistsError as err:
    print(json.dumps([err.filename, set(os.listdir(directory)) == planted]))
"""


def test_every_temporary_name_taken_fails_and_leaves_them_all(impl, pid_path):
    """Every temporary name a try tries is taken (left by killed processes that had this pid):
    the try fails, naming the last, and leaves every one of them, as it leaves the path."""
    result = subprocess.run(
        [sys.executable, "-c", script_prelude(impl) + TAKEN_NAMES, str(pid_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    filename, all_left = json.loads(result.stdout)
    assert filename.startswith(str(pid_path.parent / ".shim.pid.")) and all_left


READ_ONLY_RELEASE = """
from shimpid import PidFileLock
directory = sys.argv[1]
os.chdir(directory)
lock = PidFileLock("shim.pid")  # relative: the error names it so
lock.acquire()
subprocess.run(["mount", "--bind", directory, directory], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", directory, directory], check=True)
try:
    lock.release()
except OSError as err:
    print(json.dumps([err.errno, err.filename, lock.i_am_locking()]))
"""


def test_a_release_that_cannot_remove_the_file_says_so_and_lets_go(impl, tmp_path):
    """The file cannot be removed (a read-only mount, in a mount namespace of the test's own):
    the lock is let go all the same, and the error names the path as it was given."""
    unshare = shutil.which("unshare")
    if unshare is None:
        require_or_skip("unshare (util-linux) not found: no mount namespace for this test")
    namespace = [unshare, "--mount", "--propagation", "private"]
    probe = subprocess.run([*namespace, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        require_or_skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    result = subprocess.run(
        [
            *namespace,
            sys.executable,
            "-c",
            script_prelude(impl) + READ_ONLY_RELEASE,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [errno.EROFS, "shim.pid", False]


def stale_records(impl, sleeper, zombie, reaped_pid):
    """Records nobody holds locked: each names a process that is not the lock's holder."""
    other_boot = b"shimpid boot=00000000-1111-2222-3333-444444444444\n"
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid))
    return {
        "dead": impl.PidRecord(reaped_pid, 1).encode(),
        "reused": impl.PidRecord(sleeper.pid, 1).encode(),
        "zombie": impl.PidRecord(zombie.pid, impl.process_start_time(zombie.pid)).encode(),
        "another boot": live.encode() + b"\n" + other_boot,
        "garbage": b"garbage\n",
        "empty": b"",
    }


def test_stale_files_are_taken_over_whatever_they_name(
    verdicts, tmp_path, sleeper, zombie, reaped_pid, monkeypatch
):
    monkeypatch.setattr(_lock, "FRESH_EMPTY", 0)  # an empty file as old as a crash's
    for name, data in stale_records(verdicts, sleeper, zombie, reaped_pid).items():
        path = tmp_path / f"{name}.pid"
        path.write_bytes(data)
        start = time.monotonic()
        with shimpid.PidFileLock(path) as lock:
            assert time.monotonic() - start < 0.5, name
            assert lock.holder() == Verified(os.getpid()), name
            assert shimpid.PidFileReader.at(path).read().pid == os.getpid(), name
        assert not path.exists(), name
    assert sleeper.poll() is None and proc_state(zombie.pid) == "Z"


RACER = """
from shimpid import _lock
_lock._backend = impl
lock = _lock.PidFileLock(sys.argv[1])
print("ready", flush=True)
sys.stdin.read(1)  # every racer is ready: go
try:
    lock.acquire(timeout=0)
except _lock.AlreadyLocked as err:
    print(json.dumps(["lost", err.pid]), flush=True)
else:
    print(json.dumps(["won", os.getpid()]), flush=True)
    sys.stdin.read(1)  # held until every other racer has tried
    lock.release()
"""


def test_racers_for_a_stale_file_have_exactly_one_winner(impl, pid_path, reaped_pid):
    racers = 8
    for _ in range(rounds(2, 10)):
        pid_path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
        children = [
            subprocess.Popen(
                [sys.executable, "-c", script_prelude(impl) + RACER, str(pid_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(racers)
        ]
        assert [child.stdout.readline() for child in children] == ["ready\n"] * racers
        for child in children:
            child.stdin.write("g")
            child.stdin.flush()
        results = [json.loads(child.stdout.readline()) for child in children]
        for child in children:
            child.communicate("r", timeout=30)  # the winner may let go now
        winners = [pid for outcome, pid in results if outcome == "won"]
        assert len(winners) == 1, results
        assert all(pid == winners[0] for outcome, pid in results if outcome == "lost"), results
        assert not pid_path.exists()


MUTEX = """
from shimpid import _lock
_lock._backend = impl
path, log, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = _lock.PidFileLock(path)
out = os.open(log, os.O_WRONLY | os.O_APPEND)
me = os.getpid()
for n in range(cycles):
    lock.acquire()
    os.write(out, b"in %d %d\\n" % (me, n))
    if n % 50 == 0:
        time.sleep(0.001)  # now and then, hold it a while
    os.write(out, b"out %d %d\\n" % (me, n))
    lock.release()
"""


def test_no_two_processes_ever_hold_the_lock_at_once(pid_path, tmp_path):
    """Half the processes on each backend: they share one protocol (so one run covers both)."""
    processes, cycles = 8, rounds(100, 200)
    names = ("_pure",) if PURE_ONLY else ("_pure", "_speedups")
    backends = [importlib.import_module(f"shimpid.{name}") for name in names]
    log = tmp_path / "log"
    log.write_bytes(b"")
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script_prelude(backends[n % len(backends)]) + MUTEX,
                str(pid_path),
                str(log),
                str(cycles),
            ]
        )
        for n in range(processes)
    ]
    assert [child.wait(timeout=300) for child in children] == [0] * processes
    lines = log.read_text().splitlines()
    assert len(lines) == 2 * processes * cycles
    for entered, left in zip(lines[::2], lines[1::2], strict=True):  # strictly in, out, in, out...
        assert entered.startswith("in ") and left == "out" + entered[2:], (entered, left)
    assert {line.split()[1] for line in lines} == {str(c.pid) for c in children}
    assert not pid_path.exists()


def test_a_file_locked_by_a_process_it_does_not_name(impl, locking, pid_path, reaped_pid):
    """flock(1), or a PidFileLock between locking and writing: held, so never taken, and a try
    waits briefly for the holder's record before it gives up."""
    pid_path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    child = flock_holder(pid_path)
    try:
        lock = locking(pid_path)
        assert lock.is_locked() and lock.holder() == Absent() and lock.read_pid() is None
        start = time.monotonic()
        with pytest.raises(AlreadyLocked) as info:
            lock.acquire(timeout=0)
        assert info.value.pid is None and "does not name" in str(info.value)
        assert _lock.UNNAMED_HOLDER_GRACE <= time.monotonic() - start < 2
        # and shimpid.clean() leaves it alone, though its record names nothing alive
        assert shimpid.clean(pid_path.parent) == []
        assert pid_path.read_bytes() == impl.PidRecord(reaped_pid, 1).encode()
    finally:
        stop(child)


# ---- fork and exec -------------------------------------------------------------------------------


def test_a_forked_child_does_not_hold_its_parents_lock(locking, pid_path):
    lock = locking(pid_path)
    lock.acquire()
    fd = lock._slot[0]

    def child(out):
        report = {
            "i_am_locking": lock.i_am_locking(),
            "fd_open": os.path.exists(f"/proc/self/fd/{fd}"),
            "is_locked": lock.is_locked(),
        }
        lock.release()  # nothing: the parent's
        report["after_release"] = lock.is_locked() and pid_path.exists()
        try:
            locking(pid_path).acquire(timeout=0)
        except AlreadyLocked as err:
            report["holder"] = err.pid
        os.write(out, json.dumps(report).encode())

    code, said = run_in_child(child)
    assert code == 0, said
    assert json.loads(said) == {
        "i_am_locking": False,
        "fd_open": False,
        "is_locked": True,
        "after_release": True,
        "holder": os.getpid(),
    }
    assert lock.i_am_locking() and lock.is_locked()
    lock.release()
    assert not lock.is_locked()


def test_a_forked_child_that_outlives_its_parent_does_not_keep_the_lock(impl, locking, pid_path):
    script = script_prelude(impl) + textwrap.dedent(f"""
        from shimpid import _lock
        _lock._backend = impl
        lock = _lock.PidFileLock({str(pid_path)!r})
        lock.acquire()
        child = os.fork()
        if child == 0:
            quiet = os.open(os.devnull, os.O_WRONLY)  # the test reads the parent's output
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            time.sleep(5)  # the parent's copy of the object, and nothing of its lock
            os._exit(0)
        print(child, flush=True)
        os._exit(0)  # killed, as it were: no release()
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    orphan = int(out.stdout)
    assert proc_state(orphan) in "SR"  # alive (for 5 s), not holding the lock
    with locking(pid_path) as lock:
        assert lock.holder() == Verified(os.getpid())


def test_an_exec_child_does_not_inherit_the_lock(locking, pid_path):
    lock = locking(pid_path)
    lock.acquire()
    child = subprocess.Popen(["sleep", "60"], close_fds=False)
    try:
        lock.release()
        with locking(pid_path):  # free, though the child runs on
            assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_a_stale_file_blocks_the_peers_and_not_shimpid(
    impl, locking, tmp_path, sleeper, reaped_pid
):
    """The single-instance guide's comparison, kept true: lockfile (python-daemon) is blocked by
    any file left behind; the pid package by one whose pid is in use again; PidFileLock by neither
    where the record has its start time, and, like pid, by a one-line file whose pid is in use."""
    try:
        import pid as pid_package
        from daemon.pidfile import TimeoutPIDLockFile
        from lockfile import AlreadyLocked as LockfileAlreadyLocked
    except ImportError:
        require_or_skip("python-daemon and pid are not installed")
    dead, reused = tmp_path / "dead.pid", tmp_path / "reused.pid"
    for path, pid in [(dead, reaped_pid), (reused, sleeper.pid)]:
        path.write_text(f"{pid}\n")  # left by a process killed with -9
        with pytest.raises(LockfileAlreadyLocked):
            TimeoutPIDLockFile(str(path), acquire_timeout=0).acquire()
    with pid_package.PidFile(pidname="dead", piddir=str(tmp_path)):
        pass  # its pid is free: taken over
    dead.write_text(f"{reaped_pid}\n")
    with pytest.raises(pid_package.PidFileAlreadyRunningError):
        pid_package.PidFile(pidname="reused", piddir=str(tmp_path)).create()
    with pytest.raises(shimpid.AlreadyRunning) as refused:  # no start time: it may be running
        locking(reused).acquire(timeout=0)
    assert refused.value.pid == sleeper.pid
    reused.write_bytes(impl.PidRecord(sleeper.pid, 1).encode())  # its start time differs: reused
    for path in (dead, reused):
        with locking(path):
            assert shimpid.PidFileReader.at(path).process_identity() == Verified(os.getpid())
    assert sleeper.poll() is None


# ---- found by a hostile review -------------------------------------------------------------------


def test_clean_racing_a_takeover_never_makes_two_holders(
    impl, locking, pid_path, reaped_pid, monkeypatch
):
    """clean() opens a stale file; before it locks that file, a PidFileLock takes it over (its
    own file renamed over the stale one). clean() must leave the path alone: were it to move
    the taker's file aside, even for an instant, a third process could lock the empty path."""
    pid_path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    taker, third = locking(pid_path), locking(pid_path)
    open_regular, rename = _rundir._open_regular, os.rename

    reads = []

    def opened_then_taken_over(directory, name):
        kept = open_regular(directory, name)
        reads.append(kept[0])  # opened
        if len(reads) == 1:  # clean()'s open of the stale file, before it locks it
            taker.acquire(timeout=0)  # the stale file is replaced, its descriptor let go
        return kept

    def third_tries_in_the_gap(src, dst, **kwargs):
        rename(src, dst, **kwargs)
        if _rundir.ASIDE_PREFIX in os.fsdecode(dst):  # the path's file is aside right now
            with contextlib.suppress(AlreadyLocked):
                third.acquire(timeout=0)

    monkeypatch.setattr(_rundir, "_open_regular", opened_then_taken_over)
    monkeypatch.setattr(os, "rename", third_tries_in_the_gap)
    # the move aside through os.rename (a look, then rename(): where there is no renameat2)
    monkeypatch.setattr(_rundir, "_rename_noreplace", lambda *args: None)
    shimpid.clean(pid_path.parent)
    assert len(reads) == 1
    assert taker._slot[0] >= 0 and third._slot[0] < 0  # the taker's object holds it, not the third
    assert taker.holder() == Verified(os.getpid())
    taker.release()


def test_the_lock_never_takes_a_closed_standard_streams_number(impl, cli, pid_path):
    env = cli.env
    said = subprocess.run(
        [
            "sh",
            "-c",
            '"$0" -m shimpid lock "$1" -- sh -c \'echo "fd=$SHIMPID_LOCK_FD" >&2; '
            "echo GARBAGE' >&-",
            sys.executable,
            str(pid_path),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    fd = int(said.stderr.split("fd=")[1].split()[0])
    assert fd > 2 and b"GARBAGE" not in pid_path.read_bytes()


def test_a_waiter_killed_while_waiting_leaves_nothing_behind(impl, cli, pid_path, hold):
    env = cli.env
    hold(pid_path)
    waiter = subprocess.Popen(
        [sys.executable, "-m", "shimpid", "lock", "--wait", str(pid_path), "--", "true"], env=env
    )
    deadline = time.monotonic() + 10
    waiting = b"-> FLOCK  ADVISORY  WRITE %d " % waiter.pid
    while waiting not in read_bytes("/proc/locks"):  # it waits for the lock
        assert time.monotonic() < deadline and waiter.poll() is None, "it never waited"
        time.sleep(0.01)
    waiter.terminate()  # our child: the default action, no cleanup
    assert waiter.wait(timeout=10) == -signal.SIGTERM
    assert os.listdir(pid_path.parent) == [pid_path.name]


# ---- the file's mode and owner, which the system calls set ---------------------------------------


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


def test_large_ids_and_set_id_modes(locking, pid_path):
    if os.geteuid() != 0:
        require_or_skip("setting another owner needs root")
    with locking(pid_path, uid=3_000_000_000, gid=3_000_000_000):
        info = os.stat(pid_path)
        assert (info.st_uid, info.st_gid) == (3_000_000_000, 3_000_000_000)
    with locking(pid_path, mode=0o2644, gid=65534, secure=False):  # owner first, then the mode
        assert os.stat(pid_path).st_mode & 0o7777 == 0o2644
