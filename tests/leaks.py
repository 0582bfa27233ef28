"""Reference and descriptor leak check of the extension backend: ``python tests/leaks.py``.

Not a pytest module (no ``test_`` prefix): a leak check needs a quiet interpreter, rounds of
repetition and a warm-up, as CPython's own ``regrtest -R 3:3`` does. It calls every public
function and method of ``shimpid._speedups`` (and what the package builds on it: handles,
locks, scan and clean, spawn), success and error paths, ``--loops`` times per round; then
``--warmups`` rounds that are not counted (caches fill, lazy imports happen), then ``--rounds``
rounds, each measured by

- ``sys.gettotalrefcount()`` (debug builds of CPython only: .ci/debug-python runs this there);
- ``sys.getallocatedblocks()`` (any CPython; steadier with pymalloc);
- the number of open descriptors (``/proc/self/fd``).

Regrtest's rule: a measure leaks when every measured round grew it (a single flat or shrinking
round is noise, caches, the garbage collector). Exit 1 on a leak, 0 otherwise, with the deltas
printed either way. On a release build the refcount check is skipped, and said so.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile

import shimpid
from shimpid import _reader
from shimpid import _speedups as ext

_reader._backend = ext  # the one PidFileReader, reading through the extension


def attempt(fn, *args, **kwargs):
    """Call ``fn``; an exception is an expected outcome here (the error paths), not a failure:
    what is measured is what the call leaves behind, and the tests check the outcomes."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        return None


def expect_error(fn, *args, **kwargs):
    """An error path: it must raise (or it is not the path this means to exercise)."""
    try:
        fn(*args, **kwargs)
    except Exception:
        return
    raise AssertionError(f"{fn.__qualname__}{args!r} did not raise")


