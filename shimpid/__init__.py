"""shimpid: record the processes you spawn in pid files, and recognise them again.

A pid file holds ``<pid>\\n<start_time>\\n``: the start time is the kernel's fingerprint of the
process, so a later reader can tell the recorded process from an unrelated one that reused its
pid. See README.md for the format, the identity rules and platform support.

Two backends implement one API: the Cython extension ``shimpid._speedups`` and the pure-Python
``shimpid._pure``. The extension is used unless ``SHIMPID_PURE_PYTHON`` is set to a value other
than ``0``, or the interpreter is not CPython; ``BACKEND`` says which one runs.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ._common import (
    PID_RECORD_MAX_BYTES,
    Absent,
    Legacy,
    ProcessIdentity,
    StorageError,
    Verified,
)

__all__ = [
    "BACKEND",
    "PID_RECORD_MAX_BYTES",
    "Absent",
    "Legacy",
    "PidFileReader",
    "PidFileWriter",
    "PidRecord",
    "ProcessIdentity",
    "StorageError",
    "Verified",
    "is_process_alive",
    "process_start_time",
]

__version__ = "0.1.0"

BACKEND: str

if TYPE_CHECKING:
    from ._pure import (
        PidFileReader,
        PidFileWriter,
        PidRecord,
        is_process_alive,
        process_start_time,
    )
elif os.environ.get("SHIMPID_PURE_PYTHON", "0") not in ("", "0") or (
    sys.implementation.name != "cpython"
):
    from ._pure import (
        PidFileReader,
        PidFileWriter,
        PidRecord,
        is_process_alive,
        process_start_time,
    )

    BACKEND = "python"
else:
    try:
        from ._speedups import (
            PidFileReader,
            PidFileWriter,
            PidRecord,
            is_process_alive,
            process_start_time,
        )

        BACKEND = "cython"
    except ImportError:  # not built here (Windows, no compiler): the fallback is the same API
        from ._pure import (
            PidFileReader,
            PidFileWriter,
            PidRecord,
            is_process_alive,
            process_start_time,
        )

        BACKEND = "python"
