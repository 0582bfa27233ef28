"""Removing pid files without losing a newer one, and cleaning a run directory.

A pid file is removed after its process is found gone, or has been stopped; in between, the
process's service may have been restarted and written a new record. Reading the file, then
unlinking it by name, would remove that new record (and orphan its process from recovery). So a
record is first renamed aside, which takes exactly what is at the path at that instant, and only
then compared with what was read: the expected record is deleted, anything else is put back.

Both backends share this module; it makes only path-level system calls.
"""

from __future__ import annotations

import errno
import fnmatch
import itertools
import os
import re
import stat
from typing import NamedTuple

from . import _backend, _common
from ._common import Absent, StorageError

__all__ = ["Removal", "clean", "remove_record", "why_absent"]

# The atomic writer's temporary names: ".<name>.<writer's pid>.<counter>.tmp"
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)\.(?P<counter>[0-9]+)\.tmp")
_aside_counter = itertools.count()


def read_record_file(path: str | bytes) -> tuple[bytes, os.stat_result] | None:
    """The bytes and identity of the regular file at path, or None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _common.PID_FILE_MAX_BYTES:
            return None
        return os.read(fd, _common.PID_FILE_MAX_BYTES + 1), info
    finally:
        os.close(fd)


def remove_record(path: str | bytes, expected: tuple[bytes, os.stat_result]) -> bool:
    """Remove the pid file at path if it is still ``expected`` (bytes and inode, as
    ``read_record_file`` gave them); True if it was. A record written since is left in place.

    The file is renamed aside first (a temporary name of the writer's pattern, so that
    ``clean`` finds one left by a process killed right then).
    """
    directory, name = os.path.split(os.fsencode(path))
    aside = os.path.join(directory, b".%s.%d.%d.tmp" % (name, os.getpid(), next(_aside_counter)))
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    taken = read_record_file(aside)
    if taken is not None and taken[0] == expected[0] and _same_file(taken[1], expected[1]):
        os.unlink(aside)
        return True
    # Not the record that was read: put back what was taken, unless something newer is there
    # already (link() never replaces; rename() would).
    if os.path.isdir(aside):
        os.rename(aside, path)
        return False
    try:
        os.link(aside, path, follow_symlinks=False)
    except FileExistsError:
        pass
    os.unlink(aside)
    return False


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


class Removal(NamedTuple):
    """What ``clean`` removed (or would remove), or kept for want of an answer."""

    path: str
    why: str
    removed: bool


def clean(directory: str | os.PathLike, *, pattern: str = "*.pid",
          dry_run: bool = False) -> list[Removal]:
    """Remove what dead writers and dead processes left in ``directory`` (not recursively).

    - the atomic writer's temporary files (``.<name>.<pid>.<n>.tmp``) whose writer is no longer
      running (a live process with that pid, whoever it is, keeps them);
    - pid files (regular files matching ``pattern``) that read ``Absent``: no record, another
      boot's, or a process that is gone. Each is removed only if unchanged since it was read.

    Symlinks and anything but regular files are never touched. A file whose verdict the system
    cannot give (``OSError``) is kept and reported with ``removed=False``. ``dry_run`` lists what
    would be removed. Returns the list, sorted by path.
    """
    directory = os.fspath(directory)
    results = []
    with os.scandir(directory) as entries:
        names = sorted(entry.name for entry in entries if entry.is_file(follow_symlinks=False))
    for name in names:
        path = os.path.join(directory, name)
        temp = TEMP_NAME.fullmatch(name)
        try:
            if temp:
                why = _stale_temp(int(temp["pid"]))
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


def _stale_temp(pid: int) -> str | None:
    if 0 < pid <= _common.PID_MAX and _backend.is_process_alive(pid):
        return None  # its writer may still be at work
    return f"temporary file of writer {pid}, which is not running"


def _stale_record(path: str, dry_run: bool) -> str | None:
    found = read_record_file(path)
    if found is None:
        return None
    reader = _backend.PidFileReader.at(path)
    if reader.process_identity() != Absent():
        return None
    why = why_absent(reader)
    if dry_run or remove_record(path, found):
        return f"pid file: {why}"
    return None  # replaced since it was read


def why_absent(reader: _backend.PidFileReader) -> str:
    """Why a pid file reads Absent, in words for an operator (a best effort: the system may
    have changed since the verdict)."""
    try:
        record, extras = reader._read_entry()
    except StorageError as err:
        return "no pid file" if err.errno == errno.ENOENT else f"no record ({err})"
    if _common.from_another_boot(extras):
        return f"recorded in another boot ({extras.boot_id})"
    pid = record.pid
    if not 0 < pid <= _common.PID_MAX:
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
