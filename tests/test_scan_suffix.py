"""The extension's fast path of shimpid.scan() (``_scan_suffix``): references, re-entry, closing."""

from __future__ import annotations

import gc
import os
import stat
import sys

import pytest

from shimpid import _rundir


@pytest.fixture
def directory_fd(tmp_path):
    (tmp_path / "a.pid").write_bytes(b"1\n")
    (tmp_path / "b.pid").write_bytes(b"garbage\n")
    (tmp_path / ".c.pid.4242.0.pid").write_bytes(b"1\n")  # a dot name: skip() is asked
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def scan(extension, fd, skip=_rundir.is_temp):
    return extension._scan_suffix(fd, b".pid", "d/", skip)


def test_its_type_gains_no_reference_per_scan(extension, directory_fd):
    # Cython 3.3's generators kept one reference to their shared type each (regression): seen
    # on any build through the type's refcount.
    kind = type(scan(extension, directory_fd))
    before = sys.getrefcount(kind)
    for _ in range(100):
        list(scan(extension, directory_fd))
        scan(extension, directory_fd)  # never started
    assert sys.getrefcount(kind) == before


@pytest.mark.skipif(not hasattr(sys, "gettotalrefcount"), reason="needs a debug build of CPython")
def test_it_leaks_no_reference(extension, directory_fd):
    def rounds():
        for _ in range(50):
            list(scan(extension, directory_fd))
            it = scan(extension, directory_fd)
            next(it)
            it.close()
        gc.collect()
        return sys.gettotalrefcount()  # type: ignore[attr-defined]

    base = rounds()  # a warm-up round first: caches, interned names
    deltas = []
    for _ in range(3):
        now = rounds()
        deltas.append(now - base)
        base = now
    # 150 scans a round: a leak per scan grows every round by 150 or more; pytest's own
    # bookkeeping, by a few
    assert min(deltas) < 50, deltas


def test_skip_is_asked_about_dot_names_only(extension, directory_fd):
    asked = []

    def skip(name):
        asked.append(name)
        return True

    assert sorted(item[0] for item in scan(extension, directory_fd, skip)) == ["d/a.pid", "d/b.pid"]
    assert asked == [".c.pid.4242.0.pid"]
    assert len(list(scan(extension, directory_fd, lambda name: False))) == 3


def test_it_refuses_to_be_reentered(extension, directory_fd):
    seen = []

    def skip(name):
        for call in (lambda: next(it), it.close):
            with pytest.raises(ValueError, match="already executing"):
                call()
            seen.append(call)
        return False

    it = scan(extension, directory_fd, skip)
    assert len(list(it)) == 3 and len(seen) == 2


def test_an_exception_finishes_it(extension, directory_fd):
    class Boom(Exception):
        pass

    def skip(name):
        raise Boom

    it = scan(extension, directory_fd, skip)
    with pytest.raises(Boom):
        list(it)
    assert list(it) == []


def test_closing_lets_go_of_the_directory(extension, directory_fd):
    fds = len(os.listdir("/proc/self/fd"))
    it = scan(extension, directory_fd)
    next(it)
    assert len(os.listdir("/proc/self/fd")) == fds + 1
    it.close()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert list(it) == []
    it.close()  # again: nothing to do


def test_it_reads_through_its_own_descriptor(extension, tmp_path):
    # The caller's descriptor closed mid-scan, and its number given to another directory: the
    # files still come from the directory that was opened (its stream's own descriptor).
    first, second = tmp_path / "first", tmp_path / "second"
    for directory, record in ((first, b"1\n"), (second, b"garbage\n")):
        directory.mkdir()
        for name in ("a.pid", "b.pid"):
            (directory / name).write_bytes(record)
    fd = os.open(first, os.O_RDONLY | os.O_DIRECTORY)
    it = scan(extension, fd)
    verdicts = [next(it)[1]]
    os.close(fd)
    other = os.open(second, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert other == fd  # the number is reused, as the lowest free one
        verdicts += [item[1] for item in it]
    finally:
        os.close(other)
    assert verdicts == [extension.Legacy(1)] * 2


def test_it_makes_each_item_once_as_the_kind_asked(extension, directory_fd):
    """scan() has its Entry made by the iterator itself (no second object per file): the same
    seven fields as the plain tuples shimpid ls takes, the last the file's owner and mode as
    read, and what the caller passed."""
    plain = list(scan(extension, directory_fd))
    entries = list(
        extension._scan_suffix(
            directory_fd, b".pid", "d/", _rundir.is_temp, False, _rundir.Entry, "why"
        )
    )
    assert [type(e) for e in entries] == [_rundir.Entry] * len(plain) and plain
    assert [tuple.__getitem__(e, slice(None)) for e in entries] == [
        (p[0], p[1], p[2], None, None, None, (os.geteuid(), p[6][1], "why")) for p in plain
    ]
    assert all(stat.S_ISREG(p[6][1]) for p in plain), "the mode of each file read"
    with pytest.raises(TypeError):
        extension._scan_suffix(directory_fd, b".pid", "d/", _rundir.is_temp, False, list)
