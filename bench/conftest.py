"""Benchmark harness: both backends side by side, the C floor, and a summary of the ratios.

Every benchmark takes ``impl`` (the pure module, then the Cython one, each imported directly: a
missing extension fails the run) and tags itself with ``operation``, so the summary at the end can
pair the two backends. pytest-benchmark times each operation (the absolute figures); each ratio a
target is about is then measured by alternating short batches of the two things compared (the
operation and its C floor, two ways of spawning, ...) and taking the median of the per-pair
ratios: this shared VM's speed drifts by half within seconds, and both sides of a pair see the
same moment.

``--short`` (what CI runs) takes few rounds: it proves the benchmark code works, and its figures
are rough. No timing ever fails the run; missed targets are printed, not asserted.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import importlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import pytest

from shimpid import _reader

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, ".build")
# Where pid files go: tmpfs, and the disk the repository sits on (ext4 behaves very differently).
PLACES = {"tmpfs": "/dev/shm", "disk": BUILD}

# operation -> (floor.c's operation, place) it is compared with
FLOOR_OF = {
    "current()": ("current", "tmpfs"),
    "write() in place [tmpfs]": ("write_in_place", "tmpfs"),
    "write() in place [disk]": ("write_in_place", "disk"),
    "write() atomic [tmpfs]": ("write_rename", "tmpfs"),
    "write() atomic [disk]": ("write_rename", "disk"),
    "read()": ("read", "tmpfs"),
    "process_identity() Verified": ("process_identity", "tmpfs"),
    "process_identity() Absent": ("process_identity", "tmpfs"),
    "process_identity() Verified, start time only": ("process_identity_start_time", "tmpfs"),
    "write_current() [tmpfs]": ("write_current", "tmpfs"),
    "write_for(pid) [tmpfs]": ("write_for", "tmpfs"),
    "is_process_alive()": ("is_process_alive", "tmpfs"),
    "process_start_time()": ("process_start_time", "tmpfs"),
    "PidFileLock acquire() + release() [tmpfs]": ("lock", "tmpfs"),
}
# Further comparisons, reported beside the floor: operation -> (label, floor.c's operation)
ALSO_AGAINST = {
    "process_identity() Verified": (
        "shimpid 0.1's floor (kill + /proc stat)",
        "process_identity_proc",
    ),
    "write() atomic [disk]": ("renameat2(RENAME_EXCHANGE) + unlink", "write_exchange"),
}

# Ratios measured by alternation: RATIOS[operation][backend] = median ratio to its floor, and
# FLOOR_NS[operation] = median floor per call; BASELINES[name] = other alternated ratios.
RATIOS: dict[str, dict[str, float]] = {}
FLOOR_NS: dict[str, float] = {}
BASELINES: dict[str, float] = {}
# Figures the other benchmarks print as they go, kept for results.json as well:
SCAN_PER_FILE: dict[tuple[str, int], float] = {}  # (backend, files) -> seconds per file
SCAN_FLOOR_PER_FILE: dict[int, float] = {}  # files -> the C floor's median seconds per file
CLEANS: dict[str, tuple[int, float]] = {}  # backend -> (stale files removed, seconds)
STORMS: dict[tuple[str, str, str], dict[str, int]] = {}  # (backend, mode, place) -> read counts
IMPORTS: dict[str, float] = {}  # module -> median seconds of its import in a fresh interpreter

COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda value, limit: value <= limit,
    ">=": lambda value, limit: value >= limit,
    "<": lambda value, limit: value < limit,
}


@dataclasses.dataclass(frozen=True)
class Target:
    """``value_of()`` (the figure named ``figure``) compared with ``limit`` by ``comparison``."""

    description: str
    value_of: Callable[[], float]
    comparison: str  # a key of COMPARE
    limit: float
    figure: str  # what value_of() reads, for results.json: "alternated: <name>" or "floor: ..."
    beside: str | None = None  # an alternated figure shown with it: its floor where one exists

    def passes(self, value: float) -> bool:
        return COMPARE[self.comparison](value, self.limit)


def floor_target(label: str, operation: str, backend: str, limit: float) -> Target:
    """``backend`` runs ``operation`` in at most ``limit`` times its floor's time."""
    who = "Cython" if backend == "cython" else backend
    return Target(
        f"{label}: {who} <= {limit:.2f}x floor",
        lambda: RATIOS[operation][backend],
        "<=",
        limit,
        f"floor: {operation} [{backend}]",
    )


