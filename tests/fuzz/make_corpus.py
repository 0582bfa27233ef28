"""Regenerates the seed corpus, tests/fuzz/corpus/<target>/: ``python tests/fuzz/make_corpus.py``.

The seeds are the reference's own test vectors, the decode traps of ``tests/test_decode.py``
(its ``CASES`` table: leading ``+``, Unicode whitespace, overflow, NUL, line splitting, UTF-8),
the files shimpid writes (lines 3 and 4), a few ``/proc/*/stat`` lines of this machine, and paths
for the writer. Files are named by content (as libFuzzer names what it adds), so regenerating is
idempotent; files this script did not write are left alone.
"""

from __future__ import annotations

import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for test_decode's table

BOOT = b"0b1f2a5e-8c44-4e0f-9b7d-3a2c1d0e9f11"

# The reference's unit tests (pid_file.rs, boxlite 0.9.6), in and out of its decode.
REFERENCE = [
    b"1234\n98765432\n",
    b"4321\n",
    b"67890",
    b"5555\nnot-a-number\n",
    b"  12345\n  88  \n",
    b"4194304\n",
    b"-1\n",
    b"99999999999\n",
    b"not-a-pid\n",
    b"",
    b"12345\n67890\n",
    b"7\n",
]

# What shimpid writes, and its older and newer neighbours (boxlite's line 3, shimpid's line 4).
WRITTEN = [
    b"4242\n99\n\nshimpid boot=" + BOOT + b"\n",
    b"4242\n99\nservices-mux-v1\nshimpid boot=" + BOOT + b" pidfs=73712\n",
    b"4242\n\nservices-mux-v1\n",
    b"4242\n99\n" + BOOT + b"\n",  # shimpid 0.1: a bare boot id on line 3
    b"4242\n99\n\nshimpid boot=" + BOOT + b" pidfs=18446744073709551616 future=1\n",
    b"4294967295\n18446744073709551615\n",
]

# The reader's placeholders (fuzz_harness.substitute): this process, live, this boot.
READER = [
    b"@PID@\n@START@\n",
    b"@PID@\n@START@\n\nshimpid boot=@BOOT@\n",
    b"@PID@\n@START@\nservices-mux-v1\nshimpid boot=@BOOT@ pidfs=1\n",
    b"@PID@\n\n\nshimpid boot=@BOOT@\n",
    b"@PID@\n1\n\nshimpid boot=@BOOT@\n",
    b"1\n1\n",
    b"0\n",
    b"2147483648\n5\n",
    b"@PID@\n@START@\n" + b" " * 4090,  # over the 4 KiB limit
]

STAT = [
    b"1234 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 1 2\n",
    b"1 (x)",
    b"no paren",
    b"1 (sh) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 18446744073709551615 1\n",
    b"1 (sh) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 18446744073709551616 1\n",
    b"1 (sh) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 +5 1\n",
    b"1 (sh)  S  1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20\n",  # runs of spaces
    b"1 (sh) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18\n19 20\n",
    b"1 (a\nb) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 42",
    b"1 (sh)S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20\n",
]

# Writer inputs: a flags byte (fuzz_harness.writer_input), then the path.
ATOMIC, IDENTITY, STR, SURROGATES, PATHLIB, CAP = 1, 2, 4, 8, 12, 16
WRITER = [
    bytes([ATOMIC | IDENTITY]) + b"shim.pid",
    bytes([IDENTITY]) + b"shim.pid",
    bytes([ATOMIC | STR]) + b"d/shim.pid",
    bytes([ATOMIC | PATHLIB]) + b"dl/shim.pid",
    bytes([ATOMIC]) + b"f",
    bytes([0]) + b"f",
    bytes([ATOMIC]) + b"ln",
    bytes([0]) + b"ln",
    bytes([ATOMIC]) + b"dang",
    bytes([ATOMIC]) + b"fifo",
    bytes([0]) + b"fifo",
    bytes([ATOMIC]) + b"d",
    bytes([ATOMIC]) + b"d/",
    bytes([ATOMIC]) + b".",
    bytes([ATOMIC]) + b"",
    bytes([ATOMIC]) + b"f/x",
    bytes([ATOMIC]) + b"missing/x",
    bytes([ATOMIC]) + b"x\x00y",
    bytes([ATOMIC | SURROGATES]) + b"\xed\xa0\x80.pid",  # a lone surrogate: not encodable
    bytes([ATOMIC | STR]) + b"\xff\xfe.pid",
    bytes([ATOMIC]) + b"n" * 255,
    bytes([ATOMIC]) + b"n" * 220,
    bytes([0]) + b"n" * 255,
    bytes([ATOMIC]) + b"n" * 217,  # the longest name with room for a temporary name: 218
    bytes([ATOMIC]) + b"n" * 218,
    bytes([ATOMIC]) + b"n" * 219,
    # Near PATH_MAX, with the temporary name (the scratch directory adds about 45 bytes)
    bytes([ATOMIC]) + b"./" * 1980 + b"x",
    bytes([ATOMIC]) + b"./" * 1990 + b"x",
    bytes([ATOMIC]) + b"./" * 2000 + b"x",
    bytes([ATOMIC]) + b"./" * 2020 + b"x",
    bytes([0]) + b"./" * 2020 + b"x",
    bytes([0]) + b"./" * 2026 + b"x",
    bytes([0]) + b"./" * 2040 + b"x",
    bytes([ATOMIC | CAP]) + b"services-mux-v1\x01shim.pid",
    bytes([ATOMIC | CAP]) + b" bad \x01shim.pid",
    bytes([ATOMIC | CAP]) + BOOT + b"\x01shim.pid",
    bytes([ATOMIC | 5 << 5]) + b"shim.pid",  # mode -1
    bytes([ATOMIC | 4 << 5]) + b"shim.pid",  # mode 0o10000
    bytes([0 | 2 << 5]) + b"f",  # mode 0, in place
    bytes([ATOMIC]) + b".shim.pid.1.1.tmp",
]


def stat_lines() -> list[bytes]:
    lines = []
    for pid in ("self", "1", "2"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                lines.append(f.read())
        except OSError:
            pass
    return lines


def seeds() -> dict[str, list[bytes]]:
    from test_decode import CASES  # the decode traps, kept in one place

    traps = [case[0] for case in CASES]
    return {
        "decode": REFERENCE + traps + WRITTEN,
        "reader": REFERENCE[:6] + WRITTEN + READER + [b"\x00", b"12\x0034\n", b"12\n34\x00\n"],
        "stat": STAT + stat_lines(),
        "writer": WRITER,
    }


def main() -> None:
    for target, inputs in seeds().items():
        directory = os.path.join(HERE, "corpus", target)
        os.makedirs(directory, exist_ok=True)
        for data in dict.fromkeys(inputs):
            name = hashlib.sha1(data).hexdigest()
            with open(os.path.join(directory, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(set(inputs))} seeds in {os.path.relpath(directory)}")


if __name__ == "__main__":
    main()
