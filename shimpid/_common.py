"""What both backends share: the error type, the identity verdicts, limits and messages.

Defined once, so ``shimpid._pure`` and ``shimpid._speedups`` raise the same exceptions with the
same words and return the same verdict objects; tests compare the two backends on exactly that.
Also the steps in Python that more than one module takes: the pure writer's temporary file,
which the lock (``shimpid._lock``) makes too, and the lock probe.
"""

from __future__ import annotations

import collections
import errno
import functools
import itertools
import operator
import os
import stat
import struct
import sys
import time

TYPE_CHECKING = False  # typing costs an importer of shimpid 7 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn, TypeAlias

    #: A path, as os.open() takes one.
    PathArg: TypeAlias = "str | bytes | os.PathLike[str] | os.PathLike[bytes]"

__all__ = [
    "PID_FILE_MAX_BYTES",
    "PID_MAX",
    "PID_RECORD_MAX_BYTES",
    "Absent",
    "Legacy",
    "ProcessIdentity",
    "StorageError",
    "Verified",
]

#: Largest encoding of a record: a u32 pid (10 digits), a u64 start time (20 digits), two
#: newlines. 48 is the reference's figure, kept so buffers sized for it interoperate.
PID_RECORD_MAX_BYTES = 48

#: A pid file is read only up to this size. A record is at most 48 bytes; anything much larger
#: is not a pid file, and reading it whole would let a planted file stall or bloat recovery.
PID_FILE_MAX_BYTES = 4096

#: Largest pid that names one process. A record may hold any u32, but above 2**31 - 1 the value
#: is negative as a C ``pid_t``, and ``kill(-n, sig)`` signals a whole process group (``-1``:
#: every process the caller may signal). Pid 0 means the caller's own process group.
PID_MAX = 2**31 - 1


def names_a_process(pid: int) -> bool:
    """Whether pid can name one process: not 0 (the caller's process group), not above
    PID_MAX (a negative ``pid_t``: -1 is every process). The extension's twin is its
    ``names_a_process``."""
    return 0 < pid <= PID_MAX


def env_flag(name: str) -> bool:
    """An environment flag: set to anything but ``""`` or ``"0"``. (setup.py, which cannot
    import the package it builds, keeps a copy.)"""
    return os.environ.get(name, "0") not in ("", "0")


U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

# Rust's `char::is_whitespace` (Unicode White_Space), which `str::trim` strips. Not Python's
# `str.isspace()`: that also counts U+001C..U+001F as whitespace.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

# Why an integer field failed to parse, in the order and words of Rust's `ParseIntError`, so a
# shimpid log line reads like boxlite's for the same file.
PARSE_OK = 0
PARSE_EMPTY = 1
PARSE_INVALID_DIGIT = 2
PARSE_TOO_LARGE = 3
_PARSE_REASONS = {
    PARSE_EMPTY: "cannot parse integer from empty string",
    PARSE_INVALID_DIGIT: "invalid digit found in string",
    PARSE_TOO_LARGE: "number too large to fit in target type",
}


class StorageError(OSError):
    """A pid file is missing, unreadable, too large or does not hold a record.

    ``errno`` is set when a system call failed (the ``OSError`` is chained as ``__cause__``) and is
    ``None`` when the file was read but its contents are not a record.
    """

    def __str__(self) -> str:
        # OSError prints "[Errno None] ..." for a content error made with (None, what, file),
        # and "<what>: <file>" would read as if the file name were the bad string.
        if self.errno is None and self.strerror is not None:
            if self.filename is None:
                return self.strerror
            return f"PID file {self.filename!r}: {self.strerror}"
        return super().__str__()


# ============================================================================
# Decoding: the reference's PidRecord::decode, the one implementation of its rules. The
# extension decodes what writers write in C (its decode_canonical) and sends the rest here.
# ============================================================================


def decode_record(data: bytes) -> tuple[int, int | None]:
    """``(pid, start_time)`` from a pid file's bytes, exactly as boxlite's ``PidRecord::decode``;
    ``StorageError`` (``errno`` None) if they hold no record."""
    if data.isascii():
        # What writers write: digits, newline, digits, newline. Fewer than 10 and 20 digits
        # always fit, ASCII is valid UTF-8, and digits need no trim: the result is exact.
        pid_digits, has_newline, after = data.partition(b"\n")
        if pid_digits.isdigit() and len(pid_digits) < 10:
            if not has_newline:
                return int(pid_digits), None
            start_digits = after.partition(b"\n")[0]
            if not start_digits:
                return int(pid_digits), None
            if start_digits.isdigit() and len(start_digits) < 20:
                return int(pid_digits), int(start_digits)
    try:
        text = data.decode("utf-8")  # the whole input, as Rust's from_utf8
    except UnicodeDecodeError as err:
        raise StorageError(
            f"PID file is not valid UTF-8: invalid byte at offset {err.start}"
        ) from None
    # Rust's `str::lines` splits on "\n" only; the "\r" it drops before one is White_Space,
    # which the trim removes anyway.
    first, newline, rest = text.partition("\n")
    line = first.strip(WHITE_SPACE)
    reason, pid = parse_uint(line, U32_MAX)
    if reason:
        shown = line[:40] + "..." if len(line) > 40 else line
        raise StorageError(f"invalid PID {shown!r}: {_PARSE_REASONS[reason]}")
    start_time = None
    if newline:
        # A garbled second line downgrades to a legacy record: the pid is still good.
        line = rest.partition("\n")[0].strip(WHITE_SPACE)
        if line:
            reason, value = parse_uint(line, U64_MAX)
            if not reason:
                start_time = value
    return pid, start_time


def parse_uint(text: str, limit: int) -> tuple[int, int]:
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


