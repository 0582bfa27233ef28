"""PidFileWriter against the real filesystem and real processes."""

from __future__ import annotations

import errno
import os
import pathlib
import resource
import signal
import stat
import subprocess
import sys
import threading

import pytest

import shimpid
from _helpers import read_within, reap, require_pidfd_level, run_in_child
from shimpid import StorageError, _common

both_modes = pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in-place"])


def siblings(path: pathlib.Path) -> list[str]:
    return sorted(os.listdir(path.parent))


BOOT = _common.CURRENT_BOOT_ID.encode()


def disk(encoded: bytes, pidfs: int | None = None) -> bytes:
    """What a writer puts on disk for a record that encodes to ``encoded``: line 2 (empty if
    there is no start time), an empty line 3 (boxlite's), and shimpid's line 4."""
    line4 = b"shimpid boot=" + BOOT + (b"" if pidfs is None else b" pidfs=%d" % pidfs)
    return encoded + (b"\n" if encoded.count(b"\n") == 2 else b"\n\n") + line4 + b"\n"


def pidfs_of(pid: int) -> int:
    fd = os.pidfd_open(pid)
    try:
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


@both_modes
@pytest.mark.parametrize("record", [(1, None), (4294967295, 18446744073709551615), (42, 0)])
def test_bytes_on_disk_are_encode_and_the_identity_line(impl, pid_path, atomic, record):
    r = impl.PidRecord(*record)
    writer = impl.PidFileWriter.at(pid_path, atomic=atomic)
    writer.write(r)
    assert pid_path.read_bytes() == disk(r.encode())
    assert writer.boot_id == BOOT.decode()
    assert siblings(pid_path) == ["shim.pid"], "no temporary file is left behind"
    impl.PidFileWriter.at(pid_path, atomic=atomic, identity_line=False).write(r)
    assert pid_path.read_bytes() == r.encode()
    assert impl.PidFileWriter.at(pid_path, identity_line=False).boot_id is None


@both_modes
def test_write_current_and_write_for_record_the_pidfs_inode(impl, pid_path, atomic, sleeper):
    require_pidfd_level(impl, _common.PIDFS)
    writer = impl.PidFileWriter.at(pid_path, atomic=atomic)
    writer.write_current()
    own = impl.PidRecord.current()
    assert pid_path.read_bytes() == disk(own.encode(), pidfs_of(os.getpid()))
    writer.write_for(sleeper.pid)
    record = impl.PidRecord(sleeper.pid, impl.process_start_time(sleeper.pid))
    assert pid_path.read_bytes() == disk(record.encode(), pidfs_of(sleeper.pid))
    assert shimpid.PidFileReader.at(pid_path).read_pidfs_id() == pidfs_of(sleeper.pid)
    impl.PidFileWriter.at(pid_path, atomic=atomic, identity_line=False).write_for(sleeper.pid)
    assert pid_path.read_bytes() == record.encode(), "identity_line=False: the reference's bytes"


@pytest.mark.parametrize("record", [(1, None), (4294967295, 18446744073709551615)])
def test_the_reference_reads_files_with_an_identity_line_as_the_same_record(
    impl, oracle, pid_path, record
):
    """Rust's decode (what boxlite runs) ignores lines 3 and 4: checked against the Rust oracle."""
    r = impl.PidRecord(*record)
    impl.PidFileWriter.at(pid_path).write(r)
    assert impl.PidRecord.decode(pid_path.read_bytes()) == r
    start = "-" if r.start_time is None else str(r.start_time)
    assert oracle("d", pid_path.read_bytes()) == f"ok {r.pid} {start}"


@both_modes
def test_a_shorter_record_replaces_a_longer_one(impl, pid_path, atomic):
    writer = impl.PidFileWriter.at(pid_path, atomic=atomic)
    writer.write(impl.PidRecord(4294967295, 18446744073709551615))
    writer.write(impl.PidRecord(22))
    assert pid_path.read_bytes() == disk(b"22\n")


