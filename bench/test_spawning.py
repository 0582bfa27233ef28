"""Spawns per second of /bin/true, from parents of about 0 and 1 GiB resident.

A ``preexec_fn`` makes CPython fork() instead of vfork()/posix_spawn(), and fork() copies the
parent's page tables, so its cost grows with the parent. ``shimpid.spawn`` records from the parent
and keeps the fast path. The pid files go to tmpfs, so the spawn is what is measured.
"""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

import shimpid
from conftest import BASELINES, PLACES, alternate, rounds, timed

TRUE = ["/bin/true"]


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
