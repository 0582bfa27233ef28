"""PidFileReader and the identity rules, against real files and real processes."""

from __future__ import annotations

import errno
import json
import os
import pwd
import subprocess
import sys
import textwrap

import pytest

import shimpid
from _helpers import run_in_child, script_prelude
from shimpid import (
    PID_RECORD_MAX_BYTES,
    Absent,
    Legacy,
    ProcessIdentity,
    StorageError,
    Verified,
    _common,
)

PID_MAX = 2**31 - 1


def identity_of(impl, path, record):
    path.write_bytes(record.encode())
    return shimpid.PidFileReader.at(path).process_identity()


# ---- read() --------------------------------------------------------------------------------------


def test_missing_file_is_a_storage_error_with_errno(impl, pid_path):
    with pytest.raises(StorageError) as info:
        shimpid.PidFileReader.at(pid_path).read()
    err = info.value
    assert err.errno == errno.ENOENT
    assert err.filename == os.fspath(pid_path)
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.ENOENT
    assert "No such file or directory" in str(err)


def test_garbage_is_a_storage_error_naming_the_file(impl, pid_path):
    pid_path.write_bytes(b"garbage\n")
    with pytest.raises(StorageError) as info:
        shimpid.PidFileReader.at(pid_path).read()
    err = info.value
    assert err.errno is None and err.filename == os.fspath(pid_path)
    assert (
        str(err)
        == f"PID file {str(pid_path)!r}: invalid PID 'garbage': invalid digit found in string"
    )
    assert isinstance(err.__cause__, StorageError)


def test_empty_file(impl, pid_path):
    pid_path.write_bytes(b"")
    with pytest.raises(StorageError, match="empty string"):
        shimpid.PidFileReader.at(pid_path).read()


def test_size_bound(impl, pid_path):
    pid_path.write_bytes(b"5\n6\n".ljust(4096, b" "))
    assert shimpid.PidFileReader.at(pid_path).read() == impl.PidRecord(5, 6)
    pid_path.write_bytes(b"5\n6\n".ljust(4097, b" "))
    with pytest.raises(StorageError, match="larger than 4096 bytes"):
        shimpid.PidFileReader.at(pid_path).read()


def test_huge_sparse_file_is_refused_without_reading_it(impl, pid_path):
    with open(pid_path, "wb") as f:
        f.write(b"5\n")
        f.truncate(1 << 40)  # 1 TiB, sparse: reading it whole would never finish
    with pytest.raises(StorageError, match="larger than"):
        shimpid.PidFileReader.at(pid_path).read()
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Absent()


def test_directory_fifo_and_symlink_are_refused(impl, tmp_path):
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")  # must not block: opened O_NONBLOCK, then refused
    real = tmp_path / "real"
    real.write_bytes(f"{os.getpid()}\n".encode())
    (tmp_path / "link").symlink_to(real)
    for name, expected in [
        ("dir", "not a regular file"),
        ("fifo", "not a regular file"),
        ("link", "Too many levels of symbolic links"),
    ]:
        reader = shimpid.PidFileReader.at(tmp_path / name)
        with pytest.raises(StorageError, match=expected):
            reader.read()
        assert reader.process_identity() == Absent()
    with pytest.raises(StorageError) as info:
        shimpid.PidFileReader.at(tmp_path / "link").read()
    assert info.value.errno == errno.ELOOP


def test_unreadable_file(impl, pid_path):
    pid_path.write_bytes(b"5\n")
    pid_path.chmod(0)

    def child(out):
        os.setuid(65534)
        try:
            shimpid.PidFileReader.at(pid_path).read()
        except StorageError as err:
            os.write(out, errno.errorcode[err.errno].encode())

    if os.geteuid() == 0:
        assert run_in_child(child) == (0, b"EACCES")
    else:
        with pytest.raises(StorageError) as info:
            shimpid.PidFileReader.at(pid_path).read()
        assert info.value.errno == errno.EACCES


# ---- process_identity() --------------------------------------------------------------------------


def test_this_process_is_verified(impl, pid_path):
    impl.PidFileWriter.at(pid_path).write_current()
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(os.getpid())


def test_a_live_child_is_verified(impl, pid_path, sleeper):
    record = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid))
    assert identity_of(impl, pid_path, record) == Verified(sleeper.pid)


def test_a_record_without_start_time_is_legacy(impl, pid_path, sleeper):
    assert identity_of(impl, pid_path, impl.PidRecord(os.getpid())) == Legacy(os.getpid())
    assert identity_of(impl, pid_path, impl.PidRecord(sleeper.pid)) == Legacy(sleeper.pid)


