"""open_process() and ProcessHandle, with pidfds and without; and reboot safety."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import threading
import time

import pytest

import shimpid
from _helpers import proc_state, require_pidfd_level, run_in_child, stop
from shimpid import Absent, Legacy, ProcessHandle, Verified, _common, _handle

OTHER_BOOT = b"0000abcd-1111-2222-3333-4444444444ef"
assert OTHER_BOOT.decode() != _common.CURRENT_BOOT_ID


LEVELS = {"pidfs": _common.PIDFS, "pidfd": _common.PIDFD, "no pidfd": _common.NO_PIDFD}


@pytest.fixture(params=list(LEVELS))
def pidfds(request, impl):
    """Every handle test runs with pidfs fingerprints, with pidfds only (Linux 5.3-6.8: start
    times), and without pidfds (a handle then re-checks before each signal)."""
    wanted = LEVELS[request.param]
    require_pidfd_level(impl, wanted, request.param)
    old = impl._set_pidfd_level(wanted)
    yield wanted != _common.NO_PIDFD
    impl._set_pidfd_level(old)


def record_child(impl, path, child):
    impl.PidFileWriter.at(path).write_for(child.pid)


def test_a_handle_signals_and_waits_for_the_recorded_process(impl, pidfds, pid_path, sleeper):
    record_child(impl, pid_path, sleeper)
    with shimpid.PidFileReader.at(pid_path).open_process() as handle:
        assert isinstance(handle, ProcessHandle)
        assert handle.pid == sleeper.pid and handle.identity == Verified(sleeper.pid)
        with pytest.raises(subprocess.TimeoutExpired):  # as Popen.wait
            handle.wait(0.05)
        assert handle.poll() is False
        assert handle.send_signal(signal.SIGTERM) is True
        assert handle.wait(10) is None
        assert proc_state(sleeper.pid) == "Z", "wait() does not reap"
        assert handle.send_signal(signal.SIGTERM) is False, "exited: a zombie takes nothing"
        assert sleeper.wait() == -signal.SIGTERM
        # gone: nothing is sent (never to a process that reuses its pid), and no error, as Popen
        assert handle.send_signal(signal.SIGKILL) is False
        assert handle.kill() is False and handle.terminate() is False
        assert handle.wait(0) is None and handle.poll() is True
    with pytest.raises(ValueError):
        handle.send_signal(0)


def test_a_wait_whose_pidfd_was_closed_behind_its_back_raises(impl, pid_path, sleeper):
    """The pidfd closed by its number (not close()): the wait fails with EBADF, never says
    "exited"."""
    require_pidfd_level(impl, _common.PIDFD, "pidfds (Linux 5.3+)")
    record_child(impl, pid_path, sleeper)
    handle = shimpid.PidFileReader.at(pid_path).open_process()
    os.close(handle.fileno())
    try:
        with pytest.raises(OSError) as caught:
            handle.wait(1)
        assert caught.value.errno == errno.EBADF
    finally:
        handle._closed = True  # (its pidfd is gone already: never closed again)
    assert proc_state(sleeper.pid) in "RS"


@pytest.fixture
def two_recorded(impl, tmp_path):
    """``two_recorded(seconds=60)``: two sleeping children (the first for ``seconds``), recorded
    in first.pid and second.pid of tmp_path; stopped after the test."""
    children = []

    def start(seconds: float = 60) -> tuple[subprocess.Popen, subprocess.Popen]:
        for name, length in (("first", seconds), ("second", 60)):
            children.append(subprocess.Popen(["sleep", str(length)]))
            record_child(impl, tmp_path / f"{name}.pid", children[-1])
        return children[0], children[1]

    yield start
    for child in children:
        stop(child)


def test_a_close_from_another_thread_never_redirects_a_signal(
    impl, tmp_path, monkeypatch, two_recorded
):
    """Thread B closes the handle, and opens another whose pidfd takes the same number, while
    thread A is between its check and pidfd_send_signal(): B's close() waits for A, so the
    signal reaches A's process, never B's."""
    require_pidfd_level(impl, _common.PIDFD, "pidfds (Linux 5.3+)")
    first, second = two_recorded()
    handle = shimpid.PidFileReader.at(tmp_path / "first.pid").open_process()
    other = []

    def close_and_reopen():
        handle.close()
        other.append(shimpid.PidFileReader.at(tmp_path / "second.pid").open_process())

    real = _handle._exited

    def exited_then_the_other_thread_runs(pidfd, seconds):
        thread = threading.Thread(target=close_and_reopen)
        thread.start()
        thread.join(0.3)  # B runs as far as it can
        threads.append(thread)
        return real(pidfd, seconds)

    threads = []
    monkeypatch.setattr(_handle, "_exited", exited_then_the_other_thread_runs)
    assert handle.send_signal(signal.SIGTERM) is True
    monkeypatch.undo()
    threads[0].join(10)
    assert first.wait(10) == -signal.SIGTERM
    assert second.poll() is None and other[0].pid == second.pid
    other[0].close()


def test_a_close_by_a_handler_of_the_same_thread_never_redirects_a_signal(
    impl, tmp_path, monkeypatch, two_recorded
):
    """The lock lets the thread's own signal handler in: one that closes the handle and opens
    another at the same number, as send_signal() checks for an exit, makes it raise ValueError
    (closed), and the other process gets nothing."""
    require_pidfd_level(impl, _common.PIDFD, "pidfds (Linux 5.3+)")
    first, second = two_recorded()
    handle = shimpid.PidFileReader.at(tmp_path / "first.pid").open_process()
    other = []
    real = _handle._exited

    def as_a_handler_would(pidfd, seconds):
        handle.close()
        other.append(shimpid.PidFileReader.at(tmp_path / "second.pid").open_process())
        return real(other[0].fileno(), seconds)

    monkeypatch.setattr(_handle, "_exited", as_a_handler_would)
    with pytest.raises(ValueError, match="closed"):
        handle.send_signal(signal.SIGTERM)
    monkeypatch.undo()
    assert other[0].fileno() == handle._kept[0]  # the number was the other's
    other[0].close()
    assert first.poll() is None and second.poll() is None


def test_a_child_forked_while_another_thread_uses_a_handle_can_use_it(impl, pid_path, sleeper):
    """Another thread holds the handle's lock as the main thread forks: the child's copy of the
    handle has a lock of its own (one held by a thread the child has not would never be let go)."""
    require_pidfd_level(impl, _common.PIDFD, "pidfds (Linux 5.3+)")
    record_child(impl, pid_path, sleeper)
    handle = shimpid.PidFileReader.at(pid_path).open_process()
    held, done = threading.Event(), threading.Event()

    def hold():
        with handle._lock:
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)

        def child(out):
            os.write(out, b"%d" % handle.poll())
            handle.close()

        assert run_in_child(child, timeout=10) == (0, b"0")
    finally:
        done.set()
        holder.join(10)
        handle.close()


def test_a_close_from_another_thread_lets_a_wait_go_on(impl, tmp_path, two_recorded):
    """A wait in progress watches its own copy of the pidfd: close() from another thread, and
    another handle taking the number, neither end it nor make it watch the other process."""
    require_pidfd_level(impl, _common.PIDFD, "pidfds (Linux 5.3+)")
    two_recorded(1)  # the first exits after 1 s
    handle = shimpid.PidFileReader.at(tmp_path / "first.pid").open_process()
    outcome = []

    def wait():
        start = time.monotonic()
        try:
            handle.wait(30)
            outcome.append(time.monotonic() - start)
        except BaseException as err:  # (any: said below)
            outcome.append(err)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    handle.close()
    with shimpid.PidFileReader.at(tmp_path / "second.pid").open_process():
        waiter.join(20)
    assert len(outcome) == 1 and isinstance(outcome[0], float) and outcome[0] < 10, outcome


def test_terminate_and_kill(impl, pidfds, pid_path):
    for method, code in (("terminate", -signal.SIGTERM), ("kill", -signal.SIGKILL)):
        child = subprocess.Popen(["sleep", "60"])
        record_child(impl, pid_path, child)
        with shimpid.PidFileReader.at(pid_path).open_process() as handle:
            assert getattr(handle, method)() is True
            handle.wait(10)
        assert child.wait() == code


def test_fileno_is_a_pidfd_or_unsupported(impl, pidfds, pid_path, sleeper):
    record_child(impl, pid_path, sleeper)
    handle = shimpid.PidFileReader.at(pid_path).open_process()
    if pidfds:
        fd = handle.fileno()
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        handle.close()
        with pytest.raises(OSError):
            os.fstat(fd)  # closed
    else:
        with pytest.raises(io.UnsupportedOperation):
            handle.fileno()
        handle.close()
    handle.close()  # twice is fine
    assert "closed" in repr(handle)


def test_wait_works_for_a_process_that_is_not_our_child(impl, pidfds, pid_path):
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
    try:
        grandchild = int(shell.stdout.readline())
        impl.PidFileWriter.at(pid_path).write_for(grandchild)
        with shimpid.PidFileReader.at(pid_path).open_process() as handle:
            assert handle.pid == grandchild
            assert handle.poll() is False
            handle.terminate()  # the shell's child, not ours: it reaps it
            started = time.monotonic()
            handle.wait(10)
            assert time.monotonic() - started < 10
    finally:
        stop(shell)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "garbage",
        "reaped",
        "zombie",
        "other start time",
        "pid 0",
        "pid 2**31",
        "pid 2**32-1",
        "legacy",
        "other boot",
        "other boot, line 4",
        "other pidfs inode",
    ],
)
def test_no_handle_unless_verified(impl, pidfds, pid_path, case, reaped_pid, zombie):
    own = impl.PidRecord.current()
    writer = impl.PidFileWriter.at(pid_path, identity_line=False)
    if case == "garbage":
        pid_path.write_bytes(b"garbage\n")
    elif case == "reaped":
        writer.write(impl.PidRecord(reaped_pid, 1))
    elif case == "zombie":
        writer.write_for(zombie.pid)
    elif case == "other start time":
        writer.write(impl.PidRecord(own.pid, own.start_time + 1))
    elif case.startswith("pid "):
        writer.write(impl.PidRecord(eval(case[4:]), own.start_time))
    elif case == "legacy":
        writer.write(impl.PidRecord(own.pid))
    elif case == "other boot":
        pid_path.write_bytes(own.encode() + OTHER_BOOT + b"\n")  # shimpid 0.1's line 3
    elif case == "other boot, line 4":
        pid_path.write_bytes(own.encode() + b"\nshimpid boot=" + OTHER_BOOT + b"\n")
    elif case == "other pidfs inode":
        # the right start time, but the pidfs inode of another process: with pidfs, the inode
        # decides; without, the start time does (and says Verified)
        pid_path.write_bytes(own.encode() + b"\nshimpid pidfs=1\n")
        if impl._pidfd_level() != _common.PIDFS:
            assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(own.pid)
            return
    assert shimpid.PidFileReader.at(pid_path).open_process() is None
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Absent() or case == "legacy"


def test_legacy_handles_only_when_asked(impl, pidfds, pid_path, sleeper):
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(sleeper.pid))
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.open_process() is None
    with reader.open_process(allow_legacy=True) as handle:
        assert handle.identity == Legacy(sleeper.pid)
        handle.send_signal(signal.SIGKILL)
        handle.wait(10)


def test_a_handle_holds_the_very_process_the_file_records(impl, pid_path, sleeper):
    """With pidfs the handle's pidfd is the one whose inode was compared with the record."""
    require_pidfd_level(impl, _common.PIDFS)
    record_child(impl, pid_path, sleeper)
    reader = shimpid.PidFileReader.at(pid_path)
    with reader.open_process() as handle:
        assert os.fstat(handle.fileno()).st_ino == reader.read_pidfs_id()


