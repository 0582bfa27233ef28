"""PidFileReader: one pid file, read and judged, written once over the backend's primitives.

The backend reads the file (``_read_pid_file``: one read, bounded), decodes it
(``PidRecord.decode``), judges it against the live system (``_identity_at``) and pins a process
for a handle (``_pin_and_classify``); what a reader answers, and when a record counts as none,
is here. A handle is opened as the commands that signal open theirs (``_operate``): the file
read through its directory, and trusted only if nobody else could have written it.
"""

from __future__ import annotations

from . import _backend, _common
from ._common import Final, end_init

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._backend import PidRecord
    from ._common import Absent, Extras, Legacy, PathArg, Verified
    from ._handle import ProcessHandle

__all__ = ["PidFileReader"]


class PidFileReader(Final):
    """Reads one pid file and classifies its record against the live system."""

    __slots__ = ("_path", "_target")

    def __init__(self, path: PathArg) -> None:
        self._begin_init("_target")
        try:
            given, target = _common.resolve_path(path)
            self._path = given
            self._target = target
        finally:
            end_init(self)

    @classmethod
    def at(cls, path: PathArg) -> PidFileReader:
        """``PidFileReader(path)``: a reader for one pid file (it reads nothing yet)."""
        return cls(path)

    @property
    def path(self) -> str | bytes:
        """The path, as given."""
        return self._path

    def __repr__(self) -> str:
        return f"PidFileReader({self._path!r})"

    def read(self) -> PidRecord:
        """The record in the file; ``StorageError`` if it is missing, unreadable or not a record."""
        return self._read_entry(False)[0]

    def read_boot_id(self) -> str | None:
        """The boot identity the file carries, or ``None``; ``StorageError`` as read()."""
        return self._read_entry()[1].boot_id

    def read_pidfs_id(self) -> int | None:
        """The pidfs inode the file records, or ``None``; ``StorageError`` as read()."""
        return self._read_entry()[1].pidfs_id

    def read_capability(self) -> str | None:
        """The capability on line 3 (boxlite's ``services-mux-v1``), or ``None``."""
        return self._read_entry()[1].capability

    def open_process(
        self, *, allow_legacy: bool = False, secure: bool = True
    ) -> ProcessHandle | None:
        """A handle that signals the recorded process and nothing else, or ``None``.

        ``None`` unless the verdict is ``Verified`` (or ``Legacy``, with ``allow_legacy``).
        ``secure`` (the default, for everyone, as ``shimpid stop``): ``UntrustedPath`` if another
        user could have written the file (not root's or this user's, writable by group or
        others, in a directory where others can replace it) or steered its path (see the
        security page); else that user would choose the process this one signals. Raises
        ``OSError`` where ``process_identity()`` does. See ``shimpid._handle``.
        """
        from . import _operate  # imported when first needed: see shimpid/__init__.py

        allow_legacy, secure = bool(allow_legacy), bool(secure)
        return _operate.open_process(
            self._target, self._path, allow_legacy, secure, _backend._pin_and_classify
        )

    def process_identity(self) -> Verified | Legacy | Absent:
        """``Verified(pid)``, ``Legacy(pid)`` or ``Absent()``: see the identity rules
        (docs/reference/identity.md).

        Raises ``OSError`` (with the errno) when the system cannot tell: a failure to look is
        never an answer.
        """
        return _backend._identity_at(None, self._target, self._path)

    def _read_entry(self, extras: bool = True) -> tuple[PidRecord, Extras]:
        """The record and what lines 3 and 4 say, from one read of the file."""
        data = _backend._read_pid_file(self._target, self._path)
        try:
            record = _backend.PidRecord.decode(data)
        except _common.StorageError as err:
            raise _common.in_file(err, self._path) from err
        return record, _common.parse_extras(data) if extras else _common.NO_EXTRAS


PidFileReader.__module__ = "shimpid"  # shown as what it is to users (reprs, documentation)