@both_modes
@pytest.mark.parametrize(
    ("mode", "umask", "expected"),
    [
        (0o644, 0o022, 0o644),
        (0o600, 0o022, 0o600),
        (0o666, 0o022, 0o644),
        (0o666, 0o077, 0o600),
        (0o640, 0o000, 0o640),
    ],
)
def test_file_mode_is_mode_filtered_by_umask(impl, pid_path, atomic, mode, umask, expected):
    old = os.umask(umask)
    try:
        impl.PidFileWriter.at(pid_path, atomic=atomic, mode=mode).write(impl.PidRecord(1, 2))
    finally:
        os.umask(old)
    assert stat.S_IMODE(pid_path.stat().st_mode) == expected


def test_atomic_write_replaces_the_file_in_place_write_rewrites_it(impl, pid_path):
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(1, 2))
    first = pid_path.stat().st_ino
    impl.PidFileWriter.at(pid_path).write(impl.PidRecord(3, 4))
    assert pid_path.stat().st_ino != first, "atomic: a new file renamed over the old one"
    second = pid_path.stat().st_ino
    impl.PidFileWriter.at(pid_path, atomic=False).write(impl.PidRecord(5, 6))
    assert pid_path.stat().st_ino == second, "in place: the same file truncated"
    assert pid_path.read_bytes() == disk(b"5\n6\n")


@both_modes
def test_a_symlink_at_the_path_is_never_followed(impl, tmp_path, atomic):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    link = tmp_path / "shim.pid"
    link.symlink_to(victim)
    writer = impl.PidFileWriter.at(link, atomic=atomic)
    if atomic:
        # rename() replaces the link itself; the file it pointed at is untouched
        writer.write(impl.PidRecord(1, 2))
        assert not link.is_symlink() and link.read_bytes() == disk(b"1\n2\n")
    else:
        with pytest.raises(OSError) as info:
            writer.write(impl.PidRecord(1, 2))
        assert info.value.errno == errno.ELOOP
        assert link.is_symlink()
    assert victim.read_bytes() == b"precious\n"
    assert sorted(os.listdir(tmp_path)) == ["shim.pid", "victim"]


@pytest.mark.parametrize("path", ["/tmp/\0bad", b"/tmp/\0bad", "\0", pathlib.Path("/tmp") / "a\0b"])
def test_nul_in_path_is_a_storage_error(impl, path):
    with pytest.raises(StorageError, match="NUL"):
        impl.PidFileWriter.at(path)
    with pytest.raises(StorageError, match="NUL"):
        shimpid.PidFileReader.at(path)


@pytest.mark.parametrize("path", ["", "/", "/tmp/", "/tmp/.", "..", "/tmp/x/.."])
def test_a_path_that_names_no_file_is_a_storage_error(impl, path):
    with pytest.raises(StorageError, match="does not name a file"):
        impl.PidFileWriter.at(path)


def test_a_path_is_encoded_as_os_fsencode_encodes_it(impl, tmp_path):
    """A str path's undecodable bytes (surrogate escapes) name the same file as the bytes do,
    also through a doubled "/" (the temporary name beside it too); a str the file system
    encoding cannot encode is a StorageError."""
    raw = os.fsencode(tmp_path) + b"//\xff\xfe.pid"
    given = os.fsdecode(raw)
    assert "\udcff" in given
    writer = impl.PidFileWriter.at(given)
    writer.write(impl.PidRecord(7))
    assert os.listdir(os.fsencode(tmp_path)) == [b"\xff\xfe.pid"]
    assert shimpid.PidFileReader.at(raw).read() == impl.PidRecord(7)
    with pytest.raises(StorageError, match="cannot be encoded"):
        impl.PidFileWriter.at(str(tmp_path / "\ud800.pid"))


@pytest.mark.parametrize("target", [b"/x.pid", b"/run/app/x.pid", b"/a b/\xff\n.pid"])
def test_temporary_names_begin_beside_the_target(target, monkeypatch):
    """Where "/" alone separates (this system), the prefix is made with bytes methods; elsewhere
    with os.path: the same bytes."""
    by_os_path = os.path.join(os.path.dirname(target), b"." + os.path.basename(target) + b".")
    assert _common.temp_prefix(target) == by_os_path
    monkeypatch.setattr(_common, "_SLASH_ONLY", False)
    assert _common.temp_prefix(target) == by_os_path


