# cython: language_level=3, freethreading_compatible=True, cdivision=True
"""Cython backend: ``_pure.py`` again, with the work done in C.

Encode, decode, write and the ``/proc`` stat parse are ``noexcept nogil`` functions over
libc/POSIX declarations that touch only the stack and what a writer prepared when it was created.
So ``PidFileWriter.write_current()`` can run in a child after ``fork()``: another thread of the
parent may have held the malloc lock at the fork, and the child may only make async-signal-safe
calls until it execs. Python objects are made only for results and errors, with the GIL held.
The rules are ``_pure.py``'s; read the two side by side.

Names: a function or method with the same role has ``_pure.py``'s name (``_byte_view``,
``_classify``, ...; ``_check_target`` and ``_write_temp`` are ``_common``'s ``check_target`` and
``write_temp``, which the pure writer uses). The ``nogil`` body of a ``def _x`` is ``x``
(``classify``, ``identity_at``, ``parse_stat``, ``pidfd_level``, ``read_pid_file``); those of
``is_process_alive`` and ``process_start_time`` are ``process_alive`` and ``start_time_of``.
``_common``'s rules written in C keep ``_common``'s names (``names_a_process``, ``is_boot_id``,
``from_another_boot``; ``not_a_process`` is ``NOT_A_PROCESS_ERRNOS``). The C-level API declared
in ``_speedups.pxd`` is ``record_*`` and ``writer_*``. Only here, with no pure counterpart:

- what ``os`` does for the pure backend: ``open_retry``, ``read_retry``, ``ftruncate_retry``
  (EINTR, as PEP 475), ``_check_no_nul``, ``lstat``, ``format_u64``, ``status_number``,
  ``write_entry``;
- the fast paths: ``decode_canonical``, ``extras_canonical`` and ``ascii_prefix`` for the bytes
  writers write (anything else goes to ``_common.decode_record``), ``_scan_suffix`` for
  ``scan()``, and ``replace`` choosing ``_replace_by_exchange`` (docs/benchmarks.md);
- turning C results into the pure backend's objects: ``_verdict``, ``_process_error``,
  ``_read_failure``, ``_extras_from``, and ``_ready`` (an object made by ``__new__`` alone).

Where Python code can run inside a method (the caller's, through a conversion; or a signal
handler, a finaliser or another thread at any step that runs bytecode or allocates), and why
it is safe. The rule: convert every argument into locals first, then check and commit in one
step with no Python code between; an object being initialised is marked, so an ``__init__``
re-entered from a conversion raises ``TypeError`` and leaves it as it was (issue 17).

- ``PidRecord.__init__``: ``__index__`` of pid and start_time. Marked first (re-entry
  raises, ``__hash__`` raises: no value yet); the struct is set after. A record hashed once
  (even one made by ``__new__`` alone, PidRecord(0)) never changes.
- ``PidFileWriter.__init__`` (``shimpid._writer``): ``__index__`` (mode), ``__bool__``
  (atomic, identity_line, each once), ``__fspath__`` (path); a ``str``/``bytes`` subclass
  (path, capability) is copied to the exact type before anything looks at it
  (``_common.exact_text``): its methods never run. Marked first; methods find no path
  meanwhile (``_ready``). ``WriterCore._prepare`` then takes converted values; what it looks
  at (the directory's stat) may run code, before it checks that the writer is not prepared
  and sets the bytes and the C struct that points into them, with no Python code between,
  once for good. Its methods check ``self``'s type (``binding(False)``), ``_sibling`` makes
  its result with the core's own ``tp_new``, and the class is immutable.
- ``PidFileWriter.write_for``: ``__index__`` of pid, in the policy; a writer never changes once
  made, so its struct's pointers stay valid, and the record is built on the stack afterwards.
- ``PidRecord.decode``, ``PidRecord.encode_into``: a buffer export and its release
  (``__buffer__``, ``__release_buffer__``). Nothing runs between the export and the use of
  its bytes; the general decode path copies them first.
- ``_pin_and_classify``, ``_classify``, ``is_process_alive``, ``process_start_time`` and
  typed parameters (``int mode``, ``int directory_fd``): converted on entry, into locals.
- The reads (``_read_pid_file``, ``identity_at``): the general rules (``_common``) run after
  the read; the path pointer is used only by the read, the bytes are on this call's stack.
- ``_scan_suffix``: its ``skip`` and the consumer between items. ``d_name`` is used before
  ``__next__`` returns, and only its iterator, which refuses to be re-entered (``close()``
  too) while it runs, calls ``readdir()`` on its stream.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyTypeObject
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.errno cimport (EACCES, EAGAIN, EEXIST, EINTR, EINVAL, EIO, EISDIR, EMFILE, ENFILE,
                         ENAMETOOLONG, ENOENT, ENOMEM, ENOSYS, ENXIO, EPERM, ESRCH, EXDEV,
                         errno)
from libc.stdint cimport uint32_t, uint64_t
from libc.stdio cimport rename
from libc.string cimport memchr, memcmp, memcpy, memset, strdup, strlen
from posix cimport fcntl, unistd
from posix.signal cimport kill
from posix.time cimport nanosleep, timespec
from posix.stat cimport S_ISDIR, S_ISLNK, S_ISREG, fstat, lstat, struct_stat
from posix.types cimport mode_t, pid_t

import os

from . import _common, _writer
from ._common import ABSENT, CURRENT_BOOT_ID, Legacy, StorageError, Verified

cdef extern from "_speedups_compat.h":
    enum: SHIMPID_LINUX
    enum: SHIMPID_DARWIN
    const char *shimpid_digit_pairs
    unsigned long long shimpid_next_temp() noexcept nogil
    void shimpid_clear_errno() noexcept nogil
    int shimpid_rename_exchange(const char *a, const char *b) noexcept nogil
    long shimpid_fs_type(const char *path) noexcept nogil
    long shimpid_fd_fs_type(int fd) noexcept nogil
    int shimpid_pidfd_open(pid_t pid) noexcept nogil
    int shimpid_darwin_info(pid_t pid, char *state, uint64_t *start) noexcept nogil
    int shimpid_record_locked(int fd, int *pid) noexcept nogil

cdef extern from "Python.h":
    object PyUnicode_DecodeFSDefaultAndSize(const char *s, Py_ssize_t size)
    unsigned long Py_TPFLAGS_IMMUTABLETYPE
    void PyType_Modified(PyTypeObject *type)

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    struct dirent:
        unsigned char d_type
        char d_name[256]
    enum: DT_REG
    enum: DT_UNKNOWN
    DIR *fdopendir(int fd)
    int dirfd(DIR *stream)
    dirent *readdir(DIR *d)
    void rewinddir(DIR *d)
    int closedir(DIR *d)

cdef extern from "<sys/stat.h>" nogil:
    int fstatat(int dirfd, const char *path, struct_stat *buf, int flags)
    enum: AT_SYMLINK_NOFOLLOW

cdef extern from "<sys/file.h>" nogil:
    int flock(int fd, int operation)
    enum: LOCK_SH
    enum: LOCK_NB

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum: POLLIN
    int poll(pollfd *fds, unsigned long nfds, int timeout)


ctypedef struct lock_probe_t:  # scan(locks=True): whether a process holds the file locked
    int locked  # 1, 0, or -1: cannot tell
    int pid  # the holder a POSIX lock names, or 0
    uint64_t dev, ino  # the file's, for /proc/locks


cdef enum:
    RECORD_MAX_BYTES = 48
    FILE_MAX_BYTES = 4096
    BOOT_ID_BYTES = 36
    IDENTITY_PREFIX_MAX = 128  # line 4 as a writer prepares it (_common.identity_prefix)
    CAPABILITY_MAX = 64
    # What a writer writes: the record, an empty line 2 if it has no start time, line 3 (the
    # capability, or empty), line 4 with " pidfs=<u64>", and their newlines.
    WRITE_MAX_BYTES = RECORD_MAX_BYTES + 1 + CAPABILITY_MAX + 1 + IDENTITY_PREFIX_MAX + 7 + 20 + 1
    STAT_READ_BYTES = 1024
    STATUS_READ_BYTES = 4096
    TEMP_SUFFIX_MAX = 35
    TEMP_PATH_MAX = 4096
    TEMP_ATTEMPTS = 16
    IN_PLACE_ATTEMPTS = 16
    IN_PLACE_PAUSE_NS = 1000000
    # read_pid_file() failures that are not an errno
    FAIL_NOT_REGULAR = -1
    FAIL_TOO_LARGE = -2
    # verdicts; a negative value is -errno: the system could not tell
    IDENTITY_ABSENT = 0
    IDENTITY_LEGACY = 1
    IDENTITY_VERIFIED = 2
    # pidfd levels, as _common's
    NO_PIDFD = 0
    PIDFD = 1
    PIDFS = 2
    # _proc_state()'s answers, as _pure's
    PROC_NONE = 0
    PROC_OURS = 1
    PROC_FOREIGN = 2
    # process lookups: found, or nobody holds the pid (else -errno, or HIDDEN)
    FOUND = 0
    GONE = 1
    # alive, but /proc does not show it (hidepid): negative as an errno is, and none
    HIDDEN = -0x10000

#: The backend's name, as shimpid.BACKEND gives it.
BACKEND = "cython"

cdef uint32_t PID_MAX = 0x7FFFFFFF


cdef inline bint names_a_process(uint64_t pid) noexcept nogil:
    """_common.names_a_process: not 0 (our process group), not a negative pid_t."""
    return 0 < pid <= PID_MAX

cdef uint64_t U64_MAX = 0xFFFFFFFFFFFFFFFF
cdef long PIDFS_MAGIC = 0x50494446
cdef long TMPFS_MAGIC = 0x01021994
cdef long RAMFS_MAGIC = 0x858458f6

cdef tuple NONE_4 = (None, None, None, None)  # a scan item's fields that identity_at left out
cdef object _own_extras = _common.own_extras
cdef object _slot = _common.slot
# The open flags are _common's (and their reasons).
cdef int CREATE_TEMP = _common.CREATE_TEMP
cdef int OPEN_IN_PLACE = _common.OPEN_IN_PLACE
cdef int CREATE_IN_PLACE = _common.CREATE_IN_PLACE
cdef int OPEN_READ = _common.OPEN_READ

# Every limit _common defines, as this module was compiled with it.
if (_common.PID_RECORD_MAX_BYTES, _common.PID_FILE_MAX_BYTES, _common.TEMP_SUFFIX_MAX,
        _common.TEMP_PATH_MAX, _common.TEMP_ATTEMPTS,
        _common.STAT_READ_BYTES, _common.STATUS_READ_BYTES, _common.WRITE_MAX_BYTES,
        _common.PID_MAX, _common.BOOT_ID_BYTES, _common.PIDFS, _common.PIDFD, _common.NO_PIDFD,
        _common.PIDFS_MAGIC, _common.CAPABILITY_MAX, _common.IN_PLACE_ATTEMPTS,
        round(_common.IN_PLACE_PAUSE * 1e9), _common.IDENTITY_PREFIX_MAX) != (
        RECORD_MAX_BYTES, FILE_MAX_BYTES, TEMP_SUFFIX_MAX, TEMP_PATH_MAX, TEMP_ATTEMPTS,
        STAT_READ_BYTES, STATUS_READ_BYTES, WRITE_MAX_BYTES, PID_MAX,
        BOOT_ID_BYTES, PIDFS, PIDFD, NO_PIDFD, PIDFS_MAGIC, CAPABILITY_MAX, IN_PLACE_ATTEMPTS,
        IN_PLACE_PAUSE_NS, IDENTITY_PREFIX_MAX):
    raise ImportError("shimpid._speedups was built against another shimpid._common")
# _common's errno sets, as not_a_process() and pidfd_level() test them
if (_common.NOT_A_PROCESS_ERRNOS, _common.PASSING_ERRNOS) != (
        {ESRCH, ENOENT, EINVAL}, {EMFILE, ENFILE, ENOMEM}):
    raise ImportError("shimpid._speedups was built against another shimpid._common")

# This boot's identity, for the readers' comparisons without the GIL (empty: unknown).
cdef char current_boot_id[BOOT_ID_BYTES]
cdef bint current_boot_known = CURRENT_BOOT_ID is not None
cdef bytes _boot = CURRENT_BOOT_ID.encode() if current_boot_known else b""
if current_boot_known:
    memcpy(current_boot_id, PyBytes_AS_STRING(_boot), BOOT_ID_BYTES)
# Line 4 as this process's writers write it, up to its pidfs field (extras_canonical): the
# writers' prefix (its first own_prefix_len bytes), then " pidfs=".
cdef bytes _own_pidfs = _common.OWN_PIDFS
cdef const char *own_pidfs = PyBytes_AS_STRING(_own_pidfs)
cdef Py_ssize_t own_pidfs_len = PyBytes_GET_SIZE(_own_pidfs)
cdef Py_ssize_t own_prefix_len = len(_common.IDENTITY_PREFIX)
if _own_pidfs[:own_prefix_len] != _common.IDENTITY_PREFIX:
    raise ImportError("shimpid._common.OWN_PIDFS does not begin with the writers' prefix")


# ============================================================================
# PidRecord: the codec
# ============================================================================


@cython.final
@cython.freelist(16)
@cython.binding(False)  # methods that check self's type: PidRecord.encode(object()) is refused
cdef class PidRecord:
    """PidRecord(pid, start_time=None)