def test_handles_do_not_leak_descriptors(impl, pid_path, sleeper):
    record_child(impl, pid_path, sleeper)
    before = len(os.listdir("/proc/self/fd"))
    reader = shimpid.PidFileReader.at(pid_path)
    for _ in range(50):
        with reader.open_process():
            pass
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(sleeper.pid, 1))  # not verified
    for _ in range(50):
        assert reader.open_process() is None
    assert len(os.listdir("/proc/self/fd")) == before


# ---- reboot safety -------------------------------------------------------------------------------


def test_a_record_from_another_boot_is_absent(impl, pid_path):
    own = impl.PidRecord.current()
    reader = shimpid.PidFileReader.at(pid_path)
    pid_path.write_bytes(own.encode() + OTHER_BOOT + b"\n")
    assert reader.process_identity() == Absent()
    assert reader.read() == own, "the record itself still reads"
    assert reader.read_boot_id() == OTHER_BOOT.decode()
    pid_path.write_bytes(b"%d\n\n%s\n" % (own.pid, OTHER_BOOT))  # legacy, other boot
    assert reader.process_identity() == Absent()


def test_a_record_from_this_boot_is_judged_as_before(impl, pid_path):
    own = impl.PidRecord.current()
    reader = shimpid.PidFileReader.at(pid_path)
    impl.PidFileWriter.at(pid_path).write(own)
    assert reader.read_boot_id() == _common.CURRENT_BOOT_ID
    assert reader.process_identity() == Verified(own.pid)
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(own.pid))
    assert pid_path.read_bytes().count(b"\n") == 4
    assert reader.process_identity() == Legacy(own.pid)
    # shimpid 0.1 wrote the boot on line 3: still understood
    pid_path.write_bytes(own.encode() + _common.CURRENT_BOOT_ID.encode() + b"\n")
    assert reader.read_boot_id() == _common.CURRENT_BOOT_ID
    assert reader.process_identity() == Verified(own.pid)


