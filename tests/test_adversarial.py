"""Hostile inputs and conditions: fuzzed files, write storms, failing writes, planted paths.

A pid file is an instruction about which process to signal, and recovery code trusts it at
start-up: nothing here may crash, hang, raise an untyped error, or point at the wrong process.
"""

from __future__ import annotations

import errno
import os
import pwd
import resource
import signal
import stat
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shimpid
from _helpers import reap, rounds, run_in_child, script_prelude
from shimpid import Absent, StorageError, _common

U32_MAX, U64_MAX = 2**32 - 1, 2**64 - 1

# ---- fuzzing decode ------------------------------------------------------------------------------


@st.composite
def mutated_records(draw):
    """A valid file (maybe with lines 3 and 4), then a few byte-level mutations."""
    pid = draw(st.integers(0, U32_MAX))
    start = draw(st.one_of(st.none(), st.integers(0, U64_MAX)))
    data = bytearray(b"%d\n" % pid if start is None else b"%d\n%d\n" % (pid, start))
    if draw(st.booleans()):
        data += (
            (b"" if start is not None else b"\n")
            + draw(st.sampled_from([b"", b"services-mux-v1"]))
            + b"\nshimpid boot="
            + _common.CURRENT_BOOT_ID.encode()
        )
        if draw(st.booleans()):
            data += b" pidfs=%d" % draw(st.integers(0, U64_MAX + 1))
        data += b"\n"
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate"]))
        if how == "flip" and where < len(data):
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[where:where] = draw(
                st.sampled_from(
                    [b"\x00", b"\n", b"\r", b" ", b"+", b"-", b"9", b"\xff", b"\xc2\xa0", b"\xe2"]
                )
            )
        elif how == "delete" and where < len(data):
            del data[where]
        elif how == "duplicate":
            data[where:where] = data[:where]
        elif how == "truncate":
            del data[where:]
    return bytes(data)


def outcome(module, data):
    try:
        r = module.PidRecord.decode(data)
    except StorageError as err:  # anything else fails the test
        return ("error", str(err))
    return ("ok", r.pid, r.start_time)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_records(), st.binary(max_size=200)))
def test_fuzzed_files_decode_as_the_reference(impl, oracle, data):
    ours = outcome(impl, data)
    answer = oracle("d", data)
    if ours[0] == "ok":
        assert answer == f"ok {ours[1]} {'-' if ours[2] is None else ours[2]}"
    else:
        assert answer.startswith("err ")


@given(mutated_records())
def test_fuzzed_files_through_the_reader(impl, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "shim.pid"
    path.write_bytes(data)
    reader = shimpid.PidFileReader.at(path)
    try:
        record = reader.read()
    except StorageError:
        assert reader.process_identity() == Absent()
        return
    verdict = reader.process_identity()
    assert verdict == Absent() or verdict.pid == record.pid
    assert verdict == Absent() or 0 < record.pid <= _common.PID_MAX


# ---- a writer rewriting the file while a reader reads it -----------------------------------------

RECORDS = [(4294967295, 18446744073709551615), (7, None), (123456, 42)]


def storm(impl, directory, *, atomic):
    """Another process rewrites the pid file as fast as it can while this one reads it.

    Returns how the reads came out: "whole" (one of the written records), "empty" (the file
    held nothing), "torn" (any other StorageError), "wrong" (a record nobody wrote).
    """
    reads, min_changes = rounds(5000, 30000), rounds(100, 300)
    path = os.path.join(directory, "shim.pid")
    writer = impl.PidFileWriter.at(path, atomic=atomic)
    records = [impl.PidRecord(*r) for r in RECORDS]
    writer.write(records[0])
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(stop_w)
            os.set_blocking(stop_r, False)
            n = 0
            give_up = time.monotonic() + 120  # never outlive a test that failed to stop it
            while time.monotonic() < give_up:
                writer.write(records[n % len(records)])
                n += 1
                try:
                    if os.read(stop_r, 1) == b"":
                        break
                except BlockingIOError:
                    pass
        finally:
            os._exit(0)
    os.close(stop_r)
    reader = shimpid.PidFileReader.at(path)
    counts = {"whole": 0, "empty": 0, "torn": 0, "wrong": 0}
    changes, last, done = 0, None, 0
    deadline = time.monotonic() + 30
    try:
        # At least `reads`, and until the file has changed under the reader often enough: a
        # loaded machine schedules the two processes coarsely.
        while (done < reads or changes < min_changes) and time.monotonic() < deadline:
            done += 1
            try:
                record = reader.read()
            except StorageError as err:
                counts["empty" if "empty string" in str(err) else "torn"] += 1
                continue
            counts["whole" if record in records else "wrong"] += 1
            changes += record != last
            last = record
    finally:
        os.close(stop_w)
        reap(pid)
    assert changes >= min_changes, "the writer and the reader did not overlap enough"
    assert sorted(os.listdir(directory)) == ["shim.pid"], "no temporary file left behind"
    return counts


@pytest.mark.parametrize("place", ["disk", "tmpfs"])
def test_atomic_writes_never_show_a_torn_file(impl, tmp_path, shared_dir, place):
    """Thousands of reads during a write storm (tens of thousands in CI): each a whole record.
    (What in-place writes let a reader see is measured in bench/test_storm.py.)"""
    counts = storm(impl, tmp_path if place == "disk" else shared_dir, atomic=True)
    assert counts["empty"] == counts["torn"] == counts["wrong"] == 0, counts


# ---- writes that fail keep the old file ----------------------------------------------------------


def test_a_write_over_the_size_limit_keeps_the_old_file(impl, pid_path):
    writer = impl.PidFileWriter.at(pid_path)
    writer.write(impl.PidRecord(1, 2))
    before = pid_path.read_bytes()

    def child(out):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (5, 5))
        try:
            writer.write(impl.PidRecord(U32_MAX, U64_MAX))
        except OSError as err:
            os.write(out, errno.errorcode[err.errno].encode())

    assert run_in_child(child) == (0, b"EFBIG")
    assert pid_path.read_bytes() == before
    assert os.listdir(pid_path.parent) == ["shim.pid"]


