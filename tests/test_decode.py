"""decode() must answer exactly as the reference's Rust ``PidRecord::decode``, for every input.

Three layers: a table of the traps where Python's easy tools differ from Rust; a property test that
the two backends agree on arbitrary bytes (values, error types and messages); and the same inputs
checked against the reference's semantics compiled from Rust (tests/oracle/), when rustc exists.
"""

from __future__ import annotations

import ctypes
import os
import sys

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shimpid import StorageError, _pure

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
INVALID = "invalid digit found in string"
TOO_LARGE = "number too large to fit in target type"
EMPTY = "cannot parse integer from empty string"

# (input, (pid, start_time)) or (input, message fragment of the StorageError)
CASES = [
    # signs: Rust takes one leading "+", never "-"
    (b"+5\n+6\n", (5, 6)),
    (b"+\n", INVALID),
    (b"++5\n", INVALID),
    (b"-0\n", INVALID),
    (b"5\n-6\n", (5, None)),
    (b"5\n+\n", (5, None)),
    # bounds and leading zeros
    (b"0\n", (0, None)),
    (b"4294967295\n18446744073709551615\n", (U32_MAX, U64_MAX)),
    (b"4294967296\n", TOO_LARGE),
    (b"1\n18446744073709551616\n", (1, None)),
    (b"0000000000000000000000000000042\n000000000000000000000000000007", (42, 7)),
    (b"9" * 5000, TOO_LARGE),  # int() would refuse over 4300 digits with ValueError
    (b"0" * 5000 + b"1\n" + b"0" * 5000 + b"2", (1, 2)),
    # the first failure in digit order wins, as in Rust
    (b"99999999999x\n", TOO_LARGE),
    (b"9x9999999999\n", INVALID),
    (b"", EMPTY),
    (b"\n5\n", EMPTY),
    (b" \t\r\n", EMPTY),
    # int() accepts these; Rust does not
    (b"1_000\n", INVALID),
    ("\u0661\u0662\n".encode(), INVALID),  # Arabic-Indic digits
    ("\uff15\n".encode(), INVALID),  # fullwidth 5
    (b"5.0\n", INVALID),
    (b"0x10\n", INVALID),
    # trimming: Rust's White_Space, not str.strip()
    (b"\x1c5\x1c\n", INVALID),  # str.strip() would strip U+001C
    (b"\x1f5\n", INVALID),
    ("\u200b5\n".encode(), INVALID),  # ZERO WIDTH SPACE: whitespace to neither
    ("\ufeff5\n".encode(), INVALID),  # BOM
    ("\u180e5\n".encode(), INVALID),  # MONGOLIAN VOWEL SEPARATOR
    (b"\x005\n", INVALID),
    ("\xa05\x85\n\u30007\u2028".encode(), (5, 7)),
    ("\u16805\u205f\n\u202f+7\u200a".encode(), (5, 7)),
    ("\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u20095\u2029".encode(), (5, None)),
    (b"\x0c5\x0b\t \r\n\x0b7\x0c", (5, 7)),
    # lines: split on "\n" only
    (b"5\x0b7\n", INVALID),  # splitlines() would split on \x0b
    (b"5\r7\n", INVALID),
    ("5\u20287\n".encode(), INVALID),
    (b"5\x1c7\n", INVALID),
    (b"5\r\n7\r\n", (5, 7)),
    (b"5\n7 8\n", (5, None)),
    (b"5\n\n7\n", (5, None)),
    (b"5\n7\n9\n", (5, 7)),
    (b"5\n7\nanything at all", (5, 7)),
    (b"5\n7", (5, 7)),
    (b"5 \t\r", (5, None)),
    # UTF-8 is checked over the whole input, third line included
    (b"5\n7\n\xff", "not valid UTF-8: invalid byte at offset 4"),
    (b"\xff", "offset 0"),
    (b"5\n\xc3", "offset 2"),  # truncated sequence
    (b"\xed\xa0\x80", "offset 0"),  # an encoded surrogate
    (b"\xc0\xb5", "offset 0"),  # overlong "5"
    (b"\xe0\x80\xb5", "offset 0"),  # overlong, 3 bytes
    (b"\xf4\x90\x80\x80", "offset 0"),  # above U+10FFFF
    (b"\xf5\x80\x80\x80", "offset 0"),
    (b"12\xe2\x28\xa1", "offset 2"),
]


