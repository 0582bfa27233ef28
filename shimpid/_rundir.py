"""A run directory, through one open descriptor: reaching it, reading, scanning, cleaning it, and
removing a pid file without ever losing a record written meanwhile.

Every operation opens its directory once (``open_directory``) and then opens, reads, locks,
renames and removes relative to that descriptor: a directory renamed or replaced by a symlink
meanwhile changes nothing. As root, or when asked (``secure=True``), the directory is reached
only through components no other user could have placed or replaced (``UntrustedPath``
otherwise). A file is judged from one read (``Read``), and everything said or done about it
comes from those bytes.

Removal, which must never lose a record written meanwhile (in place, as boxlite writes, or
atomically): the file is locked, checked to hold the bytes it was judged from, and renamed
aside (which takes exactly what is at the path at that instant); then, once a grace period has
passed (a writer that had looked the name up has reached the file) and no other process has it
open (a write lease says so, where leases are available), it is read again and removed only if
it still holds those bytes, else put back (``_put_back``: ``link()``, or a rename, neither of
which replaces a newer file). Any error or exception on the way puts it back. shimpid's own
in-place writer also checks, once it has opened its file, that it is not unlinked already, and
writes again if it is.

Both backends share this module: it is policy over the backend's decode and classification.
"""

from __future__ import annotations

import errno
import functools
import operator
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from . import _backend, _common
from ._common import ABSENT, Extras, ProcessIdentity, StorageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._backend import PidRecord
    from ._common import PathArg
    from ._handle import ProcessHandle

__all__ = [
    "Entry",
    "Read",
    "Removal",
    "UntrustedPath",
    "clean",
    "judge",
    "open_directory",
    "read_at",
    "scan",
    "why_absent",
]

# A file renamed aside for removal: ".shimpid-removing.<remover's pid>.<counter>.<its name>",
# the name left out where it would not fit NAME_MAX. Should the remover die before it settles
# the file, clean() puts back what it holds if that is a live record (hence the name).
ASIDE_PREFIX = ".shimpid-removing."
# clean() leaves younger temporary files alone: a write takes microseconds, and a writer in
# another pid namespace, whose pid means nothing here, may be at work.
STALE_AFTER = 2.0
# A file set aside is judged again only after this long. An in-place writer that looked its
# name up before it was moved may reach the file itself only later (its open() stalled): by
# then it has, and holds it open or has written. Without a lease (another filesystem, another
# user's file without CAP_LEASE), this is also all that says it has written. Paid once per
# batch, not per file.
GRACE = 0.05
# How long a file set aside may stay open by another process (an in-place writer at work)
# before it is put back unjudged.
OPEN_LIMIT = 1.0
# How long a remover waits for another, at work in the same directory, to settle its files.
TURN_LIMIT = 5.0
# clean() moves files aside for this long, then settles them all (the last one GRACE later) and
# lets go of the directory's turn and of signals, for TURN_PAUSE: a remover waiting for the turn
# (stop), or a ^C, gets in.
BATCH = 0.25
TURN_PAUSE = 0.005
LOCKED = "still locked by a process the file does not name"
GONE = "it is gone"
NOT_STALE = "it is not stale"
CHANGED = "it was written again since it was read"
ASIDE_NAMES_TAKEN = "no free name to set the file aside under: files left aside by killed removers?"

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# Each step of a secure walk: O_PATH opens a directory we may not list, and is no open of it.
_STEP = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SYMLINKS_MAX = 40  # as the kernel's


class UntrustedPath(PermissionError):
    """A path that another user could have steered: a directory or symlink on the way that is
    not root's or this user's, or that sits where others can replace it; or (for the commands
    that signal) a pid file another user could have written. ``filename`` is the component."""

    def __init__(self, component: str, why: str) -> None:
        super().__init__(errno.EPERM, f"not trusting {component}: {why}", component)
        self.why = why


# ---- reaching a directory -------------------------------------------------------------------


def fs_bytes(path: PathArg) -> bytes:
    """A path (str, bytes, a subclass of either, any os.PathLike) as exact bytes."""
    raw = os.fsencode(_common.exact_text(os.fspath(path)))
    if b"\0" in raw:
        raise ValueError(f"path contains a NUL byte: {raw!r}")
    return bytes(raw)


def is_secure_default() -> bool:
    """Whether paths are walked with the trust rules when not told: as root."""
    return os.geteuid() == 0


def open_directory(path: PathArg, *, secure: bool | None = None, create: bool = False) -> int:
    """A descriptor of the directory at ``path``, for acting relative to it (the caller closes).

    ``secure`` (default: as root) reaches it only through components no other user could have
    placed or replaced: each directory and symlink on the way is root's or this user's, and sits
    in a directory others cannot write to, or that is sticky. Else ``UntrustedPath`` names the
    first component that fails. ``create`` makes the missing directories on the way (mode
    0o755 through the umask, as ``mkdir -p``), each relative to its parent as it is reached.
    """
    raw = fs_bytes(path)
    if secure is None:
        secure = is_secure_default()
    if not secure and not create:
        # Kept as it is made: "return os.open(...)" loses it to a handler that raises as the
        # call returns (see _common's note on descriptors).
        return _common.keep(os.open, raw, _DIRECTORY)[0]
    return _walk(raw, secure, create)


def _walk(raw: bytes, trust: bool = True, create: bool = False) -> int:
    """A descriptor of the directory at raw, reached one component at a time: each looked at
    (never following it), checked (if ``trust``), made if missing (if ``create``), then opened
    (``O_PATH``) relative to its parent, so nothing is looked up twice. Symlinks that pass are
    followed by hand, by the same rules. Every descriptor is kept as it is made: whatever
    interrupts, none is lost or closed twice; each is closed once the walk has gone past it
    (two at most are open: a path of thousands of components needs no more)."""
    opened: list[_common.Kept] = []

    def open_kept(name: bytes, flags: int, directory: int | None = None) -> int:
        kept = _common.keep(os.open, name, flags, dir_fd=directory)
        opened.append(kept)  # before it opens: tracked whatever comes
        return kept[0]

    euid = os.geteuid()
    trail = b"/" if raw.startswith(b"/") else b"."
    result = -1
    # Signals held meanwhile (in the main thread): a handler's exception in the loop that
    # closes what was opened would leave the rest open.
    mask = _signal_mask()
    try:
        _hold_signals(mask)
        fd = open_kept(trail, _STEP)
        here = os.fstat(fd)
        why = _not_ours(here, euid) if trust else None
        if why:
            raise UntrustedPath(os.fsdecode(trail), why)
        parts = _components(raw)
        hops = 0
        while True:  # not "while parts": CPython 3.13 leaves that test's jump unguarded
            if not parts:
                break
            part = parts.pop(0)
            trail = os.path.join(trail, part)
            shown = os.fsdecode(trail)
            # Where others may write, whatever is (or is not) there now is theirs to change.
            why = None if part == b".." or not trust else open_to_others(here)
            if why:
                raise UntrustedPath(shown, why)
            try:
                entry = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: looked at as any other
                entry = os.stat(part, dir_fd=fd, follow_symlinks=False)
            why = _not_ours(entry, euid) if trust else None
            if why:
                raise UntrustedPath(shown, why)
            if stat.S_ISLNK(entry.st_mode):
                hops += 1
                if hops > _SYMLINKS_MAX:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), shown)
                # Only root or this user can change it: it and its directory passed.
                target = os.readlink(part, dir_fd=fd)
                parts[:0] = _components(target)
                if target.startswith(b"/"):
                    fd = open_kept(b"/", _STEP)
                    _close_all_but(opened, fd)
                    here = os.fstat(fd)
                    trail = b"/"
                else:
                    trail = os.path.dirname(trail)
                continue
            if not stat.S_ISDIR(entry.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), shown)
            step = open_kept(part, _STEP, fd)
            opened_info = os.fstat(step)
            if (opened_info.st_ino, opened_info.st_dev) != (entry.st_ino, entry.st_dev):
                # changed between the look and the open: by root or us, but no
                raise UntrustedPath(shown, "it changed while it was checked")
            fd, here = step, opened_info
            _close_all_but(opened, fd)
        result = open_kept(b".", _DIRECTORY, fd)
        return result
    except OSError as err:
        if isinstance(err, UntrustedPath) or not isinstance(err.filename, bytes):
            raise
        # The system's error on a component (b"tmp", b"."): named by the path reached, as
        # open() names the path it was given
        raise type(err)(err.errno, err.strerror, os.fsdecode(trail)) from None
    finally:
        try:
            _close_all_but(opened, result)
        except BaseException:
            # Signals are held in the main thread only: one another thread took ran its handler
            # here all the same. Close the rest, the result too (held here still).
            try:
                _close_all_but(opened, -1)
            finally:
                if mask is not None:
                    _let_signals_in(mask)  # whatever comes, signals are not left held
            raise
        try:
            if mask is not None:
                _let_signals_in(mask)
        except BaseException:
            if result >= 0:
                os.close(result)  # the caller never gets it (inline: a second handler may run)
            raise


