"""An operator's actions on a recorded process: look at it, signal it, stop it.

The policy of ``shimpid status``, ``show``, ``pid``, ``signal`` and ``stop``, for programs too:
each reaches the pid file through its directory opened once (as root, or when told, by the
trust rules of ``open_directory``), decides from one read of it, and says or does only what
those bytes say. The commands that signal also refuse a pid file another user could have
written, a record without a start time (unless allowed), and pid 1, this process and its
ancestors, whatever a file says.
"""

from __future__ import annotations

import errno
import operator
import os
import signal as _signal
import subprocess

from . import _backend, _common
from ._common import ABSENT, Extras, Legacy, ProcessIdentity, StorageError
from ._handle import ProcessHandle, open_entry
from ._rundir import (
    Read,
    UntrustedPath,
    decoded,
    fs_bytes,
    judge,
    lock_holder,
    open_directory,
    read_at,
    remove_at,
    split_file_path,
    untrusted_file,
    why_absent,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from ._backend import PidRecord
    from ._common import PathArg
    from ._handle import PinAndClassify

__all__ = ["Inspection", "Refused", "inspect", "send_signal", "stop"]


class Refused(PermissionError):
    """The pid file names a process this will not signal. ``reason``: ``"legacy"`` (no start
    time recorded: its identity cannot be proven; ``allow_legacy`` to act anyway) or
    ``"protected"`` (pid 1, this process or one of its ancestors)."""

    def __init__(self, pid: int, reason: str, why: str) -> None:
        super().__init__(errno.EPERM, f"refusing to signal {pid}: {why}")
        self.pid, self.reason = pid, reason


class Inspection:
    """A pid file, from one read: ``record`` (or the ``StorageError`` in its place), ``extras``,
    ``verdict``, and whether a process holds it locked (``locked``: None where that cannot be
    seen) and which (``holder``: the pid these bytes name, if verified and holding it).
    ``read`` is None where there is no pid file. ``outcome`` says what an action did."""

    __slots__ = (
        "extras",
        "holder",
        "kept",
        "locked",
        "outcome",
        "path",
        "read",
        "record",
        "removed",
        "verdict",
    )

    def __init__(
        self,
        path: str,
        read: Read | None,
        record: PidRecord | StorageError,
        extras: Extras,
        verdict: ProcessIdentity,
    ) -> None:
        self.path, self.read, self.record, self.extras, self.verdict = (
            path,
            read,
            record,
            extras,
            verdict,
        )
        self.locked = None if read is None else read.locked
        self.holder = None if read is None else lock_holder(read.lock, verdict)
        #: after send_signal or stop: "sent", "stopped", "not running", "still running"
        self.outcome: str | None = None
        #: after stop: whether the pid file was removed, and if not, why (None: not tried)
        self.removed = False
        self.kept: str | None = None

    @property
    def pid(self) -> int | None:
        return None if isinstance(self.record, StorageError) else self.record.pid

    @property
    def why_absent(self) -> str | None:
        """Why the verdict is Absent, in words, or None."""
        return why_absent(self.record, self.extras) if self.verdict == ABSENT else None

    def __repr__(self) -> str:
        return f"<Inspection {self.path!r} {self.verdict!r}>"


def inspect(path: PathArg, *, secure: bool | None = None) -> Inspection:
    """The pid file at ``path``, from one read (lock state included). ``secure``: as
    ``open_directory``'s (default: as root). Raises ``UntrustedPath``, ``StorageError`` for a
    path that names no file, and ``OSError`` where the file cannot be read or the system cannot
    tell."""
    # Converted before anything is opened: see the module's habits.
    directory, read, shown = _open(path, None if secure is None else bool(secure))
    if directory is not None:
        os.close(directory)  # inline: see _common's note on descriptors
    return _judged(shown, read)


def _open(
    path: PathArg, secure: bool | None, *, signalling: bool = False, shown: str | None = None
) -> tuple[int | None, Read | None, str]:
    """The pid file's directory, opened once (None: there is none, so no file either), and one
    read of the file (the caller closes the directory). ``signalling`` (the commands that
    signal, and open_process()), with ``secure``: ``UntrustedPath`` for a file another user
    could have written. Errors name ``shown`` (default: path)."""
    try:
        raw = fs_bytes(path)  # once: what is shown is what is acted on
    except ValueError as err:
        raise StorageError(str(err)) from err
    where, name = split_file_path(raw)
    if shown is None:
        shown = os.fsdecode(raw)
    try:
        directory = open_directory(where, secure=secure)
    except (FileNotFoundError, NotADirectoryError):
        return None, None, shown
    try:
        read = read_at(directory, name, lock=True, shown=shown)
        why = None
        if signalling and secure and read is not None:
            why = untrusted_file(directory, read)
        if why:
            raise UntrustedPath(shown, why)
        return directory, read, shown
    except BaseException:
        os.close(directory)
        raise


def _judged(shown: str, read: Read | None) -> Inspection:
    if read is None:
        missing = StorageError(errno.ENOENT, "no PID file", shown)
        return Inspection(shown, None, missing, _common.NO_EXTRAS, ABSENT)
    record, extras, verdict = judge(read)
    return Inspection(shown, read, record, extras, verdict)


def _target(
    path: PathArg, secure: bool, allow_legacy: bool
) -> tuple[int | None, Inspection, ProcessHandle | None]:
    """For the commands that signal: the directory, the inspection, and a handle on the process
    (None where it is not running). Raises as ``inspect``, and ``Refused``."""
    directory, read, shown = _open(path, secure, signalling=True)
    try:
        found = _judged(shown, read)
        if found.verdict == ABSENT:
            return directory, found, None
        pid = found.pid
        assert pid is not None
        if type(found.verdict) is Legacy and not allow_legacy:
            raise Refused(
                pid,
                "legacy",
                "the pid file records no start time, so its identity cannot be "
                "proven (allow it to act anyway)",
            )
        protected = never_signalled(pid)
        if protected:
            raise Refused(pid, "protected", protected)
        assert not isinstance(found.record, StorageError)
        handle = open_entry(found.record, found.extras, _backend._pin_and_classify, allow_legacy)
        return directory, found, handle
    except BaseException:
        if directory is not None:
            os.close(directory)
        raise


def open_process(
    target: bytes,
    shown: PathArg,
    allow_legacy: bool,
    secure: bool,
    pin_and_classify: PinAndClassify,
) -> ProcessHandle | None:
    """``PidFileReader.open_process()``: one read of the file at ``target`` (absolute: the
    reader's, whatever the working directory is now) through its directory, opened once; with
    ``secure``, by the trust rules' walk, and the file's own rule (``UntrustedPath``); then a
    handle pinned from those bytes (by the reader's backend), or None. Errors name ``shown``."""
    try:
        directory, read, _ = _open(target, secure, signalling=True, shown=os.fsdecode(shown))
    except StorageError:  # not a regular file: no record to act on
        return None
    try:
        if directory is None or read is None:
            return None
        found = decoded(read)
        if found is None:
            return None
        return open_entry(*found, pin_and_classify, allow_legacy)
    finally:
        if directory is not None:
            os.close(directory)


def send_signal(
    path: PathArg, sig: int, *, allow_legacy: bool = False, secure: bool = True
) -> Inspection:
    """Send ``sig`` to the process the pid file names, through a handle that cannot reach
    another (a pidfd), if it is verified; ``outcome`` is "sent" or "not running". ``sig`` 0
    sends nothing: "sent" says the recorded process runs (any user may ask). Raises
    ``UntrustedPath`` (``secure``, the default for everyone: the file and its path must be
    this user's or root's), ``Refused``, and ``OSError`` (not permitted, or cannot tell)."""
    sig = operator.index(sig)  # before anything is opened: see the module's habits
    directory, found, handle = _target(path, bool(secure), bool(allow_legacy))
    try:
        found.outcome = "not running"
        if handle is not None:
            with handle:
                # 0: whether it runs, which the handle just proved (no permission needed)
                if not sig or handle.send_signal(sig):
                    found.outcome = "sent"  # (else it exited meanwhile)
        return found
    finally:
        if directory is not None:
            os.close(directory)  # inline: see _common's note on descriptors


def stop(
    path: PathArg,
    *,
    sig: int = _signal.SIGTERM,
    timeout: float = 10.0,
    allow_legacy: bool = False,
    secure: bool = True,
    escalating: Callable[[int], object] | None = None,
) -> Inspection:
    """Stop the process the pid file names: send ``sig``, wait ``timeout`` seconds, send SIGKILL
    (calling ``escalating(pid)`` first) and wait again; then remove the pid file if it still
    holds the record that was read (never a record written since, nor a file still locked).
    A stale pid file (Absent, unlocked) is removed. ``outcome``: "stopped", "not running" or
    "still running"; ``removed`` whether the file went (``kept``: why not). Raises as
    ``send_signal``."""
    sig, timeout = operator.index(sig), float(timeout)
    if not timeout >= 0:  # NaN too: it would send SIGKILL at once, and not wait after it
        raise ValueError(f"timeout must be >= 0, not {timeout!r}")
    directory, found, handle = _target(path, bool(secure), bool(allow_legacy))
    try:
        found.outcome = "not running" if found.verdict == ABSENT else "stopped"
        if handle is not None:
            with handle:  # (a signal to a process that has just exited does nothing)
                handle.send_signal(sig)
                try:
                    handle.wait(timeout)
                except subprocess.TimeoutExpired:
                    if escalating is not None:
                        escalating(handle.pid)
                    handle.send_signal(_signal.SIGKILL)
                    try:
                        handle.wait(timeout)
                    except subprocess.TimeoutExpired:
                        found.outcome = "still running"
                        return found
        if found.read is None or directory is None:
            return found
        try:
            found.removed, found.kept = remove_at(directory, found.read.name, found.read)
        except OSError as err:  # stopped all the same: say why the file stays
            found.kept = f"cannot remove it: {err.strerror}"
        return found
    finally:
        if directory is not None:
            os.close(directory)


def never_signalled(pid: int) -> str | None:
    """Why pid must never be signalled, whatever a pid file says, or None."""
    if pid == 1:
        return "pid 1 is init"
    if pid == os.getpid():
        return "it is this process"
    if _common.proc_state() != _common.PROC_OURS:
        return "this process's ancestors cannot be told: /proc is not this pid namespace's"
    ancestor = os.getppid()
    while ancestor > 1:
        if ancestor == pid:
            return "it is an ancestor of this process"
        ancestor = _common.parent_of(ancestor)
    return None
