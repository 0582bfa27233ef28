"""Pure-Python backend: the readable specification of shimpid, and the fallback.

``_speedups.pyx`` mirrors this module function for function; read them side by side. Used where
the extension cannot be built (Windows, PyPy) or when ``SHIMPID_PURE_PYTHON=1`` is set.

System calls go through ``os.open``/``os.read``/``os.write`` rather than ``open()``: the buffered
file objects cost more than the calls themselves on these paths.
"""

from __future__ import annotations

import errno
import itertools
import operator
import os
import stat
import sys

from . import _common, _handle
from ._common import (
    ABSENT,
    CURRENT_BOOT_ID,
    PARSE_EMPTY,
    PARSE_INVALID_DIGIT,
    PARSE_OK,
    PARSE_TOO_LARGE,
    PID_FILE_MAX_BYTES,
    PID_MAX,
    PID_RECORD_MAX_BYTES,
    U32_MAX,
    U64_MAX,
    WHITE_SPACE,
    Legacy,
    ProcessIdentity,
    StorageError,
    Verified,
)

__all__ = [
    "PidRecord",
    "PidFileWriter",
    "PidFileReader",
    "is_process_alive",
    "process_start_time",
]

_LINUX = sys.platform.startswith("linux")
_DARWIN = sys.platform == "darwin"
_WINDOWS = sys.platform == "win32"

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
# A symlink planted at the path is refused (ELOOP), never followed. O_NONBLOCK: a FIFO planted
# at the path fails the in-place open (ENXIO) instead of blocking until someone reads it.
_CREATE_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
_CREATE_IN_PLACE = (
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK | _O_BINARY
)
# O_NONBLOCK: a FIFO planted at the path must not block the reader at open().
_OPEN_READ = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK | _O_BINARY

_S_IFMT, _S_IFREG = stat.S_IFMT(0o177777), stat.S_IFREG  # S_ISREG() without a call

# Bytes read from /proc/<pid>/stat; the start time (field 22) sits well inside this.
_STAT_READ_BYTES = 1024

# Temporary-file names must differ between writers: the pid tells processes apart, the counter
# tells apart threads and successive writes of one process.
_temp_counter = itertools.count()
_TEMP_ATTEMPTS = 16


# ============================================================================
# PidRecord: the codec
# ============================================================================