def test_path_types_and_path_back(impl, tmp_path):
    for given in [str(tmp_path / "a.pid"), os.fsencode(tmp_path / "b.pid"), tmp_path / "c.pid"]:
        writer = impl.PidFileWriter.at(given)
        assert writer.path == os.fspath(given)
        writer.write(impl.PidRecord(1))
        assert shimpid.PidFileReader.at(given).path == os.fspath(given)
        assert shimpid.PidFileReader.at(given).read() == impl.PidRecord(1)
    assert writer.atomic is True and writer.mode == 0o644
    assert repr(writer) == f"PidFileWriter({os.fspath(given)!r}, atomic=True, mode=0o644)"


@pytest.mark.parametrize(
    ("mode", "error"),
    [(-1, ValueError), (0o10000, ValueError), ("644", TypeError), (6.0, TypeError)],
)
def test_bad_mode(impl, pid_path, mode, error):
    with pytest.raises(error):
        impl.PidFileWriter.at(pid_path, mode=mode)


def test_path_must_be_a_path(impl):
    with pytest.raises(TypeError):
        impl.PidFileWriter.at(42)
    with pytest.raises(TypeError):
        shimpid.PidFileReader.at(None)


@pytest.mark.parametrize("other", [None, (1, 2), "1\n2\n"])
def test_write_takes_only_records(impl, pid_path, other):
    with pytest.raises(TypeError):
        impl.PidFileWriter.at(pid_path).write(other)
    assert not pid_path.exists()


def test_relative_path_is_anchored_when_the_writer_is_made(impl, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    writer = impl.PidFileWriter.at("shim.pid")
    reader = shimpid.PidFileReader.at("shim.pid")
    monkeypatch.chdir(tmp_path / "elsewhere")
    writer.write(impl.PidRecord(5, 6))
    assert (tmp_path / "here" / "shim.pid").read_bytes() == disk(b"5\n6\n")
    assert reader.read() == impl.PidRecord(5, 6)
    assert writer.path == "shim.pid"


@both_modes
def test_missing_directory_fails_when_the_writer_is_made(impl, tmp_path, atomic):
    path = tmp_path / "missing" / "shim.pid"
    with pytest.raises(StorageError) as info:
        impl.PidFileWriter.at(path, atomic=atomic)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == str(tmp_path / "missing")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError) as info:
        impl.PidFileWriter.at(tmp_path / "file" / "shim.pid", atomic=atomic)
    assert info.value.errno == errno.ENOTDIR


@both_modes
def test_a_directory_removed_later_fails_the_write_with_errno(impl, tmp_path, atomic):
    (tmp_path / "gone").mkdir()
    path = tmp_path / "gone" / "shim.pid"
    writer = impl.PidFileWriter.at(path, atomic=atomic)
    (tmp_path / "gone").rmdir()
    with pytest.raises(FileNotFoundError) as info:
        writer.write(impl.PidRecord(1, 2))
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == os.fspath(path)


def test_directory_at_the_path_fails_and_leaves_no_temporary(impl, pid_path):
    pid_path.mkdir()
    with pytest.raises(IsADirectoryError):
        impl.PidFileWriter.at(pid_path).write(impl.PidRecord(1, 2))
    assert pid_path.is_dir()
    assert siblings(pid_path) == ["shim.pid"]


def test_name_too_long_for_a_temporary_sibling(impl, tmp_path):
    path = tmp_path / ("p" * 230)
    with pytest.raises(StorageError) as info:
        impl.PidFileWriter.at(path)
    assert info.value.errno == errno.ENAMETOOLONG
    impl.PidFileWriter.at(path, atomic=False).write(impl.PidRecord(1))  # in place still works
    assert path.read_bytes() == disk(b"1\n")


def test_failed_atomic_write_keeps_the_old_file(impl, pid_path):
    """A write cut short (here by RLIMIT_FSIZE) leaves the old record and no temporary file."""
    writer = impl.PidFileWriter.at(pid_path)
    writer.write(impl.PidRecord(1, 2))

    def child(out):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (5, 5))
        try:
            writer.write(impl.PidRecord(4294967295, 18446744073709551615))
        except OSError as err:
            os.write(out, errno.errorcode[err.errno].encode())

    code, said = run_in_child(child)
    assert (code, said) == (0, b"EFBIG")
    assert pid_path.read_bytes() == disk(b"1\n2\n")
    assert siblings(pid_path) == ["shim.pid"]


