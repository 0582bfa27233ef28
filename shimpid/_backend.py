"""Picks the backend: the Cython extension unless told otherwise or unable.

``SHIMPID_PURE_PYTHON`` set to anything but ``0`` selects the pure-Python backend, as does an
interpreter other than CPython. Without a built extension (Windows, no compiler) the pure backend
is the fallback, with a warning on CPython: the same API, and ``BACKEND`` says which one runs.
"""

from __future__ import annotations

import sys

from ._common import env_flag

TYPE_CHECKING = False  # mypy takes any name TYPE_CHECKING as true; typing costs 7 ms to import
if TYPE_CHECKING:
    from typing import Literal, Protocol

    from . import _pure, _speedups
    from ._common import Absent, Kept, Legacy, Verified

    class Backend(Protocol):
        """What a backend provides, and all the rest of the package takes from it: the public
        types and functions, and the primitives the policy modules are written over. Both
        backends are checked against it (``mypy --strict``, below); nothing else imports them."""

        @property
        def BACKEND(self) -> Literal["cython", "python"]: ...

        PidFileWriter: type[_pure.PidFileWriter]
        PidRecord: type[_pure.PidRecord]

        def is_process_alive(self, pid: int, /) -> bool: ...
        def process_start_time(self, pid: int, /) -> int | None: ...
        # the verdict on a record, and the same reached through a pidfd opened into the
        # caller's pidfd (a _common.slot(), which the caller closes)
        def _classify(
            self, pid: int, start_time: int | None, pidfs_id: int | None, /
        ) -> Verified | Legacy | Absent: ...
        def _pin_and_classify(
            self, pid: int, start_time: int | None, pidfs_id: int | None, pidfd: Kept, /
        ) -> Verified | Legacy | Absent: ...
        def _identity_at(
            self, directory_fd: int | None, target: bytes, path: str | bytes | None = None, /
        ) -> Verified | Legacy | Absent: ...
        def _pidfd_level(self) -> int: ...
        # one read of a pid file (bounded, never blocking, no symlink followed); errors name path
        def _read_pid_file(
            self, target: bytes, path: str | bytes, directory_fd: int | None = None, /
        ) -> bytes: ...

    _pure_backend: Backend = _pure
    _extension_backend: Backend = _speedups

__all__ = [
    "BACKEND",
    "PidFileWriter",
    "PidRecord",
    "is_process_alive",
    "process_start_time",
]

if TYPE_CHECKING or env_flag("SHIMPID_PURE_PYTHON") or sys.implementation.name != "cpython":
    from . import _pure as _impl
else:
    try:
        from . import _speedups as _impl
    except (ImportError, AttributeError) as err:
        # No extension on CPython: installed without a compiler (pip shows the build's warning
        # only with -v), or a broken build, or a stale one built in place against an older
        # _common (a name it reads is gone). Say so once; SHIMPID_PURE_PYTHON=1 chooses the pure
        # backend on purpose, and silently.
        import os
        import warnings

        built = any(
            name.startswith("_speedups.") and name.endswith((".so", ".pyd"))
            for name in os.listdir(os.path.dirname(__file__) or ".")
        )
        why = (
            f"it is there but could not be loaded ({err})"
            if built
            else "it was not built when shimpid was installed (there was no C compiler, or "
            "no Python headers)"
        )
        warnings.warn(
            f"shimpid: the C extension is not available: {why}; using the pure-Python "
            "backend, which is slower (the documentation's benchmarks page) and allocates "
            "after fork(). Install a C compiler and the Python headers and reinstall shimpid "
            "to get it, or set "
            "SHIMPID_PURE_PYTHON=1 to choose the pure backend.",
            RuntimeWarning,
            stacklevel=2,
        )
        from . import _pure as _impl

# The public API, and what the rest of the package takes from the backend.
BACKEND: Literal["cython", "python"] = _impl.BACKEND
PidFileWriter = _impl.PidFileWriter
PidRecord = _impl.PidRecord
is_process_alive = _impl.is_process_alive
process_start_time = _impl.process_start_time
# Shown (reprs, tracebacks, pickles, documentation) as what it is to users: shimpid.PidRecord.
if BACKEND == "cython":
    _speedups_publish = getattr(_impl, "_publish")  # noqa: B009 (the extension's only)
    _speedups_publish(PidRecord, "shimpid")
else:
    PidRecord.__module__ = "shimpid"
_classify = _impl._classify
_identity_at = _impl._identity_at
_pidfd_level = _impl._pidfd_level
_pin_and_classify = _impl._pin_and_classify
_read_pid_file = _impl._read_pid_file
_scan_suffix = getattr(_impl, "_scan_suffix", None)  # the extension's fast path for scan()
