"""Pure-Python backend: the readable specification of shimpid, and the fallback.

``_speedups.pyx`` does the same with the work in C, under the same names where a function has
the same role (its docstring lists what only it has); read them side by side. Used where the
extension cannot be built (Windows, PyPy) or when ``SHIMPID_PURE_PYTHON=1`` is set.

System calls go through ``os.open``/``os.read``/``os.write`` rather than ``open()``: the buffered
file objects cost more than the calls themselves on these paths.
"""

from __future__ import annotations

import errno
import functools
import operator
import os
import select
import signal
import sys
import time

from . import _common, _writer
from ._common import (
    ABSENT,
    NO_PIDFD,
    PID_FILE_MAX_BYTES,
    PID_RECORD_MAX_BYTES,
    PIDFD,
    PIDFS,
    U32_MAX,
    U64_MAX,
    Kept,
    Legacy,
    StorageError,
    Verified,
    keep,
)
from ._common import CREATE_IN_PLACE as _CREATE_IN_PLACE
from ._common import O_CLOEXEC as _O_CLOEXEC
from ._common import OPEN_IN_PLACE as _OPEN_IN_PLACE
from ._common import OPEN_READ as _OPEN_READ
from ._common import PROC_FOREIGN as _PROC_FOREIGN
from ._common import PROC_NONE as _PROC_NONE
from ._common import PROC_OURS as _PROC_OURS
from ._common import S_IFMT as _S_IFMT
from ._common import S_IFREG as _S_IFREG
from ._common import check_target as _check_target
from ._common import discard_temp as _discard_temp
from ._common import end_init as _end_init
from ._common import mark_initialising as _mark_initialising
from ._common import proc_state as _proc_state
from ._common import write_all as _write_all
from ._common import write_error as _write_error
from ._common import write_temp as _write_temp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, Literal

    from ._common import Absent

#: The backend's name, as shimpid.BACKEND gives it.
BACKEND: Final[Literal["cython", "python"]] = "python"

# What this backend gives shimpid._backend (its Backend protocol): the public API, then the
# primitives the policy modules are written over.
__all__ = [
    "BACKEND",
    "PidFileWriter",
    "PidRecord",
    "_classify",
    "_identity_at",
    "_pidfd_level",
    "_pin_and_classify",
    "_read_pid_file",
    "is_process_alive",
    "process_start_time",
]

_LINUX = sys.platform.startswith("linux")
_DARWIN = sys.platform == "darwin"
_WINDOWS = sys.platform == "win32"

# ============================================================================
# PidRecord: the codec
# ============================================================================