class PidRecord:
    """A process's identity as a pid file holds it: ``pid`` and, if known, ``start_time``."""

    __slots__ = ("_pid", "_start_time")
    _pid: int
    _start_time: int | None

    def __init__(self, pid: int, start_time: int | None = None) -> None:
        pid = operator.index(pid)
        if not 0 <= pid <= U32_MAX:
            raise OverflowError(_common.PID_RANGE)
        if start_time is not None:
            start_time = operator.index(start_time)
            if not 0 <= start_time <= U64_MAX:
                raise OverflowError(_common.START_TIME_RANGE)
        _set_pid(self, pid)
        _set_start_time(self, start_time)

    def __init_subclass__(cls, **kwargs: object) -> None:
        raise TypeError("PidRecord cannot be subclassed")

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def start_time(self) -> int | None:
        return self._start_time

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"PidRecord is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"PidRecord is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not PidRecord:
            return NotImplemented
        return self._pid == other._pid and self._start_time == other._start_time

    def __hash__(self) -> int:
        return hash((self._pid, self._start_time))

    def __repr__(self) -> str:
        return f"PidRecord(pid={self._pid}, start_time={self._start_time!r})"

    def __reduce__(self) -> tuple[type, tuple[int, int | None]]:
        return (PidRecord, (self._pid, self._start_time))

    @staticmethod
    def current() -> PidRecord:
        """This process's pid and start time (``None`` where the platform gives none)."""
        try:
            start_time = _read_proc_info(0)[1]
        except OSError:
            start_time = None
        return _new_record(os.getpid(), start_time)

    @staticmethod
    def decode(data: bytes | bytearray | memoryview) -> PidRecord:
        """Parse a pid file's bytes exactly as the reference's ``PidRecord::decode`` does."""
        if type(data) is not bytes:
            data = _byte_view(data).tobytes()
        if data.isascii():
            # What writers write: digits, newline, digits, newline. Fewer than 10 and 20 digits
            # always fit, ASCII is valid UTF-8, and digits need no trim: the result is exact.
            pid_digits, has_newline, after = data.partition(b"\n")
            if pid_digits.isdigit() and len(pid_digits) < 10:
                if not has_newline:
                    return _new_record(int(pid_digits), None)
                start_digits = after.partition(b"\n")[0]
                if not start_digits:
                    return _new_record(int(pid_digits), None)
                if start_digits.isdigit() and len(start_digits) < 20:
                    return _new_record(int(pid_digits), int(start_digits))
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _common.not_utf8_error(err.start) from None
        # Rust's `str::lines` splits on "\n" only; the "\r" it drops before one is White_Space,
        # which the trim removes anyway.
        first, newline, rest = text.partition("\n")
        line = first.strip(WHITE_SPACE)
        reason, pid = _parse_uint(line, U32_MAX)
        if reason:
            raise _common.invalid_pid_error(line, reason)
        start_time = None
        if newline:
            # A garbled second line downgrades to a legacy record: the pid is still good.
            line = rest.partition("\n")[0].strip(WHITE_SPACE)
            if line:
                reason, value = _parse_uint(line, U64_MAX)
                if not reason:
                    start_time = value
        return _new_record(pid, start_time)

    def encode(self) -> bytes:
        """The bytes a pid file holds: ``b"<pid>\\n<start_time>\\n"``, or ``b"<pid>\\n"``."""
        if self._start_time is None:
            return b"%d\n" % self._pid
        return b"%d\n%d\n" % (self._pid, self._start_time)

    def encode_into(self, buffer: bytearray | memoryview) -> int:
        """Write ``encode()`` into a writable buffer of at least 48 bytes; return its length."""
        view = _byte_view(buffer)
        if view.readonly:
            raise TypeError(_common.BUFFER_READONLY)
        if view.nbytes < PID_RECORD_MAX_BYTES:
            raise ValueError(_common.buffer_too_small(view.nbytes))
        data = self.encode()
        view[: len(data)] = data
        return len(data)


# The slots' own setters: they bypass the __setattr__ that keeps records immutable.
_set_pid = PidRecord.__dict__["_pid"].__set__
_set_start_time = PidRecord.__dict__["_start_time"].__set__


def _new_record(pid: int, start_time: int | None) -> PidRecord:
    # Values already known to be in range: skip __init__'s checks.
    record = object.__new__(PidRecord)
    _set_pid(record, pid)
    _set_start_time(record, start_time)
    return record


def _byte_view(obj: object) -> memoryview:
    view = memoryview(obj)  # type: ignore[arg-type]
    if not view.c_contiguous:
        raise BufferError(_common.BUFFER_NOT_CONTIGUOUS)
    return view.cast("B")


def _parse_uint(text: str, limit: int) -> tuple[int, int]:
    """Rust's ``u32``/``u64`` ``from_str``: an optional ``+``, then one or more ASCII digits.

    Returns ``(PARSE_OK, value)`` or ``(reason, 0)``. Python's ``int()`` is not that: it also
    takes ``_``, surrounding whitespace and non-ASCII digits, and refuses over 4300 digits.
    """
    if not text:
        return PARSE_EMPTY, 0
    digits = text[1:] if text[0] == "+" else text
    if digits.isascii() and digits.isdigit():
        significant = digits.lstrip("0")
        if len(significant) <= 20:
            value = int(significant or "0")
            if value <= limit:
                return PARSE_OK, value
        return PARSE_TOO_LARGE, 0
    # Rust reports the first failure in digit order: the non-digit, or a digit that overflows.
    end = 0
    while end < len(digits) and "0" <= digits[end] <= "9":
        end += 1
    significant = digits[:end].lstrip("0")
    if len(significant) > 20 or int(significant or "0") > limit:
        return PARSE_TOO_LARGE, 0
    return PARSE_INVALID_DIGIT, 0


