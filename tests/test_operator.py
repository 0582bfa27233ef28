"""The operator layer's rules, each on both backends: every lock kind counts, one read gives one
answer, one verdict one exit code, output that no file can subvert, paths of every type, the
trust walk, and acting through the directory opened once."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

import shimpid
from _helpers import require_or_skip, run_in_child, script_prelude, stop
from shimpid import Absent, AlreadyLocked, Verified, _cli, _common, _operate, _rundir

# ---- every lock kind counts ---------------------------------------------------------------------

HOLDERS = {
    "flock": "fcntl.flock(fd, fcntl.LOCK_EX)",
    "lockf": "fcntl.lockf(fd, fcntl.LOCK_EX)",  # a POSIX record lock, as fasteners takes
    "ofd": "fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack('@hhqqi4x', fcntl.F_WRLCK, 0, 0, 0, 0))",
}


def lock_holder(path, kind: str, record: bool = False) -> subprocess.Popen:
    """A process holding a lock of ``kind`` on path (and, with ``record``, its record in it)."""
    write = (
        "os.write(fd, b'%d\\n%s\\n' % (os.getpid(), open('/proc/self/stat','rb').read()"
        ".rpartition(b')')[2].split()[19]))\n"
        if record
        else ""
    )
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, struct, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            f"{HOLDERS[kind]}\n{write}print('locked', flush=True)\ntime.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    if child.stdout.readline() != "locked\n":
        stop(child)
        pytest.fail(f"the {kind} holder did not start")
    return child


@pytest.mark.parametrize("kind", sorted(HOLDERS))
def test_every_lock_kind_keeps_a_stale_file(impl, cli, tmp_path, reaped_pid, kind):
    """A process holding a POSIX, OFD or flock lock on a pid file lives: ls and status show it
    locked, clean keeps the file, and a PidFileLock does not take it over."""
    path = tmp_path / "app.pid"
    path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    child = lock_holder(path, kind)
    try:
        code, out, _ = cli("status", path)
        assert (code, out) == (
            1,
            f"absent {reaped_pid} (locked by a process the file does not name)\n",
        )
        rows = json.loads(cli("ls", "--json", tmp_path).stdout)["files"]
        assert [(row["state"], row["locked"]) for row in rows] == [("absent", True)]
        for pattern in ("*.pid", "app*"):  # the extension's fast path, and the general one
            assert [e.locked for e in shimpid.scan(tmp_path, pattern=pattern, locks=True)] == [True]
        assert cli("clean", tmp_path) == (0, "", "")
        assert shimpid.clean(tmp_path) == [] and path.exists()
        with pytest.raises(AlreadyLocked):
            shimpid.PidFileLock(path).acquire(timeout=0)
        assert shimpid.PidFileLock(path).is_locked()
    finally:
        stop(child)
    assert not shimpid.PidFileLock(path).is_locked()
    assert [r.action for r in shimpid.clean(tmp_path)] == ["removed"] and not path.exists()


def test_a_shared_flock_is_not_shown_but_respected(impl, cli, tmp_path, reaped_pid):
    """flock -s: the probes' own shared flock() passes it, so is_locked(), status and ls say
    unlocked (as the security page says); acquire() and clean, which try it exclusively, leave
    the file alone."""
    path = tmp_path / "app.pid"
    path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    HOLDERS["flock -s"] = "fcntl.flock(fd, fcntl.LOCK_SH)"
    try:
        child = lock_holder(path, "flock -s")
    finally:
        del HOLDERS["flock -s"]
    try:
        assert not shimpid.PidFileLock(path).is_locked()
        assert cli("status", path) == (1, f"absent {reaped_pid}\n", "")
        with pytest.raises(AlreadyLocked):
            shimpid.PidFileLock(path).acquire(timeout=0)
        assert shimpid.clean(tmp_path) == [] and path.exists()
    finally:
        stop(child)
    assert [r.action for r in shimpid.clean(tmp_path)] == ["removed"]


def test_a_posix_lock_names_its_holder(impl, cli, tmp_path):
    """A daemon that locks its own pid file with lockf(): the lock's holder is the pid its
    record names, verified, and shown as such (from the one read)."""
    path = tmp_path / "daemon.pid"
    path.write_bytes(b"")
    child = lock_holder(path, "lockf", record=True)
    try:
        assert cli("status", path)[:2] == (0, f"verified {child.pid} (locked by {child.pid})\n")
        row = json.loads(cli("ls", "--json", tmp_path).stdout)["files"][0]
        assert (row["state"], row["locked"], row["locked_by"]) == ("verified", True, child.pid)
        assert _operate.inspect(path).holder == child.pid
    finally:
        stop(child)


# ---- one verdict, one exit code -----------------------------------------------------------------

# The operator's guide's table (docs/guide/cli.md). Columns: status (and show), pid, signal, stop.
EXIT_CODES = {
    "verified": (0, 0, 0, 0),
    "legacy (refused)": (0, 3, 1, 1),
    "absent: dead": (1, 3, 3, 0),
    "absent: reused": (1, 3, 3, 0),
    "absent: another boot": (1, 3, 3, 0),
    "absent: garbage": (1, 3, 3, 0),
    "absent: empty": (1, 3, 3, 0),
    "no pid file": (3, 3, 3, 0),
    "not a regular file": (4, 4, 4, 4),
}


def situations(impl, reaped_pid, sleeper_pid):
    other_boot = b"\nshimpid boot=00000000-0000-4000-8000-000000000000\n"
    return {
        "legacy (refused)": impl.PidRecord(sleeper_pid).encode(),
        "absent: dead": impl.PidRecord(reaped_pid, 1).encode(),
        "absent: reused": impl.PidRecord(sleeper_pid, 1).encode(),
        "absent: another boot": impl.PidRecord(sleeper_pid, 1).encode() + other_boot,
        "absent: garbage": b"garbage\n",
        "absent: empty": b"",
    }


def test_one_verdict_one_exit_code(impl, cli, tmp_path, reaped_pid):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        path = tmp_path / "app.pid"
        for situation, data in situations(impl, reaped_pid, sleeper.pid).items():
            codes = []
            for command in (["status"], ["pid"], ["signal", "--", "CONT"], ["stop"]):
                path.write_bytes(data)
                args = (
                    [command[0], path, *command[1:]] if command[0] == "signal" else [*command, path]
                )
                codes.append(cli(*[a for a in args if a != "--"]).returncode)
            assert tuple(codes) == EXIT_CODES[situation], situation
            assert sleeper.poll() is None
        path.unlink(missing_ok=True)
        assert (
            tuple(
                cli(c, path, *(["CONT"] if c == "signal" else [])).returncode
                for c in ("status", "pid", "signal", "stop")
            )
            == EXIT_CODES["no pid file"]
        )
        os.mkfifo(path)
        assert (
            tuple(
                cli(c, path, *(["CONT"] if c == "signal" else [])).returncode
                for c in ("status", "pid", "signal", "stop")
            )
            == EXIT_CODES["not a regular file"]
        )
        path.unlink()
        impl.PidFileWriter.at(path).write_for(sleeper.pid)
        codes = [
            cli(c, path, *(["CONT"] if c == "signal" else [])).returncode
            for c in ("status", "pid", "signal", "stop")
        ]
        assert tuple(codes) == EXIT_CODES["verified"]
        assert sleeper.wait(10) == -signal.SIGTERM
    finally:
        stop(sleeper)


def test_inspect_tells_what_is_at_the_path_from_one_open(tmp_path, monkeypatch):
    """Anything but a regular file (never followed, never waited on) is no pid file, said
    from the open that found it: a file written in the instant after an open found nothing is
    not taken for one that is not regular."""
    import socket

    path = tmp_path / "app.pid"
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "sock"))
        os.mkfifo(tmp_path / "fifo")
        (tmp_path / "dir").mkdir()
        (tmp_path / "file").write_bytes(b"1\n")
        for kind in ("sock", "fifo", "dir", "file", "nowhere"):
            path.symlink_to(tmp_path / kind)
            with pytest.raises(shimpid.StorageError, match="not a regular file"):
                _operate.inspect(path)
            path.unlink()
            if kind in ("sock", "fifo", "dir"):
                os.rename(tmp_path / kind, path)
                with pytest.raises(shimpid.StorageError, match="not a regular file"):
                    _operate.inspect(path)
                os.rename(path, tmp_path / kind)
    regular = _rundir._regular

    def written_just_after(kept, shown=None):
        fd = regular(kept, shown)
        if fd is None:
            path.write_bytes(b"garbage\n")
        return fd

    monkeypatch.setattr(_rundir, "_regular", written_just_after)
    found = _operate.inspect(path)
    assert found.read is None and found.verdict == Absent()
    assert found.why_absent == "no pid file" and path.exists()


@pytest.mark.parametrize("kind", ["lockf", "ofd"])
def test_waiting_for_a_record_lock_does_not_spin(locking, tmp_path, kind):
    """flock() does not wait for a POSIX or OFD lock: acquire() with no timeout looks again, less
    and less often, rather than at once, for ever (a core's worth of CPU, and a temporary file
    each time)."""
    path = tmp_path / "app.pid"
    path.write_bytes(b"")
    holder = lock_holder(path, kind)
    lock = locking(path)
    threading = __import__("threading")
    timer = threading.Timer(1.0, stop, [holder])
    timer.start()
    started, cpu = time.monotonic(), time.process_time()
    try:
        lock.acquire()  # for as long as it takes: the holder goes after a second
        assert lock.i_am_locking()
    finally:
        timer.join()
        lock.release()
    waited, used = time.monotonic() - started, time.process_time() - cpu
    assert waited >= 0.9 and used < waited / 3, (waited, used)


def test_garbage_is_absent_everywhere(impl, cli, tmp_path):
    """ls, clean, status, show and scan agree: a file without a record is absent, and each
    says why in words (never "[Errno None]")."""
    for data in (b"", b"garbage\n", b"\xff\xfe", b"1\n" + b" " * 5000):
        path = tmp_path / "x.pid"
        path.write_bytes(data)
        assert [tuple(e) for e in shimpid.scan(tmp_path)] == [(str(path), Absent())]
        assert json.loads(cli("ls", "--json", tmp_path).stdout)["summary"]["absent"] == 1
        shown = json.loads(cli("show", "--json", path).stdout)
        assert shown["state"] == "absent" and "Errno" not in json.dumps(shown)
        status = cli("status", path)
        assert status.returncode == 1 and "Errno" not in status.stdout + status.stderr
        assert [r.action for r in shimpid.clean(tmp_path, dry_run=True)] == ["would remove"]
        assert [r.action for r in shimpid.clean(tmp_path)] == ["removed"]


# ---- output nobody can subvert ------------------------------------------------------------------

STRICT = {"LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict"}


def test_escapes_and_names_that_are_not_utf8(impl, cli, tmp_path, sleeper, reaped_pid):
    """A capability line with terminal escapes, and file names that are not UTF-8, are shown
    escaped under a strict UTF-8 locale: never interpreted, never a crash, even after acting."""
    env = dict(cli.env, **STRICT)
    live = tmp_path / "live.pid"
    live.write_bytes(
        impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode()
        + b"\x1b]0;pwned\x07\x1b[2J\n"
    )
    stale = os.path.join(os.fsencode(tmp_path), b"bad\xff\x1b[31m.pid")
    with open(stale, "wb") as f:
        f.write(impl.PidRecord(reaped_pid, 1).encode())
    for command in (["ls", tmp_path], ["show", live], ["status", live], ["ls", "--json", tmp_path]):
        done = cli(*command, env=env)
        assert done.returncode == 0, done
        assert "\x1b" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    shown = cli("ls", tmp_path, env=env).stdout
    assert "bad\\xff\\x1b[31m.pid" in shown and "\\x1b]0;pwned\\x07\\x1b[2J" in shown
    assert cli("show", live, env=env).stdout.count("capability:       \\x1b]0;pwned") == 1
    done = cli("stop", os.fsdecode(stale), env=env)
    assert done.returncode == 0 and "bad\\xff\\x1b[31m.pid" in done.stdout, done
    with open(stale, "wb") as f:
        f.write(impl.PidRecord(reaped_pid, 1).encode())
    done = cli("clean", tmp_path, env=env)
    assert done.returncode == 0 and done.stdout.startswith(
        f"removed {tmp_path}/bad\\xff\\x1b[31m.pid: "
    )
    assert os.listdir(tmp_path) == ["live.pid"]
    # an argument argparse rejects (a glob's second match) is escaped too
    done = cli("status", live, os.fsdecode(stale), env=env)
    assert done.returncode == 2 and "unrecognized arguments: " in done.stderr, done
    assert "\x1b" not in done.stderr and "bad\\xff\\x1b[31m.pid" in done.stderr, done
    done = cli("stop", "--timeout", "\x1b[31m", live, env=env)  # repr() escaped it: once only
    assert done.returncode == 2 and "seconds: '\\x1b[31m'\n" in done.stderr, done


def test_version_errors_on_stderr_and_dry_run(cli, tmp_path, reaped_pid):
    for flag in ("-V", "--version"):
        done = cli(flag)
        assert done.returncode == 0 and done.stdout.startswith("shimpid "), done
    done = cli("status", tmp_path / "nodir" / "x.pid")
    assert done.returncode == 3 and done.stderr == ""
    os.chmod(tmp_path, 0o700)
    (tmp_path / "x.pid").write_bytes(b"%d\n1\n" % reaped_pid)
    done = cli("clean", "--dry-run", tmp_path)
    assert done.stdout.startswith("would remove ") and (tmp_path / "x.pid").exists()
    (result,) = shimpid.clean(tmp_path, dry_run=True)
    assert (result.removed, result.action) == (False, "would remove")


# ---- paths of every type ------------------------------------------------------------------------


class BytesPath(bytes):
    pass


class TextPath(str):
    pass


class Fspath:
    def __init__(self, path):
        self.path = path

    def __fspath__(self):
        return self.path


def test_every_path_type_is_taken_alike(impl, tmp_path, sleeper, monkeypatch):
    for module in (_rundir, _operate):
        monkeypatch.setattr(module, "_backend", impl)
    path = tmp_path / "app.pid"
    impl.PidFileWriter.at(path).write_for(sleeper.pid)
    raw = os.fsencode(path)
    forms = [str(path), raw, BytesPath(raw), TextPath(str(path)), path, Fspath(raw)]
    for form in forms:
        assert shimpid.PidFileReader.at(form).process_identity() == Verified(sleeper.pid)
        assert _operate.inspect(form).verdict == Verified(sleeper.pid)
        directory = os.path.dirname(
            form if not isinstance(form, (Fspath, pathlib.Path)) else os.fspath(form)
        )
        directory = type(form)(directory) if isinstance(form, (BytesPath, TextPath)) else directory
        assert [tuple(e) for e in shimpid.scan(directory)] == [(str(path), Verified(sleeper.pid))]
        assert shimpid.clean(directory) == []
        lock = shimpid.PidFileLock(
            os.path.join(directory, b"l.pid" if isinstance(directory, bytes) else "l.pid")
        )
        with lock:
            assert lock.is_locked()


# ---- one read: scan's entries carry it ----------------------------------------------------------


def test_scan_entries_carry_their_read(impl, tmp_path, sleeper, monkeypatch):
    monkeypatch.setattr(_rundir, "_backend", impl)
    path = tmp_path / "app.pid"
    writer = impl.PidFileWriter.at(path, capability="services-mux-v1")
    writer.write_for(sleeper.pid)
    for locks in (False, True):
        (entry,) = shimpid.scan(tmp_path, locks=locks)
        writer.write(impl.PidRecord(1, 2))  # rewritten since: the entry keeps what it judged
        assert entry.verdict == Verified(sleeper.pid) and entry.record.pid == sleeper.pid
        assert entry.extras.capability == "services-mux-v1"
        with entry.open_process() as handle:
            assert handle.pid == sleeper.pid
            handle.send_signal(0)
        assert entry.locked is (False if locks else None)
        path, verdict = entry  # still the (path, verdict) pair
        assert (path, verdict) == (str(tmp_path / "app.pid"), Verified(sleeper.pid))
        writer.write_for(sleeper.pid)


# ---- the directory opened once ------------------------------------------------------------------


def test_clean_acts_through_the_directory_it_opened(impl, tmp_path, reaped_pid, monkeypatch):
    """DIR is renamed and replaced by a symlink to another directory while clean runs: what is
    removed is in the directory first opened, nothing in the other."""
    monkeypatch.setattr(_rundir, "_backend", impl)
    run, other = tmp_path / "run", tmp_path / "other"
    run.mkdir()
    other.mkdir()
    stale = impl.PidRecord(reaped_pid, 1).encode()
    for n in range(20):
        (run / f"{n:02d}.pid").write_bytes(stale)
        (other / f"{n:02d}.pid").write_bytes(stale)
    real = _rundir._open_regular
    swapped = []

    def open_then_swap(directory, name):
        if not swapped:
            os.rename(run, tmp_path / "run.real")
            os.symlink(other, run)
            swapped.append(name)
        return real(directory, name)

    monkeypatch.setattr(_rundir, "_open_regular", open_then_swap)
    removed = shimpid.clean(run, secure=False)
    assert swapped and len(removed) == 20
    assert os.listdir(tmp_path / "run.real") == [] and len(os.listdir(other)) == 20


def test_a_record_is_taken_for_a_pids_only_when_it_names_it(tmp_path):
    """record_of (spawn's and the CLI's read-back, for removing later): the read only of a
    record of that pid; another's, garbage, a file too large or none gives None; a failed
    read is raised. What remove_at then removes is that very read."""
    path = tmp_path / "app.pid"
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _rundir.record_of(directory, b"app.pid", 1234) is None
        for data in (b"1235\n7\n", b"garbage\n", b"1234\n7\n" + b" " * 4096, b""):
            path.write_bytes(data)
            assert _rundir.record_of(directory, b"app.pid", 1234) is None, data
        path.write_bytes(b"1234\n7\n")
        read = _rundir.record_of(directory, b"app.pid", 1234)
        assert read is not None and read.data == b"1234\n7\n"
        assert _rundir.remove_at(directory, b"app.pid", read) == (True, None)
        assert not path.exists()
        os.mkfifo(path)  # never waited on
        assert _rundir.record_of(directory, b"app.pid", 1234) is None
    finally:
        os.close(directory)
    os.unlink(path)
    with pytest.raises(OSError):  # (EBADF; PyPy gives no errno for -1)
        _rundir.record_of(-1, b"app.pid", 1234)


READ_ONLY_CLEAN = """
directory = sys.argv[1]
with open(os.path.join(directory, "stale.pid"), "wb") as f:
    f.write(impl.PidRecord(int(sys.argv[2]), 1).encode())
