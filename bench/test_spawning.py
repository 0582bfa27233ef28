"""Spawns per second of /bin/true, from parents of about 0 and 1 GiB resident.

A ``preexec_fn`` makes CPython fork() instead of vfork()/posix_spawn(), and fork() copies the
parent's page tables, so its cost grows with the parent. ``shimpid.spawn`` records from the parent
and keeps the fast path. The pid files go to tmpfs, so the spawn is what is measured.

Then what recording costs per child, each child recorded in a new pid file (on tmpfs and on
disk, from 16 threads at once, through asyncio, and with the disk kept busy by another process's
fsync()s): alternated ratios to the same spawns without a record. Beside the targets, their
floor: the same ratio for ``Popen`` followed by one call of bench/floor.c's ``floor_record``, the
record's system calls in C, with no Python around them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import conftest
import shimpid
from conftest import (
    BASELINES,
    PLACES,
    TARGETS,
    alternate,
    baseline_target,
    median_ratio,
    rotate,
    rounds,
    timed,
)

TRUE = ["/bin/true"]

# What recording costs per child, each pid file new (a fresh name per spawn): alternated ratios
# to the same spawns without a record.
NEW_FILE = "shimpid.spawn, new file per child / Popen"
THREADED = "16 threads spawning, new file per child: Popen/s / shimpid.spawn/s [tmpfs, {}]"
ASYNC_NEW_FILE = (
    "shimpid.create_subprocess_exec, new file per child / asyncio.create_subprocess_exec"
    " [tmpfs, 0 GiB]"
)
BUSY_DISK = f"{NEW_FILE} [disk busy with 1 MiB write+fsync, {{}}]"
# Their floor: Popen, then the record written by floor.c in one call; and shimpid against it,
# from the same rounds.
C_NEW_FILE = "Popen + floor.c's record, new file per child / Popen"
C_THREADED = (
    "16 threads spawning, new file per child: Popen/s / (Popen + floor.c's record)/s [tmpfs, {}]"
)
ABOVE_FLOOR = "shimpid.spawn, new file per child / (Popen + floor.c's record)"
ABOVE_FLOOR_THREADED = (
    "16 threads spawning, new file per child: (Popen + floor.c's record)/s / shimpid.spawn/s"
    " [tmpfs, {}]"
)
for _parent in ("0 GiB", "1 GiB"):
    for _place, _limit in (("tmpfs", 1.05), ("disk", 1.10)):
        TARGETS.append(
            baseline_target(
                f"shimpid.spawn, new file per child [{_place}, {_parent}]: <= {_limit:.2f}x Popen",
                f"{NEW_FILE} [{_place}, {_parent}]",
                _limit,
                beside=f"{C_NEW_FILE} [{_place}, {_parent}]",
            )
        )
    TARGETS += [
        baseline_target(
            f"16 threads spawning, new file per child [{_parent}]: shimpid.spawn >= 0.91x"
            " Popen's throughput (Popen/shimpid <= 1.10)",
            THREADED.format(_parent),
            1.10,
            beside=C_THREADED.format(_parent),
        ),
        baseline_target(
            f"shimpid.spawn, new file per child, disk busy with fsync [{_parent}]: <= 1.5x Popen",
            BUSY_DISK.format(_parent),
            1.5,
        ),
    ]
TARGETS.append(
    baseline_target(
        "shimpid.create_subprocess_exec, new file per child: <= 1.05x asyncio's",
        ASYNC_NEW_FILE,
        1.05,
    )
)


def resident_mib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


@pytest.fixture(scope="module", params=[0, 1, 2, 4], ids=["0GiB", "1GiB", "2GiB", "4GiB"])
def parent(request):
    """This process, grown to about ``param`` GiB resident (every page written). A short run
    (CI) takes 0 and 1 GiB only."""
    if request.param > 1 and request.config.getoption("short"):
        pytest.skip("a short run spawns from 0 and 1 GiB only")
    ballast = bytearray(b"\x01") * (request.param << 30)
    yield f"{request.param} GiB"
    del ballast


@pytest.fixture
def pid_file():
    path = os.path.join(PLACES["tmpfs"], f"bench-spawn-{os.getpid()}.pid")
    yield path
    if os.path.exists(path):
        os.unlink(path)


def tag(benchmark, parent, how):
    benchmark.group = f"spawn /bin/true, parent {parent}"
    benchmark.extra_info.update(spawn=how, parent=parent, rss_mib=resident_mib())


def test_plain_popen(benchmark, parent):
    tag(benchmark, parent, "Popen")
    benchmark(lambda: subprocess.Popen(TRUE).wait())


def test_shimpid_spawn(benchmark, parent, pid_file):
    tag(benchmark, parent, "shimpid.spawn")
    benchmark(lambda: shimpid.spawn(TRUE, pid_file).wait())
    assert shimpid.PidFileReader.at(pid_file).read().start_time is not None


def test_shimpid_spawn_prepared_writer(benchmark, parent, pid_file):
    tag(benchmark, parent, "shimpid.spawn, prepared writer")
    writer = shimpid.PidFileWriter.at(pid_file)
    benchmark(lambda: shimpid.spawn(TRUE, writer).wait())
    assert shimpid.PidFileReader.at(pid_file).read().start_time is not None


def test_popen_with_preexec_write_current(benchmark, parent, pid_file):
    tag(benchmark, parent, "Popen(preexec_fn=write_current)")
    writer = shimpid.PidFileWriter.at(pid_file)
    benchmark(lambda: subprocess.Popen(TRUE, preexec_fn=writer.write_current).wait())
    assert shimpid.PidFileReader.at(pid_file).read().start_time is not None


def test_spawn_ratios(parent, pid_file, pytestconfig):
    """The ratios the targets are about, from alternated batches of five spawns each."""
    writer = shimpid.PidFileWriter.at(pid_file)

    def five(spawn):
        return timed(lambda: [spawn().wait() for _ in range(5)])

    popen = five(lambda: subprocess.Popen(TRUE))
    count = rounds(pytestconfig, 200)
    BASELINES[f"shimpid.spawn / Popen [{parent}]"] = alternate(
        five(lambda: shimpid.spawn(TRUE, pid_file)), popen, count
    )
    BASELINES[f"shimpid.spawn, prepared writer / Popen [{parent}]"] = alternate(
        five(lambda: shimpid.spawn(TRUE, writer)), popen, count
    )
    BASELINES[f"Popen(preexec_fn=write_current) / Popen [{parent}]"] = alternate(
        timed(lambda: subprocess.Popen(TRUE, preexec_fn=writer.write_current).wait()),
        timed(lambda: subprocess.Popen(TRUE).wait()),
        max(count // 5, 5),
    )


def test_plain_asyncio(benchmark, parent):
    tag(benchmark, parent, "asyncio.create_subprocess_exec")

    async def one():
        await (await asyncio.create_subprocess_exec(*TRUE)).wait()

    with asyncio.Runner() if hasattr(asyncio, "Runner") else _Runner() as runner:
        benchmark(lambda: runner.run(one()))


def test_shimpid_asyncio(benchmark, parent, pid_file):
    tag(benchmark, parent, "shimpid.create_subprocess_exec")

    async def one():
        await (await shimpid.create_subprocess_exec(*TRUE, pidfile=pid_file)).wait()

    with asyncio.Runner() if hasattr(asyncio, "Runner") else _Runner() as runner:
        benchmark(lambda: runner.run(one()))


class _Runner:
    """asyncio.Runner for Python 3.10: one event loop reused across runs."""

    def __enter__(self):
        self.loop = asyncio.new_event_loop()
        return self

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def __exit__(self, *exc):
        self.loop.close()


# --- What recording costs per child: a new pid file for each spawn ---------------------------


class FreshPaths:
    """New pid file names in PLACES[place], one per child; made before a timed batch and removed
    after it, so neither naming nor removal is timed."""

    def __init__(self, place: str) -> None:
        self.directory = PLACES[place]
        self.token = f"bench-fresh-{os.getpid()}-"
        self.made = 0

    def take(self, count: int) -> list[str]:
        first, self.made = self.made, self.made + count
        return [
            os.path.join(self.directory, f"{self.token}{n}.pid") for n in range(first, self.made)
        ]

    def remove(self, names: list[str]) -> None:
        for name in names:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass

    def sweep(self) -> None:
        """Whatever is left under this token (a failed batch, a temporary sibling)."""
        for name in os.listdir(self.directory):
            if self.token in name:
                self.remove([os.path.join(self.directory, name)])


@pytest.fixture
def fresh():
    made: list[FreshPaths] = []

    def make(place: str) -> FreshPaths:
        made.append(FreshPaths(place))
        return made[-1]

    try:
        yield make
    finally:
        for paths in made:
            paths.sweep()


def small_or_1gib(parent: str) -> None:
    if parent not in ("0 GiB", "1 GiB"):
        pytest.skip("measured from 0 and 1 GiB parents only")


def small_only(parent: str) -> None:
    if parent != "0 GiB":
        pytest.skip("measured from the small parent only")


BATCH = 5  # spawns per timed batch


def batch_of(spawn, paths: FreshPaths | None, size: int = BATCH):
    """A timed batch: ``spawn(path).wait()`` ``size`` times, each with a new path (None without
    ``paths``); returns the seconds the spawns took."""

    def run() -> float:
        names = paths.take(size) if paths else [None] * size
        start = time.perf_counter()
        for name in names:
            spawn(name).wait()
        elapsed = time.perf_counter() - start
        if paths:
            paths.remove(names)
        return elapsed

    return run


def popen_recorded_in_c(place: str):
    """``spawn(name)`` for batch_of: Popen, then floor.c's record of the child in PLACES[place]
    (a new file; floor_record_sweep() removes them), with the directory's stat where shimpid's
    writer asks for it (where its atomic writes may swap files)."""
    floor, directory = conftest.FLOOR, PLACES[place].encode()
    assert floor is not None
    probe = shimpid.PidFileWriter.at(os.path.join(PLACES[place], "probe.pid"))
    swaps = int(getattr(probe, "_replace_by_exchange", False))

    def spawn(_):
        child = subprocess.Popen(TRUE)
        floor.floor_record(directory, child.pid, swaps)
        return child

    return spawn


def swept(run):
    """run, then floor.c's records removed (after the timing, as FreshPaths.remove)."""
    assert conftest.FLOOR is not None
    sweep = conftest.FLOOR.floor_record_sweep

    def then_swept() -> float:
        try:
            return run()
        finally:
            sweep()

    return then_swept