--

A process's identity as a pid file holds it: ``pid`` and, if known, ``start_time``.

An immutable, hashable, picklable value. ``pid`` is ``0 .. 2**32-1`` and ``start_time``
``0 .. 2**64-1`` or ``None``: out of range raises ``OverflowError``, a non-integer
``TypeError``.
"""

    def __init__(self, pid, start_time=None):
        cdef pid_record_t rec
        cdef bint refused
        # A record is a value: it never changes (its hash would). __index__ may call back:
        # an __init__ re-entered from it is refused as a second one is (see the module's doc).
        # Looked at and marked in one step, which another thread (free-threaded) cannot split.
        with cython.critical_section(self):
            refused = self._ready or self._initialising
            self._initialising = self._initialising or not refused
        if refused:
            raise TypeError(_common.RECORD_IMMUTABLE)
        try:
            # PyNumber_Index: a C conversion alone would also take floats, through __int__.
            # Its own errors (the caller's __index__) as they are; the range's, as pure's.
            index = PyNumber_Index(pid)
            try:
                rec.pid = index
            except OverflowError:
                raise OverflowError(_common.PID_RANGE) from None
            rec.has_start_time = start_time is not None
            rec.start_time = 0
            if rec.has_start_time:
                index = PyNumber_Index(start_time)
                try:
                    rec.start_time = index
                except OverflowError:
                    raise OverflowError(_common.START_TIME_RANGE) from None
        except BaseException:
            with cython.critical_section(self):
                self._initialising = False
            raise
        # All or nothing, with no Python code since the conversions, in one step again.
        with cython.critical_section(self):
            self.rec = rec
            self._ready = True
            self._initialising = False

    def __setattr__(self, name, value):
        raise AttributeError(_common.record_immutable("set", name))

    def __delattr__(self, name):
        raise AttributeError(_common.record_immutable("delete", name))

    @property
    def pid(self):
        return self.rec.pid

    @property
    def start_time(self):
        return self.rec.start_time if self.rec.has_start_time else None

    def __eq__(self, other):
        if type(other) is not PidRecord:
            return NotImplemented
        cdef pid_record_t *theirs = &(<PidRecord>other).rec
        return (self.rec.pid == theirs.pid
                and self.rec.has_start_time == theirs.has_start_time
                and self.rec.start_time == theirs.start_time)

    def __hash__(self):
        cdef bint refused
        if not self._ready:
            # Made by __new__ alone: PidRecord(0), for good once hashed (a set or dict holds
            # it by that hash). Being initialised: it has no value yet. (As __init__'s look.)
            with cython.critical_section(self):
                refused = self._initialising
                self._ready = self._ready or not refused
            if refused:
                raise TypeError(_common.RECORD_INITIALISING)
        return hash((self.rec.pid, self.start_time))

    def __repr__(self):
        return f"PidRecord(pid={self.rec.pid}, start_time={self.start_time!r})"

    def __reduce__(self):
        """__reduce__($self)
--

"""
        return (PidRecord, (self.rec.pid, self.start_time))

    @staticmethod
    @cython.binding(True)  # a function of the class's, as pure's: PidRecord.current pickles
    def current():
        """This process's pid and start time (``None`` where the platform gives none)."""
        cdef pid_record_t record
        # The GIL stays held: a caller after fork() must take no lock (see write_current).
        record_current(&record)
        return _new_record(&record)

    @staticmethod
    @cython.binding(True)  # as current
    def decode(data):
        """Parse a pid file's bytes (any bytes-like object) exactly as the reference's
        ``PidRecord::decode`` does (the rules: the file format page); ``StorageError`` if they
        hold no record."""
        cdef Py_buffer view
        if type(data) is bytes:
            return _decode(<const unsigned char *>PyBytes_AS_STRING(data),
                           PyBytes_GET_SIZE(data), data)
        _byte_view(data, &view)
        try:
            return _decode(<const unsigned char *>view.buf, view.len, None)
        finally:
            PyBuffer_Release(&view)

    def encode(self):
        """encode($self)
--

The bytes a pid file holds: ``b"<pid>\\n<start_time>\\n"``, or ``b"<pid>\\n"``."""
        cdef char buf[RECORD_MAX_BYTES]
        return PyBytes_FromStringAndSize(buf, record_encode(&self.rec, buf))

    def encode_into(self, buffer):
        """encode_into($self, buffer)
--

Write ``encode()`` into a writable buffer of at least 48 bytes; return its length."""
        cdef Py_buffer view
        _byte_view(buffer, &view)
        try:
            if view.readonly:
                raise TypeError(_common.BUFFER_READONLY)
            if view.len < RECORD_MAX_BYTES:
                raise ValueError(_common.buffer_too_small(view.len))
            return record_encode(&self.rec, <char *>view.buf)
        finally:
            PyBuffer_Release(&view)


cdef int _byte_view(object obj, Py_buffer *view) except -1:
    """A contiguous buffer of obj's bytes, with the pure backend's errors (the exporter words its
    own, and picks its type: "memoryview: underlying buffer is not C-contiguous" is a
    BufferError, numpy's "ndarray is not C-contiguous" a ValueError)."""
    try:
        PyObject_GetBuffer(obj, view, PyBUF_SIMPLE)
    except TypeError:  # (CPython names a static type in full: "datetime.date")
        raise TypeError(_common.not_bytes_like(obj)) from None
    except (BufferError, ValueError):
        if not memoryview(obj).c_contiguous:  # (what it says otherwise, as the pure backend)
            raise BufferError(_common.BUFFER_NOT_CONTIGUOUS) from None
        raise
    return 0


cdef inline PidRecord _new_record(const pid_record_t *record):
    # A record made by __new__ alone is PidRecord(0): its struct starts zeroed.
    cdef PidRecord result = PidRecord.__new__(PidRecord)
    result.rec = record[0]
    result._ready = True
    return result