subprocess.run(["mount", "--bind", directory, directory], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", directory, directory], check=True)
passes = [[(r.action, r.why) for r in shimpid.clean(directory, secure=False)] for _ in range(2)]
print(json.dumps([passes, os.listdir(directory)]))
"""


def test_clean_that_cannot_set_a_file_aside_says_why(impl, tmp_path, reaped_pid):
    """A read-only mount (in a mount namespace of the test's own), as EACCES: the file is kept
    and the system's answer given, not "gone while set aside"; the next pass says the same."""
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if shutil.which("unshare") is None or subprocess.run([*namespace, "true"]).returncode:
        require_or_skip("cannot make a mount namespace here (unshare)")
    ran = subprocess.run(
        [
            *namespace,
            sys.executable,
            "-c",
            script_prelude(impl) + READ_ONLY_CLEAN,
            str(tmp_path),
            str(reaped_pid),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    passes, left = json.loads(ran.stdout)
    assert left == ["stale.pid"]
    for outcome in passes:
        assert len(outcome) == 1 and outcome[0][0] == "kept", passes
        assert outcome[0][1] == "kept: cannot remove it: Read-only file system", passes


def test_the_walk_names_the_path_it_reached_when_the_system_refuses(shared_dir):
    """An error on a component (EACCES) names the path up to it, as open() names its path,
    never the bare component (b"sub", b".")."""
    if os.geteuid() != 0:
        require_or_skip("needs root, to act as another user")
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    closed = os.path.join(shared_dir, "closed")
    os.mkdir(closed, 0o700)  # root's: nobody may not look inside
    os.mkdir(os.path.join(closed, "sub"))

    def child(out):
        os.setgid(nobody)
        os.setuid(nobody)
        for secure in (True, False):
            try:
                os.close(_rundir.open_directory(os.path.join(closed, "sub"), secure=secure))
            except PermissionError as err:
                os.write(out, b"%r\n" % os.fsdecode(err.filename))

    code, said = run_in_child(child)
    assert code == 0, said
    named = said.decode().splitlines()  # (where there is no O_PATH, as on PyPy, "closed")
    sub = os.path.join(closed, "sub")
    assert len(named) == 2 and set(named) <= {repr(closed), repr(sub)}, named


def test_the_walk_follows_trusted_links_and_refuses_others(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the trust rules as root")
    os.chmod(tmp_path, 0o755)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "loop").symlink_to("loop")
    fd = _rundir.open_directory(tmp_path / "link" / ".." / "link", secure=True)
    try:
        assert os.fstat(fd).st_ino == os.stat(tmp_path / "real").st_ino
    finally:
        os.close(fd)
    with pytest.raises(OSError) as raised:
        _rundir.open_directory(tmp_path / "loop", secure=True)
    assert raised.value.errno == 40  # ELOOP
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        _rundir.open_directory(tmp_path / "file", secure=True)
    os.chmod(tmp_path / "real", 0o777)  # writable by all, not sticky
    (tmp_path / "real" / "svc").mkdir()
    with pytest.raises(_rundir.UntrustedPath, match="real/svc: it is in a directory that other"):
        _rundir.open_directory(tmp_path / "link" / "svc", secure=True)
    os.chmod(tmp_path / "real", 0o1777)  # sticky: only an entry's owner may replace it
    os.close(_rundir.open_directory(tmp_path / "link" / "svc", secure=True))
    os.lchown(tmp_path / "link", 65534, 65534)
    with pytest.raises(_rundir.UntrustedPath, match="link: a symlink owned by uid 65534"):
        _rundir.open_directory(tmp_path / "link" / "svc", secure=True)


def test_the_walk_holds_two_descriptors_whatever_the_depth(tmp_path):
    """Each step's directory is closed once the walk has gone past it: a path of 200 components
    (and a symlink back to the root on the way) opens in a process allowed 32 descriptors. (Not
    deeper: pytest's clean-up of tmp_path recurses as deep.)"""
    deep = os.fsencode(tmp_path)
    for _ in range(200):
        deep = os.path.join(deep, b"d")
        os.mkdir(deep)
    os.symlink(os.fsencode(tmp_path), os.path.join(deep, b"back"))  # absolute: a jump to /

    def child(out):
        import resource

        resource.setrlimit(
            resource.RLIMIT_NOFILE, (32, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )
        before = len(os.listdir("/proc/self/fd"))
        for secure, create in ((True, False), (False, True)):
            fd = _rundir.open_directory(
                os.path.join(deep, b"back", b"d"), secure=secure, create=create
            )
            os.write(
                out, b"%d\n" % (os.fstat(fd).st_ino == os.stat(os.path.join(tmp_path, "d")).st_ino)
            )
            os.close(fd)
        os.write(out, b"%d\n" % (len(os.listdir("/proc/self/fd")) - before))

    code, said = run_in_child(child)
    assert code == 0, said
    assert said.split() == [b"1", b"1", b"0"], "reached, twice, and nothing left open"


def test_a_lock_as_root_refuses_a_path_another_user_could_steer(tmp_path, cli):
    if os.geteuid() != 0:
        pytest.skip("the trust rules as root")
    os.chmod(tmp_path, 0o755)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone may replace what is in it
    (shared / "run").mkdir()
    with pytest.raises(_rundir.UntrustedPath, match="shared/run: it is in a directory"):
        shimpid.PidFileLock(shared / "run" / "app.pid")
    with shimpid.PidFileLock(shared / "run" / "app.pid", secure=False) as lock:
        assert lock.is_locked()
    done = cli("lock", shared / "run" / "app.pid", "--", "true")
    assert done.returncode == 4 and "--insecure" in done.stderr
    assert cli("lock", "--insecure", shared / "run" / "app.pid", "--", "true").returncode == 0


# ---- found by a hostile review ---------------------------------------------------------------


def test_clean_that_cannot_take_its_turn_keeps_and_says_so(
    impl, cli, tmp_path, reaped_pid, monkeypatch
):
    """Anyone who can open the directory can hold its lock: clean then keeps the stale files,
    says so (exit 1), and waits once, not once per file."""
    monkeypatch.setattr(_rundir, "TURN_LIMIT", 0.2)
    for n in range(4):
        (tmp_path / f"{n}.pid").write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        start = time.monotonic()
        done = cli("clean", tmp_path)
        assert time.monotonic() - start < 1.0
        assert done.returncode == 1 and done.stdout.count("kept ") == 4, done
        assert "another process keeps this directory's lock" in done.stdout
        assert len(os.listdir(tmp_path)) == 4
    finally:
        stop(holder)
    assert [r.action for r in shimpid.clean(tmp_path)] == ["removed"] * 4


def test_a_dead_removers_aside_files_are_judged_by_what_they_hold(
    impl, tmp_path, sleeper, reaped_pid, monkeypatch
):
    """A remover killed while a file was aside: a live record is put back at its name, a stale
    one removed; a file just moved aside (new ctime, old mtime) is left to its remover."""
    monkeypatch.setattr(_rundir, "_backend", impl)
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode()
    stale = impl.PidRecord(reaped_pid, 1).encode()
    prefix = _rundir.ASIDE_PREFIX
    (tmp_path / f"{prefix}{reaped_pid}.0.app.pid").write_bytes(live)
    (tmp_path / f"{prefix}{reaped_pid}.1.old.pid").write_bytes(stale)
    (tmp_path / f"{prefix}{reaped_pid}.2.taken.pid").write_bytes(live)
    (tmp_path / "taken.pid").write_bytes(live)  # a newer record at the name
    for name in os.listdir(tmp_path):
        os.utime(tmp_path / name, (0, 0))  # an old mtime; the ctime stays new
    assert shimpid.clean(tmp_path) == [], "just moved: its remover may be at work"
    monkeypatch.setattr(_rundir, "STALE_AFTER", 0.0)
    results = {os.path.basename(r.path): (r.action, r.why) for r in shimpid.clean(tmp_path)}
    assert results[f"{prefix}{reaped_pid}.0.app.pid"][1].startswith("put back as app.pid")
    assert results[f"{prefix}{reaped_pid}.1.old.pid"][0] == "removed"
    assert results[f"{prefix}{reaped_pid}.2.taken.pid"] == (
        "kept",
        f"kept: a live record left aside by remover {reaped_pid}; taken.pid is taken",
    )
    assert (tmp_path / "app.pid").read_bytes() == live


def test_aside_files_are_cleaned_by_the_pattern_of_their_name(impl, tmp_path, sleeper, monkeypatch):
    """An aside file belongs to the name it had: a clean with another pattern leaves it; one
    whose name part names no file ("." or "..": planted, never made by a removal) is not put
    back there."""
    monkeypatch.setattr(_rundir, "_backend", impl)
    monkeypatch.setattr(_rundir, "STALE_AFTER", 0.0)
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode()
    prefix = _rundir.ASIDE_PREFIX
    for name in ("box.pid", ".", ".."):
        (tmp_path / f"{prefix}99999.1.{name}").write_bytes(live)
    results = {os.path.basename(r.path): r.why for r in shimpid.clean(tmp_path, pattern="*.x")}
    assert f"{prefix}99999.1.box.pid" not in results, "not of the pattern: left alone"
    for name in (".", ".."):
        assert results[f"{prefix}99999.1.{name}"] == (
            "kept: a live record left aside by remover 99999, its name unknown"
        )
    results = {os.path.basename(r.path): r.why for r in shimpid.clean(tmp_path)}
    assert results[f"{prefix}99999.1.box.pid"].startswith("put back as box.pid")


OPENER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_PATH)  # looked up now, before the file is moved
print("ready", flush=True)
sys.stdin.readline()  # the remover holds its lease now
target = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_TRUNC)  # waits for the lease
if len(sys.argv) > 3:  # and another writer puts a newer file at the name meanwhile
    newer = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    os.write(newer, sys.argv[3].encode())
    os.close(newer)
os.write(target, sys.argv[2].encode())
os.close(target)
print("wrote", flush=True)
"""


@pytest.mark.skipif(
    not hasattr(os, "O_PATH") or not hasattr(fcntl, "F_SETLEASE"),
    reason="no O_PATH or no leases here (PyPy): the grace period stands in for the lease",
)
def test_a_writer_that_opens_during_the_lease_is_never_lost(
    impl, tmp_path, reaped_pid, sleeper, monkeypatch
):
    """A writer that looked the name up before the file was moved, and opens it while the
    remover holds its lease, waits for the lease; the remover sees the break and puts the file
    back, with what the writer wrote."""
    monkeypatch.setattr(_rundir, "_backend", impl)
    path = tmp_path / "app.pid"
    path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode().decode()
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(path), live],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    real = _rundir._lease

    def lease_then_opened(fd):
        leased = real(fd)
        if leased:
            opener.stdin.write("go\n")
            opener.stdin.flush()
            time.sleep(0.2)  # it is in open(), waiting for the lease
        elif leased is False:
            opener.kill()  # no leases here: it would wait for "go" for ever (the test fails)
        return leased

    try:
        assert opener.stdout.readline() == "ready\n"
        monkeypatch.setattr(_rundir, "_lease", lease_then_opened)
        shimpid.clean(tmp_path)
        assert opener.stdout.readline() == "wrote\n"
        assert opener.wait(10) == 0
    finally:
        stop(opener)
    assert path.read_text() == live
    assert shimpid.PidFileReader.at(path).process_identity() == Verified(sleeper.pid)


def planted_names(template: str, count: int) -> list[str]:
    """The next ``count`` names this process would make from template (``{pid}``, ``{n}``):
    where a killed remover or writer with our pid (another pid namespace's) left files."""
    after = _common.unique_number()
    return [template.format(pid=os.getpid(), n=after + k) for k in range(1, count + 1)]


def _no_hard_links(*args, **kwargs):
    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))  # as vfat, some FUSE


def _fails(code: int):
    def failing(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return failing


# What each case of the test below changes, and what clean() then says after "written again as
# it was removed" (and whether the record is at its name, with its mode and owner)
REBORN = {
    "names taken": (": put back", True),
    "no hard links": (": put back", True),
    "no renameat2": (": put back", True),  # a look, then rename(): where nothing else can
    "owner refused": ("; not put back: its owner (uid {uid}) cannot be given back to it", False),
    "every name taken": ("; putting it back failed: " + _rundir.ASIDE_NAMES_TAKEN, False),
    "no space": ("; putting it back failed: " + os.strerror(errno.ENOSPC), False),
    "no way back": ("; putting it back failed, left as {left} for clean(): {eio}", False),
    "newer": ("; a newer file is at its name", False),
}


@pytest.mark.skipif(
    not hasattr(os, "O_PATH") or not hasattr(fcntl, "F_SETLEASE"),
    reason="no O_PATH or no leases here (PyPy): the grace period stands in for the lease",
)
@pytest.mark.parametrize("case", [*REBORN, "second look fails"])
def test_a_record_written_into_the_removed_file_is_put_back(
    backend, tmp_path, reaped_pid, sleeper, monkeypatch, case
):
    """A writer that looked the name up before the file went aside opens it as the remover
    unlinks it (between its two looks at the lease): the remover lets it write, then puts what
    it wrote back at the name, never over a newer file, with the file's mode and owner, through
    a file under an aside name (a killed remover's is put back by the next clean): past names a
    remover with our pid left (they stay as they were), by a rename that never replaces where
    there are no hard links. Where the owner cannot be given back, it is not put back (as the
    remover's, another user's record would be trusted); where it cannot be written, it is lost;
    where it is written but cannot go back, it stays aside for a later clean(). Each is said
    (exit 1), never raised. The remover is one code: tested once."""
    impl = backend
    path = tmp_path / "app.pid"
    path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    os.chmod(path, 0o664)
    owner = (65534, 65534) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    os.chown(path, *owner)
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode().decode()
    newer = impl.PidRecord(os.getpid(), impl.process_start_time(os.getpid())).encode().decode()
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(path), live, *([newer] if case == "newer" else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    real, looks, planted = _rundir._lease_broken, [], []
    taken = {"names taken": 3, "every name taken": _common.TEMP_ATTEMPTS}.get(case, 0)

    def broken_after_the_first_look(fd):
        if looks and case == "second look fails":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        broken = real(fd)
        looks.append(broken)
        if len(looks) == 1:  # the look before the unlink: the writer opens right after it
            planted.extend(planted_names(_rundir.ASIDE_PREFIX + "{pid}.{n}.app.pid", taken))
            for name in planted:
                (tmp_path / name).write_bytes(b"a killed remover's\n")
            opener.stdin.write("go\n")
            opener.stdin.flush()
            time.sleep(0.2)  # it is in open(), waiting for the lease
        return broken

    def half_then_no_space(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_rundir, "_lease_broken", broken_after_the_first_look)
    if case in ("no hard links", "no renameat2", "no way back"):
        monkeypatch.setattr(os, "link", _no_hard_links)
    if case == "no renameat2":  # not Linux, an old C library, NFS
        monkeypatch.setattr(_rundir, "_rename_noreplace", lambda *args: None)
    if case == "no way back":  # the way back fails (the move aside, by the same call, does not)
        rename_noreplace = _rundir._rename_noreplace

        def back_fails(directory, old, new):
            if old.startswith(_rundir.ASIDE_PREFIX.encode()):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return rename_noreplace(directory, old, new)

        monkeypatch.setattr(_rundir, "_rename_noreplace", back_fails)
    if case == "owner refused":  # an id this user namespace does not map, as in a container
        monkeypatch.setattr(os, "fchown", _fails(errno.EINVAL))
    if case == "no space":
        monkeypatch.setattr(_common, "write_all", half_then_no_space)
    try:
        assert opener.stdout.readline() == "ready\n"
        results = [(r.path, r.why) for r in shimpid.clean(tmp_path)]
        if case != "second look fails":
            assert opener.stdout.readline() == "wrote\n"
            assert opener.wait(10) == 0
    finally:
        stop(opener)
    for name in planted:
        assert (tmp_path / name).read_bytes() == b"a killed remover's\n"
    left = sorted(set(os.listdir(tmp_path)) - set(planted) - {"app.pid"})
    if case == "second look fails":
        assert results == [
            (
                str(path),
                "kept: removed; whether it was written as it went cannot be told: "
                f"[Errno {errno.EIO}] {os.strerror(errno.EIO)}",
            )
        ]
        assert os.listdir(tmp_path) == []
        return
    assert looks == [False, True], "the write did not land between the two looks"
    if case == "owner refused" and os.geteuid() != 0:
        pytest.skip("only root gives a file away: nothing to refuse")
    said, back = REBORN[case]
    said = said.format(uid=owner[0], left=left[0] if left else None, eio=os.strerror(errno.EIO))
    assert results == [(str(path), "kept: written again as it was removed" + said)]
    if case == "no way back":  # whole, under its aside name, for a clean() once we have gone
        assert len(left) == 1 and left[0].startswith(f"{_rundir.ASIDE_PREFIX}{os.getpid()}.")
        assert (tmp_path / left[0]).read_text() == live
    else:
        assert left == []
    if back:
        assert path.read_text() == live
        info = path.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o664, *owner)
    elif case == "newer":
        assert path.read_text() == newer
    else:
        assert not path.exists()


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "look, then rename"])
def test_a_file_set_aside_never_replaces_one_left_aside_under_the_same_name(
    backend, tmp_path, reaped_pid, sleeper, monkeypatch, renameat2
):
    """Setting a file aside is a rename, which replaces what is at the new name: a name a
    remover with our pid (another pid namespace's, or before a reboot) left a live record
    under, for clean() to put back. Names that are taken are passed over. Tested once."""
    impl = backend
    if not renameat2:  # not Linux, an old C library, NFS: under the directory's turn
        monkeypatch.setattr(_rundir, "_rename_noreplace", lambda *args: None)
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode()
    (tmp_path / "app.pid").write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    planted = planted_names(_rundir.ASIDE_PREFIX + "{pid}.{n}.app.pid", 3)
    for name in planted:
        (tmp_path / name).write_bytes(live)
    removals = shimpid.clean(tmp_path)
    assert [(r.path, r.action) for r in removals] == [(str(tmp_path / "app.pid"), "removed")]
    assert sorted(os.listdir(tmp_path)) == sorted(planted)
    for name in planted:
        assert (tmp_path / name).read_bytes() == live


@pytest.mark.parametrize("links", [True, False], ids=["links", "no hard links"])
def test_a_dead_removers_record_goes_back_by_rename_never_over_another(
    backend, tmp_path, reaped_pid, sleeper, monkeypatch, links
):
    """A live record a dead remover left aside goes back at its name by link(), or by a rename
    that refuses to replace where no hard link can be made (vfat; another user's file under
    fs.protected_hardlinks); never over a newer file. One a remover killed between the link and
    the unlink left (the same file at both names) is back already: its aside name goes."""
    impl = backend
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode()
    newer = impl.PidRecord(os.getpid(), impl.process_start_time(os.getpid())).encode()
    prefix = f"{_rundir.ASIDE_PREFIX}{reaped_pid}"
    (tmp_path / f"{prefix}.0.app.pid").write_bytes(live)
    (tmp_path / f"{prefix}.1.taken.pid").write_bytes(live)
    (tmp_path / "taken.pid").write_bytes(newer)
    (tmp_path / "linked.pid").write_bytes(live)
    os.link(tmp_path / "linked.pid", tmp_path / f"{prefix}.2.linked.pid")
    monkeypatch.setattr(_rundir, "STALE_AFTER", 0.0)
    if not links:
        monkeypatch.setattr(os, "link", _no_hard_links)
    results = {os.path.basename(r.path): r.why for r in shimpid.clean(tmp_path)}
    by = f"a live record left aside by remover {reaped_pid}"
    assert results == {
        f"{prefix}.0.app.pid": f"put back as app.pid: {by}",
        f"{prefix}.1.taken.pid": f"kept: {by}; taken.pid is taken",
        f"{prefix}.2.linked.pid": f"put back as linked.pid: {by}",
    }
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["app.pid", "linked.pid", "taken.pid", f"{prefix}.1.taken.pid"]
    )
    assert (tmp_path / "app.pid").read_bytes() == live
    assert (tmp_path / "taken.pid").read_bytes() == newer