def read_error(code: int, path: str | bytes) -> StorageError:
    """A system call on the pid file failed with errno ``code``."""
    cause = OSError(code, os.strerror(code), path)
    exc = StorageError(code, f"cannot read PID file: {cause.strerror}", path)
    exc.__cause__ = cause
    return exc


def content_error(detail: str, path: str | bytes | None) -> StorageError:
    return StorageError(None, detail, path)


def in_file(err: StorageError, path: str | bytes) -> StorageError:
    """The decode error ``err`` again, naming the file it came from."""
    exc = content_error(str(err), path)
    exc.__cause__ = err
    return exc


def no_such_process(pid: int) -> OSError:
    return ProcessLookupError(errno.ESRCH, f"{os.strerror(errno.ESRCH)}: pid {pid}")


NOT_REGULAR = "PID file is not a regular file"
PID_RANGE = f"pid must be in 0..{U32_MAX}"
START_TIME_RANGE = f"start_time must be None or in 0..{U64_MAX}"
BUFFER_READONLY = "encode_into() needs a writable buffer"
BUFFER_NOT_CONTIGUOUS = "buffer is not C-contiguous"


def not_writable(name: str) -> str:
    return f"attribute {name!r} of 'PidFileWriter' objects is not writable"


def not_bytes_like(obj: object) -> str:
    return f"a bytes-like object is required, not {type(obj).__name__!r}"


def buffer_too_small(size: int) -> str:
    return f"buffer too small: {size} bytes, need {PID_RECORD_MAX_BYTES}"


# ============================================================================
# Paths, checked once when a writer or reader is created
# ============================================================================

# The atomic writer's temporary sibling is ".<name>.<pid>.<counter>.tmp": the pid (10 digits at
# most), a dot, the counter (20 digits at most) and ".tmp" follow the prefix.
TEMP_SUFFIX_MAX = 10 + 1 + 20 + 4
#: Temporary names a writer tries before giving up (each taken one was left by a killed writer).
TEMP_ATTEMPTS = 16
#: Times an in-place write is made again: the file its open reached was unlinked, or a remover's
#: lease kept it from being opened (then after a pause). Only a remover at work each time makes
#: more than one.
IN_PLACE_ATTEMPTS = 16
IN_PLACE_PAUSE = 0.001
#: Rounds of "the file changed under us, look again" before a lock gives up: only a process
#: replacing the file continuously, against the protocol, makes more than a few.
SETTLE_ATTEMPTS = 1000
#: How much of /proc/<pid>/stat and /proc/<pid>/status is read: the fields used come first.
STAT_READ_BYTES = 1024
STATUS_READ_BYTES = 4096
# The Cython writer builds that name on the stack in a buffer of this size (PATH_MAX on Linux).
TEMP_PATH_MAX = 4096
NAME_MAX = 255


def resolve_path(path: PathArg) -> tuple[str | bytes, bytes]:
    """``(path as given, absolute path as bytes)``; ``StorageError`` if it cannot name a file.

    A relative path is anchored to the current directory now, not when the file is written: a
    writer made in a parent may run in a child that has changed directory (``Popen(cwd=...)``).
    """
    given = exact_text(os.fspath(path))
    try:
        raw = os.fsencode(given)
    except UnicodeEncodeError as err:
        raise StorageError(f"PID file path cannot be encoded: {given!r}") from err
    if b"\0" in raw:
        raise StorageError(f"PID file path contains a NUL byte: {given!r}")
    name = os.path.basename(raw)
    if name in (b"", b".", b".."):
        raise StorageError(f"PID file path does not name a file: {given!r}")
    if not os.path.isabs(raw):
        raw = os.path.join(os.getcwdb(), raw)
    return given, raw


def exact_text(text: str | bytes) -> str | bytes:
    """``text`` as an exact ``str`` or ``bytes``, copied without calling any of its methods.

    ``os.fspath()`` returns a ``str`` or ``bytes`` subclass as it is, and a subclass's methods
    (``__eq__``, ``__contains__``, ``encode``) are the caller's Python code: run in the middle
    of a backend's ``__init__``, they could call back into the object (see _speedups.pyx: where
    Python code can run inside a method). The base type's own slice copies a subclass.
    """
    kind = type(text)
    if kind is str or kind is bytes:
        return text
    # issubclass, not isinstance: isinstance() of a bytes subclass against str would look up
    # its __class__, which may be a property.
    if issubclass(kind, str):
        return str.__getitem__(text, slice(None))  # type: ignore[index]
    return bytes.__getitem__(text, slice(None))  # type: ignore[index]


def writer_target(path: PathArg, atomic: bool) -> tuple[str | bytes, bytes]:
    """``resolve_path``, and room for the atomic writer's temporary names beside it
    (``<dir>/.<name>.<pid>.<n>.tmp``): checked without asking the filesystem."""
    given, target = resolve_path(path)
    # The temporary prefix is the target with "." before the name and after it: two bytes more.
    if atomic and (
        len(target) - target.rfind(b"/") - 1 + 2 + TEMP_SUFFIX_MAX > NAME_MAX
        or len(target) + 2 + TEMP_SUFFIX_MAX >= TEMP_PATH_MAX
    ):
        raise StorageError(
            errno.ENAMETOOLONG,
            "PID file path too long to add a temporary name beside it (use atomic=False)",
            given,
        )
    return given, target


def writer_names(path: PathArg, atomic: bool) -> tuple[str | bytes, bytes, bytes]:
    """``writer_target``, and the prefix of the atomic writer's temporary names."""
    given, target = writer_target(path, atomic)
    return given, target, temp_prefix(target)


