# The extension: the pure module's types (the same API, tested by test_package), and its own
# functions, declared with their signatures; shimpid._backend checks both against its Protocol.
from collections.abc import Iterator
from typing import Final, Literal

from ._common import Absent, Kept, Legacy, Verified
from ._pure import PidFileWriter as PidFileWriter
from ._pure import PidRecord as PidRecord
from ._pure import WriterCore as WriterCore

BACKEND: Final[Literal["cython", "python"]]

def is_process_alive(pid: int, /) -> bool: ...
def process_start_time(pid: int, /) -> int | None: ...
def _classify(
    pid: int, start_time: int | None, pidfs_id: int | None, /
) -> Verified | Legacy | Absent: ...
def _pin_and_classify(
    pid: int, start_time: int | None, pidfs_id: int | None, pidfd: Kept, /
) -> Verified | Legacy | Absent: ...
def _identity_at(
    directory_fd: int | None, target: bytes, path: str | bytes | None = None, /
) -> Verified | Legacy | Absent: ...
def _pidfd_level() -> int: ...
def _read_pid_file(
    target: bytes, path: str | bytes, directory_fd: int | None = None, /
) -> bytes: ...
def _set_pidfd_level(level: int, /) -> int: ...
def _parse_stat(data: bytes, /) -> tuple[int, int | None]: ...
def _scan_suffix(
    directory_fd: int,
    suffix: bytes,
    prefix: str,
    skip: object,
    locks: bool = False,
    kind: type[tuple[object, ...]] = ...,
    why: str | None = None,
    /,
) -> Iterator[tuple[object, ...]]: ...
def _publish(cls: type, module: str, /) -> None: ...