def _close_all_but(opened: list[_common.Kept], result: int) -> None:
    """Close what _walk opened but ``result`` (where it is, or what it returns) and what is
    closed already (a loop of its own: see _common's note on loops)."""
    for kept in opened:
        if kept and 1 not in kept and kept[0] != result:
            kept[1] = 0  # marked first: a handler raising as it closes never has it closed twice
            os.close(kept[0])


def _components(path: bytes) -> list[bytes]:
    """The names of a path that name something ("a//./b": a, b)."""
    names = []
    for part in path.split(b"/"):
        if part not in (b"", b"."):
            names.append(part)
    return names


def _not_ours(info: os.stat_result, euid: int) -> str | None:
    if info.st_uid in (0, euid):
        return None
    kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a directory"
    return f"{kind} owned by uid {info.st_uid}, not by this user or root"


def open_to_others(directory: os.stat_result) -> str | None:
    """Why other users could replace an entry of directory (whose owner passed), or None: it is
    writable by group or others, and not sticky (where only an entry's owner can)."""
    if directory.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not directory.st_mode & stat.S_ISVTX:
        return "it is in a directory that other users can write to"
    return None


def untrusted_file(directory: int, read: Read) -> str | None:
    """Why a pid file (as read, in the open directory) is no instruction to signal a process:
    another user's, writable by others, or in a directory where others could replace it.
    start-stop-daemon's rule for root; the commands that signal, and ``open_process()``, apply
    it for everyone. (Not its link count: the lock and clean() give a file a second name for an
    instant, link() then unlink(), and a holder killed between leaves it so. See the security
    page on hard links.)"""
    return untrusted_owner(read.info.st_uid, read.info.st_mode) or untrusted_directory(directory)


def untrusted_owner(uid: int, mode: int) -> str | None:
    """``untrusted_file``'s rule for the file itself, from its fstat's owner and mode."""
    if uid not in (0, os.geteuid()):
        return f"it is owned by uid {uid}, not by this user or root"
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "it is writable by group or others"
    return None


def untrusted_directory(directory: int) -> str | None:
    """``untrusted_file``'s rule for the open directory the file is in."""
    info = os.fstat(directory)
    return _not_ours(info, os.geteuid()) or open_to_others(info)


def split_file_path(path: PathArg) -> tuple[bytes, bytes]:
    """``(directory, name)`` of a pid file's path; ``StorageError`` if it names no file."""
    try:
        raw = fs_bytes(path)
    except ValueError as err:
        raise StorageError(f"PID file path contains a NUL byte: {path!r}") from err
    return _split(raw)


def _split(raw: bytes) -> tuple[bytes, bytes]:
    directory, name = os.path.split(raw)
    if name in (b"", b".", b".."):
        raise StorageError(f"PID file path does not name a file: {os.fsdecode(raw)!r}")
    return directory or b".", name


# ---- one read ------------------------------------------------------------------------------


class Read:
    """One read of a pid file: its name in its directory, its bytes (at most one more than a
    pid file may hold), its ``fstat`` and, when asked, whether a process holds it locked."""

    __slots__ = ("data", "info", "lock_pid", "locked", "name")

    def __init__(
        self,
        name: bytes,
        data: bytes,
        info: os.stat_result,
        locked: bool | None = None,
        lock_pid: int | None = None,
    ) -> None:
        self.name, self.data, self.info = name, data, info
        #: True, False, or None where it was not (or could not be) looked at
        self.locked = locked
        #: the pid a POSIX record lock names as its holder (0: none, or an OFD/flock lock)
        self.lock_pid = lock_pid

    @property
    def lock(self) -> tuple[bool | None, int | None, tuple[int, int] | None]:
        """``(locked, pid a POSIX lock names, (st_dev, st_ino))``: what lock_holder needs."""
        return self.locked, self.lock_pid, (self.info.st_dev, self.info.st_ino)

    def same(self, other: Read) -> bool:
        """Whether other holds the same bytes in the same file."""
        return self.data == other.data and (self.info.st_ino, self.info.st_dev) == (
            other.info.st_ino,
            other.info.st_dev,
        )


def read_at(
    directory: int, name: bytes, *, lock: bool = False, shown: str | None = None
) -> Read | None:
    """The regular file ``name`` in the open directory, read once; None where there is none (a
    symlink, FIFO, socket or directory is no pid file, and is never followed or waited on; given
    ``shown``, the path to name, they raise ``StorageError`` instead, from the same open). Other
    failures (EACCES, EMFILE...) are raised. ``lock``: look whether it is locked, on the same
    descriptor."""
    kept = _open_regular(directory, name)
    try:
        fd = _regular(kept, shown)
        if fd is None:
            return None
        read = Read(name, os.pread(fd, _common.PID_FILE_MAX_BYTES + 1, 0), os.fstat(fd))
        if lock:
            read.locked, read.lock_pid = probe_lock(fd)
        return read
    finally:
        if kept:
            os.close(kept[0])


def record_of(directory: int, name: bytes, pid: int) -> Read | None:
    """The read of the file ``name`` of the open directory if it holds the record of ``pid``
    (to remove it later only if unchanged, with ``remove_at``); None if there is none, or it
    names another process or none. A failed read is raised."""
    read = read_at(directory, name)
    if read is None or _too_large(read):
        return None
    try:
        return read if _common.decode_record(read.data)[0] == pid else None
    except StorageError:
        return None