cdef PidRecord _decode(const unsigned char *data, Py_ssize_t size, object original):
    """The record in data: what writers write in C, anything else by the general rules
    (``_common.decode_record``, raising ``StorageError``). original: data as bytes, or None."""
    cdef pid_record_t record
    if not record_decode_canonical(data, size, &record):
        if original is None:
            original = PyBytes_FromStringAndSize(<const char *>data, size)
        pid, start_time = _common.decode_record(original)
        record.pid = pid
        record.has_start_time = start_time is not None
        record.start_time = 0 if start_time is None else start_time
    return _new_record(&record)


cdef Py_ssize_t format_u64(uint64_t value, char *buf) noexcept nogil:
    """The decimal digits of value at buf; returns their number (20 at most)."""
    cdef char digits[20]
    cdef Py_ssize_t i = 20
    cdef uint64_t pair
    while value >= 100:
        pair = value % 100
        value //= 100
        i -= 2
        memcpy(digits + i, shimpid_digit_pairs + 2 * pair, 2)
    if value >= 10:
        i -= 2
        memcpy(digits + i, shimpid_digit_pairs + 2 * value, 2)
    else:
        i -= 1
        digits[i] = <char>(c'0' + value)
    memcpy(buf, digits + i, 20 - i)
    return 20 - i


cdef Py_ssize_t record_encode(const pid_record_t *record, char *buf) noexcept nogil:
    cdef Py_ssize_t n = format_u64(record.pid, buf)
    buf[n] = c'\n'
    n += 1
    if record.has_start_time:
        n += format_u64(record.start_time, buf + n)
        buf[n] = c'\n'
        n += 1
    return n


cdef bint record_decode_canonical(const unsigned char *data, Py_ssize_t size,
                                  pid_record_t *out) noexcept nogil:
    """What writers write (see decode_canonical), with only ASCII after it: the record is then
    exactly the general rules' (_common.decode_record)."""
    cdef Py_ssize_t end
    return (decode_canonical(data, size, out, &end)
            and ascii_prefix(data + end, size - end) == size - end)


cdef inline bint decode_canonical(const unsigned char *data, Py_ssize_t size,
                                  pid_record_t *out, Py_ssize_t *end) noexcept nogil:
    """What writers write, ``<digits>\n<digits>\n`` or ``<digits>\n``, in one pass.

    Up to 9 and 19 digits cannot overflow, and lines of bare digits need no trim, so the result
    is the general path's; False (anything else) sends the input down the general path.
    ``end``: where line 3 starts (or ``size``).
    """
    cdef Py_ssize_t i = 0, line
    cdef uint64_t pid = 0, start = 0, digit
    while i < size and i < 9:
        digit = <uint64_t>data[i] - c'0'
        if digit > 9:
            break
        pid = pid * 10 + digit
        i += 1
    if i == 0 or (i < size and data[i] != c'\n'):
        return False
    out.pid = <uint32_t>pid
    out.has_start_time = False
    out.start_time = 0
    i += 1
    line = i
    while i < size and i - line < 19:
        digit = <uint64_t>data[i] - c'0'
        if digit > 9:
            break
        start = start * 10 + digit
        i += 1
    if i < size and data[i] != c'\n':
        return False  # more than 19 digits, or anything but a digit
    if i > line:
        out.has_start_time = True
        out.start_time = start
    end[0] = i + 1 if i < size else size  # where line 3 starts
    return True


cdef Py_ssize_t ascii_prefix(const unsigned char *s, Py_ssize_t size) noexcept nogil:
    """Length of the leading run of ASCII bytes, eight at a time: pid files are ASCII."""
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    while i + 8 <= size:
        memcpy(&word, s + i, 8)
        if word & 0x8080808080808080ULL:
            break
        i += 8
    while i < size and s[i] < 0x80:
        i += 1
    return i


# ============================================================================
# PidFileWriter: child-side I/O
# ============================================================================


cdef str WRITER_ALREADY = _common.ALREADY_INITIALISED.format("PidFileWriter")
cdef str WRITER_NOT_YET = _common.NOT_INITIALISED.format("PidFileWriter")


@cython.auto_pickle(False)
@cython.binding(False)  # methods that check self's type: WriterCore._check(object()) is refused
cdef class WriterCore:
    """The writes of PidFileWriter (``shimpid._writer`` has the rest, and says what is whose),
    over a C struct prepared once, so that ``write_current`` may run after ``fork()``."""

    def _prepare(self, given, bytes target not None, bytes temp_prefix not None, bint atomic,
                 mode_t mode, bytes identity not None, bytes capability not None, info):
        cdef bint exchange
        cdef int level = pidfd_level()  # decided here, in the parent: see write_current()
        _check_no_nul(target)
        _check_no_nul(temp_prefix)
        exchange = _exchanges(target, info)
        # The C struct points into the bytes set below, maybe for a write in another thread:
        # they are set once, checked and set with no Python code between (none can run: the
        # old values are None), and in a critical section where there is no GIL.
        with cython.critical_section(self):
            if self.writer.path != NULL:
                raise TypeError(WRITER_ALREADY)
            self._path, self._target, self._temp_prefix = given, target, temp_prefix
            self._identity, self._capability = identity, capability
            self.writer.capability = PyBytes_AS_STRING(capability)
            self.writer.capability_len = PyBytes_GET_SIZE(capability)
            self.writer.temp_prefix = PyBytes_AS_STRING(temp_prefix)
            self.writer.temp_prefix_len = PyBytes_GET_SIZE(temp_prefix)
            self.writer.atomic = atomic
            self.writer.mode = mode
            self.writer.exchange = exchange
            self.writer.identity = PyBytes_AS_STRING(identity)
            self.writer.identity_len = PyBytes_GET_SIZE(identity)
            self.writer.pidfd_level = level
            self.writer.pidfs = self.writer.identity_len > 0 and level == PIDFS
            self.writer.path = PyBytes_AS_STRING(target)  # last: it says the writer is ready

    def _check(self):
        self._ready()

    cdef int _ready(self) except -1:
        # A writer made by __new__ alone has no path: never let C read one.
        if self.writer.path == NULL:
            raise TypeError(WRITER_NOT_YET)
        return 0

    def _sibling(self, given, bytes target not None):
        """A writer like this one for ``target``, a path checked by ``_common.writer_target``
        in the same directory, made without a system call (see _spawn); where atomic writes
        swap files, with one: whether they still may is asked again (see replace()), and
        ``None`` if the directory cannot be looked at (the full check says why)."""
        cdef WriterCore sibling
        cdef bint exchange = self.writer.exchange
        self._ready()
        _check_no_nul(target)  # as the pure backend's open() would refuse it
        if self.writer.atomic and exchange:
            try:
                info = os.stat(os.path.dirname(target))
            except OSError:
                return None
            exchange = _exchanges(target, info)
        # The core's own allocation, a new object: never a __new__ of Python's, which could
        # hand back a live writer whose bytes the lines below would free.
        sibling = WriterCore.__new__(type(self))
        temp_prefix = _common.temp_prefix(target)
        sibling._path, sibling._target, sibling._temp_prefix = given, target, temp_prefix
        sibling._identity, sibling._capability = self._identity, self._capability
        sibling.writer = self.writer
        sibling.writer.exchange = exchange
        sibling.writer.pidfd_level = pidfd_level()  # as __init__ would find it now
        sibling.writer.pidfs = self.writer.identity_len > 0 and sibling.writer.pidfd_level == PIDFS
        sibling.writer.temp_prefix = PyBytes_AS_STRING(temp_prefix)
        sibling.writer.temp_prefix_len = PyBytes_GET_SIZE(temp_prefix)
        sibling.writer.path = PyBytes_AS_STRING(target)
        return sibling

    @property
    def _atomic(self):
        return bool(self.writer.atomic)

    @property
    def _mode(self):
        return self.writer.mode

    @property
    def _replace_by_exchange(self):
        """Whether atomic writes swap the new file in with renameat2(RENAME_EXCHANGE)."""
        return bool(self.writer.exchange)

    def _write(self, record):
        cdef char temp[TEMP_PATH_MAX]
        cdef pid_record_t copy
        cdef int rc
        self._ready()
        if type(record) is not PidRecord:
            raise TypeError(_common.expected_record(record))
        copy = (<PidRecord>record).rec
        temp[0] = 0
        with nogil:  # a write to a slow disk should not stall the parent's other threads
            rc = write_entry(&self.writer, &copy, False, 0, temp)
        if rc:
            raise _write_error(rc, self._path, temp)

    def write_current(self):
        """write_current($self)
--

Write this process's record. Takes no arguments, so it can be a ``preexec_fn``."""
        # The GIL stays held: releasing and retaking it takes a lock, and this may run after
        # fork(). Nothing here allocates until an error is raised.
        cdef char temp[TEMP_PATH_MAX]
        cdef int rc
        self._ready()
        temp[0] = 0
        rc = write_current(&self.writer, temp)
        if rc:
            raise _write_error(rc, self._path, temp)

    def _write_for(self, uint32_t pid, start_time=None):
        cdef char temp[TEMP_PATH_MAX]
        cdef pid_record_t record
        cdef uint64_t pidfs_id = 0
        cdef bint has_pidfs = False, known = start_time is not None
        cdef int found, rc = 0
        self._ready()
        if not names_a_process(pid):
            raise _common.no_such_process(pid)
        record.pid = pid
        record.start_time = PyNumber_Index(start_time) if known else 0
        temp[0] = 0
        with nogil:
            found = _identity_of(&self.writer, &record, &has_pidfs, &pidfs_id, known)
            if found == FOUND:
                rc = write_entry(&self.writer, &record, has_pidfs, pidfs_id, temp)
        if found == GONE:
            raise _common.no_such_process(pid)
        if found:
            raise _process_error(found, pid)
        if rc:
            raise _write_error(rc, self._path, temp)


