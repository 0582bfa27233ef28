"""What importing shimpid costs, against importing subprocess, in fresh interpreters.

Every spawner imports shimpid, and a CLI run from a shell loop pays it on every call. Each side
is timed by ``python -X importtime`` (the cumulative time of the top-level import, so the
interpreter's own start-up is left out), alternating the two, with the modules' .pyc files in
place as an installed package has them.
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import sys

import shimpid
from conftest import BASELINES, IMPORTS, TARGETS, baseline_target, rounds

TARGETS.append(
    baseline_target(
        "import shimpid: <= 1.3x import subprocess", "import shimpid / import subprocess", 1.3
    )
)


def import_time(module: str) -> float:
    """Seconds ``import module`` takes in a fresh interpreter (its cumulative importtime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env=dict(os.environ, SHIMPID_PURE_PYTHON="0"),
    )
    last = [line for line in result.stderr.splitlines() if line.rstrip().endswith(f"| {module}")]
    return int(last[-1].split("|")[1]) * 1e-6


def test_import_cost(pytestconfig):
    compileall.compile_dir(os.path.dirname(shimpid.__file__), quiet=1)  # as pip leaves it
    times = {"shimpid": [], "subprocess": []}
    ratios = []
    for n in range(rounds(pytestconfig, 200)):
        order = ("shimpid", "subprocess") if n % 2 else ("subprocess", "shimpid")
        pair = {module: import_time(module) for module in order}
        for module, seconds in pair.items():
            times[module].append(seconds)
        ratios.append(pair["shimpid"] / pair["subprocess"])
    BASELINES["import shimpid / import subprocess"] = statistics.median(ratios)
    IMPORTS.update((module, statistics.median(seconds)) for module, seconds in times.items())
    print(
        f"\nimport shimpid {statistics.median(times['shimpid']) * 1e3:.2f} ms, import "
        f"subprocess {statistics.median(times['subprocess']) * 1e3:.2f} ms"
    )