def _open_regular(directory: int, name: bytes | str) -> _common.Kept:
    """The file ``name`` of the open directory, opened by ``kept[0]`` (see ``_regular``) and
    kept as it is made: a signal handler that raises can never lose the descriptor; the caller
    closes ``kept[0]`` if ``kept``."""
    return _common.keep(os.open, name, _common.OPEN_READ, dir_fd=directory)


def _regular(kept: _common.Kept, shown: str | None = None) -> int | None:
    """Open ``kept``'s file: its descriptor if it is a regular file, None where there is none or
    it is anything else (never followed, never waited on; given ``shown``, anything else raises
    ``StorageError`` naming it); other failures are raised."""
    try:
        fd = kept[0]
    except OSError as err:
        if shown is not None and err.errno in _NOT_REGULAR_ERRNOS:
            raise _common.content_error(_common.NOT_REGULAR, shown) from None
        if err.errno in _common.NO_FILE_ERRNOS or err.errno == errno.EISDIR:
            return None
        raise
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    if shown is not None:
        raise _common.content_error(_common.NOT_REGULAR, shown)
    return None


# What opening (OPEN_READ) something other than a regular file fails with: a symlink (O_NOFOLLOW),
# a socket (ENXIO), a directory (as some systems refuse it)
_NOT_REGULAR_ERRNOS = frozenset({errno.ELOOP, errno.ENXIO, errno.EISDIR})


def decoded(read: Read) -> tuple[PidRecord, Extras] | None:
    """The record and extras of a read, or None where it holds no record."""
    if _too_large(read):
        return None
    try:
        record = _backend.PidRecord.decode(read.data)
    except StorageError:
        return None
    return record, _common.parse_extras(read.data)


def judge(read: Read) -> tuple[PidRecord | StorageError, Extras, ProcessIdentity]:
    """``(record or the StorageError in its place, extras, verdict)`` of a read: the verdict of
    these very bytes, as ``process_identity()`` gives it. Raises OSError if the system cannot
    tell."""
    data = read.data
    if _too_large(read):
        return _common.content_error(_common.TOO_LARGE, None), _common.NO_EXTRAS, ABSENT
    try:
        record = _backend.PidRecord.decode(data)
    except StorageError as err:
        return err, _common.NO_EXTRAS, ABSENT
    extras = _common.parse_extras(data)
    if _common.from_another_boot(extras):
        return record, extras, ABSENT
    return record, extras, _backend._classify(record.pid, record.start_time, extras.pidfs_id)


def _too_large(read: Read) -> bool:
    """Larger than a pid file may be: no pid file (nor, in scan(), its bytes or its lock)."""
    return max(read.info.st_size, len(read.data)) > _common.PID_FILE_MAX_BYTES


# ---- locks of every kind -------------------------------------------------------------------


def probe_lock(fd: int) -> tuple[bool | None, int | None]:
    """``(locked, pid)``: whether any process holds a lock on the open file, of any kind:
    ``flock()`` (a shared lock tried: ``pgrep -L``'s probe), POSIX record locks (``lockf``,
    ``fcntl(F_SETLK)``) and OFD locks (asked with ``F_OFD_GETLK``, which takes nothing). ``pid``
    is what a POSIX lock names as its holder, else None. ``(None, None)`` if it cannot be told."""
    try:
        _common.flock(fd, _common.LOCK_SH | _common.LOCK_NB)
    except BlockingIOError:
        return True, None
    except OSError as err:
        if err.errno != errno.ENOSYS:
            return None, None
    return _common.record_locked(fd)


def flock_holders(key: tuple[int, int]) -> set[int] | None:
    """The pids /proc/locks names as holding a lock on the file ``(st_dev, st_ino)`` (the
    process that took it; one that inherited the descriptor is not named), or None where that
    cannot be read."""
    try:
        with open("/proc/locks", "rb") as f:
            data = f.read()
    except OSError:
        return None
    dev, ino = key
    key_text = b"%02x:%02x:%d" % (os.major(dev), os.minor(dev), ino)
    holders = set()
    for line in data.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4242 00:19:1234 0 EOF"; a waiter's line has "->" in [1]
        fields = line.split()
        if len(fields) > 5 and fields[1] != b"->" and fields[5] == key_text:
            holders.add(int(fields[4]))
    return holders


def lock_holder(
    lock: tuple[bool | None, int | None, tuple[int, int] | None] | None, verdict: object
) -> int | None:
    """The pid of the process holding the file locked, if the bytes read name it, it is
    verified, and the kernel says it holds a lock there; else None. ``lock``: a read's."""
    if lock is None or not lock[0] or not isinstance(verdict, _common.Verified):
        return None
    if lock[1] is not None:
        return verdict.pid if lock[1] == verdict.pid else None
    if lock[2] is None:
        return None
    holders = flock_holders(lock[2])
    return verdict.pid if holders is None or verdict.pid in holders else None


# ---- removing without losing -----------------------------------------------------------------


