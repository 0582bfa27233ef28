"""pytest plugin for .ci/asan: one faulthandler watchdog for the whole run, in place of pytest's
one per test (``-o faulthandler_timeout=0``; .ci/asan says why). If the run is still going after
SHIMPID_RUN_DEADLINE seconds, every thread's stack goes to the file SHIMPID_RUN_STACKS and the
run exits: a hang fails the leg with where it hung, before the leg's own limit kills it unseen.

Use: ``PYTHONPATH=.ci pytest -p one_watchdog`` (a file, not stderr: pytest captures stderr while
a test runs, and the capture would go with the process). A child forked while it is armed must
end with ``os._exit()``: a normal exit there waits for the watchdog thread, which the child
does not have.
"""

from __future__ import annotations

import faulthandler
import os
import time

import pytest

_stacks = None  # kept open for the run: faulthandler writes to its descriptor
_deadline = 0.0


def _arm() -> None:
    faulthandler.dump_traceback_later(
        max(_deadline - time.monotonic(), 1.0), exit=True, file=_stacks
    )


def pytest_configure(config: pytest.Config) -> None:
    global _stacks, _deadline
    _stacks = open(os.environ["SHIMPID_RUN_STACKS"], "w")  # noqa: SIM115 (open for the run)
    _deadline = time.monotonic() + float(os.environ["SHIMPID_RUN_DEADLINE"])
    _arm()


@pytest.hookimpl(trylast=True)
def pytest_exception_interact() -> None:
    # pytest's faulthandler plugin cancels any watchdog as a test fails (its hook runs first):
    # armed again, for what is left of the run (a thread stopped and started, as seldom as
    # tests fail).
    _arm()


def pytest_unconfigure(config: pytest.Config) -> None:
    faulthandler.cancel_dump_traceback_later()