@pytest.mark.parametrize("newer", [False, True], ids=["free", "newer at the name"])
def test_a_file_written_while_aside_goes_back_by_rename_never_over_another(
    backend, tmp_path, reaped_pid, sleeper, monkeypatch, newer
):
    """A file written again while it was aside goes back at its name: by a rename that refuses
    to replace where no hard link can be made, never over a newer file put at the name
    meanwhile (the older one set aside then goes)."""
    impl = backend
    path = tmp_path / "app.pid"
    path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    live = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode()
    latest = impl.PidRecord(os.getpid(), impl.process_start_time(os.getpid())).encode()
    real, calls = _rundir._lease, []

    def written_meanwhile(fd):
        if not calls:  # as the remover comes to judge it: written again, aside
            (aside,) = [n for n in os.listdir(tmp_path) if n.startswith(_rundir.ASIDE_PREFIX)]
            (tmp_path / aside).write_bytes(live)
            if newer:
                path.write_bytes(latest)
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(_rundir, "_lease", written_meanwhile)
    monkeypatch.setattr(os, "link", _no_hard_links)
    results = [(r.path, r.why) for r in shimpid.clean(tmp_path)]
    assert results == [(str(path), f"kept: {_rundir.CHANGED}")]
    assert os.listdir(tmp_path) == ["app.pid"]
    assert path.read_bytes() == (latest if newer else live)