class _Aside:
    """Files set aside for removal and not yet settled, in one open directory.

    While any file is aside, this remover holds the directory's ``flock()`` (removers take
    turns: one putting back an older file must never find the name taken by a file another has
    just put back, and drop the newer) and, in the main thread, holds off signals (a handler's
    exception comes once every file is settled or put back, never in between). A file is listed
    before it is moved: whatever fails, ``restore_all`` puts back every one that was.
    """

    def __init__(self, directory: int) -> None:
        self.directory = directory
        # aside name -> (name, the read it must still match, when it was moved)
        self.pending: dict[bytes, tuple[bytes, Read, float]] = {}
        self._mask: set[int] | None = None  # the signal mask to go back to, while held
        self._turn = False  # whether this holds the directory's lock
        self.refused: str | None = None  # why no more files go aside in this pass

    def claim(self, name: bytes, accept: Callable[[Read], str | None]) -> str | None:
        """Lock the file ``name``, read it and, if ``accept(read)`` says nothing against it (None),
        move it aside; None if moved, else why not. The directory's turn is taken first: a
        remover waiting for it must not hold open a file that another is settling."""
        try:
            why = self._begin()
            if why is not None:
                return why
            kept = _open_regular(self.directory, name)
            try:
                fd = _regular(kept)
                if fd is None:
                    return GONE
                # Ours while moving it: a PidFileLock taking it over at this instant waits.
                try:
                    _common.flock(fd, _common.LOCK_EX | _common.LOCK_NB)
                except BlockingIOError:
                    return LOCKED  # its holder lives
                except OSError as err:
                    if err.errno != errno.ENOSYS:
                        raise
                if _common.record_locked(fd)[0]:
                    return LOCKED
                now = Read(name, os.pread(fd, _common.PID_FILE_MAX_BYTES + 1, 0), os.fstat(fd))
                why = accept(now)
                if why is not None:
                    return why
                # Still the file at the name? A PidFileLock may have renamed its own over it,
                # or a writer replaced it.
                there = os.stat(name, dir_fd=self.directory, follow_symlinks=False)
                if (there.st_ino, there.st_dev) != (now.info.st_ino, now.info.st_dev):
                    return CHANGED
                return None if self._move_aside(name, now) else GONE
            finally:
                if kept:
                    os.close(kept[0])  # lets go of the lock
        except FileNotFoundError:
            return GONE
        finally:
            self._end_if_idle()

    def _move_aside(self, name: bytes, now: Read) -> bool:
        """Rename ``name`` aside, listed in ``pending`` before it moves (an interrupt at any
        point leaves it to ``restore_all``); False if it is gone. Never over another file: a
        name with this process's pid may be one a remover with the same pid (another pid
        namespace's, or one before a reboot) left a live record under, for clean() to put back.
        Where there is no rename that refuses to replace, a look, then ``rename()``, under the
        directory's turn, which every remover takes before it sets a file aside."""
        directory = self.directory
        for _ in range(_common.TEMP_ATTEMPTS):
            aside = _aside_name(name)
            self.pending[aside] = (name, now, time.monotonic())
            try:
                moved = _rename_without_replacing(directory, name, aside)
            except OSError as err:  # nothing moved (EROFS, EACCES...: raised, as they are)
                del self.pending[aside]
                if isinstance(err, FileNotFoundError):
                    return False
                raise
            if moved:
                self.pending[aside] = (name, now, time.monotonic())  # GRACE runs from the move
                return True
            del self.pending[aside]  # taken: the next name
        raise FileExistsError(errno.EEXIST, ASIDE_NAMES_TAKEN, os.fsdecode(name))

    def _begin(self) -> str | None:
        """Take this directory's turn and hold off signals, before a file goes aside; why not,
        if another remover (or anyone who can open the directory) keeps the turn too long:
        then this remover gives up for the rest of its pass, rather than wait for each file."""
        if self.refused is not None:
            return self.refused
        if not self._turn:
            deadline, pause = time.monotonic() + TURN_LIMIT, 0.0005
            while True:
                # Marked before it is taken: a handler that raises as flock() returns must not
                # leave the turn taken and unmarked (unlocking one not held does nothing).
                self._turn = True
                try:
                    _common.flock(self.directory, _common.LOCK_EX | _common.LOCK_NB)
                    break
                except BlockingIOError:
                    self._turn = False
                    if time.monotonic() >= deadline:
                        self.refused = "another process keeps this directory's lock"
                        return self.refused
                    time.sleep(pause)
                    pause = min(pause * 2, TURN_PAUSE / 2)  # within a clean()'s pause
                except OSError as err:
                    if err.errno != errno.ENOSYS:
                        raise
                    break
        if self._mask is None:
            self._mask = _signal_mask()
            _hold_signals(self._mask)
        return None

    def _end_if_idle(self) -> None:
        """Once nothing is aside: give the directory's turn back, then let signals in (a handler
        that raises, raises here)."""
        if self.pending:
            return
        mask, self._mask = self._mask, None
        try:
            if self._turn:
                try:
                    _common.flock(self.directory, _common.LOCK_UN)
                except OSError:
                    pass
                # Marked after: a handler that raises as flock() starts leaves it marked, to be
                # given back by the next call (unlocking one not held does nothing).
                self._turn = False
        finally:
            if mask is not None:
                _let_signals_in(mask)

    def aside_for(self) -> float:
        """How long the oldest file still aside has been (0 if none)."""
        for _, _, moved in self.pending.values():
            return time.monotonic() - moved
        return 0.0

    def settle(self, wait: bool = False) -> Iterator[tuple[bytes, bool, str | None]]:
        """``(name, removed, why kept)`` for each file set aside that can be settled now (with
        ``wait``, all of them, sleeping as long as needed)."""
        while self.pending:
            now, due = time.monotonic(), []
            for aside, (_, _, moved) in self.pending.items():
                if now - moved < GRACE:
                    break  # and so are all after it: files go aside in turn
                due.append(aside)
            waiting = len(due) < len(self.pending)
            for aside in due:
                outcome = self._settle_one(aside)
                if outcome is None:
                    waiting = True
                    continue
                self._end_if_idle()
                yield outcome
            if not (wait and waiting):
                return
            time.sleep(0.001)

    def _settle_one(self, aside: bytes) -> tuple[bytes, bool, str | None] | None:
        name, expected, moved = self.pending[aside]
        age = time.monotonic() - moved
        kept = _open_regular(self.directory, aside)
        try:
            fd = _regular(kept)
            leased = None if fd is None else _lease(fd)
            if fd is None:
                # Gone (another remover took it), or what was renamed to the name as it was set
                # aside is no pid file (a symlink, a socket): put back where it was below, never
                # left under the aside name (clean() passes over it for good)
                why = "gone while set aside"
            elif leased is None:  # another process has it open: an in-place writer at work
                if age < OPEN_LIMIT:
                    return None
                why = "another process keeps it open"
            else:
                now = Read(aside, os.pread(fd, _common.PID_FILE_MAX_BYTES + 1, 0), os.fstat(fd))
                if now.same(expected) and not (leased and _lease_broken(fd)):
                    os.unlink(aside, dir_fd=self.directory)  # under the lease: nobody has it
                    del self.pending[aside]  # from here on, nothing raises: it is not aside
                    return name, *self._reborn(fd, name, expected, leased)
                why = CHANGED
        except OSError as err:  # EMFILE...: put it back, unjudged
            why = f"put back: {err.strerror}"
        finally:
            if kept:  # and with it the lease, before the file is put back: a writer opening
                os.close(kept[0])  # it without blocking (O_NONBLOCK) would find it leased
        try:
            self._restore(aside)
        except OSError as err:
            # What is at the aside name now cannot go back nor be removed (a directory that
            # another user made there, in a directory they may write in): left, and said; the
            # other files of the pass go on
            self.pending.pop(aside, None)
            return name, False, f"{why}; left at {os.fsdecode(aside)}: {err.strerror}"
        return name, False, why

    def _reborn(
        self, fd: int, name: bytes, expected: Read, leased: bool
    ) -> tuple[bool, str | None]:
        """After the file at ``fd`` was removed: if it was opened as it went (by a process that
        had looked the name up before it was moved, and waited for the lease), wait for its
        opener to close it, and put what it wrote, if anything, back at ``name`` (never over
        another file). ``(removed, why kept)``. The file is gone from the directory and from
        ``pending`` already: a failure is said (clean() exits 1), never raised."""
        made: list[tuple[bytes, _common.Kept]] = []
        leave = False  # whether the aside name keeps its file: renamed away, or to put back later
        try:
            if not (leased and _lease_broken(fd)):
                return True, None
        except OSError as err:
            return False, f"removed; whether it was written as it went cannot be told: {err}"
        try:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)  # let it in
            _wait_for_lease(fd)
            data = os.pread(fd, _common.PID_FILE_MAX_BYTES + 1, 0)
            if data == expected.data:
                return True, None
            info = os.fstat(fd)
            # Made under an aside name, with its owner and mode before the record: a remover
            # killed before it is at its name leaves it empty (stale), or whole (a record, 4 KiB
            # at most, is one write()), and the next clean() judges it.
            new = _create_aside(made, self.directory, name, stat.S_IMODE(info.st_mode))
            if not _take_owner_and_mode(new, info):
                # Put back as the remover's, another user's record would be trusted as ours
                # (stop, signal): lost rather than that.
                return False, (
                    "written again as it was removed; not put back: its owner (uid "
                    f"{info.st_uid}) cannot be given back to it"
                )
            _common.write_all(new, data)
            leave = True  # whole: should putting it back fail, a later clean() does it
            put = _put_back(self.directory, made[0][0], name)
            leave = put == _RENAMED  # nothing left at the aside name
            if put == _TAKEN:
                return False, "written again as it was removed; a newer file is at its name"
        except OSError as err:  # no space, no descriptor, every name taken...
            left = f", left as {os.fsdecode(made[0][0])} for clean()" if leave else ""
            return False, f"written again as it was removed; putting it back failed{left}: " + (
                err.strerror or str(err)
            )
        finally:
            if made and 0 in made[0][1]:
                _close_and_drop(self.directory, made[0][1][0], None if leave else made[0][0])
        return False, "written again as it was removed: put back"

    def _restore(self, aside: bytes) -> None:
        """Put a file set aside back at its name, unless a newer one is there already."""
        try:
            put = _put_back(self.directory, aside, self.pending[aside][0])
        except FileNotFoundError:
            put = _RENAMED  # never moved (interrupted before the rename): nothing there
        if put != _RENAMED:  # linked back, or older than the file at the name
            _unlink_if_there(self.directory, aside)
        del self.pending[aside]

    def restore_all(self) -> None:
        """Put back every file still set aside (on an error or an interrupt; signals are held
        off meanwhile), then let go of the directory and the signals."""
        for aside in list(self.pending):
            try:
                self._restore(aside)
            except OSError:
                self.pending.pop(aside, None)  # nothing more can be done for it
        self._end_if_idle()


