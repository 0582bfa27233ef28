"""What every fuzz input is checked for, on both backends: shared by the fuzzer (``fuzz.py``,
under atheris) and the desk suite (``tests/test_fuzz_regressions.py``, which replays the seed
corpus and every saved crash without atheris).

A check returns quietly or raises: ``AssertionError`` when the backends disagree or a rule is
broken, or whatever unexpected exception a backend raised (an exception a function may not raise
is a crash too). Targets:

- ``decode``: ``PidRecord.decode`` on any bytes, the extension against ``_pure`` (value, error
  words and errno), and encode/decode round trips of what decodes.
- ``reader``: ``PidFileReader.at(path)`` over a tmpfs file holding the input: ``read``,
  ``read_boot_id``, ``read_pidfs_id``, ``read_capability``, ``process_identity``; only
  ``StorageError`` from the readers, nothing from ``process_identity``. ``@PID@``, ``@START@``
  and ``@BOOT@`` in the input become this process's pid, start time and boot id, so the fuzzer
  reaches the live-process paths.
- ``stat``: the ``/proc/<pid>/stat`` parse (``_parse_stat`` of each backend). The extension
  parses as the reference's Rust does (a model of it below); the pure backend reads the line as
  the kernel writes it, one space before each field, so the two are compared on such lines only
  (a documented difference: CONTRIBUTING.md).
- ``writer``: ``PidFileWriter.at(path, ...)`` and two ``write()``s, with a fuzzed relative path
  inside a scratch directory that is the current directory: only ``OSError`` (``StorageError``
  included), ``ValueError`` or ``TypeError``, the same from both backends, the same files left
  behind, and nothing changed outside the scratch directory. A path that is absolute or has a
  ``..`` component is never handed to a writer (we may run as root; a writer replaces what is at
  its path).

The Rust oracle (``tests/oracle/reference_decode.rs``), when given, also checks ``decode`` and
``stat`` against the reference itself.
"""

from __future__ import annotations

import atexit
import os
import pathlib
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable

import shimpid._speedups as ext  # the extension is required: this is what is fuzzed
from shimpid import Absent, PidFileReader, StorageError, _common, _pure, _reader

TARGETS = ("decode", "reader", "stat", "writer")
U32_MAX, U64_MAX = 2**32 - 1, 2**64 - 1
BACKENDS = (("pure", _pure), ("cython", ext))

Oracle = Callable[[str, bytes], str]


# ---- the Rust oracle -----------------------------------------------------------------------------


def start_oracle(binary: str) -> Oracle:
    """The compiled reference (tests/oracle), answering over a pipe (see its protocol)."""
    proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ask(kind: str, data: bytes) -> str:
        proc.stdin.write(f"{kind}{data.hex()}\n".encode())
        proc.stdin.flush()
        return proc.stdout.readline().decode().rstrip("\n")

    def stop() -> None:
        proc.stdin.close()
        proc.wait()

    atexit.register(stop)
    return ask


# ---- decode --------------------------------------------------------------------------------------


def decode_outcome(module, data) -> tuple:
    try:
        r = module.PidRecord.decode(data)
    except StorageError as err:  # anything else is a crash
        return ("error", str(err), err.errno)
    return ("ok", r.pid, r.start_time)