def test_a_reaped_child_is_absent(impl, pid_path):
    child = subprocess.Popen(["true"])
    start_time = None
    while start_time is None:  # read it while the exited child still holds its pid
        start_time = impl.process_start_time(child.pid)
    child.wait()
    assert identity_of(impl, pid_path, impl.PidRecord(child.pid, start_time)) == Absent()
    assert identity_of(impl, pid_path, impl.PidRecord(child.pid)) == Absent()


def test_a_zombie_is_absent(impl, pid_path, zombie):
    start_time = impl.process_start_time(zombie.pid)
    assert start_time is not None, "a zombie still has its start time"
    assert identity_of(impl, pid_path, impl.PidRecord(zombie.pid, start_time)) == Absent()
    assert identity_of(impl, pid_path, impl.PidRecord(zombie.pid)) == Absent()


def test_a_different_start_time_is_absent(impl, pid_path):
    own = impl.PidRecord.current()
    for other in (own.start_time + 1, own.start_time - 1, 0, 2**64 - 1):
        assert identity_of(impl, pid_path, impl.PidRecord(own.pid, other)) == Absent()


@pytest.mark.parametrize("pid", [0, PID_MAX + 1, 2**32 - 1, 2**32 - 2])
def test_pids_that_name_no_single_process_are_absent(impl, pid_path, pid):
    # 0: our own process group. 2**32 - 1 is -1 as a pid_t: every process we may signal.
    own = impl.PidRecord.current()
    assert identity_of(impl, pid_path, impl.PidRecord(pid)) == Absent()
    assert identity_of(impl, pid_path, impl.PidRecord(pid, own.start_time)) == Absent()


def test_a_free_pid_is_absent(impl, pid_path, reaped_pid):
    assert identity_of(impl, pid_path, impl.PidRecord(reaped_pid, 12345)) == Absent()
    assert identity_of(impl, pid_path, impl.PidRecord(PID_MAX)) == Absent()


def test_missing_and_garbage_files_are_absent(impl, pid_path):
    reader = shimpid.PidFileReader.at(pid_path)
    assert reader.process_identity() == Absent()
    for data in (b"", b"garbage", b"\xff\xfe", b"-1\n", b"99999999999\n"):
        pid_path.write_bytes(data)
        assert reader.process_identity() == Absent()


def test_a_garbled_start_time_is_legacy(impl, pid_path):
    pid_path.write_bytes(f"{os.getpid()}\nnot-a-number\n".encode())
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Legacy(os.getpid())


def test_files_written_by_the_reference_format_read_the_same(impl, pid_path):
    """What boxlite writes (its own encode) is read as the same verdict."""
    own = impl.PidRecord.current()
    pid_path.write_bytes(b"%d\n%d\n" % (own.pid, own.start_time))
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Verified(own.pid)
    pid_path.write_bytes(b"%d\n" % own.pid)
    assert shimpid.PidFileReader.at(pid_path).process_identity() == Legacy(own.pid)


# ---- is_process_alive / process_start_time -------------------------------------------------------


def test_liveness(impl, sleeper, zombie, reaped_pid):
    assert impl.is_process_alive(os.getpid())
    assert impl.is_process_alive(sleeper.pid)
    assert not impl.is_process_alive(zombie.pid)
    assert not impl.is_process_alive(reaped_pid)
    for pid in (0, -1, -os.getpid(), PID_MAX + 1, 2**32 - 1, 2**64, -(2**64)):
        assert not impl.is_process_alive(pid)


def test_start_times(impl, sleeper, zombie, reaped_pid):
    def from_proc(pid):
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[19])

    assert impl.process_start_time(os.getpid()) == from_proc(os.getpid())
    assert impl.process_start_time(sleeper.pid) == from_proc(sleeper.pid)
    assert impl.process_start_time(zombie.pid) == from_proc(zombie.pid)
    assert impl.process_start_time(reaped_pid) is None
    for pid in (0, -1, PID_MAX + 1, 2**32 - 1, 2**64):
        assert impl.process_start_time(pid) is None


def test_running_out_of_descriptors_at_the_first_look_is_not_remembered(impl):
    """What the kernel offers is found out on first use, and remembered: an EMFILE then tells
    of that moment only. Used once as "no pidfds", it is looked for again once descriptors are
    free, never kept for the life of the process (records without pidfs, handles that kill())."""
    level = impl._pidfd_level()
    if level == shimpid._common.NO_PIDFD:
        pytest.skip("no pidfds here")
    script = script_prelude(impl) + textwrap.dedent("""
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        taken = []
        try:
            while True:
                taken.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        during = impl._pidfd_level()  # the first look
        for fd in taken:
            os.close(fd)
        print(json.dumps([during, impl._pidfd_level()]))
    """)
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    during, after = json.loads(ran.stdout)
    assert (during, after) == (shimpid._common.NO_PIDFD, level), ran.stderr


