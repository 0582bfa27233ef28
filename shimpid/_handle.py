"""Race-free handles on recorded processes: check the identity, then signal that very process.

Between checking a pid file and signalling its pid, the process can exit and its pid be given to
another. A pidfd (Linux 5.3+) closes that window: it is opened on the pid FIRST, then the
identity is checked, and since the pidfd pins the process it was opened on, a match after opening
proves the handle refers to the recorded process. ``signal.pidfd_send_signal`` then signals
exactly it, or fails with ESRCH once it has exited, even if its pid is in use again.

Without pidfds (older kernels, macOS), a handle re-checks the identity immediately before each
signal. The window between that check and ``kill()`` remains: microseconds, in which the process
would have to exit and its pid be reused.

Shared by both backends: each passes its own ``_pin_and_classify`` (the identity rules).
"""

from __future__ import annotations

import io
import operator
import os
import select
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable

from ._common import (
    Extras,
    Kept,
    Legacy,
    ProcessIdentity,
    Verified,
    from_another_boot,
    keep,
    slot,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs an importer of shimpid 7 ms
    from typing import Any

__all__ = ["ProcessHandle", "open_entry"]

# A backend's ``_pin_and_classify(pid, start_time, pidfs_id, pidfd)``: the verdict, reached
# through the pidfd it opens into ``pidfd`` (a ``slot()``; none without pidfds). Raises OSError
# when the system cannot tell.
PinAndClassify = Callable[[int, "int | None", "int | None", Kept], ProcessIdentity]


def open_entry(
    record: Any, extras: Extras, pin_and_classify: PinAndClassify, allow_legacy: bool
) -> ProcessHandle | None:
    """A handle on the process a record (already read) names, or None if it is not there."""
    # Converted before a pidfd is opened: the caller's __bool__ could otherwise close it, or
    # put another process's pidfd at its number, before the handle takes it.
    allow_legacy = bool(allow_legacy)
    if from_another_boot(extras):
        return None
    # The pidfd is put here as it is opened, and shared with the handle: whatever interrupts
    # (a signal handler that raises as a call returns), it is closed, once, inline and marked
    # first (see _common's note on descriptors): here unless the handle was made, else by it.
    pidfd = slot()

    def still_there() -> bool:
        fd = slot()
        try:
            return pin_and_classify(record.pid, record.start_time, extras.pidfs_id, fd) == identity
        finally:
            if fd:
                os.close(fd[0])

    handle = None
    try:
        identity = pin_and_classify(record.pid, record.start_time, extras.pidfs_id, pidfd)
        if type(identity) is Verified or (allow_legacy and type(identity) is Legacy):
            handle = ProcessHandle(identity, pidfd, still_there)
        return handle
    finally:
        if handle is None and 0 in pidfd and 1 not in pidfd:
            pidfd[1] = 0
            os.close(pidfd[0])


# The longest single poll(), in seconds: a day, well under its limit of 2**31 - 1 ms.
_MAX_POLL = 86400.0


# Every handle, so that a forked child's copies get locks of their own: one another thread of
# the parent held at the fork would be held in the child for ever.
_handles: weakref.WeakSet[ProcessHandle] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handle in list(_handles):
        handle._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _exited(pidfd: int, seconds: float) -> bool:
    """Whether the process of pidfd exits within ``seconds`` (readable: exited)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


def _poll_until(pidfd: int, deadline: float | None) -> bool:
    """Whether the process of pidfd exits before the deadline (None: wait as long as it takes;
    a loop of its own: see _common's note on loops)."""
    while True:
        left = _MAX_POLL if deadline is None else deadline - time.monotonic()
        if _exited(pidfd, max(min(left, _MAX_POLL), 0)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def _recheck_until(still_there: Callable[[], bool], deadline: float | None) -> bool:
    """Without a pidfd: look again, less and less often, until the process is gone."""
    pause = 0.001
    while still_there():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0)))
        pause = min(pause * 2, 0.05)
    return True


