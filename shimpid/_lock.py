"""PidFileLock: a pid file that is also a lock, held by its process for as long as it runs.

The holder keeps an exclusive ``flock()`` on the pid file, whose record names it. The kernel
drops the lock when the last descriptor of it is closed, so it goes with its process, whatever
killed it; a file nobody holds locked is stale, whatever pid it names, and is taken over.

``flock()`` rather than ``fcntl()`` record locks: it belongs to the open file, not to the
process, so a reader in the same process closing its own descriptor of the file does not drop
it, and ``shimpid lock`` can hand it to the command it runs; procps' ``pgrep -L`` and
``pkill -L`` accept either kind.

Acquiring never exposes an empty or half-written file: the record is written to a temporary
file, locked there, then put at the path by ``link()`` (which fails if something is there) or,
over a stale file, by ``rename()`` while holding that file's lock, so two processes taking over
the same stale file cannot both win: the loser's lock is on an inode no longer at the path, which
it checks after locking.

This module is the whole lock, one code whatever the backend: its policy (waiting, ownership,
fork) and its system calls (``_lock_try``, ``_lock_release``), through ``os``. The verdicts it
asks for (is a stale file's process alive?) are the backend's.
"""

from __future__ import annotations

import atexit
import enum
import errno
import functools
import math
import operator
import os
import signal
import stat
import time

from . import _backend, _common
from ._common import ABSENT, Legacy, ProcessIdentity, Verified
from ._rundir import (
    Read,
    UntrustedPath,
    is_secure_default,
    judge,
    lock_holder,
    open_directory,
    open_to_others,
    probe_lock,
)
from ._rundir import flock_holders as _rundir_flock_holders

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import ParamSpec, TypeVar

    from ._common import PathArg

    P = ParamSpec("P")
    R = TypeVar("R")

__all__ = ["AlreadyLocked", "AlreadyRunning", "PidFileLock", "exit_on_sigterm"]

# The lock's file is made read-write: release() reads the record back.
_CREATE_LOCKED = _common.CREATE_TEMP & ~os.O_WRONLY | os.O_RDWR
# What _lock_try answers: the lock is ours; another process holds it; its file is unlocked but
# the policy's stale() refused it.
_HELD, _TAKEN, _OCCUPIED = 0, 1, 4

# A try-once acquire() that finds the file locked by a process the file does not (yet) name
# waits this long for it to: a reader's probe (is_locked(), pgrep -L) holds a shared lock for
# microseconds, and a process taking the file over holds it before its record is in place.
UNNAMED_HOLDER_GRACE = 0.05
_POLL_MAX = 0.05  # the longest sleep between tries of acquire(timeout>0)
# An unlocked empty file younger than this (by its ctime) is being written, not stale: tools
# that lock by exclusive creation (lockfile, python-daemon's TimeoutPIDLockFile) create the
# file, then write their pid into it.
FRESH_EMPTY = 1.0

# The locks this process holds, by descriptor: closed in a child after fork() (a forked child
# does not hold its parent's locks; closing its copy leaves the parent's lock in place), and
# released at interpreter exit (atexit), their files removed.
_held: dict[int, PidFileLock] = {}
_handed_out: set[int] = set()  # of those, the descriptors fileno() gave out
# The descriptors acquire() waits on (_wait_for_holder), each a Kept, by its id (never by ==:
# two empty ones are equal): see there
_waiting: dict[int, _common.Kept] = {}
# This process's pid and its pid file's bytes for each (capability line, pidfd level): made
# once, renewed after fork() by the hook below (CPython runs it after every fork that may run
# Python code: os.fork(), multiprocessing, a preexec_fn; C code that forks must call
# PyOS_AfterFork_Child()), which spares a getpid() per call.
_pid = os.getpid()
_own: dict[tuple[bytes, int], bytes] = {}