class PidRecord:
    """A process's identity as a pid file holds it: ``pid`` and, if known, ``start_time``.

    An immutable, hashable, picklable value. ``pid`` is ``0 .. 2**32-1`` and ``start_time``
    ``0 .. 2**64-1`` or ``None``: out of range raises ``OverflowError``, a non-integer
    ``TypeError``.
    """

    __slots__ = ("_pid", "_start_time")
    _pid: int
    _start_time: int | None

    def __init__(self, pid: int, start_time: int | None = None) -> None:
        _mark_initialising(self, _common.RECORD_IMMUTABLE)  # __index__ may call back
        try:
            try:
                _get_pid(self)
            except AttributeError:
                pass
            else:  # a record is a value: it never changes (its hash would)
                raise TypeError(_common.RECORD_IMMUTABLE)
            pid = operator.index(pid)
            if not 0 <= pid <= U32_MAX:
                raise OverflowError(_common.PID_RANGE)
            if start_time is not None:
                start_time = operator.index(start_time)
                if not 0 <= start_time <= U64_MAX:
                    raise OverflowError(_common.START_TIME_RANGE)
            _set_start_time(self, start_time)
            _set_pid(self, pid)  # last: a set pid is what says "made" (see __hash__)
        finally:
            _end_init(self)

    def __init_subclass__(cls, **kwargs: object) -> None:
        _common.refuse_base(PidRecord)

    def __getattr__(self, name: str) -> object:
        # An unset slot: a record made by __new__ alone is PidRecord(0), as in the extension.
        if name == "_pid":
            return 0
        if name == "_start_time":
            return None
        raise AttributeError(f"'PidRecord' object has no attribute {name!r}")

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def start_time(self) -> int | None:
        return self._start_time

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(_common.record_immutable("set", name))

    def __delattr__(self, name: str) -> None:
        raise AttributeError(_common.record_immutable("delete", name))

    def __eq__(self, other: object) -> bool:
        if type(other) is not PidRecord:
            return NotImplemented
        return self._pid == other._pid and self._start_time == other._start_time

    def __hash__(self) -> int:
        try:
            pid = _get_pid(self)
        except AttributeError:
            pid = _made_by_hash(self)
        return hash((pid, self._start_time))

    def __repr__(self) -> str:
        return f"PidRecord(pid={self._pid}, start_time={self._start_time!r})"

    def __reduce__(self) -> tuple[type, tuple[int, int | None]]:
        return (PidRecord, (self._pid, self._start_time))

    @staticmethod
    def current() -> PidRecord:
        """This process's pid and start time (``None`` where the platform gives none)."""
        try:
            info = _proc_info(0)
        except OSError:
            info = None  # no /proc, or a platform without start times: the reference's None
        return _new_record(os.getpid(), None if info is None else info[1])

    @staticmethod
    def decode(data: bytes | bytearray | memoryview) -> PidRecord:
        """Parse a pid file's bytes (any bytes-like object) exactly as the reference's
        ``PidRecord::decode`` does (the rules: the file format page); ``StorageError`` if they
        hold no record."""
        if type(data) is not bytes:
            data = _byte_view(data).tobytes()
        return _new_record(*_common.decode_record(data))

    def encode(self, /) -> bytes:
        """The bytes a pid file holds: ``b"<pid>\\n<start_time>\\n"``, or ``b"<pid>\\n"``."""
        if self._start_time is None:
            return b"%d\n" % self._pid
        return b"%d\n%d\n" % (self._pid, self._start_time)

    def encode_into(self, /, buffer: bytearray | memoryview) -> int:
        """Write ``encode()`` into a writable buffer of at least 48 bytes; return its length."""
        view = _byte_view(buffer)
        if view.readonly:
            raise TypeError(_common.BUFFER_READONLY)
        if view.nbytes < PID_RECORD_MAX_BYTES:
            raise ValueError(_common.buffer_too_small(view.nbytes))
        data = self.encode()
        view[: len(data)] = data
        return len(data)


# The slots' own accessors: they bypass the __setattr__ that keeps records immutable.
_get_pid = PidRecord.__dict__["_pid"].__get__
_set_pid = PidRecord.__dict__["_pid"].__set__
_set_start_time = PidRecord.__dict__["_start_time"].__set__


def _made_by_hash(record: PidRecord) -> int:
    """A record made by ``__new__`` alone is PidRecord(0); hashed, it stays that for good (a
    set or dict holds it by that hash), so a later __init__ is refused. One whose __init__ is
    under way has no value yet: ``TypeError``."""
    # Marked as an __init__ marks it: one under way (or another thread's) cannot finish between
    # this look and these sets, nor this overwrite one that has.
    _mark_initialising(record, _common.RECORD_INITIALISING)
    try:
        try:
            made: int = _get_pid(record)  # made meanwhile
            return made
        except AttributeError:
            pass
        _set_start_time(record, None)
        _set_pid(record, 0)
        return 0
    finally:
        _end_init(record)


def _new_record(pid: int, start_time: int | None) -> PidRecord:
    # Values already known to be in range: skip __init__'s checks.
    record = object.__new__(PidRecord)
    _set_pid(record, pid)
    _set_start_time(record, start_time)
    return record


def _fill(writer: WriterCore, **slots: object) -> None:
    """Set a writer's slots, in the order given (``_target`` last: it says the writer is
    ready), past its own __setattr__, which refuses them."""
    for name, value in slots.items():
        object.__setattr__(writer, name, value)


def _byte_view(obj: object) -> memoryview:
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(_common.not_bytes_like(obj)) from None
    if not view.c_contiguous:
        raise BufferError(_common.BUFFER_NOT_CONTIGUOUS)
    if not view.nbytes:  # cast() refuses a shape with a zero in it: (0, 3)
        return memoryview(b"" if view.readonly else bytearray())
    return view.cast("B")


