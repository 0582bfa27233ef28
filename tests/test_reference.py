"""The reference's own unit tests (boxlite 0.9.6, pid_file.rs), one for one, on both backends."""

from __future__ import annotations

import os

import pytest

import shimpid
from shimpid import PID_RECORD_MAX_BYTES, StorageError

# ---- PidRecord codec -----------------------------------------------------------------------------


def test_decode_two_line_format(impl):
    r = impl.PidRecord.decode(b"1234\n98765432\n")
    assert r.pid == 1234
    assert r.start_time == 98765432


def test_decode_legacy_one_line_format(impl):
    r = impl.PidRecord.decode(b"4321\n")
    assert r.pid == 4321
    assert r.start_time is None


def test_decode_no_trailing_newline(impl):
    r = impl.PidRecord.decode(b"67890")
    assert r.pid == 67890
    assert r.start_time is None


def test_decode_corrupt_start_time_downgrades(impl):
    r = impl.PidRecord.decode(b"5555\nnot-a-number\n")
    assert r.pid == 5555
    assert r.start_time is None


def test_decode_leading_whitespace_pid(impl):
    r = impl.PidRecord.decode(b"  12345\n  88  \n")
    assert r.pid == 12345
    assert r.start_time == 88


def test_decode_max_linux_pid(impl):
    assert impl.PidRecord.decode(b"4194304\n").pid == 4194304


def test_decode_negative_pid_rejected(impl):
    with pytest.raises(StorageError):
        impl.PidRecord.decode(b"-1\n")


def test_decode_overflow_pid_rejected(impl):
    with pytest.raises(StorageError):
        impl.PidRecord.decode(b"99999999999\n")


def test_decode_invalid_pid_rejected(impl):
    with pytest.raises(StorageError):
        impl.PidRecord.decode(b"not-a-pid\n")


def test_decode_empty_rejected(impl):
    with pytest.raises(StorageError):
        impl.PidRecord.decode(b"")


def test_encode_round_trips_with_start_time(impl):
    r = impl.PidRecord(12345, 67890)
    buf = bytearray(PID_RECORD_MAX_BYTES)
    n = r.encode_into(buf)
    assert bytes(buf[:n]) == b"12345\n67890\n"
    assert impl.PidRecord.decode(buf[:n]) == r


def test_encode_round_trips_legacy(impl):
    r = impl.PidRecord(7, None)
    buf = bytearray(PID_RECORD_MAX_BYTES)
    n = r.encode_into(buf)
    assert bytes(buf[:n]) == b"7\n"
    assert impl.PidRecord.decode(buf[:n]) == r


def test_current_captures_self(impl):
    r = impl.PidRecord.current()
    assert r.pid == os.getpid()
    assert r.start_time is not None, "start_time must be captured on Linux"


# ---- PidFileReader -------------------------------------------------------------------------------


def test_reader_read_round_trips(impl, pid_path):
    pid_path.write_bytes(b"1234\n98765432\n")
    r = shimpid.PidFileReader.at(pid_path).read()
    assert r.pid == 1234
    assert r.start_time == 98765432


def test_reader_missing_file_is_storage_error(impl):
    with pytest.raises(StorageError):
        shimpid.PidFileReader.at("/nonexistent/shim.pid").read()


# ---- PidFileWriter -------------------------------------------------------------------------------


def test_writer_writes_record_readable_by_reader(impl, pid_path):
    writer = impl.PidFileWriter.at(pid_path)
    record = impl.PidRecord(999, 424242)
    writer.write(record)
    assert shimpid.PidFileReader.at(pid_path).read() == record


def test_writer_truncates_on_repeated_write(impl, pid_path):
    writer = impl.PidFileWriter.at(pid_path)
    writer.write(impl.PidRecord(111111, 1))
    writer.write(impl.PidRecord(22, None))
    read_back = shimpid.PidFileReader.at(pid_path).read()
    assert read_back.pid == 22
    assert read_back.start_time is None


def test_writer_rejects_path_with_interior_nul(impl):
    with pytest.raises(StorageError):
        impl.PidFileWriter.at("/tmp/\0bad")
