"""Checked by mypy --strict (the lint): what a user's type checker must accept."""

from __future__ import annotations

from typing import Literal, NoReturn

import shimpid
from shimpid import Absent, Legacy, Verified


def assert_never(value: NoReturn) -> NoReturn:  # typing.assert_never, before 3.11
    raise AssertionError(value)


def describe(reader: shimpid.PidFileReader) -> str:
    """An exhaustive match on a verdict: the type checker proves no case is missing."""
    match reader.process_identity():
        case Verified(pid=pid):
            return f"verified {pid}"
        case Legacy(pid=pid):
            return f"legacy {pid}"
        case Absent():
            return "absent"
        case other:
            assert_never(other)


backend: Literal["cython", "python"] = shimpid.BACKEND