@pytest.mark.parametrize(("data", "expected"), CASES, ids=[repr(c[0])[:40] for c in CASES])
def test_tricky_inputs(impl, data, expected):
    if isinstance(expected, tuple):
        r = impl.PidRecord.decode(data)
        assert (r.pid, r.start_time) == expected
    else:
        with pytest.raises(StorageError, match=expected) as info:
            impl.PidRecord.decode(data)
        assert info.value.errno is None


def test_invalid_pid_message_names_the_line(impl):
    with pytest.raises(StorageError) as info:
        impl.PidRecord.decode(b"  12ab \n7\n")
    assert str(info.value) == f"invalid PID '12ab': {INVALID}"
    with pytest.raises(StorageError) as info:
        impl.PidRecord.decode(b"x" * 100)
    assert str(info.value) == f"invalid PID '{'x' * 40}...': {INVALID}"


@pytest.mark.parametrize(
    "wrap", [bytes, bytearray, memoryview, lambda b: memoryview(b"xx" + b)[2:]]
)
def test_bytes_like_inputs(impl, wrap):
    assert impl.PidRecord.decode(wrap(b"12\n34\n")) == impl.PidRecord(12, 34)


class Strided:
    """A buffer that is not C-contiguous and refuses a simple view with an error of its own
    type, as numpy's Fortran-ordered arrays do (Python 3.12+: ``__buffer__``)."""

    def __buffer__(self, flags):
        if flags == 0:  # PyBUF_SIMPLE
            raise ValueError("ndarray is not C-contiguous")
        return memoryview(b"1 2 3 4")[::2]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("12\n", TypeError),
        (12, TypeError),
        (None, TypeError),
        (memoryview(b"1 2 3 4")[::2], BufferError),
        pytest.param(
            Strided(),
            BufferError,
            marks=pytest.mark.skipif(sys.version_info < (3, 12), reason="no __buffer__"),
        ),
        ((ctypes.c_uint8 * 3 * 0)(), StorageError),  # a shape with a zero: (0, 3)
    ],
)
def test_non_bytes_inputs(impl, data, error):
    with pytest.raises(error) as raised:
        impl.PidRecord.decode(data)
    if error is BufferError:
        assert str(raised.value) == "buffer is not C-contiguous"


# ---- both backends agree, on everything ----------------------------------------------------------

TOKENS = [
    b"0",
    b"1",
    b"7",
    b"9",
    b"00",
    b"42",
    b"4294967295",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"99999999999999999999999",
    b"+",
    b"-",
    b"_",
    b".",
    b"a",
    b"x",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\n",
    b"\n",
    b"\x0b",
    b"\x0c",
    b"\x00",
    b"\x1c",
    b"\x1f",
    "\x85".encode(),
    "\xa0".encode(),
    "\u1680".encode(),
    "\u2000".encode(),
    "\u200a".encode(),
    "\u200b".encode(),
    "\u2028".encode(),
    "\u2029".encode(),
    "\u202f".encode(),
    "\u205f".encode(),
    "\u3000".encode(),
    "\ufeff".encode(),
    "\u180e".encode(),
    "\u0661".encode(),
    "\uff15".encode(),
    "\U0001f600".encode(),
    b"\xc2",
    b"\xe2\x80",
    b"\xed\xa0\x80",
    b"\xc0\xb5",
    b"\xf4\x90\x80\x80",
    b"\xff",
    b"\x80",
]
pid_like = st.lists(st.sampled_from(TOKENS), max_size=14).map(b"".join)
record_like = st.builds(
    lambda a, b, c: a + b"\n" + b + c,
    pid_like,
    pid_like,
    st.one_of(st.just(b""), pid_like, st.binary(max_size=8)),
)
anything = st.one_of(st.binary(max_size=64), pid_like, record_like, st.text().map(str.encode))


def outcome(module, data):
    try:
        r = module.PidRecord.decode(data)
    except StorageError as err:
        return ("error", str(err), err.errno)
    return ("ok", r.pid, r.start_time)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(anything)
@example(b"\xe2\x80\x80 5 \xe2\x80\x80")
@example(b"5\n \xc2\xa0")
@example(b"5\n6\n\xff")  # canonical lines, then bytes that are not UTF-8
def test_the_extensions_decode_agrees_with_the_rules(extension, data):
    """The extension decodes what writers write in C, the rest through _common.decode_record:
    on any bytes the result (value, error type and words) is the general rules'."""
    assert outcome(extension, data) == outcome(_pure, data)


