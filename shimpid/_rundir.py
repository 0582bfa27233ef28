"""A run directory: scanning it, cleaning it, and removing a pid file without losing a newer one.

A pid file is removed after its process is found gone, or has been stopped; meanwhile the
process's service may have been restarted and written a new record. So a record is judged from
one read of the file, and removed only if the file still holds exactly those bytes, in the same
inode: it is compared first, then renamed aside (which takes exactly what is at the path at that
instant) and compared again; only in the rare case that it was replaced in between is anything
put back. Readers never see the path empty, except in that case, for microseconds.

Both backends share this module; it makes only path-level system calls.
"""

from __future__ import annotations

import errno
import itertools
import operator
import os
import stat
import time
from collections.abc import Callable, Iterator

from . import _backend, _common
from ._common import ABSENT, Extras, ProcessIdentity, StorageError
from ._lock import is_locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._pure import PidRecord

#: A pid file as read_record_file() read it: its bytes, and the identity of the file they came
#: from (what remove_record() compares before it removes anything).
Found = tuple[bytes, os.stat_result]

__all__ = ["Removal", "clean", "judge", "read_record_file", "remove_record", "scan", "why_absent"]

_aside_counter = itertools.count()
# A file renamed aside for removal: ".shimpid-removing.<remover's pid>.<counter>", short
# whatever the pid file's name (its own name plus a suffix could exceed NAME_MAX).
ASIDE_PREFIX = ".shimpid-removing."
# clean() leaves younger temporary files alone: a write takes microseconds, and a writer in
# another pid namespace, whose pid means nothing here, may be at work.
STALE_AFTER = 2.0


def read_record_file(path: str | bytes) -> Found | None:
    """The bytes and identity of the regular file at path, or None where there is none.

    Reads at most one byte more than a pid file may hold. A symlink, FIFO, socket or directory
    is no record file (None); any other failure (EACCES, EMFILE...) is raised.
    """
    fd = _open_record(path)
    if fd is None:
        return None
    try:
        return _read_open(fd)
    finally:
        os.close(fd)