# ============================================================================
# PidFileWriter: child-side I/O
# ============================================================================


class PidFileWriter:
    """Writes records to one pid file; everything it needs is prepared when it is created.

    ``atomic=True`` writes a temporary sibling and renames it over the path, so a reader sees the
    old record or the new one, never a torn one. ``atomic=False`` truncates and writes in place,
    as the reference does. ``boot_id=True`` adds this boot's identity as a third line (see
    ``_common.BOOT_ID_PATH``); ``False`` writes exactly ``record.encode()``.
    """

    __slots__ = ("_path", "_target", "_temp_prefix", "_atomic", "_mode", "_boot_id")

    def __init__(
        self,
        path: str | bytes | os.PathLike,
        *,
        atomic: bool = True,
        mode: int = 0o644,
        boot_id: bool = True,
    ) -> None:
        self._path, self._target, self._temp_prefix = _common.writer_paths(path, atomic)
        self._atomic = bool(atomic)
        self._mode = _common.check_mode(mode)
        self._boot_id = CURRENT_BOOT_ID if boot_id else None

    @classmethod
    def at(
        cls,
        path: str | bytes | os.PathLike,
        *,
        atomic: bool = True,
        mode: int = 0o644,
        boot_id: bool = True,
    ) -> PidFileWriter:
        return cls(path, atomic=atomic, mode=mode, boot_id=boot_id)

    @property
    def path(self) -> str | bytes:
        return self._path

    @property
    def atomic(self) -> bool:
        return self._atomic

    @property
    def mode(self) -> int:
        return self._mode

    @property
    def boot_id(self) -> str | None:
        """The boot identity this writer adds to each record, if any."""
        return None if self._boot_id is None else self._boot_id.decode()

    def __repr__(self) -> str:
        return f"PidFileWriter({self._path!r}, atomic={self._atomic}, mode={self._mode:#o})"

    def write(self, record: PidRecord) -> None:
        """Write ``record``; raises ``OSError`` (with the errno) and leaves no temporary file."""
        if type(record) is not PidRecord:
            raise TypeError(f"expected PidRecord, got {type(record).__name__}")
        data = record.encode()
        if self._boot_id is not None:
            # The boot is always line 3: a record without a start time keeps line 2 empty.
            data += (b"%s\n" if record._start_time is not None else b"\n%s\n") % self._boot_id
        try:
            if self._atomic:
                _write_atomic(self._target, self._temp_prefix, data, self._mode)
            else:
                _write_in_place(self._target, data, self._mode)
        except OSError as err:
            code = err.errno or errno.EIO
            raise OSError(code, os.strerror(code), self._path) from None

    def write_current(self) -> None:
        """Write this process's record. Takes no arguments, so it can be a ``preexec_fn``."""
        self.write(PidRecord.current())

    def write_for(self, pid: int) -> None:
        """Write the record of process ``pid``, read from the parent (see ``shimpid.spawn``).

        Raises ``ProcessLookupError`` if no process holds ``pid``. A child that has exited but
        is not reaped still holds it, and is recorded; where its start time cannot be read
        (no ``/proc``, or a platform without start times) the record is a legacy one.
        """
        pid = operator.index(pid)
        if not 0 < pid <= PID_MAX:
            raise _common.no_such_process(pid)
        try:
            start_time = _read_proc_info(pid)[1]
        except OSError:
            if not _exists(pid):
                raise _common.no_such_process(pid) from None
            start_time = None
        self.write(_new_record(pid, start_time))


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _write_in_place(target: bytes, data: bytes, mode: int) -> None:
    fd = os.open(target, _CREATE_IN_PLACE, mode)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_atomic(target: bytes, temp_prefix: bytes, data: bytes, mode: int) -> None:
    pid = os.getpid()
    for _ in range(_TEMP_ATTEMPTS):
        temp = b"%s%d.%d.tmp" % (temp_prefix, pid, next(_temp_counter))
        try:
            fd = os.open(temp, _CREATE_TEMP, mode)
        except FileExistsError:
            continue  # left by a crashed writer that had our pid: never touch it
        break
    else:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST))
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(temp, target)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