@pytest.mark.parametrize(
    "line3",
    [
        b"services-mux-v1",  # what later boxlite versions put on line 3
        b"",
        b"garbage",
        OTHER_BOOT.upper(),
        OTHER_BOOT[:-1],
        OTHER_BOOT + b"0",
        OTHER_BOOT.replace(b"-", b"_"),
    ],
)
def test_a_third_line_that_is_not_a_boot_id_is_ignored(impl, pid_path, line3):
    own = impl.PidRecord.current()
    pid_path.write_bytes(own.encode() + line3 + b"\n")
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.read_boot_id() is None
    assert reader.process_identity() == Verified(own.pid)


def test_boot_line_whitespace_and_position(impl, pid_path):
    own = impl.PidRecord.current()
    reader = shimpid.PidFileReader.at(pid_path)
    pid_path.write_bytes(own.encode() + b" \t" + OTHER_BOOT + b"\r\n")
    assert reader.read_boot_id() == OTHER_BOOT.decode()
    assert reader.process_identity() == Absent()
    pid_path.write_bytes(own.encode() + b"\n" + OTHER_BOOT + b"\n")  # line 4: not the boot line
    assert reader.read_boot_id() is None
    assert reader.process_identity() == Verified(own.pid)


# ---- found by a review of the trust rule in open_process() ---------------------------------------