def new_file_ratios(place: str, paths: FreshPaths, count: int) -> tuple[float, float, float]:
    """shimpid.spawn / Popen, (Popen + floor.c's record) / Popen and shimpid.spawn / (Popen +
    floor.c's record), each spawn with a new pid file, from the same rotated rounds."""
    recorded = batch_of(lambda path: shimpid.spawn(TRUE, path), paths)
    in_c = swept(batch_of(popen_recorded_in_c(place), None))
    plain = batch_of(lambda _: subprocess.Popen(TRUE), None)
    recorded(), in_c(), plain()  # warm up: the directory, the code paths
    shimpid_times, c_times, plain_times = rotate([recorded, in_c, plain], count)
    return (
        median_ratio(shimpid_times, plain_times),
        median_ratio(c_times, plain_times),
        median_ratio(shimpid_times, c_times),
    )


@pytest.mark.parametrize("place", ["tmpfs", "disk"])
def test_spawn_new_file_per_child(parent, place, fresh, pytestconfig):
    small_or_1gib(parent)
    where = f"[{place}, {parent}]"
    (
        BASELINES[f"{NEW_FILE} {where}"],
        BASELINES[f"{C_NEW_FILE} {where}"],
        BASELINES[f"{ABOVE_FLOOR} {where}"],
    ) = new_file_ratios(place, fresh(place), rounds(pytestconfig, 400))


