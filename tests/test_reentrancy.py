"""Re-entrancy: an argument whose conversion runs the caller's Python code (``__fspath__``,
``__index__``, ``__bool__``, ``__float__``, a ``str`` or ``bytes`` subclass's methods, a buffer
export) is a door back into the object being worked on. Through it, a hostile caller must never
re-initialise an object, see it half made, change a record that was hashed, or act through
a descriptor or path that a method holds. (Issue 17; the list of such places is at the top of
``_speedups.pyx``.)

Every test runs in ``tmp_path`` as the working directory: a write through a stale path would
leave a stray file there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import shimpid
from _helpers import require_pidfd_level, script_prelude, stop
from shimpid import _common, _lock, _operate

ALREADY = "already initialised"
NOT_YET = "is not initialised"
IMMUTABLE = "immutable"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def run_script(impl, script: str, cwd) -> subprocess.CompletedProcess:
    """``python -c`` of script after script_prelude(impl), in cwd: where a failure may crash."""
    return subprocess.run(
        [sys.executable, "-c", script_prelude(impl) + script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


class Door:
    """Runs each of ``actions`` each time a hostile hook is entered; keeps what each run raised
    (None: it went through)."""

    def __init__(self, *actions):
        self.actions = actions
        self.outcomes: list[BaseException | None] = []

    def open(self) -> None:
        for action in self.actions:
            try:
                action()
            except Exception as err:
                # Without its traceback: the frames it holds would keep the method's buffer
                # views alive until a garbage collection, which then releases them in any order.
                self.outcomes.append(err.with_traceback(None))
            else:
                self.outcomes.append(None)

    def all_refused(self, kind: type[BaseException], words: str) -> bool:
        """Every run raised ``kind`` saying ``words`` (and there was at least one run)."""
        return bool(self.outcomes) and all(
            isinstance(err, kind) and words in str(err) for err in self.outcomes
        )


class HostilePath:
    def __init__(self, path, door: Door):
        self.path, self.door = path, door

    def __fspath__(self):
        self.door.open()
        return os.fspath(self.path)


class HostileInt:
    def __init__(self, value: int, door: Door):
        self.value, self.door = value, door

    def __index__(self):
        self.door.open()
        return self.value


class HostileBool:
    def __init__(self, value: bool, door: Door):
        self.value, self.door = value, door

    def __bool__(self):
        self.door.open()
        return self.value


def hostile_str(base: type, door: Door):
    """A str (or bytes) subclass whose every method of interest opens the door."""

    def hook(name):
        original = getattr(base, name)

        def method(self, *args, **kwargs):
            door.open()
            return original(self, *args, **kwargs)

        return method

    names = ["__eq__", "__ne__", "__hash__", "__contains__", "__len__", "__add__", "__radd__"]
    names += ["strip", "isascii", "isprintable", "encode", "startswith", "endswith", "rfind"]
    names += ["decode", "__getitem__", "__str__", "__bytes__", "__fspath__", "split"]
    return type("Hostile", (base,), {n: hook(n) for n in names if hasattr(base, n)})


# ---- PidFileWriter.__init__ --------------------------------------------------------------


def test_writer_init_reentered_from_fspath(impl, tmp_path):
    writer = impl.PidFileWriter.__new__(impl.PidFileWriter)
    door = Door(lambda: writer.__init__(tmp_path / "inner.pid"))
    writer.__init__(HostilePath(tmp_path / "a.pid", door))
    assert door.all_refused(TypeError, ALREADY)
    assert writer.path == str(tmp_path / "a.pid")
    writer.write(impl.PidRecord(1, 2))
    assert listing(tmp_path) == ["a.pid"]


@pytest.mark.parametrize("argument", ["mode", "atomic", "identity_line", "capability"])
def test_writer_init_reentered_from_any_argument(impl, tmp_path, argument):
    writer = impl.PidFileWriter.__new__(impl.PidFileWriter)
    door = Door(lambda: writer.__init__(tmp_path / "inner.pid"))
    value = {
        "mode": HostileInt(0o600, door),
        "atomic": HostileBool(True, door),
        "identity_line": HostileBool(True, door),
        "capability": hostile_str(str, door)("services-mux-v1"),
    }[argument]
    writer.__init__(tmp_path / "a.pid", **{argument: value})
    # A str subclass's methods are never called (an exact copy is checked); every other
    # conversion runs once, and the __init__ it re-enters is refused.
    assert door.all_refused(TypeError, ALREADY) or (argument == "capability" and not door.outcomes)
    assert writer.path == str(tmp_path / "a.pid")
    writer.write(impl.PidRecord(1, 2))
    assert listing(tmp_path) == ["a.pid"]
    if argument == "mode":
        assert writer.mode == 0o600 and os.stat(tmp_path / "a.pid").st_mode & 0o777 == 0o600


def test_writer_is_not_usable_while_being_initialised(impl, tmp_path):
    """A write from inside a conversion finds the writer not initialised: nothing is written,
    nowhere."""
    writer = impl.PidFileWriter.__new__(impl.PidFileWriter)
    door = Door(
        lambda: writer.write(impl.PidRecord(1, 2)),
        writer.write_current,
        lambda: writer.write_for(os.getpid()),
        lambda: repr(writer),
        lambda: writer.atomic,
    )
    writer.__init__(
        HostilePath(tmp_path / "a.pid", door),
        mode=HostileInt(0o644, door),
        atomic=HostileBool(True, door),
        identity_line=HostileBool(True, door),
    )
    assert len(door.outcomes) == 4 * 5 and door.all_refused(TypeError, NOT_YET)
    assert listing(tmp_path) == []
    writer.write(impl.PidRecord(1, 2))
    assert listing(tmp_path) == ["a.pid"]


# The attack: __fspath__ runs a whole inner __init__, and the outer one then replaced
# the byte strings the C struct pointed into; a write from identity_line.__bool__ went through
# the freed memory. Run in a child: before the fix it could write anywhere, or crash.
UAF_SCRIPT = """
writer = impl.PidFileWriter.__new__(impl.PidFileWriter)
inner = "B" * 200 + ".pid"
outer = "A" * 200 + ".pid"
seen = []