# ============================================================================
# PidFileWriter: child-side I/O
# ============================================================================


class WriterCore:
    """The writes of PidFileWriter (``shimpid._writer`` has the rest, and says what is whose):
    what they need, prepared once."""

    __slots__ = (
        "_atomic",
        "_capability",
        "_identity",
        "_mode",
        "_path",
        "_pidfs",
        "_target",
        "_temp_prefix",
    )
    _atomic: bool
    _capability: bytes
    _identity: bytes
    _mode: int
    _path: str | bytes
    _pidfs: bool
    _target: bytes
    _temp_prefix: bytes

    def _prepare(
        self,
        given: str | bytes,
        target: bytes,
        temp_prefix: bytes,
        atomic: bool,
        mode: int,
        identity: bytes,
        capability: bytes,
        info: os.stat_result,
    ) -> None:
        if hasattr(self, "_target"):
            raise TypeError(_common.ALREADY_INITIALISED.format("PidFileWriter"))
        # Decided here, in the parent: write_current() may run after fork().
        pidfs = bool(identity) and _pidfd_level() == PIDFS
        _fill(
            self,
            _path=given,
            _temp_prefix=temp_prefix,
            _atomic=atomic,
            _mode=mode,
            _identity=identity,
            _capability=capability,
            _pidfs=pidfs,
            _target=target,
        )

    def _check(self) -> None:
        if not hasattr(self, "_target"):
            raise TypeError(_common.NOT_INITIALISED.format("PidFileWriter"))

    def _sibling(self, given: str | bytes, target: bytes) -> PidFileWriter | None:
        """A writer like this one for ``target``, a path checked by ``_common.writer_target``
        in the same directory, made without a system call (see _spawn). (The extension's
        answers ``None`` where it swaps files; this backend always renames.)"""
        self._check()
        sibling = object.__new__(PidFileWriter)
        pidfs = bool(self._identity) and _pidfd_level() == PIDFS  # as __init__ would decide
        _fill(
            sibling,
            _path=given,
            _temp_prefix=_common.temp_prefix(target),
            _atomic=self._atomic,
            _mode=self._mode,
            _identity=self._identity,
            _capability=self._capability,
            _pidfs=pidfs,
            _target=target,
        )
        return sibling

    # What it is made of never changes once made (as the extension's read-only members).
    def __setattr__(self, name: str, value: object) -> None:
        if name in WriterCore.__slots__:
            raise AttributeError(_common.not_writable(name))
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in WriterCore.__slots__:
            raise AttributeError(_common.not_writable(name))
        object.__delattr__(self, name)

    def _write(self, record: PidRecord) -> None:
        self._check()
        if type(record) is not PidRecord:
            raise TypeError(_common.expected_record(record))
        self._put(record, None)

    def write_current(self, /) -> None:
        """Write this process's record. Takes no arguments, so it can be a ``preexec_fn``."""
        self._check()
        record = PidRecord.current()
        pidfs_id = None
        if self._pidfs:
            pidfd = keep(os.pidfd_open, record._pid)
            try:
                pidfs_id = os.fstat(pidfd[0]).st_ino
            except OSError as err:
                raise _write_error(err, self._path) from None
            finally:
                if pidfd:
                    os.close(pidfd[0])
        self._put(record, pidfs_id)

    def _write_for(self, pid: int, start_time: int | None = None) -> None:
        self._check()
        start_time, pidfs_id = _identity_of(pid, self._pidfs, start_time)
        self._put(_new_record(pid, start_time), pidfs_id)

    def _put(self, record: PidRecord, pidfs_id: int | None) -> None:
        data = _common.file_bytes(
            record.encode(),
            record._start_time is not None,
            self._capability,
            self._identity,
            pidfs_id,
        )
        try:
            if self._atomic:
                _write_atomic(self._target, self._temp_prefix, data, self._mode)
            else:
                _write_in_place(self._target, data, self._mode)
        except OSError as err:
            raise _write_error(err, self._path) from None