def test_a_readers_handle_is_on_the_file_it_was_made_for(impl, tmp_path, two_recorded, monkeypatch):
    """A reader made with a relative path reads the file it named then, whatever the working
    directory is when it opens a handle (as its read() and process_identity())."""
    first, second = two_recorded()
    for name, child in (("a", first), ("b", second)):
        (tmp_path / name).mkdir()
        (tmp_path / f"{'first' if child is first else 'second'}.pid").rename(
            tmp_path / name / "app.pid"
        )
    monkeypatch.chdir(tmp_path / "a")
    reader = shimpid.PidFileReader.at("app.pid")
    monkeypatch.chdir(tmp_path / "b")
    assert reader.process_identity() == Verified(first.pid)
    with reader.open_process() as handle:
        assert handle.pid == first.pid
    monkeypatch.chdir("/")
    with reader.open_process() as handle:
        assert handle.pid == first.pid


def test_a_scan_by_a_path_another_user_could_steer_trusts_none_of_its_files(
    impl, tmp_path, sleeper, other_user
):
    """scan(secure=False) goes where the path leads, but a file reached through a symlink another
    user owns (who could point it at any directory of this user's) is no instruction: the trust
    walk is made all the same, and its refusal is every entry's."""
    uid, _ = other_user
    os.chmod(tmp_path, 0o1777)
    (tmp_path / "real").mkdir()
    impl.PidFileWriter.at(tmp_path / "real" / "db.pid").write_for(sleeper.pid)
    (tmp_path / "run").symlink_to(tmp_path / "real")
    os.lchown(tmp_path / "run", uid, uid)
    with pytest.raises(shimpid.UntrustedPath):
        list(shimpid.scan(tmp_path / "run", secure=True))
    [entry] = shimpid.scan(tmp_path / "run", secure=False)
    assert entry.verdict == Verified(sleeper.pid)
    assert entry.untrusted.startswith(f"its path could be steered: {tmp_path / 'run'}: a symlink")
    with pytest.raises(shimpid.UntrustedPath):
        entry.open_process()
    [entry] = shimpid.scan(tmp_path / "real", secure=False)
    assert entry.untrusted is None
