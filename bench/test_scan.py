"""shimpid.scan() over a run directory of many pid files, against a C floor making the same
system calls, and how its cost per file grows with the number of files.

A tenth of the files name live processes (ten children, each named by many files); the rest
name processes that have exited: what a spawner restarting over its run directory meets.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import pytest

import conftest
import shimpid
from conftest import (
    BASELINES,
    CLEANS,
    PLACES,
    SCAN_FLOOR_PER_FILE,
    SCAN_PER_FILE,
    TARGETS,
    alternate,
    backend_of,
    baseline_target,
    rounds,
    timed,
)
from shimpid import _cli, _rundir

TARGETS.append(
    baseline_target(
        # relaxed from 1.3x on purpose (issue 19): one implementation of policy over C reads
        "scan, 10,000 files: Cython <= 1.5x floor per file",
        "scan 10000 files / floor [cython]",
        1.5,
    )
)
for _backend in ("cython", "pure"):
    TARGETS.append(
        baseline_target(
            f"shimpid ls, 100,000 files: {_backend} <= 2x scan()",
            f"ls 100000 files / scan [{_backend}]",
            2.0,
        )
    )
SIZES = [100, 1000, 10_000, 100_000]
GROWTH = SCAN_PER_FILE  # (backend, files) -> seconds per file, kept for results.json


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Ten records of live children and ten of exited ones, as written by write_for()."""
    where = tmp_path_factory.mktemp("templates")
    live = [subprocess.Popen(["sleep", "600"]) for _ in range(10)]
    dead = [subprocess.Popen(["true"]) for _ in range(10)]
    records = []
    for n, child in enumerate(live + dead):
        shimpid.PidFileWriter.at(where / f"{n}.pid").write_for(child.pid)
        records.append((where / f"{n}.pid").read_bytes())
    for child in dead:
        child.wait()
    yield records[:10], records[10:]
    for child in live:
        child.kill()
        child.wait()


def run_dir(templates, files: int) -> str:
    live, dead = templates
    directory = tempfile.mkdtemp(prefix="shimpid-scan-", dir=PLACES["tmpfs"])
    for n in range(files):
        data = live[n % 10] if n % 10 == 0 else dead[n % 10]
        with open(os.path.join(directory, f"box-{n:06d}.pid"), "wb") as f:
            f.write(data)
    return directory


def scan_floor(directory: str) -> float:
    files = ctypes.c_int()
    seconds = conftest.FLOOR.floor_scan(directory.encode(), ctypes.byref(files)) * 1e-9
    return seconds


@pytest.mark.parametrize("files", SIZES)
def test_scan(impl, templates, files, pytestconfig, monkeypatch):
    if files == 100_000 and pytestconfig.getoption("short"):
        pytest.skip("a short run scans up to 10,000 files")
    monkeypatch.setattr(_rundir, "_backend", impl)
    directory = run_dir(templates, files)
    try:
        verdicts = list(shimpid.scan(directory))
        assert len(verdicts) == files
        assert sum(type(v) is shimpid.Verified for _, v in verdicts) == files // 10
        backend = backend_of(impl)
        count = max(rounds(pytestconfig, max(2_000_000 // files, 20)), 3)
        python = timed(lambda: list(shimpid.scan(directory)))
        floors: list[float] = []

        def floor() -> float:
            floors.append(scan_floor(directory))
            return floors[-1]

        ratio = alternate(python, floor, count)
        GROWTH[backend, files] = min(python() for _ in range(3)) / files
        SCAN_FLOOR_PER_FILE[files] = statistics.median(floors) / files
        BASELINES[f"scan {files} files / floor [{backend}]"] = ratio
    finally:
        shutil.rmtree(directory)


def test_scan_growth_summary():
    """Prints the cost per file at each size (the summary shows the ratios)."""
    for (backend, files), seconds in sorted(GROWTH.items()):
        print(f"\nscan, {backend}: {files} files, {seconds * 1e6:.2f} us per file")


def test_ls_against_scan(impl, templates, pytestconfig, monkeypatch):
    """``shimpid ls DIR`` (each file read once, its lock probed on the same descriptor, a row
    printed) against ``list(scan(DIR))`` of the same directory, alternated; and ``clean`` of as
    many stale files, timed once. 100,000 files (a short run: 10,000)."""
    files = 10_000 if pytestconfig.getoption("short") else 100_000
    for module in (_rundir, _cli):
        monkeypatch.setattr(module, "_backend", impl)
    backend = backend_of(impl)
    directory = run_dir(templates, files)
    try:
        with open(os.devnull, "w") as null:

            def ls() -> None:
                with contextlib.redirect_stdout(null):
                    assert _cli.main(["ls", directory]) == 0

            ratio = alternate(
                timed(ls), timed(lambda: list(shimpid.scan(directory))), rounds(pytestconfig, 7)
            )
        BASELINES[f"ls {files} files / scan [{backend}]"] = ratio
        stale = templates[1][1]
        for name in os.listdir(directory):
            with open(os.path.join(directory, name), "wb") as f:
                f.write(stale)
        start = time.perf_counter()
        removed = shimpid.clean(directory)
        seconds = time.perf_counter() - start
        assert len(removed) == files and os.listdir(directory) == []
        print(
            f"\nclean, {backend}: {files} stale files in {seconds:.2f} s "
            f"({seconds / files * 1e6:.1f} us per file)"
        )
        BASELINES[f"clean {files} stale files, seconds [{backend}]"] = seconds
        CLEANS[backend] = (files, seconds)
    finally:
        shutil.rmtree(directory)