class PidFileWriter(_writer.PidFileWriter, WriterCore):
    __doc__ = _writer.PidFileWriter.__doc__
    __module__ = "shimpid"  # shown as what it is to users (reprs, documentation)
    __slots__ = ()


# Immutable, as an extension type is: nobody replaces its methods, or its __new__.
(<PyTypeObject *>PidFileWriter).tp_flags |= Py_TPFLAGS_IMMUTABLETYPE
PyType_Modified(<PyTypeObject *>PidFileWriter)


cdef bint _exchanges(bytes target, info) except -1:
    """Whether atomic writes to target swap files in (replace()), info being its directory's
    stat: only in a directory nobody else can write to. On tmpfs a plain rename is cheaper, and
    nothing is flushed anyway."""
    return (SHIMPID_LINUX and not _common.others_can_write(info)
            and _fs_type(os.path.dirname(target), info.st_dev) not in (TMPFS_MAGIC, RAMFS_MAGIC))


cdef dict _fs_types = {}  # a filesystem's type, by its device: looked up once per device


cdef long _fs_type(bytes directory, object device):
    cdef long kind = _fs_types.get(device, -1)
    if kind == -1:
        kind = shimpid_fs_type(PyBytes_AS_STRING(directory))
        if kind > 0:
            _fs_types[device] = kind
    return kind


cdef object _write_error(int rc, object path, const char *temp):
    if rc == -EEXIST and temp[0] != 0:  # every temporary name taken
        return FileExistsError(EEXIST, _common.TEMP_NAMES_TAKEN, os.fsdecode(<bytes>temp))
    return OSError(-rc, _common.write_strerror(-rc), path)


cdef int writer_write(const pid_writer_t *writer, const pid_record_t *record) noexcept nogil:
    return write_entry(writer, record, False, 0, NULL)


cdef int writer_write_current(const pid_writer_t *writer) noexcept nogil:
    return write_current(writer, NULL)


cdef int write_current(const pid_writer_t *writer, char *temp_out) noexcept nogil:
    cdef pid_record_t record
    cdef struct_stat info
    cdef int fd
    record_current(&record)
    if not writer.pidfs:
        return write_entry(writer, &record, False, 0, temp_out)
    fd = shimpid_pidfd_open(<pid_t>record.pid)
    if fd < 0:
        return -errno
    if fstat(fd, &info) != 0:
        unistd.close(fd)
        return -errno
    unistd.close(fd)
    return write_entry(writer, &record, True, <uint64_t>info.st_ino, temp_out)


cdef int writer_write_for(const pid_writer_t *writer, uint32_t pid) noexcept nogil:
    cdef pid_record_t record
    cdef uint64_t pidfs_id = 0
    cdef bint has_pidfs = False
    cdef int rc
    if not names_a_process(pid):
        return -ESRCH
    record.pid = pid
    rc = _identity_of(writer, &record, &has_pidfs, &pidfs_id, False)
    if rc == GONE:
        return -ESRCH
    if rc == HIDDEN:
        return -EACCES  # (the C API's callers get errnos only)
    if rc:
        return rc
    return write_entry(writer, &record, has_pidfs, pidfs_id, NULL)


cdef int _identity_of(const pid_writer_t *writer, pid_record_t *record, bint *has_pidfs,
                      uint64_t *pidfs_id, bint known) noexcept nogil:
    """The start time (and pidfs inode) of process record.pid, for a record of it: FOUND, GONE
    (nobody holds the pid, or it is a thread's) or -errno (-EXDEV: another namespace's /proc).

    Unlike a verdict, a record can do without a start time where the system keeps none (no
    /proc mounted). known: record.start_time is the caller's (as _pure's start_time).
    """
    cdef struct_stat info
    cdef char state = 0
    cdef bint alive = False
    cdef uint64_t given = record.start_time
    cdef int fd, rc, proc
    record.has_start_time = False
    record.start_time = 0
    has_pidfs[0] = False
    if writer.pidfd_level == NO_PIDFD:
        return _unpinned_info(record.pid, &alive, &record.start_time, &record.has_start_time)
    fd = shimpid_pidfd_open(<pid_t>record.pid)
    if fd < 0:
        return GONE if not_a_process(errno) else -errno
    rc = FOUND
    if writer.pidfs:
        if fstat(fd, &info) != 0:
            rc = -errno
        else:
            has_pidfs[0] = True
            pidfs_id[0] = <uint64_t>info.st_ino
    if rc == FOUND:
        proc = _proc_state()
        if known and proc == PROC_OURS:
            record.start_time = given
            record.has_start_time = True
        elif proc != PROC_NONE:
            rc = _stat_of_pinned(record.pid, fd, &state, &record.start_time,
                                 &record.has_start_time)
    unistd.close(fd)
    return rc


cdef int write_entry(const pid_writer_t *writer, const pid_record_t *record, bint has_pidfs,
                     uint64_t pidfs_id, char *temp_out) noexcept nogil:
    """The record, then (unless there is nothing to say) line 3 and line 4 (see _pure's _write)."""
    cdef char buf[WRITE_MAX_BYTES]
    cdef Py_ssize_t size = record_encode(record, buf)
    cdef Py_ssize_t extra = writer.identity_len, line3 = writer.capability_len
    cdef bint line4 = 0 < extra <= IDENTITY_PREFIX_MAX and (has_pidfs or extra > 7)
    if not 0 <= line3 <= CAPABILITY_MAX:
        return -EINVAL  # a writer's __init__ checks it: never overrun the stack
    if line3 or line4:  # the bare tag says nothing
        if not record.has_start_time:
            buf[size] = c'\n'
            size += 1
        memcpy(buf + size, writer.capability, line3)
        size += line3
        buf[size] = c'\n'
        size += 1
        if line4:
            memcpy(buf + size, writer.identity, extra)
            size += extra
            if has_pidfs:
                memcpy(buf + size, b" pidfs=", 7)
                size += 7
                size += format_u64(pidfs_id, buf + size)
            buf[size] = c'\n'
            size += 1
    if writer.atomic:
        return _write_atomic(writer, buf, size, temp_out)
    return _write_in_place(writer.path, buf, size, writer.mode)


cdef int open_retry(const char *path, int flags, mode_t mode) noexcept nogil:
    cdef int fd
    while True:
        fd = fcntl.open(path, flags, mode)
        if fd >= 0 or errno != EINTR:
            return fd


cdef Py_ssize_t read_retry(int fd, void *buf, size_t size) noexcept nogil:
    cdef Py_ssize_t n
    while True:
        n = unistd.read(fd, buf, size)
        if n >= 0 or errno != EINTR:
            return n