def temp_prefix(target: bytes) -> bytes:
    """The atomic writer's temporary names for ``target`` begin with ``<dir>/.<name>.``."""
    if _SLASH_ONLY:  # "." before the name and after it: os.path's calls cost spawn() (_spawn)
        cut = target.rfind(b"/") + 1
        return b"%s.%s." % (target[:cut], target[cut:])
    directory, name = os.path.split(target)
    return os.path.join(directory, b"." + name + b".")


_SLASH_ONLY = os.sep == "/" and os.altsep is None  # where "/" alone separates a path's parts


def writer_paths(path: PathArg, atomic: bool) -> tuple[str | bytes, bytes, bytes, os.stat_result]:
    """``writer_names``, and the directory's ``stat`` (what the writer decides about the
    directory, from one look)."""
    given, target, temp_prefix = writer_names(path, atomic)
    directory = os.path.dirname(target)
    # A writer is made before the child it records is started: a path whose directory is
    # missing must fail now, not after the child has run (see shimpid.spawn for the one
    # exception: a directory it has written in before, checked as the child starts).
    try:
        info = os.stat(directory)
    except OSError as err:
        raise StorageError(
            err.errno, f"PID file directory unusable: {err.strerror}", os.fsdecode(directory)
        ) from err
    if not stat.S_ISDIR(info.st_mode):
        raise StorageError(
            errno.ENOTDIR, "PID file directory is not a directory", os.fsdecode(directory)
        )
    return given, target, temp_prefix, info