def baseline_target(
    description: str, name: str, limit: float, comparison: str = "<=", beside: str | None = None
) -> Target:
    """The alternated ratio ``BASELINES[name]`` is at most ``limit`` (or as ``comparison`` says);
    ``beside``, the alternated ratio shown with it."""
    return Target(
        description, lambda: BASELINES[name], comparison, limit, f"alternated: {name}", beside
    )


TARGETS: list[Target] = [
    baseline_target(
        "decode: Cython >= 12x faster than pure", "decode() two-line: pure / cython", 12, ">="
    ),
    baseline_target(
        "decode: Cython <= 2x constructing the same PidRecord",
        "decode() two-line / PidRecord(pid, start_time) [cython]",
        2,
    ),
    # The ">= 4x pure" encode target was ill-posed once the pure backend got fast: encode is held
    # against the interpreter's own floor, a builtin method returning new bytes of its size.
    baseline_target(
        "encode: Cython <= 1.3x a builtin returning 20 new bytes (bytes.upper())",
        "encode() / bytes.upper() [cython]",
        1.3,
    ),
    floor_target("current()", "current()", "cython", 1.10),
    floor_target("write() in place [tmpfs]", "write() in place [tmpfs]", "cython", 1.10),
    floor_target("write() in place [disk]", "write() in place [disk]", "cython", 1.10),
    # identity, lock and scan relaxed on purpose (issue 19: 1.20, 1.20, 1.30 before): a few
    # microseconds off the hot path for one implementation of policy
    floor_target("process_identity(), pidfs", "process_identity() Verified", "cython", 1.30),
    baseline_target(
        "process_identity(), pidfs: Cython / shimpid 0.1's /proc-based floor < 1",
        "process_identity() Verified / process_identity_proc [cython]",
        1,
        "<",
    ),
    floor_target("write_current()", "write_current() [tmpfs]", "cython", 1.10),
    floor_target("write_for()", "write_for(pid) [tmpfs]", "cython", 1.10),
    floor_target(
        "PidFileLock acquire() + release(), uncontended",
        "PidFileLock acquire() + release() [tmpfs]",
        "cython",
        1.50,
    ),
]
for _how in ("shimpid.spawn", "shimpid.spawn, prepared writer"):
    TARGETS.append(
        baseline_target(f"{_how} at 1 GiB: <= 1.10x plain Popen", f"{_how} / Popen [1 GiB]", 1.10)
    )
for _operation in FLOOR_OF:
    # The pure backend keeps rename() (see the documentation). The lock is one Python code over
    # either backend: its Cython row is the target, its pure row the same code again.
    if "atomic" not in _operation and "PidFileLock" not in _operation:
        TARGETS.append(floor_target(_operation, _operation, "pure", 1.5))


def pytest_addoption(parser):
    parser.addoption(
        "--short",
        action="store_true",
        help="few rounds: check the benchmark code runs (CI), figures are rough",
    )
    parser.addoption(
        "--publish",
        action="store_true",
        help="write results.json and the pictures into bench/, for the documentation (a full "
        "run; otherwise they go to bench/.build/)",
    )


def _published(config) -> bool:
    # Only a full run may replace what the documentation shows (and the README's figures, which
    # tests/test_docs.py holds to it); a short or partial one never does by accident.
    return config.getoption("publish") and not config.getoption("short")


def pytest_configure(config):
    # Runs before pytest-benchmark reads its options (its pytest_configure is trylast).
    if config.getoption("short"):
        config.option.benchmark_max_time = 0.02
        config.option.benchmark_min_rounds = 3
        config.option.benchmark_warmup = False


def _build_floor() -> ctypes.CDLL:
    os.makedirs(BUILD, exist_ok=True)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise pytest.UsageError("no C compiler (cc) to build bench/floor.c")
    library = os.path.join(BUILD, "libfloor.so")
    subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-o", library, os.path.join(HERE, "floor.c")],
        check=True,
    )
    lib = ctypes.CDLL(library)
    lib.floor_prepare.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.floor_time.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.floor_time.restype = ctypes.c_double
    lib.floor_scan.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    lib.floor_scan.restype = ctypes.c_double
    lib.floor_record.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    return lib