def _wait_for_lease(fd: int) -> None:
    """Until no other process has the file open (a lease can be had), OPEN_LIMIT at most."""
    deadline = time.monotonic() + OPEN_LIMIT
    while not _lease(fd) and time.monotonic() < deadline:
        time.sleep(0.001)


def _create_aside(
    made: list[tuple[bytes, _common.Kept]], directory: int, name: bytes, mode: int
) -> int:
    """A new empty file under an aside name for ``name``, its name and descriptor in ``made[0]``
    before it is created (as ``_common.write_temp``); its descriptor."""
    for _ in range(_common.TEMP_ATTEMPTS):
        aside = _aside_name(name)
        kept = _common.keep(os.open, aside, _common.CREATE_TEMP, mode, dir_fd=directory)
        made[:] = [(aside, kept)]
        try:
            return kept[0]
        except FileExistsError:
            continue  # left aside by a remover with our pid: never touched
    raise FileExistsError(errno.EEXIST, ASIDE_NAMES_TAKEN)


def _take_owner_and_mode(fd: int, info: os.stat_result) -> bool:
    """Give the file open at fd the owner and mode that ``info`` describes; False if its owner
    cannot be had: a remover that is not root cannot give a file away, an id this user
    namespace does not map fails (EINVAL). A group it cannot give (EPERM, EDQUOT) is let be:
    trust goes by owner and mode bits."""
    mine = os.fstat(fd)
    try:
        if mine.st_uid != info.st_uid:
            os.fchown(fd, info.st_uid, -1)  # before the mode: a change of owner clears set-id
    except OSError:
        return False
    try:
        if mine.st_gid != info.st_gid:
            os.fchown(fd, -1, info.st_gid)
    except OSError:
        pass
    os.fchmod(fd, stat.S_IMODE(info.st_mode))  # exact: not filtered by the umask
    return True


def _close_and_drop(directory: int, fd: int, name: bytes | None) -> None:
    """Close fd and unlink ``name`` (if given and there): cleanup that never raises."""
    try:
        os.close(fd)
    except OSError:
        pass
    if name is not None:
        try:
            os.unlink(name, dir_fd=directory)
        except OSError:
            pass


# What _put_back did: linked (the aside name is the file's too), renamed (it is not), or nothing
# (another file holds the name)
_LINKED, _RENAMED, _TAKEN = 1, 2, 3


