"""What a reader sees while another process rewrites the pid file as fast as it can: the figures
behind the documentation's "a reader sees an empty file" (in-place writes) and "zero of 30,000"
(atomic writes). A measurement, printed; tests/test_adversarial.py asserts the atomic half."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import shimpid
from conftest import PLACES, STORMS, rounds
from shimpid import StorageError

RECORDS = [(4294967295, 18446744073709551615), (7, None), (123456, 42)]


def storm(impl, directory: str, atomic: bool, reads: int) -> dict[str, int]:
    path = os.path.join(directory, "storm.pid")
    writer = impl.PidFileWriter.at(path, atomic=atomic)
    records = [impl.PidRecord(*r) for r in RECORDS]
    writer.write(records[0])
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: never returns into pytest
        try:
            os.close(stop_w)
            os.set_blocking(stop_r, False)
            n = 0
            while True:
                writer.write(records[n % len(records)])
                n += 1
                try:
                    if os.read(stop_r, 1) == b"":
                        break
                except BlockingIOError:
                    pass
        finally:
            os._exit(0)
    os.close(stop_r)
    reader = shimpid.PidFileReader.at(path)
    counts = {"whole": 0, "empty": 0, "torn": 0, "wrong": 0}
    try:
        for _ in range(reads):
            try:
                record = reader.read()
            except StorageError as err:
                counts["empty" if "empty string" in str(err) else "torn"] += 1
                continue
            counts["whole" if record in records else "wrong"] += 1
    finally:
        os.close(stop_w)
        os.waitpid(pid, 0)
    return counts


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "in-place"])
def test_storm(impl, place, atomic, pytestconfig):
    directory = tempfile.mkdtemp(prefix="shimpid-storm-", dir=PLACES[place])
    try:
        counts = storm(impl, directory, atomic, rounds(pytestconfig, 30000))
    finally:
        shutil.rmtree(directory)
    backend = "pure" if impl.__name__.endswith("_pure") else "cython"
    STORMS[backend, "atomic" if atomic else "in place", place] = counts
    assert counts["torn"] == counts["wrong"] == 0, counts  # never, in either mode
    if atomic:
        assert counts["empty"] == 0, counts


def test_storm_summary():
    """Prints each storm's counts (the documentation's figures, through results.json)."""
    for (backend, mode, place), counts in sorted(STORMS.items()):
        reads = sum(counts.values())
        print(
            f"\nwrite storm, {backend}, {mode}, {place}: {counts['empty']} of {reads} reads "
            f"found the file empty ({100 * counts['empty'] / max(reads, 1):.0f}%)"
        )
