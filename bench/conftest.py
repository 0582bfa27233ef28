"""Benchmark harness: both backends side by side, the C floor, and a summary of the ratios.

Every benchmark takes ``impl`` (the pure module, then the Cython one, each imported directly: a
missing extension fails the run) and tags itself with ``operation``, so the summary at the end can
pair the two backends and divide by the floor measured in the same run.

``--short`` (what CI runs) takes few rounds: it proves the benchmark code works, and its figures
are rough. No timing ever fails the run; missed targets are printed, not asserted.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, ".build")
# Where pid files go: tmpfs, and the disk the repository sits on (ext4 behaves very differently).
PLACES = {"tmpfs": "/dev/shm", "disk": BUILD}

# operation -> the floor (floor.c's name) it is compared with
FLOOR_OF = {
    "current()": "current",
    "write() in place [tmpfs]": "tmpfs write_in_place",
    "write() in place [disk]": "disk write_in_place",
    "write() atomic [tmpfs]": "tmpfs write_rename",
    "write() atomic [disk]": "disk write_rename",
    "read()": "tmpfs read",
    "process_identity() Verified": "tmpfs process_identity",
    "process_identity() Absent": "tmpfs process_identity",
    "is_process_alive()": "is_process_alive",
    "process_start_time()": "process_start_time",
}

# (description, check(results) -> (measured, ok)); results[operation][backend] = seconds
TARGETS = [
    ("decode: Cython >= 12x faster than pure",
     lambda r: _speedup(r, "decode() two-line"), lambda v: v >= 12),
    ("decode: Cython <= 2x constructing the same PidRecord",
     lambda r: r["decode() two-line"]["cython"] / r["PidRecord(pid, start_time)"]["cython"],
     lambda v: v <= 2),
    ("encode: Cython >= 4x faster than pure",
     lambda r: _speedup(r, "encode()"), lambda v: v >= 4),
    ("encode: Cython / returning 20 new bytes (bytes.upper(): the interpreter's floor)",
     lambda r: r["encode()"]["cython"] / r["baseline: 20 new bytes"]["baseline"],
     lambda v: v <= 1.25),
    ("current(): Cython <= 1.10x floor",
     lambda r: _floor_ratio(r, "current()", "cython"), lambda v: v <= 1.10),
    ("write() in place [tmpfs]: Cython <= 1.10x floor",
     lambda r: _floor_ratio(r, "write() in place [tmpfs]", "cython"), lambda v: v <= 1.10),
    ("write() in place [disk]: Cython <= 1.10x floor",
     lambda r: _floor_ratio(r, "write() in place [disk]", "cython"), lambda v: v <= 1.10),
    ("process_identity(): Cython <= 1.20x floor",
     lambda r: _floor_ratio(r, "process_identity() Verified", "cython"), lambda v: v <= 1.20),
]
for _how in ("shimpid.spawn", "shimpid.spawn, prepared writer"):
    TARGETS.append((f"{_how} at 1 GiB: <= 1.10x plain Popen",
                    (lambda how: lambda r: SPAWNS[how, "1 GiB"] / SPAWNS["Popen", "1 GiB"])(_how),
                    lambda v: v <= 1.10))
for _operation in FLOOR_OF:
    if "atomic" not in _operation:  # the pure backend keeps rename(); see the README
        TARGETS.append((f"{_operation}: pure <= 1.5x floor",
                        (lambda op: lambda r: _floor_ratio(r, op, "pure"))(_operation),
                        lambda v: v <= 1.5))

FLOORS: dict[str, float] = {}


def _speedup(results, operation):
    return results[operation]["pure"] / results[operation]["cython"]


def _floor_ratio(results, operation, backend):
    return results[operation][backend] / FLOORS[FLOOR_OF[operation]]


def pytest_addoption(parser):
    parser.addoption("--short", action="store_true",
                     help="few rounds: check the benchmark code runs (CI), figures are rough")


def pytest_configure(config):
    # Runs before pytest-benchmark reads its options (its pytest_configure is trylast).
    if config.getoption("short"):
        config.option.benchmark_max_time = 0.02
        config.option.benchmark_min_rounds = 3
        config.option.benchmark_warmup = False


def _build_floor() -> str:
    os.makedirs(BUILD, exist_ok=True)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise pytest.UsageError("no C compiler (cc) to build bench/floor.c")
    binary = os.path.join(BUILD, "floor")
    subprocess.run([compiler, "-O2", "-o", binary, os.path.join(HERE, "floor.c")], check=True)
    return binary


def _measure_floor(config) -> None:
    """Run floor.c in each place; keep each figure's best over every call in this session."""
    seconds = "0.05" if config.getoption("short") else "0.5"
    for place, directory in PLACES.items():
        out = subprocess.run([config._shimpid_floor, directory, seconds, str(os.getpid())],
                             check=True, capture_output=True, text=True).stdout
        for name, ns in json.loads(out).items():
            for key in (f"{place} {name}", name):  # place-independent ones: any place's best
                FLOORS[key] = min(FLOORS.get(key, float("inf")), ns * 1e-9)


def pytest_sessionstart(session):
    session.config._shimpid_floor = _build_floor()
    _measure_floor(session.config)


def pytest_sessionfinish(session):
    if getattr(session.config, "_shimpid_floor", None) and FLOORS:
        _measure_floor(session.config)  # again at the end: the machine's best moment counts


@pytest.fixture(params=["pure", "cython"])
def impl(request):
    return importlib.import_module("shimpid._pure" if request.param == "pure"
                                   else "shimpid._speedups")