THREADS = 16
PER_THREAD = 8  # spawns each thread makes per round


def test_spawn_new_file_per_child_threads(parent, fresh, pytestconfig):
    """Throughput of 16 threads each spawning and waiting in a loop: whole rounds alternated."""
    small_or_1gib(parent)
    paths = fresh("tmpfs")

    def loop(spawn, names):
        for name in names:
            spawn(name).wait()

    with ThreadPoolExecutor(THREADS) as pool:

        def round_of(spawn, with_files: bool):
            def run() -> float:
                names = [
                    paths.take(PER_THREAD) if with_files else [None] * PER_THREAD
                    for _ in range(THREADS)
                ]
                start = time.perf_counter()
                for done in [pool.submit(loop, spawn, each) for each in names]:
                    done.result()
                elapsed = time.perf_counter() - start
                if with_files:
                    for each in names:
                        paths.remove(each)
                return elapsed

            return run

        recorded = round_of(lambda path: shimpid.spawn(TRUE, path), True)
        in_c = swept(round_of(popen_recorded_in_c("tmpfs"), False))
        plain = round_of(lambda _: subprocess.Popen(TRUE), False)
        recorded(), in_c(), plain()  # warm up: all the pool's threads started
        # Same number of spawns per round: shimpid's time / Popen's = Popen/s / shimpid/s.
        shimpid_times, c_times, plain_times = rotate(
            [recorded, in_c, plain], rounds(pytestconfig, 200)
        )
        BASELINES[THREADED.format(parent)] = median_ratio(shimpid_times, plain_times)
        BASELINES[C_THREADED.format(parent)] = median_ratio(c_times, plain_times)
        BASELINES[ABOVE_FLOOR_THREADED.format(parent)] = median_ratio(shimpid_times, c_times)


