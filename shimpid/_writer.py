"""PidFileWriter's policy, written once: what it accepts, what it shows, how it is made.

Each backend's ``PidFileWriter`` is this class over that backend's ``WriterCore``, which holds
what a write needs and does the writes (in C in the extension: ``write_current`` may run after
``fork()``, and is the core's own method, with no Python frame in between)::

    class PidFileWriter(_writer.PidFileWriter, WriterCore): ...

and nothing may subclass that. The core's part: ``_prepare`` sets everything at once (and
refuses a writer prepared already), ``_check`` refuses one not prepared yet, ``_write``,
``write_current``, ``_write_for`` and ``_sibling`` write, and ``_path``, ``_target`` (the
absolute path it writes), ``_atomic``, ``_mode``, ``_identity`` and ``_capability`` say what it
was prepared with. No ``__getattr__``
anywhere: it would cost ``writer.write_current()`` CPython's method fast path, and an
allocation after ``fork()``.
"""

from __future__ import annotations

import operator

from . import _common
from ._common import CURRENT_BOOT_ID, Sealed, end_init, mark_initialising, refuse_base

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os

    from typing_extensions import Self

    from ._backend import PidRecord
    from ._common import PathArg

__all__ = ["PidFileWriter"]


class PidFileWriter(Sealed):
    """Writes records to one pid file; everything it needs is prepared when it is created.

    ``atomic=True`` writes a temporary sibling and renames it over the path, so a reader sees the
    old record or the new one, never a torn one. ``atomic=False`` truncates and writes in place,
    as the reference does. ``identity_line=True`` adds line 4, this boot's identity and (from
    ``write_current`` and ``write_for``) the process's pidfs inode; ``False`` writes exactly
    ``record.encode()``. ``capability`` goes on line 3, as boxlite writes its own
    (``services-mux-v1``): one to 64 characters of printable ASCII, without leading or
    trailing spaces (boxlite trims them), else ``ValueError`` (``TypeError`` if not a ``str``).

    ``path`` is a ``str``, ``bytes`` or path-like; a relative path is anchored to the current
    directory now, and its directory must exist now. A NUL byte, or a path that names no file
    (``""``, ``dir/``), raises ``StorageError``.
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        # Each backend's PidFileWriter, and nothing below it.
        if PidFileWriter not in cls.__bases__:
            refuse_base(cls.__mro__[1])
        for base in cls.__bases__:
            if base is not PidFileWriter and issubclass(base, PidFileWriter):
                refuse_base(base)
        super().__init_subclass__(**kwargs)

    if TYPE_CHECKING:  # the core's part (see the module's doc)
        _path: str | bytes
        _target: bytes
        _atomic: bool
        _mode: int
        _identity: bytes
        _capability: bytes

        def _prepare(
            self,
            given: str | bytes,
            target: bytes,
            temp_prefix: bytes,
            atomic: bool,
            mode: int,
            identity: bytes,
            capability: bytes,
            info: os.stat_result,
        ) -> None: ...
        def _check(self) -> None: ...
        def _write(self, record: PidRecord) -> None: ...
        def _write_for(self, pid: int, start_time: int | None = None) -> None: ...
        def write_current(self, /) -> None: ...

    def __init__(
        self,
        path: PathArg,
        *,
        atomic: bool = True,
        mode: int = 0o644,
        identity_line: bool = True,
        capability: str | None = None,
    ) -> None:
        already = _common.ALREADY_INITIALISED.format("PidFileWriter")
        mark_initialising(self, already)  # refuses an __init__ re-entered from a conversion
        try:
            try:
                self._check()
            except TypeError:
                pass
            else:
                raise TypeError(already)
            # Each argument converted once, before anything is set: a conversion may run code
            # that tries this writer, and finds it not initialised.
            mode = _common.check_mode(mode)
            line3 = _common.check_capability(capability)
            atomic = bool(atomic)
            identity = _common.identity_prefix(bool(identity_line))
            given, target, temp_prefix, info = _common.writer_paths(path, atomic)
            self._prepare(given, target, temp_prefix, atomic, mode, identity, line3, info)
        finally:
            end_init(self)

    @classmethod
    def at(
        cls,
        path: PathArg,
        *,
        atomic: bool = True,
        mode: int = 0o644,
        identity_line: bool = True,
        capability: str | None = None,
    ) -> Self:
        """``PidFileWriter(path, ...)``: checks the path and prepares everything a write needs."""
        return cls(
            path, atomic=atomic, mode=mode, identity_line=identity_line, capability=capability
        )

    @property
    def path(self) -> str | bytes:
        """The path, as given."""
        self._check()
        return self._path

    @property
    def atomic(self) -> bool:
        """Whether writes replace the file atomically."""
        self._check()
        return self._atomic

    @property
    def mode(self) -> int:
        """The mode new files are created with (filtered by the umask)."""
        self._check()
        return self._mode

    @property
    def boot_id(self) -> str | None:
        """The boot identity this writer adds to each record, if any."""
        self._check()
        return CURRENT_BOOT_ID if self._identity else None

    @property
    def capability(self) -> str | None:
        """The capability this writer puts on line 3, if any."""
        self._check()
        return self._capability.decode() or None

    def __repr__(self) -> str:
        self._check()
        return f"PidFileWriter({self._path!r}, atomic={self._atomic}, mode={self._mode:#o})"

    def write(self, record: PidRecord) -> None:
        """Write ``record``; raises ``OSError`` (with the errno) and leaves no temporary file.

        The record is written as it is, with this boot's identity: a pidfs fingerprint is
        added only by ``write_current`` and ``write_for``, which look at the live process.
        """
        self._write(record)  # the core's own PidRecord only (else TypeError)

    def write_for(self, pid: int) -> None:
        """Write the record of process ``pid``, read from the parent (see ``shimpid.spawn``).

        Raises ``ProcessLookupError`` if no process holds ``pid``, or it names a thread, not a
        process. A child that has exited but is not reaped still holds it, and is recorded.
        Where the system keeps no start times (no /proc mounted) the record has none; a /proc
        of another pid namespace raises ``ForeignProcError``.
        """
        self._check()
        pid = operator.index(pid)
        if not _common.names_a_process(pid):
            raise _common.no_such_process(pid)
        self._write_for(pid)