def test_a_rename_that_never_replaces(backend, tmp_path):
    """_put_back's rename where no hard link can be made: renameat2(RENAME_NOREPLACE), which
    refuses a name that is taken (a look, then rename(), could replace a file put there in
    between). Linux with glibc 2.28 or later has it."""
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        renamed = _rundir._rename_noreplace(directory, b"a", b"b")
        if renamed is None:
            why = "no renameat2(RENAME_NOREPLACE) here: files go back by a look, then rename()"
            if sys.platform.startswith("linux"):
                require_or_skip(why)
            pytest.skip(why)
        assert renamed is False
        assert _rundir._rename_noreplace(directory, b"a", b"c") is True
        with pytest.raises(FileNotFoundError):
            _rundir._rename_noreplace(directory, b"a", b"d")
    finally:
        os.close(directory)
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == {
        "b": b"b",
        "c": b"a",
    }


def test_a_file_goes_back_where_the_file_at_its_name_went_between_two_looks(tmp_path, monkeypatch):
    """link() finds the name taken, and the file there goes before it is looked at: the link is
    tried again (not taken for a newer file, nor for nothing aside)."""
    (tmp_path / "aside").write_bytes(b"old")
    (tmp_path / "name").write_bytes(b"newer")
    real, calls = os.link, []

    def link_as_it_goes(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            os.unlink(tmp_path / "name")  # removed by its writer as the link failed on it
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "link", link_as_it_goes)
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _rundir._put_back(directory, b"aside", b"name") == _rundir._LINKED
    finally:
        os.close(directory)
    assert len(calls) == 2 and (tmp_path / "name").read_bytes() == b"old"