class PidFileWriter(_writer.PidFileWriter, WriterCore):
    __doc__ = _writer.PidFileWriter.__doc__
    __module__ = "shimpid"  # shown as what it is to users (reprs, documentation)
    __slots__ = ()


def _write_in_place(target: bytes, data: bytes, mode: int) -> None:
    flags = _OPEN_IN_PLACE
    for attempt in range(_common.IN_PLACE_ATTEMPTS):
        if attempt:
            time.sleep(_common.IN_PLACE_PAUSE)
        _check_target(target)  # before opening: opening a FIFO or a device has effects of its own
        kept = keep(os.open, target, flags, mode)
        try:
            try:
                fd = kept[0]
            except BlockingIOError:
                continue  # a remover's lease: its file is going, look the path up again
            except FileExistsError:
                return  # (only again) a newer file came to the path: it stands
            info = os.fstat(fd)
            # Checked before anything is written: a device (say) is never written to, and a
            # file of another user's is never left holding our record under their name.
            if info.st_mode & _S_IFMT != _S_IFREG:
                raise OSError(errno.ENXIO, _common.NOT_REGULAR_TARGET)
            if info.st_uid != os.geteuid():
                raise OSError(errno.EPERM, os.strerror(errno.EPERM))
            if not info.st_nlink:
                # Unlinked already: this open looked the name up before a remover that judged
                # the file (or a writer renaming a newer one over it) took it away, and reached
                # it after. (While this holds it open, a remover's lease cannot be had.) Again,
                # only where nothing is: a newer file there stands.
                flags = _CREATE_IN_PLACE
                continue
            os.ftruncate(fd, 0)
            _write_all(fd, data)
            return
        finally:
            if kept:
                os.close(kept[0])  # an error from close() (NFS) fails the write
    raise OSError(errno.EAGAIN, _common.KEPT_CHANGING)


def _write_atomic(target: bytes, temp_prefix: bytes, data: bytes, mode: int) -> None:
    _check_target(target)
    made: list[tuple[bytes, Kept]] = []
    try:
        _write_temp(made, temp_prefix, data, mode)
        temp, kept = made[0]
        kept[1] = 0  # closed: not again by _discard_temp
        os.close(kept[0])
        os.replace(temp, target)  # never over a directory: EISDIR
    except BaseException:
        _discard_temp(made)
        raise


# ============================================================================
# Reading pid files: parent-side I/O (shimpid._reader is PidFileReader)
# ============================================================================


def _identity_at(
    directory_fd: int | None, target: bytes, path: str | bytes | None = None
) -> Verified | Legacy | Absent:
    """The verdict for the pid file at target, relative to an open directory if one is given
    (shimpid.scan)."""
    try:
        data = _read_pid_file(target, target if path is None else path, directory_fd)
        record = PidRecord.decode(data)
    except StorageError as err:
        if _common.is_answer(err):
            return ABSENT
        raise
    extras = _common.parse_extras(data)
    if _common.from_another_boot(extras):
        return ABSENT
    return _classify(record._pid, record._start_time, extras.pidfs_id)