def test_what_the_kernel_offers_is_found_after_a_chroot(impl, tmp_path):
    """A daemon may chroot (python-daemon's chroot_directory) or drop root after importing
    shimpid, and before its first record: the first look for pidfds then finds what it finds
    before, with no module to import (the pure backend's once imported ctypes)."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    level = impl._pidfd_level()
    (tmp_path / "run").mkdir()
    script = script_prelude(impl) + textwrap.dedent(f"""
        os.chroot({str(tmp_path)!r})
        os.chdir("/")
        found = impl._pidfd_level()  # the first look
        impl.PidFileWriter.at("/run/a.pid").write_current()
        print(json.dumps([found, impl.is_process_alive(os.getpid())]))
    """)
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == [level, True]
    written = impl.PidRecord.decode((tmp_path / "run" / "a.pid").read_bytes())
    assert (_common.parse_extras((tmp_path / "run" / "a.pid").read_bytes()).pidfs_id is None) == (
        level != _common.PIDFS
    ), "the record carries the fingerprint the system offers"
    assert written.pid > 0


def test_liveness_takes_integers_only(impl):
    for bad in (1.0, "1", None):
        with pytest.raises(TypeError):
            impl.is_process_alive(bad)
        with pytest.raises(TypeError):
            impl.process_start_time(bad)


def test_another_users_process_is_alive(impl, shared_dir):
    """kill(pid, 0) fails with EPERM for a process we may not signal: it exists all the same."""
    own = impl.PidRecord.current()
    path = os.path.join(shared_dir, "root.pid")
    impl.PidFileWriter.at(path).write(own)

    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody").pw_uid

        def child(out):
            os.setgid(nobody)
            os.setuid(nobody)
            try:
                os.kill(own.pid, 0)
                os.write(out, b"kill succeeded: test is wrong")
                return
            except PermissionError:
                pass
            verdict = shimpid.PidFileReader.at(path).process_identity()
            os.write(out, repr((impl.is_process_alive(own.pid), verdict)).encode())

        code, said = run_in_child(child)
        assert code == 0, said
        assert said.decode() == repr((True, Verified(own.pid)))
    else:
        others = [
            int(p)
            for p in os.listdir("/proc")
            if p.isdigit() and os.stat(f"/proc/{p}").st_uid != os.geteuid()
        ]
        if not others:
            pytest.skip("no process of another user to test against")
        assert impl.is_process_alive(others[0])


# ---- the verdict types ---------------------------------------------------------------------------


def test_verdicts_are_shared_frozen_values():
    assert Verified(5) == Verified(5) and hash(Verified(5)) == hash(Verified(5))
    assert Verified(5) != Legacy(5) and Absent() == Absent()
    assert Verified(5).pid == 5 and Legacy(6).pid == 6 and Absent().pid is None
    assert all(isinstance(v, ProcessIdentity) for v in (Verified(1), Legacy(1), Absent()))
    assert repr(Verified(5)) == "Verified(pid=5)" and repr(Absent()) == "Absent()"
    with pytest.raises(AttributeError):
        Verified(5).pid = 6


def test_verdicts_in_match(impl, pid_path, sleeper):
    def act(verdict):
        match verdict:
            case Verified(pid):
                return ("adopt", pid)
            case Legacy(pid):
                return ("adopt with a warning", pid)
            case Absent():
                return ("clean up", None)

    reader = shimpid.PidFileReader.at(pid_path)
    impl.PidFileWriter.at(pid_path).write(
        impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid))
    )
    assert act(reader.process_identity()) == ("adopt", sleeper.pid)
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(sleeper.pid))
    assert act(reader.process_identity()) == ("adopt with a warning", sleeper.pid)
    os.unlink(pid_path)
    assert act(reader.process_identity()) == ("clean up", None)


def test_record_bound_is_the_reference_value():
    assert PID_RECORD_MAX_BYTES == 48


def test_reader_repr(impl, pid_path):
    assert repr(shimpid.PidFileReader.at(pid_path)) == f"PidFileReader({str(pid_path)!r})"


def test_the_read_primitives_refuse_a_nul_as_open_does(impl, tmp_path):
    """The reader's primitives, given a target with a NUL (a reader's _target set by hand):
    never the file the path names up to the NUL, which C would open."""
    (tmp_path / "shim.pid").write_bytes(b"1\n2\n")
    target = os.fsencode(tmp_path / "shim.pid") + b"\0junk"
    with pytest.raises(ValueError, match="embedded null"):
        impl._read_pid_file(target, "shim.pid")
    with pytest.raises(ValueError, match="embedded null"):
        impl._identity_at(None, target, "shim.pid")