def check_decode(data: bytes, oracle: Oracle | None = None) -> None:
    pure = decode_outcome(_pure, data)
    fast = decode_outcome(ext, data)
    assert fast == pure, f"decode: extension {fast!r} != pure {pure!r}"
    assert decode_outcome(ext, bytearray(data)) == fast, "decode: bytearray differs from bytes"
    assert decode_outcome(ext, memoryview(data)) == fast, "decode: memoryview differs from bytes"
    if pure[0] == "error":
        assert pure[2] is None, "decode: a content error carries no errno"
    else:
        _, pid, start = pure
        assert 0 <= pid <= U32_MAX and (start is None or 0 <= start <= U64_MAX)
        encoded = set()
        for name, module in BACKENDS:
            record = module.PidRecord(pid, start)
            data_out = record.encode()
            assert module.PidRecord.decode(data_out) == record, f"{name}: no round trip"
            buf = bytearray(_common.PID_RECORD_MAX_BYTES)
            assert buf[: record.encode_into(buf)] == data_out, f"{name}: encode_into differs"
            encoded.add(data_out)
        assert len(encoded) == 1, f"encode: the backends differ: {encoded!r}"
        if data == data_out:  # canonical input: encode gives it back, byte for byte
            assert _pure.PidRecord.decode(data).encode() == data
    if oracle is not None:
        answer = oracle("d", data)
        if pure[0] == "ok":
            start = "-" if pure[2] is None else str(pure[2])
            assert answer == f"ok {pure[1]} {start}", f"decode: reference says {answer!r}"
        elif answer.startswith("err utf8 "):
            assert pure[1].endswith(f"offset {answer.split()[2]}"), (pure, answer)
        else:
            assert answer.startswith("err pid "), f"decode: reference says {answer!r}"
            assert pure[1].endswith(answer[len("err pid ") :]), (pure, answer)


# ---- reader --------------------------------------------------------------------------------------

_scratch: dict[str, str] = {}


def _private_dir(kind: str) -> str:
    """A directory of this process's own, on tmpfs where there is one, removed at exit; under
    ``SHIMPID_FUZZ_SCRATCH`` if set (run.py removes that: libFuzzer exits without atexit)."""
    if kind not in _scratch:
        base = os.environ.get("SHIMPID_FUZZ_SCRATCH")
        if not base:
            base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        path = tempfile.mkdtemp(prefix=f"shimpid-fuzz-{kind}-", dir=base)
        _scratch[kind] = path
        atexit.register(shutil.rmtree, path, True)
    return _scratch[kind]


_self: dict[bytes, bytes] = {}


def substitute(data: bytes) -> bytes:
    """``@PID@``, ``@START@`` and ``@BOOT@`` made this process's pid, start time, boot id."""
    if b"@" not in data:
        return data
    if not _self:
        _self[b"@PID@"] = b"%d" % os.getpid()
        _self[b"@START@"] = b"%d" % _pure.process_start_time(os.getpid())
        _self[b"@BOOT@"] = (_common.CURRENT_BOOT_ID or "").encode()
    for key, value in _self.items():
        data = data.replace(key, value)
    return data


def _call(function) -> tuple:
    try:
        value = function()
    except StorageError as err:  # the readers' one error; anything else is a crash
        return ("error", type(err).__name__, str(err), err.errno)
    if hasattr(value, "start_time"):  # a record: compare values across the backends
        return ("ok", value.pid, value.start_time)
    return ("ok", value)


def reader_outcome(module, path: str) -> list:
    saved, _reader._backend = _reader._backend, module  # the one reader, through module
    try:
        reader = PidFileReader.at(path)
        results = [
            _call(reader.read),
            _call(reader.read_boot_id),
            _call(reader.read_pidfs_id),
            _call(reader.read_capability),
        ]
        verdict = reader.process_identity()  # no exception at all: a bad file is Absent()
    finally:
        _reader._backend = saved
    results.append(("verdict", type(verdict).__name__, verdict.pid))
    return results


def check_reader(data: bytes) -> None:
    data = substitute(data)
    path = os.path.join(_private_dir("reader"), "shim.pid")
    with open(path, "wb") as f:
        f.write(data)
    for _ in range(3):  # a recorded pid may be another's process, which may exit meanwhile
        pure = reader_outcome(_pure, path)
        fast = reader_outcome(ext, path)
        if pure == fast:
            break
    assert pure == fast, f"reader: extension {fast!r} != pure {pure!r}"
    read, verdict = pure[0], pure[4]
    if len(data) > _common.PID_FILE_MAX_BYTES:
        assert read[0] == "error", "reader: a file over the limit was read"
    else:
        decoded = decode_outcome(_pure, data)
        assert (read[0] == "ok") == (decoded[0] == "ok"), (read, decoded)
        if read[0] == "ok":
            assert read == decoded, (read, decoded)
    if read[0] == "error":
        assert all(r[0] == "error" for r in pure[:4]), pure
        assert verdict == ("verdict", "Absent", None), pure
    elif verdict[1] != "Absent":
        assert verdict[2] == read[1] and 0 < read[1] <= _common.PID_MAX, pure
    assert (verdict[1] == "Absent") == (verdict[2] is None), pure
    assert Absent().pid is None