FLOOR: ctypes.CDLL | None = None


STARTED: list[float] = []  # the session's time.monotonic() at its start


def pytest_sessionstart(session):
    global FLOOR
    STARTED.append(time.monotonic())
    FLOOR = _build_floor()


def pytest_sessionfinish(session):
    if FLOOR is not None:
        FLOOR.floor_finish()


def rounds(config, full: int) -> int:
    return max(full // 40, 5) if config.getoption("short") else full


def alternate(first: Callable[[], float], second: Callable[[], float], count: int) -> float:
    """The median of ``first() / second()`` over ``count`` alternations (each returns seconds)."""
    return median_ratio(*rotate([first, second], count))


def rotate(runs: list[Callable[[], float]], count: int) -> list[list[float]]:
    """``count`` rounds, each calling every run once (each returns seconds), the first of a round
    rotating so that none always runs right after another's caches: each run's times, by round."""
    times: list[list[float]] = [[] for _ in runs]
    for n in range(count):
        for k in range(len(runs)):
            i = (n + k) % len(runs)
            times[i].append(runs[i]())
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    """The median of the ratios of a's times to b's, round by round."""
    return statistics.median([x / y for x, y in zip(a, b, strict=True)])


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return run


def against_floor(
    batch: Callable[[], None], name: str, place: str, calls: int, count: int
) -> tuple[float, float]:
    """(median ratio of ``batch`` to ``calls`` calls of floor operation ``name``, the floor's
    median per call)."""
    assert FLOOR is not None
    FLOOR.floor_prepare(PLACES[place].encode(), os.getpid())
    floors = []

    def floor() -> float:
        ns = FLOOR.floor_time(name.encode(), calls)
        assert ns > 0, f"floor.c has no operation {name!r}"
        floors.append(ns / calls)
        return ns * 1e-9

    floor()  # warm up
    ratio = alternate(timed(batch), floor, count)
    return ratio, statistics.median(floors) * 1e-9


@pytest.fixture(params=["pure", "cython"])
def impl(request, monkeypatch):
    module = importlib.import_module(
        "shimpid._pure" if request.param == "pure" else "shimpid._speedups"
    )
    # The one PidFileReader (shimpid._reader) reads through the backend being measured.
    monkeypatch.setattr(_reader, "_backend", module)
    return module


def backend_of(impl) -> str:
    return "pure" if impl.__name__.endswith("_pure") else "cython"


# Each timed round makes several calls, as timeit does: operations that take nanoseconds would
# otherwise be swamped by pytest-benchmark's own per-call overhead (~30 ns), and system-call
# operations are timed in rounds of 10 back-to-back calls, as the floor is.
BATCH = 100
SLOW_BATCH = 10


def batched(fn, args, calls):
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
def measure(benchmark, impl, request):
    """``measure(operation, fn, *args, fast=False)``: benchmark fn(*args), tagged for the summary;
    for an operation with a floor, also its ratio to the floor, by alternation.

    Rounds of BATCH calls if ``fast`` (the operation takes nanoseconds), else SLOW_BATCH.
    Returns fn(*args), for the caller to check.
    """
    backend = backend_of(impl)

    def run(operation, fn, *args, fast=False):
        calls = BATCH if fast else SLOW_BATCH
        batch = batched(fn, args, calls)
        benchmark.group = f"{operation} (x{calls} per round)"
        benchmark.extra_info.update(operation=operation, backend=backend, calls=calls)
        benchmark(batch)
        if operation in FLOOR_OF:
            name, place = FLOOR_OF[operation]
            ratio, floor = against_floor(batch, name, place, calls, rounds(request.config, 1000))
            RATIOS.setdefault(operation, {})[backend] = ratio
            FLOOR_NS[operation] = floor
            if operation in ALSO_AGAINST:
                other = ALSO_AGAINST[operation][1]
                BASELINES[f"{operation} / {other} [{backend}]"] = against_floor(
                    batch, other, place, calls, rounds(request.config, 1000)
                )[0]
        return fn(*args)

    return run


def _fmt(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    return f"{seconds * 1e6:.2f} us"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    benchmarks = session.benchmarks if session is not None else []
    if not benchmarks and not BASELINES:
        return
    results: dict[str, dict[str, float]] = {}
    for bench in benchmarks:
        info = bench.extra_info
        if bench.stats and "operation" in info:
            results.setdefault(info["operation"], {})[info["backend"]] = (
                bench.stats.median / info["calls"]
            )
    write = terminalreporter.write_line
    write("")
    depth = "short run: rough" if config.getoption("short") else "full run"
    write(f"shimpid benchmark summary ({depth}; median per call; {_machine()})")
    write("  speedup: pure / Cython medians; cy/floor, pure/floor: medians of alternated ratios")
    header = (
        f"{'operation':46} {'cython':>10} {'pure':>10} {'speedup':>8} {'cy/floor':>9} "
        f"{'pure/floor':>10} {'floor':>10}"
    )
    write(header)
    write("-" * len(header))
    for operation, by in results.items():
        if "baseline" in by:
            write(f"{operation:46} {_fmt(by['baseline']):>10}")
            continue
        cy, py = by.get("cython"), by.get("pure")
        ratios = RATIOS.get(operation, {})
        floor = FLOOR_NS.get(operation)
        cells = [
            _fmt(cy) if cy else "-",
            _fmt(py) if py else "-",
            f"{py / cy:.1f}x" if cy and py else "-",
            f"{ratios['cython']:.2f}" if "cython" in ratios else "-",
            f"{ratios['pure']:.2f}" if "pure" in ratios else "-",
            _fmt(floor) if floor else "-",
        ]
        write(
            f"{operation:46} {cells[0]:>10} {cells[1]:>10} {cells[2]:>8} {cells[3]:>9} "
            f"{cells[4]:>10} {cells[5]:>10}"
        )
    if BASELINES:
        write("")
        write("alternated ratios:")
        for name, value in BASELINES.items():
            write(f"  {name}: {value:.2f}")
    _spawn_summary(write, benchmarks)
    _pictures(write, config, results)
    _results_file(write, config, terminalreporter, results)
    write("")
    write("targets:")
    for target in TARGETS:
        value = _measured(target)
        if value is None:
            write(f"  [ n/a ] {target.description}: not measured in this run")
            continue
        also = BASELINES.get(target.beside) if target.beside else None
        write(
            f"  [{' ok  ' if target.passes(value) else 'MISSED'}] {target.description}: {value:.2f}"
            + ("" if also is None else f" (floor, in C: {also:.2f})")
        )


SPAWN_ORDER = [
    "Popen",
    "shimpid.spawn",
    "shimpid.spawn, prepared writer",
    "Popen(preexec_fn=write_current)",
    "asyncio.create_subprocess_exec",
    "shimpid.create_subprocess_exec",
]
SPAWNS: dict[tuple[str, str], float] = {}  # (how, parent) -> seconds per spawn
SPAWN_RSS: dict[tuple[str, str], int] = {}  # (how, parent) -> the parent's resident MiB


def _spawn_summary(write, benchmarks) -> None:
    for bench in benchmarks:
        info = bench.extra_info
        if bench.stats and "spawn" in info:
            SPAWNS[info["spawn"], info["parent"]] = bench.stats.median
            SPAWN_RSS[info["spawn"], info["parent"]] = info.get("rss_mib")
    parents = sorted({parent for _, parent in SPAWNS})
    if not parents:
        return
    write("")
    write("spawns per second of /bin/true (median), by parent size (ratios: alternated, above):")
    write(f"{'':34}" + "".join(f"{p:>20}" for p in parents))
    for how in SPAWN_ORDER:
        cells = []
        for p in parents:
            t = SPAWNS.get((how, p))
            cells.append("-" if t is None else f"{1 / t:8.0f}/s {t * 1e3:7.2f} ms")
        write(f"{how:34}" + "".join(f"{c:>20}" for c in cells))


def _pictures(write, config, results) -> None:
    """The documentation's pictures from a full run given --publish (into bench/); any other run
    draws them into bench/.build/, which proves the drawing code works without touching the
    committed ones."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        write("pictures: not drawn (matplotlib is not installed; tox -e bench installs it)")
        return
    import pictures

    directory = HERE if _published(config) else BUILD
    written = pictures.draw(directory, SPAWNS, results, FLOOR_NS, _machine())
    write(f"pictures: {', '.join(os.path.relpath(path, HERE) for path in written)}")


def _machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"CPython {platform.python_version()}, {datetime.date.today().isoformat()}"
        f"{', ' + sys.implementation.name if sys.implementation.name != 'cpython' else ''}"
    )


def _measured(target: Target) -> float | None:
    try:
        return target.value_of()
    except (KeyError, ZeroDivisionError):
        return None


# --- results.json: the summary's figures, for the documentation to read ----------------------


def _results_file(write, config, terminalreporter, results) -> None:
    """Writes results.json beside the pictures (bench/ with --publish, else bench/.build/):
    the figures printed above, as numbers, with sorted keys so that runs diff line by line."""
    directory = HERE if _published(config) else BUILD
    path = os.path.join(directory, "results.json")
    data = _results(config, terminalreporter, results)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".results-", suffix=".json.tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    write(f"results: {os.path.relpath(path, HERE)}")


def _figure(value: float | None, digits: int = 6) -> float | None:
    """``value`` to ``digits`` significant digits (None and non-finite values as None)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _ns(seconds: float | None) -> float | None:
    return None if seconds is None else _figure(seconds * 1e9)


def _results(config, terminalreporter, results) -> dict:
    outcomes = {
        outcome: len(terminalreporter.stats.get(outcome, []))
        for outcome in ("passed", "failed", "skipped", "error", "deselected")
    }
    return {
        "schema": 1,
        "run": _run(config, outcomes),
        "operations": _operations(results),
        "reference_timings": [
            {"name": operation, "ns": _ns(by["baseline"])}
            for operation, by in results.items()
            if "baseline" in by
        ],
        "alternated": {name: _figure(value) for name, value in BASELINES.items()},
        "targets": [_target(target) for target in TARGETS],
        "spawning": _spawning(),
        "scan": _scan(),
        "storm": _storm(),
        "import": _import(),
    }


def _run(config, outcomes) -> dict:
    return {
        "kind": "short" if config.getoption("short") else "full",
        "date": datetime.date.today().isoformat(),
        "duration_s": round(time.monotonic() - STARTED[0], 1) if STARTED else None,
        "summary_line": _machine(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "system": platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "cython": _cython_version(),
        "shimpid": _shimpid_version(),
        "filesystems": {place: _fstype(directory) for place, directory in PLACES.items()},
        "places": {place: _shown(directory) for place, directory in PLACES.items()},
        "pytest_args": list(config.invocation_params.args),
        "outcomes": outcomes,
        "batch": {"fast": BATCH, "slow": SLOW_BATCH},
    }


def _cython_version() -> str | None:
    """The Cython that built the extension: its module names its shared types' module
    ``_cython_X_Y_Z``. None when the extension cannot be found."""
    try:
        speedups = importlib.import_module("shimpid._speedups")
        with open(speedups.__file__, "rb") as f:
            found = re.search(rb"_cython_(\d+)_(\d+)_(\d+)", f.read())
    except (ImportError, OSError, TypeError):
        return None
    return ".".join(part.decode() for part in found.groups()) if found else None


def _shimpid_version() -> str | None:
    try:
        return importlib.import_module("shimpid").__version__
    except (ImportError, AttributeError):
        return None


def _shown(path: str) -> str:
    """``path`` relative to the repository when inside it (a committed file names no home)."""
    root = os.path.dirname(HERE)
    inside = os.path.commonpath([root, os.path.abspath(path)]) == root
    return os.path.relpath(path, root) if inside else path


def _fstype(path: str) -> str | None:
    """The file system type ``path`` is on (its longest mount point in mountinfo)."""
    path = os.path.realpath(path)
    best, fstype = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                point = fields[4].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype = point, fields[fields.index("-") + 1]
    except (OSError, ValueError, IndexError):
        return None
    return fstype


def _operations(results) -> list[dict]:
    rows = []
    for operation, by in results.items():
        if "baseline" in by:
            continue
        cy, py = by.get("cython"), by.get("pure")
        ratios = RATIOS.get(operation, {})
        floor_name, place = FLOOR_OF.get(operation, (None, None))
        also = []
        if operation in ALSO_AGAINST:
            label, other = ALSO_AGAINST[operation]
            also.append(
                {
                    "label": label,
                    "floor_operation": other,
                    "ratios": {
                        backend: _figure(BASELINES[f"{operation} / {other} [{backend}]"])
                        for backend in ("cython", "pure")
                        if f"{operation} / {other} [{backend}]" in BASELINES
                    },
                }
            )
        rows.append(
            {
                "name": operation,
                "place": place,
                "cython_ns": _ns(cy),
                "pure_ns": _ns(py),
                "speedup": _figure(py / cy) if cy and py else None,
                "cython_to_floor": _figure(ratios.get("cython")),
                "pure_to_floor": _figure(ratios.get("pure")),
                "floor_ns": _ns(FLOOR_NS.get(operation)),
                "floor_operation": floor_name,
                "also_against": also,
            }
        )
    return rows


def _target(target: Target) -> dict:
    value = _measured(target)
    met = None if value is None else target.passes(value)
    return {
        "description": target.description,
        "figure": target.figure,
        "comparison": target.comparison,
        "limit": target.limit,
        "measured": _figure(value),
        "met": met,
        "status": "n/a" if met is None else ("ok" if met else "MISSED"),
        "beside": None if target.beside is None else f"alternated: {target.beside}",
        "beside_measured": _figure(BASELINES.get(target.beside)) if target.beside else None,
    }


def _is_spawning(name: str) -> bool:
    return any(word in name for word in ("Popen", "spawn", "asyncio"))


def _spawning() -> dict:
    parents = sorted({parent for _, parent in SPAWNS})
    return {
        "parents": parents,
        "methods": [
            {
                "method": how,
                "by_parent": {
                    parent: {
                        "per_second": _figure(1 / SPAWNS[how, parent], 5),
                        "ms_per_spawn": _figure(SPAWNS[how, parent] * 1e3),
                        "rss_mib": SPAWN_RSS.get((how, parent)),
                    }
                    for parent in parents
                    if (how, parent) in SPAWNS
                },
            }
            for how in SPAWN_ORDER + sorted({how for how, _ in SPAWNS} - set(SPAWN_ORDER))
            if any(key[0] == how for key in SPAWNS)
        ],
        "ratios": [
            {"name": name, "value": _figure(value)}
            for name, value in BASELINES.items()
            if _is_spawning(name)
        ],
    }


def _scan() -> dict:
    sizes = sorted({files for _, files in SCAN_PER_FILE} | set(SCAN_FLOOR_PER_FILE))
    rows = []
    for files in sizes:
        row: dict = {"files": files, "floor_ns_per_file": _ns(SCAN_FLOOR_PER_FILE.get(files))}
        for backend in ("cython", "pure"):
            row[backend] = {
                "ns_per_file": _ns(SCAN_PER_FILE.get((backend, files))),
                "to_floor": _figure(BASELINES.get(f"scan {files} files / floor [{backend}]")),
            }
        rows.append(row)
    ls = []
    for name, value in BASELINES.items():
        found = re.fullmatch(r"ls (\d+) files / scan \[(\w+)\]", name)
        if found:
            ls.append({"files": int(found[1]), "backend": found[2], "to_scan": _figure(value)})
    clean = [
        {
            "backend": backend,
            "files": files,
            "seconds": _figure(seconds),
            "us_per_file": _figure(seconds / files * 1e6),
        }
        for backend, (files, seconds) in sorted(CLEANS.items())
    ]
    return {"sizes": rows, "ls": ls, "clean": clean}


def _storm() -> list[dict]:
    rows = []
    for (backend, mode, place), counts in sorted(STORMS.items()):
        reads = sum(counts.values())
        rows.append(
            {
                "backend": backend,
                "mode": mode,
                "place": place,
                "reads": reads,
                **counts,
                "empty_percent": _figure(100 * counts["empty"] / max(reads, 1), 4),
            }
        )
    return rows


def _import() -> dict:
    ratio = BASELINES.get("import shimpid / import subprocess")
    return {
        "ms": {module: _figure(seconds * 1e3) for module, seconds in IMPORTS.items()},
        "ratio": _figure(ratio),
    }