def attempt(call):
    try:
        call()
    except TypeError as err:
        seen.append(str(err))
    else:
        seen.append(None)

class Path:
    def __fspath__(self):
        attempt(lambda: writer.__init__(inner))
        return outer

class Flag:
    def __bool__(self):
        for _ in range(20):  # churn the heap as the attack did
            [bytes(230) for _ in range(50)]
            attempt(lambda: writer.write(impl.PidRecord(1, 2)))
        return True

try:
    writer.__init__(Path(), identity_line=Flag())
except TypeError as err:
    seen.append("outer: " + str(err))
print(json.dumps(seen))
"""


def test_writer_reentry_cannot_write_through_freed_paths(impl, tmp_path):
    done = run_script(impl, UAF_SCRIPT, tmp_path)
    assert done.returncode == 0, done.stderr

    seen = json.loads(done.stdout)
    already = _common.ALREADY_INITIALISED.format("PidFileWriter")
    assert seen.count(already) == 1  # the inner __init__
    assert len(seen) == 21 and all(NOT_YET in s for s in seen if s != already)  # every write
    assert listing(tmp_path) == []  # no file, stray or otherwise


# The writer's core, reached directly: its _prepare re-entered from the stat it is given, and
# from another thread. Before the fix the inner call's bytes were freed under the C struct.
PREPARE_SCRIPT = """
import threading
writer = impl.PidFileWriter.__new__(impl.PidFileWriter)
seen = []

def prepare(name, info):
    target = os.fsencode(os.path.abspath(name))
    try:
        writer._prepare(name, target, target + b".", True, 0o644, b"", b"", info)
    except TypeError as err:
        seen.append(str(err))
    else:
        seen.append(name)

class Info:
    st_mode, st_dev = 0o40755, os.stat(".").st_dev
    @property
    def st_uid(self):  # the outer call looks at it; it prepares the writer first
        prepare("inner.pid", os.stat("."))
        [bytes(230) for _ in range(500)]  # churn the heap
        return os.getuid()
    st_gid = st_uid

prepare("outer.pid", Info())
racers = [threading.Thread(target=prepare, args=(f"t{i}.pid", os.stat("."))) for i in range(8)]
fresh = impl.PidFileWriter.__new__(impl.PidFileWriter)
for thread in racers:
    thread.start()
for thread in racers:
    thread.join()