class ProcessHandle:
    """A handle on one verified (or, if allowed, legacy) process: signal it, wait for it.

    Made by ``PidFileReader.open_process()``. Holds a pidfd where the system has them (see
    ``fileno()``); close it, or use the handle as a context manager.
    """

    __slots__ = ("__weakref__", "_closed", "_identity", "_kept", "_lock", "_still_there")

    def __init__(
        self, identity: ProcessIdentity, pidfd: Kept, still_there: Callable[[], bool]
    ) -> None:
        # Held while the pidfd is used, and by close(): another thread's close() (and an open
        # that takes its number) never comes between a check and pidfd_send_signal(). An RLock:
        # a signal handler of this thread may close the handle.
        self._lock = threading.RLock()
        _handles.add(self)  # (a forked child gets it anew: see _after_fork_in_child)
        self._kept = pidfd  # shared with open_entry until it returns: see there
        self._identity = identity
        self._still_there = still_there
        self._closed = False

    @property
    def _pidfd(self) -> int | None:
        return self._kept.get(0)

    @property
    def pid(self) -> int:
        return self._identity.pid  # type: ignore[return-value]

    @property
    def identity(self) -> ProcessIdentity:
        """``Verified(pid)``, or ``Legacy(pid)`` if the handle was opened with allow_legacy."""
        return self._identity

    def fileno(self) -> int:
        """The pidfd: readable once the process has exited. UnsupportedOperation without pidfds."""
        self._check_open()
        if self._pidfd is None:
            raise io.UnsupportedOperation("no pidfd: this system has no pidfds")
        return self._pidfd

    def send_signal(self, sig: int) -> bool:
        """Signal the process: True once sent. Once it has exited, nothing is sent (never to
        another process) and it returns False, as ``Popen.send_signal`` does nothing then: a
        process exiting as it is stopped is no error. Other failures (``PermissionError``)
        raise."""
        # Converted before the pidfd is looked at: sig's __index__ could close it, or put
        # another process's pidfd at its number, in the middle of pidfd_send_signal().
        sig = operator.index(sig)
        with self._lock:
            self._check_open()
            pidfd = self._pidfd
            try:
                if pidfd is not None:
                    if _exited(pidfd, 0):  # a zombie takes a signal, and nothing comes of it
                        return False
                    if 1 in self._kept:  # closed meanwhile, by a handler of this thread's
                        raise ValueError("operation on a closed ProcessHandle")
                    signal.pidfd_send_signal(pidfd, sig)
                    return True
                if not self._still_there():
                    return False
                os.kill(self.pid, sig)  # the remaining window: see the module's doc
            except ProcessLookupError:
                return False
        return True

    def terminate(self) -> bool:
        """``send_signal(SIGTERM)``."""
        return self.send_signal(signal.SIGTERM)

    def kill(self) -> bool:
        """``send_signal(SIGKILL)``."""
        return self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until the process exits; ``subprocess.TimeoutExpired`` if ``timeout`` seconds
        pass first (as ``Popen.wait`` and ``psutil.Process.wait``).

        Works for any process, not only children, so there is no exit status to return. It does
        not reap: a child of the caller that has exited stays a zombie until the caller waits
        for it. Any timeout works, however large (poll() takes at most 2**31 - 1 ms: longer waits
        are made of several).
        """
        if timeout is not None:  # a float before anything: see _wait
            timeout = float(timeout) if timeout >= 0 else 0.0  # a non-number: TypeError
        if not self._wait(timeout):
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)

    def poll(self) -> bool:
        """Whether the process has exited (``wait(0)`` without the exception)."""
        return self._wait(0)

    def _wait(self, timeout: float | None) -> bool:
        # A float before the pidfd is looked at: the caller's arithmetic never runs between
        # polls (it could close the pidfd, and poll() then answers "exited").
        if timeout is not None:
            timeout = float(timeout) if timeout >= 0 else 0.0  # a non-number: TypeError
        deadline = None if timeout is None else time.monotonic() + timeout
        mine = None
        try:
            with self._lock:
                self._check_open()
                if self._pidfd is not None and timeout == 0:
                    return _exited(self._pidfd, 0)  # (poll(): under the lock, no copy needed)
                if self._pidfd is not None:
                    # A copy of its own to wait on: close() from another thread meanwhile
                    # neither ends the wait nor makes it watch what opens at the number next.
                    mine = keep(os.dup, self._pidfd)
                    mine[0]
            if mine is not None:
                return _poll_until(mine[0], deadline)
            return _recheck_until(self._still_there, deadline)
        finally:
            if mine:
                os.close(mine[0])

    def close(self) -> None:
        """Close the pidfd (as leaving ``with`` does); signals then raise ``ValueError``. A
        ``wait()`` in another thread goes on until the process exits (or its timeout)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                kept = self._kept
                if 0 in kept and 1 not in kept:  # (as open_entry's)
                    kept[1] = 0
                    os.close(kept[0])

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("operation on a closed ProcessHandle")

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def __repr__(self) -> str:
        how = "closed" if self._closed else ("pidfd" if self._pidfd is not None else "no pidfd")
        return f"<ProcessHandle {self._identity!r} ({how})>"
