"""asyncio's ``create_subprocess_exec``, recording the child before anything can reap it.

Imported when ``shimpid.create_subprocess_exec`` is first used (a program that never spawns
from asyncio does not pay for importing asyncio). asyncio's own machinery reaps a
child in the background as soon as it exits, which could be before the parent writes its record,
so the child is started and recorded by a transport of shimpid's that also does the reaping,
after the record.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from asyncio import base_subprocess
from typing import Any

from ._spawn import _writer, boot_clock, kill_and_reap, write_child

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._backend import PidFileWriter
    from ._common import PathArg

__all__ = ["create_subprocess_exec"]


async def create_subprocess_exec(
    program: PathArg,
    *args: PathArg,
    pidfile: PathArg | PidFileWriter,
    atomic: bool = True,
    capability: str | None = None,
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    limit: int = 2**16,
    **kwargs: Any,
) -> asyncio.subprocess.Process:
    """``asyncio.create_subprocess_exec``, with the child's record written to ``pidfile``: the
    same guarantees as ``spawn``."""
    writer = _writer(pidfile, atomic, capability)
    _check_asyncio_arguments(kwargs)
    loop = asyncio.get_running_loop()
    protocol = asyncio.subprocess.SubprocessStreamProtocol(limit=limit, loop=loop)
    connected = loop.create_future()
    transport = _RecordingTransport(
        loop,
        protocol,
        [program, *args],
        False,
        stdin,
        stdout,
        stderr,
        0,
        waiter=connected,
        writer=writer,
        **kwargs,
    )
    _reap_when_done(loop, transport)
    try:
        await connected
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transport.close()
        await transport._wait()
        raise
    return asyncio.subprocess.Process(transport, protocol, loop)


def _check_asyncio_arguments(kwargs: dict[str, Any]) -> None:
    """What ``loop.subprocess_exec`` refuses: its streams carry bytes, unbuffered, no shell."""
    for name in ("universal_newlines", "shell", "text"):
        if kwargs.pop(name, False):
            raise ValueError(f"{name} must be False")
    if kwargs.pop("bufsize", 0) != 0:
        raise ValueError("bufsize must be 0")
    for name in ("encoding", "errors"):
        if kwargs.pop(name, None) is not None:
            raise ValueError(f"{name} must be None")


class _RecordingTransport(base_subprocess.BaseSubprocessTransport):
    """asyncio's subprocess transport, writing the record right after the child starts.

    Mirrors ``asyncio.unix_events._UnixSubprocessTransport``; asyncio attaches its reaper only
    after its transport is made, so no hook of asyncio's runs early enough for the record.
    """

    def __init__(self, *args: Any, writer: PidFileWriter, **kwargs: Any) -> None:
        self._writer = writer
        super().__init__(*args, **kwargs)

    def _start(
        self,
        args: Any,
        shell: bool,
        stdin: Any,
        stdout: Any,
        stderr: Any,
        bufsize: int,
        **kwargs: Any,
    ) -> None:
        before = boot_clock()
        self._proc = subprocess.Popen(
            args,
            shell=shell,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            universal_newlines=False,
            bufsize=bufsize,
            **kwargs,
        )
        try:
            write_child(self._writer, self._proc.pid, before)
        except BaseException:
            kill_and_reap(self._proc)
            raise


def _reap_when_done(loop: asyncio.AbstractEventLoop, transport: _RecordingTransport) -> None:
    """Reap the child when it exits and tell the transport, as asyncio's child watchers do."""
    pid = transport.get_pid()
    assert pid is not None  # the child was started in the transport's constructor
    try:
        pidfd = os.pidfd_open(pid)  # Linux 5.3+: readable once the child has exited
    except (AttributeError, OSError):
        pidfd = -1
    if pidfd >= 0:
        try:
            loop.add_reader(pidfd, _exited, loop, transport, pidfd)
            return
        except (NotImplementedError, OSError):  # a loop that watches no descriptors
            os.close(pidfd)
    threading.Thread(target=_wait_in_thread, args=(loop, transport), daemon=True).start()


def _exited(loop: asyncio.AbstractEventLoop, transport: _RecordingTransport, pidfd: int) -> None:
    loop.remove_reader(pidfd)
    os.close(pidfd)
    transport._process_exited(_reap(transport))


def _wait_in_thread(loop: asyncio.AbstractEventLoop, transport: _RecordingTransport) -> None:
    code = _reap(transport)
    try:
        loop.call_soon_threadsafe(transport._process_exited, code)
    except RuntimeError:
        pass  # the loop is closed: nobody is waiting


def _reap(transport: _RecordingTransport) -> int:
    proc = transport._proc
    assert proc is not None
    if proc.returncode is not None:
        # Reaped already (Popen.poll(), from send_signal() or close()): its pid may be
        # another child's by now, whose exit a waitpid() would wait for, and take.
        return proc.returncode
    try:
        _, status = os.waitpid(proc.pid, 0)
    except ChildProcessError:
        # Already reaped: by Popen.poll() in transport.close(), or by a reaper of the
        # application's. asyncio reports an unknown status as 255 too.
        return proc.returncode if proc.returncode is not None else 255
    return os.waitstatus_to_exitcode(status)