cdef int _write_all(int fd, const char *data, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t n
    while size > 0:
        n = unistd.write(fd, data, size)
        if n < 0:
            if errno == EINTR:
                continue
            return -errno
        if n == 0:
            return -EIO  # no progress: fail rather than spin
        data += n
        size -= n
    return 0


cdef int _write_in_place(const char *path, const char *data, Py_ssize_t size,
                         mode_t mode) noexcept nogil:
    """Open without O_TRUNC and check the file first; again if a remover took it (see
    _pure._write_in_place)."""
    cdef struct_stat info
    cdef timespec pause = timespec(0, IN_PLACE_PAUSE_NS)
    cdef int fd, attempt, rc, flags = OPEN_IN_PLACE
    cdef bint unlinked
    for attempt in range(IN_PLACE_ATTEMPTS):
        if attempt:
            nanosleep(&pause, NULL)
        rc = _check_target(path)  # before opening: a FIFO's or a device's open has effects
        if rc < 0:
            return rc
        fd = open_retry(path, flags, mode)
        if fd < 0:
            if errno == EAGAIN:
                continue  # a remover's lease
            return 0 if errno == EEXIST else -errno  # (only again) a newer file: it stands
        unlinked = False
        if fstat(fd, &info) != 0:
            rc = -errno
        elif not S_ISREG(info.st_mode):
            rc = -ENXIO  # a device, say: never written to
        elif info.st_uid != unistd.geteuid():
            rc = -EPERM  # another user's file must not hold our record under their name
        elif info.st_nlink == 0:
            rc, unlinked = 0, True  # reached after a remover took it (see _pure)
        elif ftruncate_retry(fd) != 0:
            rc = -errno
        else:
            rc = _write_all(fd, data, size)
        if unistd.close(fd) != 0 and rc == 0:
            rc = -errno  # an error from close() (NFS) fails the write
        if rc != 0 or not unlinked:
            return rc
        flags = CREATE_IN_PLACE  # again, only where nothing is: a newer file stands
    return -EAGAIN


cdef int ftruncate_retry(int fd) noexcept nogil:
    while unistd.ftruncate(fd, 0) != 0:
        if errno != EINTR:
            return -1
    return 0


cdef int _check_target(const char *path) noexcept nogil:
    """1: a regular file is there; 0: nothing, or a symlink (replaced, never followed); -errno:
    anything else, refused before anything is done (see _common.check_target)."""
    cdef struct_stat info
    if lstat(path, &info) != 0:
        return 0 if errno == ENOENT else -errno
    if S_ISREG(info.st_mode):
        return 1
    if S_ISLNK(info.st_mode):
        return 0
    return -EISDIR if S_ISDIR(info.st_mode) else -ENXIO


cdef int _write_atomic(const pid_writer_t *writer, const char *data, Py_ssize_t size,
                       char *temp_out) noexcept nogil:
    """The temporary sibling, renamed over the path. temp_out (room for TEMP_PATH_MAX, or NULL)
    receives the last temporary name tried when every one is taken (-EEXIST)."""
    cdef char temp[TEMP_PATH_MAX]
    cdef int fd, rc, regular = _check_target(writer.path)
    if regular < 0:
        return regular
    fd = _write_temp(writer.temp_prefix, writer.temp_prefix_len, CREATE_TEMP, writer.mode, data,
                     size, temp, temp_out)
    if fd < 0:
        return fd
    rc = 0
    if unistd.close(fd) != 0:
        rc = -errno  # an error from close() (NFS) fails the write
    if rc == 0:
        rc = replace(temp, writer.path, writer.exchange and regular)
    if rc != 0:
        unistd.unlink(temp)
    return rc


cdef int _write_temp(const char *temp_prefix, Py_ssize_t prefix, int flags, mode_t mode,
                     const char *data, Py_ssize_t size, char *temp, char *temp_out) noexcept nogil:
    """A new temporary file ``<temp_prefix><pid>.<n>.tmp`` holding data (see _common.write_temp):
    its descriptor, its name in temp (room for TEMP_PATH_MAX), or -errno. temp_out (or NULL)
    receives the last name tried when every one is taken (-EEXIST)."""
    cdef uint64_t pid = <uint64_t>unistd.getpid()
    cdef Py_ssize_t end
    cdef int fd = -1, rc
    if prefix + TEMP_SUFFIX_MAX + 1 > TEMP_PATH_MAX:
        return -ENAMETOOLONG  # writer_paths() refuses these; never overrun the stack
    memcpy(temp, temp_prefix, prefix)
    for _ in range(TEMP_ATTEMPTS):
        end = prefix + format_u64(pid, temp + prefix)
        temp[end] = c'.'
        end += 1
        end += format_u64(shimpid_next_temp(), temp + end)
        memcpy(temp + end, b".tmp", 5)  # with its NUL
        fd = open_retry(temp, flags, mode)
        # EEXIST: left by a killed writer that had our pid; never touch it, take the next name
        if fd >= 0 or errno != EEXIST:
            break
    if fd < 0:
        if errno == EEXIST and temp_out != NULL:
            memcpy(temp_out, temp, end + 5)
        return -errno
    rc = _write_all(fd, data, size)
    if rc != 0:
        unistd.close(fd)
        unistd.unlink(temp)
        return rc
    return fd


cdef int replace(const char *temp, const char *path, bint exchange) noexcept nogil:
    """Put temp at path atomically: a reader sees the old file or the new one, nothing else.

    On ext4, rename() over an existing file flushes the new file's data first (auto_da_alloc),
    several times the cost of the write itself. Swapping the two names with
    renameat2(RENAME_EXCHANGE) and then unlinking the old file is just as atomic for readers and
    skips that flush. An exchange moves whatever is at path, so it is used only over a regular
    file just seen there (check_target) in a directory no other user can write to (decided when
    the writer was made): nobody else can put a directory there in between. Where the exchange is
    refused (a kernel before 3.15, a filesystem without it), rename() does the job, and rename()
    never replaces a directory.
    """
    if exchange and shimpid_rename_exchange(temp, path) == 0:
        if unistd.unlink(temp) == 0:  # temp now names the old file
            return 0
        if errno != EISDIR:
            return 0  # the record is in place; only the old file lingers under the temp name
        # A directory appeared at path since check_target (this user's doing): put it back.
        shimpid_rename_exchange(temp, path)
        return -EISDIR
    if rename(temp, path) != 0:
        return -errno
    return 0


# ============================================================================
# Reading pid files: parent-side I/O (shimpid._reader is PidFileReader)
# ============================================================================


ctypedef struct extras_t:  # what lines 3 and 4 say, as far as a verdict needs it
    bint has_boot
    char boot[BOOT_ID_BYTES]
    bint has_pidfs
    uint64_t pidfs_id


def _identity_at(directory_fd, bytes name not None, path=None):
    """process_identity() of the file ``name``, relative to an open directory if one is given
    (shimpid.scan); errors name ``path`` (default: name)."""
    cdef int fd = fcntl.AT_FDCWD if directory_fd is None else PyNumber_Index(directory_fd)
    _check_no_nul(name)
    return identity_at(fd, PyBytes_AS_STRING(name), name if path is None else path)


cdef int _check_no_nul(bytes target) except -1:
    # As os.open(): C would read the path only up to the NUL, another file than the one named.
    if memchr(PyBytes_AS_STRING(target), 0, PyBytes_GET_SIZE(target)) != NULL:
        raise ValueError("open: embedded null character in path")
    return 0


def _read_pid_file(bytes target not None, path, directory_fd=None):
    """The bytes of the pid file at target (relative to an open directory if one is given),
    from one bounded read; ``StorageError`` or ``OSError`` naming ``path`` if it cannot be."""
    cdef unsigned char buf[FILE_MAX_BYTES + 1]
    cdef int failure = 0
    cdef int fd = fcntl.AT_FDCWD if directory_fd is None else PyNumber_Index(directory_fd)
    cdef const char *c_target = PyBytes_AS_STRING(target)
    cdef Py_ssize_t size
    _check_no_nul(target)
    with nogil:
        size = read_pid_file(fd, c_target, buf, &failure)
    if size < 0:
        raise _read_failure(failure, path)
    return PyBytes_FromStringAndSize(<char *>buf, size)


def _scan_suffix(int directory_fd, bytes suffix not None, str prefix not None, skip not None,
                 bint locks=False, type kind=tuple, why=None):
    """``(prefix + name, verdict or OSError, the bytes judged, lock, record, extras, owner)``
    for each regular file of the open directory whose name ends with suffix, but those starting
    with "." for which ``skip(name)`` is true (a writer's temporary files: _rundir's rules,
    passed in so that this module needs no _rundir): shimpid.scan()'s fast path for "*.pid"-like
    patterns (readdir() in C spares the Python loop per file). With ``locks`` (shimpid ls),
    ``lock`` is ``(locked, pid, (dev, ino))`` probed on the descriptor read, and the record and
    its Extras come decoded (see identity_at); else None. Each is a ``kind``, a tuple or a
    subclass whose ``__new__`` it skips (_rundir.Entry: one object per file, not two). Last
    comes ``owner``, ``(uid, mode, why)`` of the file read (None: none was), ``why`` the
    caller's, as given (why the directory is not trusted: _rundir's rule)."""
    cdef _SuffixScan scan = _SuffixScan.__new__(_SuffixScan)
    if not issubclass(kind, tuple):
        raise TypeError(f"kind must be tuple or a subclass, not {kind.__name__}")
    cdef int fd = unistd.dup(directory_fd)  # fdopendir() takes the descriptor over
    if fd < 0:
        raise OSError(errno, os.strerror(errno))
    scan.stream = fdopendir(fd)
    if scan.stream == NULL:
        unistd.close(fd)
        raise OSError(errno, os.strerror(errno))
    rewinddir(scan.stream)  # the duplicate shares the caller's offset
    # Its own descriptor, not the caller's number: closed by the caller, that number may be
    # another directory's by the next item.
    scan.directory_fd = dirfd(scan.stream)
    scan.suffix = suffix
    scan.prefix = prefix
    scan.skip = skip
    scan.locks = locks
    scan.kind = kind
    scan.why = why
    scan.read = []
    return scan


@cython.final
@cython.binding(False)  # as PidRecord's
cdef class _SuffixScan:
    """_scan_suffix's iterator. A class, not a generator: each generator of Cython 3.3's leaks
    a reference to their shared type (CYTHON_USE_TYPE_SPECS off), as a debug CPython shows."""
    cdef DIR *stream  # NULL once exhausted, failed or closed
    cdef int directory_fd  # the stream's own (dirfd): never the caller's number
    cdef bint running, locks
    cdef bytes suffix
    cdef str prefix
    cdef object skip
    cdef type kind
    cdef object why  # the owner tuples' last item
    cdef list read  # identity_at's answers for the current file: one list for the whole scan

    def __iter__(self):
        return self

    def __next__(self):
        # skip() and the verdict's Python code may re-enter: like a generator, refuse (the
        # d_name in use would be overwritten by another readdir(), or freed by closedir()).
        if self.running:
            raise ValueError("_scan_suffix iterator already executing")
        if self.stream == NULL:
            raise StopIteration
        self.running = True
        try:
            return self._next()
        except BaseException:
            self._close()  # finished, as a generator is by an exception
            raise
        finally:
            self.running = False

    cdef object _next(self):
        cdef const char *c_suffix = PyBytes_AS_STRING(self.suffix)
        cdef Py_ssize_t suffix_len = PyBytes_GET_SIZE(self.suffix), length
        cdef struct_stat info, seen
        cdef dirent *entry
        while True:
            shimpid_clear_errno()
            entry = readdir(self.stream)
            if entry == NULL:
                if errno:
                    raise OSError(errno, os.strerror(errno))
                raise StopIteration
            length = strlen(entry.d_name)
            if (length < suffix_len
                    or memcmp(entry.d_name + length - suffix_len, c_suffix, suffix_len) != 0):
                continue
            if entry.d_type == DT_UNKNOWN:  # some filesystems do not say: ask, never following
                if (fstatat(self.directory_fd, entry.d_name, &info, AT_SYMLINK_NOFOLLOW) != 0
                        or not S_ISREG(info.st_mode)):
                    continue
            elif entry.d_type != DT_REG:
                continue
            text = PyUnicode_DecodeFSDefaultAndSize(entry.d_name, length)  # os.fsdecode()
            if entry.d_name[0] == c'.' and self.skip(text):
                continue
            path = self.prefix + text
            read = self.read
            del read[:]
            try:
                # d_name stays valid until the next readdir(): not before this returns.
                verdict = identity_at(self.directory_fd, entry.d_name, path, read, self.locks,
                                      &seen)
            except OSError as err:
                verdict = err
            read += NONE_4[len(read):]
            owner = None if read[0] is None else (seen.st_uid, seen.st_mode, self.why)
            item = (path, verdict, read[0], read[1], read[2], read[3], owner)
            return item if self.kind is tuple else tuple.__new__(self.kind, item)

    def close(self):
        """close($self)
--

Let go of the directory stream (``yield from`` calls it when its generator closes)."""
        if self.running:
            raise ValueError("_scan_suffix iterator already executing")
        self._close()

    cdef void _close(self) noexcept:
        if self.stream != NULL:
            closedir(self.stream)
            self.stream = NULL

    def __dealloc__(self):
        self._close()


cdef object identity_at(int directory_fd, const char *c_target, object path, list read=None,
                        bint locks=False, struct_stat *seen=NULL):
    """The verdict for the pid file at c_target (relative to directory_fd: openat); errors
    name path. With ``read``, the bytes it was judged from are appended to it (None: none) and,
    with ``locks``, ``(locked, pid, dev, ino)`` of the lock probe; with ``seen``, the fstat of
    the open they were read by (read_pid_file)."""
    cdef lock_probe_t lock
    cdef unsigned char buf[FILE_MAX_BYTES + 1]
    cdef pid_record_t record
    cdef extras_t extras
    cdef Py_ssize_t size, end = 0
    cdef int failure = 0, verdict = IDENTITY_ABSENT, level = pidfd_level()
    cdef bint canonical = False
    with nogil:
        size = read_pid_file(directory_fd, c_target, buf, &failure, &lock if locks else NULL,
                             seen)
        if size >= 0:
            # What writers write takes one pass in C; anything else, the general rules.
            canonical = (decode_canonical(buf, size, &record, &end)
                         and extras_canonical(buf, end, size, &extras))
            if canonical:  # written in this boot (extras_canonical)
                verdict = classify(&record, &extras, level, NULL)
    if read is not None:
        read.append(PyBytes_FromStringAndSize(<char *>buf, size) if size >= 0 else None)
        if locks and size >= 0:
            locked = None if lock.locked < 0 else lock.locked == 1
            read.append((locked, lock.pid or None, (lock.dev, lock.ino)))
            if canonical:  # and what ls shows, from the pass just made
                read.append(_new_record(&record))
                read.append(_canonical_extras(buf, end, size, &extras))
    if size < 0:
        err = _read_failure(failure, path)
        if _common.is_answer(err):
            return ABSENT
        raise err
    if not canonical:
        data = PyBytes_FromStringAndSize(<char *>buf, size)
        try:
            record = (<PidRecord>_decode(buf, size, data)).rec
        except StorageError:
            return ABSENT  # no record: nothing to act on
        parsed = _common.parse_extras(data)
        _extras_from(parsed, &extras)
        if read is not None and locks:
            read.append(_new_record(&record))
            read.append(parsed)
        if from_another_boot(&extras):
            return ABSENT
        with nogil:
            verdict = classify(&record, &extras, level, NULL)
    return _verdict(verdict, record.pid)


cdef object _canonical_extras(const unsigned char *buf, Py_ssize_t end, Py_ssize_t size,
                              const extras_t *extras):
    """The Extras of lines 3 and 4 as extras_canonical() read them (parse_extras' answer)."""
    cdef Py_ssize_t i = end
    while i < size and buf[i] != c'\n':
        i += 1
    capability = PyUnicode_DecodeASCII(<const char *>buf + end, i - end, NULL) if i > end else None
    return _own_extras(capability, i + 1 < size, extras.pidfs_id if extras.has_pidfs else None)


cdef bint extras_canonical(const unsigned char *data, Py_ssize_t i, Py_ssize_t size,
                           extras_t *out) noexcept nogil:
    """Lines 3 and 4 (from data[i]) as this process's writers write them, or False: the general
    rule (_common.parse_extras) decides. Line 3 printable ASCII but not a boot id (shimpid 0.1's);
    line 4 identity_prefix(), then maybe ``pidfs=<1-19 digits>`` (_common.OWN_PIDFS); each line
    ends in a newline. What the prefix says is this process's: no boot to compare."""
    cdef Py_ssize_t start = i, digits = 0
    cdef uint64_t value = 0
    out.has_boot = False
    out.has_pidfs = False
    if i == size:
        return True
    while i < size and data[i] != c'\n':
        if not 0x21 <= data[i] <= 0x7E:
            return False
        i += 1
    if i == size or is_boot_id(data + start, i - start):
        return False
    i += 1
    if i == size:
        return True
    # the prefix alone (no pidfs field), and its newline
    if size - i == own_prefix_len + 1 and memcmp(data + i, own_pidfs, own_prefix_len) == 0:
        return data[size - 1] == c'\n'
    if size - i < own_pidfs_len + 2 or memcmp(data + i, own_pidfs, own_pidfs_len) != 0:
        return False
    i += own_pidfs_len
    if not c'1' <= data[i] <= c'9':
        return False
    while i < size and c'0' <= data[i] <= c'9' and digits < 19:
        value = value * 10 + (data[i] - c'0')
        i += 1
        digits += 1
    out.has_pidfs = True
    out.pidfs_id = value
    return i + 1 == size and data[i] == c'\n'


cdef inline bint from_another_boot(const extras_t *extras) noexcept nogil:
    return (extras.has_boot and current_boot_known
            and memcmp(extras.boot, current_boot_id, BOOT_ID_BYTES) != 0)


cdef bint is_boot_id(const unsigned char *s, Py_ssize_t size) noexcept nogil:
    """A UUID as the kernel prints it: 8-4-4-4-12 lowercase hex digits (``_common.is_boot_id``)."""
    cdef Py_ssize_t i
    if size != BOOT_ID_BYTES:
        return False
    for i in range(BOOT_ID_BYTES):
        if i == 8 or i == 13 or i == 18 or i == 23:
            if s[i] != c'-':
                return False
        elif not (c'0' <= s[i] <= c'9' or c'a' <= s[i] <= c'f'):
            return False
    return True


cdef int _extras_from(object extras, extras_t *out) except -1:
    boot, pidfs_id = extras.boot_id, extras.pidfs_id
    if boot is not None:
        boot = boot.encode()
    out.has_boot = boot is not None and len(boot) == BOOT_ID_BYTES  # never copy past its end
    if out.has_boot:
        memcpy(out.boot, PyBytes_AS_STRING(boot), BOOT_ID_BYTES)
    out.has_pidfs = pidfs_id is not None
    out.pidfs_id = pidfs_id if out.has_pidfs else 0
    return 0


cdef Py_ssize_t read_pid_file(int directory_fd, const char *path, unsigned char *buf,
                              int *failure, lock_probe_t *lock=NULL,
                              struct_stat *seen=NULL) noexcept nogil:
    """Bytes read into buf (room for FILE_MAX_BYTES + 1), or -1 with failure = errno or FAIL_*.
    path is relative to directory_fd (AT_FDCWD: the usual open()). With ``lock``, whether the
    file is locked, on the same descriptor (_rundir.probe_lock's rules); with ``seen``, the
    descriptor's fstat (where bytes were read)."""
    cdef struct_stat info
    cdef Py_ssize_t size = -1, n
    cdef int fd
    while True:
        fd = fcntl.openat(directory_fd, path, OPEN_READ)
        if fd >= 0 or errno != EINTR:
            break
    if fd < 0:
        failure[0] = errno
        return -1
    if fstat(fd, &info) != 0:
        failure[0] = errno
    elif not S_ISREG(info.st_mode):
        failure[0] = FAIL_NOT_REGULAR
    elif info.st_size > FILE_MAX_BYTES:
        failure[0] = FAIL_TOO_LARGE
    else:
        size = read_retry(fd, buf, FILE_MAX_BYTES + 1)
        # One read returns a regular file whole; read on only after a short one.
        if size >= 0 and size != info.st_size:
            while size <= FILE_MAX_BYTES:
                n = read_retry(fd, buf + size, FILE_MAX_BYTES + 1 - size)
                if n <= 0:
                    if n < 0:
                        size = -1
                    break
                size += n
        if size < 0:
            failure[0] = errno
        elif size > FILE_MAX_BYTES:
            failure[0] = FAIL_TOO_LARGE
            size = -1
    if seen != NULL and size >= 0:
        seen[0] = info
    if lock != NULL and size >= 0:
        lock.dev, lock.ino, lock.pid = info.st_dev, info.st_ino, 0
        if flock(fd, LOCK_SH | LOCK_NB) != 0:
            lock.locked = 1 if errno == EAGAIN else -1
        else:
            lock.locked = shimpid_record_locked(fd, &lock.pid)
    unistd.close(fd)
    return size


cdef object _read_failure(int failure, object path):
    if failure == FAIL_NOT_REGULAR:
        return _common.content_error(_common.NOT_REGULAR, path)
    if failure == FAIL_TOO_LARGE:
        return _common.content_error(_common.TOO_LARGE, path)
    return _common.read_error(failure, path)


# ============================================================================
# Live processes (the rules and their reasons: _pure.py's section of the same name)
# ============================================================================


cdef int classify(const pid_record_t *record, const extras_t *extras, int level,
                  int *pinned) noexcept nogil:
    """IDENTITY_* or -errno. With ``pinned``, the pidfd the verdict was reached through (or -1)
    is left there for the caller to close."""
    cdef uint32_t pid = record.pid
    cdef int fd, verdict
    if pinned != NULL:
        pinned[0] = -1
    if not names_a_process(pid):
        return IDENTITY_ABSENT  # 0: our own process group; above: a negative pid_t, -1 = everyone
    if level == NO_PIDFD:
        return _classify_without_pidfd(record)
    fd = shimpid_pidfd_open(<pid_t>pid)
    if fd < 0:
        return IDENTITY_ABSENT if not_a_process(errno) else -errno
    verdict = _classify_pinned(record, extras, fd, level)
    if pinned != NULL and verdict >= 0:
        pinned[0] = fd
    else:
        unistd.close(fd)
    return verdict


cdef int _classify_pinned(const pid_record_t *record, const extras_t *extras, int fd,
                          int level) noexcept nogil:
    cdef struct_stat info
    cdef char state = 0
    cdef uint64_t live = 0
    cdef bint has_live = False
    cdef int exited, rc
    if extras.has_pidfs and level == PIDFS:
        # The inode names one process for the whole boot: no /proc, no clock-tick granularity.
        if fstat(fd, &info) != 0:
            return -errno
        if <uint64_t>info.st_ino != extras.pidfs_id:
            return IDENTITY_ABSENT
        exited = _has_exited(fd)
        return exited if exited < 0 else (IDENTITY_ABSENT if exited else IDENTITY_VERIFIED)
    if not record.has_start_time:
        exited = _has_exited(fd)
        return exited if exited < 0 else (IDENTITY_ABSENT if exited else IDENTITY_LEGACY)
    rc = _stat_of_pinned(record.pid, fd, &state, &live, &has_live)
    if rc < 0:
        return rc
    if not has_live or live != record.start_time:
        return IDENTITY_ABSENT  # another process's pid now (or reaped since it was pinned)
    # Alive is what the pidfd says: /proc shows a process whose main thread called
    # pthread_exit() as a zombie while its other threads run on.
    exited = _has_exited(fd)
    return exited if exited < 0 else (IDENTITY_ABSENT if exited else IDENTITY_VERIFIED)


cdef int _classify_without_pidfd(const pid_record_t *record) noexcept nogil:
    cdef uint64_t live = 0
    cdef bint alive = False, has_live = False
    cdef int rc = _unpinned_info(record.pid, &alive, &live, &has_live)
    if rc < 0:
        return rc
    if rc == GONE or not alive:
        return IDENTITY_ABSENT
    if not record.has_start_time:
        return IDENTITY_LEGACY
    if not has_live:
        return -ENOENT  # no /proc to read start times from
    return IDENTITY_VERIFIED if live == record.start_time else IDENTITY_ABSENT


def _classify(pid, start_time, pidfs_id):
    """The verdict for a record; ``OSError`` when the system cannot tell (as ``_pure``'s)."""
    pidfd = _slot()
    try:
        return _pin_and_classify(pid, start_time, pidfs_id, pidfd)
    finally:
        if pidfd:
            os.close(pidfd[0])


def _pin_and_classify(pid, start_time, pidfs_id, pidfd not None):
    """The verdict, reached through a pidfd where there are pidfds: put in ``pidfd[0]`` (the
    caller's, to close) before any object is made (as ``_pure``'s)."""
    cdef pid_record_t record = (<PidRecord>PidRecord(pid, start_time)).rec
    cdef extras_t extras
    cdef int verdict, fd = -1, level = pidfd_level()
    extras.has_boot = False
    extras.has_pidfs = pidfs_id is not None
    # (an index: a C conversion alone would take a float, and compare what it truncated)
    extras.pidfs_id = PyNumber_Index(pidfs_id) if extras.has_pidfs else 0
    with nogil:
        verdict = classify(&record, &extras, level, &fd)
    if fd >= 0:
        pidfd[0] = fd  # (no finaliser, so no handler, can run between: nothing is made first)
    return _verdict(verdict, record.pid)


# A verdict made through its slot's setter skips __init__'s Python frame (a tenth of
# process_identity() when it went through a frozen dataclass's).
cdef object _set_verdict_pid = _common.set_verdict_pid


cdef object _verdict(int verdict, uint32_t pid):
    if verdict == IDENTITY_VERIFIED:
        result = Verified.__new__(Verified)
        _set_verdict_pid(result, pid)
        return result
    if verdict == IDENTITY_LEGACY:
        result = Legacy.__new__(Legacy)
        _set_verdict_pid(result, pid)
        return result
    if verdict < 0:
        raise _process_error(verdict, pid)
    return ABSENT


cdef object _process_error(int rc, object pid):
    """The exception for -errno (or HIDDEN) from a process lookup, as ``_pure`` raises it."""
    if rc == HIDDEN:
        return _common.hidden_process_error(pid)
    if rc == -EXDEV:
        return _common.ForeignProcError()
    if rc == -ENOENT:
        return _common.no_proc_error()
    return OSError(-rc, os.strerror(-rc))


def is_process_alive(pid):
    """True if ``pid`` names one live process that is not a zombie (another user's counts).

    A thread id is not a process. ``OSError`` when the system cannot tell.
    """
    cdef int alive, level = pidfd_level()
    pid = PyNumber_Index(pid)
    if not _common.names_a_process(pid):
        return False
    cdef uint32_t c_pid = pid
    with nogil:
        alive = process_alive(c_pid, level)
    if alive < 0:
        raise _process_error(alive, pid)
    return bool(alive)


def process_start_time(pid):
    """The start time of the process holding ``pid`` (a zombie still holds it), or ``None``.

    ``None`` also for a thread id, and on platforms without start times (Windows). ``OSError``
    when the system cannot tell (no /proc; ``ForeignProcError``: another namespace's /proc).
    """
    cdef uint64_t start = 0
    cdef bint has_start = False
    cdef int rc, level = pidfd_level()
    pid = PyNumber_Index(pid)
    if not _common.names_a_process(pid):
        return None
    cdef uint32_t c_pid = pid
    with nogil:
        rc = start_time_of(c_pid, level, &start, &has_start)
    if rc < 0:
        raise _process_error(rc, pid)
    return start if rc == FOUND else None


cdef int process_alive(uint32_t pid, int level) noexcept nogil:
    """1, 0 or -errno."""
    cdef uint64_t start = 0
    cdef bint alive = False, has_start = False
    cdef int fd, rc
    if level == NO_PIDFD:
        rc = _unpinned_info(pid, &alive, &start, &has_start)
        if rc < 0:
            return rc
        return rc == FOUND and alive
    fd = shimpid_pidfd_open(<pid_t>pid)
    if fd < 0:
        return 0 if not_a_process(errno) else -errno
    rc = _has_exited(fd)
    unistd.close(fd)
    return rc if rc < 0 else not rc


cdef int start_time_of(uint32_t pid, int level, uint64_t *start, bint *has_start) noexcept nogil:
    """FOUND (the start time is in start), GONE or -errno."""
    cdef char state = 0
    cdef bint alive = False
    cdef int fd, rc
    if level == NO_PIDFD:
        rc = _unpinned_info(pid, &alive, start, has_start)
        if rc == FOUND and not has_start[0]:
            return -ENOENT  # no /proc to read start times from
        return rc
    fd = shimpid_pidfd_open(<pid_t>pid)
    if fd < 0:
        return GONE if not_a_process(errno) else -errno
    rc = _stat_of_pinned(pid, fd, &state, start, has_start)
    unistd.close(fd)
    if rc == FOUND and not has_start[0]:
        return GONE  # reaped since it was pinned
    return rc


cdef inline bint not_a_process(int err) noexcept nogil:
    # pidfd_open(): ESRCH, nobody holds the pid; EINVAL (before Linux 6.9) or ENOENT (since), a
    # thread that is not a thread-group leader (_common.NOT_A_PROCESS_ERRNOS)
    return err == ESRCH or err == ENOENT or err == EINVAL


cdef int _has_exited(int pidfd) noexcept nogil:
    """1 once the process a pidfd pins has exited (a zombie too), 0 before, or -errno."""
    cdef pollfd entry
    cdef int n
    entry.fd = pidfd
    entry.events = POLLIN
    entry.revents = 0
    while True:
        n = poll(&entry, 1, 0)
        if n >= 0:
            return n > 0
        if errno != EINTR:
            return -errno


cdef int _stat_of_pinned(uint32_t pid, int pidfd, char *state, uint64_t *start,
                         bint *has_start) noexcept nogil:
    """The state and start time of the process a pidfd pins: FOUND or -errno."""
    cdef int rc = _proc_info(pid, state, start, has_start)
    if rc != GONE:
        return rc
    rc = _has_exited(pidfd)
    if rc < 0:
        return rc
    if not rc:
        return HIDDEN  # alive, but hidden in /proc (hidepid)
    state[0] = c'X'  # reaped since it was pinned
    has_start[0] = False
    return FOUND


cdef int _unpinned_info(uint32_t pid, bint *alive, uint64_t *start,
                        bint *has_start) noexcept nogil:
    """Without pidfds (as _pure._unpinned_info): FOUND (alive, and the start time, which is
    missing without /proc), GONE (nobody holds pid, or a thread does) or -errno."""
    cdef uint32_t tgid = 0, threads = 0
    cdef char state = 0, stat_state = 0
    cdef int rc, proc
    alive[0] = False
    has_start[0] = False
    if kill(<pid_t>pid, 0) != 0:
        if errno == ESRCH:
            return GONE
        if errno != EPERM:  # EPERM: it exists, and belongs to another user
            return -errno
    if SHIMPID_DARWIN:
        rc = _proc_info(pid, &state, start, has_start)
        alive[0] = state != c'Z'
        return rc
    if not SHIMPID_LINUX:
        alive[0] = True
        return FOUND
    proc = _proc_state()
    if proc < 0:
        return proc
    if proc == PROC_NONE:
        alive[0] = True
        return FOUND
    if proc == PROC_FOREIGN:
        return -EXDEV
    rc = _status_of(pid, &state, &tgid, &threads)
    if rc == GONE:
        # kill() sees it and /proc does not: hidden (hidepid), unless it has just gone
        return HIDDEN if kill(<pid_t>pid, 0) == 0 or errno == EPERM else GONE
    if rc < 0:
        return rc
    if tgid != pid:
        return GONE  # a thread of another process
    rc = _proc_info(pid, &stat_state, start, has_start)
    if rc != FOUND:
        return rc
    # A process whose main thread called pthread_exit() shows as a zombie while its other
    # threads run on.
    alive[0] = (state != c'Z' and state != c'X') or threads > 1
    return FOUND


cdef int _status_of(uint32_t pid, char *state, uint32_t *tgid,
                    uint32_t *threads) noexcept nogil:
    """State, Tgid and Threads of /proc/<pid>/status (as _pure's): FOUND, GONE or -errno."""
    cdef char buf[STATUS_READ_BYTES + 8]  # zeros after what was read: memcmp never reads past
    cdef Py_ssize_t n = STATUS_READ_BYTES, i, line = 0, end
    cdef int found = 0, rc = read_proc(pid, b"/status", buf, &n)
    if rc != FOUND:
        return rc
    memset(buf + n, 0, 8)
    threads[0] = 1
    while found != 7:
        end = line
        while end < n and buf[end] != c'\n':
            end += 1
        if end == n:
            break  # what is left was cut short by the read: no whole line
        if memcmp(buf + line, b"State:", 6) == 0:
            i = line + 6
            while i < end and (buf[i] == c'\t' or buf[i] == c' '):
                i += 1
            state[0] = buf[i] if i < end else 0
            found |= 1
        elif memcmp(buf + line, b"Tgid:", 5) == 0:
            tgid[0] = status_number(buf, line + 5, end)
            found |= 2
        elif memcmp(buf + line, b"Threads:", 8) == 0:
            threads[0] = status_number(buf, line + 8, end)
            found |= 4
        line = end + 1
    if found & 3 != 3 or (not found & 4 and (state[0] == c'Z' or state[0] == c'X')):
        return -EIO
    return FOUND


cdef int read_proc(uint32_t pid, const char *leaf, char *buf, Py_ssize_t *size) noexcept nogil:
    """Up to size[0] bytes of /proc/<pid><leaf> (pid 0: /proc/self<leaf>; leaf at most 8
    bytes) into buf, and their number into size[0]: FOUND, GONE or -errno."""
    cdef char path[32]
    cdef Py_ssize_t n = 10
    cdef int fd, err
    if pid == 0:
        memcpy(path, b"/proc/self", 10)
    else:
        memcpy(path, b"/proc/", 6)
        n = 6 + format_u64(pid, path + 6)
    memcpy(path + n, leaf, strlen(leaf) + 1)
    fd = open_retry(path, fcntl.O_RDONLY | fcntl.O_CLOEXEC, 0)
    if fd < 0:
        return GONE if errno == ENOENT or errno == ESRCH else -errno
    n = read_retry(fd, buf, size[0])
    err = errno
    unistd.close(fd)
    if n < 0:
        return GONE if err == ESRCH else -err  # ESRCH: it went between open() and read()
    size[0] = n
    return FOUND


cdef uint32_t status_number(const char *buf, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    cdef uint32_t value = 0
    while i < n and (buf[i] == c'\t' or buf[i] == c' '):
        i += 1
    while i < n and c'0' <= buf[i] <= c'9':
        value = value * 10 + <uint32_t>(buf[i] - c'0')
        i += 1
    return value


cdef void record_current(pid_record_t *out) noexcept nogil:
    cdef char state = 0
    out.pid = <uint32_t>unistd.getpid()
    out.start_time = 0
    out.has_start_time = False
    if _proc_info(0, &state, &out.start_time, &out.has_start_time) != FOUND:
        out.has_start_time = False  # no /proc, or a platform without start times: the reference's
        out.start_time = 0


cdef int _proc_info(uint32_t pid, char *state, uint64_t *start_time,
                    bint *has_start) noexcept nogil:
    """FOUND (state: field 3, 0 if unknown; the start time if it parses), GONE or -errno.

    pid 0: this process. Another process's entry is read only from this namespace's /proc:
    -EXDEV for another namespace's, -ENOENT where there is none.
    """
    cdef char buf[STAT_READ_BYTES]
    cdef Py_ssize_t n = STAT_READ_BYTES
    cdef int err, proc
    state[0] = 0
    has_start[0] = False
    if SHIMPID_LINUX:
        if pid != 0:  # /proc/self is always this process, whichever namespace
            proc = _proc_state()
            if proc < 0:
                return proc
            if proc == PROC_FOREIGN:
                return -EXDEV
            if proc == PROC_NONE:
                return -ENOENT
        err = read_proc(pid, b"/stat", buf, &n)
        if err == FOUND:
            has_start[0] = parse_stat(buf, n, state, start_time) == 0
        return err
    if SHIMPID_DARWIN:
        err = shimpid_darwin_info(<pid_t>pid if pid else unistd.getpid(), state, start_time)
        if err == ESRCH:
            return GONE
        has_start[0] = err == 0
        return -err
    return -ENOSYS


# ---- what this system offers, found out once (as _pure's) ----------------------------------------

cdef pid_t proc_checked_pid = 0
cdef int proc_checked_state = PROC_NONE


cdef int _proc_state() noexcept nogil:
    """PROC_OURS, PROC_FOREIGN, PROC_NONE or -errno: whether /proc is this pid namespace's."""
    global proc_checked_pid, proc_checked_state
    cdef pid_t me = unistd.getpid()
    cdef char link[24]
    cdef char expected[24]
    cdef Py_ssize_t n, k
    cdef int state
    if proc_checked_pid == me:
        return proc_checked_state
    n = unistd.readlink(b"/proc/self", link, sizeof(link))
    if n < 0:
        if errno != ENOENT:
            return -errno
        # no /proc, or one of a namespace this process is not in (it still shows its pid 1)
        state = PROC_FOREIGN if unistd.access(b"/proc/1", unistd.F_OK) == 0 else PROC_NONE
    else:
        k = format_u64(<uint64_t>me, expected)
        state = PROC_OURS if n == k and memcmp(link, expected, k) == 0 else PROC_FOREIGN
    proc_checked_state = state
    proc_checked_pid = me
    return state


cdef int pidfd_level_found = -1


cdef int pidfd_level() noexcept nogil:
    """PIDFS, PIDFD or NO_PIDFD (see _common), found out on first use."""
    global pidfd_level_found
    cdef int fd
    cdef long kind
    if pidfd_level_found < 0:
        fd = shimpid_pidfd_open(unistd.getpid())
        if fd < 0 and (errno == EMFILE or errno == ENFILE or errno == ENOMEM):
            return NO_PIDFD  # (_common.PASSING_ERRNOS): none this time, found out next time
        if fd < 0:  # ENOSYS: a kernel before 5.3; EPERM: a seccomp filter
            pidfd_level_found = NO_PIDFD
        else:
            # Before 6.9 every pidfd shares one anonymous inode: its number names nothing.
            kind = shimpid_fd_fs_type(fd)
            unistd.close(fd)
            pidfd_level_found = PIDFS if kind == PIDFS_MAGIC else PIDFD
    return pidfd_level_found


def _pidfd_level():
    return pidfd_level()


def _set_pidfd_level(int level):
    """Use ``level`` instead of what the kernel offers (tests of the fallbacks); the old one.

    Only a level this system offers (as _pure's)."""
    global pidfd_level_found
    old = pidfd_level()
    pidfd_level_found = -1
    offered = pidfd_level()
    pidfd_level_found = old
    if level > offered:
        raise ValueError(f"pidfd level {level} is more than this system offers")
    pidfd_level_found = level
    return old


cdef int parse_stat(const char *buf, Py_ssize_t size, char *state,
                    uint64_t *start_time) noexcept nogil:
    # The command name (field 2) may hold spaces and ')', so fields are counted after the LAST
    # ')'; field 22, the start time in clock ticks since boot, is the 20th of those.
    cdef Py_ssize_t i = size - 1, token, field = 0
    cdef uint64_t value = 0, digit
    state[0] = 0
    while i >= 0 and buf[i] != c')':
        i -= 1
    if i < 0:
        return -1
    i += 1
    while i < size:
        while i < size and buf[i] == c' ':
            i += 1
        token = i
        while i < size and buf[i] != c' ' and buf[i] != c'\n':
            i += 1
        if token == i:
            return -1
        field += 1
        if field == 1:
            state[0] = buf[token]
        elif field == 20:
            while token < i:
                digit = <uint64_t>(<unsigned char>buf[token]) - c'0'
                if digit > 9 or value > (U64_MAX - digit) // 10:
                    return -1
                value = value * 10 + digit
                token += 1
            start_time[0] = value
            return 0
    return -1


def _parse_stat(bytes data not None):
    """(state byte, start time or None) of a stat line: for tests against the pure parser."""
    cdef char state = 0
    cdef uint64_t start = 0
    cdef int found = parse_stat(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &state, &start)
    return (<unsigned char>state, start if found == 0 else None)


# ============================================================================
# Names
# ============================================================================

def _publish(type cls not None, str module not None):
    """Show cls as ``module.Name`` (its ``__module__``, its repr, where pickle finds it): a
    static type's module is what its ``tp_name`` says before the last dot. The name is copied
    into memory never freed: the type outlives this module, to the end of the interpreter."""
    name = f"{module}.{cls.__name__}".encode()
    cdef char *kept = strdup(PyBytes_AS_STRING(name))
    if kept == NULL:
        raise MemoryError()
    (<PyTypeObject *>cls).tp_name = kept