# ---- /proc/<pid>/stat ----------------------------------------------------------------------------


def reference_stat(data: bytes) -> tuple[int, int | None]:
    """(state byte, start time or None) as the reference's Rust parse reads a stat line (and the
    extension's state: the first byte of the first field after the last ")")."""
    close = data.rfind(b")")
    if close < 0:
        return 0, None
    tail = data[close + 1 :]
    i, n, field, state = 0, len(tail), 0, 0
    while i < n:
        while i < n and tail[i] == 0x20:
            i += 1
        token = i
        while i < n and tail[i] not in (0x20, 0x0A):
            i += 1
        if token == i:
            return state, None
        field += 1
        if field == 1:
            state = tail[token]
        elif field == 20:
            digits = tail[token:i]
            if not all(0x30 <= b <= 0x39 for b in digits) or int(digits) > U64_MAX:
                return state, None
            return state, int(digits)
    return state, None


def kernel_shaped(data: bytes) -> bool:
    """One space before each field after the last ")" (up to the newline), as the kernel writes."""
    line = data[data.rfind(b")") + 1 :].partition(b"\n")[0]
    return line == b"" or (line.startswith(b" ") and b"  " not in line)


def check_stat(data: bytes, oracle: Oracle | None = None) -> None:
    fast = ext._parse_stat(data)
    pure = _pure._parse_stat(data)
    for got in (fast, pure):
        assert isinstance(got, tuple) and len(got) == 2 and 0 <= got[0] <= 255
        assert got[1] is None or 0 <= got[1] <= U64_MAX
    if b")" not in data:
        assert fast == pure == (0, None), (fast, pure)
    assert fast == reference_stat(data), (
        f"stat: extension {fast!r}, reference {reference_stat(data)}"
    )
    if kernel_shaped(data):
        assert fast == pure, f"stat: extension {fast!r} != pure {pure!r}"
    if oracle is not None:
        answer = oracle("s", data)
        assert answer == ("-" if fast[1] is None else str(fast[1])), (fast, answer)


# ---- writer --------------------------------------------------------------------------------------

MODES = (0o644, 0o600, 0o000, 0o7777, 0o10000, -1, 0o444, 0o2755)
ALLOWED = (OSError, ValueError, TypeError)  # StorageError is an OSError
_FIXTURES = ("f", "d", "ln", "dl", "dang", "fifo", "empty")


def _make_fixtures() -> None:
    """The scratch directory's contents before each write (symlinks point inside only)."""
    with open("f", "wb") as f:
        f.write(b"1\n")
    with open("empty", "wb"):
        pass
    os.mkdir("d")
    with open("d/g", "wb") as f:
        f.write(b"2\n3\n")
    os.symlink("f", "ln")
    os.symlink("d", "dl")
    os.symlink("nowhere", "dang")
    os.mkfifo("fifo")


def _reset_scratch() -> None:
    for name in os.listdir("."):
        if os.path.isdir(name) and not os.path.islink(name):
            shutil.rmtree(name)
        else:
            os.unlink(name)
    _make_fixtures()


def _snapshot(top: str = ".") -> dict[str, tuple]:
    """Everything under top, never following a symlink: names, kinds, modes, contents."""
    seen: dict[str, tuple] = {}
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                seen[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as f:
                    seen[path] = ("file", stat.S_IMODE(info.st_mode), f.read())
            else:
                seen[path] = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode))
    return seen


