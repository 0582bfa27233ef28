"""``spawn`` is typed as typeshed types ``Popen``: checked by ``mypy --strict`` (pyproject)."""

from __future__ import annotations

import subprocess
from typing import Any

from typing_extensions import assert_type

import shimpid


def children(flag: bool) -> None:
    assert_type(shimpid.spawn(["true"], "/run/x.pid"), subprocess.Popen[bytes])
    assert_type(shimpid.spawn(["true"], "/run/x.pid", text=False), subprocess.Popen[bytes])
    assert_type(shimpid.spawn(["true"], "/run/x.pid", text=True), subprocess.Popen[str])
    assert_type(shimpid.spawn(["true"], "/run/x.pid", encoding="utf-8"), subprocess.Popen[str])
    assert_type(shimpid.spawn(["true"], "/run/x.pid", errors="replace"), subprocess.Popen[str])
    assert_type(
        shimpid.spawn(["true"], "/run/x.pid", universal_newlines=True), subprocess.Popen[str]
    )
    assert_type(shimpid.spawn(["true"], "/run/x.pid", text=flag), subprocess.Popen[Any])
    child = shimpid.spawn(["cat"], "/run/x.pid", stdin=subprocess.PIPE, text=True)
    out, _ = child.communicate("line")
    assert_type(out, str)