def test_asyncio_new_file_per_child(parent, fresh, pytestconfig):
    small_only(parent)
    paths = fresh("tmpfs")
    loop = asyncio.new_event_loop()
    try:

        async def spawns(create, names):
            for name in names:
                await (await create(name)).wait()

        def batch_of_async(create, with_files: bool):
            def run() -> float:
                names = paths.take(BATCH) if with_files else [None] * BATCH
                start = time.perf_counter()
                loop.run_until_complete(spawns(create, names))
                elapsed = time.perf_counter() - start
                if with_files:
                    paths.remove(names)
                return elapsed

            return run

        recorded = batch_of_async(
            lambda path: shimpid.create_subprocess_exec(*TRUE, pidfile=path), True
        )
        plain = batch_of_async(lambda _: asyncio.create_subprocess_exec(*TRUE), False)
        recorded(), plain()  # warm up
        BASELINES[ASYNC_NEW_FILE] = alternate(recorded, plain, rounds(pytestconfig, 400))
    finally:
        loop.close()


# Writes 1 MiB and fsync()s it, over and over (back to the start every 64 MiB), until told to
# stop or its parent goes.
WRITER = """
import os, sys
path, parent = sys.argv[1], int(sys.argv[2])
block = os.urandom(1 << 20)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
n = 0
while os.getppid() == parent:
    os.write(fd, block)
    os.fsync(fd)
    n += 1
    if n % 64 == 0:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
"""


@pytest.fixture
def busy_disk():
    """A background process writing and fsync()ing a file beside PLACES["disk"]'s pid files."""
    os.makedirs(PLACES["disk"], exist_ok=True)
    path = os.path.join(PLACES["disk"], f"bench-busy-{os.getpid()}.data")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, str(os.getpid())])
    try:
        deadline = time.monotonic() + 10
        while not (os.path.exists(path) and os.path.getsize(path) > 0):
            if writer.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the background writer did not start (exit status {writer.poll()})")
            time.sleep(0.01)
        yield path
    finally:
        writer.terminate()
        try:
            writer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def test_spawn_new_file_per_child_busy_disk(parent, busy_disk, fresh, pytestconfig):
    small_or_1gib(parent)
    paths, count = fresh("disk"), rounds(pytestconfig, 400)
    recorded = batch_of(lambda path: shimpid.spawn(TRUE, path), paths)
    plain = batch_of(lambda _: subprocess.Popen(TRUE), None)
    recorded(), plain()
    BASELINES[BUSY_DISK.format(parent)] = alternate(recorded, plain, count)
