"""Every operation, for both backends (the ``impl`` fixture), grouped so each pair sits together."""

from __future__ import annotations

import os

import pytest

import shimpid
from conftest import BASELINES, BATCH, PLACES, alternate, backend_of, batched, rounds, timed
from shimpid import _lock, _pure

PID, START = 1234567, 12345678901
TWO_LINE = b"1234567\n12345678901\n"
LEGACY = b"1234567\n"
# ideographic space, no-break space, em space: the White_Space trim on its multi-byte path
NON_ASCII_WHITESPACE = "\u3000 1234567\u00a0\n\u2003 12345678901 \u3000\n".encode()


def test_construct(measure, impl):
    measure("PidRecord(pid, start_time)", impl.PidRecord, PID, START, fast=True)


@pytest.mark.parametrize(
    ("name", "data"),
    [("two-line", TWO_LINE), ("legacy", LEGACY), ("non-ASCII whitespace", NON_ASCII_WHITESPACE)],
)
def test_decode(measure, impl, name, data, pytestconfig):
    record = measure(f"decode() {name}", impl.PidRecord.decode, data, fast=True)
    assert record.pid == PID
    if name == "two-line" and backend_of(impl) == "cython":
        count = rounds(pytestconfig, 2000)
        decode = timed(batched(impl.PidRecord.decode, (data,), BATCH))
        BASELINES["decode() two-line: pure / cython"] = alternate(
            timed(batched(_pure.PidRecord.decode, (data,), BATCH)), decode, count
        )
        BASELINES["decode() two-line / PidRecord(pid, start_time) [cython]"] = alternate(
            decode, timed(batched(impl.PidRecord, (PID, START), BATCH)), count
        )


def test_encode(measure, impl, pytestconfig):
    record = impl.PidRecord(PID, START)
    assert measure("encode()", record.encode, fast=True) == TWO_LINE
    # the interpreter's floor: a builtin method that returns new bytes of the same size
    BASELINES[f"encode() / bytes.upper() [{backend_of(impl)}]"] = alternate(
        timed(batched(record.encode, (), BATCH)),
        timed(batched(TWO_LINE.upper, (), BATCH)),
        rounds(pytestconfig, 2000),
    )


def test_encode_into(measure, impl):
    buf = bytearray(48)
    assert measure("encode_into()", impl.PidRecord(PID, START).encode_into, buf, fast=True) == len(
        TWO_LINE
    )


def test_current(measure, impl):
    assert measure("current()", impl.PidRecord.current).pid == os.getpid()


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in-place"])
def test_write(measure, impl, place, atomic):
    path = os.path.join(PLACES[place], f"bench-{os.getpid()}.pid")
    writer = impl.PidFileWriter.at(path, atomic=atomic)
    record = impl.PidRecord.current()
    try:
        measure(f"write() {'atomic' if atomic else 'in place'} [{place}]", writer.write, record)
        assert shimpid.PidFileReader.at(path).read() == record
    finally:
        os.unlink(path)


@pytest.fixture
def pid_file(impl):
    path = os.path.join(PLACES["tmpfs"], f"bench-read-{os.getpid()}.pid")
    yield path
    os.unlink(path)


def test_read(measure, impl, pid_file):
    impl.PidFileWriter.at(pid_file).write_current()
    assert measure("read()", shimpid.PidFileReader.at(pid_file).read).pid == os.getpid()


@pytest.mark.parametrize("verdict", ["Verified", "Absent", "Verified, start time only"])
def test_process_identity(measure, impl, pid_file, verdict):
    own = impl.PidRecord.current()
    writer = impl.PidFileWriter.at(pid_file, identity_line=verdict != "Verified, start time only")
    if verdict == "Absent":
        # the pid is alive but another process's: the PID-reuse case, through the same calls
        pid_file_bytes = own.encode() + b"\nshimpid pidfs=1\n"
        with open(pid_file, "wb") as f:
            f.write(pid_file_bytes)
    else:
        writer.write_current()
    result = measure(
        f"process_identity() {verdict}", shimpid.PidFileReader.at(pid_file).process_identity
    )
    assert type(result).__name__ == verdict.split(",")[0]


def test_write_current(measure, impl, pid_file):
    writer = impl.PidFileWriter.at(pid_file)
    measure("write_current() [tmpfs]", writer.write_current)
    assert shimpid.PidFileReader.at(pid_file).read_pidfs_id() is not None


def test_write_for(measure, impl, pid_file):
    writer = impl.PidFileWriter.at(pid_file)
    measure("write_for(pid) [tmpfs]", writer.write_for, os.getpid())
    assert shimpid.PidFileReader.at(pid_file).read_pidfs_id() is not None


def test_is_process_alive(measure, impl):
    assert measure("is_process_alive()", impl.is_process_alive, os.getpid()) is True


def test_process_start_time(measure, impl):
    assert measure("process_start_time()", impl.process_start_time, os.getpid()) is not None


def test_lock(measure, impl, monkeypatch):
    """An uncontended PidFileLock: take it (the record written, locked, linked), give it back."""
    monkeypatch.setattr(_lock, "_backend", impl)
    path = os.path.join(PLACES["tmpfs"], f"bench-lock-{os.getpid()}.pid")
    lock = _lock.PidFileLock(path)
    acquire, release = lock.acquire, lock.release

    def cycle():
        acquire(0)
        release()

    measure("PidFileLock acquire() + release() [tmpfs]", cycle)
    assert not os.path.exists(path)


def test_baseline_new_bytes(benchmark):
    """The interpreter's floor for encode(): a builtin method that returns 20 new bytes."""
    benchmark.group = f"baseline: bytes.upper() (x{BATCH} per round)"
    benchmark.extra_info.update(operation="baseline: 20 new bytes", backend="baseline", calls=BATCH)
    benchmark(batched(TWO_LINE.upper, (), BATCH))