class AlreadyLocked(OSError):
    """The pid file is locked by another process (or another PidFileLock of this one):
    ``errno`` is ``EWOULDBLOCK``, ``pid`` the holder's pid if the file verifiably names it."""

    def __init__(self, path: str | bytes, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "a process it does not name"
        super().__init__(errno.EWOULDBLOCK, f"pid file is locked by {holder}", path)
        self.pid = pid

    def __reduce__(self) -> tuple[type, tuple[str | bytes, int | None]]:
        return type(self), (self.filename, self.pid)


class AlreadyRunning(AlreadyLocked):
    """Nobody holds the pid file locked, but it names a running process: one whose record is
    ``Verified`` (its start time or pidfs fingerprint matches), or a record without a
    fingerprint (another tool's: python-daemon, ``pid``, a shell script) whose pid is alive. Its
    program may be an instance of this one that locks otherwise, or not at all: taking the file
    over could run two. ``pid`` is that process; ``take_over_running=True`` takes it anyway."""

    def __init__(self, path: str | bytes, pid: int | None, why: str = "") -> None:
        why = why or "it names a running process"
        if pid is None:  # a file being written: see FRESH_EMPTY
            message = f"pid file is not locked, but {why}"
        else:
            message = (
                f"pid file is not locked, but names process {pid}, which is running ({why}); "
                "remove it or use take_over_running=True if that process is not this program"
            )
        OSError.__init__(self, errno.EWOULDBLOCK, message, path)
        self.pid, self.why = pid, why

    def __reduce__(self) -> tuple[type, tuple[str | bytes, int | None, str]]:  # type: ignore[override]
        return type(self), (self.filename, self.pid, self.why)


class _NotGiven(enum.Enum):
    NOT_GIVEN = "not given"


_NOT_GIVEN = _NotGiven.NOT_GIVEN


class PidFileLock(_common.Final):
    """An exclusive lock on a pid file, holding this process's record: only one process holds
    it at a time, and a file left by a process that has gone never blocks the next one.

    ``with lock:`` (and a function decorated with ``@lock``) tries once, or waits ``timeout``
    seconds if one was given here, and raises ``AlreadyLocked`` if another process holds it:
    one instance runs, a second fails at once. A file nobody holds locked but that names a
    running process (``AlreadyRunning``) is refused too, unless ``take_over_running``.

    ``mode`` is the file's mode exactly (the umask does not filter it); ``uid``/``gid`` its
    owner (-1: this process's); ``create_dir`` makes the missing directories on the way (0o755,
    as ``mkdir -p``) when the lock is made. As root (or with ``secure=True``) the path must be
    one no other user could steer (``UntrustedPath`` otherwise; see
    ``shimpid._rundir.open_directory``). An object is not for sharing between threads: threads
    that need the lock each make their own, and exclude each other as processes do, but for
    one thing: ``timeout=None`` does not wait for another thread's lock (it could be this
    thread's: the wait would never end), it raises ``AlreadyLocked``; a timeout in seconds
    waits. It may be subclassed.
    """

    __slots__ = (
        "_capability",
        "_data",
        "_gid",
        "_mode",
        "_owner",
        "_path",
        "_refused",
        "_slot",
        "_stale",
        "_target",
        "_temp_prefix",
        "_timeout",
        "_uid",
    )

    def __init_subclass__(cls, **kwargs: object) -> None:
        super(_common.Final, cls).__init_subclass__(**kwargs)  # unlike the other types: allowed

    def __init__(
        self,
        path: PathArg,
        *,
        mode: int = 0o644,
        capability: str | None = None,
        secure: bool | None = None,
        timeout: float | _NotGiven | None = _NOT_GIVEN,
        take_over_running: bool = False,
        create_dir: bool = False,
        uid: int = -1,
        gid: int = -1,
    ) -> None:
        self._begin_init("_target")  # see _common.mark_initialising
        try:
            # Every conversion (which may run the caller's code) before anything changes.
            mode = _common.check_mode(mode)
            capability_line = _common.check_capability(capability)
            secure = is_secure_default() if secure is None else bool(secure)
            if timeout is not _NOT_GIVEN:
                timeout = _check_timeout(timeout)
            running, create_dir = bool(take_over_running), bool(create_dir)
            uid, gid = _check_id(uid, "uid"), _check_id(gid, "gid")
            if secure and mode & 0o022:
                # a record others could rewrite is no instruction to signal (shimpid stop
                # refuses it): as root, never made so
                raise ValueError(f"mode {mode:#o} lets group or others write the pid file")
            path = os.fspath(path)
            if create_dir:  # (and, as root, checked in the same walk)
                _check_directory(_common.writer_target(path, True)[1], secure, True)
            given, target, temp_prefix, _ = _common.writer_paths(path, True)
            if secure and not create_dir:
                _check_directory(target, True, False)
            self._path, self._temp_prefix = given, temp_prefix
            self._mode = mode
            self._capability = capability_line
            self._timeout = timeout
            # What the takeover policy last refused (a running process), and the policy:
            # made once, not per acquire().
            self._refused: list[tuple[int | None, str]] = []
            self._stale = _always if running else functools.partial(_stale, self._refused)
            self._uid, self._gid = uid, gid
            # The lock's descriptor while held, in a list _lock_try fills: a signal handler
            # that raises as acquire() returns cannot lose it.
            self._slot = [-1]
            self._owner = 0  # the pid that acquired it
            self._data = b""  # the record it wrote
            self._target = target
        finally:
            _common.end_init(self)

    @classmethod
    def at(
        cls,
        path: PathArg,
        *,
        mode: int = 0o644,
        capability: str | None = None,
        secure: bool | None = None,
    ) -> PidFileLock:
        """``PidFileLock(path, ...)``, named as the readers' and writers' ``at``."""
        return cls(path, mode=mode, capability=capability, secure=secure)

    @property
    def path(self) -> str | bytes:
        """The path, as given."""
        return self._path

    @property
    def mode(self) -> int:
        return self._mode

    @property
    def capability(self) -> str | None:
        return self._capability.decode() or None

    @property
    def timeout(self) -> float | None:
        """What ``with`` waits: 0 (try once) unless given; what ``acquire()`` waits with no
        argument: for ever (None) unless given."""
        return 0.0 if self._timeout is _NOT_GIVEN else self._timeout

    def __repr__(self) -> str:
        state = "held" if self._held() else "not held"
        return f"{type(self).__name__}({self._path!r}, {state})"

    def __enter__(self) -> PidFileLock:
        self.acquire(timeout=self.timeout)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """As a decorator: the function runs holding the lock (as in ``with``; a call while it
        is held, by a recursive call too, raises ``AlreadyLocked``)."""

        @functools.wraps(func)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return func(*args, **kwargs)

        return locked

    # ---- taking and giving back ----------------------------------------------------------

    def acquire(self, timeout: float | _NotGiven | None = _NOT_GIVEN) -> None:
        """Take the lock and write this process's record into the file.

        ``timeout``: ``None`` waits as long as it takes, ``0`` tries once, else seconds; not
        given, the constructor's, else ``None``. Raises ``AlreadyLocked`` when another process
        (or another PidFileLock of this one) holds it, and also when this one already does: a
        lock is never taken twice; ``AlreadyRunning`` when nobody holds it but the file names
        a running process (see the class). Other failures raise ``OSError`` with the errno;
        one where the filesystem has no locks (``ENOLCK``, ``EOPNOTSUPP``) is raised, never
        taken for success.
        """
        if timeout is _NOT_GIVEN:
            timeout = None if self._timeout is _NOT_GIVEN else self._timeout
        elif timeout is not None and timeout.__class__ is not float:
            # A float from here on: no code of the caller's runs between the tries, while a
            # temporary file or a descriptor is held.
            timeout = _check_timeout(timeout)
        elif timeout is not None and not timeout >= 0:  # NaN too
            raise ValueError(f"timeout must be None or >= 0, not {timeout!r}")
        pid = _pid
        if self._slot[0] >= 0 and self._owner == pid:  # inline: the hot path
            raise AlreadyLocked(self._path, pid)
        data = _own.get((self._capability, _backend._pidfd_level())) or _own_record(
            self._capability
        )
        slot = [-1]  # the object's only once the lock is taken (a forked child's, or another
        # thread's failed try, must not replace the one in use)
        deadline = grace = math.inf  # until a first try fails
        delay = 0.001
        try:
            while True:
                taken = _lock_try(
                    self._target,
                    self._temp_prefix,
                    data,
                    self._mode,
                    self._uid,
                    self._gid,
                    slot,
                    self._path,
                    self._stale,
                )
                if taken == _TAKEN:
                    _held[slot[0]] = self
                    break
                if timeout is None and taken == _HELD:
                    if _held_here(self._target):  # it would wait for itself, for ever
                        raise AlreadyLocked(self._path, pid)
                    if _wait_for_holder(self._target, self._path):
                        # A POSIX or OFD lock's holder (lockf, fasteners): flock() does not
                        # wait for it. Look again, less and less often, as for a timeout.
                        time.sleep(delay)
                        delay = min(delay * 2, _POLL_MAX)
                    continue
                now = time.monotonic()
                if deadline == math.inf:  # the first try failed: from now on, the clock counts
                    deadline = now + (math.inf if timeout is None else timeout)
                    grace = now + UNNAMED_HOLDER_GRACE
                if taken == _OCCUPIED:
                    # A file being written (no pid yet) is given the grace of an unnamed holder.
                    refused = self._refused[-1]
                    if now >= deadline and (refused[0] is not None or now >= grace):
                        raise AlreadyRunning(self._path, *refused)
                else:
                    holder = holder_pid(self._target)
                    if now >= deadline and (holder is not None or now >= grace):
                        raise AlreadyLocked(self._path, holder)
                # Nothing to wait on (an unlocked file's process has no lock to give back):
                # look again, less and less often.
                time.sleep(min(delay, deadline - now) if now < deadline else delay)
                delay = min(delay * 2, _POLL_MAX)
            self._slot = slot
            self._data = data
            self._owner = pid
        except BaseException as error:
            # Taken (or half taken) as the exception came: give it back. A handler that raises
            # again (at _lock_release's entry, before it took the descriptor) leaves it to do
            # again; the last exception is the one raised, the others its context.
            raised = error
            while slot[0] >= 0:
                try:
                    _lock_release(slot, self._target, data, self._path)  # (and off _held)
                except BaseException as again:
                    raised = again
            raise raised  # noqa: B904 (a later one has the first as its context already)

    def release(self) -> None:
        """Remove the file, if it still holds this lock's record, and let go of the lock.

        Does nothing where this object does not hold it (as ``pid.PidFile.close()``): never
        taken, released already, or a child forked while the parent held it (the lock is the
        parent's). If a signal handler raises before the file is removed, the lock is still
        held: call it again.
        """
        slot = self._slot
        if slot[0] < 0 or self._owner != _pid:
            return
        _handed_out.discard(slot[0])
        # Still in _held until _lock_release closes it: a handler that raises before leaves it
        # held, and listed, so another PidFileLock of this process never waits on it for ever
        _lock_release(slot, self._target, self._data, self._path)

    def fileno(self) -> int:
        """The descriptor holding the lock (to hand it to a program run by exec, as ``shimpid
        lock`` does); ``ValueError`` if this object does not hold it. A lock whose descriptor
        was asked for is not released at interpreter exit (a child given it may hold it on);
        ``release()`` still does."""
        if not self._held():
            raise ValueError("the lock is not held")
        _handed_out.add(self._slot[0])
        return self._slot[0]

    def _held(self) -> bool:
        return self._slot[0] >= 0 and self._owner == _pid

    # ---- looking ------------------------------------------------------------------------

    def i_am_locking(self) -> bool:
        """Whether this process holds the lock (through this object or another PidFileLock of
        the same file), as lockfile's and python-daemon's callers ask it."""
        return self._held() or _held_here(self._target)

    def is_locked(self) -> bool:
        """Whether any process (this one included) holds the lock now."""
        return is_locked(self._target)

    def holder(self) -> ProcessIdentity:
        """``Verified(pid)`` for the process that holds the lock, if the file verifiably names it
        (and, on Linux, /proc/locks agrees that it holds it); else ``Absent()``, as when nobody
        holds it."""
        if not self.is_locked():
            return ABSENT
        pid = holder_pid(self._target)
        return ABSENT if pid is None else Verified(pid)

    def read_pid(self) -> int | None:
        """The pid of the process that holds the lock, if the file verifiably names it; else
        None (python-daemon's and lockfile's name for it)."""
        identity = self.holder()
        return identity.pid if isinstance(identity, Verified) else None


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if not timeout >= 0:  # type: ignore[operator]  # a non-number raises TypeError here
        raise ValueError(f"timeout must be None or >= 0, not {timeout!r}")
    return float(timeout)  # type: ignore[arg-type]


def _check_directory(target: bytes, secure: bool, create: bool) -> None:
    """One walk to the lock file's directory (``target`` is absolute; "x/.." is left for the
    walk, which goes where the kernel does). ``create``: its missing directories made on the
    way. ``secure`` (as root): nobody else can change the way, so the path means what it does
    now, for every acquire(); nor replace the file in its directory (another instance would
    then lock a file of its own)."""
    directory = open_directory(os.path.dirname(target), secure=secure, create=create)
    try:
        why = open_to_others(os.fstat(directory)) if secure else None
    finally:
        os.close(directory)
    if why:
        raise UntrustedPath(os.fsdecode(target), why)


def _check_id(value: int, name: str) -> int:
    value = operator.index(value)
    if not -1 <= value < 2**32 - 1:
        raise ValueError(f"{name} must be -1 (unchanged) or in 0..{2**32 - 2}, got {value}")
    return value


def _stale(refused: list[tuple[int | None, str]], fd: int) -> bool:
    """The takeover policy, asked by _take_over with the unlocked file open (and locked by
    us): whether the file is stale. Not if its record is ``Verified`` (another process's), or
    ``Legacy`` (no fingerprint, its pid alive): another program's, or an instance of this one
    locking otherwise, may run; nor if it is empty and new (``FRESH_EMPTY``). Dead, reused and
    another boot's pids, and garbage, are stale; so is a record of this very process. What was
    refused goes into ``refused``."""
    info = os.fstat(fd)
    read = Read(b"", os.pread(fd, _common.PID_FILE_MAX_BYTES + 1, 0), info)
    if not read.data and time.time() - info.st_ctime < FRESH_EMPTY:
        refused[:] = [(None, "it was created moments ago and is empty: its writer may be at work")]
        return False
    try:
        verdict = judge(read)[2]
    except OSError as err:  # the system cannot tell: never guess that it is free
        refused[:] = [(_named_pid(read), f"whether it runs cannot be told: {err.strerror}")]
        return False
    if isinstance(verdict, Verified) and verdict.pid != _pid:
        refused[:] = [(verdict.pid, "the record's fingerprint matches it")]
        return False
    if isinstance(verdict, Legacy) and verdict.pid != _pid:
        refused[:] = [(verdict.pid, "the record has no fingerprint to tell it from another")]
        return False
    return True


def _always(fd: int) -> bool:
    return True


def _named_pid(read: Read) -> int | None:
    try:
        return _backend.PidRecord.decode(read.data).pid
    except _common.StorageError:
        return None


def exit_on_sigterm(status: int = 128 + signal.SIGTERM) -> object:
    """Make SIGTERM end this program as a normal exit: ``SystemExit(status)`` is raised in the
    main thread, so ``with`` blocks and ``finally`` clauses unwind and ``atexit`` runs, and a
    held PidFileLock's file is removed (by default the kernel ends the process at once, and the
    file stays: it reads ``Absent`` and never blocks, but ``pkill -F`` would act on its pid).
    ``pid``'s ``register_term_signal_handler``; never installed unless called. The status
    defaults to 143, what a shell reports for a process that SIGTERM ended (systemd counts it
    a failure unless ``SuccessExitStatus=143``). Call it from the main thread; returns the
    handler it replaces."""
    status = operator.index(status)

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(status)

    return signal.signal(signal.SIGTERM, _exit)


def is_locked(path: str | bytes) -> bool:
    """Whether a process holds a lock of any kind (``flock``, POSIX, OFD) on the pid file at
    path. A missing file, or anything but a regular file, is not."""
    return _look(path)[0] is not None


def holder_pid(target: str | bytes) -> int | None:
    """The pid of the process holding the file locked, if the file verifiably names it and,
    where the kernel tells, that process holds a lock there: a record alone proves what it names,
    not who holds the lock. One read: the pid shown is the one judged."""
    return _look(target)[1]


def _wait_for_holder(target: bytes, path: str | bytes) -> bool:
    """Wait until no process holds the pid file at target locked by ``flock()`` (or there is
    none), holding nothing meanwhile but a descriptor of it: a waiter killed leaves nothing
    behind. True if a POSIX or OFD lock holds it still, which flock() cannot wait for. Not on
    the hot path (a free lock is taken at the first try), so written once, here."""
    kept = _common.keep(os.open, target, _common.OPEN_READ)
    # Listed before it opens: a child forked meanwhile (another thread's) closes its copy, else
    # the lock this wait is granted would stay the child's once the wait lets go (_after_fork)
    _waiting[id(kept)] = kept
    try:
        _common.flock(kept[0], _common.LOCK_EX)  # let go at once: the next try takes it properly
        return bool(_common.record_locked(kept[0])[0])
    except FileNotFoundError:  # from the open: nothing there to wait for
        return False
    except OSError as err:
        raise _common.write_error(err, path) from None
    finally:
        if kept and 1 not in kept:
            kept[1] = 0  # marked first: a child forked from here on leaves it be
            os.close(kept[0])
        _waiting.pop(id(kept), None)


def _look(path: str | bytes) -> tuple[Read | None, int | None]:
    """``(the read if locked else None, holder)`` from one read of the file, lock included. In
    acquire()'s loop, where a signal handler may raise at any point: the descriptor is kept as
    it is made (_common.keep), never lost."""
    kept = _common.keep(os.open, path, _common.OPEN_READ)
    try:
        try:
            fd = kept[0]
        except OSError as err:
            if err.errno in _common.NO_FILE_ERRNOS or err.errno == errno.EISDIR:
                return None, None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, None
        read = Read(b"", os.pread(fd, _common.PID_FILE_MAX_BYTES + 1, 0), info)
        read.locked, read.lock_pid = probe_lock(fd)
    finally:
        if kept:
            os.close(kept[0])
    if not read.locked:
        return None, None
    try:
        verdict = judge(read)[2]
    except OSError:
        return read, None
    return read, lock_holder(read.lock, verdict)


def flock_holders(path: str | bytes) -> set[int] | None:
    """The pids /proc/locks names as holding a lock on the file at path, or None where that
    cannot be read (not Linux)."""
    try:
        info = os.stat(path)
        return _rundir_flock_holders((info.st_dev, info.st_ino))
    except OSError:
        return None


def _held_here(target: bytes) -> bool:
    """Whether this process holds (through any PidFileLock) the lock on the file at target."""
    if not _held:
        return False
    try:
        info = os.stat(target, follow_symlinks=False)
    except OSError:
        return False
    for fd in list(_held):
        try:
            mine = os.fstat(fd)
        except OSError:  # released by another thread meanwhile
            continue
        if fd in _held and (mine.st_ino, mine.st_dev) == (info.st_ino, info.st_dev):
            return True  # (still held after the look: the number was no other file's)
    return False


def _own_record(capability: bytes) -> bytes:
    """This process's pid file bytes (with its pidfs fingerprint), kept in _own."""
    level = _backend._pidfd_level()
    pidfs_id = None
    if level == _common.PIDFS:
        pidfd = _common.keep(os.pidfd_open, _pid)
        try:
            pidfs_id = os.fstat(pidfd[0]).st_ino
        finally:
            if pidfd:
                os.close(pidfd[0])
    record = _backend.PidRecord.current()
    data = _own[capability, level] = _common.file_bytes(
        record.encode(),
        record.start_time is not None,
        capability,
        _common.identity_prefix(True),
        pidfs_id,
    )
    return data


# ---- the system calls ------------------------------------------------------------------------


def _lock_try(
    target: bytes,
    temp_prefix: bytes,
    data: bytes,
    mode: int,
    uid: int,
    gid: int,
    slot: list[int],
    path: str | bytes,
    stale: Callable[[int], bool],
) -> int:
    """One try, without waiting, to lock the pid file at target with data as its record, in a
    file of exactly ``mode`` (not filtered by the umask) and owner ``uid``:``gid`` (-1: unchanged):
    ``_TAKEN`` once it is ours, its descriptor in ``slot[0]``; ``_HELD`` if another process
    holds it; ``_OCCUPIED`` if nobody does but ``stale(fd)``, asked with the file open and
    locked by us, says it is not stale. A failure raises the writers' ``OSError`` for path;
    ``slot[0]`` may then hold a descriptor, which the caller gives back with ``_lock_release``
    (which removes the file only if it is ours).

    The record goes into a temporary file, locked there, which then takes the path: by
    ``link()`` where nothing is (it never replaces), or by ``rename()`` over a stale file, while
    holding that file's lock, so that two takers of a stale file cannot both win (the loser
    locks an inode no longer at the path, and looks again).
    """
    made: list[tuple[bytes, _common.Kept]] = []
    try:
        _common.write_temp(made, temp_prefix, data, mode, _CREATE_LOCKED)
        temp, kept = made[0]
        if kept[0] <= 2:  # a closed standard stream's number: a program would write into it
            import fcntl  # loaded already, by flock()

            high = _common.keep(fcntl.fcntl, kept[0], fcntl.F_DUPFD_CLOEXEC, 3)
            high[0]  # the duplicate, kept from the moment it exists, and made's at once:
            made[:] = [(temp, high)]
            kept[1] = 0
            os.close(kept[0])
            kept = high
        slot[0] = kept[0]  # the caller's to give back from here on, whatever happens:
        kept[1] = 0  # handed over (no handler can run between these two)
        if uid != -1 or gid != -1:  # first: a change of owner clears the set-id bits
            os.fchown(slot[0], uid, gid)
        os.fchmod(slot[0], mode)  # exact: not filtered by the umask
        _common.flock(slot[0], _common.LOCK_EX | _common.LOCK_NB)  # a new inode: nobody has it
        for _ in range(_common.SETTLE_ATTEMPTS):
            try:
                os.link(temp, target)  # only where nothing is
            except FileExistsError:
                taken = _take_over(target, temp, stale)
                if taken is None:
                    continue  # it changed under us: look again
                if taken != _TAKEN:
                    fd, slot[0] = slot[0], -1
                    os.close(fd)
                    return taken
            return _TAKEN
        raise OSError(errno.EAGAIN, _common.KEPT_CHANGING)
    except BaseException as err:
        _common.discard_temp(made)
        if isinstance(err, OSError):  # ENOLCK, EOPNOTSUPP (no locks here) too: never held
            raise _common.write_error(err, path) from None
        raise
    finally:
        # The record is at the path by now, or not to be. Inline: this runs without an
        # exception too, when a handler may strike at a function's entry. Only a file this
        # try made: where every name was taken, the last one tried is another's.
        if made and 0 in made[0][1]:
            try:
                os.unlink(made[0][0])
            except OSError:
                pass


def _take_over(target: bytes, temp: bytes, stale: Callable[[int], bool]) -> int | None:
    """Put temp at target if nobody holds target locked and ``stale`` agrees: ``_TAKEN`` if
    done, ``_HELD`` or ``_OCCUPIED`` if not, None if target changed meanwhile (look again)."""
    # Looked at before it is opened, as by a writer: opening a device has effects of its own.
    if not _common.check_target(target) and not os.path.islink(target):
        return None  # gone meanwhile; a symlink fails to open (ELOOP) below
    old = _common.keep(os.open, target, _common.OPEN_READ)
    try:
        try:
            fd = old[0]
        except FileNotFoundError:
            return None
        if os.fstat(fd).st_mode & _common.S_IFMT != _common.S_IFREG:
            return None  # replaced since it was looked at
        try:
            _common.flock(fd, _common.LOCK_EX | _common.LOCK_NB)
        except BlockingIOError:
            return _HELD
        if _common.record_locked(fd)[0]:  # a POSIX or OFD lock counts (lockf, fasteners)
            return _HELD
        # Locked: is it still the file at the path? (Its holder may have removed it.)
        if not _is_at(fd, target):
            return None
        if not stale(fd):
            return _OCCUPIED
        if not _is_at(fd, target):
            return None
        os.rename(temp, target)  # over the stale file, whose lock we hold
        return _TAKEN
    finally:
        if old:
            os.close(old[0])


def _lock_release(slot: list[int], target: bytes, data: bytes, path: str | bytes) -> None:
    """Let go of the lock whose descriptor is in ``slot[0]``, removing the file first if it
    still is ours: our inode at the path, with our record in it.

    A signal handler that raises before the file is removed leaves the lock held and
    ``slot[0]`` set: the caller may call again (letting go first would leave our record behind
    unlocked, which no retry could remove). A failure to look or remove lets go and raises the
    writers' ``OSError`` for path.
    """
    fd = slot[0]
    failed = None
    try:
        if _is_at(fd, target) and os.pread(fd, _common.WRITE_MAX_BYTES + 1, 0) == data:
            os.unlink(target)
    except FileNotFoundError:
        pass
    except OSError as err:
        failed = err
    fd, slot[0] = slot[0], -1  # inline, no call between: see _common.keep
    # Listed while held (_held_here() and _release_at_exit() see it till now), and off the list
    # as it is closed, not before
    if fd in _held:
        del _held[fd]  # noqa: RUF051 (pop() is a call: a handler could run there)
    os.close(fd)  # the lock goes with the last descriptor
    if failed is not None:
        raise _common.write_error(failed, path) from None


def _is_at(fd: int, target: bytes) -> bool:
    """Whether the file open at fd is the one at target."""
    info = os.fstat(fd)
    try:
        now = os.lstat(target)
    except FileNotFoundError:
        return False
    return now.st_ino == info.st_ino and now.st_dev == info.st_dev


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    _own.clear()
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()
    _handed_out.clear()
    for kept in _waiting.values():  # other threads' waits: the parent's, never this child's
        if kept and 1 not in kept:
            kept[1] = 0
            os.close(kept[0])
    _waiting.clear()


def _release_at_exit() -> None:
    """At interpreter exit: release the locks this process still holds, removing their files
    (as ``pid`` does), so that no record is left for ``pkill -F`` to act on after its pid is
    reused. A lock released already, a forked child's copy, or one whose descriptor was handed
    out (``fileno()``) is not touched."""
    for fd, lock in list(_held.items()):
        if fd in _handed_out:
            continue  # a child may hold it on: the lock and its file are the child's now
        try:
            lock.release()
        except OSError:
            pass  # the file stays: unlocked, it never blocks


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_release_at_exit)