def test_a_rename_that_never_replaces_tells_each_answer(monkeypatch):
    """renameat2's answers: done; EINTR, tried again; EEXIST, the name is taken; ENOSYS and
    EINVAL (an old kernel, a filesystem without the flag), no such rename; anything else raised.
    (A stand-in for libc's function: EINTR cannot be had at will.)"""
    import ctypes

    answers: list[int] = []

    def renameat2(*args):
        code = answers.pop(0)
        ctypes.set_errno(code)
        return -1 if code else 0

    monkeypatch.setattr(_rundir, "_renameat2", (renameat2, ctypes.get_errno))
    for given, expected in [
        ([errno.EINTR, errno.EINTR, 0], True),
        ([errno.EEXIST], False),
        ([errno.ENOSYS], None),
        ([errno.EINTR, errno.EINVAL], None),
    ]:
        answers[:] = given
        assert _rundir._rename_noreplace(3, b"a", b"b") is expected
        assert answers == []
    answers[:] = [errno.EACCES]
    with pytest.raises(PermissionError):
        _rundir._rename_noreplace(3, b"a", b"b")


FIRST_CALLERS = """
import json, os, sys, threading
from shimpid import _rundir

assert "ctypes" not in sys.modules  # its import is the slow part of the first look
directory = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
results, start = {}, threading.Barrier(8)


def rename(n):
    start.wait()
    results[n] = _rundir._rename_noreplace(directory, b"a%d" % n, b"b%d" % n)


threads = [threading.Thread(target=rename, args=(n,)) for n in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps([results[n] for n in range(8)]))
"""