# ============================================================================
# PidFileReader: parent-side I/O
# ============================================================================


class PidFileReader:
    """Reads one pid file and classifies its record against the live system."""

    __slots__ = ("_path", "_target")

    def __init__(self, path: str | bytes | os.PathLike) -> None:
        self._path, self._target = _common.resolve_path(path)

    @classmethod
    def at(cls, path: str | bytes | os.PathLike) -> PidFileReader:
        return cls(path)

    @property
    def path(self) -> str | bytes:
        return self._path

    def __repr__(self) -> str:
        return f"PidFileReader({self._path!r})"

    def read(self) -> PidRecord:
        """The record in the file; ``StorageError`` if it is missing, unreadable or not a record."""
        return self._read_into()[0]

    def open_process(self, *, allow_legacy: bool = False) -> _handle.ProcessHandle | None:
        """A handle that signals the recorded process and nothing else, or ``None``.

        ``None`` unless the verdict is ``Verified`` (or ``Legacy``, with ``allow_legacy``). See
        ``shimpid._handle`` for why a match is proof with pidfds, and the window without them.
        """
        return _handle.open_process(self, _classify, allow_legacy)

    def _read_entry(self) -> tuple[PidRecord, bool]:
        """The record, and whether the file names another boot: from one read of the file."""
        record, data = self._read_into()
        return record, _from_another_boot(data)

    def _read_into(self) -> tuple[PidRecord, bytes]:
        """read(), and the file's bytes."""
        data = _read_pid_file(self._target, self._path)
        try:
            return PidRecord.decode(data), data
        except StorageError as err:
            raise _common.in_file(err, self._path) from err

    def read_boot_id(self) -> str | None:
        """The boot identity the file carries (line 3), or ``None``; ``StorageError`` as read()."""
        boot_id = _boot_id_of(_read_pid_file(self._target, self._path))
        return None if boot_id is None else boot_id.decode()

    def process_identity(self) -> ProcessIdentity:
        """``Verified(pid)``, ``Legacy(pid)`` or ``Absent()``: see the README's identity rules."""
        try:
            data = _read_pid_file(self._target, self._path)
            record = PidRecord.decode(data)
        except StorageError:
            return ABSENT
        if _from_another_boot(data):
            return ABSENT
        return _classify(record._pid, record._start_time)


def _read_pid_file(target: bytes, path: str | bytes) -> bytes:
    try:
        fd = os.open(target, _OPEN_READ)
    except OSError as err:
        raise _common.read_error(err.errno or errno.EIO, path)  # chained to an OSError
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
                while len(data) <= PID_FILE_MAX_BYTES:
                    chunk = os.read(fd, PID_FILE_MAX_BYTES + 1 - len(data))
                    if not chunk:
                        break
                    data += chunk
        except StorageError:
            raise
        except OSError as err:
            raise _common.read_error(err.errno or errno.EIO, path)  # chained to an OSError
    finally:
        os.close(fd)
    if len(data) > PID_FILE_MAX_BYTES:
        raise _common.content_error(_common.TOO_LARGE, path)
    return data


def _boot_id_of(data: bytes) -> bytes | None:
    """Line 3, if it is a boot identity (other writers put other things there)."""
    line = _line_3(data)
    return line if line is not None and _common.is_boot_id(line) else None


def _from_another_boot(data: bytes) -> bool:
    if CURRENT_BOOT_ID is None:
        return False  # nothing to compare with
    line = _line_3(data)
    # This boot's line is the usual case: check the shape only of a line that differs.
    return line is not None and line != CURRENT_BOOT_ID and _common.is_boot_id(line)


def _line_3(data: bytes) -> bytes | None:
    lines = data.split(b"\n", 3)
    return lines[2].strip() if len(lines) > 2 else None


def _classify(pid: int, start_time: int | None) -> ProcessIdentity:
    """The verdict for a record: alive, and with the recorded start time if there is one."""
    alive, live = _probe(pid)
    if not alive:
        return ABSENT
    if start_time is None:
        return Legacy(pid)
    if live == start_time:
        return Verified(pid)
    return ABSENT  # another process has the pid now, or its start time cannot be read