def others_can_write(info: os.stat_result) -> bool:
    """Whether a user other than this one (or root) can add or rename entries of the directory
    whose ``stat`` is info."""
    return info.st_uid not in (0, os.geteuid()) or bool(
        info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


# What a writer refuses to replace: anything at the path but a regular file or a symlink (which
# the atomic writer replaces, never follows). A directory fails with EISDIR, as rename() would;
# a FIFO, socket or device with ENXIO, as opening it for writing without blocking does.
NOT_REGULAR_TARGET = "PID file path holds a FIFO, socket or device, not a regular file"
# EAGAIN from a writer or the lock: the file was replaced or removed (or leased by a remover) at
# each attempt.
KEPT_CHANGING = "PID file kept being replaced or removed meanwhile, at each attempt"


def write_strerror(code: int) -> str:
    """What a writer's OSError says for errno ``code``."""
    if code == errno.ELOOP:
        return "PID file path is a symlink, which is never followed"
    if code == errno.EAGAIN:
        return KEPT_CHANGING
    return NOT_REGULAR_TARGET if code == errno.ENXIO else os.strerror(code)


def write_error(err: OSError, path: str | bytes) -> OSError:
    """A writer's (or the lock's) failure as it is raised: the errno, its words, and path (the
    temporary name where no name was free)."""
    if isinstance(err, TempNamesTaken):
        return FileExistsError(errno.EEXIST, err.strerror, err.filename)
    code = err.errno or errno.EIO
    return OSError(code, write_strerror(code), path)


# ---- the files the pure writer and the lock make (the extension's writer: in C) -------------

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
O_BINARY = getattr(os, "O_BINARY", 0)
# O_NOCTTY on every open of a path that may hold something else than a file: a terminal planted
# there would become the controlling terminal of a session leader without one (a daemon).
O_NOCTTY = getattr(os, "O_NOCTTY", 0)
# A symlink planted at the path is refused (ELOOP), never followed. O_NONBLOCK: a FIFO planted
# at the path fails the in-place open (ENXIO) instead of blocking until someone reads it.
CREATE_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_BINARY
# In place: no O_TRUNC, the file is checked first (see _pure._write_in_place).
OPEN_IN_PLACE = os.O_WRONLY | os.O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_BINARY
# Once the file its open reached was unlinked: again, but only where nothing is.
CREATE_IN_PLACE = OPEN_IN_PLACE | os.O_EXCL
# O_NONBLOCK: a FIFO planted at the path must not block the reader at open().
OPEN_READ = os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | O_BINARY

S_IFMT, S_IFREG = stat.S_IFMT(0o177777), stat.S_IFREG  # S_ISREG() without a call

# The names this process makes for its own files (the pure writer's and the lock's temporary
# files, a remover's files set aside) must differ: the pid tells processes apart, this counter
# threads and successive names of one process. (The extension's writer counts in C: its names
# may meet these, and O_EXCL passes over a name that is taken.)
unique_number = itertools.count().__next__


class TempNamesTaken(FileExistsError):
    """Every temporary name tried was taken (left by killed writers that had our pid)."""

    def __init__(self, temp: bytes) -> None:
        super().__init__(errno.EEXIST, TEMP_NAMES_TAKEN, os.fsdecode(temp))


def write_all(fd: int, data: bytes) -> None:
    while data:  # os.write retries EINTR itself (PEP 475)
        written = os.write(fd, data)
        if written == 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # no progress: fail, never spin
        data = data[written:]


def check_target(target: bytes) -> bool:
    """Whether ``target`` holds a regular file (False: nothing, or a symlink to replace).

    Raises for anything else, before anything is done: a directory is never moved, a FIFO,
    socket or device never replaced.
    """
    try:
        kind = os.lstat(target).st_mode & S_IFMT
    except FileNotFoundError:
        return False
    if kind == S_IFREG:
        return True
    if kind == stat.S_IFLNK:
        return False
    if kind == stat.S_IFDIR:
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
    raise OSError(errno.ENXIO, NOT_REGULAR_TARGET)


def write_temp(
    made: list[tuple[bytes, Kept]],
    temp_prefix: bytes,
    data: bytes,
    mode: int,
    flags: int = CREATE_TEMP,
) -> None:
    """A new temporary file (``<temp_prefix><pid>.<n>.tmp``) holding data, its name and its
    descriptor (still open) in ``made[0]``, put there before the file is created: whatever
    interrupts, the caller can release it (``discard_temp``)."""
    pid = os.getpid()
    for _ in range(TEMP_ATTEMPTS):
        temp = b"%s%d.%d.tmp" % (temp_prefix, pid, unique_number())
        kept = keep(os.open, temp, flags, mode)
        made[:] = [(temp, kept)]
        try:
            fd = kept[0]
        except FileExistsError:
            continue  # left by a killed writer that had our pid: never touch it
        write_all(fd, data)
        return
    raise TempNamesTaken(temp)


def discard_temp(made: list[tuple[bytes, Kept]]) -> None:
    """After an exception, release what ``write_temp`` made: the descriptor unless closed or
    handed over, and the file if it created one (a name another process holds is never
    touched)."""
    if made and 0 in made[0][1]:
        temp, kept = made[0]
        try:
            if 1 not in kept:
                kept[1] = 0
                os.close(kept[0])
        finally:
            unlink_temp(temp)


def unlink_temp(temp: bytes) -> None:
    try:
        os.unlink(temp)
    except OSError:
        pass  # renamed already, or the directory went


RECORD_IMMUTABLE = "PidRecord is immutable: it cannot be initialised again"


def record_immutable(action: str, name: object) -> str:
    return f"PidRecord is immutable: cannot {action} {name!r}"


NOT_INITIALISED = "{0} is not initialised: make one with {0}.at(path)"
ALREADY_INITIALISED = "{0} is already initialised"
# Hashing a record while its __init__ converts its arguments: it has no value yet.
RECORD_INITIALISING = "PidRecord is being initialised: it has no value yet"
NOT_PICKLABLE = "cannot pickle {0!r} object: make one with {0}.at(path) where it is used"


def expected_record(other: object) -> str:
    return f"expected PidRecord, got {type(other).__name__}"


TEMP_NAMES_TAKEN = (
    "no free temporary name beside the PID file: stale ones of killed writers? "
    "(shimpid clean DIR removes them)"
)


# ============================================================================
# What a file holds beyond the reference's two lines
# ============================================================================

# Line 3 belongs to boxlite: its newer versions write a capability token there
# (``services-mux-v1``). Line 4 is shimpid's: ``shimpid boot=<uuid> pidfs=<inode>``, a tag, then
# ``key=value`` fields; readers ignore keys they do not know, so later versions can add some.
# Both readers of the reference ignore lines after the second (a record without a start time
# keeps line 2 empty), and boxlite's newest reads only line 3. shimpid 0.1 wrote the boot on
# line 3, as a bare UUID; such files are still understood.
#
# boot:  start times count clock ticks from boot, and pidfs inodes count processes from boot, so
#        after a reboot a recorded identity can match an unrelated process (the same services
#        start in the same order, get the same pids, at the same tick). A file from another boot
#        is Absent.
# pidfs: on Linux 6.9+ every process has an inode in pidfs, a 64-bit number never reused within
#        a boot (systemd's process id). A start time is only as fine as a clock tick (10 ms): a
#        pid reused within the same tick has the same start time. The inode tells them apart.
IDENTITY_TAG = "shimpid"
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
BOOT_ID_BYTES = 36  # a UUID as the kernel prints it: 8-4-4-4-12 lowercase hex digits
_HEX = frozenset("0123456789abcdef")
_IDENTITY_TAG = IDENTITY_TAG.encode()


def is_boot_id(value: str) -> bool:
    """A UUID as the kernel prints it: 8-4-4-4-12 lowercase hex digits."""
    return (
        len(value) == BOOT_ID_BYTES
        and value.count("-") == 4
        and value[8] == value[13] == value[18] == value[23] == "-"
        and _HEX.issuperset(value.replace("-", ""))
    )


class Extras(tuple[str | None, str | None, int | None]):
    """What lines 3 and 4 of a pid file say: line 3's capability, then line 4's fields in
    ``LINE4_FIELDS``' order, ``(capability, boot_id, pidfs_id)``, None where a line says nothing.

    A namedtuple, written out: ``collections.namedtuple`` compiles code when it is defined, a
    cost every importer of shimpid would pay. The attributes are the annotations below, in order.
    """

    __slots__ = ()
    capability: str | None
    boot_id: str | None
    pidfs_id: int | None

    def __new__(cls, capability: str | None, boot_id: str | None, pidfs_id: int | None) -> Extras:
        return tuple.__new__(cls, (capability, boot_id, pidfs_id))

    def __repr__(self) -> str:
        fields = zip(_EXTRAS_NAMES, self, strict=True)
        return "Extras({})".format(", ".join(f"{name}={value!r}" for name, value in fields))


_EXTRAS_NAMES = tuple(Extras.__annotations__)
for _index, _name in enumerate(_EXTRAS_NAMES):
    setattr(
        Extras,
        _name,
        property(
            operator.itemgetter(_index),
            doc="line 3's token, or None" if _index == 0 else "a field of line 4, or None",
        ),
    )
del _index, _name
NO_EXTRAS = tuple.__new__(Extras, (None for _ in _EXTRAS_NAMES))


def _boot_value(value: bytes) -> str | None:
    return value.decode() if _is_boot_id(value) else None


def _u64_value(value: bytes) -> int | None:
    # bytes.isdigit(): ASCII digits only. 0 names no inode.
    if value.isdigit() and len(value) <= 20 and 0 < int(value) <= U64_MAX:
        return int(value)
    return None


#: Line 4's fields after the tag, ``key=value``: each key's position in Extras and the rule for
#: its value, which returns what the value says or None where it is not well formed (the field
#: is then ignored, as the reference ignores a garbled start time). A new field is a row here,
#: and its annotation, parameter and type in Extras. A writer puts a field of its own in
#: identity_prefix() (which the extension's writer copies), a field of each process in
#: file_bytes() and the extension's write_entry() (CONTRIBUTING.md: "A new field on line 4").
LINE4_FIELDS: dict[bytes, tuple[int, Callable[[bytes], object]]] = {
    b"boot": (_EXTRAS_NAMES.index("boot_id"), _boot_value),
    b"pidfs": (_EXTRAS_NAMES.index("pidfs_id"), _u64_value),
}
_BOOT_AT, _PIDFS_AT = LINE4_FIELDS[b"boot"][0], LINE4_FIELDS[b"pidfs"][0]


def parse_extras(data: bytes) -> Extras:
    """Lines 3 and 4 of a file whose record decoded: the general rule, for any such file.

    Lines split on ``\\n`` and are trimmed of Unicode White_Space, as the reference reads lines
    1 and 2 and boxlite reads line 3. A field that is not well formed is ignored, as the
    reference ignores a garbled start time.
    """
    lines = data.split(b"\n", 4)
    if len(lines) < 3:
        return NO_EXTRAS
    line3, line4 = lines[2], (lines[3] if len(lines) > 3 else b"")
    # What this process's writers write, "\n<identity_prefix> pidfs=<n>\n", the rule's answer
    # without its steps (a directory of 100,000 such files is listed in a second).
    if len(lines) == 5 and not lines[4] and not line3 and line4.startswith(OWN_PIDFS):
        pidfs_id = _u64_value(line4[len(OWN_PIDFS) :])
        if pidfs_id is not None:
            return own_extras(None, True, pidfs_id)
    # decode() has checked the whole file is UTF-8. For ASCII, bytes.strip() strips exactly the
    # White_Space characters (U+0009..U+000D, U+0020): the usual case takes no decoding.
    if line3.isascii():
        line3 = line3.strip()
    else:
        line3 = line3.decode().strip(WHITE_SPACE).encode()
    if line4.isascii():
        line4 = line4.strip()
    else:
        line4 = line4.decode().strip(WHITE_SPACE).encode()
    values: list[object] = [None] * len(_EXTRAS_NAMES)
    values[0] = line3.decode() or None
    if values[0] is not None and _is_boot_id(line3):  # shimpid 0.1: the boot, not a capability
        values[0], values[_BOOT_AT] = None, values[0]
    fields = line4.split(b" ")
    if fields[0] == _IDENTITY_TAG:
        seen = set()
        for field in fields[1:]:
            key, _, value = field.partition(b"=")
            if key in seen:
                continue  # the first one counts
            seen.add(key)
            row = LINE4_FIELDS.get(key)  # None: a key of a later version, ignored
            if row is not None and (parsed := row[1](value)) is not None:
                values[row[0]] = parsed
    return tuple.__new__(Extras, values)  # namedtuple's __new__ is slow


def _is_boot_id(value: bytes) -> bool:
    # This boot's is the usual case: check the shape only of another.
    if value == _CURRENT_BOOT_BYTES:
        return bool(value)  # b"" where this boot's identity is unknown
    return value.isascii() and is_boot_id(value.decode())


def read_boot_id() -> str | None:
    """This boot's identity, or None where there is none to read (not Linux, no /proc)."""
    try:
        fd = os.open(BOOT_ID_PATH, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        value = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return value if is_boot_id(value) else None


#: This boot's identity, read once at import: a process does not outlive its boot. (A process
#: checkpointed and restored across a reboot, with CRIU say, would carry the old one.)
CURRENT_BOOT_ID = read_boot_id()
_CURRENT_BOOT_BYTES = b"" if CURRENT_BOOT_ID is None else CURRENT_BOOT_ID.encode()


def from_another_boot(extras: Extras) -> bool:
    boot_id = extras[_BOOT_AT]  # not the property: shimpid ls asks this of every file
    return boot_id is not None and boot_id != CURRENT_BOOT_ID and CURRENT_BOOT_ID is not None


#: Longest capability token a writer takes (boxlite's own is 15 bytes)
CAPABILITY_MAX = 64
#: Room for line 4 as a writer prepares it (identity_prefix): the tag, this boot, and whatever
#: fields a later version adds there.
IDENTITY_PREFIX_MAX = 128
#: The longest file a writer writes: the record, an empty line 2, line 3 (the capability) and
#: line 4 with its pidfs field, each with its newline.
WRITE_MAX_BYTES = (
    PID_RECORD_MAX_BYTES + 1 + CAPABILITY_MAX + 1 + IDENTITY_PREFIX_MAX + len(" pidfs=") + 20 + 1
)


def check_capability(capability: str | None) -> bytes:
    """Line 3 as a writer writes it: ``capability``, checked once, when the writer is made.

    One line of printable ASCII, no surrounding whitespace (readers trim it, as boxlite does),
    at most CAPABILITY_MAX bytes, and not a bare UUID (shimpid 0.1's boot line).
    """
    if capability is None:
        return b""
    if not isinstance(capability, str):
        raise TypeError(f"capability must be a str or None, got {type(capability).__name__}")
    capability = str.__getitem__(capability, slice(None))  # exact: see exact_text
    if not capability or len(capability) > CAPABILITY_MAX:
        raise ValueError(f"capability must be 1 to {CAPABILITY_MAX} characters")
    if not (capability.isascii() and capability.isprintable()) or capability != capability.strip():
        raise ValueError(
            f"capability must be printable ASCII without surrounding spaces: {capability!r}"
        )
    if is_boot_id(capability):
        raise ValueError(f"capability must not be a UUID (that is a boot line): {capability!r}")
    return capability.encode()


IDENTITY_PREFIX = (
    IDENTITY_TAG + (f" boot={CURRENT_BOOT_ID}" if CURRENT_BOOT_ID is not None else "")
).encode()
assert len(IDENTITY_PREFIX) <= IDENTITY_PREFIX_MAX


def identity_prefix(enabled: bool) -> bytes:
    """The start of line 4 that a writer prepares: the tag and this boot."""
    return IDENTITY_PREFIX if enabled else b""


# What this process's writers write on line 4 (the readers' fast paths: parse_extras, and the
# extension's extras_canonical): the prefix, then maybe the pidfs field; and what the prefix
# says, by the general rule, on either side of the pidfs field.
OWN_PIDFS = IDENTITY_PREFIX + b" pidfs="
_OWN_FIELDS = parse_extras(b"\n\n\n" + IDENTITY_PREFIX + b"\n")
_OWN_HEAD, _OWN_TAIL = _OWN_FIELDS[1:_PIDFS_AT], _OWN_FIELDS[_PIDFS_AT + 1 :]
_NO_FIELDS = NO_EXTRAS[1:]


def own_extras(capability: str | None, line4: bool, pidfs_id: int | None) -> Extras:
    """The Extras of a file as this process's writers write it: capability on line 3, then, if
    there is a line 4, identity_prefix() and pidfs_id."""
    if line4:
        return tuple.__new__(Extras, (capability, *_OWN_HEAD, pidfs_id, *_OWN_TAIL))
    return tuple.__new__(Extras, (capability, *_NO_FIELDS))


# ============================================================================
# Which failures are answers
# ============================================================================

# A verdict is acted on: Absent has recovery delete the file and forget the process. So only
# what shows there is no record, or no such process, is an answer; every other failure to look
# (EMFILE, ENOMEM, EACCES, EIO, ...) is raised, never turned into Absent.
#: errnos of opening a pid file that mean there is no pid file there
NO_FILE_ERRNOS = frozenset(
    {errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO, errno.ENAMETOOLONG}
)
#: errnos of pidfd_open(pid) that mean no process holds pid: ESRCH, nobody; EINVAL (before
#: Linux 6.9) and ENOENT (since), a thread that is not a thread-group leader, not a process
NOT_A_PROCESS_ERRNOS = frozenset({errno.ESRCH, errno.ENOENT, errno.EINVAL})


def is_answer(err: OSError) -> bool:
    """Whether a failure to read a pid file means there is no record (Absent), not "unknown"."""
    return err.errno is None or err.errno in NO_FILE_ERRNOS


class ForeignProcError(OSError):
    """/proc shows another pid namespace's processes: pids read there would name strangers.

    Under ``unshare --pid --fork`` without a new /proc mount, /proc/<n> is the host's process n,
    not this namespace's. shimpid refuses to record or verify from it (a pidfs fingerprint needs
    no /proc and still works).
    """

    def __init__(self) -> None:
        super().__init__(
            "/proc belongs to another pid namespace (/proc/self is not this process): mount "
            "this namespace's own (unshare --mount-proc, or mount -t proc proc /proc)"
        )


def no_proc_error() -> OSError:
    return FileNotFoundError(errno.ENOENT, "no /proc: process start times cannot be read")


def hidden_process_error(pid: int) -> OSError:
    # /proc mounted with hidepid hides another user's live processes: present, but unreadable
    return PermissionError(errno.EACCES, f"pid {pid} is alive but hidden in /proc")


# ============================================================================
# pidfds: what the kernel offers to name a process
# ============================================================================

#: Linux 6.9+: pidfds live in pidfs, whose inode numbers name one process each for a boot
PIDFS = 2
#: Linux 5.3+: pidfds pin a process, but share one anonymous inode (no fingerprint)
PIDFD = 1
#: no pidfds (older kernels, PyPy, macOS)
NO_PIDFD = 0
PIDFS_MAGIC = 0x50494446
#: errnos that tell of this moment (descriptors or memory run out), not of what the kernel
#: offers: a pidfd level found with one is used once, never remembered
PASSING_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


# flock(2), the lock of PidFileLock (see shimpid._lock). Values as on Linux, macOS and the BSDs.
LOCK_SH, LOCK_EX, LOCK_NB, LOCK_UN = 1, 2, 4, 8


# struct flock for F_OFD_GETLK (Linux) and F_GETLK (macOS, the BSDs): the lock probe.
if sys.platform.startswith("linux"):
    _FLOCK, _GETLK = "@hhqqi4x", "F_OFD_GETLK"
elif sys.platform == "darwin":
    _FLOCK, _GETLK = "@qqihh", "F_GETLK"
elif sys.platform.startswith("freebsd"):
    _FLOCK, _GETLK = "@qqihhi", "F_GETLK"
else:
    _FLOCK, _GETLK = "", ""


def record_locked(fd: int) -> tuple[bool, int | None]:
    """Whether a POSIX or OFD record lock is held on the open file (by any process, this one
    included), and the pid a POSIX one names; (False, None) where this cannot be asked."""
    if not _FLOCK:
        return False, None
    import fcntl

    request = struct.pack(_FLOCK, *_flock_fields(fcntl.F_WRLCK))
    try:
        answer = struct.unpack(_FLOCK, fcntl.fcntl(fd, getattr(fcntl, _GETLK), request))
    except (OSError, AttributeError):  # EINVAL: a kernel before 3.15, a filesystem without
        return False, None
    kind, pid = (answer[0], answer[4]) if _GETLK == "F_OFD_GETLK" else (answer[3], answer[2])
    if kind == fcntl.F_UNLCK:
        return False, None
    return True, pid if pid > 0 else None


def _flock_fields(kind: int) -> tuple[int, ...]:
    # type, whence, start, len (0: to the end), pid (0, as F_OFD_GETLK requires) / BSD order
    if _GETLK == "F_OFD_GETLK":
        return (kind, 0, 0, 0, 0)
    return (0, 0, 0, kind, 0) + ((0,) if _FLOCK.endswith("i") else ())


def flock(fd: int, operation: int) -> None:
    """``fcntl.flock``; ``OSError(ENOSYS)`` where there is none (Windows). Imported on first
    use: a spawner that takes no lock never loads it."""
    try:
        import fcntl
    except ImportError:
        raise OSError(errno.ENOSYS, "no flock() on this platform") from None
    fcntl.flock(fd, operation)


# Descriptors and signal handlers. CPython runs a pending signal handler after a C call returns
# and when a Python function is entered; a handler that raises (KeyboardInterrupt) there loses
# what was not stored yet: ``fd = os.open(...)`` can lose the descriptor, and a cleanup that
# calls a function first may never run. So a descriptor is made by ``kept[0]`` on a ``keep()``
# dict, whose C-level factory stores it before control is back in Python (whether it holds one
# also tells whether the call succeeded), and closed inline, with no call before ``os.close``:
# ``if kept: os.close(kept[0])`` where one place closes it, or, where another may too,
# ``kept[1] = 0`` first (closed, or handed over), which runs no handler. A cleanup that runs
# only after an exception may call a function: one raise is what is guarded against.
#
# Loops. CPython 3.13 and 3.14 compile some loops with their back edge, where a handler runs,
# outside the exception table that covers the rest of the loop (a conditional as the body's
# last statement; 3.13, a ``while`` test too: gh-130279): a handler that raises there leaves
# the frame without its ``finally`` or ``with`` cleanup. (3.12 compiles the same, but looks
# the handler up from the instruction before the jump, which is covered.) So a loop under a
# cleanup that matters is a function of its own, with no handler, called inside the ``try``;
# test_hardening checks every loop.
Kept = collections.defaultdict[int, int]


def keep(call: Callable[..., int], *args: Any, **kwargs: Any) -> Kept:
    """A dict whose first ``[0]`` makes ``call(*args, **kwargs)`` and keeps the descriptor."""
    return collections.defaultdict(functools.partial(call, *args, **kwargs))


def slot() -> Kept:
    """An empty ``Kept`` that a callee opens a descriptor into (``kept[0]``): the caller's from
    before it exists, to close as the note below says."""
    return collections.defaultdict()


def check_mode(mode: int) -> int:
    mode = operator.index(mode)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be in 0..0o7777, got {mode:#o}")
    return mode


TOO_LARGE = f"PID file is larger than {PID_FILE_MAX_BYTES} bytes"


class ProcessIdentity:
    """What a pid file's record says about the live system: ``Verified``, ``Legacy`` or ``Absent``.

    Only ``Verified`` and ``Legacy`` carry a pid, and only a pid in ``1 .. 2**31 - 1`` that named a
    live, non-zombie process when it was checked. Immutable values, usable in ``match``. (Not
    dataclasses: ``dataclasses`` would add 11 ms to importing shimpid.)
    """

    __slots__ = ()
    pid: int | None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}")


class _Alive(ProcessIdentity):
    """Verified and Legacy: a verdict that names a live process."""

    __slots__ = ("pid",)
    __match_args__ = ("pid",)
    pid: int

    def __init__(self, pid: int) -> None:
        set_verdict_pid(self, pid)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.pid == other.pid

    def __hash__(self) -> int:
        return hash((self.pid,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pid={self.pid})"

    def __reduce__(self) -> tuple[type, tuple[int]]:
        return (type(self), (self.pid,))


#: Sets a Verified's or Legacy's pid, bypassing __init__ (the extension makes verdicts with it)
set_verdict_pid = _Alive.__dict__["pid"].__set__


class Verified(_Alive):
    """The recorded process is alive and is the one recorded: same pidfs inode, or start time."""

    __slots__ = ()


class Legacy(_Alive):
    """The recorded pid is alive but the file has no start time: identity cannot be proven."""

    __slots__ = ()


class Absent(ProcessIdentity):
    """Nothing to act on: no readable record, no such live process, or a different process."""

    __slots__ = ()
    __match_args__ = ()

    @property
    def pid(self) -> None:  # type: ignore[override]
        return None

    def __eq__(self, other: object) -> bool:
        return type(other) is Absent if isinstance(other, ProcessIdentity) else NotImplemented

    def __hash__(self) -> int:
        return hash(())

    def __repr__(self) -> str:
        return "Absent()"

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (Absent, ())


ABSENT = Absent()


# ---- the pid file's bytes -------------------------------------------------------------------


def file_bytes(
    encoded: bytes, has_start_time: bool, capability: bytes, identity: bytes, pidfs_id: int | None
) -> bytes:
    """A pid file's bytes: the record (``encoded``), then lines 3 and 4 if there is anything to
    put there. The layout of the lines after the record: the extension's writer has it in C."""
    data = encoded
    line4 = identity
    if line4 and pidfs_id is not None:
        line4 += b" pidfs=%d" % pidfs_id
    if line4 == _IDENTITY_TAG:
        line4 = b""  # the bare tag says nothing: leave it out
    if capability or line4:
        # Each line where readers look for it: line 2 (empty without a start time), line 3
        # (boxlite's: the capability or nothing), line 4.
        if not has_start_time:
            data += b"\n"
        data += capability + b"\n"
        if line4:
            data += line4 + b"\n"
    return data


# ---- objects made once ----------------------------------------------------------------------

# The objects whose __init__ is under way, by id. An __init__ marks its object here before it
# converts its arguments, and sets its slots before it lets go: a conversion may run the
# caller's code (__fspath__, __index__, __bool__), and a signal handler or another thread may
# run between any two lines, so an __init__ re-entered from any of them is refused as a second
# one is, and never sees the object half set (the extension's rule: see _speedups.pyx).
# Each mark holds its object: a handler that raises between the mark and its removal leaves
# that object marked (and alive), never a later object that would reuse its id; and a token of
# the call that made it, which is what tells a re-entered __init__ from the first.
_initialising_objects: dict[int, tuple[object, object]] = {}


def mark_initialising(obj: object, message: str) -> None:
    mark = (obj, object())
    # setdefault() tests and marks in one step: no code of anyone's runs in between.
    if _initialising_objects.setdefault(id(obj), mark) is not mark:
        raise TypeError(message)


def end_init(obj: object) -> None:
    del _initialising_objects[id(obj)]


def refuse_base(base: type) -> NoReturn:
    raise TypeError(f"type '{base.__module__}.{base.__qualname__}' is not an acceptable base type")


class Sealed:
    """Not picklable (it names a path, maybe holds a descriptor: make one where it is used),
    and its own copy (nothing in it changes)."""

    __slots__ = ()

    def __reduce__(self) -> NoReturn:
        raise TypeError(NOT_PICKLABLE.format(type(self).__name__))

    def __copy__(self) -> Sealed:
        return self

    def __deepcopy__(self, memo: object) -> Sealed:
        return self


class Final(Sealed):
    """Base of the reader and the lock: they cannot be subclassed (the lock allows it), and one
    made by ``__new__`` alone (an unset slot) says so instead of failing obscurely."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        if Final not in cls.__bases__:
            refuse_base(cls.__mro__[1])
        super().__init_subclass__(**kwargs)

    def __getattr__(self, name: str) -> object:
        # Reached only for an unset slot (or a name that does not exist). Only shimpid's own
        # slots say "not initialised" (a subclass's are its own business).
        ours = next(k for k in type(self).__mro__ if Final in k.__bases__)
        if name in ours.__dict__.get("__slots__", ()):
            raise TypeError(NOT_INITIALISED.format(type(self).__name__))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _begin_init(self, slot: str) -> None:
        """Mark this object as being initialised, or refuse (``TypeError``) a second __init__
        and one re-entered from the first's conversions (see ``mark_initialising``). The
        caller sets every slot, ``slot`` (the one that says "initialised") last, then calls
        ``end_init(self)``, whatever happened."""
        message = ALREADY_INITIALISED.format(type(self).__name__)
        mark_initialising(self, message)
        # The slot's descriptor, wherever it is in the classes (a subclass's lock has its own)
        member = next(k.__dict__[slot] for k in type(self).__mro__ if slot in k.__dict__)
        try:
            member.__get__(self, type(self))
        except AttributeError:
            return
        end_init(self)
        raise TypeError(message)


# ---- /proc ---------------------------------------------------------------------------------

PROC_OURS, PROC_NONE, PROC_FOREIGN = 1, 0, 2
_proc_checked: tuple[int, int] = (0, PROC_NONE)  # (the pid that checked, what it found)


def proc_state() -> int:
    """Whether /proc is this pid namespace's (``PROC_OURS``), another's, or not mounted.

    /proc/self names the caller as the pid namespace /proc was mounted for sees it: this
    namespace's /proc if and only if that is getpid(). Checked once per process (a namespace
    changes only across a fork).
    """
    global _proc_checked
    pid = os.getpid()
    if _proc_checked[0] == pid:
        return _proc_checked[1]
    try:
        link = os.readlink("/proc/self")
    except FileNotFoundError:
        # no /proc, or one of a namespace this process is not in (it still shows its pid 1)
        state = PROC_FOREIGN if os.path.exists("/proc/1") else PROC_NONE
    else:
        state = PROC_OURS if link == str(pid) else PROC_FOREIGN
    _proc_checked = (pid, state)
    return state


def parent_of(pid: int) -> int:
    """The parent of the process holding pid, as /proc shows it (call proc_state() first); 0 if
    it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


# ---- start times from the clock -------------------------------------------------------------

# Linux stamps a process with the CLOCK_BOOTTIME nanosecond of its fork(), and /proc/<pid>/stat
# shows that in clock ticks, rounded down (nsec_to_clock_t). So a parent that reads the clock
# before and after a fork knows its child's start time without /proc where both readings fall in
# one tick (10 ms): 87-98% of spawns of /bin/true from one thread, in this project's runs.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Nanoseconds per tick, where start times are counted that way and the clock can be read
#: (``time.CLOCK_BOOTTIME``); else 0.
TICK_NS = (
    10**9 // CLOCK_TICKS
    if sys.platform.startswith("linux")
    and hasattr(time, "CLOCK_BOOTTIME")
    and CLOCK_TICKS > 0
    and 10**9 % CLOCK_TICKS == 0
    else 0
)
# Each reading is kept this far from a tick's edges: the vDSO's reading and the kernel's are of
# one clock, but nothing is staked on their agreeing to the nanosecond.
TICK_MARGIN_NS = 10_000


def start_time_between(before: int, after: int) -> int | None:
    """The start time /proc shows for a process forked between two CLOCK_BOOTTIME readings
    (``time.clock_gettime_ns``), or None where they do not tell it (not one tick)."""
    if not TICK_NS:
        return None
    tick = (before - TICK_MARGIN_NS) // TICK_NS
    return tick if tick == (after + TICK_MARGIN_NS) // TICK_NS else None
