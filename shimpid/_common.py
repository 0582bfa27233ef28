"""What both backends share: the error type, the identity verdicts, limits and messages.

Defined once, so ``shimpid._pure`` and ``shimpid._speedups`` raise the same exceptions with the
same words and return the same verdict objects; tests compare the two backends on exactly that.
"""

from __future__ import annotations

import errno
import operator
import os
import re
from dataclasses import dataclass

__all__ = [
    "PID_RECORD_MAX_BYTES",
    "PID_FILE_MAX_BYTES",
    "PID_MAX",
    "StorageError",
    "ProcessIdentity",
    "Verified",
    "Legacy",
    "Absent",
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
        # OSError prints "[Errno None] ..." for a content error that carries a file name.
        if self.errno is None and self.filename is not None:
            return f"{self.strerror}: {self.filename!r}"
        return super().__str__()


def not_utf8_error(offset: int) -> StorageError:
    return StorageError(f"PID file is not valid UTF-8: invalid byte at offset {offset}")


def invalid_pid_error(line: str, reason: int) -> StorageError:
    if len(line) > 40:
        line = line[:40] + "..."
    return StorageError(f"invalid PID {line!r}: {_PARSE_REASONS[reason]}")


def read_error(code: int, path: str | bytes) -> StorageError:
    """A system call on the pid file failed with errno ``code``."""
    cause = OSError(code, os.strerror(code), path)
    exc = StorageError(code, f"cannot read PID file: {cause.strerror}", path)
    exc.__cause__ = cause
    return exc


def content_error(detail: str, path: str | bytes) -> StorageError:
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


def buffer_too_small(size: int) -> str:
    return f"buffer too small: {size} bytes, need {PID_RECORD_MAX_BYTES}"


# ============================================================================
# Paths, checked once when a writer or reader is created
# ============================================================================

# The atomic writer's temporary sibling is ".<name>.<pid>.<counter>.tmp": the pid (10 digits at
# most), a dot, the counter (20 digits at most) and ".tmp" follow the prefix.
TEMP_SUFFIX_MAX = 10 + 1 + 20 + 4
# The Cython writer builds that name on the stack in a buffer of this size (PATH_MAX on Linux).
TEMP_PATH_MAX = 4096
NAME_MAX = 255


def resolve_path(path: str | bytes | os.PathLike) -> tuple[str | bytes, bytes]:
    """``(path as given, absolute path as bytes)``; ``StorageError`` if it cannot name a file.

    A relative path is anchored to the current directory now, not when the file is written: a
    writer made in a parent may run in a child that has changed directory (``Popen(cwd=...)``).
    """
    given = os.fspath(path)
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


def writer_paths(path: str | bytes | os.PathLike, atomic: bool) -> tuple[str | bytes, bytes, bytes]:
    """``resolve_path`` plus the prefix of the atomic writer's temporary names."""
    given, target = resolve_path(path)
    directory, name = os.path.split(target)
    temp_prefix = os.path.join(directory, b"." + name + b".")
    if atomic and (
        len(name) + 2 + TEMP_SUFFIX_MAX > NAME_MAX
        or len(temp_prefix) + TEMP_SUFFIX_MAX >= TEMP_PATH_MAX
    ):
        raise StorageError(
            errno.ENAMETOOLONG,
            "PID file path too long to add a temporary name beside it (use atomic=False)",
            given,
        )
    return given, target, temp_prefix


# ============================================================================
# Boot identity
# ============================================================================

# Start times count clock ticks from boot, so after a reboot a recorded (pid, start time) can
# match an unrelated process: the same services start in the same order, get the same pids, at
# the same tick. Files written by shimpid carry the boot's identity on a third line, so a reader
# can refuse a record from another boot. The reference reads the same file as the same record:
# it ignores lines after the second (for a record without a start time the second stays empty).
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
BOOT_ID_BYTES = 36  # a UUID as the kernel prints it: 8-4-4-4-12 lowercase hex digits
_BOOT_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_boot_id(value: bytes) -> bool:
    return _BOOT_ID.fullmatch(value) is not None


def read_boot_id() -> bytes | None:
    """This boot's identity, or None where there is none to read (not Linux, no /proc)."""
    try:
        fd = os.open(BOOT_ID_PATH, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        value = os.read(fd, 64).strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    return value if is_boot_id(value) else None


#: This boot's identity, read once at import: a process does not outlive its boot. (A process
#: checkpointed and restored across a reboot, with CRIU say, would carry the old one.)
CURRENT_BOOT_ID = read_boot_id()


def check_mode(mode: int) -> int:
    mode = operator.index(mode)
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be in 0..0o7777, got {mode:#o}")
    return mode
TOO_LARGE = f"PID file is larger than {PID_FILE_MAX_BYTES} bytes"


class ProcessIdentity:
    """What a pid file's record says about the live system: ``Verified``, ``Legacy`` or ``Absent``.

    Only ``Verified`` and ``Legacy`` carry a pid, and only a pid in ``1 .. 2**31 - 1`` that named a
    live, non-zombie process when it was checked.
    """

    __slots__ = ()
    pid: int | None


@dataclass(frozen=True, slots=True)
class Verified(ProcessIdentity):
    """The recorded process is alive and its start time equals the recorded one."""

    pid: int


@dataclass(frozen=True, slots=True)
class Legacy(ProcessIdentity):
    """The recorded pid is alive but the file has no start time: identity cannot be proven."""

    pid: int


@dataclass(frozen=True, slots=True)
class Absent(ProcessIdentity):
    """Nothing to act on: no readable record, no such live process, or a different process."""

    @property
    def pid(self) -> None:  # type: ignore[override]
        return None


ABSENT = Absent()
