"""pytest plugin for .ci/asan: one faulthandler watchdog for the whole run, in place of pytest's
one per test (``-o faulthandler_timeout=0``; .ci/asan says why). If the run is still going after
SHIMPID_RUN_DEADLINE seconds, every thread's stack goes to the file SHIMPID_RUN_STACKS and the
run exits: a hang fails the leg with where it hung, before the leg's own limit kills it unseen.

Use: ``PYTHONPATH=.ci pytest -p one_watchdog`` (a file, not stderr: pytest captures stderr while
a test runs, and the capture would go with the process).
"""

from __future__ import annotations

import faulthandler
import os

import pytest

_stacks = None  # kept open for the run: faulthandler writes to its descriptor


def pytest_configure(config: pytest.Config) -> None:
    global _stacks
    _stacks = open(os.environ["SHIMPID_RUN_STACKS"], "w")  # noqa: SIM115 (open for the run)
    faulthandler.dump_traceback_later(
        float(os.environ["SHIMPID_RUN_DEADLINE"]), exit=True, file=_stacks
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    faulthandler.cancel_dump_traceback_later()
