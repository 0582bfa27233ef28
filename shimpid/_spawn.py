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
it about nothing). So a path whose directory ``spawn`` has already found usable is checked, in
full, while the child starts; a new directory is checked before, so that a path that cannot be
written fails without starting anything.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from . import _common
from ._backend import PidFileWriter

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs a program that never uses it to import
    from typing import Any, Literal, overload

    from ._common import PathArg
else:

    def overload(function):  # the last definition is the one that runs
        return function


__all__ = ["spawn"]

# The directories spawn() has written pid files in, least recently used first (a few: a
# spawner reuses one or two). One removed since is found as the record is written.
USABLE_DIRECTORIES_MAX = 16
_usable_directories: dict[bytes, None] = {}


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
    return PidFileWriter.at(pidfile, atomic=atomic, capability=capability)


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

    A path that cannot be written fails before anything starts, but for one case: given an
    absolute path in a directory where ``spawn`` wrote a record before, the checks that need
    the filesystem are made while the child starts (the rest, its name and its length, before),
    which takes them off the spawn's critical path. If that directory has gone or changed
    since, the error is raised once the child has started: it is killed and reaped first, as
    when the record itself cannot be written, and the next ``spawn`` there checks first.
    """
    directory = None
    if isinstance(pidfile, PidFileWriter):
        writer = _writer(pidfile, atomic, capability)
    else:
        # Every conversion of the caller's values (__str__, __bool__, __fspath__) before anything
        # starts, in the writer's order.
        line3 = _common.check_capability(capability).decode() or None
        atomic = bool(atomic)
        given, target = _common.writer_target(pidfile, atomic)  # no filesystem call
        writer = None
        if os.path.isabs(given):
            directory = target.rpartition(b"/")[0]
        if directory not in _usable_directories:
            writer = PidFileWriter.at(given, atomic=atomic, capability=line3)
    child = subprocess.Popen(args, **popen_kwargs)
    try:
        if writer is None:  # made, and checked in full, while the child starts
            writer = PidFileWriter.at(given, atomic=atomic, capability=line3)
        writer.write_for(child.pid)
        if directory is not None:
            _remember(directory)
    except BaseException:
        kill_and_reap(child)
        if directory is not None:
            _usable_directories.pop(directory, None)
        raise
    return child


def _remember(directory: bytes) -> None:
    """directory is one spawn() has written in: later spawns there check while the child starts.
    Moved to the end: the least recently used goes first."""
    _usable_directories.pop(directory, None)
    _usable_directories[directory] = None
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