def test_renameat2_is_there_for_every_first_caller_and_none_without_ctypes(tmp_path, monkeypatch):
    """Threads of a new process that ask first, together, each rename (none is told there is
    no such rename while another looks it up); without ctypes there is none (not an
    ImportError)."""
    for n in range(8):
        (tmp_path / f"a{n}").write_bytes(b"")
    ran = subprocess.run(
        [sys.executable, "-c", FIRST_CALLERS, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    results = json.loads(ran.stdout)
    if results == [None] * 8:
        why = "no renameat2(RENAME_NOREPLACE) here"
        if sys.platform.startswith("linux"):
            require_or_skip(why)
        pytest.skip(why)
    assert results == [True] * 8
    monkeypatch.setattr(_rundir, "_renameat2", None)
    monkeypatch.setitem(sys.modules, "ctypes", None)
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _rundir._rename_noreplace(directory, b"b0", b"c0") is None
    finally:
        os.close(directory)
    assert sorted(os.listdir(tmp_path)) == [f"b{n}" for n in range(8)]


def test_pid_needs_no_permission_to_signal(impl, shared_dir, sleeper, monkeypatch):
    """`shimpid pid` of another user's verified daemon prints its pid (it signals nothing);
    `signal` says it is not permitted."""
    if os.geteuid() != 0:
        pytest.skip("needs root to be somebody else")
    from _helpers import run_in_child
    from shimpid import _cli

    path = os.path.join(shared_dir, "daemon.pid")
    impl.PidFileWriter.at(path).write_for(sleeper.pid)
    for module in (_cli, _rundir, _operate):
        monkeypatch.setattr(module, "_backend", impl)

    def child(out):
        import contextlib
        import io

        os.setuid(65534)
        said = io.StringIO()
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            codes = [_cli.main(["pid", path]), _cli.main(["signal", path, "HUP"])]
        os.write(out, json.dumps([codes, said.getvalue()]).encode())

    code, said = run_in_child(child)
    assert code == 0, said
    codes, text = json.loads(said)
    assert codes == [0, 4] and text.startswith(f"{sleeper.pid}\n"), text
    assert "signal: not permitted: Operation not permitted" in text
    assert sleeper.poll() is None


def test_a_path_like_is_asked_once(impl, tmp_path, sleeper, monkeypatch):
    for module in (_rundir, _operate):
        monkeypatch.setattr(module, "_backend", impl)
    impl.PidFileWriter.at(tmp_path / "app.pid").write_for(sleeper.pid)
    calls = []

    class Counted:
        def __init__(self, path):
            self.path = path

        def __fspath__(self):
            calls.append(self.path)
            return self.path

    list(shimpid.scan(Counted(str(tmp_path))))
    shimpid.clean(Counted(str(tmp_path)))
    _operate.inspect(Counted(str(tmp_path / "app.pid")))
    assert len(calls) == 3


def test_stop_says_when_it_keeps_a_stale_file(impl, cli, tmp_path, reaped_pid):
    path = tmp_path / "app.pid"
    path.write_bytes(impl.PidRecord(reaped_pid, 1).encode())
    child = lock_holder(path, "lockf")
    try:
        code, out, _ = cli("stop", path)
    finally:
        stop(child)
    assert code == 0 and out.endswith(
        f"; kept {path}: still locked by a process the file does not name\n"
    ), out


def test_signals_and_timeouts_are_checked_before_anything_is_done(tmp_path, reaped_pid):
    """As ProcessHandle and the CLI take them: a signal is an integer (never "9" or 9.99), a
    timeout a number >= 0 (NaN or -1 would send SIGKILL at once, and NaN not wait after it).
    Refused before the file is looked at: the stale file stays."""
    path = tmp_path / "app.pid"
    path.write_bytes(shimpid.PidRecord(reaped_pid, 1).encode())
    for sig in ("9", 9.99, None):
        with pytest.raises(TypeError):
            shimpid.send_signal(path, sig, secure=False)
        with pytest.raises(TypeError):
            shimpid.stop(path, sig=sig, secure=False)
    for timeout in (float("nan"), -1, -0.5):
        with pytest.raises(ValueError, match="timeout must be >= 0"):
            shimpid.stop(path, timeout=timeout, secure=False)
    assert path.exists()
    assert shimpid.stop(path, sig=signal.SIGTERM, timeout=0, secure=False).removed


def test_what_ls_decodes_in_c_is_the_rules_answer(impl, tmp_path, sleeper, monkeypatch):
    """The scan for ls hands back the record and Extras it decoded: the same as decode() and
    parse_extras() of the same bytes, for every shape of file."""
    monkeypatch.setattr(_rundir, "_backend", impl)
    record = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid)).encode()
    boot = shimpid._common.CURRENT_BOOT_ID or "00000000-0000-4000-8000-000000000000"
    other = "00000000-0000-4000-8000-000000000001"
    shapes = [
        record,
        record + b"services-mux-v1\n",
        record + b"\nshimpid boot=%s pidfs=77\n" % boot.encode(),
        record + b"cap\nshimpid boot=%s\n" % other.encode(),
        record + b"%s\n" % boot.encode(),  # shimpid 0.1's line 3
        record + b" spaced cap \n\n",
        b"%d\n" % sleeper.pid,
        b"garbage\n",
    ]
    for n, data in enumerate(shapes):
        (tmp_path / f"{n}.pid").write_bytes(data)
    decoded = 0
    for path, _, data, _, record_read, extras, _ in _rundir.scan_reads(
        tmp_path, "*.pid", True, None
    ):
        decoded += extras is not None
        try:
            expected = impl.PidRecord.decode(data)
        except shimpid.StorageError:
            assert record_read is None, path
            continue
        if record_read is not None:
            assert record_read == expected, path
        if extras is not None:
            assert extras == shimpid._common.parse_extras(data), path
    assert decoded >= (6 if impl.BACKEND == "cython" else 0)