writer.write(impl.PidRecord(7, 8))
print(json.dumps([seen, str(writer.path)]))
"""


def test_writer_core_is_prepared_once(impl, tmp_path):
    done = run_script(impl, PREPARE_SCRIPT, tmp_path)
    assert done.returncode == 0, done.stderr
    seen, path = json.loads(done.stdout)
    already = _common.ALREADY_INITIALISED.format("PidFileWriter")
    # One call prepares it (the first to get there: on the extension, the inner one, which
    # the outer's look at its stat ran); every other one is refused.
    assert path in seen and seen.count(already) == len(seen) - 1, seen
    assert len(seen) == (10 if impl.BACKEND == "cython" else 9), seen
    assert listing(tmp_path) == [path]
    assert shimpid.PidFileReader.at(tmp_path / path).read() == impl.PidRecord(7, 8)


# Methods called unbound on another object: a TypeError, never a read or write through it.
FOREIGN_SCRIPT = """
outcomes = []
for call in (
    lambda: impl.PidFileWriter.write_current(5),
    lambda: impl.PidFileWriter._check(object()),
    lambda: impl.PidFileWriter._sibling(bytearray(100), "x", b"x"),
    lambda: impl.PidFileWriter._write(object(), impl.PidRecord(1)),
    lambda: impl.PidFileWriter._prepare(bytearray(200), "x", b"x", b"x.", 1, 0o644, b"", b"", None),
    lambda: impl.PidRecord.encode(object()),
    lambda: impl.PidRecord.encode_into(object(), bytearray(64)),
    lambda: impl.PidRecord.__reduce__(object()),
    lambda: getattr(impl, "_SuffixScan", impl.PidRecord).close(object()),
):
    try:
        call()
    except (TypeError, AttributeError) as err:
        outcomes.append(type(err).__name__)
