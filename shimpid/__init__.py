"""shimpid: record the processes you spawn in pid files, and recognise them again.

A pid file holds ``<pid>\\n<start_time>\\n``: the start time is the kernel's fingerprint of the
process, so a later reader can tell the recorded process from an unrelated one that reused its
pid. docs/ has the guides, the format, the identity rules and platform support.

Two backends implement one API: the Cython extension ``shimpid._speedups`` and the pure-Python
``shimpid._pure``; ``shimpid._backend`` picks one and ``BACKEND`` says which.
"""

from __future__ import annotations

from ._backend import (
    BACKEND,
    PidFileWriter,
    PidRecord,
    is_process_alive,
    process_start_time,
)
from ._common import (
    PID_RECORD_MAX_BYTES,
    Absent,
    ForeignProcError,
    Legacy,
    ProcessIdentity,
    StorageError,
    Verified,
)
from ._reader import PidFileReader
from ._spawn import spawn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._aio import create_subprocess_exec
    from ._handle import ProcessHandle
    from ._lock import AlreadyLocked, AlreadyRunning, PidFileLock, exit_on_sigterm
    from ._operate import Inspection, Refused, inspect, send_signal, stop
    from ._rundir import Entry, Removal, UntrustedPath, clean, scan

# Imported when first used: what a spawner imports shimpid for should cost it no more
# (the import benchmark holds it to 1.3x ``import subprocess``).
_LAZY = {
    "create_subprocess_exec": "_aio",  # asyncio costs 40 ms to import
    "clean": "_rundir",
    "scan": "_rundir",
    "Entry": "_rundir",
    "Removal": "_rundir",
    "UntrustedPath": "_rundir",
    "inspect": "_operate",
    "send_signal": "_operate",
    "stop": "_operate",
    "Inspection": "_operate",
    "Refused": "_operate",
    "ProcessHandle": "_handle",
    "PidFileLock": "_lock",
    "AlreadyLocked": "_lock",
    "AlreadyRunning": "_lock",
    "exit_on_sigterm": "_lock",
}


def _public(value: object) -> object:
    """A public class shows as ``shimpid.X`` (reprs, tracebacks, pickles, documentation), not
    as the private module it is written in; it is found there too (``shimpid.X``)."""
    if isinstance(value, type) and value.__module__.startswith(f"{__name__}._"):
        value.__module__ = __name__
    return value


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        for public, home in _LAZY.items():  # all of the module's: its tracebacks name them so
            if home == _LAZY[name]:
                globals()[public] = _public(getattr(module, public))
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BACKEND",
    "PID_RECORD_MAX_BYTES",
    "Absent",
    "AlreadyLocked",
    "AlreadyRunning",
    "Entry",
    "ForeignProcError",
    "Inspection",
    "Legacy",
    "PidFileLock",
    "PidFileReader",
    "PidFileWriter",
    "PidRecord",
    "ProcessHandle",
    "ProcessIdentity",
    "Refused",
    "Removal",
    "StorageError",
    "UntrustedPath",
    "Verified",
    "clean",
    "create_subprocess_exec",
    "exit_on_sigterm",
    "inspect",
    "is_process_alive",
    "process_start_time",
    "scan",
    "send_signal",
    "spawn",
    "stop",
]

for _name in __all__:
    if _name in globals():
        _public(globals()[_name])
del _name

__version__ = "0.2.0"