@given(st.integers(0, U32_MAX), st.one_of(st.none(), st.integers(0, U64_MAX)))
def test_encode_round_trips_and_agrees(impl, pid, start_time):
    r = impl.PidRecord(pid, start_time)
    data = r.encode()
    assert data == (f"{pid}\n" if start_time is None else f"{pid}\n{start_time}\n").encode()
    assert impl.PidRecord.decode(data) == r
    buf = bytearray(48)
    assert buf[: r.encode_into(buf)] == data


# ---- the reference itself, compiled from Rust ----------------------------------------------------


def check_against_reference(impl, ask, data):
    answer = ask("d", data)
    try:
        r = impl.PidRecord.decode(data)
    except StorageError as err:
        if answer.startswith("err utf8 "):
            assert str(err).endswith(f"offset {answer.split()[2]}")
        else:
            assert answer.startswith("err pid "), answer
            assert str(err).endswith(answer[len("err pid ") :])
        return
    start = "-" if r.start_time is None else str(r.start_time)
    assert answer == f"ok {r.pid} {start}"


@pytest.mark.parametrize("data", [c[0] for c in CASES], ids=[repr(c[0])[:40] for c in CASES])
def test_table_matches_reference(impl, oracle, data):
    check_against_reference(impl, oracle, data)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(anything)
def test_arbitrary_bytes_match_reference(impl, oracle, data):
    check_against_reference(impl, oracle, data)


STAT_TOKENS = [
    b" ",
    b"  ",
    b"1",
    b"42",
    b"18446744073709551615",
    b"18446744073709551616",
    b"S",
    b"Z",
    b"(",
    b")",
    b"\n",
    b"\t",
    b"x",
    b"+1",
]
stat_like = st.builds(
    lambda head, n, fields, tail: head + b") S " + b" ".join(fields[:n]) + tail,
    st.lists(st.sampled_from(STAT_TOKENS), max_size=6).map(b"".join),
    st.integers(0, 25),
    st.lists(st.sampled_from(STAT_TOKENS[2:]), min_size=25, max_size=25),
    st.lists(st.sampled_from(STAT_TOKENS), max_size=6).map(b"".join),
)
# What the kernel writes: "<pid> (<command name: any bytes>) <state> <49 numbers>\n", one space
# before each field. Field 22 ranges over the u64 edge.
kernel_stat = st.builds(
    lambda pid, comm, state, numbers, start: (
        b"%d (%s) %c %s\n"
        % (pid, comm, state, b" ".join(b"%d" % n for n in [*numbers[:18], start, *numbers[18:]]))
    ),
    st.integers(1, 2**22),
    st.binary(max_size=16),
    st.sampled_from(b"RSDZTtXIKWP"),
    # 48 numbers, from a few drawn (drawing 48 big integers made this the suite's slowest test):
    # the parse cares about their lengths and signs, not their variety
    st.lists(st.integers(-100, 2**64), min_size=1, max_size=4).map(lambda ns: (ns * 48)[:48]),
    st.one_of(st.integers(0, 2**32), st.integers(2**64 - 2, 2**64 + 2)),
)


@given(st.one_of(stat_like, st.binary(max_size=200)))
def test_the_extensions_stat_parse_is_the_references(extension, oracle, data):
    """The extension parses any bytes as the reference's Rust does (its C API offers it)."""
    start = extension._parse_stat(data)[1]
    assert oracle("s", data) == ("-" if start is None else str(start))


@given(kernel_stat)
def test_stat_parse_of_what_the_kernel_writes(impl, oracle, line):
    state, start = impl._parse_stat(line)
    assert oracle("s", line) == ("-" if start is None else str(start))
    assert state == line[line.rfind(b")") + 2]


def test_stat_parse_real_lines(impl):
    line = b"1234 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 1 2\n"
    assert impl._parse_stat(line) == (ord("S"), 987654)
    assert impl._parse_stat(line.replace(b" S ", b" Z ")) == (ord("Z"), 987654)
    assert impl._parse_stat(b"1 (x)") == (0, None)
    assert impl._parse_stat(b"no paren") == (0, None)
    with open(f"/proc/{os.getpid()}/stat", "rb") as f:
        real = f.read()
    assert impl._parse_stat(real)[1] == int(real.rpartition(b")")[2].split()[19])