def test_ls_gives_the_collector_back_as_it_found_it(tmp_path):
    """ls turns the cyclic collector off while it lists (its objects hold no cycle), then on
    again only if it was on."""
    (tmp_path / "a.pid").write_bytes(b"1\n")
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                assert _cli.main(["ls", str(tmp_path)]) == 0
            assert "a.pid" in out.getvalue() and gc.isenabled() is enabled
        finally:
            gc.enable()


@pytest.mark.parametrize("kind", ["symlink", "socket"])
def test_what_lands_at_the_name_as_it_is_set_aside_is_put_back(tmp_path, monkeypatch, kind):
    """clean() judges a stale file, then renames what is at its name aside: another process's
    rename can land in between. What it moved is then no pid file (a symlink, a socket): it goes
    back to its name, never left under the aside name (which later cleans pass over)."""
    (tmp_path / "a.pid").write_bytes(b"99999\n5\n")  # stale: no such start time
    rename = _rundir._rename_without_replacing

    def racing(directory, old, new):
        monkeypatch.setattr(_rundir, "_rename_without_replacing", rename)
        landed = tmp_path / "landed"
        if kind == "symlink":
            landed.symlink_to("target")
        else:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(str(landed))
        landed.rename(tmp_path / "a.pid")  # the other process's rename, in the window
        return rename(directory, old, new)

    monkeypatch.setattr(_rundir, "_rename_without_replacing", racing)
    [removal] = shimpid.clean(tmp_path)
    assert not removal.removed
    assert os.listdir(tmp_path) == ["a.pid"], "put back, nothing left aside"
    landed = os.lstat(tmp_path / "a.pid").st_mode
    assert stat.S_ISLNK(landed) if kind == "symlink" else stat.S_ISSOCK(landed)
    assert shimpid.clean(tmp_path) == [], "and never touched"


def test_a_directory_made_at_an_aside_name_stops_nothing(tmp_path, monkeypatch, reaped_pid):
    """In a directory others may write to, the owner of a stale file clean() set aside can
    remove it from under its aside name, make a directory there, and a new file at the name:
    nothing can go back, nor be removed. That one is said and left; the pass goes on."""
    for name in ("evil.pid", "z1.pid", "z2.pid"):
        (tmp_path / name).write_bytes(b"%d\n1\n" % reaped_pid)
    settle = _rundir._Aside._settle_one

    def raced(self, aside):
        if aside.endswith(b"evil.pid"):  # the other user's doing, between the move and here
            os.unlink(aside, dir_fd=self.directory)
            os.mkdir(aside, dir_fd=self.directory)
            (tmp_path / "evil.pid").write_bytes(b"1\n")
        return settle(self, aside)

    monkeypatch.setattr(_rundir._Aside, "_settle_one", raced)
    removals = {os.path.basename(r.path): r for r in shimpid.clean(tmp_path)}
    assert removals["z1.pid"].removed and removals["z2.pid"].removed
    evil = removals["evil.pid"]
    assert not evil.removed and evil.why.startswith("kept: gone while set aside; left at .")
    assert evil.why.endswith(": Is a directory")