print(json.dumps(outcomes))
"""


def test_methods_refuse_another_object(impl, tmp_path):
    done = run_script(impl, FOREIGN_SCRIPT, tmp_path)
    assert done.returncode == 0, done.stderr  # a crash (SIGSEGV) before the fix
    assert len(json.loads(done.stdout)) == 9, done.stdout  # bytes read from object() before
    assert listing(tmp_path) == []


def test_writer_class_cannot_be_changed_or_extended(impl):
    for bases in [(impl.PidFileWriter,), (impl.PidFileWriter, _common.Final)]:
        with pytest.raises(TypeError, match="not an acceptable base type"):
            type("Sub", bases, {})
    if impl.BACKEND == "cython":  # as an extension type; the pure backend's is Python's
        with pytest.raises(TypeError, match=IMMUTABLE):
            impl.PidFileWriter.__new__ = staticmethod(lambda cls: None)


# ---- PidFileReader.__init__ and PidFileLock.__init__ -----------------------------------------


def test_reader_init_reentered_from_fspath(impl, tmp_path):
    impl.PidFileWriter.at(tmp_path / "a.pid").write(impl.PidRecord(1, 2))
    reader = shimpid.PidFileReader.__new__(shimpid.PidFileReader)
    door = Door(lambda: reader.__init__(tmp_path / "inner.pid"))
    during = Door(reader.read, reader.process_identity, reader.open_process, lambda: repr(reader))
    reader.__init__(HostilePath(tmp_path / "a.pid", Door(door.open, during.open)))
    assert door.all_refused(TypeError, ALREADY)
    assert during.all_refused(TypeError, NOT_YET)
    assert reader.path == str(tmp_path / "a.pid")
    assert reader.read() == impl.PidRecord(1, 2)


@pytest.mark.parametrize("kind", ["str", "bytes"])
def test_path_subclass_methods_never_run(impl, tmp_path, kind):
    """A str or bytes subclass given as a path is copied to an exact str or bytes before
    anything looks at it: its methods (__eq__, __contains__, encode, ...) never run."""
    door = Door(lambda: pytest.fail("a path subclass's method ran"))
    base = str if kind == "str" else bytes
    path = str(tmp_path / "a.pid") if kind == "str" else os.fsencode(tmp_path / "a.pid")
    given = hostile_str(base, door)(path)
    for make in (impl.PidFileWriter.at, shimpid.PidFileReader.at, _lock.PidFileLock.at):
        obj = make(given)
        assert type(obj.path) is base and obj.path == path
    impl.PidFileWriter.at(given).write(impl.PidRecord(3))
    assert shimpid.PidFileReader.at(given).read() == impl.PidRecord(3)
    assert not door.outcomes


def test_capability_subclass_methods_never_run(impl, tmp_path):
    door = Door(lambda: pytest.fail("a capability subclass's method ran"))
    writer = impl.PidFileWriter.at(
        tmp_path / "a.pid", capability=hostile_str(str, door)("services-mux-v1")
    )
    assert type(writer.capability) is str and writer.capability == "services-mux-v1"
    writer.write(impl.PidRecord(3))
    assert shimpid.PidFileReader.at(tmp_path / "a.pid").read_capability() == "services-mux-v1"


@pytest.mark.parametrize("argument", ["path", "mode"])
def test_lock_init_reentered(tmp_path, argument):
    lock = _lock.PidFileLock.__new__(_lock.PidFileLock)
    door = Door(lambda: lock.__init__(tmp_path / "inner.pid"))
    during = Door(lock.acquire, lock.release, lock.is_locked, lambda: repr(lock))
    both = Door(door.open, during.open)
    if argument == "path":
        lock.__init__(HostilePath(tmp_path / "a.pid", both))
    else:
        lock.__init__(tmp_path / "a.pid", mode=HostileInt(0o600, both))
    assert door.all_refused(TypeError, ALREADY)
    assert during.all_refused(TypeError, NOT_YET)
    assert lock.path == str(tmp_path / "a.pid") and lock.mode == (
        0o600 if argument == "mode" else 0o644
    )
    with lock:
        assert listing(tmp_path) == ["a.pid"]
    assert listing(tmp_path) == []


# ---- PidRecord ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["pid", "start_time"])
def test_record_init_reentered_from_index(impl, where):
    record = impl.PidRecord.__new__(impl.PidRecord)
    door = Door(lambda: record.__init__(7, 8))
    if where == "pid":
        record.__init__(HostileInt(5, door), 6)
    else:
        record.__init__(5, HostileInt(6, door))
    assert door.all_refused(TypeError, IMMUTABLE)
    assert (record.pid, record.start_time) == (5, 6)
    with pytest.raises(TypeError, match=IMMUTABLE):
        record.__init__(9)
    assert record == impl.PidRecord(5, 6) and hash(record) == hash(impl.PidRecord(5, 6))


def test_record_cannot_be_hashed_while_being_initialised(impl):
    """The issue's case: a record hashed from inside its own __init__ would change value (and
    hash) when that __init__ went on. It has no value yet: hashing it is refused."""
    record = impl.PidRecord.__new__(impl.PidRecord)
    seen: set = set()
    door = Door(lambda: seen.add(record))
    record.__init__(HostileInt(5, door))
    assert door.all_refused(TypeError, "being initialised")
    assert not seen and record == impl.PidRecord(5) and hash(record) == hash(impl.PidRecord(5))


def test_a_hashed_record_keeps_its_value(impl):
    """A record made by __new__ alone is PidRecord(0); once hashed it stays that, since a set
    or dict holds it by that hash."""
    record = impl.PidRecord.__new__(impl.PidRecord)
    seen = {record}
    before = hash(record)
    for args in [(5,), (HostileInt(5, Door(lambda: None)),)]:
        with pytest.raises(TypeError, match=IMMUTABLE):
            record.__init__(*args)
    assert record == impl.PidRecord(0) and hash(record) == before and record in seen


def test_record_init_failure_leaves_it_unmade(impl):
    record = impl.PidRecord.__new__(impl.PidRecord)
    with pytest.raises(OverflowError):
        record.__init__(HostileInt(-1, Door()))
    record.__init__(5)  # nothing was set, nor left marked as being initialised
    assert record == impl.PidRecord(5)


# ---- methods that convert an argument after the object is made --------------------------------


def test_write_for_reentered_from_index(impl, tmp_path, sleeper):
    writer = impl.PidFileWriter.at(tmp_path / "a.pid")
    door = Door(lambda: writer.__init__(tmp_path / "inner.pid"))
    writer.write_for(HostileInt(sleeper.pid, door))
    assert door.all_refused(TypeError, ALREADY)
    assert listing(tmp_path) == ["a.pid"]
    assert shimpid.PidFileReader.at(tmp_path / "a.pid").read().pid == sleeper.pid


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python classes export buffers from 3.12")
def test_buffer_exports_reenter(impl, tmp_path):
    record = impl.PidRecord.__new__(impl.PidRecord)
    target = bytearray(64)

    class Exporter:
        def __init__(self, data, door):
            self.data, self.door = data, door

        def __buffer__(self, flags):
            self.door.open()
            return memoryview(self.data)

        def __release_buffer__(self, view):
            self.door.open()
            view.release()

    door = Door(lambda: record.__init__(7))
    record.__init__(HostileInt(5, Door(lambda: record.encode_into(Exporter(target, door)))))
    assert door.all_refused(TypeError, IMMUTABLE)  # from the export and from its release
    assert record == impl.PidRecord(5) and target[:2] == b"0\n"  # it was not made yet
    data = bytearray(b"12\n34\n")
    decoded = impl.PidRecord.decode(Exporter(data, Door(lambda: data.extend(b"5" * 4096))))
    assert decoded == impl.PidRecord(12, 34)


# ---- process handles: a conversion must not close or swap the pidfd a method holds ----------


def _pidfds() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]":
                found.add(int(name))
        except OSError:
            pass
    return found


@pytest.fixture
def victim():
    """Another live process: what a swapped pidfd would signal."""
    child = subprocess.Popen(["sleep", "60"])
    yield child
    stop(child)


def _alive(child) -> bool:
    try:
        child.wait(0.2)
    except subprocess.TimeoutExpired:
        return True
    return False


def test_send_signal_converts_before_using_the_pidfd(impl, tmp_path, sleeper, victim):
    require_pidfd_level(impl, _common.PIDFD, "pidfds (Linux 5.3+)")
    impl.PidFileWriter.at(tmp_path / "a.pid").write_for(sleeper.pid)
    handle = shimpid.PidFileReader.at(tmp_path / "a.pid").open_process()
    number = handle.fileno()
    victim_fd = os.pidfd_open(victim.pid)

    def swap():  # close the handle, and put another process's pidfd at its number
        handle.close()
        os.dup2(victim_fd, number)

    try:
        with pytest.raises(ValueError, match="closed"):
            handle.send_signal(HostileInt(int(signal.SIGKILL), Door(swap)))
    finally:
        os.close(victim_fd)
        if number in _pidfds():
            os.close(number)
    assert _alive(victim) and _alive(sleeper)


def test_wait_converts_before_using_the_pidfd(impl, tmp_path, sleeper):
    require_pidfd_level(impl, _common.PIDFD, "pidfds (Linux 5.3+)")
    impl.PidFileWriter.at(tmp_path / "a.pid").write_for(sleeper.pid)
    handle = shimpid.PidFileReader.at(tmp_path / "a.pid").open_process()

    class Timeout:
        """A number whose every operation closes the handle's pidfd behind its back."""

        def _close(self, *args):
            handle.close()
            return self

        def __float__(self):
            handle.close()
            return 0.05

        __lt__ = __gt__ = __le__ = __ge__ = lambda self, other: (handle.close(), True)[1]
        __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _close

    with pytest.raises(ValueError, match="closed"):
        handle.wait(Timeout())  # never "it has exited": the process lives on
    assert _alive(sleeper)


