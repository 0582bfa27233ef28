"""PidRecord as a value: construction, immutability, equality, hashing, encoding."""

from __future__ import annotations

import array
import copy
import ctypes
import os
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _helpers import proc_state
from shimpid import PID_RECORD_MAX_BYTES, _pure

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


@pytest.mark.parametrize(
    ("pid", "start_time"),
    [(0, None), (1, 0), (U32_MAX, U64_MAX), (4194304, 123), (True, None)],
)
def test_in_range_values_construct(impl, pid, start_time):
    r = impl.PidRecord(pid, start_time)
    assert (r.pid, r.start_time) == (int(pid), start_time)
    assert type(r.pid) is int


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((-1,), OverflowError),
        ((U32_MAX + 1,), OverflowError),
        ((2**100,), OverflowError),
        ((1, -1), OverflowError),
        ((1, U64_MAX + 1), OverflowError),
        ((1.0,), TypeError),
        (("1",), TypeError),
        ((None,), TypeError),
        ((1, 2.5), TypeError),
        ((1, "2"), TypeError),
    ],
)
def test_out_of_range_or_wrong_type_raises_the_same_in_both(impl, args, error):
    with pytest.raises(error) as info:
        impl.PidRecord(*args)
    if error is OverflowError:
        assert "must be" in str(info.value)


def test_keywords(impl):
    assert impl.PidRecord(pid=5, start_time=6) == impl.PidRecord(5, 6)


def test_immutable(impl):
    r = impl.PidRecord(5, 6)
    for name in ("pid", "start_time", "other"):
        with pytest.raises(AttributeError) as raised:
            setattr(r, name, 7)
        assert str(raised.value) == f"PidRecord is immutable: cannot set {name!r}"
        with pytest.raises(AttributeError) as raised:
            delattr(r, name)
        assert str(raised.value) == f"PidRecord is immutable: cannot delete {name!r}"
    assert (r.pid, r.start_time) == (5, 6)


def test_an_index_that_fails_fails_as_it_says(impl):
    """The caller's __index__ raising OverflowError of its own: its words, not the range's."""

    class Huge:
        def __index__(self):
            raise OverflowError("from __index__")

    for args in ((Huge(),), (1, Huge())):
        with pytest.raises(OverflowError) as raised:
            impl.PidRecord(*args)
        assert str(raised.value) == "from __index__"


def test_equality_and_hash(impl):
    a, b = impl.PidRecord(5, 6), impl.PidRecord(5, 6)
    assert a == b and not (a != b)  # noqa: SIM202 - __ne__ is what is tested
    assert hash(a) == hash(b)
    assert a != impl.PidRecord(5, None)
    assert a != impl.PidRecord(5, 7)
    assert a != impl.PidRecord(6, 6)
    assert impl.PidRecord(5, 0) != impl.PidRecord(5, None)
    assert a != (5, 6)
    assert len({a, b, impl.PidRecord(5, None)}) == 2


@given(st.integers(0, 2**32 - 1), st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_hash_is_the_same_in_both_backends(extension, pid, start_time):
    """A record from either backend can be looked up in a set or dict made by the other."""
    assert hash(extension.PidRecord(pid, start_time)) == hash(_pure.PidRecord(pid, start_time))


def test_repr(impl):
    assert repr(impl.PidRecord(5, 6)) == "PidRecord(pid=5, start_time=6)"
    assert repr(impl.PidRecord(5)) == "PidRecord(pid=5, start_time=None)"


def test_pickle_and_copy(impl):
    r = impl.PidRecord(5, U64_MAX)
    assert pickle.loads(pickle.dumps(r)) == r
    assert copy.copy(r) == r
    assert copy.deepcopy(r) == r
    # the static methods too, as a process pool sends them: by their qualified names
    decode, current = (pickle.loads(pickle.dumps(f)) for f in (r.decode, r.current))
    assert decode(b"5\n") == impl.PidRecord(5)
    assert current() == impl.PidRecord.current()


def test_cannot_subclass(impl):
    with pytest.raises(TypeError):
        type("Sub", (impl.PidRecord,), {})


@pytest.mark.parametrize(
    ("record", "data"),
    [
        ((0, None), b"0\n"),
        ((7, None), b"7\n"),
        ((12345, 67890), b"12345\n67890\n"),
        ((10, 0), b"10\n0\n"),
        ((U32_MAX, U64_MAX), b"4294967295\n18446744073709551615\n"),
    ],
)
def test_encode(impl, record, data):
    r = impl.PidRecord(*record)
    assert r.encode() == data
    assert impl.PidRecord.decode(data) == r


def test_longest_record_fits_the_bound(impl):
    assert len(impl.PidRecord(U32_MAX, U64_MAX).encode()) <= PID_RECORD_MAX_BYTES


@pytest.mark.parametrize(
    "make",
    [
        lambda: bytearray(48),
        lambda: bytearray(100),
        lambda: memoryview(bytearray(60))[5:],
        lambda: array.array("B", bytes(48)),
        lambda: array.array("I", bytes(48)),
    ],
)
def test_encode_into_writable_buffers(impl, make):
    buf = make()
    r = impl.PidRecord(U32_MAX, U64_MAX)
    n = r.encode_into(buf)
    assert bytes(memoryview(buf).cast("B")[:n]) == r.encode()


def test_encode_into_leaves_the_rest_of_the_buffer(impl):
    buf = bytearray(b"x" * 60)
    n = impl.PidRecord(5, 6).encode_into(buf)
    assert n == 4 and buf == b"5\n6\n" + b"x" * 56


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: bytearray(47), ValueError),
        (lambda: bytearray(0), ValueError),
        (lambda: bytes(48), TypeError),
        (lambda: memoryview(bytearray(48)).toreadonly(), TypeError),
        (lambda: "x" * 48, TypeError),
        (lambda: memoryview(bytearray(96))[::2], BufferError),
        (lambda: (ctypes.c_uint8 * 3 * 0)(), ValueError),  # a shape with a zero: (0, 3)
    ],
)
def test_encode_into_bad_buffers(impl, make, error):
    buf = make()
    with pytest.raises(error):
        impl.PidRecord(5, 6).encode_into(buf)


def test_current_is_this_process_and_matches_proc(impl):
    r = impl.PidRecord.current()
    assert r.pid == os.getpid()
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    assert r.start_time == int(fields[19])
    assert proc_state(os.getpid()) in "RS"


def test_the_extensions_current_is_the_pure_backends(extension):
    ours, pure = extension.PidRecord.current(), _pure.PidRecord.current()
    assert (ours.pid, ours.start_time) == (pure.pid, pure.start_time)