def _put_back(directory: int, aside: bytes, name: bytes) -> int:
    """Put the file at ``aside`` back at ``name``, never over another file: ``_LINKED`` (also
    where a remover killed before it unlinked ``aside`` had linked it back already),
    ``_RENAMED`` (where it cannot be linked: no hard links, as on vfat, or another user's file
    under ``fs.protected_hardlinks``), ``_TAKEN`` (another file, a newer one, holds the name).
    ``FileNotFoundError`` if nothing is at ``aside``. Where the system has no rename that
    refuses to replace, a look at the name, then ``rename()``: a writer's rename landing in
    between is replaced, the one window left there."""
    for _ in range(3):  # again only where the name's file went between two looks
        try:
            os.link(aside, name, src_dir_fd=directory, dst_dir_fd=directory, follow_symlinks=False)
            return _LINKED
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise
        except OSError:
            if _rename_without_replacing(directory, aside, name):
                return _RENAMED
        try:
            at_name = os.stat(name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            continue  # gone since: try again
        at_aside = os.stat(aside, dir_fd=directory, follow_symlinks=False)
        same = (at_name.st_ino, at_name.st_dev) == (at_aside.st_ino, at_aside.st_dev)
        return _LINKED if same else _TAKEN
    return _TAKEN


def _rename_without_replacing(directory: int, old: bytes, new: bytes) -> bool:
    """Rename ``old`` to ``new`` within the open directory unless something is at ``new``
    (False). Where the system has no rename that refuses to replace, a look, then ``rename()``:
    a file put at ``new`` in between would be replaced."""
    renamed = _rename_noreplace(directory, old, new)
    if renamed is None:
        renamed = not _exists_at(directory, new)
        if renamed:
            os.rename(old, new, src_dir_fd=directory, dst_dir_fd=directory)
    return renamed


_renameat2: Any = None  # libc's renameat2 and ctypes.get_errno, once looked up (False: none)


def _rename_noreplace(directory: int, old: bytes, new: bytes) -> bool | None:
    """``renameat2(RENAME_NOREPLACE)`` within the directory: True if renamed, False if something
    is at ``new``, None where the system offers no such rename (not Linux; glibc before 2.28,
    musl before 1.2.5, a kernel before 3.15; a filesystem without it: NFS, FUSE, EINVAL). A
    look, then ``rename()``, could replace a file another process put at ``new`` in between."""
    global _renameat2
    if _renameat2 is None:
        _renameat2 = _find_renameat2()  # a race of first callers finds it twice: no harm
    if not _renameat2:
        return None
    function, get_errno = _renameat2
    result = function(directory, old, directory, new, 1)  # RENAME_NOREPLACE
    while result != 0 and get_errno() == errno.EINTR:
        result = function(directory, old, directory, new, 1)
    if result == 0:
        return True
    err = get_errno()
    if err == errno.EEXIST:
        return False
    if err in (errno.ENOSYS, errno.EINVAL):
        return None
    raise OSError(err, os.strerror(err))


def _find_renameat2() -> Any:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # only here: a few milliseconds to import, on a path seldom taken

        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (ImportError, AttributeError, OSError):  # no ctypes, or a C library without it
        return False
    c_int, c_path = ctypes.c_int, ctypes.c_char_p
    function.argtypes = [c_int, c_path, c_int, c_path, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function, ctypes.get_errno


def _exists_at(directory: int, name: bytes) -> bool:
    """Whether anything (a symlink not followed) is at ``name`` in the open directory."""
    try:
        os.stat(name, dir_fd=directory, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _unlink_if_there(directory: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=directory)
    except FileNotFoundError:
        pass


def _lease_broken(fd: int) -> bool:
    """Whether a process is waiting to open the file whose write lease ``fd`` holds."""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK


def _lease(fd: int) -> bool | None:
    """Take a write lease on the open file: True if taken (no other process has the file open,
    and none can open it without our say), None if another process has it open, False where
    leases cannot be had (not Linux, another user's file without CAP_LEASE, some filesystems)."""
    try:
        import fcntl

        setlease, setsig = fcntl.F_SETLEASE, fcntl.F_SETSIG
    except (ImportError, AttributeError):
        return False
    try:
        # Whoever opens it meanwhile makes the kernel signal us: SIGURG, ignored by default,
        # not SIGIO, whose default would end this process.
        fcntl.fcntl(fd, setsig, signal.SIGURG)
        fcntl.fcntl(fd, setlease, fcntl.F_WRLCK)
    except OSError as err:
        return None if err.errno in (errno.EAGAIN, errno.EBUSY) else False
    return True


# The C functions under signal's wrappers, which make an enum of each of 60 signals per call.
_C_SIGNAL: Any = getattr(signal, "_signal", signal)
_SIGMASK: Callable[[int, Any], set[int]] | None = getattr(_C_SIGNAL, "pthread_sigmask", None)
_ALL_SIGNALS = set(map(int, signal.valid_signals())) if _SIGMASK is not None else set()


def _signal_mask() -> set[int] | None:
    """The main thread's signal mask, for _let_signals_in() to give back (None where signals
    cannot be held, or in another thread). A handler already due runs here: nothing is held."""
    if _SIGMASK is None or threading.current_thread() is not threading.main_thread():
        return None
    return _SIGMASK(signal.SIG_BLOCK, ())


def _hold_signals(mask: set[int] | None) -> None:
    """Block every signal in the main thread (where ``mask``, from _signal_mask(), is not None),
    whose handlers' exceptions they would be. The caller keeps ``mask`` where it is given back
    before this runs: a handler may raise here once the block is in place (see below)."""
    if mask is not None:
        _SIGMASK(signal.SIG_BLOCK, _ALL_SIGNALS)  # type: ignore[misc]


# Gives a mask from _signal_mask() back (never None: the caller checks). A C callable on
# CPython, not a function of ours: CPython runs a pending handler as a Python function starts,
# and one that raised there would leave signals held for good. While the main thread holds
# them another thread takes them, and their handlers run in the main thread all the same:
# anywhere but inside a C call. Inside this one, a handler runs once the mask is back; its
# exception is the caller's.
_let_signals_in: Callable[[set[int]], object] = (
    functools.partial(_SIGMASK, signal.SIG_SETMASK)
    if _SIGMASK is not None
    else lambda mask: None  # (never called: no mask is held there)
)


def remove_at(directory: int, name: bytes, expected: Read) -> tuple[bool, str | None]:
    """Remove the file ``name`` of the open directory if it still is ``expected`` (its bytes, in
    the same file) and nobody holds it locked: ``(removed, why kept)``. A record written
    meanwhile, in place or atomically, stays (see the module's docstring)."""
    aside = _Aside(directory)
    try:
        why = aside.claim(name, lambda now: None if now.same(expected) else CHANGED)
        if why is not None:
            return False, why
        for _, removed, why in aside.settle(wait=True):
            return removed, why
        return False, CHANGED  # not reached
    finally:
        aside.restore_all()


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


# ---- scanning --------------------------------------------------------------------------------


class Entry(tuple):  # type: ignore[type-arg]
    """A pid file found by ``scan()``: the pair ``(path, verdict)``, and the bytes that verdict
    was judged from. ``verdict`` is an ``OSError`` where the system could not tell. The record,
    capability and the rest come from the same bytes, never from reading the file again; so
    does whether the file may be trusted (``untrusted``), from the same open.

    (A tuple of seven that iterates, compares and hashes as the pair: made in C, without a
    Python call per file.)"""

    __slots__ = ()

    def __new__(
        cls,
        path: str,
        verdict: ProcessIdentity | OSError,
        data: bytes | None = None,
        lock: tuple[bool | None, int | None, tuple[int, int] | None] | None = None,
        owner: tuple[int, int, str | None] | None = None,
    ) -> Entry:
        # (and the record and Extras, where the scan decoded them already); owner: the file's
        # uid and mode, and why its directory is not trusted (see untrusted)
        return tuple.__new__(cls, (path, verdict, data, lock, None, None, owner))

    @property
    def path(self) -> str:
        return self[0]  # type: ignore[no-any-return]

    @property
    def verdict(self) -> ProcessIdentity | OSError:
        return self[1]  # type: ignore[no-any-return]

    @property
    def data(self) -> bytes | None:
        """The bytes read (None where the file could not be read)."""
        return self[2]  # type: ignore[no-any-return]

    @property
    def lock(self) -> tuple[bool | None, int | None, tuple[int, int] | None] | None:
        """With ``scan(locks=True)``: ``(locked, pid a POSIX lock names, (st_dev, st_ino))`` of
        the read; else None."""
        return self[3]  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        return iter((self[0], self[1]))

    def __len__(self) -> int:
        return 2

    def __eq__(self, other: object) -> bool:
        return (self[0], self[1]) == (tuple(other) if isinstance(other, tuple) else other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self[0], self[1]))

    @property
    def locked(self) -> bool | None:
        """Whether a process held the file locked when it was read (``scan(locks=True)``;
        else None)."""
        lock = self[3]
        return None if lock is None else lock[0]

    @property
    def holder(self) -> int | None:
        """The pid of the process holding the file locked, if its record names it and it is
        verified (see ``locked``)."""
        return lock_holder(self[3], self[1])

    @property
    def record(self) -> PidRecord | None:
        """The record, or None where the file holds none."""
        if self[4] is not None:
            return self[4]  # type: ignore[no-any-return]
        if self.data is None:
            return None
        try:
            return _backend.PidRecord.decode(self.data)
        except StorageError:
            return None

    @property
    def extras(self) -> Extras:
        """Lines 3 and 4: boot id, pidfs inode, capability."""
        if self[5] is not None:
            return self[5]  # type: ignore[no-any-return]
        return _common.NO_EXTRAS if self.record is None else _common.parse_extras(self.data or b"")

    @property
    def untrusted(self) -> str | None:
        """Why the file is no instruction to signal a process, or None: another user's (not
        root's or this user's), writable by group or others, in a directory where others could
        replace it, or reached by a path they could steer (the rule of the commands that
        signal: see the security page). From the open the bytes were read by."""
        owner = self[6]
        if owner is None:
            return "it was not read" if self[2] is None else "who wrote it is not known"
        return untrusted_owner(owner[0], owner[1]) or owner[2]

    def open_process(
        self, *, allow_legacy: bool = False, secure: bool = True
    ) -> ProcessHandle | None:
        """A handle on the recorded process, pinned now from the bytes this entry was judged
        from (no second read), or None if it is not running. ``secure`` (the default, for
        everyone): ``UntrustedPath`` if the file is ``untrusted``, as ``shimpid stop`` refuses
        it; a file another user could have written would otherwise have this process signal
        whatever process that user chose."""
        allow_legacy, secure = bool(allow_legacy), bool(secure)
        record = self.record
        if record is None:
            return None
        why = self.untrusted if secure else None
        if why:
            raise UntrustedPath(self.path, why)
        from ._handle import open_entry

        return open_entry(record, self.extras, _backend._pin_and_classify, allow_legacy)

    def __repr__(self) -> str:
        return f"Entry({self.path!r}, {self.verdict!r})"

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return type(self), (self[0], self[1], self[2], self[3], self[6])  # the rest: made again


def scan(
    directory: PathArg,
    *,
    pattern: str = "*.pid",
    locks: bool = False,
    secure: bool | None = None,
) -> Iterator[Entry]:
    """An ``Entry`` ``(path, verdict)`` for each pid file in ``directory`` (not below), in one
    pass over it.

    Pid files are the regular files whose names match ``pattern``; symlinks are never followed,
    and shimpid's temporary files are skipped. The verdict is ``process_identity()``'s: a file
    without a record is ``Absent()``; where the system cannot tell (an unreadable file, out of
    descriptors) the ``OSError`` comes instead of a verdict. Only a failure of the directory
    itself (opening or listing it, ``UntrustedPath``) is raised. Each file is read once, relative
    to the directory opened once. ``locks``: also look, on the same descriptor, whether a process
    holds each file locked (``Entry.locked``). ``secure``: as ``open_directory``'s.
    """
    yield from cast(Iterator[Entry], scan_reads(directory, pattern, bool(locks), secure, Entry))


def scan_reads(
    directory: PathArg, pattern: str, locks: bool, secure: bool | None, kind: type = tuple
) -> Iterator[tuple[Any, ...]]:
    """scan() as ``(path, verdict, data, lock, record, extras, owner)`` tuples, made as ``kind``
    (a tuple, or ``Entry``, whose ``__new__`` they skip): ``shimpid ls`` of 100,000 files takes
    them as plain tuples, as they come; record and extras where decoded already; owner (see
    ``Entry``) where the file was read."""
    raw, pattern = fs_bytes(directory), _pattern(pattern)
    secure = is_secure_default() if secure is None else bool(secure)
    prefix = os.path.join(os.fsdecode(raw), "")
    refused: list[str] = []
    kept = _common.keep(_open_scanned, raw, secure, refused)
    try:
        directory_fd = kept[0]
        suffix = _suffix_of(pattern)
        # Once: each file's owner tuple holds it (see Entry.untrusted)
        why = refused[0] if refused else untrusted_directory(directory_fd)
        fast = getattr(_backend, "_scan_suffix", None)
        if fast is not None and suffix is not None:
            yield from fast(directory_fd, os.fsencode(suffix), prefix, is_temp, locks, kind, why)
        elif kind is tuple:
            yield from _scan_names(directory_fd, pattern, prefix, locks, why)
        else:
            items = _scan_names(directory_fd, pattern, prefix, locks, why)
            yield from map(functools.partial(tuple.__new__, kind), items)
    finally:
        if kept:
            os.close(kept[0])


def _open_scanned(raw: bytes, secure: bool, refused: list[str]) -> int:
    """scan()'s directory: reached by the trust walk, always (its files may be trusted only
    then); where the walk refuses and ``secure`` is off, opened as it is, and the walk's
    refusal put in ``refused`` (the files found there are untrusted: see Entry.untrusted)."""
    try:
        return open_directory(raw, secure=True)
    except OSError as err:
        if secure:
            raise
        if isinstance(err, UntrustedPath):
            refused.append(f"its path could be steered: {err.filename}: {err.why}")
        else:  # (a missing directory: the plain open says so too)
            refused.append(f"its path could not be checked: {err.strerror}")
    return open_directory(raw, secure=False)


def _scan_names(
    directory_fd: int, pattern: str, prefix: str, locks: bool, why: str | None
) -> Iterator[tuple[Any, ...]]:
    """scan()'s rules, for any pattern (the extension has a fast path for "*<literal>")."""
    matches = _matcher(pattern)
    with os.scandir(directory_fd) as entries:
        for entry in entries:
            name = entry.name
            if not matches(name) or not entry.is_file(follow_symlinks=False):
                continue
            if name.startswith(".") and is_temp(name):
                continue
            path = prefix + name
            read = None
            verdict: ProcessIdentity | OSError
            try:
                read = read_at(directory_fd, os.fsencode(name), lock=locks)
            except OSError as err:  # as a reader says it: a StorageError naming the path
                verdict = _common.read_error(err.errno or 0, path)
            else:
                try:
                    verdict = ABSENT if read is None else judge(read)[2]
                except OSError as err:  # the system cannot tell
                    verdict = err
            if read is None or _too_large(read):  # as the extension's scan, which reads none
                yield path, verdict, None, None, None, None, None
            else:
                lock = read.lock if locks else None
                owner = (read.info.st_uid, read.info.st_mode, why)
                yield path, verdict, read.data, lock, None, None, owner


def _pattern(pattern: str) -> str:
    """A pattern as an exact str (a subclass's methods never run mid-scan)."""
    pattern = _common.exact_text(pattern)  # type: ignore[assignment]
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    return pattern


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
    import re

    return re.compile(fnmatch.translate(pattern)).match  # type: ignore[return-value]


# ---- cleaning --------------------------------------------------------------------------------


class Removal(tuple):  # type: ignore[type-arg]
    """What ``clean`` removed, would remove (``dry_run``), or kept for want of an answer:
    ``(path, why, removed)``; ``action`` is ``"removed"``, ``"would remove"`` or ``"kept"``."""

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

    @property
    def action(self) -> str:
        if self[2]:
            return "removed"
        return "kept" if self[1].startswith("kept") else "would remove"

    def __repr__(self) -> str:
        return "Removal(path={!r}, why={!r}, removed={!r})".format(*self)


def clean(
    directory: PathArg,
    *,
    pattern: str = "*.pid",
    dry_run: bool = False,
    secure: bool | None = None,
) -> list[Removal]:
    """Remove what dead writers and dead processes left in ``directory`` (not recursively).

    - pid files (regular files whose name matches ``pattern``) that read ``Absent`` (no record,
      another boot's, a process that is gone) and that no process holds locked (``flock``,
      POSIX or OFD lock). Each is judged from one read and removed only if it still holds those
      bytes, without ever losing a record written meanwhile (see the module's docstring);
    - the atomic writer's temporary files of those pid files (``.<name>.<pid>.<n>.tmp``, with
      ``<name>`` matching ``pattern``), and files left aside by a removal, whose writer is no
      longer running (a live process with that pid, whoever it is, keeps them) and which are at
      least two seconds old (a writer in another pid namespace may be at work).

    Everything is done relative to the directory, opened once (``secure``: as
    ``open_directory``'s). Symlinks and anything but regular files are never touched or opened.
    A file that cannot be judged (``OSError``: unreadable, or the system cannot tell) is kept,
    with ``removed=False`` and a ``why`` starting with "kept". ``dry_run`` removes nothing and
    returns what it would remove, with ``removed=False``. Returns the list, sorted by path.
    """

    # Each conversion once, before anything is opened: the caller's code runs nowhere else.
    raw, pattern = fs_bytes(directory), _pattern(pattern)
    dry_run, secure = bool(dry_run), None if secure is None else bool(secure)
    shown = os.path.join(os.fsdecode(raw), "")
    results: dict[bytes, Removal] = {}
    kept = _common.keep(open_directory, raw, secure=secure)
    try:
        directory_fd = kept[0]
        with os.scandir(directory_fd) as entries:
            names = sorted(
                os.fsencode(entry.name) for entry in entries if entry.is_file(follow_symlinks=False)
            )
        aside = _Aside(directory_fd)
        try:
            _clean_names(aside, names, pattern, dry_run, shown, results)
        finally:
            aside.restore_all()
    finally:
        if kept:
            os.close(kept[0])
    return [results[name] for name in sorted(results)]


def _clean_names(
    aside: _Aside,
    names: list[bytes],
    pattern: str,
    dry_run: bool,
    shown: str,
    results: dict[bytes, Removal],
) -> None:
    """clean()'s pass over the names listed (its loop, in a function of its own: see _common's
    note on loops)."""
    for name in names:
        text = os.fsdecode(name)
        try:
            found = _clean_one(aside, name, text, pattern, dry_run)
        except FileNotFoundError:
            continue  # gone meanwhile
        except OSError as err:
            found = f"kept: cannot tell ({err})", False
        if found is not None:
            results[name] = Removal(shown + text, found[0], found[1] and not dry_run)
        if aside.aside_for() >= BATCH:
            _settled(aside.settle(wait=True), results, shown)
            time.sleep(TURN_PAUSE)
    _settled(aside.settle(wait=True), results, shown)


def _settled(
    outcomes: Iterator[tuple[bytes, bool, str | None]], results: dict[bytes, Removal], shown: str
) -> None:
    for name, removed, why in outcomes:
        if not removed:
            results[name] = Removal(shown + os.fsdecode(name), f"kept: {why}", False)


def _aside_name(name: bytes) -> bytes:
    aside = b"%s%d.%d" % (ASIDE_PREFIX.encode(), os.getpid(), _common.unique_number())
    return aside + b"." + name if len(aside) + 1 + len(name) <= _common.NAME_MAX else aside


def aside_file(name: str) -> tuple[int, str | None] | None:
    """``(remover's pid, the pid file's name or None)`` of a removal's aside name, or None."""
    if not name.startswith(ASIDE_PREFIX):
        return None
    parts = name[len(ASIDE_PREFIX) :].split(".", 2)
    if len(parts) < 2 or not (_is_number(parts[0]) and _is_number(parts[1])):
        return None
    original = parts[2] if len(parts) == 3 else ""
    return int(parts[0]), None if original in ("", ".", "..") else original  # (never a file's)


def temp_file(name: str) -> tuple[str | None, int] | None:
    """``(pid file name, writer's pid)`` of a writer's temporary name
    (``.<name>.<pid>.<counter>.tmp``), ``(None, pid)`` of a removal's aside name, or None."""
    aside = aside_file(name)
    if aside is not None:
        return None, aside[0]
    if name.startswith(ASIDE_PREFIX):
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


def _clean_one(
    aside: _Aside, name: bytes, text: str, pattern: str, dry_run: bool
) -> tuple[str, bool] | None:
    """``(why, removed or to be)`` for one name of the directory clean() lists, or None."""
    import fnmatch  # here: it imports re, which costs every importer of shimpid 5 ms

    temp = temp_file(text)
    if temp is None:
        if not fnmatch.fnmatchcase(text, pattern):
            return None
        return _stale_record(aside, name, dry_run)
    target, writer = temp
    if target is None:  # set aside by a removal: a file of the name it had, if it says one
        original = (aside_file(text) or (0, None))[1]
        if original is not None and not fnmatch.fnmatchcase(original, pattern):
            return None
        return _left_aside(aside.directory, name, dry_run)
    if not fnmatch.fnmatchcase(target, pattern):
        return None
    why = _stale_temp(aside.directory, name, writer)
    if why is None:
        return None
    if not dry_run:
        os.unlink(name, dir_fd=aside.directory)
    return why, True


def _stale_temp(directory: int, name: bytes, pid: int) -> str | None:
    if time.time() - os.stat(name, dir_fd=directory, follow_symlinks=False).st_mtime < STALE_AFTER:
        return None  # a write may be under way
    if _common.names_a_process(pid) and _backend.is_process_alive(pid):
        return None  # its writer may still be at work
    return f"temporary file of writer {pid}, which is not running"


def _left_aside(directory: int, name: bytes, dry_run: bool) -> tuple[str, bool] | None:
    """What clean() does with a file a removal set aside, if its remover is gone: ``(why,
    removed)``, or None to leave it. A stale one is removed; a live record is put back at its
    name (never over another file), or kept where it cannot be."""
    remover, original = aside_file(os.fsdecode(name)) or (0, None)
    # Its age since it was moved aside (a rename changes ctime, not mtime).
    if time.time() - os.stat(name, dir_fd=directory, follow_symlinks=False).st_ctime < STALE_AFTER:
        return None
    if _common.names_a_process(remover) and _backend.is_process_alive(remover):
        return None  # its remover is at work
    read = read_at(directory, name)
    if read is None:
        return None
    record, extras, verdict = judge(read)
    if verdict == ABSENT:
        if not dry_run:
            os.unlink(name, dir_fd=directory)
        return (
            f"left aside by remover {remover}, which is not running: {why_absent(record, extras)}",
            True,
        )
    if original is None:
        return f"kept: a live record left aside by remover {remover}, its name unknown", False
    if dry_run:
        return f"would put back {original}: a live record left aside by remover {remover}", True
    put = _put_back(directory, name, os.fsencode(original))
    if put == _TAKEN:
        return f"kept: a live record left aside by remover {remover}; {original} is taken", False
    if put == _LINKED:
        _unlink_if_there(directory, name)
    return f"put back as {original}: a live record left aside by remover {remover}", True


def _stale_record(aside: _Aside, name: bytes, dry_run: bool) -> tuple[str, bool] | None:
    """``(why, set aside)`` for a pid file found stale (set aside for removal unless
    ``dry_run``; ``why`` says why it was kept if it could not be), or None if it is not stale
    or is locked. Judged from the read made under the lock it is moved with."""
    found: list[str] = []

    def stale(read: Read) -> str | None:
        record, extras, verdict = judge(read)
        if verdict != ABSENT:
            return NOT_STALE
        found.append(f"pid file: {why_absent(record, extras)}")
        return "a dry run" if dry_run else None

    try:
        why = aside.claim(name, stale)
    except OSError as err:
        if not found or isinstance(err, FileNotFoundError):
            raise
        # judged stale, and its removal refused (EROFS, EACCES): as stop says it
        return f"kept: cannot remove it: {err.strerror}", False
    if why in (NOT_STALE, LOCKED, GONE):
        return None
    if found and (why is None or dry_run):
        return found[0], True
    if not found:  # refused before it was read (the directory's turn): judged as it is
        read = read_at(aside.directory, name, lock=True)
        if read is None or read.locked is not False or judge(read)[2] != ABSENT:
            return None
    return f"kept: {why}", False
