"""Picks the backend: the Cython extension unless told otherwise or unable.

``SHIMPID_PURE_PYTHON`` set to anything but ``0`` selects the pure-Python backend, as does an
interpreter other than CPython. Without a built extension (Windows, no compiler) the pure backend
is the fallback: the same API, and ``BACKEND`` says which one runs.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

__all__ = ["BACKEND", "PidFileReader", "PidFileWriter", "PidRecord", "is_process_alive",
           "process_start_time"]

BACKEND: str

if TYPE_CHECKING:
    from ._pure import PidFileReader, PidFileWriter, PidRecord, is_process_alive, process_start_time
elif os.environ.get("SHIMPID_PURE_PYTHON", "0") not in ("", "0") or (
    sys.implementation.name != "cpython"
):
    from ._pure import PidFileReader, PidFileWriter, PidRecord, is_process_alive, process_start_time

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
    except ImportError:
        from ._pure import (
            PidFileReader,
            PidFileWriter,
            PidRecord,
            is_process_alive,
            process_start_time,
        )

        BACKEND = "python"