@pytest.mark.parametrize("stale", [10, 16])
def test_temporary_files_of_crashed_writers_are_left_alone(impl, pid_path, stale):
    """Stale temporary names are skipped, never truncated: they may be another writer's files.

    A fresh interpreter, so the backend's counter of temporary names starts at 0: after 10 stale
    names the write succeeds; when all 16 names it tries are taken it fails with EEXIST.
    """
    script = f"""
import importlib, os, pathlib, sys
sys.path[:0] = {sys.path!r}
impl = importlib.import_module({impl.__name__!r})
path = pathlib.Path({str(pid_path)!r})
for n in range({stale}):
    (path.parent / f".shim.pid.{{os.getpid()}}.{{n}}.tmp").write_bytes(b"stale")
try:
    impl.PidFileWriter.at(path).write(impl.PidRecord(7, 8))
except FileExistsError:
    print("EEXIST")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    stale_files = [n for n in siblings(pid_path) if n.endswith(".tmp")]
    assert len(stale_files) == stale
    assert all((pid_path.parent / n).read_bytes() == b"stale" for n in stale_files)
    if stale < 16:
        assert result.stdout == "" and pid_path.read_bytes() == disk(b"7\n8\n")
    else:
        assert result.stdout == "EEXIST\n" and not pid_path.exists()


def test_write_current_from_a_forked_child(impl, pid_path):
    writer = impl.PidFileWriter.at(pid_path)
    status_r, status_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(status_r)
            os.close(release_w)
            writer.write_current()
            os.write(status_w, b"written")
            os.read(release_r, 1)  # stay alive until the parent has checked
        finally:
            os._exit(0)
    os.close(status_w)
    os.close(release_r)
    try:
        assert read_within(status_r) == b"written"
        record = shimpid.PidFileReader.at(pid_path).read()
        assert record.pid == pid
        assert record.start_time == impl.process_start_time(pid)
        assert shimpid.PidFileReader.at(pid_path).process_identity().pid == pid
    finally:
        os.close(release_w)
        os.close(status_r)
        reap(pid)


@both_modes
def test_write_current_as_preexec_fn(impl, pid_path, atomic):
    """The record names the exec'd child: its start time survives exec()."""
    writer = impl.PidFileWriter.at(pid_path, atomic=atomic)
    child = subprocess.Popen(["sleep", "60"], preexec_fn=writer.write_current)
    try:
        record = shimpid.PidFileReader.at(pid_path).read()
        assert record.pid == child.pid
        assert record.start_time == impl.process_start_time(child.pid)
        assert type(shimpid.PidFileReader.at(pid_path).process_identity()).__name__ == "Verified"
    finally:
        child.kill()
        child.wait()


def test_failing_preexec_write_fails_the_spawn(impl, tmp_path):
    (tmp_path / "gone").mkdir()
    writer = impl.PidFileWriter.at(tmp_path / "gone" / "shim.pid")
    (tmp_path / "gone").rmdir()
    with pytest.raises(subprocess.SubprocessError):
        subprocess.Popen(["true"], preexec_fn=writer.write_current)


def test_threads_sharing_one_writer_never_tear_a_record(impl, pid_path):
    writer = impl.PidFileWriter.at(pid_path)
    records = [impl.PidRecord(n, 10**12 + n) for n in range(1, 9)]
    writer.write(records[0])
    reader = shimpid.PidFileReader.at(pid_path)
    stop = threading.Event()
    seen, errors = set(), []

    def write(record):
        while not stop.is_set():
            writer.write(record)

    threads = [threading.Thread(target=write, args=(r,)) for r in records]
    for t in threads:
        t.start()
    try:
        for _ in range(3000):
            try:
                seen.add(reader.read())
            except StorageError as err:
                errors.append(err)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors
    assert seen <= set(records)
    assert siblings(pid_path) == ["shim.pid"]


def test_atomic_writes_on_disk_replace_by_exchange(impl, tmp_path):
    if impl.__name__.endswith("_pure"):
        pytest.skip("the pure backend keeps plain rename()")
    assert impl.PidFileWriter.at(tmp_path / "x.pid")._replace_by_exchange is (
        os.statvfs(tmp_path).f_fsid != os.statvfs("/dev/shm").f_fsid
    )
    assert impl.PidFileWriter.at("/dev/shm/x.pid")._replace_by_exchange is False