def _open_record(path: str | bytes) -> int | None:
    """A descriptor of the regular file at path, or None (see read_record_file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        if err.errno in _common.NO_FILE_ERRNOS or err.errno == errno.EISDIR:
            return None
        raise
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _read_open(fd: int) -> Found:
    return os.pread(fd, _common.PID_FILE_MAX_BYTES + 1, 0), os.fstat(fd)


def judge(found: Found) -> tuple[PidRecord | StorageError, Extras, ProcessIdentity]:
    """``(record or the StorageError, extras, verdict)`` of what ``read_record_file`` read: the
    verdict of these very bytes, as ``process_identity()`` would give it for them."""
    data, info = found
    if info.st_size > _common.PID_FILE_MAX_BYTES or len(data) > _common.PID_FILE_MAX_BYTES:
        return _common.content_error(_common.TOO_LARGE, None), _common.NO_EXTRAS, ABSENT
    try:
        record = _backend.PidRecord.decode(data)
    except StorageError as err:
        return err, _common.NO_EXTRAS, ABSENT
    extras = _common.parse_extras(data)
    if _common.from_another_boot(extras):
        return record, extras, ABSENT
    return record, extras, _backend._classify(record.pid, record.start_time, extras.pidfs_id)


def remove_record(path: str | bytes, expected: Found) -> bool:
    """Remove the pid file at path if it still is ``expected`` (its bytes and inode, as
    ``read_record_file`` gave them); True if it was. A record written since stays, and so does
    a file a process holds locked (a PidFileLock's): this takes its lock while removing it,
    so a PidFileLock taking the stale file over at the same instant waits, then looks again."""
    fd = _open_record(path)
    if fd is None:
        return False
    try:
        if not _same(_read_open(fd), expected):
            return False
        try:
            _common.flock(fd, _common.LOCK_EX | _common.LOCK_NB)
        except BlockingIOError:
            return False  # held: its holder lives
        except OSError as err:
            if err.errno != errno.ENOSYS:
                raise  # (Windows: no locks to respect)
        else:
            # Still the file at the path? A PidFileLock may have taken it over between the
            # open and the lock (renaming its own over it): that one is not to be touched.
            info = os.fstat(fd)
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                return False
            if (info.st_ino, info.st_dev) != (now.st_ino, now.st_dev):
                return False
        return _remove_aside(path, expected)
    finally:
        os.close(fd)  # lets go of the lock


def _remove_aside(path: str | bytes, expected: Found) -> bool:
    directory = os.path.dirname(os.fsencode(path)) or b"."
    aside = os.path.join(
        directory, b"%s%d.%d" % (ASIDE_PREFIX.encode(), os.getpid(), next(_aside_counter))
    )
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    taken = read_record_file(aside)
    if taken is not None and _same(taken, expected):
        os.unlink(aside)
        return True
    # Replaced in the instant between the two: put back what was taken, unless something newer
    # is there already (link() never replaces; rename() would).
    if os.path.isdir(aside):
        os.rename(aside, path)
        return False
    try:
        os.link(aside, path, follow_symlinks=False)
    except FileExistsError:
        pass
    os.unlink(aside)
    return False


def _same(a: Found, b: Found) -> bool:
    return a[0] == b[0] and (a[1].st_ino, a[1].st_dev) == (b[1].st_ino, b[1].st_dev)


def why_absent(record: PidRecord | StorageError, extras: Extras) -> str:
    """Why a record (or the StorageError in its place) reads Absent, in words for an operator:
    a best effort, the system may have changed since the verdict."""
    if isinstance(record, StorageError):
        return "no pid file" if record.errno == errno.ENOENT else f"no record ({record})"
    if _common.from_another_boot(extras):
        return f"recorded in another boot ({extras.boot_id})"
    pid = record.pid
    if not _common.names_a_process(pid):
        return f"pid {pid} names no single process"
    try:
        if _backend.is_process_alive(pid):
            return f"pid {pid} now belongs to another process (it was reused)"
        if _backend.process_start_time(pid) is not None:
            return f"process {pid} has exited (a zombie, not yet reaped)"
    except OSError as err:
        return f"cannot tell ({err})"
    try:
        os.kill(pid, 0)
    except OSError:
        return f"process {pid} has exited"
    return f"pid {pid} is a thread's, not a process"


class Removal(tuple):  # type: ignore[type-arg]
    """What ``clean`` removed (or would remove), or kept for want of an answer:
    ``(path, why, removed)``."""

    __slots__ = ()

    def __new__(cls, path: str, why: str, removed: bool) -> Removal:
        return tuple.__new__(cls, (path, why, removed))

    @property
    def path(self) -> str:
        return self[0]  # type: ignore[no-any-return]

    @property
    def why(self) -> str:
        return self[1]  # type: ignore[no-any-return]

    @property
    def removed(self) -> bool:
        return self[2]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return "Removal(path={!r}, why={!r}, removed={!r})".format(*self)


def scan(
    directory: str | os.PathLike[str], *, pattern: str = "*.pid"
) -> Iterator[tuple[str, ProcessIdentity | OSError]]:
    """``(path, verdict)`` for each pid file in ``directory`` (not below), in one pass over it.

    Pid files are the regular files whose names match ``pattern``; symlinks are never followed,
    and shimpid's temporary files are skipped. The verdict is ``process_identity()``'s: a file
    without a record is ``Absent()``; where the system cannot tell (an unreadable file, out of
    descriptors) the ``OSError`` comes instead of a verdict. Only a failure of the directory
    itself (opening or listing it) is raised. Each file is read relative to the directory
    opened once, so a directory renamed meanwhile is still the one scanned.
    """
    directory = os.fspath(directory)
    prefix = os.path.join(directory, "")
    directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        suffix = _suffix_of(pattern)
        fast = getattr(_backend, "_scan_suffix", None)
        if fast is not None and suffix is not None:
            yield from fast(directory_fd, os.fsencode(suffix), prefix, is_temp)
        else:
            yield from _scan_names(directory_fd, pattern, prefix)
    finally:
        os.close(directory_fd)


def _scan_names(
    directory_fd: int, pattern: str, prefix: str
) -> Iterator[tuple[str, ProcessIdentity | OSError]]:
    """scan()'s rules, for any pattern (the extension has a fast path for "*<literal>")."""
    matches = _matcher(pattern)
    identity_at = _backend._identity_at
    with os.scandir(directory_fd) as entries:
        for entry in entries:
            name = entry.name
            if not matches(name) or not entry.is_file(follow_symlinks=False):
                continue
            if name.startswith(".") and is_temp(name):
                continue
            path = prefix + name
            try:
                verdict: ProcessIdentity | OSError = identity_at(
                    directory_fd, os.fsencode(name), path
                )
            except OSError as err:
                verdict = err
            yield path, verdict


def _suffix_of(pattern: str) -> str | None:
    """The literal of a "*<literal>" pattern ("*.pid": ".pid"), or None."""
    if pattern.startswith("*") and not any(c in pattern[1:] for c in "*?[\\"):
        return pattern[1:]
    return None


def _matcher(pattern: str) -> Callable[[str], bool]:
    """A test for names matching a shell pattern: "*.pid" (and any "*<literal>") by its end,
    anything else by fnmatch."""
    suffix = _suffix_of(pattern)
    if suffix is not None:
        return operator.methodcaller("endswith", suffix)
    import fnmatch  # here: it imports re, which costs every importer of shimpid 5 ms

    return re_match(fnmatch.translate(pattern))


def re_match(expression: str) -> Callable[[str], bool]:
    import re

    return re.compile(expression).match  # type: ignore[return-value]


def clean(
    directory: str | os.PathLike[str], *, pattern: str = "*.pid", dry_run: bool = False
) -> list[Removal]:
    """Remove what dead writers and dead processes left in ``directory`` (not recursively).

    - pid files (regular files whose name matches ``pattern``) that read ``Absent``: no record,
      another boot's, or a process that is gone. Each is judged from one read and removed only
      if it still holds those bytes (see ``remove_record``);
    - the atomic writer's temporary files of those pid files (``.<name>.<pid>.<n>.tmp``, with
      ``<name>`` matching ``pattern``), and files left aside by a removal, whose writer is no
      longer running (a live process with that pid, whoever it is, keeps them) and which are at
      least two seconds old (a writer in another pid namespace may be at work).

    Symlinks and anything but regular files are never touched. A file that cannot be judged
    (``OSError``: unreadable, or the system cannot tell) is kept, with ``removed=False``.
    ``dry_run`` lists what would be removed. Returns the list, sorted by path.
    """
    import fnmatch  # here: it imports re, which costs every importer of shimpid 5 ms

    directory = os.fspath(directory)
    results = []
    with os.scandir(directory) as entries:
        names = sorted(entry.name for entry in entries if entry.is_file(follow_symlinks=False))
    for name in names:
        path = os.path.join(directory, name)
        temp = temp_file(name)
        try:
            if temp is not None:
                target, writer = temp
                if target is not None and not fnmatch.fnmatchcase(target, pattern):
                    continue
                why = _stale_temp(path, writer)
                if why and not dry_run:
                    os.unlink(path)
            elif fnmatch.fnmatchcase(name, pattern):
                why = _stale_record(path, dry_run)
            else:
                continue
        except FileNotFoundError:
            continue  # gone meanwhile
        except OSError as err:
            results.append(Removal(path, f"kept: cannot tell ({err})", False))
            continue
        if why:
            results.append(Removal(path, why, True))
    return results


def temp_file(name: str) -> tuple[str | None, int] | None:
    """``(pid file name, writer's pid)`` of a writer's temporary name
    (``.<name>.<pid>.<counter>.tmp``), ``(None, pid)`` of a removal's aside name, or None."""
    if name.startswith(ASIDE_PREFIX):
        parts = name[len(ASIDE_PREFIX) :].split(".")
        if len(parts) == 2 and all(map(_is_number, parts)):
            return None, int(parts[0])
        return None
    parts = name.split(".")
    if (
        len(parts) < 5
        or parts[0]
        or not parts[1]
        or parts[-1] != "tmp"
        or not (_is_number(parts[-3]) and _is_number(parts[-2]))
    ):
        return None
    return ".".join(parts[1:-3]), int(parts[-3])


def is_temp(name: str) -> bool:
    """Whether name is a writer's temporary file or a removal's aside file (scan skips them)."""
    return temp_file(name) is not None


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit() alone takes other scripts' digits


def _stale_temp(path: str, pid: int) -> str | None:
    if time.time() - os.lstat(path).st_mtime < STALE_AFTER:
        return None  # a write may be under way
    if _common.names_a_process(pid) and _backend.is_process_alive(pid):
        return None  # its writer may still be at work
    return f"temporary file of writer {pid}, which is not running"


def _stale_record(path: str, dry_run: bool) -> str | None:
    found = read_record_file(path)
    if found is None:
        return None
    record, extras, verdict = judge(found)
    if verdict != ABSENT or is_locked(path):  # a lock held: its holder lives
        return None
    why = f"pid file: {why_absent(record, extras)}"
    if dry_run or remove_record(path, found):
        return why
    return None  # replaced since it was read