def test_a_write_into_a_read_only_directory_keeps_the_old_file(impl, shared_dir):
    path = os.path.join(shared_dir, "shim.pid")
    writer = impl.PidFileWriter.at(path)
    writer.write(impl.PidRecord(1, 2))
    with open(path, "rb") as f:
        before = f.read()
    os.chmod(shared_dir, 0o555)
    try:

        def child(out):
            if os.geteuid() == 0:  # root writes anywhere: be somebody else
                os.setuid(pwd.getpwnam("nobody").pw_uid)
            try:
                writer.write(impl.PidRecord(3, 4))
            except OSError as err:
                os.write(out, errno.errorcode[err.errno].encode())

        assert run_in_child(child) == (0, b"EACCES")
    finally:
        os.chmod(shared_dir, 0o755)
    with open(path, "rb") as f:
        assert f.read() == before
    assert os.listdir(shared_dir) == ["shim.pid"]


# ---- things planted at the pid path --------------------------------------------------------------


def test_a_fifo_at_the_path_never_blocks(impl, tmp_path):
    """Reader and in-place writer open it non-blocking; every writer refuses it, untouched."""
    path = tmp_path / "shim.pid"
    os.mkfifo(path)
    script = (
        script_prelude(impl)
        + f"""
from shimpid import StorageError
try:
    shimpid.PidFileReader.at({str(path)!r}).read()
except StorageError as err:
    print("read:", err.strerror)
print("identity:", shimpid.PidFileReader.at({str(path)!r}).process_identity())
for atomic in (False, True):
    try:
        impl.PidFileWriter.at({str(path)!r}, atomic=atomic).write(impl.PidRecord(1, 2))
    except OSError as err:
        print("atomic:" if atomic else "in place:", err.strerror)
"""
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    refused = "PID file path holds a FIFO, socket or device, not a regular file"
    assert result.stdout == (
        "read: PID file is not a regular file\nidentity: Absent()\n"
        f"in place: {refused}\natomic: {refused}\n"
    )
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    assert os.listdir(tmp_path) == ["shim.pid"]


def test_a_file_of_a_gibibyte_is_refused_without_reading_it(impl, pid_path):
    with open(pid_path, "wb") as f:
        f.write(b"%d\n" % os.getpid())
        f.truncate(1 << 30)
    reader = shimpid.PidFileReader.at(pid_path)
    started = time.monotonic()
    with pytest.raises(StorageError, match="larger than 4096 bytes"):
        reader.read()
    assert reader.process_identity() == Absent()
    assert reader.open_process() is None
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "data",
    [b"\x00", b"\x00\x00\x00\x00", b"12\x0034\n", b"12\n\x00\n", b"\x0012\n", b"12\n34\x00\n"],
)
def test_nul_bytes_in_the_file(impl, pid_path, data):
    pid_path.write_bytes(data)
    reader = shimpid.PidFileReader.at(pid_path)
    try:
        record = reader.read()
    except StorageError as err:
        assert "invalid PID" in str(err)
        assert reader.process_identity() == Absent()
    else:
        assert record.pid == 12 and record.start_time is None  # a NUL garbles line 2 only