def test_open_process_allow_legacy_converted_before_pinning(impl, tmp_path, sleeper, victim):
    require_pidfd_level(impl, _common.PIDFD, "pidfds (Linux 5.3+)")
    # A legacy record (no start time): allow_legacy is looked at only for such a record.
    legacy = impl.PidFileWriter.at(tmp_path / "a.pid", identity_line=False)
    legacy.write(impl.PidRecord(sleeper.pid))
    reader = shimpid.PidFileReader.at(tmp_path / "a.pid")
    victim_fd = os.pidfd_open(victim.pid)
    before = _pidfds()

    def swap():  # put another process's pidfd at the number of any pidfd opened meanwhile
        for number in _pidfds() - before:
            os.dup2(victim_fd, number)

    try:
        handle = reader.open_process(allow_legacy=HostileBool(True, Door(swap)))
        assert handle is not None and handle.pid == sleeper.pid
        handle.kill()
        handle.close()
    finally:
        os.close(victim_fd)
    assert _alive(victim) and not _alive(sleeper)


def test_acquire_converts_its_timeout_first(tmp_path):
    """acquire(timeout) looks at the caller's number once, at the start: no caller code runs
    between its tries (where it holds temporary files and descriptors)."""
    holder = _lock.PidFileLock.at(tmp_path / "a.pid")
    holder.acquire(0)
    lock = _lock.PidFileLock.at(tmp_path / "a.pid")
    hooks: list[str] = []

    class Timeout:
        def __ge__(self, other):
            hooks.append("__ge__")
            return True

        def __float__(self):
            hooks.append("__float__")
            return 0.05

        def _late(name):
            def hook(self, *args):
                hooks.append(name)
                return 0.05

            return hook

        __radd__ = _late("__radd__")
        __add__ = _late("__add__")
        __rsub__ = _late("__rsub__")
        __sub__ = _late("__sub__")
        __lt__ = _late("__lt__")
        __gt__ = _late("__gt__")

    started = time.monotonic()
    with pytest.raises(_lock.AlreadyLocked):
        lock.acquire(Timeout())
    assert time.monotonic() - started < 5
    assert hooks == ["__ge__", "__float__"]
    holder.release()


def test_inspect_converts_secure_first(tmp_path):
    """inspect(secure=...) looks at the caller's value once, before the walk (which holds off
    signals and keeps descriptors open while it goes)."""
    (tmp_path / "a.pid").write_bytes(b"1\n")
    opened = []
    door = Door(lambda: opened.append(len(os.listdir("/proc/self/fd"))))
    before = len(os.listdir("/proc/self/fd"))
    found = _operate.inspect(tmp_path / "a.pid", secure=HostileBool(True, door))
    assert found.pid == 1 and opened == [before]  # once, with nothing open yet