# ============================================================================
# Live processes
# ============================================================================


def is_process_alive(pid: int) -> bool:
    """True if ``pid`` names one live process that is not a zombie (another user's counts)."""
    return _probe(operator.index(pid))[0]


def process_start_time(pid: int) -> int | None:
    """The start time of the process holding ``pid`` (a zombie still holds it), or ``None``."""
    pid = operator.index(pid)
    if not 0 < pid <= PID_MAX:
        return None
    try:
        return _read_proc_info(pid)[1]
    except OSError:
        return None


def _probe(pid: int) -> tuple[bool, int | None]:
    """``(alive, start_time)``, from one kill(pid, 0) and one read of the process's stat."""
    if not 0 < pid <= PID_MAX:
        return False, None  # 0: our own process group; above: a negative pid_t, -1 = everyone
    if _WINDOWS:
        return _windows_alive(pid), None
    try:
        os.kill(pid, 0)
    except OSError as err:
        if err.errno != errno.EPERM:  # EPERM: it exists, and belongs to another user
            return False, None
    try:
        state, start_time = _read_proc_info(pid)
    except OSError as err:
        # Gone since kill(), or no /proc here (not mounted, another pid namespace). Only the
        # first is a death: a false "dead" would have recovery orphan a live process.
        if err.errno in (errno.ENOENT, errno.ESRCH) and not _exists(pid):
            return False, None
        return True, None
    if state in b"ZX":  # zombie or dead: exited, holding its pid until reaped
        return False, None
    return True, start_time


def _exists(pid: int) -> bool:
    """Some process, maybe a zombie, holds ``pid``."""
    if _WINDOWS:
        return _windows_alive(pid)
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def _read_proc_info(pid: int) -> tuple[int, int | None]:
    """``(state, start_time)`` for ``pid`` (0: this process); ``OSError`` if it cannot be read.

    ``state`` is the byte of ``/proc/<pid>/stat`` field 3 (0 if unknown).
    """
    if _LINUX:
        path = b"/proc/self/stat" if pid == 0 else b"/proc/%d/stat" % pid
        fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
        try:
            data = os.read(fd, _STAT_READ_BYTES)
        finally:
            os.close(fd)
        return _parse_stat(data)
    if _DARWIN:
        return _darwin_proc_info(pid or os.getpid())
    raise OSError(errno.ENOSYS, "no process start times on this platform")


def _parse_stat(data: bytes) -> tuple[int, int | None]:
    """``(state, start_time)`` from a ``/proc/<pid>/stat`` line.

    The command name (field 2) may hold spaces and ``)``, so fields are counted after the LAST
    ``)``; field 22, the start time in clock ticks since boot, is the 20th of those. As in the
    reference, fields are separated by runs of spaces and a newline ends the line.
    """
    close = data.rfind(b")")
    if close < 0:
        return 0, None
    newline = data.find(b"\n", close)
    line = data[close + 1 : newline] if newline >= 0 else data[close + 1 :]
    # The kernel puts one space before each field: split off only the first 20. (A line where
    # that does not hold, an empty field anywhere, takes the general tokenizer.)
    fields = line.split(b" ", 21)
    if fields[0] or fields.count(b"") != 1:
        fields = [b""] + [field for field in line.split(b" ") if field]  # runs of spaces
    state = fields[1][0] if len(fields) > 1 else 0
    if len(fields) < 21 or not fields[20].isdigit():
        return state, None
    field = fields[20]
    if len(field) < 20:  # cannot overflow
        return state, int(field)
    significant = field.lstrip(b"0")
    if len(significant) > 20:
        return state, None
    value = int(significant or b"0")
    return state, (value if value <= U64_MAX else None)


# --- macOS and Windows: untested here (see README) --------------------------------------------

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
        return ctypes.get_last_error() == 5  # type: ignore[attr-defined]  # ACCESS_DENIED: exists
    try:
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
