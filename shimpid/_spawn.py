"""Start a child and record it from the parent, at the speed of a plain spawn.

``subprocess.Popen`` without ``preexec_fn`` starts children with vfork/posix_spawn; a
``preexec_fn`` forces a full fork(), which copies the parent's page tables: its cost grows with
the parent's memory (bench/spawn-cost.svg; docs/benchmarks.md gives the figures). So the record is
written from the parent, right after
the child starts: an unreaped child keeps its pid, and its start time is fixed when it is created
and survives exec(), so what the parent reads is the child's identity, with no race.

If the record cannot be written the child is killed and reaped and the error raised: no orphan
and no record of a process nobody tracks.

Work done before the child starts adds to every spawn; work done while it starts (exec, the
dynamic loader) mostly does not, on a machine with a CPU to spare (bench/test_spawning.py: a
writer made before ``Popen`` costs about 7% of a spawn of ``/bin/true`` on tmpfs, made after
it about nothing). With no CPU to spare (many threads spawning at once) every step counts
wherever it runs. So a new directory is checked before the child starts, so that a path that
cannot be written fails without starting anything; the writer made there is kept, and the next
path in that directory gets a copy of it with its own name (``PidFileWriter._sibling``: no
system call; where atomic writes swap files with RENAME_EXCHANGE, which is safe only in a
directory nobody else can write to, one ``stat`` of the directory asks that again).
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
import time
from collections.abc import Sequence

from . import _common
from ._backend import PidFileWriter, process_start_time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a program that never uses it to import
    from typing import Any, Literal, overload

    from ._common import PathArg
else:

    def overload(function):  # the last definition is the one that runs
        return function


__all__ = ["spawn"]

# A writer of each directory spawn() has written pid files in, by (directory, atomic, line 3),
# least recently used first (a few: a spawner reuses one or two). One removed since is found
# as the record is written.
USABLE_DIRECTORIES_MAX = 16
_usable_directories: dict[tuple[bytes, bool, str | None], PidFileWriter] = {}


def _writer(
    pidfile: PathArg | PidFileWriter, atomic: bool, capability: str | None
) -> PidFileWriter:
    # Made, and the path checked, before anything is started.
    if isinstance(pidfile, PidFileWriter):
        if capability is not None:
            raise ValueError(
                "a prepared writer has its own capability: give it to PidFileWriter.at()"
            )
        return pidfile
    writer = PidFileWriter.at(pidfile, atomic=atomic, capability=capability)
    check_writable(writer)
    return writer


# access() with the effective ids, as open() checks them (not the real ids, as access() does)
_ACCESS_AS_OPEN = os.access in os.supports_effective_ids
_ST_RDONLY = getattr(os, "ST_RDONLY", 1)  # (PyPy's os lacks the name; 1 wherever it is)


def check_writable(writer: PidFileWriter) -> None:
    """Refuse, before the child starts, a pid file this user cannot write: one in a directory
    it may not write in (``PermissionError``, EACCES) or on a read-only filesystem (EROFS), as
    the write would raise them; for an in-place writer, unless the file is there and writable.
    Else the child would run until its record failed (and then be killed). What ``access()``
    cannot tell (a security module's refusal, a full disk) still fails as the record does."""
    if not _ACCESS_AS_OPEN:
        return
    target = writer._target
    if not writer.atomic and os.access(target, os.W_OK, effective_ids=True):
        return
    directory = os.path.dirname(target)
    if os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        return
    code = errno.EROFS if os.statvfs(directory).f_flag & _ST_RDONLY else errno.EACCES
    raise OSError(code, os.strerror(code), writer.path)


# Typed as typeshed types Popen: text, encoding, errors or universal_newlines make it
# Popen[str], none of them Popen[bytes].
@overload
def spawn(
    args: PathArg | Sequence[PathArg],
    pidfile: PathArg | PidFileWriter,
    *,
    atomic: bool = ...,
    capability: str | None = ...,
    text: Literal[True],
    encoding: str | None = ...,
    errors: str | None = ...,
    universal_newlines: bool | None = ...,
    **popen_kwargs: Any,
) -> subprocess.Popen[str]: ...
@overload
def spawn(
    args: PathArg | Sequence[PathArg],
    pidfile: PathArg | PidFileWriter,
    *,
    atomic: bool = ...,
    capability: str | None = ...,
    text: bool | None = ...,
    encoding: str,
    errors: str | None = ...,
    universal_newlines: bool | None = ...,
    **popen_kwargs: Any,
) -> subprocess.Popen[str]: ...
@overload
def spawn(
    args: PathArg | Sequence[PathArg],
    pidfile: PathArg | PidFileWriter,
    *,
    atomic: bool = ...,
    capability: str | None = ...,
    text: bool | None = ...,
    encoding: str | None = ...,
    errors: str,
    universal_newlines: bool | None = ...,
    **popen_kwargs: Any,
) -> subprocess.Popen[str]: ...
@overload
def spawn(
    args: PathArg | Sequence[PathArg],
    pidfile: PathArg | PidFileWriter,
    *,
    atomic: bool = ...,
    capability: str | None = ...,
    text: bool | None = ...,
    encoding: str | None = ...,
    errors: str | None = ...,
    universal_newlines: Literal[True],
    **popen_kwargs: Any,
) -> subprocess.Popen[str]: ...
@overload
def spawn(
    args: PathArg | Sequence[PathArg],
    pidfile: PathArg | PidFileWriter,
    *,
    atomic: bool = ...,
    capability: str | None = ...,
    text: Literal[False] | None = ...,
    encoding: None = ...,
    errors: None = ...,
    universal_newlines: Literal[False] | None = ...,
    **popen_kwargs: Any,
) -> subprocess.Popen[bytes]: ...
@overload
def spawn(
    args: PathArg | Sequence[PathArg],
    pidfile: PathArg | PidFileWriter,
    *,
    atomic: bool = ...,
    capability: str | None = ...,
    text: bool | None = ...,
    encoding: str | None = ...,
    errors: str | None = ...,
    universal_newlines: bool | None = ...,
    **popen_kwargs: Any,
) -> subprocess.Popen[Any]: ...
def spawn(
    args: PathArg | Sequence[PathArg],
    pidfile: PathArg | PidFileWriter,
    *,
    atomic: bool = True,
    capability: str | None = None,
    **popen_kwargs: Any,
) -> subprocess.Popen[Any]:
    """``subprocess.Popen(args, **popen_kwargs)``, with the child's record written to ``pidfile``.

    ``pidfile`` is a path or a prepared ``PidFileWriter`` (whose own ``atomic`` and
    ``capability`` then apply): reusing one writer spares a high-frequency spawner the path
    checks on every spawn. ``capability`` goes on line 3 (boxlite's ``services-mux-v1``).

    A path that cannot be written (its directory missing, or one this user may not write in, or
    on a read-only filesystem, as ``access()`` tells) fails before anything starts, but for one
    case: given an absolute path in a directory where ``spawn`` wrote a record before (with the
    same ``atomic`` and ``capability``), its name and length are checked before, and the writer
    is made while the child starts, from the one made there before, with no further look at the
    filesystem (but one ``stat`` of the directory, where atomic writes swap files). If that
    directory has gone since, the error (``StorageError``, as a check before would give) is
    raised once the child has started: it is killed and reaped first, as when the record itself
    cannot be written, and the next ``spawn`` there checks first.
    """
    key = known = None
    if isinstance(pidfile, PidFileWriter):
        writer = _writer(pidfile, atomic, capability)
    else:
        # Every conversion of the caller's values (__str__, __bool__, __fspath__) before anything
        # starts, in the writer's order.
        line3 = _common.check_capability(capability).decode() or None
        atomic = bool(atomic)
        given, target = _common.writer_target(pidfile, atomic)  # no filesystem call
        if os.path.isabs(given):
            key = (target.rpartition(b"/")[0], atomic, line3)
            known = _usable_directories.get(key)
        # A new directory is checked before anything starts; a known one's writer is made
        # from the one kept for it, while the child starts.
        writer = known or _writer(given, atomic, line3)
    before = boot_clock()
    child = subprocess.Popen(args, **popen_kwargs)
    try:
        if known is not None:
            writer = known._sibling(given, target) or PidFileWriter.at(
                given, atomic=atomic, capability=line3
            )
        write_child(writer, child.pid, before)
        if key is not None:  # the writer checked in full is kept: each copy asks anew
            _remember(key, known or writer)
    except BaseException as error:
        kill_and_reap(child)
        if key is not None:
            _usable_directories.pop(key, None)
        if (
            known is not None
            and isinstance(error, OSError)
            and not isinstance(error, _common.StorageError)
        ):
            # The directory's own error, as when it is checked first (StorageError), if it is
            # one (it may be back by now: then the error is the write's own)
            PidFileWriter.at(given, atomic=atomic, capability=line3)
        raise
    return child


# The child's start time is told by the clock (_common.start_time_between), where it can be,
# once the clock has agreed with /proc for CLOCK_CHECKS children, and never once it has not: each
# check costs a read of /proc (about 25 us for a new child, 5% of a spawn, more where threads
# spawn at once). A system that counts start times otherwise has /proc read for every child, as
# where the clock cannot tell. (Disagreement is a flag of its own, set and never cleared: no
# other thread's count can undo it.)
CLOCK_CHECKS = 8
_clock_agreed = 0
_clock_disagreed = False
boot_clock = (
    functools.partial(time.clock_gettime_ns, time.CLOCK_BOOTTIME) if _common.TICK_NS else int
)


def write_child(writer: PidFileWriter, pid: int, before: int) -> None:
    """Write the record of child ``pid``, forked after the clock read ``before`` (boot_clock()):
    called in the caller's try, which kills and reaps the child if this raises.

    The child's pid is its own only until it is reaped. If something else reaped it (SIGCHLD
    ignored, a ``waitpid(-1)`` of the application's: the one condition spawn() states), the
    pid may have been another process's by the time its identity was read: then the record is
    removed again and ``ChildProcessError`` raised, never a record that names a stranger (the
    same where its identity could not be read: its pid was nobody's)."""
    try:
        writer._write_for(pid, child_start_time(pid, before, boot_clock()))
    except ProcessLookupError:
        if _unreaped(pid):
            raise
        raise ChildProcessError(errno.ECHILD, REAPED + "not written", writer.path) from None
    if not _unreaped(pid):
        try:
            removed = _remove_record(writer._target, pid)
        except OSError as err:
            removed = f"not removed: {err}"
        raise ChildProcessError(errno.ECHILD, REAPED + removed, writer.path)


REAPED = (
    "the child was reaped by another (SIGCHLD ignored, or a reaper of the application's) as "
    "its record was written: its pid may have been another process's by then; record "
)
_waitid = getattr(os, "waitid", None)


def _unreaped(pid: int) -> bool:
    """Whether child ``pid`` is still this process's to reap, running or a zombie (its pid has
    been no other's since it started). Without waitid (PyPy, macOS), whether /proc names this
    process its parent; True where nothing can tell (no /proc)."""
    if _waitid is None:
        if _common.proc_state() != _common.PROC_OURS:
            return True
        return _common.parent_of(pid) == os.getpid()
    try:
        _waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _remove_record(path: bytes, pid: int) -> str:
    """Remove the pid file at path if it holds a record of pid, as clean() would (unless it
    changes meanwhile, or is locked); what was done, in words."""
    from . import _rundir

    where, name = _rundir.split_file_path(path)
    directory = _rundir.open_directory(where, secure=False)
    try:
        read = _rundir.record_of(directory, name, pid)
        if read is None:
            return "gone already"
        removed, why = _rundir.remove_at(directory, name, read)
        return "removed" if removed else f"not removed: {why}"
    finally:
        os.close(directory)


def child_start_time(pid: int, before: int, after: int) -> int | None:
    """The start time of child ``pid``, forked between the clock readings before and after, if
    the clock tells it and is trusted; else None (the writer reads /proc)."""
    global _clock_agreed, _clock_disagreed
    tick = _common.start_time_between(before, after)
    if tick is None or _clock_disagreed:
        return None
    if _clock_agreed >= CLOCK_CHECKS:
        return tick
    try:
        read = process_start_time(pid)
    except OSError:  # nothing to check with (no /proc): the writer's read says what to do
        return None
    if read == tick:
        _clock_agreed += 1
    else:
        _clock_disagreed = True
    return None  # the record as before: read from /proc


def _remember(key: tuple[bytes, bool, str | None], writer: PidFileWriter) -> None:
    """key's directory is one spawn() has written in: later spawns there copy writer. Moved to
    the end: the least recently used goes first."""
    _usable_directories.pop(key, None)
    _usable_directories[key] = writer
    while len(_usable_directories) > USABLE_DIRECTORIES_MAX:
        try:
            del _usable_directories[next(iter(_usable_directories))]  # the least recently used
        except (KeyError, StopIteration, RuntimeError):  # another thread's change meanwhile
            break


def kill_and_reap(child: subprocess.Popen[Any]) -> None:
    try:
        child.kill()
    except OSError:
        pass
    for stream in (child.stdin, child.stdout, child.stderr):
        if stream is not None:
            stream.close()
    child.wait()