# Each timed round makes several calls, as timeit does: operations that take nanoseconds would
# otherwise be swamped by pytest-benchmark's own per-call overhead (~30 ns), and system-call
# operations are timed as floor.c times them, in rounds of 10 back-to-back calls.
BATCH = 100
SLOW_BATCH = 10


def _batched(fn, args, calls):
    loop = range(calls)
    if not args:
        def run():
            for _ in loop:
                fn()
    elif len(args) == 1:
        (a,) = args

        def run():
            for _ in loop:
                fn(a)
    else:
        a, b = args

        def run():
            for _ in loop:
                fn(a, b)
    return run


@pytest.fixture
def measure(benchmark, impl):
    """``measure(operation, fn, *args, fast=False)``: benchmark fn(*args), tagged for the summary.

    Rounds of BATCH calls if ``fast`` (the operation takes nanoseconds), else SLOW_BATCH.
    Returns fn(*args), for the caller to check.
    """
    backend = "pure" if impl.__name__.endswith("_pure") else "cython"

    def run(operation, fn, *args, fast=False):
        calls = BATCH if fast else SLOW_BATCH
        benchmark.group = f"{operation} (x{calls} per round)"
        benchmark.extra_info.update(operation=operation, backend=backend, calls=calls)
        benchmark(_batched(fn, args, calls))
        return fn(*args)

    return run


def _fmt(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    return f"{seconds * 1e6:.2f} us"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    results: dict[str, dict[str, float]] = {}
    for bench in session.benchmarks:
        info = bench.extra_info
        if bench.stats and "operation" in info:
            results.setdefault(info["operation"], {})[info["backend"]] = (
                bench.stats.median / info["calls"])
    write = terminalreporter.write_line
    write("")
    write(f"shimpid benchmark summary ({'short run: rough' if config.getoption('short') else 'full run'}"
          f"; median per call; {_machine()})")
    header = f"{'operation':34} {'cython':>10} {'pure':>10} {'speedup':>8} {'cy/floor':>9} " \
             f"{'pure/floor':>10} {'floor':>10}"
    write(header)
    write("-" * len(header))
    for operation, by in results.items():
        if "baseline" in by:
            write(f"{operation:34} {_fmt(by['baseline']):>10}")
            continue
        cy, py = by.get("cython"), by.get("pure")
        floor = FLOORS.get(FLOOR_OF.get(operation, ""), None)
        cells = [
            _fmt(cy) if cy else "-", _fmt(py) if py else "-",
            f"{py / cy:.1f}x" if cy and py else "-",
            f"{cy / floor:.2f}" if cy and floor else "-",
            f"{py / floor:.2f}" if py and floor else "-",
            _fmt(floor) if floor else "-",
        ]
        write(f"{operation:34} {cells[0]:>10} {cells[1]:>10} {cells[2]:>8} {cells[3]:>9} "
              f"{cells[4]:>10} {cells[5]:>10}")
    write("")
    write("floor, write with renameat2(RENAME_EXCHANGE) + unlink: "
          f"tmpfs {_fmt(FLOORS['tmpfs write_exchange'])}, disk {_fmt(FLOORS['disk write_exchange'])}"
          f" (rename over: tmpfs {_fmt(FLOORS['tmpfs write_rename'])},"
          f" disk {_fmt(FLOORS['disk write_rename'])})")
    _spawn_summary(write, session.benchmarks)
    write("")
    write("targets:")
    for description, measure, passes in TARGETS:
        try:
            value = measure(results)
        except (KeyError, ZeroDivisionError):
            write(f"  [ n/a ] {description}: not measured in this run")
            continue
        write(f"  [{' ok  ' if passes(value) else 'MISSED'}] {description}: {value:.2f}")


SPAWN_ORDER = ["Popen", "shimpid.spawn", "shimpid.spawn, prepared writer",
               "Popen(preexec_fn=write_current)",
               "asyncio.create_subprocess_exec", "shimpid.create_subprocess_exec"]
SPAWNS: dict[tuple[str, str], float] = {}  # (how, parent) -> seconds per spawn


def _spawn_summary(write, benchmarks) -> None:
    for bench in benchmarks:
        info = bench.extra_info
        if bench.stats and "spawn" in info:
            SPAWNS[info["spawn"], info["parent"]] = bench.stats.median
    parents = sorted({parent for _, parent in SPAWNS})
    if not parents:
        return
    write("")
    write("spawns per second of /bin/true (median), by parent size:")
    write(f"{'':34}" + "".join(f"{p:>22}" for p in parents))
    for how in SPAWN_ORDER:
        cells = []
        for p in parents:
            t = SPAWNS.get((how, p))
            base = SPAWNS.get(("asyncio.create_subprocess_exec" if "create" in how else "Popen", p))
            cells.append("-" if t is None else f"{1 / t:8.0f}/s {t * 1e3:6.2f} ms"
                         + (f" {t / base:4.2f}x" if base else ""))
        write(f"{how:34}" + "".join(f"{c:>22}" for c in cells))
    spawn, record = FLOORS.get("tmpfs spawn"), FLOORS.get("tmpfs spawn_record")
    if spawn and record:
        write(f"floor (C, posix_spawn from a small parent): spawn {_fmt(spawn)}, spawn + the same "
              f"record on tmpfs {_fmt(record)} ({record / spawn:.2f}x)")


def _machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"CPython {platform.python_version()}, {datetime.date.today().isoformat()}"
            f"{', ' + sys.implementation.name if sys.implementation.name != 'cpython' else ''}")