def _read_on(fd: int, data: bytes) -> bytes:
    """data and what follows it in fd, to one byte past the limit at most (a loop of its own:
    see _common's note on loops)."""
    while len(data) <= PID_FILE_MAX_BYTES:
        chunk = os.read(fd, PID_FILE_MAX_BYTES + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _read_pid_file(target: bytes, path: str | bytes, directory_fd: int | None = None) -> bytes:
    kept = keep(os.open, target, _OPEN_READ, dir_fd=directory_fd)
    try:
        fd = kept[0]
    except OSError as err:
        raise _common.read_error(err.errno or errno.EIO, path)  # noqa: B904 - it sets its cause
    try:
        try:
            info = os.fstat(fd)
            if info.st_mode & _S_IFMT != _S_IFREG:
                raise _common.content_error(_common.NOT_REGULAR, path)
            if info.st_size > PID_FILE_MAX_BYTES:
                raise _common.content_error(_common.TOO_LARGE, path)
            data = os.read(fd, PID_FILE_MAX_BYTES + 1)
            # One read returns a regular file whole; read on only after a short one.
            if len(data) != info.st_size:
                data = _read_on(fd, data)
        except StorageError:
            raise
        except OSError as err:
            raise _common.read_error(err.errno or errno.EIO, path)  # noqa: B904 - as above
    finally:
        os.close(kept[0])
    if len(data) > PID_FILE_MAX_BYTES:
        raise _common.content_error(_common.TOO_LARGE, path)
    return data


# ============================================================================
# Live processes
# ============================================================================
#
# A process is named by a pidfd where the kernel has them: pidfd_open(pid) pins the process
# holding pid, refuses a thread id (a thread is not a process), and the pidfd polls readable once
# the process has exited (a zombie too). On Linux 6.9+ its pidfs inode is the fingerprint. Where
# there are no pidfds, kill(pid, 0) and /proc/<pid>/status (State, Tgid) say the same, with a
# window between the calls. Start times come from /proc/<pid>/stat, which must be this pid
# namespace's /proc. Every failure other than "no such process" is raised.


def _classify(pid: int, start_time: int | None, pidfs_id: int | None) -> Verified | Legacy | Absent:
    """The verdict for a record; ``OSError`` when the system cannot tell."""
    pidfd = _common.slot()
    try:
        return _pin_and_classify(pid, start_time, pidfs_id, pidfd)
    finally:
        if pidfd:
            os.close(pidfd[0])


def _pin_and_classify(
    pid: int, start_time: int | None, pidfs_id: int | None, pidfd: Kept
) -> Verified | Legacy | Absent:
    """``_classify``'s verdict, reached through a pidfd where there are pidfds: opened as
    ``pidfd[0]`` (an empty ``_common.slot()``), the caller's to close, whatever happens.

    The pidfd is opened first and the identity checked after: a match then proves the pidfd
    refers to the recorded process (see ``shimpid._handle``).
    """
    if not _common.names_a_process(pid):
        return ABSENT
    level = _pidfd_level()
    if level == NO_PIDFD:
        return _classify_without_pidfd(pid, start_time)
    pidfd.default_factory = functools.partial(os.pidfd_open, pid)
    if not _pinned(pidfd):
        return ABSENT
    return _classify_pinned(pid, start_time, pidfs_id, pidfd[0], level)


def _classify_pinned(
    pid: int, start_time: int | None, pidfs_id: int | None, pidfd: int, level: int
) -> Verified | Legacy | Absent:
    if pidfs_id is not None and level == PIDFS:
        # The inode names one process for the whole boot: no /proc, no clock-tick granularity.
        if os.fstat(pidfd).st_ino != pidfs_id or _has_exited(pidfd):
            return ABSENT
        return Verified(pid)
    if start_time is None:
        return ABSENT if _has_exited(pidfd) else Legacy(pid)
    live = _stat_of_pinned(pid, pidfd)[1]
    # Alive is what the pidfd says: /proc shows a process whose main thread called
    # pthread_exit() as a zombie while its other threads run on.
    if live != start_time or _has_exited(pidfd):  # another process's pid now, or exited
        return ABSENT
    return Verified(pid)


def _classify_without_pidfd(pid: int, start_time: int | None) -> Verified | Legacy | Absent:
    if _WINDOWS:
        if not _windows_alive(pid):
            return ABSENT
        if start_time is None:
            return Legacy(pid)
        raise OSError(errno.ENOSYS, "no process start times on this platform")
    info = _unpinned_info(pid)
    if info is None or not info[0]:
        return ABSENT
    if start_time is None:
        return Legacy(pid)
    if info[1] is None:
        raise _common.no_proc_error()
    return Verified(pid) if info[1] == start_time else ABSENT


def is_process_alive(pid: int) -> bool:
    """True if ``pid`` names one live process that is not a zombie (another user's counts).

    A thread id is not a process. ``OSError`` when the system cannot tell.
    """
    pid = operator.index(pid)
    if not _common.names_a_process(pid):
        return False
    if _pidfd_level() == NO_PIDFD:
        if _WINDOWS:
            return _windows_alive(pid)
        info = _unpinned_info(pid)
        return info is not None and info[0]
    pidfd = keep(os.pidfd_open, pid)
    try:
        return _pinned(pidfd) and not _has_exited(pidfd[0])
    finally:
        if pidfd:
            os.close(pidfd[0])


def process_start_time(pid: int) -> int | None:
    """The start time of the process holding ``pid`` (a zombie still holds it), or ``None``.

    ``None`` also for a thread id, and on platforms without start times (Windows). ``OSError``
    when the system cannot tell (no /proc; ``ForeignProcError``: another namespace's /proc).
    """
    pid = operator.index(pid)
    if not _common.names_a_process(pid):
        return None
    if _pidfd_level() == NO_PIDFD:
        if _WINDOWS:
            return None
        info = _unpinned_info(pid)
        if info is not None and info[1] is None:
            raise _common.no_proc_error()
        return None if info is None else info[1]
    pidfd = keep(os.pidfd_open, pid)
    try:
        return _stat_of_pinned(pid, pidfd[0])[1] if _pinned(pidfd) else None
    finally:
        if pidfd:
            os.close(pidfd[0])


def _identity_of(
    pid: int, with_pidfs: bool, start_time: int | None = None
) -> tuple[int | None, int | None]:
    """``(start time, pidfs inode)`` of a process, for a record of it (``write_for``).

    ``ProcessLookupError`` if no process holds pid (or it is a thread). Unlike a verdict, a
    record can do without a start time where the system keeps none (no /proc mounted).
    ``start_time``, where the caller knows it (``spawn``: ``_common.start_time_between``),
    stands for the read of /proc, where /proc is this namespace's: elsewhere it is as if not
    given.
    """
    if not _common.names_a_process(pid):
        raise _common.no_such_process(pid)
    if _pidfd_level() == NO_PIDFD:
        if _WINDOWS:
            if not _windows_alive(pid):
                raise _common.no_such_process(pid)
            return None, None
        info = _unpinned_info(pid)
        if info is None:
            raise _common.no_such_process(pid)
        return info[1], None
    pidfd = keep(os.pidfd_open, pid)
    try:
        if not _pinned(pidfd):
            raise _common.no_such_process(pid)
        pidfs_id = os.fstat(pidfd[0]).st_ino if with_pidfs else None
        proc = _proc_state()
        if proc == _PROC_NONE:
            return None, pidfs_id
        if start_time is not None and proc == _PROC_OURS:
            return start_time, pidfs_id
        return _stat_of_pinned(pid, pidfd[0])[1], pidfs_id
    finally:
        if pidfd:
            os.close(pidfd[0])


def _pinned(pidfd: Kept) -> bool:
    """Open ``pidfd = keep(os.pidfd_open, pid)``: False if no process holds pid (or it is a
    thread's). The caller owns the dict, so the pidfd is its to close whatever happens here."""
    try:
        pidfd[0]
    except OSError as err:
        if err.errno in _common.NOT_A_PROCESS_ERRNOS:
            return False
        raise
    return True


def _has_exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _stat_of_pinned(pid: int, pidfd: int) -> tuple[int, int | None]:
    """``(state, start time)`` of the process a pidfd pins, from this namespace's /proc."""
    info = _proc_info(pid)
    if info is None:
        if not _has_exited(pidfd):
            raise _common.hidden_process_error(pid)
        return ord("X"), None  # reaped since it was pinned
    return info


def _unpinned_info(pid: int) -> tuple[bool, int | None] | None:
    """Without pidfds: ``(alive, start time)`` of the process holding pid, or None if none does.

    kill(pid, 0) says whether anybody holds pid (EPERM: somebody, another user's); then
    /proc/<pid>/status whether that is a process rather than a thread (Tgid) and whether it is
    alive (State, and Threads: a process whose main thread called pthread_exit() shows as a
    zombie while its other threads run on), and /proc/<pid>/stat its start time. Where there is
    no /proc, only kill() can be asked: ``(True, None)``.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, and belongs to another user
    if _DARWIN:
        info = _proc_info(pid)
        return None if info is None else (info[0] != ord("Z"), info[1])
    if not _LINUX or _proc_state() == _PROC_NONE:
        return True, None
    if _proc_state() == _PROC_FOREIGN:
        raise _common.ForeignProcError()  # its /proc/<pid> is somebody else
    status = _status_of(pid)
    if status is None:
        if _exists(pid):  # kill() sees it, /proc does not: hidden (hidepid)
            raise _common.hidden_process_error(pid)
        return None
    state, thread_group, threads = status
    if thread_group != pid:
        return None  # a thread of another process
    info = _proc_info(pid)
    if info is None:
        return None
    return state not in b"ZX" or threads > 1, info[1]


def _exists(pid: int) -> bool:
    """Somebody holds pid (kill(pid, 0) succeeds, or fails with EPERM)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _status_of(pid: int) -> tuple[int, int, int] | None:
    """``State`` (a byte), ``Tgid`` and ``Threads`` of /proc/<pid>/status, or None if it is gone.

    ``Threads`` comes after ``Groups``, which a process in many groups makes longer than the
    read: it is needed only for a zombie (its main thread may have exited), 1 if missing else.
    """
    kept = keep(os.open, b"/proc/%d/status" % pid, os.O_RDONLY | _O_CLOEXEC)
    try:
        data = os.read(kept[0], _common.STATUS_READ_BYTES)
    except (FileNotFoundError, ProcessLookupError):
        return None  # gone, before open() or between open() and read()
    finally:
        if kept:
            os.close(kept[0])
    fields = {}
    for line in data.split(b"\n")[:-1]:  # the last: cut short by the read, or empty
        key, _, value = line.partition(b":")
        if key in (b"State", b"Tgid", b"Threads"):
            fields[key] = value.strip()
    try:
        state = fields[b"State"][0]
        threads = fields.get(b"Threads", b"1" if state not in b"ZX" else b"")
        return state, int(fields[b"Tgid"]), int(threads)
    except (KeyError, IndexError, ValueError):
        raise OSError(errno.EIO, os.strerror(errno.EIO)) from None  # as the extension's


def _proc_info(pid: int) -> tuple[int, int | None] | None:
    """``(state, start time)`` of pid (0: this process), or None if no process holds it.

    ``state`` is the byte of ``/proc/<pid>/stat`` field 3 (0 if unknown). Another process's
    entry is read only from this namespace's /proc.
    """
    if _LINUX:
        if pid == 0:
            path = b"/proc/self/stat"  # always this process, whichever namespace /proc shows
        else:
            state = _proc_state()
            if state == _PROC_FOREIGN:
                raise _common.ForeignProcError()
            if state == _PROC_NONE:
                raise _common.no_proc_error()
            path = b"/proc/%d/stat" % pid
        kept = keep(os.open, path, os.O_RDONLY | _O_CLOEXEC)
        try:
            data = os.read(kept[0], _common.STAT_READ_BYTES)
        except (FileNotFoundError, ProcessLookupError):
            return None  # gone, before open() or between open() and read()
        finally:
            if kept:
                os.close(kept[0])
        return _parse_stat(data)
    if _DARWIN:
        try:
            return _darwin_proc_info(pid or os.getpid())
        except ProcessLookupError:
            return None
    raise OSError(errno.ENOSYS, "no process start times on this platform")


# ---- what this system offers, found out once ---------------------------------------------------

_pidfd_level_found: int | None = None


def _pidfd_level() -> int:
    """``PIDFS``, ``PIDFD`` or ``NO_PIDFD`` (see ``_common``), found out on first use."""
    global _pidfd_level_found
    if _pidfd_level_found is None:
        try:
            _pidfd_level_found = _find_pidfd_level()
        except OSError:  # a passing failure (EMFILE...): none this time, found out next time
            return NO_PIDFD
    return _pidfd_level_found


def _set_pidfd_level(level: int) -> int:
    """Use ``level`` instead of what the kernel offers (tests of the fallbacks); the old one.

    Only a level this system offers: a lower one is a fallback, a higher one would fail."""
    global _pidfd_level_found
    old = _pidfd_level()
    if level > _find_pidfd_level():
        raise ValueError(f"pidfd level {level} is more than this system offers")
    _pidfd_level_found = level
    return old


def _find_pidfd_level() -> int:
    """What the kernel offers; OSError if this moment cannot tell (``PASSING_ERRNOS``)."""
    if not _LINUX or not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        return NO_PIDFD
    pidfd = keep(os.pidfd_open, os.getpid())
    probe = keep(os.eventfd, 0, os.EFD_CLOEXEC)
    try:
        pidfd_device = os.fstat(pidfd[0]).st_dev
    except OSError as err:  # ENOSYS: a kernel before 5.3; EPERM: a seccomp filter
        if err.errno in _common.PASSING_ERRNOS:
            raise
        return NO_PIDFD
    else:
        # Before 6.9 every pidfd is one anonymous inode (its number names nothing), on the
        # filesystem of every anonymous inode, an eventfd's too; pidfs is a filesystem of its own.
        # (The extension asks fstatfs(), which os lacks: ctypes, which may not import where a
        # daemon has since chrooted or dropped root.) An eventfd refused (ENOSYS: a kernel
        # without them) cannot tell: pidfds then, not their inodes.
        try:
            return PIDFD if os.fstat(probe[0]).st_dev == pidfd_device else PIDFS
        except OSError as err:
            if err.errno in _common.PASSING_ERRNOS:
                raise
            return PIDFD
    finally:
        try:
            if pidfd:
                os.close(pidfd[0])
        finally:
            if probe:
                os.close(probe[0])


def _parse_stat(data: bytes) -> tuple[int, int | None]:
    """``(state, start_time)`` from a ``/proc/<pid>/stat`` line, as the kernel writes it.

    The command name (field 2) may hold spaces and ``)``: everything after the LAST ``)`` is the
    kernel's, one space before each field (psutil's reading). Field 3, the state, is the first
    of those; field 22, the start time in clock ticks since boot, the 20th.
    """
    close = data.rfind(b")")
    if close < 0:
        return 0, None
    fields = data[close + 1 :].partition(b"\n")[0].split(b" ")  # fields[0]: before the space
    state = fields[1][0] if len(fields) > 1 and fields[1] else 0
    start = fields[20] if len(fields) > 20 else b""
    # Any number of leading zeros, as the reference's u64 parse takes them (the fuzzer found
    # 22 digits refused here); the length is checked without them, before int() sees them.
    digits = start.lstrip(b"0") or b"0"
    if start.isdigit() and len(digits) <= 20 and int(digits) <= U64_MAX:
        return state, int(digits)
    return state, None


# --- macOS and Windows: untested here (docs/reference/platforms.md) ---------------------------

_darwin_libc = None


def _darwin_proc_info(pid: int) -> tuple[int, int | None]:
    # proc_pidinfo(PROC_PIDTBSDINFO), as the reference reads it.
    import ctypes

    global _darwin_libc
    if _darwin_libc is None:
        _darwin_libc = ctypes.CDLL(None, use_errno=True)

    class BsdInfo(ctypes.Structure):
        _fields_ = [
            ("flags_to_rfu", ctypes.c_uint32 * 12),
            ("comm", ctypes.c_char * 16),
            ("name", ctypes.c_char * 32),
            ("nfiles_to_tpgid", ctypes.c_uint32 * 5),
            ("nice", ctypes.c_int32),
            ("start_tvsec", ctypes.c_uint64),
            ("start_tvusec", ctypes.c_uint64),
        ]

    info = BsdInfo()
    size = ctypes.sizeof(info)
    got = _darwin_libc.proc_pidinfo(pid, 3, ctypes.c_uint64(0), ctypes.byref(info), size)
    if got != size:
        code = ctypes.get_errno() or errno.ESRCH
        raise OSError(code, os.strerror(code))
    status = info.flags_to_rfu[1]  # pbi_status; SZOMB == 5
    state = ord("Z") if status == 5 else ord("R")
    return state, (info.start_tvsec * 1_000_000 + info.start_tvusec) & U64_MAX


def _windows_alive(pid: int) -> bool:
    # Never os.kill(pid, 0) on Windows: there it terminates the process.
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        error: int = ctypes.get_last_error()  # type: ignore[attr-defined]
        return error == 5  # ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