class Scratch:
    """A private directory with a sentinel beside the scratch directory the writers write in,
    which is the current directory while the writer target runs."""

    def __init__(self) -> None:
        self.root = _private_dir("writer")
        self.dir = os.path.join(self.root, "scratch")
        os.makedirs(self.dir, exist_ok=True)
        self.sentinel = os.path.join(self.root, "sentinel")
        with open(self.sentinel, "wb") as f:
            f.write(b"must not change\n")
        self.outside = self._outside()
        os.chdir(self.dir)
        _reset_scratch()

    def _outside(self) -> tuple:
        info = os.lstat(self.sentinel)
        return sorted(os.listdir(self.root)), info.st_ino, info.st_mtime_ns, info.st_size

    def check_outside(self) -> None:
        assert os.getcwd() == self.dir, "writer: the current directory changed"
        assert self._outside() == self.outside, "writer: something outside the scratch changed"


_writer_scratch: list[Scratch] = []


def confined(raw: bytes) -> bool:
    """Whether a relative path stays inside the current directory: not absolute, no ``..``
    (also before a NUL byte, where a C string would end)."""
    return not raw.startswith(b"/") and b".." not in re.split(rb"[/\x00]", raw)


def writer_input(data: bytes) -> tuple[object, dict] | None:
    """(path, keyword arguments) from a fuzz input, or None if the path could leave the scratch.

    Byte 0: bit 0 atomic, bit 1 identity_line, bits 2-3 the path's type (bytes, str with
    surrogateescape, str from UTF-8 with surrogatepass, pathlib.PurePosixPath), bit 4 a
    capability (the bytes before the first 0x01, as Latin-1), bits 5-7 the mode (MODES).
    """
    if not data:
        return None
    flags, rest = data[0], data[1:]
    capability = None
    if flags & 0x10:
        head, _, rest = rest.partition(b"\x01")
        capability = head.decode("latin-1")
    kind = (flags >> 2) & 3
    path: object
    if kind == 0:
        path = rest
    elif kind == 1:
        path = rest.decode("utf-8", "surrogateescape")
    else:
        try:
            path = rest.decode("utf-8", "surrogatepass")  # may hold lone surrogates
        except UnicodeDecodeError:
            path = rest.decode("utf-8", "surrogateescape")
        if kind == 3:
            path = pathlib.PurePosixPath(path)
    text = os.fspath(path)
    forms = [text] if isinstance(text, bytes) else [text.encode("utf-8", "surrogatepass")]
    if isinstance(text, str):
        try:
            forms.append(os.fsencode(text))
        except UnicodeEncodeError:
            pass
    if not all(confined(form) for form in forms):
        return None
    options = {
        "atomic": bool(flags & 1),
        "identity_line": bool(flags & 2),
        "capability": capability,
        "mode": MODES[flags >> 5],
    }
    return path, options


def writer_outcome(module, path: object, options: dict) -> tuple:
    record = module.PidRecord(4242, 99)
    try:
        writer = module.PidFileWriter.at(path, **options)
        writer.write(record)
        writer.write(module.PidRecord(7))  # replacing what the first write made
    except ALLOWED as err:
        result: tuple = ("error", type(err).__name__, getattr(err, "errno", None))
    else:
        result = ("ok",)
    return result, _snapshot()


def check_writer(data: bytes) -> None:
    parsed = writer_input(data)
    if parsed is None:
        return  # never hand a path that could leave the scratch directory to a writer
    if not _writer_scratch:
        _writer_scratch.append(Scratch())
    scratch = _writer_scratch[0]
    os.chdir(scratch.dir)  # the desk suite's replay goes back where it was after each input
    path, options = parsed
    results = []
    for _name, module in BACKENDS:
        try:
            results.append(writer_outcome(module, path, options))
        finally:
            scratch.check_outside()
            _reset_scratch()
    (pure, pure_files), (fast, fast_files) = results
    assert fast == pure, f"writer: extension {fast!r} != pure {pure!r} for {path!r} {options}"
    assert fast_files == pure_files, f"writer: the backends left different files for {path!r}"


CHECKS: dict[str, Callable[..., None]] = {
    "decode": check_decode,
    "reader": lambda data, oracle=None: check_reader(data),
    "stat": check_stat,
    "writer": lambda data, oracle=None: check_writer(data),
}