class Exerciser:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        self.path = os.path.join(directory, "shim.pid")
        self.bpath = os.fsencode(os.path.join(directory, "bytes.pid"))
        self.lock_path = os.path.join(directory, "lock.pid")
        self.rundir = os.path.join(directory, "run")
        os.mkdir(self.rundir)
        # A pid that no process holds: a child, reaped.
        child = subprocess.Popen(["true"])
        child.wait()
        self.dead_pid = child.pid
        # A live child for write_for, open_process, signals (stopped and reaped in close()).
        self.sleeper = subprocess.Popen(["sleep", "600"])
        self.buffer = bytearray(64)

    def close(self) -> None:
        self.sleeper.kill()
        self.sleeper.wait()

    def records(self) -> None:
        record = ext.PidRecord(4242, 123456789)
        bare = ext.PidRecord(1)
        assert record == ext.PidRecord(4242, 123456789) and record != bare
        hash(record), hash(bare), repr(record), record.pid, record.start_time, bare.start_time
        assert pickle.loads(pickle.dumps(record)) == record
        assert copy.copy(record) == copy.deepcopy(record)
        data = record.encode()
        assert ext.PidRecord.decode(data) == record
        assert ext.PidRecord.decode(bytearray(data)) == record
        assert ext.PidRecord.decode(memoryview(data)) == record
        ext.PidRecord.decode(b" +7 \n\t12\nextra\n")  # the general rules, not the fast path
        n = record.encode_into(self.buffer)
        assert bytes(self.buffer[:n]) == data
        record.encode_into(memoryview(self.buffer))
        ext.PidRecord.current()
        sorted([record, bare], key=hash)
        # error paths
        expect_error(ext.PidRecord.decode, b"")
        expect_error(ext.PidRecord.decode, b"\xff\xfe\n")
        expect_error(ext.PidRecord.decode, b"99999999999\n")
        expect_error(ext.PidRecord.decode, "1\n")
        expect_error(ext.PidRecord.decode, memoryview(bytearray(8))[::2])
        expect_error(ext.PidRecord, -1)
        expect_error(ext.PidRecord, 2**32)
        expect_error(ext.PidRecord, 1, 2**64)
        expect_error(ext.PidRecord, 1.5)
        expect_error(ext.PidRecord, "1")
        expect_error(record.encode_into, bytes(64))
        expect_error(record.encode_into, bytearray(10))
        expect_error(record.__init__, 1)
        expect_error(lambda: ext.PidRecord.__new__(ext.PidRecord) < record)

    def writers(self) -> None:
        for path in (self.path, self.bpath):
            writer = ext.PidFileWriter.at(path)
            writer.write(ext.PidRecord(os.getpid(), 1))
            writer.write_current()
            writer.write_for(os.getpid())
            writer.write_for(self.sleeper.pid)
            _ = writer.path, writer.atomic, writer.mode, writer.boot_id, writer.capability
            repr(writer), copy.copy(writer), copy.deepcopy(writer)
            expect_error(pickle.dumps, writer)
            expect_error(writer.write, "not a record")
            expect_error(writer.write_for, self.dead_pid)
            expect_error(writer.write_for, 0)
            expect_error(writer.write_for, -5)
            expect_error(writer.write_for, 2**40)
            expect_error(writer.write_for, "1")
            expect_error(writer.__init__, path)
        in_place = ext.PidFileWriter.at(self.path, atomic=False, mode=0o600)
        in_place.write(ext.PidRecord(os.getpid()))
        in_place.write_current()
        ext.PidFileWriter.at(self.path, capability="services-mux-v1").write_current()
        ext.PidFileWriter.at(self.path, identity_line=False).write_current()
        expect_error(ext.PidFileWriter.at, self.path + "\0x")
        expect_error(ext.PidFileWriter.at, os.path.join(self.dir, "missing", "x.pid"))
        expect_error(ext.PidFileWriter.at, self.dir + "/")
        expect_error(ext.PidFileWriter.at, self.path, capability=" bad ")
        expect_error(ext.PidFileWriter.at, self.path, capability=b"x")
        expect_error(ext.PidFileWriter.at, self.path, mode=-1)
        expect_error(ext.PidFileWriter.at, 42.0)
        # a directory where the file should be: the write fails with an errno
        expect_error(ext.PidFileWriter.at(self.rundir).write_current)
        expect_error(ext.PidFileWriter.__new__(ext.PidFileWriter).write_current)

    def readers(self) -> None:
        ext.PidFileWriter.at(self.path, capability="services-mux-v1").write_current()
        for path in (self.path, self.bpath):
            reader = shimpid.PidFileReader.at(path)
            reader.read(), reader.read_boot_id(), reader.read_pidfs_id()
            reader.read_capability(), reader.process_identity(), repr(reader)
            copy.copy(reader)
            expect_error(pickle.dumps, reader)
            with reader.open_process() as handle:
                handle.pid, handle.identity, handle.fileno()
                handle.send_signal(0)
        ext.PidFileWriter.at(self.path).write_for(self.sleeper.pid)
        handle = shimpid.PidFileReader.at(self.path).open_process()
        handle.send_signal(signal.SIGCONT)
        handle.poll()
        handle.close()
        missing = shimpid.PidFileReader.at(os.path.join(self.dir, "missing.pid"))
        expect_error(missing.read)
        missing.process_identity(), missing.open_process()
        attempt(missing.read_boot_id), attempt(missing.read_pidfs_id)
        for bad in (b"", b"\xff\n", b"x\n", b"1\n2\n\n" + b"y" * 5000):
            with open(os.path.join(self.dir, "bad.pid"), "wb") as f:
                f.write(bad)
            reader = shimpid.PidFileReader.at(os.path.join(self.dir, "bad.pid"))
            expect_error(reader.read)
            reader.process_identity(), attempt(reader.read_capability)
        expect_error(lambda: shimpid.PidFileReader.at(self.path + "\0x").read())
        expect_error(shimpid.PidFileReader.at(self.rundir).read)
        expect_error(shimpid.PidFileReader.__new__(shimpid.PidFileReader).read)
        # a reaped pid recorded: Absent
        ext.PidFileWriter.at(self.path).write(ext.PidRecord(self.dead_pid, 1))
        assert shimpid.PidFileReader.at(self.path).open_process(allow_legacy=True) is None

    def processes(self) -> None:
        me = os.getpid()
        assert ext.is_process_alive(me) and not ext.is_process_alive(self.dead_pid)
        assert ext.process_start_time(me) is not None
        assert ext.process_start_time(self.dead_pid) is None
        for bad in (-1, 0, 2**32, 2**70, "1", 1.0):
            attempt(ext.is_process_alive, bad)
            attempt(ext.process_start_time, bad)

    def rundir_and_lock(self) -> None:
        ext.PidFileWriter.at(os.path.join(self.rundir, "a.pid")).write_current()
        ext.PidFileWriter.at(os.path.join(self.rundir, "b.pid")).write(
            ext.PidRecord(self.dead_pid, 1)
        )
        with open(os.path.join(self.rundir, f".c.pid.{self.dead_pid}.0.tmp"), "wb") as f:
            f.write(b"1\n")
        list(shimpid.scan(self.rundir)), list(shimpid.scan(self.rundir, pattern="?.pid"))
        shimpid.clean(self.rundir, dry_run=True), shimpid.clean(self.rundir, pattern="*")
        attempt(lambda: list(shimpid.scan(os.path.join(self.dir, "missing"))))
        lock = shimpid.PidFileLock(self.lock_path)
        lock.acquire(timeout=0)
        lock.is_locked(), lock.i_am_locking(), lock.holder(), lock.read_pid(), repr(lock)
        expect_error(shimpid.PidFileLock(self.lock_path).acquire, 0)
        expect_error(shimpid.PidFileLock(self.lock_path).acquire, 0.01)
        lock.release()
        lock.release()  # not held: nothing
        with shimpid.PidFileLock(self.lock_path, capability="services-mux-v1"):
            pass

    def spawning(self) -> None:
        child = shimpid.spawn(["true"], self.path)
        child.wait()
        writer = ext.PidFileWriter.at(self.path)
        child = subprocess.Popen(["true"], preexec_fn=writer.write_current)
        child.wait()
        expect_error(shimpid.spawn, ["true"], os.path.join(self.dir, "missing", "x.pid"))

    def run(self) -> None:
        self.records()
        self.writers()
        self.readers()
        self.processes()
        self.rundir_and_lock()
        self.spawning()


def clear_caches() -> None:
    # Caches that legitimately grow on first use (compiled patterns, type attribute lookups):
    # cleared before each measurement, as regrtest does.
    re.purge()
    sys._clear_type_cache()
    import fnmatch

    if hasattr(fnmatch, "_compile_pattern"):
        fnmatch._compile_pattern.cache_clear()
    gc.collect()
    gc.collect()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def measure() -> dict[str, int]:
    clear_caches()
    counts = {"blocks": sys.getallocatedblocks(), "fds": open_fds()}
    if hasattr(sys, "gettotalrefcount"):
        counts["refs"] = sys.gettotalrefcount()
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=20, help="calls of everything per round")
    parser.add_argument("--warmups", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if shimpid.BACKEND != "cython":
        print(f"leaks: shimpid.BACKEND is {shimpid.BACKEND!r}: this checks the extension")
        return 1
    debug = hasattr(sys, "gettotalrefcount")
    print(f"leaks: {ext.__file__}")
    print(f"leaks: {sys.executable} {sys.version.split()[0]}, {'debug' if debug else 'release'}")
    if not debug:
        print("leaks: the refcount check needs a debug build of CPython (sys.gettotalrefcount);")
        print("       checking descriptors and allocated blocks only (.ci/debug-python does both)")
    deltas: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory(prefix="shimpid-leaks-") as directory:
        exerciser = Exerciser(directory)
        try:
            for round_ in range(args.warmups + args.rounds):
                before = measure()
                for _ in range(args.loops):
                    exerciser.run()
                after = measure()
                if round_ >= args.warmups:
                    for key in after:
                        deltas.setdefault(key, []).append(after[key] - before[key])
        finally:
            exerciser.close()
    leaked = []
    for key, values in deltas.items():
        verdict = "LEAK" if all(v > 0 for v in values) else "ok"
        print(f"leaks: {key:6} deltas per round of {args.loops} loops: {values} -> {verdict}")
        if verdict == "LEAK":
            leaked.append(key)
    if leaked:
        print(f"leaks: FAILED: {', '.join(leaked)} grew in every measured round")
        return 1
    print("leaks: nothing leaked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
